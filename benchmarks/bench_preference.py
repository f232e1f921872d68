"""Time of ``preference_loss`` (forward + backward) on a batch, as a training loop calls it.

For each loss, ``preference_loss(kind, ...)`` with ``reduction="mean"`` and its backward pass
are timed on float32 log-probabilities of a batch of ``--batch`` pairs (``--calls`` calls per
sample; ``--repeats`` interleaved rounds; medians). With ``--against REV`` the module
``mi_bounds/preference.py`` of git revision ``REV`` is loaded beside the current one and timed
in the same rounds, so the ratio new/old is measured under one load.

Usage::

    python benchmarks/bench_preference.py [--batch 64] [--against 465c7f0] [--threads 1]
        [--out benchmarks/results/preference_cpu.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's benchmarks/

import mi_bounds.preference as current
from benchmarks._revision import module_at
from mi_bounds._validation import int_arg

KINDS = ("dpo", "mio", "bco_pair", "nwj", "infonce", "ipo", "robust")
PARAMS = {"robust": {"label_smoothing": 0.1}}


def _step(module: ModuleType, kind: str, batch: list[torch.Tensor]) -> None:
    loss = module.preference_loss(kind, *batch, beta=0.1, **PARAMS.get(kind, {}))
    loss.backward()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int_arg(1, 10**7), default=64)
    parser.add_argument("--calls", type=int_arg(1, 10**6), default=200)
    parser.add_argument("--repeats", type=int_arg(1, 1000), default=15)
    parser.add_argument("--threads", type=int_arg(1, 1024), default=1)
    parser.add_argument("--against", metavar="REV", help="git revision to compare with")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    modules = {"current": current}
    if args.against:
        modules[args.against] = module_at(args.against, "mi_bounds/preference.py")
    g = torch.Generator().manual_seed(0)
    batch = [-20 * torch.rand(args.batch, generator=g) for _ in range(4)]
    batch[0].requires_grad_(True)
    batch[1].requires_grad_(True)
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(args.repeats + 1):  # round 0 is the warm-up
        for kind in KINDS:
            for name, module in modules.items():
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    _step(module, kind, batch)
                if r > 0:
                    times.setdefault((kind, name), []).append(
                        (time.perf_counter() - t0) / args.calls)
    rows = []
    for kind in KINDS:
        row = {"kind": kind}
        for name in modules:
            row[f"{name}_median_s"] = statistics.median(times[(kind, name)])
        if args.against:
            row["ratio_current_to_baseline"] = (row["current_median_s"]
                                                / row[f"{args.against}_median_s"])
        rows.append(row)
        print("  ".join(f"{k}={v * 1e6:.1f} us" if k.endswith("_s") else
                        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in row.items()), file=sys.stderr)
    result = {"command": "python benchmarks/bench_preference.py " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "batch": args.batch, "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
