"""The per-example preference-loss formulas behind :data:`mi_bounds.preference.LOSSES`.

Each function takes the log-ratios ``z_w = policy_chosen_logps - reference_chosen_logps`` and
``z_l`` (``[...]``, or ``[..., K-1]`` for infonce), ``beta`` and the loss's own keyword
parameters (TRL's names), and returns the per-example losses ``[...]``. The losses that are
bounds are computed by the bounds' own kernels (:mod:`mi_bounds._kernels`), so no bound formula
is written twice. Private: the public entry point is :func:`mi_bounds.preference.preference_loss`,
which validates the inputs (docs/THEORY.md §2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mi_bounds._kernels import _infonce, _infonce_terms, _js_neg, _js_pos, _log_ratio_sum, _tuba
from mi_bounds._validation import as_float_tensor


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """softplus(x) = log(1 + e^x), exactly: ``-logsigmoid(-x)``.

    ``torch.nn.functional.softplus`` returns ``x`` itself above its ``threshold=20``, an error
    of up to e^-20 ≈ 2e-9 that shows in float64; ``logsigmoid`` has no such cut-off.
    """
    return -F.logsigmoid(-x)


# --------------------------------------------------------------------------------------------
# Per-example losses. Each takes the log-ratios z_w [...], z_l [...] (or [..., K-1] for
# infonce), beta, and the loss's own keyword parameters, and returns per-example losses [...].
# --------------------------------------------------------------------------------------------


def _dpo(z_w: torch.Tensor, z_l: torch.Tensor, *, beta: float) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, Eq. 7): ``-log σ(β(z_w - z_l)) = softplus(-(T_w - T_l))``,
    minus the InfoNCE term with ``log s = T_l - T_w`` (= log 2 - InfoNCE_2 = log 2 - DV)."""
    return -_infonce_terms(-beta * (z_w - z_l))


def _mio(z_w: torch.Tensor, z_l: torch.Tensor, *, beta: float) -> torch.Tensor:
    """-JS with P = δ_w, Q = ½(δ_w + δ_l): ``softplus(-T_w) + ½softplus(T_w) + ½softplus(T_l)``.

    Identical, term for term, to TRL's ``nca_pair``:
    ``-log σ(T_w) - ½ log σ(-T_w) - ½ log σ(-T_l)`` (Chen et al. 2024, NCA).
    """
    t_w = beta * z_w
    # E_P = the term at w; E_Q = the mean of the terms at w and l
    return -(_js_pos(t_w) + 0.5 * (_js_neg(t_w) + _js_neg(beta * z_l)))


def _bco_pair(z_w: torch.Tensor, z_l: torch.Tensor, *, beta: float) -> torch.Tensor:
    """BCO on a pair without the running-mean shift (δ = 0), -JS with P = δ_w, Q = δ_l:
    ``softplus(-T_w) + softplus(T_l)``."""
    return -(_js_pos(beta * z_w) + _js_neg(beta * z_l))


def _infonce_loss(z_w: torch.Tensor, z_l: torch.Tensor, *, beta: float) -> torch.Tensor:
    """-InfoNCE_K with K-1 negatives: ``-T_w + logsumexp(T_w, T_l1, ..., T_l(K-1)) - log K``."""
    t_w, t_l = beta * z_w, beta * z_l  # [...], [..., K-1]
    return -_infonce(_log_ratio_sum(t_w, t_l).unsqueeze(-1), t_l.shape[-1] + 1)  # one positive


def _nwj(z_w: torch.Tensor, z_l: torch.Tensor, *, beta: float) -> torch.Tensor:
    """-NWJ with P = δ_w, Q = δ_l: ``-T_w + exp(T_l - 1)``. A ``ValueError`` names
    ``policy_rejected_logps`` where ``T_l - 1`` passes log(largest float) (88.72 in float32,
    709.78 in float64): there the loss and its gradient overflow."""
    return -_tuba(beta * z_w, beta * z_l, 1.0, "policy_rejected_logps",
                  "T_l - 1 = beta·(policy_rejected_logps - reference_rejected_logps) - 1")


def _per_token_margin(
    z_w: torch.Tensor, z_l: torch.Tensor, n_w: torch.Tensor | None, n_l: torch.Tensor | None
) -> torch.Tensor:
    """TRL's length-normalised margin ``z_w/n_w - z_l/n_l`` with ``n.clamp(min=1)``
    (``None``: 1)."""
    per_w = z_w if n_w is None else z_w / n_w.clamp(min=1.0)
    per_l = z_l if n_l is None else z_l / n_l.clamp(min=1.0)
    return per_w - per_l


def _ipo(
    z_w: torch.Tensor,
    z_l: torch.Tensor,
    *,
    beta: float,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """IPO (Azar et al. 2023, Eq. 17) as TRL 1.16 computes it, with per-token log-ratios:
    ``((z_w/n_w - z_l/n_l) - 1/(2β))²`` (``n`` = completion lengths; default 1)."""
    delta = _per_token_margin(z_w, z_l, chosen_lengths, rejected_lengths)
    return (delta - 1.0 / (2.0 * beta)) ** 2


def _hinge(z_w: torch.Tensor, z_l: torch.Tensor, *, beta: float) -> torch.Tensor:
    """SLiC hinge (Zhao et al. 2023): ``relu(1 - β(z_w - z_l))``."""
    return torch.relu(1.0 - beta * (z_w - z_l))


def _robust(
    z_w: torch.Tensor, z_l: torch.Tensor, *, beta: float, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Robust DPO (Chowdhury et al. 2024), flip probability ε = ``label_smoothing``:
    ``((1-ε)·softplus(-βd) - ε·softplus(βd)) / (1 - 2ε)``, d = z_w - z_l. ε = 0 gives dpo."""
    d = beta * (z_w - z_l)
    eps = label_smoothing
    return ((1.0 - eps) * _softplus(-d) - eps * _softplus(d)) / (1.0 - 2.0 * eps)


def _sppo_hard(z_w: torch.Tensor, z_l: torch.Tensor, *, beta: float) -> torch.Tensor:
    """SPPO, hard-probability version (Wu et al. 2024, Eq. 4.7 with P ∈ {0, 1}):
    ``(z_w - 1/(2β))² + (z_l + 1/(2β))²``."""
    return (z_w - 0.5 / beta) ** 2 + (z_l + 0.5 / beta) ** 2


def _apo_zero(z_w: torch.Tensor, z_l: torch.Tensor, *, beta: float) -> torch.Tensor:
    """APO-zero (D'Oosterlinck et al. 2024, Eq. 7): ``1 - σ(T_w) + σ(T_l)``."""
    return 1.0 - torch.sigmoid(beta * z_w) + torch.sigmoid(beta * z_l)


def _apo_down(z_w: torch.Tensor, z_l: torch.Tensor, *, beta: float) -> torch.Tensor:
    """APO-down (D'Oosterlinck et al. 2024, Eq. 8): ``σ(T_w) + 1 - σ(β(z_w - z_l))``."""
    return torch.sigmoid(beta * z_w) + 1.0 - torch.sigmoid(beta * (z_w - z_l))


def _exo_pair(
    z_w: torch.Tensor, z_l: torch.Tensor, *, beta: float, label_smoothing: float = 0.0
) -> torch.Tensor:
    """EXO-pref (Ji et al. 2024, Eq. 16), K = 2: ``KL(softmax(T_w, T_l) ‖ [1-ε, ε])``
    = ``σ(βd)(log σ(βd) - log(1-ε)) + σ(-βd)(log σ(-βd) - log ε)``, ε = ``label_smoothing`` > 0."""
    d = beta * (z_w - z_l)
    eps = label_smoothing
    return torch.sigmoid(d) * (F.logsigmoid(d) - math.log1p(-eps)) + torch.sigmoid(-d) * (
        F.logsigmoid(-d) - math.log(eps)
    )


def _discopop(
    z_w: torch.Tensor, z_l: torch.Tensor, *, beta: float, discopop_tau: float = 0.05
) -> torch.Tensor:
    """DiscoPOP / log-ratio modulated loss (Chan Lu et al. 2024, Eq. 5), ``x = β(z_w - z_l)``:
    ``softplus(-x)·(1 - σ(x/τ)) + exp(-x)·σ(x/τ)``, τ = ``discopop_tau``."""
    x = beta * (z_w - z_l)
    mod = torch.sigmoid(x / discopop_tau)
    # exp(-x)·σ(x/τ) as exp(-x + log σ(x/τ)): equal, but no inf·0 = NaN when x ≪ 0
    return _softplus(-x) * (1.0 - mod) + torch.exp(-x + F.logsigmoid(x / discopop_tau))


def _sigmoid_norm(
    z_w: torch.Tensor,
    z_l: torch.Tensor,
    *,
    beta: float,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Length-normalised DPO (TRL ``sigmoid_norm``): ``softplus(-β(z_w/n_w - z_l/n_l))``."""
    return _softplus(-beta * _per_token_margin(z_w, z_l, chosen_lengths, rejected_lengths))


# --------------------------------------------------------------------------------------------
# Losses with a likelihood term on the chosen response: they need the policy's chosen
# log-probabilities themselves, not only the log-ratios, so the caller passes them as the
# parameter ``chosen_logps``.
# --------------------------------------------------------------------------------------------


def _chosen_nll(
    z_w: torch.Tensor, chosen_logps: object, chosen_lengths: torch.Tensor | None
) -> torch.Tensor:
    """Per-example share of TRL's chosen NLL ``-Σ_i log π(y_w,i|x_i) / Σ_i n_w,i``:
    ``-log π(y_w|x) / n̄_w`` with ``n̄_w`` the mean completion length (1 without lengths), so
    that the *mean* over the examples is TRL's token-averaged NLL of the batch (TRL's ``sft``
    loss; its RPO term, Pang et al. 2024)."""
    if chosen_logps is None:
        raise ValueError(
            "this loss needs chosen_logps=policy_chosen_logps (the policy's chosen sequence "
            "log-probabilities, for its NLL term)"
        )
    pc = as_float_tensor(chosen_logps, "chosen_logps", min_ndim=0, like=z_w).to(z_w.dtype)
    if pc.shape != z_w.shape:
        raise ValueError(
            f"chosen_logps must have the shape of policy_chosen_logps {tuple(z_w.shape)}, "
            f"got {tuple(pc.shape)}"
        )
    n_bar = 1.0 if chosen_lengths is None else torch.broadcast_to(
        chosen_lengths, z_w.shape).mean()
    return -pc / n_bar


def _sft(
    z_w: torch.Tensor,
    z_l: torch.Tensor,
    *,
    beta: float,
    chosen_logps: object = None,
    chosen_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Chosen-only SFT (TRL ``loss_type='sft'``): the NLL of the chosen responses, averaged
    over their tokens across the batch; ``beta``, the rejected responses and the reference do
    not enter. Per example ``-log π(y_w|x) / n̄_w`` (see :func:`_chosen_nll`)."""
    return _chosen_nll(z_w, chosen_logps, chosen_lengths)


def _rpo(
    z_w: torch.Tensor,
    z_l: torch.Tensor,
    *,
    beta: float,
    rpo_alpha: float = 1.0,
    chosen_logps: object = None,
    chosen_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """RPO (Pang et al. 2024, "Iterative Reasoning Preference Optimization", Eq. 1):
    ``softplus(-(T_w - T_l)) + α · NLL(y_w)``, as TRL computes it (``rpo_alpha`` of TRL < 1.0;
    in TRL 1.16 ``loss_type=["sigmoid", "sft"]``, ``loss_weights=[1, α]``): the DPO loss plus
    α times the chosen responses' NLL averaged over their tokens across the batch."""
    if (isinstance(rpo_alpha, bool) or not isinstance(rpo_alpha, (int, float))
            or not math.isfinite(rpo_alpha) or rpo_alpha < 0):
        raise ValueError(f"rpo_alpha must be a finite number >= 0, got {rpo_alpha!r}")
    return _dpo(z_w, z_l, beta=beta) + float(rpo_alpha) * _chosen_nll(
        z_w, chosen_logps, chosen_lengths)
