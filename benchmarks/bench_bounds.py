"""Throughput of every bound on [K, K] score matrices, and the fraction of memory bandwidth.

For each K, a float32 score matrix S (K x K) is made on the device, and each bound is timed on it
(median of ``--repeats`` runs after a warm-up): InfoNCE on S directly; the two-sample bounds (DV,
NWJ, JS, SMILE) on ``split_scores(S)`` (diagonal positives, off-diagonal negatives), which is how
a score-matrix critic is evaluated with them. The reference is a device-to-device copy of S
into a preallocated buffer (``dst.copy_(S)``), which reads and writes K² floats: its bandwidth
is ``2 · 4K² / t_copy``. A bound that reads the scores once at that bandwidth would take
``t_copy / 2``; the reported fraction is ``(4K² / t_bound) / (2 · 4K² / t_copy)``. The input
check (NaN/inf via ``torch.aminmax(S)``, one read) is part of every call and is also timed alone.

Usage::

    python benchmarks/bench_bounds.py [--device cpu|cuda] [--sizes 256 1024 4096 8192]
        [--repeats 7] [--threads N] [--out benchmarks/results/bounds_<device>.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mi_bounds import bounds as B
from mi_bounds._validation import _all_finite


def _time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn()`` in seconds (synchronised on CUDA)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(device: torch.device, sizes: list[int], repeats: int) -> dict:
    """Time every bound for every K; return the results as a dict."""
    cases: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "infonce": B.infonce_bound,
        "dv": lambda s: B.dv_bound(*B.split_scores(s)),
        "nwj": lambda s: B.nwj_bound(*B.split_scores(s)),
        "js": lambda s: B.js_bound(*B.split_scores(s)),
        "smile(5)": lambda s: B.smile_bound(*B.split_scores(s), clip=5.0),
        "split_scores only": B.split_scores,
        "input check only": lambda s: _all_finite(s),
    }
    rows = []
    g = torch.Generator(device="cpu").manual_seed(0)
    for k in sizes:
        s = torch.randn(k, k, generator=g).to(device)
        nbytes = s.numel() * s.element_size()
        dst = torch.empty_like(s)
        t_copy = _time(lambda s=s, dst=dst: dst.copy_(s), device, repeats)
        copy_bw = 2 * nbytes / t_copy
        for name, fn in cases.items():
            t = _time(lambda fn=fn, s=s: fn(s), device, repeats)
            rows.append({
                "K": k, "bound": name, "median_s": t,
                "scores_per_s": k * k / t,
                "GB_per_s_read_once": nbytes / t / 1e9,
                "copy_GB_per_s": copy_bw / 1e9,
                "fraction_of_copy_bandwidth": (nbytes / t) / copy_bw,
            })
            print(f"K={k:5d} {name:20s} {t * 1e3:9.3f} ms  {nbytes / t / 1e9:7.2f} GB/s  "
                  f"{(nbytes / t) / copy_bw:6.1%} of copy bandwidth ({copy_bw / 1e9:.1f} GB/s)",
                  file=sys.stderr)
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "repeats": repeats, "dtype": "float32", "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result = run(device, args.sizes, args.repeats)
    out = args.out or Path(__file__).parent / "results" / f"bounds_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
