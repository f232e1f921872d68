"""The small-LM steps of the GPU validation: decline (b), trl (c), smollm2 (the second call).

``decline`` drives the library's public pipeline (:mod:`mi_bounds.lm.stages`): base, sample,
then the align stage of every grid setting under a deadline (a setting starts only if the
longest one so far still ends before it: :func:`mi_bounds.lm.grid.run_grid_align`), then the
reports. Every run directory is collected by the one run collector,
:func:`mi_bounds.lm.collect.collect_run`, plus the whole sample stage (:func:`collect`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from experiments.gpu.context import TARGETS, Context, copy_file

REPO = Path(__file__).resolve().parents[2]

#: the decline subset: losses and seeds of every setting, settings in order of value
DECLINE_LOSSES = ("dpo", "mio", "ipo", "rpo", "sft")
DECLINE_GRID = ({"beta": 0.1, "lr": 3e-5}, {"beta": 0.1, "lr": 1e-5},
                {"beta": 0.01, "lr": 3e-5}, {"beta": 0.5, "lr": 3e-5})


def decline_config(smoke: bool):
    """The decline subset: ``gpu-small`` with the five losses, three seeds, an evaluation every
    30 steps (11 points), no mid-run checkpoint (the machine is not kept), and the grid
    :data:`DECLINE_GRID`; ``smoke``: the same design on ``cpu-tiny`` at toy size."""
    from mi_bounds.lm.config import get_preset

    if smoke:
        return get_preset("cpu-tiny").replace(
            preset="cpu-tiny (gpu-validation smoke)",
            base={"steps": 150},
            sample={"n_train_prompts": 48, "n_heldout_prompts": 16, "k": 8},
            align={"losses": DECLINE_LOSSES, "seeds": (0, 1), "steps": 12, "batch_size": 8,
                   "eval_every": 4, "ckpt_every": 12, "n_eval_pairs": 16, "kl_prompts": 4,
                   "kl_samples": 2},
            grid=DECLINE_GRID[:2])
    cfg = get_preset("gpu-small")
    return cfg.replace(
        preset="gpu-small (gpu-validation subset)",
        base={"ckpt_every": cfg.base.steps},
        align={"losses": DECLINE_LOSSES, "seeds": (0, 1, 2), "eval_every": 30,
               "ckpt_every": cfg.align.steps},
        grid=DECLINE_GRID)


def collect(run_dir: Path, dest: Path) -> list[str]:
    """What the archive keeps of an lm run directory (with or without a grid), in ``dest``:
    :func:`mi_bounds.lm.collect.collect_run` (config, inputs, base log, sample summary, pairs,
    step-0 evaluation, every report's tables, figures and JSON, every alignment run's history),
    plus the whole sample stage, ``sample/`` (``data.json`` with every sampled reply, compact;
    the pair files), which only the GPU machine can make again quickly. A run cut off before
    its sample stage finished keeps its config and base log. Returns the files, relative."""
    from mi_bounds.lm.collect import collect_run, compact_json

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if (run_dir / "sample" / "data.json").is_file():
        collect_run(run_dir, dest)
        for p in sorted((run_dir / "sample").glob("*")):
            if p.name == "data.json":
                compact_json(p, dest / "sample" / p.name)
            elif p.suffix == ".jsonl":
                copy_file(p, dest / "sample" / p.name)
    else:
        for src, name in ((run_dir / "config.json", "config.json"),
                          (run_dir / "base" / "result.json", "base_result.json")):
            if src.is_file():
                copy_file(src, dest / name)
    return sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())


def _shape_table(report: dict[str, Any]) -> dict[str, Any]:
    """{setting: {loss: {train, heldout: seed-mean verdict and per-seed counts}}} from a grid
    report's summary."""
    out: dict[str, Any] = {}
    for setting, losses in report.get("summary", {}).items():
        for loss, entry in losses.items():
            row = {}
            for section, sh in entry.get("shapes", {}).items():
                counts = {k: v for k, v in sh.get("counts", {}).items() if v}
                row[section] = {"verdict": sh.get("mean", {}).get("shape"), "seeds": counts}
            row["chosen_change"] = entry.get("chosen_change", {}).get("mean")
            row["acc_heldout"] = entry.get("acc_heldout", {}).get("mean")
            row["tokens_per_s"] = entry.get("tokens_per_s")
            row["mfu"] = entry.get("mfu")
            out.setdefault(setting, {})[loss] = row
    return out


def _planned(run) -> list[tuple[str, Path]]:
    """(key, result path) of every alignment run of the plan, in the order the grid runs them
    (setting by setting, then loss by loss, seed by seed)."""
    cfg, out = run.config, []
    for i in range(len(cfg.grid)):
        name, sub = cfg.variant_name(i), cfg.variant(i)
        for loss in sub.align.losses:
            for seed in sub.align.seeds:
                out.append((f"{name}/{loss}-seed{seed}",
                            run.dir / "grid" / name / "align" / f"{loss}-seed{seed}" /
                            "result.json"))
    return out


def step_decline(ctx: Context) -> dict[str, Any]:
    """Base, sample, then the align stage of the subset's settings while the step's time lasts
    (a setting starts only if the longest one so far still ends in time), then the reports
    (shape verdicts, histories, matched comparisons, figures) of what finished."""
    from mi_bounds.lm import stages

    cfg = decline_config(ctx.smoke)
    # kept for the steps after this one: trl 60 s, bounds 20 s, staircase 50 s, packing 10 s
    # (of a 420 s budget). A setting is the unit that starts (~100 s on an H100, estimated), and
    # the first is the longest (it makes the shared reference pass and step-0 evaluation), so
    # this step's own reports (~15 s) come out of the staircase's share when a setting runs up
    # to the deadline, rather than leaving most of a setting's time unused.
    reserve = 40.0 if ctx.smoke else ctx.scaled(140.0)
    deadline = time.monotonic() + max(0.0, ctx.left() - reserve)
    run = stages.open_run(ctx.work / "decline", cfg, device=ctx.device, log=ctx.log)
    rec: dict[str, Any] = {"config": cfg.to_dict(), "run_dir": str(run.dir),
                           "plan": {"settings": [cfg.variant_name(i) for i in range(len(cfg.grid))],
                                    "losses": list(cfg.align.losses),
                                    "seeds": list(cfg.align.seeds)}}
    t = time.perf_counter()
    base = stages.run_base(run)
    rec["base_seconds"] = time.perf_counter() - t
    rec["base"] = {k: base.get(k) for k in ("steps", "seconds", "tokens_per_s", "mfu", "n_params",
                                            "device")}
    t = time.perf_counter()
    sample = stages.run_sample(run)
    rec["sample_seconds"] = time.perf_counter() - t
    rec["sample"] = {k: sample.get(k) for k in ("counts", "base_accuracy")}
    ctx.log(f"decline: base {rec['base_seconds']:.1f} s, sample {rec['sample_seconds']:.1f} s; "
            f"{max(0.0, deadline - time.monotonic()):.0f} s left for alignment runs")
    planned = _planned(run)
    before = {key for key, path in planned if path.is_file()}
    failed = []
    t = time.perf_counter()
    try:
        stages.run_align(run, deadline=deadline)
    except Exception:  # recorded; the reports of what finished still run
        failed.append({"error": traceback.format_exc()})
        ctx.log(f"decline: an alignment run FAILED:\n{failed[-1]['error']}")
    seconds = time.perf_counter() - t
    done = [key for key, path in planned if path.is_file()]
    aligned = len(set(done) - before)
    rec["align"] = {"done": done, "not_started": [k for k, _ in planned if k not in done],
                    "failed": failed, "seconds": seconds, "aligned_now": aligned}
    rec["align_seconds"] = seconds
    t = time.perf_counter()
    try:
        stages.run_report(run)
        rec["shapes"] = _shape_table(
            json.loads((run.dir / "report" / "grid_report.json").read_text()))
    except Exception:  # the runs are kept even if the report fails
        rec["report_error"] = traceback.format_exc()
    rec["report_seconds"] = time.perf_counter() - t
    rec["collected"] = collect(run.dir, ctx.collected / "decline")
    rec["headline"] = {
        "runs_done": len(done), "runs_planned": len(planned), "runs_failed": len(failed),
        "base_accuracy": (rec["sample"].get("base_accuracy") or {}).get("heldout_greedy"),
        "train_pairs": (rec["sample"].get("counts") or {}).get("train_pairs"),
        # wall time of the align stage per run it finished (reference passes and the shared
        # step-0 evaluations included)
        "seconds_per_run": seconds / aligned if aligned else None,
        "shapes_train": {s: {loss: v.get("train", {}).get("verdict") for loss, v in row.items()}
                         for s, row in rec.get("shapes", {}).items()},
    }
    if failed and not done:
        rec["status"] = "failed"
    elif rec["align"]["not_started"] or failed:
        rec["status"] = "partial"
    ctx.log(f"decline: {rec['headline']}")
    return rec


def _load_bench(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def step_trl(ctx: Context) -> dict[str, Any]:
    """benchmarks/bench_lm_trl.py on the decline run's base model and (the first 4,096 of) its
    pairs, same batch, lr, β, bf16 autocast and device on both sides, in this process (so both
    sides start with CUDA and its libraries initialised)."""
    import torch

    src = ctx.work / "decline"
    if not (src / "sample" / "data.json").is_file():
        return {"status": "skipped", "reason": "the decline step did not finish its base and "
                "sample stages (the benchmark uses its base model and pairs)"}
    for module in ("trl", "datasets"):
        if importlib.util.find_spec(module) is None:
            return {"status": "failed", "reason": f"{module} is not installed: carry the "
                    "wheels (.whl, experiments/gpu_prepare.sh)"}
    n_pairs, steps, batch = (24, 4, 4) if ctx.smoke else (4096, 200, 64)
    d = ctx.work / "trl-run"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for name in ("config.json", "inputs.json"):
        shutil.copy(src / name, d / name)
    shutil.copytree(src / "base", d / "base")
    (d / "sample").mkdir()
    data = json.loads((src / "sample" / "data.json").read_text())
    data["train_pairs"] = data["train_pairs"][:n_pairs]
    (d / "sample" / "data.json").write_text(json.dumps(data))
    out = ctx.results / "bench_lm_trl.json"
    argv = ["--run", str(d), "--steps", str(steps), "--batch-size", str(batch), "--lr", "1e-5",
            "--beta", "0.1", "--device", ctx.device, "--threads", str(torch.get_num_threads()),
            "--out", str(out)]
    ctx.log(f"trl: bench_lm_trl.py {' '.join(argv)}")
    threads = torch.get_num_threads()
    try:
        _load_bench("bench_lm_trl").main(argv)
    finally:
        torch.set_num_threads(threads)
    res = json.loads(out.read_text())
    copy_file(out, ctx.collected / "trl" / "bench_lm_trl.json")
    ratio = res.get("ratio_vs_trl")
    rec = {"command": "python benchmarks/bench_lm_trl.py " + " ".join(argv),
           "n_pairs": len(data["train_pairs"]), "result": res,
           "headline": {
               "ours_pairs_per_s": res["ours"]["pairs_per_s"],
               "ours_tokens_per_s": res["ours"].get("tokens_per_s"),
               "trl_pairs_per_s": res["trl"]["pairs_per_s"],
               "ratio_vs_trl": ratio,
               "ratio_vs_trl_precompute_ref": res.get("ratio_vs_trl_precompute_ref"),
               "target": TARGETS["align_vs_trl_pairs_per_s"],
               "target_met": None if ratio is None
               else ratio >= TARGETS["align_vs_trl_pairs_per_s"]},
           "note": "both sides train on the same pairs with the same batch size, so the ratio of "
                   "pairs/s is the ratio of tokens/s (our padding is smaller: see "
                   "padding_fraction)"}
    if not ctx.cuda:
        rec["skipped"] = ["bf16 autocast on both sides (CUDA-only): float32 on the CPU"]
    ctx.log(f"trl: {rec['headline']}")
    return rec


def step_smollm2(ctx: Context) -> dict[str, Any]:
    """``mi-bounds lm run --model smollm2 --preset smollm2-gpu`` in a subprocess under the
    budget (resumable, so a timeout leaves finished runs), then its report, collected."""
    from mi_bounds.lm.config import PRESETS

    if "smollm2-gpu" not in PRESETS:
        return {"status": "skipped", "reason": "no smollm2-gpu preset in this checkout "
                f"(presets: {', '.join(PRESETS)})"}
    from mi_bounds.lm import pretrained

    gguf = pretrained.cache_root() / "gguf" / pretrained.SMOLLM2.filename
    if not gguf.is_file():
        return {"status": "skipped", "reason": f"{gguf} is not there: carry .gguf-1 in one "
                "call and .gguf-2 in the next (experiments/gpu_gguf.py)"}
    if not ctx.cuda and not ctx.smoke:
        return {"status": "skipped", "reason": "CUDA-only (SmolLM2 on a CPU is hours)"}
    run_dir = ctx.work / "smollm2"
    code = "import sys; from mi_bounds.lm.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, "run", "--model", "smollm2", "--preset", "smollm2-gpu",
           "--out", str(run_dir), "--device", ctx.device]
    rec: dict[str, Any] = {"command": " ".join(cmd[3:])}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=max(10.0, ctx.left() - 45.0))
        rec["returncode"], rec["stderr_tail"] = proc.returncode, proc.stderr[-4000:]
    except subprocess.TimeoutExpired as err:
        rec["status"] = "partial"
        rec["stderr_tail"] = (err.stderr or b"")[-4000:].decode(errors="replace") \
            if isinstance(err.stderr, bytes) else str(err.stderr)[-4000:]
    if (run_dir / "config.json").is_file():
        report = subprocess.run([sys.executable, "-c", code, "report", "--out", str(run_dir)],
                                capture_output=True, text=True, env=env,
                                timeout=max(10.0, ctx.left()))
        rec["report_returncode"] = report.returncode
        rec["collected"] = collect(run_dir, ctx.collected / "smollm2")
    if rec.get("returncode", 0) != 0 and "status" not in rec:
        rec["status"] = "failed"
    return rec
