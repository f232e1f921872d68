"""Time of every bound on [K, K] float32 score matrices, against one ``exp`` pass over S.

For each K, a float32 score matrix S (standard normal, times ``--scale``) is made on the device
and every case is timed in interleaved rounds (one call of each case per round, ``--repeats``
rounds after a warm-up round; the median is reported), so that a change in the machine's load
hits every case alike. The reference is **one exp pass over S**, ``torch.exp(S, out=buf)`` into
a preallocated buffer: reading and writing K² floats once, the least a bound that exponentiates
every score can cost. Each case is reported as its median time and as a ratio to that
reference, measured in the same rounds.

Cases: ``infonce_bound(S)``; ``dv_bound_from_scores(S)`` (the score-matrix DV/MINE estimate);
the same DV through ``dv_bound(*split_scores(S))`` (which copies the K(K-1) negatives); JS,
NWJ and SMILE through ``split_scores``, and their score-matrix forms that read the negatives in
place (``nwj_bound_from_scores``, ``tuba_bound_from_scores``, ``js_bound_from_scores``,
``smile_bound_from_scores``); ``torch.logsumexp(S, -1)`` alone; the NaN/inf check
(``aminmax``) alone; and floors of the chunked kernels, S read in cache-sized chunks
(``_BLOCK_ELEMENTS`` entries) and only copied into a buffer, or only exponentiated into it and
summed, or copied as ``x + 0·x`` (the kernels' NaN/inf check), exponentiated and summed.
Accuracy: for InfoNCE and the score-matrix DV, the absolute difference of the float32 value
from the float64 value on the same S, next to the same difference for the plain
``torch.logsumexp`` formula computed in float32. With ``--against REV`` the score-matrix
forms of ``mi_bounds/bounds.py`` as of git revision ``REV`` are timed in the same rounds (cases
``<name> @REV``), so that old and new are compared under one load. ``--clock thread`` (CPU
only) times with the calling thread's CPU time (``time.thread_time``) instead of the wall clock:
on a machine shared with other jobs, the time the thread waits for a core then counts for no
case (cache and memory-bandwidth contention still do).

Usage::

    python benchmarks/bench_bounds.py [--device cpu|cuda] [--sizes 1024 4096 8192]
        [--repeats 9] [--threads 1] [--scale 1] [--against REV] [--clock wall|thread]
        [--out benchmarks/results/bounds_<device>.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's experiments/

from benchmarks._revision import module_at
from experiments.gpu.measure import cpu_model
from mi_bounds import bounds as B
from mi_bounds._validation import all_finite, int_arg


def _in_chunks(chunk: torch.Tensor, body: Callable[[torch.Tensor, torch.Tensor], object]
               ) -> Callable[[torch.Tensor], None]:
    """``body(piece, scratch)`` for each piece of ``chunk.numel()`` entries of the flattened S,
    as the chunked kernels read S (:mod:`mi_bounds._offdiagonal`)."""
    def run(s: torch.Tensor) -> None:
        for src in s.reshape(-1).split(chunk.numel()):
            body(src, chunk[: src.numel()])
    return run


def _cases(buf: torch.Tensor, baseline: tuple[str, ModuleType] | None = None
           ) -> dict[str, Callable[[torch.Tensor], object]]:
    chunk = torch.empty(B._BLOCK_ELEMENTS, dtype=buf.dtype, device=buf.device)
    cases = {
        "exp pass (reference)": lambda s: torch.exp(s, out=buf),
        "infonce_bound": B.infonce_bound,
        "dv_bound_from_scores": B.dv_bound_from_scores,
        "dv_bound(*split_scores)": lambda s: B.dv_bound(*B.split_scores(s)),
        "js_bound(*split_scores)": lambda s: B.js_bound(*B.split_scores(s)),
        "nwj_bound(*split_scores)": lambda s: B.nwj_bound(*B.split_scores(s)),
        "smile_bound(*split_scores, clip=5)": lambda s: B.smile_bound(*B.split_scores(s),
                                                                      clip=5.0),
        "nwj_bound_from_scores": B.nwj_bound_from_scores,
        "tuba_bound_from_scores": B.tuba_bound_from_scores,
        "js_bound_from_scores": B.js_bound_from_scores,
        "smile_bound_from_scores(clip=5)": lambda s: B.smile_bound_from_scores(s, clip=5.0),
        "torch.logsumexp(S, -1) alone": lambda s: torch.logsumexp(s, -1),
        "input check alone (aminmax)": all_finite,
        "chunks: copy into cache only": _in_chunks(chunk, lambda x, tmp: tmp.copy_(x)),
        "chunks: exp and sum only": _in_chunks(
            chunk, lambda x, tmp: torch.exp(x, out=tmp).sum()),
        "chunks: x + 0x, exp and sum only": _in_chunks(
            chunk, lambda x, tmp: torch.add(x, x, alpha=0.0, out=tmp).exp_().sum()),
    }
    if baseline is not None:
        rev, old = baseline
        cases |= {
            f"nwj_bound_from_scores @{rev}": old.nwj_bound_from_scores,
            f"js_bound_from_scores @{rev}": old.js_bound_from_scores,
            f"smile_bound_from_scores(clip=5) @{rev}": lambda s: old.smile_bound_from_scores(
                s, clip=5.0),
        }
    return cases


def _accuracy(s: torch.Tensor,
              baseline: tuple[str, ModuleType] | None = None) -> dict[str, float]:
    """|float32 - float64| of InfoNCE and the score-matrix DV, and of the plain torch formula."""
    s64 = s.double()
    k = s.shape[-1]
    ref_nce, ref_dv = float(B.infonce_bound(s64)), float(B.dv_bound_from_scores(s64))
    plain_nce = float((s.diagonal() - torch.logsumexp(s, -1)).mean() + math.log(k))
    return {
        "infonce_abs_error": abs(float(B.infonce_bound(s)) - ref_nce),
        "infonce_plain_torch_float32_abs_error": abs(plain_nce - ref_nce),
        "dv_abs_error": abs(float(B.dv_bound_from_scores(s)) - ref_dv),
        "dv_split_scores_abs_error": abs(float(B.dv_bound(*B.split_scores(s))) - ref_dv),
        "infonce_float64": ref_nce,
        "dv_float64": ref_dv,
        **_fused_accuracy(s, baseline),
    }


#: fused score-matrix form -> its two-sample form through split_scores
_FUSED = {
    "nwj": (B.nwj_bound_from_scores, lambda s: B.nwj_bound(*B.split_scores(s))),
    "js": (B.js_bound_from_scores, lambda s: B.js_bound(*B.split_scores(s))),
    "smile5": (lambda s: B.smile_bound_from_scores(s, clip=5.0),
               lambda s: B.smile_bound(*B.split_scores(s), clip=5.0)),
}


def _fused_accuracy(s: torch.Tensor,
                    baseline: tuple[str, ModuleType] | None = None) -> dict[str, float]:
    """|float32 - float64| of the fused NWJ, JS and SMILE forms, beside their split forms' and
    (with a baseline revision) the same forms' at that revision; the float64 value is the
    current fused form's."""
    out = {}
    for name, (fused, split) in _FUSED.items():
        ref = float(fused(s.double()))
        out[f"{name}_abs_error"] = abs(float(fused(s)) - ref)
        out[f"{name}_split_scores_abs_error"] = abs(float(split(s)) - ref)
    if baseline is not None:
        rev, old = baseline
        old_fused = {"nwj": old.nwj_bound_from_scores, "js": old.js_bound_from_scores,
                     "smile5": lambda x: old.smile_bound_from_scores(x, clip=5.0)}
        for name, fn in old_fused.items():
            ref = float(_FUSED[name][0](s.double()))
            out[f"{name}_abs_error_at_{rev}"] = abs(float(fn(s)) - ref)
    return out


def run(device: torch.device, sizes: list[int], repeats: int,
        baseline: tuple[str, ModuleType] | None = None,
        clock: Callable[[], float] = time.perf_counter, scale: float = 1.0) -> list[dict]:
    """Time every case for every K (interleaved rounds, medians); return one row per (K, case)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    g = torch.Generator(device="cpu").manual_seed(0)
    for k in sizes:
        s = (scale * torch.randn(k, k, generator=g)).to(device)
        cases = _cases(torch.empty_like(s), baseline)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for r in range(repeats + 1):  # round 0 is the warm-up
            for name, fn in cases.items():
                sync()
                t0 = clock()
                fn(s)
                sync()
                if r > 0:
                    times[name].append(clock() - t0)
        ref = statistics.median(times["exp pass (reference)"])
        acc = _accuracy(s, baseline)
        for name, ts in times.items():
            med = statistics.median(ts)
            rows.append({"K": k, "case": name, "median_s": med, "ratio_to_exp_pass": med / ref,
                         "times_s": ts})
            print(f"K={k:5d} {name:36s} {med * 1e3:9.2f} ms  {med / ref:5.2f} x exp pass",
                  file=sys.stderr)
        rows.append({"K": k, "case": "accuracy vs float64", **acc})
        print(f"K={k:5d} accuracy: InfoNCE |f32 - f64| = {acc['infonce_abs_error']:.2e} "
              f"(plain torch float32: {acc['infonce_plain_torch_float32_abs_error']:.2e}); DV "
              f"{acc['dv_abs_error']:.2e} (via split_scores: "
              f"{acc['dv_split_scores_abs_error']:.2e})", file=sys.stderr)
        print(f"K={k:5d} accuracy: " + ", ".join(
            f"{key.replace('_abs_error', '')} {acc[key]:.2e}" for key in acc
            if key.startswith(("nwj", "js", "smile"))), file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int_arg(2, 65536), nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--repeats", type=int_arg(1, 1000), default=9)
    parser.add_argument("--threads", type=int_arg(1, 1024), default=1,
                        help="torch CPU threads (default 1)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="S = scale * N(0, 1) (default 1)")
    parser.add_argument("--against", metavar="REV",
                        help="git revision whose score-matrix forms are timed alongside")
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall",
                        help="wall clock, or the thread's CPU time (CPU only)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "thread" and device.type != "cpu":
        parser.error("--clock thread times CPU work only: use --device cpu")
    baseline = None
    if args.against:
        baseline = (args.against, module_at(args.against, "mi_bounds/bounds.py"))
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    rows = run(device, args.sizes, args.repeats, baseline, clock, args.scale)
    result = {
        "command": "python benchmarks/bench_bounds.py " + " ".join(sys.argv[1:] if argv is None
                                                                   else argv),
        "date": datetime.date.today().isoformat(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"{platform.machine()} CPU, {cpu_model()}, {os.cpu_count()} cores",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "repeats": args.repeats, "clock": args.clock, "scale": args.scale, "dtype": "float32",
        "rows": rows,
    }
    out = args.out or Path(__file__).parent / "results" / f"bounds_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
