#!/usr/bin/env python3
"""One GPU validation of mi-bounds, prepared here and run there in one call (``make gpu``).

On one CUDA GPU (the device tool's H100 or H200) this runs, in order of value, each step guarded
(a failure is recorded with its traceback in the step's JSON and the next step runs) and each
step's JSON written as soon as it ends:

  a. ``env``        GPU, memory, driver, torch/CUDA/transformers/TRL versions, the carried wheels'
                    requirements checked against what is installed; measured device-to-device
                    copy bandwidth, bf16 matmul TFLOP/s and the cost of one kernel launch
  b. ``decline``    the redesigned ``gpu-small`` decline study, the subset that fits the budget:
                    its base model (3,000 steps), samples and pairs, then dpo, mio, ipo, rpo and
                    sft x seeds 0, 1, 2 at β 0.1 / lr 3e-5, β 0.1 / lr 1e-5, β 0.01 / lr 3e-5,
                    β 0.5 / lr 3e-5, run setting by setting, seed by seed, while the step's time
                    lasts; then the shape verdicts, histories, tables and figures (lm report)
  c. ``trl``        align-stage throughput against TRL's DPOTrainer on the same base model,
                    pairs (4,096 of them), batch (64 pairs), bf16 autocast and GPU
                    (benchmarks/bench_lm_trl.py, in this process: both sides start warm)
  d. ``bounds``     ``benchmarks/bench_bounds.py --device cuda`` for K up to 8,192, each case as
                    a fraction of (a)'s copy bandwidth; InfoNCE at K = 8,192 also timed with CUDA
                    events here
  e. ``staircase``  the staircase (Gaussian task, JS objective, which records JS→DV, JS→NWJ and
                    SMILE τ = 1, 5): separable, then concat critic, then InfoNCE, at 1,000 steps
                    per level (1/4 of the published 4,000), each only if time is left
     ``smollm2``    (only when named; the second call) the SmolLM2 decline runs of the
                    ``smollm2-gpu`` preset, if that preset exists, from the GGUF file
                    reassembled by experiments/gpu_gguf.py

After every step everything is packed again into OUT/gpu-validation.tar.gz (``--name``; at
most 15 MiB: the largest optional files are left out if needed, and the summary says which) and
OUT/summary.json; the log goes to OUT/log.txt. A kill therefore leaves what finished, and
``--pack-only`` packs again (reporting and collecting the alignment runs that finished in a step
that was cut off, and marking that step as such). On a machine without
CUDA the CUDA-only parts (bf16 matmul, CUDA-event timings, bf16 autocast) are named as skipped
and the rest runs on the CPU; ``--smoke`` runs every step at toy size (``make gpu-smoke``, about
30 s on a 2-core CPU after install; tests/test_gpu_smoke.py).

Bring along — the GPU machine has Python 3.12 (/opt/torch/.venv/bin/python3) with torch 2.11.0
(CUDA 13.0), transformers 5.17.0, accelerate 1.15.0, tokenizers 0.23.2, huggingface_hub 1.33.0,
numpy, scipy, sympy, matplotlib, safetensors, pyarrow, pandas, xxhash, but no trl, datasets,
gguf or network:

    trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 gguf==0.19.0

(``python experiments/gpu_validation.py --print-wheels`` prints them; datasets 5.2 is the
oldest release that accepts huggingface_hub 1.33, trl 1.16 accepts transformers >= 4.56.2, and
fsspec is pinned to the newest version datasets 5.2 accepts.) Prepare them here, in the
repository root, with ``bash experiments/gpu_prepare.sh`` (add ``--no-gguf`` to skip SmolLM2's
parts), which runs

    python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \\
        --platform manylinux2014_x86_64 -d .whl trl==1.16.0 datasets==5.2.0 dill==0.4.1 \\
        multiprocess==0.70.19 fsspec==2026.9.0 gguf==0.19.0

then checks every wheel's Requires-Dist against the GPU machine's packages and installs the set
into an empty folder with ``--no-index --no-deps`` (Python 3.12 where there is one). The GPU
call (the device tool's ``run``; ``.whl/`` is ignored by .gitignore, so it travels only as a
carried path):

    command:   bash experiments/gpu_run.sh
    carry:     [".whl"]              (or [".whl", ".gguf-1"] to bring SmolLM2's first half)
    timeout_s: 540

gpu_run.sh installs the wheels into /tmp/site, runs this script with ``--budget-s 420`` under a
``timeout`` of 480 s, and packs again whatever finished. Back here: ``mkdir -p
results/gpu-<device> && tar -xzf gpu-validation.tar.gz -C results/gpu-<device>`` (the summary's
``unpack`` field has the exact line). SmolLM2 (optional, only with ≥ 5 minutes of device time
left): right after the first call returns, ``bash experiments/gpu_run.sh smollm2`` with carry
[".whl", ".gguf-2"], timeout_s 300 (experiments/gpu_gguf.py says why two calls).

Time budget on one H100 (420 s in all; estimated here, not measured on a GPU: FLOPs at the
measured 798 TFLOP/s bf16 dense and ~3 TB/s copy bandwidth give the floor, and for models this
small kernel launches dominate: the number of kernels per step was counted on the CPU with a
dispatch mode and costed at ~7.5 µs each, the middle of 5–10 µs; Python work per step was timed
on the 2-core CPU that prepared this, which is slower than the GPU machine's):

  ====================  =====  =========================================================
  step                  s      estimate
  ====================  =====  =========================================================
  a. env                 15    CUDA start-up and imports; the measurements take < 1 s
  b. decline            265    base: 3,000 steps x (~850 kernels + 6.4 ms batch building)
                               = 40 s (FLOP: 6.8e14, 0.9 s at peak); sample: ~270
                               generate calls x ~20 ms + labelling = 15 s; align: 300 steps
                               x (~1,000 kernels + 1.4 ms batch) = 2.7 s plus 11
                               evaluations x ~0.3 s = 6.5 s per run, 30 runs (2 settings x
                               5 losses x 3 seeds) = 195 s (FLOP: 1.0e15, 1.3 s at peak);
                               references, reports 15 s. The budget decides how many runs
  c. trl                 60    2 x 200 steps each side, TRL's data preparation and
                               reference pass over 4,096 pairs
  d. bounds              20    one subprocess; K = 8,192 reads 268 MB: ~0.1 ms per call
  e. staircase           50    5,000 steps x (~250 kernels + 7 value reads) ≈ 11 s per
                               run; separable and concat, InfoNCE if time is left
  packing                10
  ====================  =====  =========================================================

Usage::

    python experiments/gpu_validation.py --out OUT [--budget-s 420] [--steps env,decline,...]
        [--device auto|cuda|cpu] [--smoke] [--work runs/gpu-validation] [--pack-only]
    python experiments/gpu_validation.py --print-wheels | --check-wheels .whl
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import traceback
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

#: the wheels a GPU call carries (``.whl/``): what the GPU machine lacks for steps c and e
WHEELS = ("trl==1.16.0", "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19",
          "fsspec==2026.9.0", "gguf==0.19.0")

#: the GPU machine's packages as its documentation lists them (2026-11): a version where it
#: gives one, ``None`` where it lists the package without a version
GPU_MACHINE_PACKAGES: dict[str, str | None] = {
    "torch": "2.11.0", "transformers": "5.17.0", "accelerate": "1.15.0", "tokenizers": "0.23.2",
    "huggingface-hub": "1.33.0", "safetensors": "0.8.0", "numpy": "2.5.2",
    "sentencepiece": "0.2.2", "triton": "3.6.0",
    **{name: None for name in (
        "aiohttp", "filelock", "httpx", "jinja2", "packaging", "pandas", "psutil", "pyarrow",
        "pyyaml", "requests", "rich", "scipy", "sympy", "matplotlib", "tqdm", "xxhash",
        "typing-extensions", "regex", "pillow")},
}

STEPS = ("env", "decline", "trl", "bounds", "staircase")
OPTIONAL_STEPS = ("smollm2",)

SUMMARY = "summary.json"
LOG = "log.txt"
#: the device tool returns files of at most 16 MiB: keep a margin
ARCHIVE_LIMIT = 15 * 2**20
#: files left out of the archive first when it is too large (glob patterns, in order)
DROP_ORDER = ("*/data.json", "*.pdf", "*/pairs_*.jsonl", "*.png")

#: the decline subset: losses and seeds of every setting, settings in order of value
DECLINE_LOSSES = ("dpo", "mio", "ipo", "rpo", "sft")
DECLINE_GRID = ({"beta": 0.1, "lr": 3e-5}, {"beta": 0.1, "lr": 1e-5},
                {"beta": 0.01, "lr": 3e-5}, {"beta": 0.5, "lr": 3e-5})

#: the targets of the GPU run 
TARGETS = {"align_vs_trl_pairs_per_s": 1.5, "infonce_K8192_fraction_of_copy_bandwidth": 0.5}


# ----------------------------------------------------------------------------------------------
# Context, timing, JSON
# ----------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What every step sees: folders, device, size, the clock of the whole budget."""

    out: Path
    work: Path
    device: str
    smoke: bool
    budget_s: float
    name: str = "gpu-validation"
    t0: float = field(default_factory=time.perf_counter)
    log_file: io.TextIOBase | None = None

    def left(self) -> float:
        """Seconds of the budget left."""
        return self.budget_s - (time.perf_counter() - self.t0)

    def log(self, message: str) -> None:
        line = f"[{time.perf_counter() - self.t0:7.1f} s] {message}"
        print(line, file=sys.stderr, flush=True)
        if self.log_file is not None:
            self.log_file.write(line + "\n")
            self.log_file.flush()

    @property
    def results(self) -> Path:
        return self.work / "results"

    @property
    def collected(self) -> Path:
        return self.work / "collected"

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def scaled(self, seconds: float) -> float:
        """A share of the default 420 s budget, scaled to this run's budget."""
        return seconds * self.budget_s / 420.0


def write_json(path: Path, data: Any, *, compact: bool = False) -> Path:
    """Write JSON atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if compact:  # floats to 6 significant digits (imported here: mi_bounds imports torch)
        from mi_bounds._json import rounded
    text = (json.dumps(rounded(data, 6), sort_keys=True, separators=(",", ":")) if compact
            else json.dumps(data, indent=1, default=str))
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
    return path


def _median_time(fn: Callable[[], object], *, cuda: bool, warmup: int, repeats: int) -> float:
    """Median seconds of ``fn()``: CUDA events around each call on a GPU (after ``warmup``
    calls), the host clock on the CPU."""
    import torch

    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                 for _ in range(repeats)]
        for start, end in pairs:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in pairs) / 1e3
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ----------------------------------------------------------------------------------------------
# Packages and wheels
# ----------------------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installed_versions(names: Sequence[str]) -> dict[str, str | None]:
    """The installed version of each distribution (None where it is not installed)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def wheel_requirements(wheel: Path) -> tuple[str, str, list[str]]:
    """(name, version, Requires-Dist lines) read from a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
    fields: dict[str, list[str]] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            fields.setdefault(key, []).append(value.strip())
    return fields["Name"][0], fields["Version"][0], fields.get("Requires-Dist", [])


def check_requirements(packages: dict[str, tuple[str, list[str]]],
                       available: dict[str, str | None]) -> list[dict[str, str]]:
    """Each requirement of ``packages`` (name -> (version, Requires-Dist)) against
    ``available`` (name -> version, None = present with an unknown version), for CPython 3.12
    on Linux x86-64; extras are skipped. Status: ``ok``, ``present`` (version unknown),
    ``missing`` or ``conflict``."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    env = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
           "implementation_name": "cpython", "extra": ""}
    have = {_norm(k): v for k, v in available.items()}
    have.update({_norm(k): v for k, (v, _) in packages.items()})
    rows = []
    for pkg, (_, reqs) in sorted(packages.items()):
        for line in reqs:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            name = _norm(req.name)
            if name not in have:
                status = "missing"
            elif have[name] is None:
                status = "present"
            else:
                status = "ok" if req.specifier.contains(have[name], prereleases=True) \
                    else "conflict"
            rows.append({"package": pkg, "requires": str(req), "have": str(have.get(name)),
                         "status": status})
    return rows


def check_wheel_dir(whl: Path, available: dict[str, str | None]) -> dict[str, Any]:
    """The carried wheels: one per name, exactly the pinned versions, and their requirements
    checked against ``available`` (the GPU machine's packages)."""
    wheels = sorted(whl.glob("*.whl"))
    packages = {}
    for w in wheels:
        name, version, reqs = wheel_requirements(w)
        if _norm(name) in {_norm(n) for n in packages}:
            raise ValueError(f"{whl}: two wheels of {name}: keep one version")
        packages[name] = (version, reqs)
    want = {_norm(r.split("==")[0]): r.split("==")[1] for r in WHEELS}
    got = {_norm(n): v for n, (v, _) in packages.items()}
    rows = check_requirements(packages, available)
    return {"wheels": [w.name for w in wheels], "bytes": sum(w.stat().st_size for w in wheels),
            "pinned_missing": sorted(set(want) - set(got)),
            "unpinned": sorted(set(got) - set(want)),
            "version_mismatch": sorted(n for n in want if n in got and got[n] != want[n]),
            "requirements": rows,
            "problems": [r for r in rows if r["status"] in ("missing", "conflict")]}


# ----------------------------------------------------------------------------------------------
# Step a: environment
# ----------------------------------------------------------------------------------------------


def _nvidia_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        return subprocess.run(
            [exe, "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,"
             "clocks.mem,power.limit,temperature.gpu", "--format=csv"],
            capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        return f"nvidia-smi failed: {err}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _copy_seconds(n: int, dev, cuda: bool) -> float:
    """Median seconds of a device-to-device copy of ``n`` float32 values."""
    import torch

    src = torch.randn(n, device=dev)
    dst = torch.empty_like(src)
    return _median_time(lambda: dst.copy_(src), cuda=cuda, warmup=3, repeats=20)


def _matmul_seconds(size: int, dtype, dev, cuda: bool) -> float:
    """Median seconds of a ``size``³ matrix product of random normal matrices."""
    import torch

    a = torch.randn(size, size, device=dev).to(dtype)
    b = torch.randn(size, size, device=dev).to(dtype)
    return _median_time(lambda: a @ b, cuda=cuda, warmup=3, repeats=10)


def step_env(ctx: Context) -> dict[str, Any]:
    """Versions, GPU properties, and three measured ceilings: device-to-device copy bandwidth
    (bytes read + written), bf16 matmul TFLOP/s (random data) and the cost of a kernel launch."""
    import torch

    names = ("torch", "transformers", "accelerate", "tokenizers", "huggingface-hub",
             "safetensors", "numpy", "scipy", "matplotlib", "sympy", "trl", "datasets",
             "pyarrow", "pandas", "fsspec", "dill", "multiprocess", "xxhash", "gguf", "packaging")
    rec: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0], "executable": sys.executable,
        "platform": platform.platform(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": ctx.device, "packages": installed_versions(names),
        "pythonpath": os.environ.get("PYTHONPATH", ""), "skipped": [],
    }
    # the carried wheels' requirements, against what this machine has
    dists = {}
    for name in ("trl", "datasets", "gguf", "multiprocess"):
        try:
            d = importlib.metadata.distribution(name)
            dists[d.metadata["Name"]] = (d.version, d.requires or [])
        except importlib.metadata.PackageNotFoundError:
            pass
    if dists:
        avail = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()}
        try:
            rows = check_requirements(dists, avail)
            rec["requirement_problems"] = [r for r in rows if r["status"] != "ok"]
        except ImportError as err:  # `packaging` reads the requirements
            rec["requirement_problems"] = f"not checked: {err}"
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        rec["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                      "memory_GiB": props.total_memory / 2**30,
                      "multiprocessors": props.multi_processor_count,
                      "L2_MiB": getattr(props, "L2_cache_size", 0) / 2**20}
        rec["nvidia_smi"] = _nvidia_smi()
    dev = torch.device(ctx.device)
    # copy: float32, large enough to leave the L2 cache far behind on a GPU (random data)
    n = (256 if ctx.cuda else 16) * 2**20 // (4 if ctx.smoke else 1)
    t = _copy_seconds(n, dev, ctx.cuda)
    rec["copy"] = {"bytes_moved": 2 * 4 * n, "median_s": t, "GB_per_s": 2 * 4 * n / t / 1e9,
                   "how": "dst.copy_(src) on float32 tensors, bytes read + written, median of "
                          "20 after 3 warm-ups" + (", CUDA events" if ctx.cuda else "")}
    # matmul: bf16 on the GPU (random normal data, never zeros); float32 on the CPU
    size = 8192 if ctx.cuda else (256 if ctx.smoke else 1024)
    dtype = torch.bfloat16 if ctx.cuda else torch.float32
    t = _matmul_seconds(size, dtype, dev, ctx.cuda)
    rec["matmul"] = {"n": size, "dtype": str(dtype).removeprefix("torch."), "median_s": t,
                     "TFLOP_per_s": 2 * size**3 / t / 1e12,
                     "how": "a @ b, n x n random normal, median of 10 after 3 warm-ups"}
    if not ctx.cuda:
        rec["skipped"].append("bf16 matmul on the GPU (CUDA-only): float32 on the CPU instead")
    # kernel launch: many tiny kernels queued back to back; host time per launch, and the
    # device time per kernel when the queue is the limit
    x = torch.zeros(1, device=dev)
    k = 2000 if not ctx.smoke else 200
    for _ in range(50):
        x.add_(1.0)
    if ctx.cuda:
        torch.cuda.synchronize()
    t_host = time.perf_counter()
    for _ in range(k):
        x.add_(1.0)
    t_queued = time.perf_counter() - t_host
    if ctx.cuda:
        torch.cuda.synchronize()
    t_all = time.perf_counter() - t_host
    rec["launch"] = {"kernels": k, "host_us_per_launch": t_queued / k * 1e6,
                     "us_per_kernel_incl_sync": t_all / k * 1e6}
    # one value read (a host-device synchronisation) with an empty queue
    t = _median_time(lambda: float(x.sum()), cuda=False, warmup=5, repeats=50)
    rec["value_read_us"] = t * 1e6
    rec["headline"] = {"copy_GB_per_s": rec["copy"]["GB_per_s"],
                       "matmul_TFLOP_per_s": rec["matmul"]["TFLOP_per_s"],
                       "launch_us": rec["launch"]["host_us_per_launch"],
                       "gpu": rec.get("gpu", {}).get("name", "none (CPU)")}
    ctx.log(f"env: {rec['headline']}")
    return rec


# ----------------------------------------------------------------------------------------------
# Step b: the decline runs
# ----------------------------------------------------------------------------------------------


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


def align_in_budget(run, deadline: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Every (setting, seed, loss) of ``run``'s grid, setting by setting and seed by seed (so a
    setting cut short has whole seeds), each started only if the longest recent run still fits
    before ``deadline``; a run that fails is recorded and the next one starts."""
    from mi_bounds.lm import _io, align, grid

    data = _io.read_json(run.dir / "sample" / "data.json")
    ac = run.config.align
    rec: dict[str, Any] = {"done": [], "not_started": [], "failed": [], "seconds": {}}
    durations: list[float] = []
    subs = grid.grid_runs(run) if run.config.grid else [("", run)]
    for name, sub in subs:
        sets = None
        for seed in ac.seeds:
            for loss in sub.config.align.losses:
                key = f"{name}/{loss}-seed{seed}" if name else f"{loss}-seed{seed}"
                if (sub.dir / "align" / f"{loss}-seed{seed}" / "result.json").is_file():
                    rec["done"].append(key)
                    continue
                need = 1.15 * max(durations[-5:]) if durations else 0.0
                if time.perf_counter() + need > deadline:
                    rec["not_started"].append(key)
                    continue
                t = time.perf_counter()
                try:
                    if sets is None:
                        sets = align.load_reference(sub, data)
                    align.align_one(sub, loss, seed, sets, data)
                    rec["done"].append(key)
                except Exception:  # recorded; the next run starts
                    rec["failed"].append({"run": key, "error": traceback.format_exc()})
                    log(f"decline: {key} FAILED:\n{traceback.format_exc()}")
                durations.append(time.perf_counter() - t)
                rec["seconds"][key] = durations[-1]
    return rec


def _copy(src: Path, dst: Path, compact_json: bool = True) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if compact_json and src.suffix == ".json":
        write_json(dst, json.loads(src.read_text()), compact=True)
    else:
        shutil.copy(src, dst)


def collect_run(run_dir: Path, dest: Path) -> list[str]:
    """What is worth keeping of an lm run directory (with or without a grid), into ``dest``:
    config, base log, sample summary, pairs and all samples, every report file, and every
    alignment run's history (compact JSON). Models, checkpoints and reference log-probs are
    left behind."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for src, name in ((run_dir / "config.json", "config.json"),
                      (run_dir / "base" / "result.json", "base_result.json")):
        if src.is_file():
            _copy(src, dest / name)
    data_path = run_dir / "sample" / "data.json"
    if data_path.is_file():
        data = json.loads(data_path.read_text())
        write_json(dest / "sample_summary.json",
                   {k: data[k] for k in ("counts", "base_accuracy", "hard_prompts") if k in data})
        _copy(data_path, dest / "sample" / "data.json")
        for p in sorted((run_dir / "sample").glob("pairs_*.jsonl")):
            _copy(p, dest / "sample" / p.name)
    reports = [(run_dir / "report", dest / "report")]
    aligns = []
    if (run_dir / "grid").is_dir():
        for setting in sorted((run_dir / "grid").iterdir()):
            reports.append((setting / "report", dest / setting.name))
            aligns.append((setting / "align", dest / setting.name / "align_runs"))
    else:
        aligns.append((run_dir / "align", dest / "align_runs"))
    for src, dst in reports:
        if src.is_dir():
            for f in sorted(src.iterdir()):
                if f.is_file():
                    _copy(f, dst / f.name)
    for src, dst in aligns:
        for r in sorted(src.glob("*/result.json")):
            _copy(r, dst / f"{r.parent.name}.json")
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


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


def step_decline(ctx: Context) -> dict[str, Any]:
    """Base, sample, then the align runs of the subset while the step's time lasts, then the
    reports (shape verdicts, histories, matched comparisons, figures) of what finished."""
    from mi_bounds.lm import _io, grid, stages

    cfg = decline_config(ctx.smoke)
    # the time left after this step is kept for trl, bounds, staircase and packing
    reserve = 40.0 if ctx.smoke else ctx.scaled(155.0)
    deadline = time.perf_counter() + max(0.0, ctx.left() - reserve)
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
            f"{max(0.0, deadline - time.perf_counter()):.0f} s left for alignment runs")
    t = time.perf_counter()
    rec["align"] = align_in_budget(run, deadline, ctx.log)
    rec["align_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    try:
        grid.run_grid_report(run)
        report = _io.read_json(run.dir / "report" / "grid_report.json")
        rec["shapes"] = _shape_table(report)
    except Exception:  # the runs are kept even if the report fails
        rec["report_error"] = traceback.format_exc()
    rec["report_seconds"] = time.perf_counter() - t
    rec["collected"] = collect_run(run.dir, ctx.collected / "decline")
    done = rec["align"]["done"]
    rec["headline"] = {
        "runs_done": len(done), "runs_planned": len(cfg.grid) * len(cfg.align.losses)
        * len(cfg.align.seeds), "runs_failed": len(rec["align"]["failed"]),
        "base_accuracy": (rec["sample"].get("base_accuracy") or {}).get("heldout_greedy"),
        "train_pairs": (rec["sample"].get("counts") or {}).get("train_pairs"),
        "seconds_per_run": statistics.median(rec["align"]["seconds"].values())
        if rec["align"]["seconds"] else None,
        "shapes_train": {s: {loss: v.get("train", {}).get("verdict") for loss, v in row.items()}
                         for s, row in rec.get("shapes", {}).items()},
    }
    if rec["align"]["failed"] and not done:
        rec["status"] = "failed"
    elif rec["align"]["not_started"] or rec["align"]["failed"]:
        rec["status"] = "partial"
    ctx.log(f"decline: {rec['headline']}")
    return rec


# ----------------------------------------------------------------------------------------------
# Step c: align stage against TRL's DPOTrainer
# ----------------------------------------------------------------------------------------------


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
    _copy(out, ctx.collected / "trl" / "bench_lm_trl.json")
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


# ----------------------------------------------------------------------------------------------
# Step d: the bounds' bandwidth
# ----------------------------------------------------------------------------------------------


def _copy_bandwidth(ctx: Context) -> float:
    """Bytes/s of a device-to-device copy (read + write): from step a, else measured now."""
    env = ctx.results / "env.json"
    if env.is_file():
        rec = json.loads(env.read_text())
        if rec.get("status") == "ok":
            return rec["result"]["copy"]["GB_per_s"] * 1e9
    n = 64 * 2**20
    return 8 * n / _copy_seconds(n, ctx.device, ctx.cuda)


def step_bounds(ctx: Context) -> dict[str, Any]:
    """benchmarks/bench_bounds.py on this device, each case's time turned into the fraction of
    the copy bandwidth: (4K² bytes read once / t) / copy bandwidth; InfoNCE at the largest K
    re-timed here with CUDA events as a check of the benchmark's host-clock timing."""
    import torch

    from mi_bounds.bounds import infonce_bound

    sizes = [128, 256] if ctx.smoke else [1024, 2048, 4096, 8192]
    out = ctx.results / "bench_bounds.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_bounds.py"), "--device", ctx.device,
           "--sizes", *map(str, sizes), "--repeats", "3" if ctx.smoke else "9",
           "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])}
    ctx.log(f"bounds: {' '.join(cmd)}")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=max(30.0, ctx.left()))
    if proc.returncode != 0:
        raise RuntimeError(f"bench_bounds.py exited with {proc.returncode}:\n{proc.stderr}")
    bench = json.loads(out.read_text())
    bw = _copy_bandwidth(ctx)
    rows = []
    for row in bench["rows"]:
        if "median_s" not in row:
            continue
        k = row["K"]
        name = row.get("case", row.get("bound"))
        rows.append({"K": k, "case": name, "median_s": row["median_s"],
                     "GB_per_s_read_once": 4 * k * k / row["median_s"] / 1e9,
                     "fraction_of_copy_bandwidth": 4 * k * k / row["median_s"] / bw})
    kmax = max(sizes)
    s = torch.randn(kmax, kmax, generator=torch.Generator().manual_seed(1)).to(ctx.device)
    t = _median_time(lambda: infonce_bound(s), cuda=ctx.cuda, warmup=3, repeats=20)
    own = {"K": kmax, "median_s": t, "fraction_of_copy_bandwidth": 4 * kmax * kmax / t / bw,
           "timer": "CUDA events" if ctx.cuda else "host clock"}
    nce = [r for r in rows if r["K"] == kmax and str(r["case"]).startswith("infonce")]
    frac = nce[0]["fraction_of_copy_bandwidth"] if nce else None
    _copy(out, ctx.collected / "bounds" / "bench_bounds.json")
    rec = {"command": " ".join(["python", *cmd[1:]]), "copy_GB_per_s": bw / 1e9, "rows": rows,
           "infonce_events_check": own, "stderr_tail": proc.stderr[-3000:],
           "headline": {"K": kmax, "infonce_fraction_of_copy_bandwidth": frac,
                        "infonce_fraction_cuda_events": own["fraction_of_copy_bandwidth"],
                        "target": TARGETS["infonce_K8192_fraction_of_copy_bandwidth"],
                        "target_met": None if frac is None or kmax != 8192
                        else frac >= TARGETS["infonce_K8192_fraction_of_copy_bandwidth"]}}
    if not ctx.cuda:
        rec["skipped"] = ["CUDA-event timing and K = 8192 on the GPU (CUDA-only)"]
    ctx.log(f"bounds: {rec['headline']}")
    return rec


# ----------------------------------------------------------------------------------------------
# Step e: the staircase
# ----------------------------------------------------------------------------------------------


def step_staircase(ctx: Context) -> dict[str, Any]:
    """The staircase on this device at 1,000 steps per level (1/4 of the published 4,000):
    separable then concat critic with the JS objective, then InfoNCE, each started only if the
    previous run's time (x 1.2) is left before the packing reserve."""
    from mi_bounds.estimation.staircase import RunSpec, run_one

    if ctx.smoke:
        kw = {"steps_per_level": 20, "levels": (2.0, 4.0), "hidden_dim": 32, "embed_dim": 8,
              "layers": 1}
    else:
        kw = {"steps_per_level": 1000}
    specs = [RunSpec(critic=c, objective=o, **kw)
             for o in ("js", "infonce") for c in ("separable", "concat")]
    reserve = 5.0 if ctx.smoke else ctx.scaled(12.0)
    out_dir = ctx.work / "staircase"
    rec: dict[str, Any] = {"runs": [], "not_started": [],
                           "note": "published settings except 1,000 steps per level (1/4)"}
    last = 0.0 if ctx.smoke else 15.0  # the first run's estimate (5,000 steps x ~3 ms)
    for spec in specs:
        if ctx.left() - reserve < 1.2 * last or ctx.left() - reserve <= 0:
            rec["not_started"].append(spec.run_id)
            continue
        t = time.perf_counter()
        path = run_one(spec, out_dir, device=ctx.device, force=True)
        last = time.perf_counter() - t
        data = json.loads(path.read_text())
        _copy(path, ctx.collected / "staircase" / path.name)
        trained = spec.objective if spec.objective != "js" else "js_dv"
        rec["runs"].append({"run_id": spec.run_id, "seconds": last,
                            "steps_per_second": data["steps_per_second"],
                            "stats": {n: [{k: s[k] for k in ("true_mi", "bias", "variance")}
                                          for s in v] for n, v in data["stats"].items()},
                            "reported": trained})
        ctx.log(f"staircase: {spec.run_id} {last:.1f} s ({data['steps_per_second']:.0f} steps/s)")
    rec["headline"] = {"runs": [r["run_id"] for r in rec["runs"]],
                       "steps_per_second": [r["steps_per_second"] for r in rec["runs"]],
                       "not_started": rec["not_started"]}
    if rec["not_started"]:
        rec["status"] = "partial" if rec["runs"] else "skipped"
    return rec


# ----------------------------------------------------------------------------------------------
# Optional step: SmolLM2 (second call)
# ----------------------------------------------------------------------------------------------


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
        rec["collected"] = collect_run(run_dir, ctx.collected / "smollm2")
    if rec.get("returncode", 0) != 0 and "status" not in rec:
        rec["status"] = "failed"
    return rec


STEP_FUNCTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "env": step_env, "decline": step_decline, "trl": step_trl, "bounds": step_bounds,
    "staircase": step_staircase, "smollm2": step_smollm2,
}


# ----------------------------------------------------------------------------------------------
# Running the steps, packing
# ----------------------------------------------------------------------------------------------


def run_steps(ctx: Context, steps: Sequence[str],
              functions: dict[str, Callable[[Context], dict[str, Any]]] = STEP_FUNCTIONS) -> None:
    """Run each step guarded: its JSON (``results/<step>.json``) says ``running`` while it runs
    and then ``ok``, ``partial``, ``skipped`` or ``failed`` (with the traceback); the archive
    is packed again after every step."""
    for name in steps:
        path = ctx.results / f"{name}.json"
        started = time.perf_counter()
        base = {"step": name, "started_at_s": started - ctx.t0, "budget_left_s": ctx.left()}
        write_json(path, {**base, "status": "running"})
        ctx.log(f"step {name}: start ({ctx.left():.0f} s of the budget left)")
        try:
            result = functions[name](ctx)
            status = result.pop("status", "ok")
            rec = {**base, "status": status, "result": result}
        except Exception:  # a failed step is recorded; the next one runs
            rec = {**base, "status": "failed", "error": traceback.format_exc()}
            ctx.log(f"step {name}: FAILED\n{rec['error']}")
        rec["seconds"] = time.perf_counter() - started
        write_json(path, rec)
        ctx.log(f"step {name}: {rec['status']} in {rec['seconds']:.1f} s")
        pack(ctx)


def salvage(ctx: Context) -> list[str]:
    """After a kill: the report of whatever alignment runs finished in a step that was cut off
    (``decline``, ``smollm2``), collected into the archive; returns what was salvaged."""
    done = []
    for name, run_name in (("decline", "decline"), ("smollm2", "smollm2")):
        path, run_dir = ctx.results / f"{name}.json", ctx.work / run_name
        if not path.is_file() or not (run_dir / "config.json").is_file():
            continue
        rec = json.loads(path.read_text())
        if rec.get("status") != "running":
            continue
        try:
            from mi_bounds.lm import stages

            stages.run_report(stages.open_run(run_dir, device="cpu", log=ctx.log))
        except Exception:  # a run with nothing finished has no report: keep what there is
            rec["salvage_report_error"] = traceback.format_exc()
        rec["salvaged"] = collect_run(run_dir, ctx.collected / run_name)
        write_json(path, rec)
        done.append(name)
    return done


def _device_tag(results: Path) -> str:
    env = results / "env.json"
    try:
        name = json.loads(env.read_text())["result"]["gpu"]["name"].lower()
    except (OSError, KeyError, TypeError, ValueError):
        return "cpu"
    for tag in ("h200", "h100", "a100", "l40s", "l4", "a10"):
        if tag in name:
            return tag
    return "".join(c if c.isalnum() else "-" for c in name).strip("-") or "gpu"


def summarise(ctx: Context, steps: Sequence[str]) -> dict[str, Any]:
    """The short summary: per step its status, time and headline numbers; the targets."""
    device = ctx.device
    try:  # the device the steps ran on (a --pack-only run only knows --device)
        device = json.loads((ctx.results / "env.json").read_text())["result"]["device"]
    except (OSError, KeyError, TypeError, ValueError):
        pass
    out: dict[str, Any] = {"steps": {}, "budget_s": ctx.budget_s, "smoke": ctx.smoke,
                           "device": device}
    for name in steps:
        path = ctx.results / f"{name}.json"
        if not path.is_file():
            out["steps"][name] = {"status": "not run"}
            continue
        rec = json.loads(path.read_text())
        status = rec.get("status")
        if status == "running":
            status = "cut off (the run was killed during this step)"
        entry = {"status": status, "seconds": rec.get("seconds")}
        result = rec.get("result") or {}
        if "headline" in result:
            entry["headline"] = result["headline"]
        for key in ("reason", "skipped"):
            if key in result:
                entry[key] = result[key]
        if "error" in rec:
            entry["error"] = rec["error"].strip().splitlines()[-1]
        if "salvaged" in rec:
            entry["salvaged_files"] = len(rec["salvaged"])
        out["steps"][name] = entry
    trl = out["steps"].get("trl", {}).get("headline", {})
    bounds = out["steps"].get("bounds", {}).get("headline", {})
    out["targets"] = {
        "align_vs_trl": {"target": TARGETS["align_vs_trl_pairs_per_s"],
                         "measured": trl.get("ratio_vs_trl"), "met": trl.get("target_met")},
        "infonce_K8192_fraction_of_copy_bandwidth": {
            "target": TARGETS["infonce_K8192_fraction_of_copy_bandwidth"],
            "measured": bounds.get("infonce_fraction_of_copy_bandwidth"),
            "met": bounds.get("target_met")},
    }
    tag = _device_tag(ctx.results)
    out["device_tag"] = tag
    out["unpack"] = (f"mkdir -p results/gpu-{tag} && tar -xzf {ctx.name}.tar.gz -C "
                     f"results/gpu-{tag}")
    return out


def _archive_members(ctx: Context) -> list[tuple[Path, str]]:
    members = []
    for root, prefix in ((ctx.results, "results"), (ctx.collected, "")):
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.is_file() and not p.name.endswith(".tmp"):
                    rel = p.relative_to(root).as_posix()
                    members.append((p, f"{prefix}/{rel}" if prefix else rel))
    log = ctx.work / LOG
    if log.is_file():
        members.append((log, f"logs/{ctx.name}.txt"))
    return members


def _write_archive(path: Path, members: Sequence[tuple[Path, str]]) -> int:
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for src, name in members:
            tar.add(src, arcname=name, recursive=False)
    size = tmp.stat().st_size
    os.replace(tmp, path)
    return size


def pack(ctx: Context, steps: Sequence[str] | None = None, limit: int = ARCHIVE_LIMIT) -> dict:
    """OUT/gpu-validation.tar.gz (at most ``limit`` bytes: optional files dropped in the order
    of :data:`DROP_ORDER`), OUT/summary.json and OUT/log.txt."""
    import fnmatch

    ctx.out.mkdir(parents=True, exist_ok=True)
    if steps is None:
        steps = [p.stem for p in sorted(ctx.results.glob("*.json"))
                 if p.stem in STEP_FUNCTIONS]
        steps = [s for s in (*STEPS, *OPTIONAL_STEPS) if s in steps]
    summary = summarise(ctx, steps)
    summary_path = ctx.out / SUMMARY
    members = _archive_members(ctx)
    left_out: list[str] = []
    archive = ctx.out / f"{ctx.name}.tar.gz"
    size = _write_archive(archive, members)
    for pattern in DROP_ORDER:
        if size <= limit:
            break
        drop = [m for m in members if fnmatch.fnmatch(m[1], pattern)]
        members = [m for m in members if m not in drop]
        left_out += [name for _, name in drop]
        size = _write_archive(archive, members)
    summary["archive"] = {"name": archive.name, "bytes": size, "files": len(members),
                          "left_out_for_size": left_out, "fits": size <= limit}
    write_json(summary_path, summary)
    if (ctx.work / LOG).is_file():
        shutil.copy(ctx.work / LOG, ctx.out / LOG)
    return summary


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="where the archive, summary and log go ($OUT)")
    p.add_argument("--work", type=Path,
                   help="working folder (default runs/gpu-validation, or runs/gpu-smoke)")
    p.add_argument("--budget-s", type=float,
                   help="seconds for all steps (default 420; --smoke: 150)")
    p.add_argument("--steps", default=",".join(STEPS),
                   help=f"comma-separated steps, in order (default {','.join(STEPS)}; also "
                   f"{', '.join(OPTIONAL_STEPS)})")
    p.add_argument("--device", default="auto", help="auto | cuda | cpu (default auto)")
    p.add_argument("--name", default="gpu-validation",
                   help="the archive is OUT/NAME.tar.gz (default %(default)s)")
    p.add_argument("--smoke", action="store_true", help="every step at toy size")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; --smoke: 1)")
    p.add_argument("--pack-only", action="store_true",
                   help="only pack what the working folder holds (after a kill)")
    p.add_argument("--print-wheels", action="store_true",
                   help="print the pinned wheels to carry and exit")
    p.add_argument("--check-wheels", type=Path, metavar="DIR",
                   help="check the wheels in DIR against the GPU machine's packages and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.print_wheels:
        print(" ".join(WHEELS))
        return 0
    if args.check_wheels is not None:
        rep = check_wheel_dir(args.check_wheels, GPU_MACHINE_PACKAGES)
        for r in rep["requirements"]:
            print(f"{r['status']:9s} {r['package']:13s} needs {r['requires']:38s} "
                  f"GPU machine: {r['have']}")
        bad = rep["problems"] or rep["pinned_missing"] or rep["unpinned"] \
            or rep["version_mismatch"]
        print(f"{len(rep['wheels'])} wheels, {rep['bytes'] / 2**20:.1f} MiB; pinned but "
              f"missing: {rep['pinned_missing']}; not pinned: {rep['unpinned']}; other "
              f"versions: {rep['version_mismatch']}; problems: {len(rep['problems'])}")
        return 1 if bad else 0
    if args.out is None:
        print("gpu_validation.py: --out DIR is required", file=sys.stderr)
        return 2
    steps = [s for s in args.steps.split(",") if s]
    unknown = [s for s in steps if s not in STEP_FUNCTIONS]
    if unknown:
        print(f"gpu_validation.py: unknown step(s) {unknown}; valid: "
              f"{', '.join(STEP_FUNCTIONS)}", file=sys.stderr)
        return 2
    budget = args.budget_s if args.budget_s is not None else (150.0 if args.smoke else 420.0)
    if not budget > 0:
        print("gpu_validation.py: --budget-s must be > 0", file=sys.stderr)
        return 2
    work = args.work or REPO / "runs" / ("gpu-smoke" if args.smoke else "gpu-validation")
    work.mkdir(parents=True, exist_ok=True)
    if args.pack_only:
        ctx = Context(args.out, work, args.device, args.smoke, budget, args.name)
        salvage(ctx)
        summary = pack(ctx, steps)
        print(json.dumps(summary, indent=1))
        return 0
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_validation.py: --device {device} but CUDA is not available",
              file=sys.stderr)
        return 2
    threads = args.threads or (1 if args.smoke else None)
    if threads:
        torch.set_num_threads(threads)
    with open(work / LOG, "a") as log_file:
        ctx = Context(args.out, work, device, args.smoke, budget, args.name,
                      log_file=log_file)
        ctx.log(f"gpu_validation: device {device}, budget {budget:.0f} s, steps {steps}, "
                f"work {work}, out {args.out}" + (" (smoke)" if args.smoke else ""))
        run_steps(ctx, steps)
        summary = pack(ctx, steps)
        ctx.log("summary: " + json.dumps({k: v.get("status") for k, v in
                                          summary["steps"].items()}))
        ctx.log(f"targets: {json.dumps(summary['targets'])}")
        ctx.log(f"unpack: {summary['unpack']}")
    pack(ctx, steps)  # the log's last lines too
    return 0


if __name__ == "__main__":
    sys.exit(main())
