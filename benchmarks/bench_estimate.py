"""Benchmark of neural MI estimation: training steps per second, and the staircase's wall time.

Usage::

    .venv/bin/python benchmarks/bench_estimate.py [--device cpu|cuda] [--threads 1]
                                                  [--steps 200] [--json out.json]

For each critic (separable, concat; the published sizes: 256 hidden units, 32-dim embeddings,
three hidden layers) and each staircase objective it times ``--steps`` training steps at batch
64 on the 20-d Gaussian task (after 5 warm-up steps), and it sums the recorded wall time of
every finished staircase run under ``results/staircase/``. ``process_time`` is reported next to
the wall time because the shared machine's wall time depends on what else runs on it.

The comparison with the ``benchmark-mi`` package (``bmi``) on finite samples is
``benchmarks/bench_bmi.py`` (bmi in a virtual environment of its own; docs/RESULTS.md §4.7).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mi_bounds.estimation.estimate import estimate_mi
from mi_bounds.estimation.staircase import OBJECTIVES, load_runs
from mi_bounds.estimation.tasks import GaussianTask
from mi_bounds.estimation.training import EstimateConfig

ROOT = Path(__file__).resolve().parents[1]


def time_training(critic: str, objective: str, steps: int, device: str) -> dict[str, float]:
    """Steps per second (wall and CPU) of the staircase trainer for one critic and objective."""
    names = OBJECTIVES[objective]
    task = GaussianTask(mi=6.0, dim=20)
    warm = EstimateConfig(bound=names[0], report=names[1:], steps=5, eval_batches=0, device=device)
    estimate_mi(task, warm, critic=critic)
    cfg = EstimateConfig(bound=names[0], report=names[1:], steps=steps, eval_batches=0,
                         device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    estimate_mi(task, cfg, critic=critic)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"steps": steps, "wall_s": wall, "cpu_s": cpu, "steps_per_s_wall": steps / wall,
            "steps_per_s_cpu": steps / cpu}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=200, help="steps for the separable critic "
                   "(the concat critic gets a tenth)")
    p.add_argument("--objectives", nargs="+", default=["js", "infonce"], choices=list(OBJECTIVES))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for critic in ("separable", "concat"):
        steps = args.steps if critic == "separable" else max(5, args.steps // 10)
        for obj in args.objectives:
            r = time_training(critic, obj, steps, args.device)
            rows.append({"critic": critic, "objective": obj, "device": args.device, **r})
            print(f"{critic:9s} {obj:8s} {args.device}: {r['steps_per_s_wall']:7.1f} steps/s wall, "
                  f"{r['steps_per_s_cpu']:7.1f} steps/s per CPU-second ({steps} steps)")
    runs = load_runs(ROOT / "results" / "staircase")
    total = sum(r["seconds"] for r in runs)
    steps_total = sum(len(r["spec"]["levels"]) * r["spec"]["steps_per_level"] for r in runs)
    print(f"staircase: {len(runs)} finished runs, {steps_total} training steps, "
          f"{total / 60:.1f} min of recorded wall time")
    for r in runs:
        print(f"  {r['run_id']}: {r['seconds']:.0f} s, {r['steps_per_second']:.1f} steps/s")
    if args.json:
        args.json.write_text(json.dumps({
            "rows": rows, "staircase_runs": len(runs), "staircase_wall_s": total,
            "staircase_steps": steps_total, "threads": args.threads,
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
        }, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
