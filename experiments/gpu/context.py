"""What every step of the GPU validation sees: folders, device, size, the budget's clock.

Also the step names, the targets of the GPU run, atomic JSON writing and the median timer that
the measurement steps share. Standard library only at import (torch and mi_bounds are imported
where they are used, so that packing after a kill starts fast).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the steps of a call, in order of value; ``smollm2`` only when named (the second call)
STEPS = ("env", "decline", "trl", "bounds", "staircase")
OPTIONAL_STEPS = ("smollm2",)

#: the targets of the GPU run
TARGETS = {"align_vs_trl_pairs_per_s": 1.5, "infonce_K8192_fraction_of_copy_bandwidth": 0.5}

#: the default budget of a call (seconds) and of ``--smoke``
BUDGET_S, SMOKE_BUDGET_S = 420.0, 150.0


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
        return seconds * self.budget_s / BUDGET_S


def write_json(path: Path, data: Any, *, compact: bool = False) -> Path:
    """Write JSON atomically (temporary name, then rename); ``compact``: sorted keys, no spaces,
    floats to 6 significant digits (as mi_bounds.lm.collect stores them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if compact:  # imported here: mi_bounds imports torch
        from mi_bounds._json import rounded
    text = (json.dumps(rounded(data, 6), sort_keys=True, separators=(",", ":")) if compact
            else json.dumps(data, indent=1, default=str))
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
    return path


def copy_file(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst``; a JSON file compact (:func:`write_json`)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix == ".json":
        write_json(dst, json.loads(src.read_text()), compact=True)
    else:
        shutil.copy(src, dst)


def median_time(fn: Callable[[], object], *, cuda: bool, warmup: int, repeats: int) -> float:
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
