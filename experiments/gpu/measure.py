"""The measurement steps of the GPU validation: env (a), bounds (d), staircase (e).

``env`` records versions and three measured ceilings of the device (copy bandwidth, bf16 matmul,
kernel launch); ``bounds`` runs benchmarks/bench_bounds.py on the device and turns each time into
a fraction of that copy bandwidth; ``staircase`` runs the estimation staircase at 1/4 of the
published steps while the budget lasts. Each returns its record (``status`` when not ``ok``).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from experiments.gpu.context import TARGETS, Context, copy_file, median_time
from experiments.gpu_provision import check_requirements

REPO = Path(__file__).resolve().parents[2]


def installed_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """The installed version of each distribution (None where it is not installed)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


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


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else platform's guess (the one helper that
    every benchmark and the GPU validation use to name the machine)."""
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
    return median_time(lambda: dst.copy_(src), cuda=cuda, warmup=3, repeats=20)


def _matmul_seconds(size: int, dtype, dev, cuda: bool) -> float:
    """Median seconds of a ``size``³ matrix product of random normal matrices."""
    import torch

    a = torch.randn(size, size, device=dev).to(dtype)
    b = torch.randn(size, size, device=dev).to(dtype)
    return median_time(lambda: a @ b, cuda=cuda, warmup=3, repeats=10)


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
        "platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
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
    t = median_time(lambda: float(x.sum()), cuda=False, warmup=5, repeats=50)
    rec["value_read_us"] = t * 1e6
    rec["headline"] = {"copy_GB_per_s": rec["copy"]["GB_per_s"],
                       "matmul_TFLOP_per_s": rec["matmul"]["TFLOP_per_s"],
                       "launch_us": rec["launch"]["host_us_per_launch"],
                       "gpu": rec.get("gpu", {}).get("name", "none (CPU)")}
    ctx.log(f"env: {rec['headline']}")
    return rec


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
    t = median_time(lambda: infonce_bound(s), cuda=ctx.cuda, warmup=3, repeats=20)
    own = {"K": kmax, "median_s": t, "fraction_of_copy_bandwidth": 4 * kmax * kmax / t / bw,
           "timer": "CUDA events" if ctx.cuda else "host clock"}
    nce = [r for r in rows if r["K"] == kmax and str(r["case"]).startswith("infonce")]
    frac = nce[0]["fraction_of_copy_bandwidth"] if nce else None
    copy_file(out, ctx.collected / "bounds" / "bench_bounds.json")
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
        copy_file(path, ctx.collected / "staircase" / path.name)
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
