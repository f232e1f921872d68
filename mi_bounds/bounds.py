"""Variational lower bounds on KL divergence and mutual information, as functions of critic scores.

Every function here returns the value of a bound (a quantity to be *maximised*), computed in the
log domain, in float32 or higher, with autograd intact. Conventions (DESIGN.md §3–4):

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

All natural logarithms: values are in nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mi_bounds._validation import ArrayLike, as_float_tensor, as_weights, promote

__all__ = [
    "BOUNDS",
    "BoundSpec",
    "dv_bound",
    "get_bound",
    "infonce_bound",
    "infonce_bound_from_negatives",
    "js_bound",
    "nwj_bound",
    "offdiagonal",
    "smile_bound",
    "split_scores",
    "tuba_bound",
    "value_with_gradient_of",
]


# --------------------------------------------------------------------------------------------
# Shared pieces: validation and the two expectations every two-sample bound is built from.
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


def _mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """E[values] over the last dimension: the sample mean, or the weighted sum."""
    if weight is None:
        return values.mean(-1)
    return (values * weight).sum(-1)


def _log_mean_exp(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """log E[exp(values)] over the last dimension, by logsumexp.

    With weights: ``logsumexp(values + log w)``; cells of weight 0 contribute exactly nothing
    (``log 0 = -inf``) and get zero gradient.
    """
    if weight is None:
        return torch.logsumexp(values, -1) - math.log(values.shape[-1])
    return torch.logsumexp(values + torch.log(weight), -1)


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
        Tensor of the broadcast batch shape. If ``E_Q[e^T]/a`` exceeds the float range the
        value is ``-inf`` (the exact value is below ``-`` the largest float).
    """
    pos_t, neg_t, pw, nw = _two_sample(pos, neg, pos_weight, neg_weight)
    if isinstance(log_baseline, (int, float)) and not isinstance(log_baseline, bool):
        if not math.isfinite(log_baseline):
            raise ValueError(f"log_baseline must be finite, got {log_baseline}")
        log_a: torch.Tensor | float = float(log_baseline)
    else:
        log_a = as_float_tensor(log_baseline, "log_baseline", min_ndim=0, like=pos_t)
        log_a = log_a.to(pos_t.dtype)
    return _mean(pos_t, pw) - torch.exp(_log_mean_exp(neg_t, nw) - log_a) - log_a + 1.0


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
    """
    return tuba_bound(pos, neg, log_baseline=1.0, pos_weight=pos_weight, neg_weight=neg_weight)


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
    # -softplus(-T) = log σ(T) and -softplus(T) = log σ(-T), computed by logsigmoid, which is
    # exact everywhere (F.softplus returns its input above threshold=20, a 2e-9 error).
    return _mean(F.logsigmoid(pos_t), pw) + _mean(F.logsigmoid(-neg_t), nw)


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
        clip: τ > 0, or ``None`` for no clipping.
    """
    pos_t, neg_t, pw, nw = _two_sample(pos, neg, pos_weight, neg_weight)
    if clip is not None:
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0:
            raise ValueError(f"clip must be a number > 0 or None, got {clip!r}")
        neg_t = neg_t.clamp(-float(clip), float(clip))
    return _mean(pos_t, pw) - _log_mean_exp(neg_t, nw)


# --------------------------------------------------------------------------------------------
# Multi-sample (InfoNCE) bounds and score-matrix helpers.
# --------------------------------------------------------------------------------------------


def _check_scores(scores: ArrayLike) -> torch.Tensor:
    s = as_float_tensor(scores, "scores", min_ndim=2)
    k1, k2 = s.shape[-2:]
    if k1 != k2:
        raise ValueError(f"scores must be square in its last two dimensions, got {tuple(s.shape)}")
    if k1 < 2:
        raise ValueError(f"scores needs K >= 2 samples (shape [..., K, K]), got K = {k1}")
    return s


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


def _infonce(pos: torch.Tensor, row_logsumexp: torch.Tensor, k: int) -> torch.Tensor:
    """(1/N) Σ_i (T_ii - log Σ_j e^{T_ij}) + log K, the one InfoNCE formula."""
    return (pos - row_logsumexp).mean(-1) + math.log(k)


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

    Returns:
        Tensor of shape ``scores.shape[:-2]``.
    """
    s = _check_scores(scores)
    return _infonce(s.diagonal(dim1=-2, dim2=-1), torch.logsumexp(s, -1), s.shape[-1])


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
    row = torch.cat([pos_t.unsqueeze(-1), neg_t], -1)  # (..., N, K)
    return _infonce(pos_t, torch.logsumexp(row, -1), row.shape[-1])


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
    """

    name: str
    fn: Callable[..., torch.Tensor]
    target: str
    form: str
    optimal_critic: Callable[..., ArrayLike] | None
    source: str
    is_bound: bool = True
    params: dict[str, object] = field(default_factory=dict)


def _identity(log_ratio: ArrayLike, **_: object) -> ArrayLike:
    return log_ratio


BOUNDS: dict[str, BoundSpec] = {
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
}


def get_bound(name: str) -> BoundSpec:
    """Look up a bound by name; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        return BOUNDS[name]
    except KeyError:
        raise ValueError(f"unknown bound {name!r}; valid names: {', '.join(BOUNDS)}") from None
