"""Variational lower bounds on KL divergence and mutual information, as functions of critic scores.

Every function here returns the value of a bound (a quantity to be *maximised*), computed in the
log domain, in float32 or higher, with autograd intact. Conventions (docs/THEORY.md §1):

* ``P`` is the positive ("joint", "chosen") distribution, ``Q`` the negative ("product of
  marginals", "reference") one, and a critic is a real function ``T``.
* **Two-sample form.** ``pos`` holds critic values on samples of ``P`` (shape ``[..., N]``) and
  ``neg`` on samples of ``Q`` (shape ``[..., M]``); the last dimension is the sample dimension and
  the leading dimensions broadcast. With ``pos_weight``/``neg_weight`` (probabilities over the
  last dimension) the same call is the exact expectation over a finite support: pass the critic
  table as both ``pos`` and ``neg``, ``p`` as ``pos_weight`` and ``q`` as ``neg_weight``.
* **Score-matrix form** (Poole et al., 2019): ``scores[..., i, j] = T(x_i, y_j)`` for ``K`` joint
  samples; the diagonal holds positives, the off-diagonal entries are negatives from
  ``p(x)p(y)``. :func:`split_scores` turns a score matrix into the two-sample form.

All natural logarithms: values are in nats. The kernels the bounds share with the preference
losses live in :mod:`mi_bounds._kernels`; :data:`BOUNDS` is the read-only registry (one frozen
:class:`BoundSpec` per bound).

Why one module: each public bound is a few lines over the shared kernels, and the score-matrix
form's blocked row reduction serves both InfoNCE and the score-matrix DV, so a reader finds
every bound, its docstring (formula, optimum, source) and its registry entry in one file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch

from mi_bounds._kernels import (
    _infonce,
    _js,
    _js_neg,
    _js_pos,
    _log_max,
    _log_mean_exp,
    _log_ratio_sum,
    _mean,
    _tuba,
)
from mi_bounds._offdiagonal import offdiagonal_clipped_exp_sum, offdiagonal_softplus_sum
from mi_bounds._validation import (
    ArrayLike,
    all_finite,
    as_float_tensor,
    as_real,
    as_weights,
    promote,
    raise_not_finite,
    value_checks_enabled,
)

__all__ = [
    "BOUNDS",
    "BoundSpec",
    "dv_bound",
    "dv_bound_from_scores",
    "get_bound",
    "infonce_bound",
    "infonce_bound_from_negatives",
    "js_bound",
    "js_bound_from_scores",
    "nwj_bound",
    "nwj_bound_from_scores",
    "offdiagonal",
    "smile_bound",
    "smile_bound_from_scores",
    "split_scores",
    "tuba_bound",
    "tuba_bound_from_scores",
    "value_with_gradient_of",
]


# --------------------------------------------------------------------------------------------
# Validation of the two-sample form. The kernels every bound (and every preference loss that is
# a bound, in mi_bounds.preference) is computed with live in mi_bounds._kernels.
# --------------------------------------------------------------------------------------------


def _two_sample(
    pos: ArrayLike,
    neg: ArrayLike,
    pos_weight: ArrayLike | None,
    neg_weight: ArrayLike | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Validate and convert the arguments of a two-sample bound."""
    pos_t = as_float_tensor(pos, "pos")
    neg_t = as_float_tensor(neg, "neg", like=pos_t)
    pos_t, neg_t = promote(pos_t, neg_t)
    try:
        torch.broadcast_shapes(pos_t.shape[:-1], neg_t.shape[:-1])
    except RuntimeError as err:
        raise ValueError(
            f"the leading (batch) dimensions of pos {tuple(pos_t.shape)} and neg "
            f"{tuple(neg_t.shape)} must broadcast; the last dimension is the sample dimension"
        ) from err
    pw = None if pos_weight is None else as_weights(pos_weight, "pos_weight", like=pos_t)
    nw = None if neg_weight is None else as_weights(neg_weight, "neg_weight", like=neg_t)
    if pw is not None:
        pw = pw.to(pos_t.dtype)
    if nw is not None:
        nw = nw.to(neg_t.dtype)
    return pos_t, neg_t, pw, nw


# --------------------------------------------------------------------------------------------
# Two-sample bounds.
# --------------------------------------------------------------------------------------------


def dv_bound(
    pos: ArrayLike,
    neg: ArrayLike,
    *,
    pos_weight: ArrayLike | None = None,
    neg_weight: ArrayLike | None = None,
) -> torch.Tensor:
    r"""Donsker–Varadhan (DV / MINE) lower bound on KL(P ‖ Q).

    .. math:: I_{DV}(T) = \mathbb{E}_P[T] - \log \mathbb{E}_Q[e^{T}] \le \mathrm{KL}(P\|Q)

    Optimal critic: ``T = log dP/dQ + c`` for any constant ``c`` (the bound is invariant to
    shifting ``T``); value at the optimum: ``KL(P ‖ Q)``.

    Sources: Donsker & Varadhan (1983); Belghazi et al., "MINE: Mutual Information Neural
    Estimation", ICML 2018 (the DV representation, Sec. 3); Poole et al., "On Variational Bounds
    of Mutual Information", ICML 2019, Sec. 2.2.

    Args:
        pos: critic values on samples of P, shape ``[..., N]``.
        neg: critic values on samples of Q, shape ``[..., M]``.
        pos_weight, neg_weight: optional probabilities over the last dimension (exact
            expectation over a finite support).

    Returns:
        Tensor of shape ``broadcast(pos.shape[:-1], neg.shape[:-1])``.

    Example:
        >>> import torch
        >>> p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
        >>> t = (p / q).log()  # optimal critic
        >>> dv_bound(t, t, pos_weight=p, neg_weight=q)  # = KL(p‖q) ≈ 0.5108
        tensor(0.5108)
    """
    pos_t, neg_t, pw, nw = _two_sample(pos, neg, pos_weight, neg_weight)
    return _mean(pos_t, pw) - _log_mean_exp(neg_t, nw)


def tuba_bound(
    pos: ArrayLike,
    neg: ArrayLike,
    *,
    log_baseline: float | ArrayLike = 0.0,
    pos_weight: ArrayLike | None = None,
    neg_weight: ArrayLike | None = None,
) -> torch.Tensor:
    r"""Tractable unnormalised Barber–Agakov (TUBA) lower bound on KL(P ‖ Q), baseline ``a``.

    .. math:: I_{TUBA}(T, a) = \mathbb{E}_P[T] - \frac{\mathbb{E}_Q[e^{T}]}{a} - \log a + 1
              \le \mathrm{KL}(P\|Q), \qquad a > 0

    It follows from ``log u ≤ u/a + log a - 1`` applied to the DV bound, so TUBA ≤ DV for
    every critic. Optimal critic: ``T = log dP/dQ + log a``; value there: ``KL(P ‖ Q)``.
    Computed as ``E_P[T] - exp(log E_Q[e^T] - log a) - log a + 1`` (log domain).

    Source: Poole et al., "On Variational Bounds of Mutual Information", ICML 2019, Sec. 2.2.

    Args:
        pos, neg, pos_weight, neg_weight: as in :func:`dv_bound`.
        log_baseline: ``log a``, a float or a tensor broadcastable to the batch shape.

    Returns:
        Tensor of the broadcast batch shape.

    Raises:
        ValueError: ``log E_Q[e^T] - log a`` exceeds ``log`` of the largest float of the dtype
            (88.72 in float32, 709.78 in float64): ``E_Q[e^T]/a``, hence the value (below ``-``
            the largest float) and its gradient, are not representable. The message names
            ``neg`` and the threshold. (Below it, value and gradient are finite.)
        TypeError: ``log_baseline`` is neither a real scalar nor a tensor/array.
    """
    pos_t, neg_t, pw, nw = _two_sample(pos, neg, pos_weight, neg_weight)
    if isinstance(log_baseline, torch.Tensor) or (
        isinstance(log_baseline, np.ndarray) and log_baseline.ndim > 0
    ):
        log_a: torch.Tensor | float = as_float_tensor(
            log_baseline, "log_baseline", min_ndim=0, like=pos_t).to(pos_t.dtype)
    else:
        log_a = as_real(log_baseline, "log_baseline")
    return _tuba(_mean(pos_t, pw), _log_mean_exp(neg_t, nw), log_a, "neg",
                 "log E_Q[e^T] - log a")


def nwj_bound(
    pos: ArrayLike,
    neg: ArrayLike,
    *,
    pos_weight: ArrayLike | None = None,
    neg_weight: ArrayLike | None = None,
) -> torch.Tensor:
    r"""Nguyen–Wainwright–Jordan (NWJ, "f-GAN KL", "MINE-f") lower bound on KL(P ‖ Q).

    .. math:: I_{NWJ}(T) = \mathbb{E}_P[T] - e^{-1}\,\mathbb{E}_Q[e^{T}] \le \mathrm{KL}(P\|Q)

    This is :func:`tuba_bound` with ``a = e`` (``log_baseline = 1``). Optimal critic:
    ``T = 1 + log dP/dQ``; value there: ``KL(P ‖ Q)``. NWJ ≤ DV for every critic.

    Sources: Nguyen, Wainwright & Jordan, IEEE Trans. Inf. Theory 2010; Nowozin et al., f-GAN,
    NeurIPS 2016; Poole et al., ICML 2019, Sec. 2.2 (I_NWJ).

    Raises:
        ValueError: ``log E_Q[e^T] - 1`` exceeds 88.72 (float32) or 709.78 (float64), where
            ``e^{-1} E_Q[e^T]`` and the gradient overflow (see :func:`tuba_bound`); the message
            names ``neg`` and the threshold. E.g. ``nwj_bound(tensor([0., 0.]),
            tensor([1e4, 0.]))``: the exact value, ``-e^{9999}/2 ≈ -10^{4342}``, is beyond every
            float.
    """
    pos_t, neg_t, pw, nw = _two_sample(pos, neg, pos_weight, neg_weight)
    return _tuba(_mean(pos_t, pw), _log_mean_exp(neg_t, nw), 1.0, "neg", "log E_Q[e^T] - 1")


def js_bound(
    pos: ArrayLike,
    neg: ArrayLike,
    *,
    pos_weight: ArrayLike | None = None,
    neg_weight: ArrayLike | None = None,
) -> torch.Tensor:
    r"""Jensen–Shannon (f-GAN JS) variational lower bound.

    .. math:: I_{JS}(T) = \mathbb{E}_P[-\mathrm{softplus}(-T)] - \mathbb{E}_Q[\mathrm{softplus}(T)]
              \le 2\,\mathrm{JSD}(P, Q) - 2\log 2

    i.e. ``E_P[log σ(T)] + E_Q[log(1 - σ(T))]``: the log-likelihood of a logistic classifier
    of P against Q with logit ``T``. Optimal critic: ``T = log dP/dQ``; value there:
    ``2·JSD(P, Q) - 2 log 2`` (JSD in nats, so the value lies in ``[-2 log 2, 0]``).

    Sources: Nowozin et al., "f-GAN", NeurIPS 2016 (JS row of Table 2, up to the constant);
    Hjelm et al., "Deep InfoMax", ICLR 2019; Poole et al., ICML 2019, Sec. 4 (JS-trained
    critics); Song & Ermon, ICLR 2020.
    """
    pos_t, neg_t, pw, nw = _two_sample(pos, neg, pos_weight, neg_weight)
    return _js(pos_t, neg_t, pw, nw)


def smile_bound(
    pos: ArrayLike,
    neg: ArrayLike,
    *,
    clip: float | None = 5.0,
    pos_weight: ArrayLike | None = None,
    neg_weight: ArrayLike | None = None,
) -> torch.Tensor:
    r"""SMILE: the DV estimate with the density-ratio clipped to ``[e^{-τ}, e^{τ}]``.

    .. math:: I_{SMILE}(T, τ) = \mathbb{E}_P[T]
              - \log \mathbb{E}_Q[\mathrm{clip}(e^{T}, e^{-τ}, e^{τ})]

    Not a bound: clipping trades variance for bias (Song & Ermon, "Understanding the Limitations
    of Variational Mutual Information Estimators", ICLR 2020, Sec. 5). ``clip=None`` (τ → ∞)
    gives exactly :func:`dv_bound`. In Song & Ermon's estimator the critic is trained with the JS
    gradient and this value is reported: combine with :func:`value_with_gradient_of`.

    Args:
        clip: τ > 0 (any real scalar; ``inf`` is no clipping), or ``None`` for no clipping.
    """
    pos_t, neg_t, pw, nw = _two_sample(pos, neg, pos_weight, neg_weight)
    if clip is not None:
        tau = as_real(clip, "clip", finite=False)
        if not tau > 0:
            raise ValueError(f"clip must be a number > 0 or None, got {tau}")
        if tau < math.inf:
            neg_t = neg_t.clamp(-tau, tau)
    return _mean(pos_t, pw) - _log_mean_exp(neg_t, nw)


# --------------------------------------------------------------------------------------------
# Multi-sample (InfoNCE) bounds and score-matrix helpers.
# --------------------------------------------------------------------------------------------


def _check_scores(scores: ArrayLike, *, finite: bool = True) -> torch.Tensor:
    s = as_float_tensor(scores, "scores", min_ndim=2, finite=finite)
    k1, k2 = s.shape[-2:]
    if k1 != k2:
        raise ValueError(f"scores must be square in its last two dimensions, got {tuple(s.shape)}")
    if k1 < 2:
        raise ValueError(f"scores needs K >= 2 samples (shape [..., K, K]), got K = {k1}")
    return s


#: Score matrices with K at least this large are read in blocks of rows on the CPU
#: (:func:`_row_ratio_sums_blocked`); smaller ones by plain tensor operations.
_BLOCKED_MIN_K = 512
#: Elements per block of rows (InfoNCE, DV) or chunk of the flattened matrix (JS, SMILE): 512 KiB
#: of float32, which stays in a core's L2 cache while it is transformed and reduced. A multiple of
#: 32 (the products of ``mi_bounds._offdiagonal``).
_BLOCK_ELEMENTS = 1 << 17


def _log_row_ratio_sums_plain(s: torch.Tensor) -> torch.Tensor:
    """``log Σ_{j≠i} e^{S_ij - S_ii}`` for every row of ``[..., K, K]``, by logsumexp (autograd)."""
    k = s.shape[-1]
    d = s - s.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)
    eye = torch.eye(k, dtype=torch.bool, device=s.device)
    return torch.logsumexp(d.masked_fill(eye, -math.inf), -1)


def _row_ratio_sums_blocked(s: torch.Tensor) -> torch.Tensor:
    """``log Σ_{j≠i} e^{S_ij - S_ii}`` ``[..., K]`` for large CPU score matrices, without grad.

    Each block of rows is shifted by its diagonal, exponentiated in place and summed while it is
    in cache: one read of S, about the cost of one ``exp`` pass. No max is needed: the positive
    ``e^0 = 1`` is excluded, but a row sum of finite terms is exact unless a term overflows (sum
    ``inf``) or the whole row underflows (sum below ``K·tiny/eps``); those rows, and a block
    whose entries are not all finite, are recomputed by :func:`_log_row_ratio_sums_plain`, which
    raises on NaN or infinite scores.
    """
    k = s.shape[-1]
    flat = s.detach().reshape(-1, k, k)
    if not flat.is_contiguous():
        flat = flat.contiguous()
    finfo = torch.finfo(s.dtype)
    floor = k * finfo.smallest_normal  # below it, K flushed subnormals could exceed eps relative
    rows = max(1, _BLOCK_ELEMENTS // k)
    out = torch.empty(flat.shape[:2], dtype=s.dtype)
    buf = torch.empty(rows, k, dtype=s.dtype)
    n_blocks = -(-k // rows)
    checks = torch.empty(flat.shape[0], n_blocks, dtype=s.dtype)
    for m, mat in enumerate(flat):
        diag = mat.diagonal()
        for b, r0 in enumerate(range(0, k, rows)):
            r1 = min(k, r0 + rows)
            tmp = buf[: r1 - r0]
            torch.sub(mat[r0:r1], diag[r0:r1, None], out=tmp)
            torch.sum(tmp, (0, 1), out=checks[m, b])  # NaN or ±inf anywhere shows here
            tmp.exp_()
            tmp[:, r0:r1].diagonal().zero_()  # the positive itself
            torch.sum(tmp, -1, out=out[m, r0:r1])
    if not all_finite(checks) and not all_finite(flat):  # (a finite sum can overflow too)
        raise_not_finite(s, "scores")
    bad = ~torch.isfinite(out) | (out < floor)
    log_s = out.log_()
    if bool(bad.any()):
        for m in torch.nonzero(bad.any(-1)).flatten().tolist():
            log_s[m] = _log_row_ratio_sums_plain(flat[m])
    return log_s.reshape(s.shape[:-1])


class _LogRowRatioSums(torch.autograd.Function):
    """Autograd for :func:`_row_ratio_sums_blocked`: ``∂ log s_i / ∂S_ij = e^{S_ij - S_ii}/s_i``
    for ``j ≠ i`` (a softmax over the negatives) and ``-1`` for ``j = i``."""

    @staticmethod
    def forward(ctx, s: torch.Tensor) -> torch.Tensor:
        log_s = _row_ratio_sums_blocked(s)
        ctx.save_for_backward(s, log_s)
        return log_s

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        s, log_s = ctx.saved_tensors
        shift = s.diagonal(dim1=-2, dim2=-1) + log_s
        out = torch.exp(s - shift.unsqueeze(-1)).mul_(grad.unsqueeze(-1))
        out.diagonal(dim1=-2, dim2=-1).copy_(-grad)
        return out


def _log_row_ratio_sums(s: torch.Tensor) -> torch.Tensor:
    """``log s_i = log Σ_{j≠i} e^{S_ij - S_ii}`` ``[..., K]`` of ``[..., K, K]`` scores: the one
    reduction InfoNCE and the score-matrix DV are computed from. ``s`` is finite-checked here
    (the blocked path checks while it reads)."""
    if s.device.type == "cpu" and s.shape[-1] >= _BLOCKED_MIN_K:
        return _LogRowRatioSums.apply(s)
    if value_checks_enabled() and not all_finite(s):  # off where the caller checked them
        raise_not_finite(s, "scores")
    return _log_row_ratio_sums_plain(s)


def split_scores(scores: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a score matrix into positives (its diagonal) and negatives (its off-diagonal).

    Args:
        scores: ``[..., K, K]`` with ``scores[..., i, j] = T(x_i, y_j)``.

    Returns:
        ``(pos, neg)`` of shapes ``[..., K]`` and ``[..., K(K-1)]`` (row-major order), ready for
        any two-sample bound: ``dv_bound(*split_scores(S))`` is the score-matrix DV/MINE estimate
        whose denominator averages the off-diagonal pairs (as in ``bmi``'s
        ``logmeanexp_nodiag``).
    """
    s = _check_scores(scores)
    return s.diagonal(dim1=-2, dim2=-1), offdiagonal(s)


def offdiagonal(scores: ArrayLike) -> torch.Tensor:
    """The off-diagonal entries of ``[..., K, K]`` scores, flattened to ``[..., K(K-1)]``."""
    s = _check_scores(scores)
    k = s.shape[-1]
    batch = s.shape[:-2]
    # Drop the first entry of the flattened matrix: what is left, read in rows of K + 1, starts
    # each row with the K off-diagonal entries between two diagonal ones. One strided copy,
    # much cheaper than boolean-mask indexing.
    flat = s.reshape(*batch, k * k)[..., 1:]
    return flat.reshape(*batch, k - 1, k + 1)[..., :-1].reshape(*batch, k * (k - 1))


def infonce_bound(scores: ArrayLike) -> torch.Tensor:
    r"""InfoNCE (CPC) lower bound on I(X; Y) from a ``[..., K, K]`` score matrix.

    .. math:: I_{NCE} = \mathbb{E}\Big[\frac1K \sum_{i=1}^K
              \Big(S_{ii} - \log \frac1K \sum_{j=1}^K e^{S_{ij}}\Big)\Big] \le I(X;Y)

    Each batch value is at most ``log K`` (every term ``S_ii - logsumexp_j S_ij ≤ 0``), so the
    estimate saturates at ``log K`` when ``I(X;Y) ≫ log K``. Optimal critic (as K → ∞):
    ``S_ij = log p(y_j | x_i)/p(y_j) + c(x_i)``, the log density ratio up to a function of x.

    Sources: van den Oord et al., "Representation Learning with Contrastive Predictive Coding",
    2018; Poole et al., ICML 2019, Sec. 2.3 (I_NCE, the ``log K`` ceiling).

    Args:
        scores: ``[..., K, K]``, ``scores[..., i, j] = T(x_i, y_j)``, positives on the diagonal.

    Computed from ``log s_i = log Σ_{j≠i} e^{S_ij - S_ii}`` as ``mean_i log σ(-log s_i) + log K``
    (each term ``-log(1 + s_i)``, exact also for a confident critic). On the CPU, K ≥ 512 is
    read in cache-sized blocks of rows: about the time of one ``exp`` pass over S
    (``benchmarks/bench_bounds.py``).

    Args:
        scores: ``[..., K, K]``, ``scores[..., i, j] = T(x_i, y_j)``, positives on the diagonal.

    Returns:
        Tensor of shape ``scores.shape[:-2]``.
    """
    s = _check_scores(scores, finite=False)
    return _infonce(_log_row_ratio_sums(s), s.shape[-1])


def dv_bound_from_scores(scores: ArrayLike) -> torch.Tensor:
    r"""The score-matrix DV / MINE estimate: :func:`dv_bound` of :func:`split_scores`, uncopied.

    .. math:: I_{DV}(S) = \frac1K \sum_i S_{ii}
              - \log \frac{1}{K(K-1)} \sum_{i \ne j} e^{S_{ij}}

    Positives are the diagonal, negatives the ``K(K-1)`` off-diagonal pairs (as ``bmi``'s
    ``logmeanexp_nodiag``). Equal to ``dv_bound(*split_scores(scores))`` to round-off, but
    computed from the row sums of InfoNCE (``log Σ_{j≠i} e^{S_ij} = S_ii + log s_i``), without
    the strided copy of the negatives: on the CPU at K = 8192 about the time of one ``exp`` pass.

    Args:
        scores: ``[..., K, K]``, ``scores[..., i, j] = T(x_i, y_j)``.

    Returns:
        Tensor of shape ``scores.shape[:-2]``.
    """
    s = _check_scores(scores, finite=False)
    return s.diagonal(dim1=-2, dim2=-1).mean(-1) - _log_mean_exp_offdiagonal(s)


def _log_mean_exp_offdiagonal(s: torch.Tensor) -> torch.Tensor:
    """``log (1/(K(K-1))) Σ_{i≠j} e^{S_ij}`` ``[...]`` of validated ``[..., K, K]`` scores, from
    the row ratio sums (``log Σ_{j≠i} e^{S_ij} = S_ii + log s_i``): no copy of the negatives."""
    k = s.shape[-1]
    log_s = _log_row_ratio_sums(s)
    diag = s.diagonal(dim1=-2, dim2=-1)
    return torch.logsumexp(diag + log_s, -1) - math.log(k * (k - 1))


def _blocked(s: torch.Tensor) -> bool:
    """Whether the off-diagonal sums of JS and SMILE read ``s`` in cache-sized chunks
    (:mod:`mi_bounds._offdiagonal`): on the CPU, without gradients, for K ≥ ``_BLOCKED_MIN_K``."""
    return s.device.type == "cpu" and s.shape[-1] >= _BLOCKED_MIN_K and not s.requires_grad


def _check_finite_plain(s: torch.Tensor) -> None:
    """The NaN/inf check of the plain paths (the chunked ones check while they read)."""
    if value_checks_enabled() and not all_finite(s):
        raise_not_finite(s, "scores")


def _per_matrix(s: torch.Tensor, kernel: Callable[..., torch.Tensor],
                *args: object) -> torch.Tensor:
    """``kernel(mat, *args, buf)`` (a float64 0-d tensor) for every ``[K, K]`` matrix of ``s``,
    shape ``s.shape[:-2]``, with one scratch buffer of ``_BLOCK_ELEMENTS`` entries."""
    k = s.shape[-1]
    flat = s.reshape(-1, k, k)
    if not flat.is_contiguous():
        flat = flat.contiguous()
    buf = torch.empty(_BLOCK_ELEMENTS, dtype=s.dtype)
    out = torch.stack([kernel(mat, *args, buf) for mat in flat])
    return out.reshape(s.shape[:-2])


def _clipped_log_mean_exp_offdiagonal(s: torch.Tensor, tau: float) -> torch.Tensor:
    """``log (1/(K(K-1))) Σ_{i≠j} e^{clip(S_ij, -τ, τ)}``: SMILE's denominator, uncopied.

    With gradients (or off the CPU, or small K) by logsumexp over the clamped matrix with the
    diagonal masked; without, on the CPU for K ≥ ``_BLOCKED_MIN_K``, one cache-sized chunk at a
    time (:func:`~mi_bounds._offdiagonal.offdiagonal_clipped_exp_sum`: no max is needed,
    ``|clip(S)| ≤ τ``, unless a chunk's sum, at most ``_BLOCK_ELEMENTS · e^{τ}``, could overflow
    the dtype, where the plain path is taken).
    """
    k = s.shape[-1]
    norm = math.log(k * (k - 1))
    if not (_blocked(s) and tau < _log_max(s.dtype) - math.log(_BLOCK_ELEMENTS)):
        _check_finite_plain(s)
        c = s.clamp(-tau, tau)
        eye = torch.eye(k, dtype=torch.bool, device=s.device)
        return torch.logsumexp(c.masked_fill(eye, -math.inf), (-2, -1)) - norm
    return (_per_matrix(s, offdiagonal_clipped_exp_sum, tau).log() - norm).to(s.dtype)


def _offdiagonal_mean_js_neg(s: torch.Tensor) -> torch.Tensor:
    """``(1/(K(K-1))) Σ_{i≠j} log σ(-S_ij)`` ``[...]``: JS's negative term, uncopied.

    Without gradients on the CPU for K ≥ ``_BLOCKED_MIN_K``, ``-Σ softplus`` by
    :func:`~mi_bounds._offdiagonal.offdiagonal_softplus_sum` (one cache-sized chunk at a time,
    float64 across chunks); otherwise one logsigmoid over the matrix, all ``K²`` terms minus the
    ``K`` diagonal ones.
    """
    k = s.shape[-1]
    norm = k * (k - 1)
    if not _blocked(s):
        _check_finite_plain(s)
        diag_terms = _js_neg(s.diagonal(dim1=-2, dim2=-1)).sum(-1)
        return (_js_neg(s).sum((-2, -1)) - diag_terms) / norm
    return (-_per_matrix(s, offdiagonal_softplus_sum) / norm).to(s.dtype)


def nwj_bound_from_scores(scores: ArrayLike, *, shift: float = 0.0) -> torch.Tensor:
    r"""The score-matrix NWJ estimate: :func:`nwj_bound` of :func:`split_scores`, uncopied.

    .. math:: I_{NWJ}(S + c) = \frac1K \sum_i S_{ii} + c
              - e^{c - 1} \frac{1}{K(K-1)} \sum_{i \ne j} e^{S_{ij}}

    ``shift`` is a constant ``c`` added to every score (``c = 1`` is the "JS-trained, NWJ-valued"
    estimator: the JS-optimal critic is ``log r``, NWJ's ``1 + log r``) without copying S.
    Computed from the row sums of InfoNCE, like :func:`dv_bound_from_scores`.

    Raises:
        ValueError: ``log E_Q[e^{S+c}] - 1`` exceeds ``log`` of the largest float (see
            :func:`nwj_bound`); the message names ``scores``.
    """
    s = _check_scores(scores, finite=False)
    c = as_real(shift, "shift")
    lme = _log_mean_exp_offdiagonal(s)
    return _tuba(s.diagonal(dim1=-2, dim2=-1).mean(-1) + c, lme + c, 1.0, "scores",
                 "log E_Q[e^T] - 1")


def tuba_bound_from_scores(scores: ArrayLike, *, log_baseline: float = 0.0) -> torch.Tensor:
    r"""The score-matrix TUBA estimate with a constant baseline ``a``, uncopied:
    ``(1/K) Σ_i S_ii - (1/(K(K-1))) Σ_{i≠j} e^{S_ij} / a - log a + 1``
    (:func:`tuba_bound` of :func:`split_scores`)."""
    s = _check_scores(scores, finite=False)
    log_a = as_real(log_baseline, "log_baseline")
    return _tuba(s.diagonal(dim1=-2, dim2=-1).mean(-1), _log_mean_exp_offdiagonal(s), log_a,
                 "scores", "log E_Q[e^T] - log a")


def js_bound_from_scores(scores: ArrayLike) -> torch.Tensor:
    r"""The score-matrix JS estimate: :func:`js_bound` of :func:`split_scores`, uncopied.

    .. math:: I_{JS}(S) = \frac1K \sum_i \log\sigma(S_{ii})
              + \frac{1}{K(K-1)} \sum_{i \ne j} \log\sigma(-S_{ij})

    (a bound on ``2·JSD - 2 log 2``, not on I). The off-diagonal mean is computed without a copy
    of the negatives (:func:`_offdiagonal_mean_js_neg`); on the CPU for large K, without
    gradients, one ``exp`` per entry and one ``log`` per 32 (:mod:`mi_bounds._offdiagonal`).
    """
    s = _check_scores(scores, finite=False)  # checked by _offdiagonal_mean_js_neg
    return _js_pos(s.diagonal(dim1=-2, dim2=-1)).mean(-1) + _offdiagonal_mean_js_neg(s)


def smile_bound_from_scores(scores: ArrayLike, *, clip: float | None = 5.0) -> torch.Tensor:
    r"""The score-matrix SMILE estimate: :func:`smile_bound` of :func:`split_scores`, uncopied.

    .. math:: I_{SMILE}(S, τ) = \frac1K \sum_i S_{ii}
              - \log \frac{1}{K(K-1)} \sum_{i \ne j} \mathrm{clip}(e^{S_{ij}}, e^{-τ}, e^{τ})

    ``clip=None`` (or ``inf``) is exactly :func:`dv_bound_from_scores`. On the CPU for large K,
    without gradients, the negatives are clipped, exponentiated and summed one cache-sized chunk
    at a time (:mod:`mi_bounds._offdiagonal`).
    """
    s = _check_scores(scores, finite=False)  # checked by the denominator's kernel
    if clip is None:
        return dv_bound_from_scores(s)
    tau = as_real(clip, "clip", finite=False)
    if not tau > 0:
        raise ValueError(f"clip must be a number > 0 or None, got {tau}")
    if tau == math.inf:
        return dv_bound_from_scores(s)
    diag = s.diagonal(dim1=-2, dim2=-1)
    return diag.mean(-1) - _clipped_log_mean_exp_offdiagonal(s, tau)


def infonce_bound_from_negatives(pos: ArrayLike, neg: ArrayLike) -> torch.Tensor:
    r"""InfoNCE with one positive and its own ``K - 1`` negatives per row.

    .. math:: \frac1N \sum_{i=1}^N \Big(T^+_i - \log \frac1K \big(e^{T^+_i} +
              \sum_{j=1}^{K-1} e^{T^-_{ij}}\big)\Big) \le \log K

    Args:
        pos: ``[..., N]`` critic values of the positives.
        neg: ``[..., N, K-1]`` critic values of each positive's negatives (K ≥ 2).

    Returns:
        Tensor of shape ``pos.shape[:-1]``. With ``neg[i]`` the off-diagonal row ``i`` of a
        score matrix this equals :func:`infonce_bound` of that matrix.
    """
    pos_t = as_float_tensor(pos, "pos")
    neg_t = as_float_tensor(neg, "neg", min_ndim=2, like=pos_t)
    pos_t, neg_t = promote(pos_t, neg_t)
    if neg_t.shape[:-1] != pos_t.shape:
        raise ValueError(
            f"neg must have shape [*pos.shape, K-1] = [{', '.join(map(str, pos_t.shape))}, K-1], "
            f"got {tuple(neg_t.shape)}"
        )
    return _infonce(_log_ratio_sum(pos_t, neg_t), neg_t.shape[-1] + 1)


# --------------------------------------------------------------------------------------------
# Value from one bound, gradient from another (SMILE; "train with JS, report DV").
# --------------------------------------------------------------------------------------------


def value_with_gradient_of(value: torch.Tensor, gradient_source: torch.Tensor) -> torch.Tensor:
    """Return a tensor equal to ``value`` whose gradient is that of ``gradient_source``.

    ``gradient_source + (value - gradient_source).detach()``: the forward value is ``value``
    (to round-off), backpropagation follows ``gradient_source``. This is how SMILE and
    "JS-trained, DV-evaluated" critics report one bound while training with another
    (Poole et al. 2019, Sec. 4; Song & Ermon 2020, Sec. 5).
    """
    return gradient_source + (value - gradient_source).detach()


# --------------------------------------------------------------------------------------------
# Registry.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoundSpec:
    """What a bound is: its function, what it bounds, and its optimal critic.

    Attributes:
        name: registry key.
        fn: the bound's function.
        target: what it lower-bounds: ``"KL"``, ``"2JSD-2log2"`` or ``"I(X;Y)"``; for an
            estimator that is not a bound (SMILE), what it estimates.
        form: ``"two-sample"`` (``fn(pos, neg, ...)``) or ``"scores"`` (``fn(scores)``).
        optimal_critic: maps the log density ratio ``log dP/dQ`` (array or tensor) and the
            bound's keyword parameters to a critic at which the bound is tight; ``None`` if it
            has none.
        is_bound: false for biased estimators (SMILE).
        source: the paper it comes from.
        params: the bound's keyword parameters and their defaults (read-only).
    """

    name: str
    fn: Callable[..., torch.Tensor]
    target: str
    form: str
    optimal_critic: Callable[..., ArrayLike] | None
    source: str
    is_bound: bool = True
    params: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


def _identity(log_ratio: ArrayLike, **_: object) -> ArrayLike:
    return log_ratio


#: The bounds, by name: built here once, read-only (a ``MappingProxyType``).
BOUNDS: Mapping[str, BoundSpec] = MappingProxyType({
    spec.name: spec
    for spec in [
        BoundSpec("dv", dv_bound, "KL", "two-sample", _identity,
                  "Donsker & Varadhan 1983; Belghazi et al. 2018 (MINE)"),
        BoundSpec("nwj", nwj_bound, "KL", "two-sample", lambda lr, **_: lr + 1.0,
                  "Nguyen, Wainwright & Jordan 2010"),
        BoundSpec("tuba", tuba_bound, "KL", "two-sample",
                  lambda lr, log_baseline=0.0, **_: lr + log_baseline,
                  "Poole et al. 2019", params={"log_baseline": 0.0}),
        BoundSpec("js", js_bound, "2JSD-2log2", "two-sample", _identity,
                  "Nowozin et al. 2016 (f-GAN); Hjelm et al. 2019"),
        BoundSpec("smile", smile_bound, "KL", "two-sample", None,
                  "Song & Ermon 2020", is_bound=False, params={"clip": 5.0}),
        BoundSpec("infonce", infonce_bound, "I(X;Y)", "scores", _identity,
                  "van den Oord et al. 2018; Poole et al. 2019"),
    ]
})


def get_bound(name: str) -> BoundSpec:
    """Look up a bound by name; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        return BOUNDS[name]
    except KeyError:
        raise ValueError(f"unknown bound {name!r}; valid names: {', '.join(BOUNDS)}") from None
