"""Exact information quantities of finite distributions, computed independently with scipy.

This is the oracle the bound library is tested against: it shares no code with
:mod:`mi_bounds`. Zero-probability cells are handled exactly: ``0 · log 0 = 0``
(``scipy.special.entr``/``rel_entr``), and ``KL(P ‖ Q) = +inf`` where ``P`` puts mass on a cell
where ``Q`` has none. All values are in nats; inputs are probability vectors over the last axis
(leading axes are batch axes).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import entr, rel_entr

__all__ = ["as_distribution", "entropy", "jsd", "kl", "log_ratio", "mutual_information"]


def as_distribution(p: ArrayLike, name: str = "p", *, atol: float = 1e-9) -> NDArray[np.float64]:
    """Validate a probability vector (over the last axis) and return it as float64.

    Raises:
        TypeError: non-numeric input.
        ValueError: empty, non-finite, negative, or not summing to 1 within ``atol``.
    """
    arr = np.asarray(p)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim == 0 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty probability vector, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative")
    err = np.max(np.abs(arr.sum(-1) - 1.0))
    if err > atol:
        raise ValueError(f"{name} must sum to 1 along the last axis (largest error {err:.3g})")
    return arr


def kl(p: ArrayLike, q: ArrayLike) -> NDArray[np.float64] | float:
    """KL(P ‖ Q) = Σ p log(p/q), exact: ``+inf`` where p > 0 = q; ``0 log 0 = 0``."""
    p_, q_ = as_distribution(p, "p"), as_distribution(q, "q")
    if p_.shape[-1] != q_.shape[-1]:
        raise ValueError(f"p and q must have the same support size, got {p_.shape} and {q_.shape}")
    return rel_entr(p_, q_).sum(-1)


def jsd(p: ArrayLike, q: ArrayLike) -> NDArray[np.float64] | float:
    """JSD(P, Q) = ½ KL(P ‖ M) + ½ KL(Q ‖ M), M = (P + Q)/2, in nats (0 ≤ JSD ≤ log 2)."""
    p_, q_ = as_distribution(p, "p"), as_distribution(q, "q")
    if p_.shape[-1] != q_.shape[-1]:
        raise ValueError(f"p and q must have the same support size, got {p_.shape} and {q_.shape}")
    m = 0.5 * (p_ + q_)
    return 0.5 * rel_entr(p_, m).sum(-1) + 0.5 * rel_entr(q_, m).sum(-1)


def entropy(p: ArrayLike) -> NDArray[np.float64] | float:
    """Shannon entropy H(P) = -Σ p log p, in nats."""
    return entr(as_distribution(p, "p")).sum(-1)


def mutual_information(joint: ArrayLike) -> float:
    """I(X; Y) = KL(p(x, y) ‖ p(x) p(y)) for a 2-D joint probability table ``joint[x, y]``."""
    j = np.asarray(joint)
    if j.ndim != 2:
        raise ValueError(f"joint must be a 2-D table [x, y], got shape {np.shape(joint)}")
    flat = as_distribution(j.ravel(), "joint")
    j = flat.reshape(j.shape)
    product = np.outer(j.sum(1), j.sum(0))
    return float(rel_entr(j, product).sum())


def log_ratio(p: ArrayLike, q: ArrayLike) -> NDArray[np.float64]:
    """log(p/q) cell by cell: the optimal-critic argument of every bound.

    Cells with p = 0 get ``-inf`` only where q > 0 and p = 0; because the bounds weight them by
    ``p = 0`` under P and by ``q·e^T = 0`` under Q, callers replace them by any finite number.
    This function returns ``log p - log q`` with numpy's ``-inf``/``nan`` left as they are.
    """
    p_, q_ = as_distribution(p, "p"), as_distribution(q, "q")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(p_) - np.log(q_)
