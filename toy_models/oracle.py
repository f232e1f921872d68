"""Exact information quantities of finite distributions, computed independently with scipy.

This is the oracle the bound library is tested against: it shares no formula with
:mod:`mi_bounds` (only the input checks of :mod:`mi_bounds._validation`). Zero-probability cells
are handled exactly: ``0 · log 0 = 0``, and ``KL(P ‖ Q) = +inf`` where ``P`` puts mass on a cell
where ``Q`` has none. All values are in nats; inputs are probability vectors over the last axis
(leading axes are batch axes).

KL is implemented once, on log-probabilities (:func:`kl_log`): every KL, JSD and mutual
information here and in :mod:`toy_models.world`, :mod:`toy_models.dynamics` and
:mod:`experiments.claims` goes through it, so distributions known only in log space (a Gibbs
policy at small beta, whose probabilities underflow) keep their exact, finite KL.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import entr

from mi_bounds._validation import check_distribution

__all__ = [
    "as_distribution",
    "entropy",
    "jsd",
    "kl",
    "kl_log",
    "log_ratio",
    "mutual_information",
    "safe_log",
]


def as_distribution(p: ArrayLike, name: str = "p", *, atol: float | None = None
                    ) -> NDArray[np.float64]:
    """Validate a probability vector (over the last axis) and return it as float64.

    The sum-to-one tolerance is ``atol`` or follows the input's dtype (1e-9 for float64, 1e-6
    for float32: a vector normalised in float32 is valid); see
    :func:`mi_bounds._validation.sum_tolerance`.

    Raises:
        TypeError: non-numeric input.
        ValueError: empty, non-finite, negative, or not summing to 1 within the tolerance.
    """
    return check_distribution(p, name, atol=atol)


def safe_log(p: ArrayLike) -> NDArray[np.float64]:
    """``log p`` cell by cell, ``-inf`` exactly where ``p = 0`` (no warning)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, -np.inf)
    np.log(p, out=out, where=p > 0)
    return out


def kl_log(
    log_p: ArrayLike, log_q: ArrayLike | None = None, *, log_ratio: ArrayLike | None = None
) -> NDArray[np.float64] | float:
    """KL(P ‖ Q) = Σ p (log p - log q) over the last axis, from log-probabilities.

    The one KL of ``toy_models``: ``0`` for cells with ``log p = -inf`` (``0 · log 0 = 0``),
    ``+inf`` where ``log q = -inf < log p`` (also when ``p`` itself underflows to 0), and no
    exponentiate-then-log anywhere, so ``log p`` and ``log q`` far below ``log`` of the smallest
    float give the exact finite value. Give either ``log_q`` or, where it is known more exactly
    than the difference, ``log_ratio = log p - log q`` (``+inf`` marks ``q = 0 < p``). The
    inputs are not validated (callers pass exact log-probabilities); leading axes broadcast.
    """
    if (log_q is None) == (log_ratio is None):
        raise TypeError("give exactly one of log_q and log_ratio")
    lp = np.asarray(log_p, dtype=np.float64)
    if log_ratio is None:
        lp, lq = np.broadcast_arrays(lp, np.asarray(log_q, dtype=np.float64))
        with np.errstate(invalid="ignore"):
            ratio = np.where(np.isneginf(lq), np.inf, lp - lq)
    else:
        lp, ratio = np.broadcast_arrays(lp, np.asarray(log_ratio, dtype=np.float64))
    with np.errstate(invalid="ignore", over="ignore"):
        terms = np.where(np.isposinf(ratio), np.inf, np.exp(lp) * ratio)
    return np.where(np.isneginf(lp), 0.0, terms).sum(-1)


def _kl_of_probabilities(p: NDArray[np.float64], q: NDArray[np.float64]):
    """:func:`kl_log` of validated probabilities, with ``log(p/q)`` taken from the ratio (exact
    to an ulp) where it is a normal float, ``log p - log q`` elsewhere, ``+inf`` where q = 0 < p."""
    log_p, log_q = safe_log(p), safe_log(q)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = p / q
        log_ratio = np.where((ratio > 0) & np.isfinite(ratio), np.log(ratio), log_p - log_q)
    return kl_log(log_p, log_ratio=np.where(np.isneginf(log_q), np.inf, log_ratio))


def kl(p: ArrayLike, q: ArrayLike) -> NDArray[np.float64] | float:
    """KL(P ‖ Q) = Σ p log(p/q), exact: ``+inf`` where p > 0 = q; ``0 log 0 = 0``."""
    p_, q_ = as_distribution(p, "p"), as_distribution(q, "q")
    if p_.shape[-1] != q_.shape[-1]:
        raise ValueError(f"p and q must have the same support size, got {p_.shape} and {q_.shape}")
    return _kl_of_probabilities(p_, q_)


def jsd(p: ArrayLike, q: ArrayLike) -> NDArray[np.float64] | float:
    """JSD(P, Q) = ½ KL(P ‖ M) + ½ KL(Q ‖ M), M = (P + Q)/2, in nats (0 ≤ JSD ≤ log 2)."""
    p_, q_ = as_distribution(p, "p"), as_distribution(q, "q")
    if p_.shape[-1] != q_.shape[-1]:
        raise ValueError(f"p and q must have the same support size, got {p_.shape} and {q_.shape}")
    m = 0.5 * (p_ + q_)
    return 0.5 * _kl_of_probabilities(p_, m) + 0.5 * _kl_of_probabilities(q_, m)


def entropy(p: ArrayLike) -> NDArray[np.float64] | float:
    """Shannon entropy H(P) = -Σ p log p, in nats."""
    return entr(as_distribution(p, "p")).sum(-1)


def _log_sum(log_a: NDArray[np.float64], axis: int | None) -> NDArray[np.float64]:
    """``log Σ e^{log_a}`` along ``axis`` (all axes if None) as ``m + log1p(Σ_rest e^{a - m})``,
    where ``m`` is the largest term and the rest excludes it: exact also where the sum is
    ``1 + tiny`` (scipy's ``logsumexp`` takes ``log`` of the rounded sum and returns 0 there)."""
    a = log_a.reshape(-1) if axis is None else np.moveaxis(log_a, axis, -1)
    m = a.max(-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        e = np.where(np.isneginf(m), 0.0, np.exp(a - m))
    np.put_along_axis(e, a.argmax(-1)[..., None], 0.0, axis=-1)
    return m[..., 0] + np.log1p(e.sum(-1))


def mutual_information(joint: ArrayLike) -> float:
    """I(X; Y) = KL(p(x, y) ‖ p(x) p(y)) for a 2-D joint probability table ``joint[x, y]``.

    Computed in log space, ``Σ p (log p - log p(x) - log p(y))`` with the marginals and the
    table's normalisation summed as log-sum-exps: the product of marginals never underflows
    (``[[1e-170, 0], [0, 1]]`` gives 3.92e-168, not ``inf``).
    """
    j = np.asarray(joint)
    if j.ndim != 2:
        raise ValueError(f"joint must be a 2-D table [x, y], got shape {np.shape(joint)}")
    flat = as_distribution(j.ravel(), "joint")
    log_j = safe_log(flat.reshape(j.shape))
    log_j = log_j - _log_sum(log_j, None)  # exactly normalised, in log space
    log_px, log_py = _log_sum(log_j, 1), _log_sum(log_j, 0)
    return float(kl_log(log_j.ravel(), (log_px[:, None] + log_py[None, :]).ravel()))


def log_ratio(p: ArrayLike, q: ArrayLike) -> NDArray[np.float64]:
    """log(p/q) cell by cell: the optimal-critic argument of every bound.

    Cells with p = 0 get ``-inf`` only where q > 0 and p = 0; because the bounds weight them by
    ``p = 0`` under P and by ``q·e^T = 0`` under Q, callers replace them by any finite number.
    This function returns ``log p - log q`` with numpy's ``-inf``/``nan`` left as they are.
    """
    p_, q_ = as_distribution(p, "p"), as_distribution(q, "q")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(p_) - np.log(q_)
