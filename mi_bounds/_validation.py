"""Input checks shared by every public function of :mod:`mi_bounds`.

Each public function converts its arguments with these helpers at its boundary, so that bad
input fails early with an exception that names the argument, and nothing downstream ever sees a
NaN that the caller did not put there.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray
Reduction = Literal["none", "mean", "sum"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def as_float_tensor(
    x: object,
    name: str,
    *,
    finite: bool = True,
    min_ndim: int = 1,
    like: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return ``x`` as a floating torch tensor of at least float32 precision.

    Args:
        x: a ``torch.Tensor`` or ``numpy.ndarray`` of a floating dtype.
        name: the argument's name, used in error messages.
        finite: if true, NaN or infinite entries raise ``ValueError``.
        min_ndim: the least number of dimensions accepted.
        like: if given, the result is moved to this tensor's device (and promoted to a common
            dtype with it by the caller).

    Raises:
        TypeError: ``x`` is not a tensor/array, or its dtype is not floating point.
        ValueError: ``x`` is empty, has fewer than ``min_ndim`` dimensions, or (with
            ``finite=True``) holds NaN or infinite values.

    Half-precision inputs (float16, bfloat16) are upcast to float32; numpy arrays are converted
    without copying where possible. The caller's tensor is never modified.
    """
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"{name} must have a floating-point dtype, got numpy {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    if x.dtype in _LOW_PRECISION:
        x = x.float()
    if like is not None and x.device != like.device:
        x = x.to(like.device)
    if x.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(x.shape)}"
        )
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if finite and not _all_finite(x):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} must be finite; it holds {n_bad} NaN or infinite value(s)")
    return x


def _all_finite(x: torch.Tensor) -> bool:
    """True iff every entry is finite, in one reduction pass with no temporary the size of x.

    ``aminmax`` propagates NaN and reaches ±inf only if an entry is infinite; on a 4096 x 4096
    float32 CPU tensor it is ~12x faster than ``torch.isfinite(x).all()``.
    """
    lo, hi = torch.aminmax(x.detach())
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def promote(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Cast tensors to their common floating dtype (float32 at least)."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return tuple(t.to(dtype) for t in tensors)


def as_weights(
    w: object, name: str, *, like: torch.Tensor, atol: float | None = None
) -> torch.Tensor:
    """Validate probability weights over the last dimension of ``like``.

    ``w`` must broadcast to ``like``'s shape, be non-negative and finite, and sum to one along
    its last dimension (to ``atol``; default 1e-6 in float64 and 1e-4 otherwise).
    """
    w = as_float_tensor(w, name, like=like)
    try:
        shape = torch.broadcast_shapes(w.shape, like.shape)
    except RuntimeError:
        shape = None
    if shape != like.shape or w.shape[-1] != like.shape[-1]:
        raise ValueError(
            f"{name} must have shape {tuple(like.shape)} (or broadcast to it with the same last "
            f"dimension), got {tuple(w.shape)}"
        )
    if bool((w < 0).any()):
        raise ValueError(f"{name} must be non-negative probabilities")
    w64 = w.double()
    tol = atol if atol is not None else (1e-6 if w.dtype == torch.float64 else 1e-4)
    err = float((w64.sum(-1) - 1.0).abs().max())
    if err > tol:
        raise ValueError(
            f"{name} must sum to 1 along the last dimension (largest error {err:.3g} > {tol:g})"
        )
    return w


def check_reduction(reduction: str) -> Reduction:
    """Validate a torch-style ``reduction`` argument."""
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    return reduction  # type: ignore[return-value]


def reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply a validated ``reduction`` ('none' | 'mean' | 'sum') to ``x``."""
    reduction = check_reduction(reduction)
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    return x


def check_positive(value: float, name: str) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value
