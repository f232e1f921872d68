"""Side by side with bmi (benchmark-mi 0.1.3): the same samples, error against the exact MI, time.

bmi needs JAX and an older numpy, so it lives in its own virtual environment, outside the
project's dependencies. Set it up once (2026-11-27: these pins are what imports cleanly with
benchmark-mi 0.1.3 on Python 3.11; the versions pip picks by itself do not)::

    python3 -m venv /work/bmi-venv
    /work/bmi-venv/bin/pip install benchmark-mi==0.1.3 jax==0.4.23 jaxlib==0.4.23 \\
        chex==0.1.85 scipy==1.11.4 "scikit-learn<1.5"

Then, from the repository root (resumable: finished (task, side) files are skipped)::

    .venv/bin/python benchmarks/bench_bmi.py run --bmi-python /work/bmi-venv/bin/python
    .venv/bin/python benchmarks/bench_bmi.py table      # writes benchmarks/results/bmi.json

``run`` first samples every task with bmi's own samplers (``sample``, in the bmi venv; 5,000
rows, seed 0, saved to ``runs/bmi/samples/<task>.npz`` with the exact MI), then, task by task
and interleaved so that the shared machine's load falls on all alike, runs bmi's estimators
(``bmi`` side, in the bmi venv), ours with the defaults (``ours`` side: the separable critic)
and ours with ``--critic concat`` (``concat`` side; bmi's critics are concat MLPs too), each in
the project venv, on the same file. The table adds ``auto``: of the two runs of ours, the one
whose chosen checkpoint scored higher on the validation rows (ties: separable), which is what
``--critic auto`` reports (same seed, same batches: tests/test_heldout.py checks the identity),
at the sum of the two times.
Each side runs in its own process with one thread: ``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1``,
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1
--xla_force_host_platform_device_count=1`` and ``torch.set_num_threads(1)``; no ``taskset``.
Wall time and CPU time (``getrusage``, all threads) are recorded for each estimator call:
bmi's ``estimate_with_info(x, y)`` with its defaults (split 0.5, standardise, batch 256, Adam
lr 0.1, MLP (16, 8), test every 250 steps, early stopping, at most 10,000 steps; its JIT
compilation included), and ours ``mi-bounds estimate --data <file> --bound <b>`` with its
defaults, called in-process (loading, split, training, validation and test evaluation
included). Neither includes interpreter start-up and library imports.

What differs between the two protocols (read the numbers with it): bmi standardises with
statistics of *all* rows and reports the *highest* test-row value seen during training (its
early stopping reads the test rows); ours standardises with train-row statistics, chooses the
checkpoint on validation rows carved from the train rows and reads the test rows once.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bmi"
RESULT = ROOT / "benchmarks" / "results" / "bmi.json"
N_SAMPLES = 5000
SEED = 0

#: bmi task ids (bmi.benchmark.BENCHMARK_TASKS), chosen to cover the families the issue names.
TASKS = [
    "1v1-normal-0.75",
    "multinormal-dense-5-5-0.5",
    "multinormal-dense-25-25-0.5",
    "student-identity-2-2-1",
    "student-identity-5-5-2",
    "half_cube-multinormal-sparse-5-5-2-2.0",
    "spiral-multinormal-sparse-5-5-2-2.0",
    "1v1-additive-0.1",
    "1v1-additive-0.75",
    "half_cube-multinormal-sparse-25-25-2-2.0",
]
#: Independent X, Y (exact MI 0), sampled with bmi's SplitMultinormal (identity covariance).
INDEPENDENT = {"independent-5-5": 5000, "independent-5-5-n600": 600}

ESTIMATORS = ("dv", "infonce", "nwj", "ksg")
NEURAL = ("dv", "infonce", "nwj")

THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1 "
                 "--xla_force_host_platform_device_count=1",
    "JAX_PLATFORMS": "cpu",
}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed(fn):
    w0, c0 = time.perf_counter(), _cpu()
    out = fn()
    return out, time.perf_counter() - w0, _cpu() - c0


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------------------
# bmi side (run in the bmi venv)
# ------------------------------------------------------------------------------------------


def sample(work: Path) -> None:
    """Sample every task with bmi (5,000 rows, seed 0) to ``work/samples/<task>.npz``."""
    import bmi

    out = work / "samples"
    out.mkdir(parents=True, exist_ok=True)
    for tid in TASKS:
        path = out / f"{tid}.npz"
        if path.exists():
            continue
        task = bmi.BENCHMARK_TASKS[tid]
        x, y = task.sample(N_SAMPLES, seed=SEED)
        np.savez(path, X=np.asarray(x, np.float64), Y=np.asarray(y, np.float64),
                 true_mi=np.float64(task.mutual_information))
        print(f"sampled {tid}: I = {task.mutual_information:.4f}", flush=True)
    for tid, n in INDEPENDENT.items():
        path = out / f"{tid}.npz"
        if path.exists():
            continue
        sampler = bmi.samplers.SplitMultinormal(dim_x=5, dim_y=5, covariance=np.eye(10))
        x, y = sampler.sample(n, SEED)
        np.savez(path, X=np.asarray(x, np.float64), Y=np.asarray(y, np.float64),
                 true_mi=np.float64(sampler.mutual_information()))
        print(f"sampled {tid}: I = {sampler.mutual_information():.4f}", flush=True)


def run_bmi(work: Path, tid: str) -> None:
    """bmi's DV, InfoNCE, NWJ (defaults) and KSG (defaults: k = 5, 10) on one sample."""
    import bmi
    import jax

    path = work / "results" / f"{tid}__bmi.json"
    if path.exists():
        return
    data = np.load(work / "samples" / f"{tid}.npz")
    x, y = data["X"], data["Y"]
    est = bmi.estimators
    makers = {"dv": est.DonskerVaradhanEstimator, "infonce": est.InfoNCEEstimator,
              "nwj": est.NWJEstimator, "ksg": est.KSGEnsembleFirstEstimator}
    record: dict = {"task": tid, "side": "bmi", "true_mi": float(data["true_mi"]),
                    "n": int(x.shape[0]), "versions": {"bmi": "0.1.3", "jax": jax.__version__},
                    "estimators": {}}
    for name, make in makers.items():
        kwargs = {} if name == "ksg" else {"verbose": False}
        estimator = make(**kwargs)
        res, wall, cpu = _timed(lambda e=estimator: e.estimate_with_info(x, y))
        info = {k: v for k, v in res.additional_information.items() if k != "test_history"}
        record["estimators"][name] = {
            "estimate": float(res.mi_estimate), "seconds": wall, "cpu_seconds": cpu,
            "info": json.loads(json.dumps(info, default=float)),
        }
        print(f"  bmi {name}: {res.mi_estimate:.4f} ({wall:.1f} s)", flush=True)
    _write(path, record)


# ------------------------------------------------------------------------------------------
# our side (run in the project venv)
# ------------------------------------------------------------------------------------------


def run_ours(work: Path, tid: str, critic: str = "separable") -> None:
    """``mi-bounds estimate --data`` (dv, infonce, nwj; defaults) and ``--bound ksg``; with
    ``critic="concat"``, ``--critic concat`` (dv, infonce, nwj) instead."""
    import contextlib
    import io

    import torch

    from mi_bounds.estimation.cli import main as estimate

    torch.set_num_threads(1)
    side = "ours" if critic == "separable" else critic
    path = work / "results" / f"{tid}__{side}.json"
    if path.exists():
        return
    npz = work / "samples" / f"{tid}.npz"
    data = np.load(npz)
    record: dict = {"task": tid, "side": side, "true_mi": float(data["true_mi"]),
                    "n": int(data["X"].shape[0]), "estimators": {}}
    names = ESTIMATORS if critic == "separable" else NEURAL
    for name in names:
        out = work / side / f"{tid}__{name}.json"
        argv = ["--data", str(npz), "--bound", name, "--no-progress"]
        if critic != "separable":
            argv += ["--critic", critic]
        argv += ["--out", str(out)]
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
            code, wall, cpu = _timed(lambda a=argv: estimate(a))
        entry: dict = {"command": "mi-bounds estimate " + " ".join(argv[:-2]),
                       "exit_code": code, "seconds": wall, "cpu_seconds": cpu}
        if code == 0:
            run = json.loads(out.read_text())
            final = run["final"][name]
            history = run.get("selection", {}).get("validation", [])
            entry.update(estimate=final["estimate"], stderr=final["stderr"],
                         train_estimate=final.get("train_estimate"),
                         reliable=final.get("reliable", True), flags=final.get("flags", []),
                         selected_step=run.get("selection", {}).get("step"),
                         validation_best=max((v for _, v in history), default=None),
                         score_cap=(run.get("score_cap") or {}).get("b"),
                         steps_run=run.get("steps_run"))
        else:
            entry.update(estimate=None, output=buf.getvalue()[-500:])
        record["estimators"][name] = entry
        print(f"  {side} {name}: {entry['estimate']} ({wall:.1f} s)", flush=True)
    _write(path, record)


# ------------------------------------------------------------------------------------------
# driver and table (project venv)
# ------------------------------------------------------------------------------------------


def drive(work: Path, bmi_python: str) -> None:
    """Sample, then per task: bmi side, then our side, each in its own one-thread process."""
    env = {**os.environ, **THREAD_ENV}
    me = str(Path(__file__).resolve())
    subprocess.run([bmi_python, me, "sample", "--work", str(work)], env=env, check=True)
    for tid in [*TASKS, *INDEPENDENT]:
        print(f"[{time.strftime('%H:%M:%S')}] {tid}", flush=True)
        subprocess.run([bmi_python, me, "bmi", tid, "--work", str(work)], env=env, check=True)
        for side in ("ours", "concat"):
            subprocess.run([sys.executable, me, side, tid, "--work", str(work)], env=env,
                           check=True)


def _auto(ours: dict, concat: dict) -> dict:
    """``--critic auto`` from the two runs: the higher best validation score (ties: ours)."""
    pick = concat if (concat.get("validation_best") or -np.inf) > (
        ours.get("validation_best") or -np.inf) else ours
    return {**pick, "critic": "concat" if pick is concat else "separable",
            "seconds": ours["seconds"] + concat["seconds"],
            "cpu_seconds": ours["cpu_seconds"] + concat["cpu_seconds"]}


def _verdict(name: str, est: float | None, truth: float, b_err: float) -> str:
    if name == "ksg":
        return ""
    if est is None:
        return "error"
    miss = abs(est - truth) - b_err - 0.05
    return "yes" if miss <= 0 else f"no (+{miss:.3f})"


def table(work: Path, out: Path = RESULT) -> str:
    """Markdown tables of every finished task and ``benchmarks/results/bmi.json``."""
    sides = ("bmi", "ours", "concat")
    records = {}
    for tid in [*TASKS, *INDEPENDENT]:
        files = [work / "results" / f"{tid}__{side}.json" for side in sides]
        if not all(f.exists() for f in files):
            continue
        b, o, c = (json.loads(f.read_text()) for f in files)
        auto = {k: _auto(o["estimators"][k], c["estimators"][k]) for k in NEURAL}
        records[tid] = {"true_mi": b["true_mi"], "n": b["n"], "bmi": b["estimators"],
                        "ours": o["estimators"], "concat": c["estimators"], "auto": auto}
    fmt = (lambda v: "error" if v is None else f"{v:.3f}")  # noqa: E731
    main_rows, other_rows = [], []
    for tid, r in records.items():
        truth = r["true_mi"]
        for name in ESTIMATORS:
            be, oe = r["bmi"][name], r["ours"][name]
            b_err = abs(be["estimate"] - truth)
            o_est = oe["estimate"]
            o_err = None if o_est is None else abs(o_est - truth)
            flag = "" if oe.get("reliable", True) else " (unreliable)"
            main_rows.append(
                f"| {tid} | {truth:.3f} | {name} | {be['estimate']:.3f} | {b_err:.3f} | "
                f"{be['seconds']:.1f} | {fmt(o_est)}{flag} | {fmt(o_err)} | {oe['seconds']:.1f} | "
                f"{_verdict(name, o_est, truth, b_err)} |")
            if name == "ksg":
                continue
            ce, ae = r["concat"][name], r["auto"][name]
            other_rows.append(
                f"| {tid} | {name} | {b_err:.3f} | {fmt(ce['estimate'])} | "
                f"{fmt(None if ce['estimate'] is None else abs(ce['estimate'] - truth))} | "
                f"{ce['seconds']:.1f} | {_verdict(name, ce['estimate'], truth, b_err)} | "
                f"{ae['critic']} | {fmt(ae['estimate'])} | "
                f"{fmt(None if ae['estimate'] is None else abs(ae['estimate'] - truth))} | "
                f"{ae['seconds']:.1f} | {_verdict(name, ae['estimate'], truth, b_err)} |")
    head = ("| task | true MI | estimator | bmi | bmi error | bmi s | ours | ours error | "
            "ours s | within bmi error + 0.05 |\n|---|---|---|---|---|---|---|---|---|---|")
    head2 = ("| task | estimator | bmi error | concat | concat error | concat s | within | "
             "auto: critic | auto | auto error | auto s | within |\n"
             "|---|---|---|---|---|---|---|---|---|---|---|---|")
    summary = []
    for name in ESTIMATORS:
        cols = ["bmi", "ours"] + (["concat", "auto"] if name != "ksg" else [])
        wall = {k: np.median([r[k][name]["seconds"] for r in records.values()]) for k in cols}
        cpu = {k: np.median([r[k][name]["cpu_seconds"] for r in records.values()]) for k in cols}
        if records:
            summary.append(f"| {name} | " + " | ".join(
                f"{wall.get(k, np.nan):.1f} / {cpu.get(k, np.nan):.1f}"
                for k in ("bmi", "ours", "concat", "auto")) + " |")
    times = ("| estimator | bmi | ours (separable, default) | ours --critic concat | "
             "ours --critic auto |\n|---|---|---|---|---|\n" + "\n".join(summary))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": "2-core x86-64 CPU VM (shared)", "samples": N_SAMPLES, "sample_seed": SEED,
        "threads": THREAD_ENV, "date": time.strftime("%Y-%m-%d"), "tasks": records,
    }, indent=1) + "\n")
    return (head + "\n" + "\n".join(main_rows) + "\n\n" + head2 + "\n" + "\n".join(other_rows)
            + "\n\nMedian wall / CPU seconds over the tasks:\n\n" + times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["sample", "bmi", "ours", "concat", "run", "table"])
    p.add_argument("task", nargs="?", help="task id (bmi, ours, concat)")
    p.add_argument("--work", type=Path, default=WORK, help="samples and per-side results")
    p.add_argument("--bmi-python", default="/work/bmi-venv/bin/python",
                   help="python of the bmi venv (run)")
    args = p.parse_args(argv)
    if args.command == "sample":
        sample(args.work)
    elif args.command == "bmi":
        run_bmi(args.work, args.task)
    elif args.command == "ours":
        run_ours(args.work, args.task)
    elif args.command == "concat":
        run_ours(args.work, args.task, critic="concat")
    elif args.command == "run":
        drive(args.work, args.bmi_python)
    else:
        print(table(args.work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
