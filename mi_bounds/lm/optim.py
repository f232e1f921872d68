"""What the two training stages (base and align) share: the learning-rate schedule and the
model-FLOP-utilisation estimate."""

from __future__ import annotations

import math

import torch

__all__ = ["lr_factor", "mfu", "set_lr"]


def lr_factor(step: int, warmup: int, total: int, *, cosine: bool) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based).

    Linear warm-up over ``warmup`` steps to 1; then 1 (``cosine=False``), or a cosine decay from
    1 to 0.1 at ``total`` steps (``cosine=True``).
    """
    if step < warmup:
        return (step + 1) / warmup
    if not cosine:
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in opt.param_groups:
        group["lr"] = lr


def mfu(tokens: int, seconds: float, n: int, peak: float) -> float:
    """Model FLOP utilisation: 6 N tokens / time / peak (forward + backward, Kaplan et al.)."""
    return 6.0 * n * tokens / max(seconds, 1e-9) / peak
