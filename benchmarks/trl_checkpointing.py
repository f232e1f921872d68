"""How much TRL's default gradient checkpointing slows its DPOTrainer (why bench_lm_trl.py turns
it off: the align stage does not checkpoint, and a comparison needs the same settings).

    python benchmarks/trl_checkpointing.py --run runs/tiny [--steps 40] [--batch-size 16]
        [--repeats 3] [--device cpu] [--threads 1]

TRL >= 1.0 sets ``gradient_checkpointing=True`` in its configs by default (activations are
recomputed in the backward pass). This runs ``bench_lm_trl.bench_trl`` (TRL's default trainer,
the reference model run every step) with that default and with ``gradient_checkpointing=False``,
alternating, ``--repeats`` times each, and prints the pairs/s of every run, the medians and
their ratio. ``--run`` is a run directory whose base and sample stages have finished.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import statistics
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    spec = importlib.util.spec_from_file_location("bench_lm_trl",
                                                  Path(__file__).parent / "bench_lm_trl.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    import trl

    original = trl.DPOConfig
    # bench_trl's own extra arguments (bench_lm_trl.py gained --warmup in one version)
    extra = {"warmup": 1} if "warmup" in inspect.signature(bench.bench_trl).parameters else {}
    pairs: dict[str, list[float]] = {"trl_default": [], "gradient_checkpointing_off": []}
    try:
        for _ in range(a.repeats):
            for mode in pairs:
                def config(*args, _mode=mode, **kwargs):
                    kwargs.pop("gradient_checkpointing", None)  # the mode decides
                    if _mode != "trl_default":
                        kwargs["gradient_checkpointing"] = False
                    return original(*args, **kwargs)

                trl.DPOConfig = config
                r = bench.bench_trl(a.run, a.steps, a.batch_size, 5e-4, 0.1, a.device, False,
                                    **extra)
                pairs[mode].append(r["pairs_per_s"])
    finally:
        trl.DPOConfig = original
    med = {k: statistics.median(v) for k, v in pairs.items()}
    print(json.dumps({"pairs_per_s": pairs, "median": med,
                      "off_over_default": med["gradient_checkpointing_off"] / med["trl_default"],
                      "steps": a.steps, "batch_size": a.batch_size, "device": a.device,
                      "threads": a.threads, "trl": trl.__version__}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
