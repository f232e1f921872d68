"""The kernels of the bounds, shared by :mod:`mi_bounds.bounds` and :mod:`mi_bounds.preference`.

Every bound, and every preference loss that is a (negated) bound, is computed from these
functions, so no bound formula is written twice (docs/THEORY.md §1, §2). They take validated
tensors (the public functions validate) and compute in the log domain: ``log E_Q[e^T]`` by
logsumexp, JS's terms by logsigmoid, an InfoNCE term as ``log σ(-log s)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mi_bounds._validation import value_checks_enabled

_LOG_MAX = {t: math.log(torch.finfo(t).max) for t in (torch.float32, torch.float64)}


def _log_max(dtype: torch.dtype) -> float:
    """log of the largest finite number of ``dtype`` (88.72 for float32, 709.78 for float64)."""
    limit = _LOG_MAX.get(dtype)
    return math.log(torch.finfo(dtype).max) if limit is None else limit


def _mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """E[values] over the last dimension: the sample mean, or the weighted sum."""
    if weight is None:
        # one sample (a preference pair's δ_w): the value itself, without a reduction kernel
        return values[..., 0] if values.shape[-1] == 1 else values.mean(-1)
    return (values * weight).sum(-1)


def _log_mean_exp(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """log E[exp(values)] over the last dimension, by logsumexp.

    With weights: ``logsumexp(values + log w)`` with ``log w`` masked to ``-inf`` where
    ``w = 0`` (by a ``where`` on a safe log, so autograd meets no ``0 · inf``): such cells
    contribute exactly nothing and their values get zero gradient. The derivative with respect
    to a weight is the exact ``e^{v_j} / Σ_i w_i e^{v_i}``, also at ``w_j = 0`` (where ``log w``
    has none): a term ``Σ_{w_j = 0} w_j e^{v_j - lme}``, exactly 0 in value, carries it (saturated
    at e^-1 times the largest float where it exceeds the range).
    """
    if weight is None:
        return torch.logsumexp(values, -1) - math.log(values.shape[-1])
    support = weight > 0
    log_w = torch.where(support, torch.log(torch.where(support, weight, 1.0)), -math.inf)
    lme = torch.logsumexp(values + log_w, -1)
    if weight.requires_grad:
        exponent = values.detach() - lme.detach().unsqueeze(-1)
        ratio = torch.exp(exponent.clamp(max=_log_max(values.dtype) - 1.0))  # never inf: 0·inf
        lme = lme + torch.where(support, 0.0, weight * ratio).sum(-1)
    return lme


def _exp_term(log_term: torch.Tensor, arg: str, what: str) -> torch.Tensor:
    """``exp(log_term)`` for the exp terms of TUBA/NWJ, or a ``ValueError`` where it overflows.

    Past ``log_term > log(max float)`` (88.72 in float32, 709.78 in float64) the term, hence the
    bound's value (below ``-`` the largest float) and its gradient, are not representable in the
    dtype: rather than returning ``-inf`` and an ``inf``/NaN gradient, this raises, naming the
    argument that holds the critic values and the threshold. The check reads a value (a host
    sync on an accelerator): inside :func:`~mi_bounds._validation.skip_value_checks` it is
    skipped and an overflow gives ``inf``.
    """
    if not value_checks_enabled():
        return torch.exp(log_term)
    limit = _log_max(log_term.dtype)
    worst = float(log_term.detach().max())
    if worst > limit:
        raise ValueError(
            f"{arg}: {what} reaches {worst:.6g} > {limit:.2f} = log(largest "
            f"{str(log_term.dtype).removeprefix('torch.')}): its exponential, hence the value "
            f"and the gradient, overflow. Pass float64 critics (threshold 709.78) or use a "
            f"bound with no exponential outside a log (dv_bound, js_bound)"
        )
    return torch.exp(log_term)


def _tuba(
    e_p: torch.Tensor, lme: torch.Tensor, log_a: torch.Tensor | float, arg: str, what: str
) -> torch.Tensor:
    """TUBA from ``E_P[T]`` and ``log E_Q[e^T]``: ``E_P[T] - e^{log E_Q[e^T] - log a} - log a + 1``
    (``- (log a - 1)`` last, skipped for NWJ's ``a = e``, where it is exactly 0)."""
    value = e_p - _exp_term(lme - log_a, arg, what)
    if isinstance(log_a, float) and log_a == 1.0:
        return value
    return value - (log_a - 1.0)


def _js_pos(t: torch.Tensor) -> torch.Tensor:
    """JS's term on a positive, ``log σ(T) = -softplus(-T)``, by logsigmoid, exact everywhere
    (F.softplus returns its input above threshold=20, a 2e-9 error)."""
    return F.logsigmoid(t)


def _js_neg(t: torch.Tensor) -> torch.Tensor:
    """JS's term on a negative, ``log σ(-T) = -softplus(T)``."""
    return F.logsigmoid(-t)


def _js(
    pos: torch.Tensor, neg: torch.Tensor, pw: torch.Tensor | None, nw: torch.Tensor | None
) -> torch.Tensor:
    """JS: ``E_P[log σ(T)] + E_Q[log σ(-T)]`` from its two terms."""
    return _mean(_js_pos(pos), pw) + _mean(_js_neg(neg), nw)


def _infonce_terms(log_ratio_sum: torch.Tensor) -> torch.Tensor:
    """One InfoNCE term from ``log s = log Σ_j e^{T⁻_j - T⁺}``:
    ``T⁺ - log(e^{T⁺} + Σ_j e^{T⁻_j}) = -log(1 + s) = log σ(-log s)``, exact also where the
    term is tiny (s ≪ 1, a confident critic) or large."""
    return F.logsigmoid(-log_ratio_sum)


def _infonce(log_ratio_sum: torch.Tensor, k: int) -> torch.Tensor:
    """(1/N) Σ_i (T⁺_i - log (1/K)(e^{T⁺_i} + Σ_j e^{T⁻_ij})), the one InfoNCE formula, from the
    ``[..., N]`` log ratio sums of :func:`_infonce_terms`."""
    return _mean(_infonce_terms(log_ratio_sum), None) + math.log(k)


def _log_ratio_sum(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """``log Σ_j e^{neg_j - pos}`` over the last dimension of ``neg`` ([..., M] -> [...]); for
    M = 1 the difference itself (what logsumexp of one value returns), without the reduction."""
    if neg.shape[-1] == 1:
        return neg[..., 0] - pos
    return torch.logsumexp(neg - pos.unsqueeze(-1), -1)
