"""Floats rounded for stored JSON: the figures' data (12 significant digits), the collected LM
runs under ``results/`` and the GPU archive (6). Rounding far below float64's 17 digits hides the
last-digit differences of another summation order (thread count, BLAS, CPU) and keeps the files
small."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["rounded"]


def rounded(obj: Any, digits: int) -> Any:
    """``obj`` with every float (numpy floats too) rounded to ``digits`` significant digits,
    recursively through dicts, lists and tuples (tuples become lists); NaN and ±inf are kept."""
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy arrays, scalars
        return rounded(obj.tolist(), digits)
    if isinstance(obj, float) and math.isfinite(obj):
        return float(f"{obj:.{digits}g}")
    return obj
