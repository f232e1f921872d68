"""Side by side with bmi (benchmark-mi 0.1.3): the same samples, error against the exact MI, time.

bmi needs JAX and an older numpy, so it lives in its own virtual environment, outside the
project's dependencies. Set it up once (2026-11-27: these pins are what imports cleanly with
benchmark-mi 0.1.3 on Python 3.11; the versions pip picks by itself do not)::

    python3 -m venv /work/bmi-venv
    /work/bmi-venv/bin/pip install benchmark-mi==0.1.3 jax==0.4.23 jaxlib==0.4.23 \\
        chex==0.1.85 scipy==1.11.4 "scikit-learn<1.5"

Then, from the repository root (resumable: finished (task, seed, side) files are skipped)::

    .venv/bin/python benchmarks/bench_bmi.py run --bmi-python /work/bmi-venv/bin/python
    .venv/bin/python benchmarks/bench_bmi.py table      # writes benchmarks/results/bmi.json

``--suite`` picks the tasks: ``v1`` (default) is bmi's whole benchmark, the 40 tasks of
``bmi.benchmark.BENCHMARK_TASKS``; ``first`` the ten tasks of the first comparison (2026-11-27).
Both add two independent samples (bmi's SplitMultinormal with identity covariance, 5,000 and
600 rows, exact MI 0). ``--seeds`` are the sampling seeds (bmi's own workflow,
``workflows/benchmark/v1/config.py``, uses seeds 0–9 at 5,000 rows; default here: 0).
``--shard k/n`` runs every n-th task from the k-th (0-based), so that n processes share one
suite without overlap (each process is one thread).

``run`` first samples every (task, seed) with bmi's own samplers (``sample``, in the bmi venv;
5,000 rows, saved to ``runs/bmi/samples/<task>__s<seed>.npz`` with the exact MI), then,
(task, seed) by (task, seed) and interleaved so that the shared machine's load falls on all
alike, runs each side of ``--sides``: bmi's estimators (``bmi``, in the bmi venv), ours with the
defaults (``ours``: the separable critic, ``--marginals standard``), ours with ``--marginals
rank`` (``rank``: the empirical-copula map fitted on the train rows, docs/THEORY.md §4) and ours
with ``--critic concat`` (``concat``; bmi's critics are concat MLPs too) and, for the NWJ kind
only, the NWJ value at a JS-trained critic with the rank map (``rank_js``: ``--bound js_nwj
--marginals rank``; benchmarks/preregistration/bmi_js_nwj.md), each of ours in the project
venv, on the same file. Where ``ours`` and ``concat`` both ran, the table adds ``auto``:
of the two, the one whose chosen checkpoint scored higher on the validation rows (ties:
separable), which is what ``--critic auto`` reports (same seed, same batches:
tests/test_heldout.py checks the identity), at the sum of the two times.
Each side runs in its own process with one thread: ``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1``,
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1
--xla_force_host_platform_device_count=1`` and ``torch.set_num_threads(1)``; no ``taskset``.
Wall time and CPU time (``getrusage``, all threads) are recorded for each estimator call:
bmi's ``estimate_with_info(x, y)`` with its defaults (split 0.5, standardise, batch 256, Adam
lr 0.1, MLP (16, 8), test every 250 steps, early stopping, at most 10,000 steps; its JIT
compilation included), and ours ``mi-bounds estimate --data <file> --bound <b>`` with its
defaults, called in-process (loading, split, training, validation and test evaluation
included). Neither includes interpreter start-up and library imports.

``dmi`` (not in the default ``--sides``): diffusion-mi 0.1.0's MINDE (Franzese et al., "MINDE:
Mutual Information Neural Diffusion Estimation", ICLR 2024) and MMG, as the package names them,
with the package's defaults and its own example's budget (batch 256, 300 epochs ≈ 3,000 steps on
2,500 rows), fitted on the first half of the rows (MMG validates on the last 20 % of that half)
and read on the second half; ``dmi_long`` is the same at ten times the epochs
(benchmarks/preregistration/bmi_dmi_long.md). Both run in their own venv, which borrows the
project's CPU torch through a ``.pth`` file (pip would otherwise pull a CUDA build) and installs
the rest without dependencies (2026-12-07; these are what imported)::

    python3 -m venv /work/dmi-venv
    .venv/bin/python -c "import site; print(site.getsitepackages()[0])" \\
        > /work/dmi-venv/lib/python3.11/site-packages/project_venv.pth
    /work/dmi-venv/bin/pip install --no-deps diffusion-mi==0.1.0 lightning==2.6.6 \\
        pytorch-lightning==2.6.6 lightning-utilities==0.15.3 torchmetrics==1.9.0 tensorboardX==2.6.5
    /work/dmi-venv/bin/pip install scikit-learn==1.9.1

diffusion-mi imports torchvision without using it, and the PyPI torchvision wheel does not load
beside the CPU torch; ``run_dmi`` puts an empty module in its place, in its own process only.

The table compares, per (task, estimator kind), the mean estimate over the seeds that every
compared side finished: "within" = |ours − I| ≤ |bmi − I| + 0.05 nats; the time is the median
over the tasks of each call's wall seconds. Each cell also carries the seeds' sd (ddof 1, as bmi
reports mean ± std), and the summary's ``within_by_seed`` counts, seed by seed, the tasks within
on that seed's own pair of estimates (the markdown prints its fewest and most as "one seed: a–b").

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

#: the ten bmi task ids of the first comparison (2026-11-27), chosen to cover the families
FIRST = [
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
#: the sides of ours: extra ``mi-bounds estimate`` arguments, and per estimator kind compared
#: with bmi's the ``--bound`` run for it
OURS: dict[str, tuple[list[str], dict[str, str]]] = {
    "ours": ([], {k: k for k in ESTIMATORS}),
    "rank": (["--marginals", "rank"], {k: k for k in ESTIMATORS}),
    "concat": (["--critic", "concat"], {k: k for k in NEURAL}),
    # the NWJ value at a JS-trained critic (Poole et al. 2019, §4; docs/THEORY.md §4):
    # benchmarks/preregistration/bmi_js_nwj.md
    "rank_js": (["--marginals", "rank"], {"nwj": "js_nwj"}),
}
#: diffusion-mi 0.1.0's estimators (MINDE, MMG), run in their own venv (``--dmi-python``)
DMI = ("minde", "mmg")
#: their batch and, per side, their training budget in epochs: ``dmi`` the package's own example
#: (``MINDE.py``: 300 epochs, 3,000 steps of batch 256 on 2,500 rows), ``dmi_long`` ten times it
#: (benchmarks/preregistration/bmi_dmi_long.md)
DMI_BATCH = 256
DMI_EPOCHS = {"dmi": 300, "dmi_long": 3000}
SIDES = ("bmi", *OURS, *DMI_EPOCHS)
#: every side a table row can hold: the run sides and ``auto``, made from ``ours`` and ``concat``
TABLE_SIDES = ("bmi", *OURS, "auto", *DMI_EPOCHS)
#: Sides run on a subset of tasks or seeds: they do not decide which seeds a task compares.
EXTRA_SIDES = tuple(DMI_EPOCHS)

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


def sample_path(work: Path, tid: str, seed: int) -> Path:
    return work / "samples" / f"{tid}__s{seed}.npz"


def result_path(work: Path, tid: str, seed: int, side: str) -> Path:
    return work / "results" / f"{tid}__s{seed}__{side}.json"


def suite_tasks(work: Path, suite: str) -> list[str]:
    """The task ids of ``suite`` (``v1``: read from the index that ``sample`` writes)."""
    if suite == "first":
        return [*FIRST, *INDEPENDENT]
    index = work / "samples" / "v1_tasks.json"
    if not index.is_file():
        raise SystemExit(f"{index} is missing: run `bench_bmi.py sample --suite v1` in the bmi "
                         "venv first (`run` does)")
    return [*json.loads(index.read_text()), *INDEPENDENT]


def shard(items: list[str], spec: str) -> list[str]:
    """Every n-th item from the k-th, for ``spec`` = "k/n" (0 <= k < n)."""
    try:
        k, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise SystemExit(f"--shard must be k/n with integers, got {spec!r}") from None
    if not 0 <= k < n:
        raise SystemExit(f"--shard k/n needs 0 <= k < n, got {spec!r}")
    return items[k::n]


# ------------------------------------------------------------------------------------------
# bmi side (run in the bmi venv)
# ------------------------------------------------------------------------------------------


def sample(work: Path, suite: str, seeds: list[int]) -> None:
    """Sample every task of ``suite`` with bmi (5,000 rows) for each seed."""
    import bmi

    out = work / "samples"
    out.mkdir(parents=True, exist_ok=True)
    if suite == "v1":
        (out / "v1_tasks.json").write_text(json.dumps(list(bmi.benchmark.BENCHMARK_TASKS)) + "\n")
        tasks = list(bmi.benchmark.BENCHMARK_TASKS)
    else:
        tasks = list(FIRST)
    for seed in seeds:
        for tid in tasks:
            path = sample_path(work, tid, seed)
            if path.exists():
                continue
            task = bmi.benchmark.BENCHMARK_TASKS[tid]
            x, y = task.sample(N_SAMPLES, seed=seed)
            np.savez(path, X=np.asarray(x, np.float64), Y=np.asarray(y, np.float64),
                     true_mi=np.float64(task.mutual_information))
            print(f"sampled {tid} seed {seed}: I = {task.mutual_information:.4f}", flush=True)
        for tid, n in INDEPENDENT.items():
            path = sample_path(work, tid, seed)
            if path.exists():
                continue
            sampler = bmi.samplers.SplitMultinormal(dim_x=5, dim_y=5, covariance=np.eye(10))
            x, y = sampler.sample(n, seed)
            np.savez(path, X=np.asarray(x, np.float64), Y=np.asarray(y, np.float64),
                     true_mi=np.float64(sampler.mutual_information()))
            print(f"sampled {tid} seed {seed}: I = 0", flush=True)


def run_bmi(work: Path, tid: str, seed: int) -> None:
    """bmi's DV, InfoNCE, NWJ (defaults) and KSG (defaults: k = 5, 10) on one sample."""
    import bmi
    import jax

    path = result_path(work, tid, seed, "bmi")
    if path.exists():
        return
    data = np.load(sample_path(work, tid, seed))
    x, y = data["X"], data["Y"]
    est = bmi.estimators
    makers = {"dv": est.DonskerVaradhanEstimator, "infonce": est.InfoNCEEstimator,
              "nwj": est.NWJEstimator, "ksg": est.KSGEnsembleFirstEstimator}
    record: dict = {"task": tid, "seed": seed, "side": "bmi", "true_mi": float(data["true_mi"]),
                    "n": int(x.shape[0]), "versions": {"bmi": "0.1.3", "jax": jax.__version__},
                    "estimators": {}}
    for name, make in makers.items():
        kwargs = {} if name == "ksg" else {"verbose": False}
        estimator = make(**kwargs)
        try:
            res, wall, cpu = _timed(lambda e=estimator: e.estimate_with_info(x, y))
        except Exception as err:  # a failure of bmi's is a result to report, not a crash
            record["estimators"][name] = {"estimate": None, "seconds": None,
                                          "cpu_seconds": None, "error": repr(err)[:300]}
            print(f"  bmi {name}: error {err!r}"[:200], flush=True)
            continue
        info = {k: v for k, v in res.additional_information.items() if k != "test_history"}
        value = float(res.mi_estimate)
        record["estimators"][name] = {
            "estimate": value if np.isfinite(value) else None, "seconds": wall,
            "cpu_seconds": cpu, "info": json.loads(json.dumps(info, default=float)),
            **({} if np.isfinite(value) else {"error": f"non-finite estimate {value}"}),
        }
        print(f"  bmi {name}: {value:.4f} ({wall:.1f} s)", flush=True)
    _write(path, record)


def run_dmi(work: Path, tid: str, seed: int, side: str = "dmi") -> None:
    """diffusion-mi's MINDE and MMG (its defaults, ``DMI_EPOCHS[side]`` epochs of ``DMI_BATCH``)
    on one sample: fit on the first half of the rows (MMG: 80 % of that half, validating on the
    rest, which its ``fit`` requires), estimate on the second half (bmi's split ½)."""
    import types

    import lightning  # noqa: F401  (imported before the shim below: they see no torchvision)
    import pytorch_lightning  # noqa: F401
    import torch
    import torchmetrics  # noqa: F401

    # diffusion-mi imports torchvision in estimators/neural/_critic.py and never uses it; the
    # PyPI torchvision wheel does not load beside the CPU torch build, so an empty module
    # stands in for it (only in this process).
    shim = types.ModuleType("torchvision")
    shim.transforms = types.ModuleType("torchvision.transforms")
    sys.modules.setdefault("torchvision", shim)
    sys.modules.setdefault("torchvision.transforms", shim.transforms)
    import estimators.neural as dmi  # diffusion-mi's own top-level package

    torch.set_num_threads(1)
    epochs = DMI_EPOCHS[side]
    path = result_path(work, tid, seed, side)
    if path.exists():
        return
    data = np.load(sample_path(work, tid, seed))
    x, y = data["X"], data["Y"]
    half = x.shape[0] // 2
    fit_end = int(0.8 * half)
    record: dict = {"task": tid, "seed": seed, "side": side, "true_mi": float(data["true_mi"]),
                    "n": int(x.shape[0]), "versions": {"diffusion-mi": "0.1.0"},
                    "budget": {"batch_size": DMI_BATCH, "max_epochs": epochs},
                    "estimators": {}}
    for name, cls in (("minde", dmi.MINDEEstimator), ("mmg", dmi.MMGEstimator)):
        def call(cls=cls, name=name) -> float:
            est = cls(x_shape=x.shape[1:], y_shape=y.shape[1:], batch_size=DMI_BATCH,
                      max_epochs=epochs, seed=seed)
            if name == "mmg":
                est.fit(x[:fit_end], y[:fit_end], X_val=x[fit_end:half], Y_val=y[fit_end:half])
            else:
                est.fit(x[:half], y[:half])
            return float(est.estimate(x[half:], y[half:]))
        try:
            value, wall, cpu = _timed(call)
        except Exception as err:  # a failure is a result to report
            record["estimators"][name] = {"estimate": None, "seconds": None,
                                          "cpu_seconds": None, "error": repr(err)[:300]}
            continue
        ok = bool(np.isfinite(value))
        record["estimators"][name] = {"estimate": value if ok else None, "seconds": wall,
                                      "cpu_seconds": cpu,
                                      **({} if ok else {"error": f"non-finite {value}"})}
        print(f"  {side} {name}: {value:.4f} ({wall:.1f} s)", flush=True)
    _write(path, record)


# ------------------------------------------------------------------------------------------
# our side (run in the project venv)
# ------------------------------------------------------------------------------------------


def run_ours(work: Path, tid: str, seed: int, side: str = "ours") -> None:
    """``mi-bounds estimate --data`` with the defaults plus ``OURS[side]``'s arguments."""
    import contextlib
    import io

    import torch

    from mi_bounds.estimation.cli import main as estimate

    torch.set_num_threads(1)
    path = result_path(work, tid, seed, side)
    if path.exists():
        return
    npz = sample_path(work, tid, seed)
    data = np.load(npz)
    record: dict = {"task": tid, "seed": seed, "side": side, "true_mi": float(data["true_mi"]),
                    "n": int(data["X"].shape[0]), "estimators": {}}
    extra, bounds = OURS[side]
    for name, bound in bounds.items():
        out = work / side / f"{tid}__s{seed}__{name}.json"
        argv = ["--data", str(npz), "--bound", bound, "--no-progress", *extra,
                "--out", str(out)]
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
            code, wall, cpu = _timed(lambda a=argv: estimate(a))
        entry: dict = {"command": "mi-bounds estimate " + " ".join(argv[:-2]), "bound": bound,
                       "exit_code": code, "seconds": wall, "cpu_seconds": cpu}
        if code == 0:
            run = json.loads(out.read_text())
            final = run["final"][bound]
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


def drive(work: Path, bmi_python: str, suite: str, seeds: list[int], sides: list[str],
          spec: str, dmi_python: str = "/work/dmi-venv/bin/python") -> None:
    """Sample, then per (seed, task): each side in its own one-thread process."""
    env = {**os.environ, **THREAD_ENV}
    me = str(Path(__file__).resolve())
    seed_args = ["--seeds", *map(str, seeds)]
    subprocess.run([bmi_python, me, "sample", "--work", str(work), "--suite", suite,
                    *seed_args], env=env, check=True)
    for seed in seeds:
        for tid in shard(suite_tasks(work, suite), spec):
            print(f"[{time.strftime('%H:%M:%S')}] {tid} seed {seed}", flush=True)
            for side in sides:
                if result_path(work, tid, seed, side).exists():
                    continue
                python = (bmi_python if side == "bmi" else dmi_python if side in DMI_EPOCHS
                          else sys.executable)
                subprocess.run([python, me, side, tid, "--work", str(work), "--seeds",
                                str(seed)], env=env, check=True)


def _auto(ours: dict, concat: dict) -> dict:
    """``--critic auto`` from the two runs: the higher best validation score (ties: ours)."""
    pick = concat if (concat.get("validation_best") or -np.inf) > (
        ours.get("validation_best") or -np.inf) else ours
    return {**pick, "critic": "concat" if pick is concat else "separable",
            "seconds": ours["seconds"] + concat["seconds"],
            "cpu_seconds": ours["cpu_seconds"] + concat["cpu_seconds"]}


def _mean(values: list[float | None]) -> float | None:
    """The mean, or None when any value is missing (a failed call fails the task)."""
    return None if any(v is None for v in values) else float(np.mean(values))


def load(work: Path, tasks: list[str], seeds: list[int] | None = None) -> dict:
    """Per task: the seeds every side present for that task finished (among ``seeds``, when
    given), and per side and estimator the per-seed records."""
    records: dict = {}
    for tid in tasks:
        per_side: dict[str, dict[int, dict]] = {}
        for f in sorted((work / "results").glob(f"{tid}__s*__*.json")):
            rest = f.stem[len(tid) + 3:]
            seed, _, side = rest.partition("__")
            if not seed.isdigit() or side not in SIDES:
                continue
            if seeds is not None and int(seed) not in seeds:
                continue
            per_side.setdefault(side, {})[int(seed)] = json.loads(f.read_text())
        if "bmi" not in per_side or "ours" not in per_side:
            continue
        # the compared sides fix the seeds; a column on a subset (dmi) is shown over the seeds
        # it has among them and does not cut the others'
        common = sorted(set.intersection(*(set(v) for k, v in per_side.items()
                                           if k not in EXTRA_SIDES)))
        if not common:
            continue
        first = per_side["bmi"][common[0]]
        entry: dict = {"true_mi": first["true_mi"], "n": first["n"], "seeds": common}
        for side, by_seed in per_side.items():
            have = [s for s in common if s in by_seed]
            if have:
                entry[side] = {name: [by_seed[s]["estimators"][name] for s in have]
                               for name in by_seed[have[0]]["estimators"]}
        if "concat" in entry:
            entry["auto"] = {
                name: [_auto(o, c) for o, c in zip(entry["ours"][name], entry["concat"][name],
                                                   strict=True)]
                for name in NEURAL}
        records[tid] = entry
    return records


def _sd(values: list[float | None]) -> float | None:
    """The seeds' standard deviation (ddof 1, as bmi reports mean ± std); None with one seed
    or a failed call."""
    if len(values) < 2 or any(v is None for v in values):
        return None
    return float(np.std(values, ddof=1))


def _within(ours: float | None, bmi: float | None, truth: float) -> bool:
    """The verdict: |ours − I| ≤ |bmi − I| + 0.05; a failed call of ours is out, a failed call
    of bmi's leaves any finite estimate of ours within."""
    if ours is None:
        return False
    return bmi is None or abs(ours - truth) <= abs(bmi - truth) + 0.05


def summarise(records: dict) -> dict:
    """Per side and estimator: the seed-mean estimate, its error, the seeds' sd and the verdict
    per task; then the count within bmi's error + 0.05 (on the seed means, and seed by seed on
    each seed's own pair of estimates) and the median wall seconds over the tasks."""
    out: dict = {"per_task": {}, "summary": {}}
    by_seed: dict = {}  # (side, name) -> seed -> [within, tasks]
    for tid, r in records.items():
        truth, row = r["true_mi"], {}
        for side in TABLE_SIDES:
            if side not in r:
                continue
            for name, runs in r[side].items():
                values = [x.get("estimate") for x in runs]
                est = _mean(values)
                secs = _mean([x.get("seconds") for x in runs])
                row.setdefault(side, {})[name] = {
                    "estimate": est, "error": None if est is None else abs(est - truth),
                    "sd": _sd(values), "seconds": secs, "n_seeds": len(runs)}
                if side in EXTRA_SIDES or side == "bmi" or name not in r["bmi"]:
                    continue
                for seed, mine, theirs in zip(r["seeds"], runs, r["bmi"][name], strict=True):
                    count = by_seed.setdefault((side, name), {}).setdefault(str(seed), [0, 0])
                    count[0] += _within(mine.get("estimate"), theirs.get("estimate"), truth)
                    count[1] += 1
        for side in row:
            if side == "bmi":
                continue
            for name, cell in row[side].items():
                if name not in row["bmi"]:  # diffusion-mi's kinds: no bmi counterpart
                    continue
                cell["within"] = _within(cell["estimate"], row["bmi"][name]["estimate"], truth)
        out["per_task"][tid] = {"true_mi": truth, "seeds": r["seeds"], **row}
    for side in TABLE_SIDES:
        for name in (DMI if side in DMI_EPOCHS else ESTIMATORS):
            cells = [t[side][name] for t in out["per_task"].values()
                     if side in t and name in t[side]]
            if not cells:
                continue
            secs = [c["seconds"] for c in cells if c["seconds"] is not None]
            errs = [c["error"] for c in cells if c["error"] is not None]
            s = {"tasks": len(cells), "median_seconds": float(np.median(secs)) if secs else None,
                 "median_error": float(np.median(errs)) if errs else None,
                 "failed": len(cells) - len(errs)}
            if side != "bmi" and side not in DMI_EPOCHS:
                s["within"] = sum(c["within"] for c in cells)
                s["within_by_seed"] = dict(sorted(by_seed.get((side, name), {}).items(),
                                                  key=lambda kv: int(kv[0])))
            out["summary"].setdefault(side, {})[name] = s
    return out


def error_table(summary: dict, side: str) -> str:
    """Per task, the absolute error of the seed-mean estimate, bmi's / ``side``'s, per estimator
    kind; **bold**: ``side`` not within bmi's error + 0.05."""
    head = ("| task | I | seeds | " + " | ".join(f"{k}: bmi / {side}" for k in ESTIMATORS)
            + " |\n|" + "---|" * (3 + len(ESTIMATORS)))
    rows = []
    for tid, t in summary["per_task"].items():
        if side not in t:
            continue
        cells = []
        for name in ESTIMATORS:
            b, c = t["bmi"][name]["error"], t[side][name]
            mine = "error" if c["error"] is None else f"{c['error']:.2f}"
            cells.append(("error" if b is None else f"{b:.2f}") + " / "
                         + (mine if c["within"] else f"**{mine}**"))
        rows.append(f"| {tid} | {t['true_mi']:.3f} | {len(t['seeds'])} | " + " | ".join(cells)
                    + " |")
    return head + "\n" + "\n".join(rows)


def table(work: Path, suite: str, out: Path = RESULT, seeds: list[int] | None = None) -> str:
    """Markdown tables of every finished task (over ``seeds``, when given), and the JSON at
    ``out``."""
    records = load(work, suite_tasks(work, suite), seeds)
    summary = summarise(records)
    fmt = (lambda v: "error" if v is None else f"{v:.3f}")  # noqa: E731
    sides = [s for s in ("ours", "rank", "rank_js", "concat", "auto")
             if any(s in t for t in summary["per_task"].values())]
    head = ("| task | I | seeds | estimator | bmi (error) | "
            + " | ".join(f"{s} (error, within)" for s in sides) + " |\n|"
            + "---|" * (5 + len(sides)))
    rows = []
    for tid, t in summary["per_task"].items():
        for name in ESTIMATORS:
            b = t["bmi"][name]
            cells = []
            for s in sides:
                c = t.get(s, {}).get(name)
                cells.append("" if c is None else f"{fmt(c['estimate'])} ({fmt(c['error'])}, "
                             f"{'yes' if c['within'] else 'no'})")
            rows.append(f"| {tid} | {t['true_mi']:.3f} | {len(t['seeds'])} | {name} | "
                        f"{fmt(b['estimate'])} ({fmt(b['error'])}) | " + " | ".join(cells) + " |")
    # "one seed: a–b": the fewest and most tasks within on a single seed's pair of estimates
    sum_head = ("| estimator | bmi median s | "
                + " | ".join(f"{s}: within / tasks, median s" for s in sides) + " |\n|"
                + "---|" * (2 + len(sides)))
    sum_rows = []
    for name in ESTIMATORS:
        b = summary["summary"]["bmi"][name]
        cells = []
        for s in sides:
            c = summary["summary"].get(s, {}).get(name)
            per = [w for w, _ in c["within_by_seed"].values()] if c else []
            spread = f" (one seed: {min(per)}–{max(per)})" if len(per) > 1 else ""
            cells.append("" if c is None else
                         f"{c['within']} / {c['tasks']}{spread}, {fmt(c['median_seconds'])}")
        sum_rows.append(f"| {name} | {fmt(b['median_seconds'])} | " + " | ".join(cells) + " |")
    dmi_sides = [s for s in DMI_EPOCHS if any(s in t for t in summary["per_task"].values())]
    dmi_rows = []
    for tid, t in summary["per_task"].items():
        if not any(s in t for s in dmi_sides):
            continue
        best = min((t["bmi"][k]["error"] for k in NEURAL if t["bmi"][k]["error"] is not None),
                   default=None)
        cells = ["" if s not in t else f"{fmt(t[s][k]['estimate'])} ({fmt(t[s][k]['error'])}), "
                 f"{fmt(t[s][k]['seconds'])} s" for s in dmi_sides for k in DMI]
        dmi_rows.append(f"| {tid} | {t['true_mi']:.3f} | " + " | ".join(cells)
                        + f" | {fmt(best)} |")
    dmi_text = ""
    if dmi_rows:
        times = {s: DMI_EPOCHS[s] // DMI_EPOCHS["dmi"] for s in dmi_sides}  # ×budget of dmi
        cols = [f"{k.upper()}{'' if times[s] == 1 else f' ×{times[s]}'} (error), s"
                for s in dmi_sides for k in DMI]
        dmi_text = ("\n\n| task | I | " + " | ".join(cols) + " | bmi's best neural error |\n|"
                    + "---|" * (3 + len(cols)) + "\n" + "\n".join(dmi_rows))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": "2-core x86-64 CPU VM (shared)", "samples": N_SAMPLES, "suite": suite,
        "threads": THREAD_ENV, "date": time.strftime("%Y-%m-%d"), "tasks": records,
        "summary": summary,
    }, indent=1) + "\n")
    errors = error_table(summary, "rank" if "rank" in sides else sides[0]) if sides else ""
    return (head + "\n" + "\n".join(rows) + "\n\n" + sum_head + "\n" + "\n".join(sum_rows)
            + dmi_text + ("\n\n" + errors if errors else "") + "\n\n"
            + bmi_tasks_summary(records, sides))


def bmi_tasks_summary(records: dict, sides: list[str]) -> str:
    """The summary over bmi's own tasks only (the independent samples left out), as RESULTS
    §4.7 quotes it: within (fewest–most on one seed alone), median error, median seeds' sd and
    median wall seconds, per side and estimator kind."""
    own = summarise({t: r for t, r in records.items() if t not in INDEPENDENT})
    lines = ["bmi's tasks only: | side | estimator | within / tasks (one seed) | median error | "
             "median sd over seeds | median s |"]
    for side in ("bmi", *sides):
        for name in ESTIMATORS:
            c = own["summary"].get(side, {}).get(name)
            if c is None:
                continue
            per = [w for w, _ in c.get("within_by_seed", {}).values()]
            sds = [t[side][name]["sd"] for t in own["per_task"].values()
                   if name in t.get(side, {}) and t[side][name]["sd"] is not None]
            within = (f"{c['within']} / {c['tasks']} ({min(per)}–{max(per)})" if per
                      else f"– / {c['tasks']}")
            err, secs = c["median_error"], c["median_seconds"]
            lines.append(f"| {side} | {name} | {within} | "
                         + ("–" if err is None else f"{err:.3f}") + " | "
                         + (f"{np.median(sds):.3f}" if sds else "–") + " | "
                         + ("–" if secs is None else f"{secs:.2f}") + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["sample", *SIDES, "run", "table"])
    p.add_argument("task", nargs="?",
                   help="task id (bmi, ours, rank, rank_js, concat, dmi, dmi_long)")
    p.add_argument("--work", type=Path, default=WORK, help="samples and per-side results")
    p.add_argument("--suite", choices=["v1", "first"], default="v1")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="sampling seeds (bmi's workflow: 0-9); `table` compares these only")
    p.add_argument("--sides", nargs="+", choices=SIDES, default=["bmi", "ours", "rank"],
                   help="which sides `run` runs")
    p.add_argument("--shard", default="0/1", help="k/n: every n-th task from the k-th")
    p.add_argument("--out", type=Path, default=RESULT, help="table: the JSON written")
    p.add_argument("--bmi-python", default="/work/bmi-venv/bin/python",
                   help="python of the bmi venv (run)")
    p.add_argument("--dmi-python", default="/work/dmi-venv/bin/python",
                   help="python of the diffusion-mi venv (run, sides dmi, dmi_long)")
    args = p.parse_args(argv)
    if args.command == "sample":
        sample(args.work, args.suite, args.seeds)
    elif args.command == "bmi":
        run_bmi(args.work, args.task, args.seeds[0])
    elif args.command in DMI_EPOCHS:
        run_dmi(args.work, args.task, args.seeds[0], args.command)
    elif args.command in OURS:
        run_ours(args.work, args.task, args.seeds[0], args.command)
    elif args.command == "run":
        drive(args.work, args.bmi_python, args.suite, args.seeds, args.sides, args.shard,
              args.dmi_python)
    else:
        print(table(args.work, args.suite, args.out, args.seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
