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
                    β 0.5 / lr 3e-5 through the library's align stage (mi_bounds.lm.stages),
                    setting by setting, each started only if the longest setting so far still
                    ends in the step's time (its ``deadline``); then the shape verdicts,
                    histories, tables and figures (lm report), collected by mi_bounds.lm.collect
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
that was cut off, and marking that step as such). On a machine without CUDA the CUDA-only parts
(bf16 matmul, CUDA-event timings, bf16 autocast) are named as skipped and the rest runs on the
CPU; ``--smoke`` runs every step at toy size (``make gpu-smoke``, about 30 s on a 2-core CPU
after install; tests/test_gpu_smoke.py).

What the lent machine has, what a call carries (the wheels, the GGUF halves), the call itself and
its limits: experiments/gpu_provision.py (``bash experiments/gpu_prepare.sh`` prepares the call,
``bash experiments/gpu_run.sh`` is its command). The parts of this script: experiments/gpu/
(context, measure, lm_steps, schedule, pack).

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
                               references, reports 15 s. The budget decides how many
                               settings start (a setting is ~100 s; the step keeps 140 s
                               for c, d, e and packing, so the second setting starts at
                               these estimates and e absorbs the reports' 15 s)
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
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: this checkout's mi_bounds and experiments
    sys.path.insert(0, str(REPO))

from experiments.gpu.context import (  # noqa: E402
    BUDGET_S,
    OPTIONAL_STEPS,
    SMOKE_BUDGET_S,
    STEPS,
    Context,
    write_json,
)
from experiments.gpu.pack import LOG, pack  # noqa: E402
from experiments.gpu.schedule import STEP_FUNCTIONS, run_steps, salvage  # noqa: E402
from experiments.gpu_provision import ARCHIVE_LIMIT  # noqa: E402

__all__ = ["ARCHIVE_LIMIT", "OPTIONAL_STEPS", "STEPS", "STEP_FUNCTIONS", "Context", "main",
           "pack", "run_steps", "write_json"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="where the archive, summary and log go ($OUT)")
    p.add_argument("--work", type=Path,
                   help="working folder (default runs/gpu-validation, or runs/gpu-smoke)")
    p.add_argument("--budget-s", type=float,
                   help=f"seconds for all steps (default {BUDGET_S:g}; --smoke: "
                   f"{SMOKE_BUDGET_S:g})")
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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.out is None:
        print("gpu_validation.py: --out DIR is required", file=sys.stderr)
        return 2
    steps = [s for s in args.steps.split(",") if s]
    unknown = [s for s in steps if s not in STEP_FUNCTIONS]
    if unknown:
        print(f"gpu_validation.py: unknown step(s) {unknown}; valid: "
              f"{', '.join(STEP_FUNCTIONS)}", file=sys.stderr)
        return 2
    budget = args.budget_s if args.budget_s is not None else (
        SMOKE_BUDGET_S if args.smoke else BUDGET_S)
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
