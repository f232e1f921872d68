"""Strict JSON and rounded floats.

:func:`strict` / :func:`dumps`: JSON that every parser accepts (RFC 8259 has no NaN or
Infinity): NaN becomes ``null``, ±inf the strings ``"inf"`` / ``"-inf"``, and the writer runs
with ``allow_nan=False``, so a non-finite float that slipped through is an error, not a bare
``NaN`` in a file.

:func:`rounded`: floats rounded for stored JSON: the figures' data (12 significant digits),
the collected LM runs under ``results/`` and the GPU archive (6). Rounding far below float64's
17 digits hides the last-digit differences of another summation order (thread count, BLAS,
CPU) and keeps the files small."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps", "rounded", "strict"]


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


def strict(obj: Any) -> Any:
    """``obj`` with NaN as ``None`` and ±inf as ``"inf"`` / ``"-inf"`` (numpy values too),
    recursively through dicts, lists and tuples (tuples become lists)."""
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy arrays, scalars
        return strict(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`strict` ``(obj)`` with ``allow_nan=False``."""
    return json.dumps(strict(obj), allow_nan=False, **kwargs)
