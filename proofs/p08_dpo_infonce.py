"""P8. DPO's loss equals log 2 minus the two-sample InfoNCE bound.

With the implicit critic T = beta log(pi/pi_ref), one chosen response (the positive, T_w) and one
rejected response (its K - 1 = 1 negative, T_l), the InfoNCE bound is
T_w - log((e^{T_w} + e^{T_l})/2) = log 2 - softplus(-(T_w - T_l)). So minimising DPO is
maximising a K = 2 InfoNCE bound, which by P7 is at most log 2: DPO's loss is positive.
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp
import torch

from mi_bounds.bounds import infonce_bound, infonce_bound_from_negatives
from proofs._core import Proof, Step, equal, sign, softplus

t_w, t_l = sp.symbols("T_w T_l", real=True)
beta = sp.Symbol("beta", positive=True)
lp_w, lp_l, lr_w, lr_l = (sp.Symbol(name, real=True) for name in (
    r"\log\pi_w", r"\log\pi_l", r"\log\pi_{\mathrm{ref},w}", r"\log\pi_{\mathrm{ref},l}"))

#: the two-sample (K = 2) InfoNCE bound with positive T_w and negative T_l
INFONCE_2 = t_w - sp.log((sp.exp(t_w) + sp.exp(t_l)) / 2)
#: DPO's per-pair loss
DPO = softplus(-(t_w - t_l))


def derive() -> list[Step]:
    implicit = {t_w: beta * (lp_w - lr_w), t_l: beta * (lp_l - lr_l)}
    return [
        equal(
            r"DPO's loss is $\log 2$ minus the $K = 2$ InfoNCE bound",
            DPO, sp.log(2) - INFONCE_2),
        equal(
            r"In TRL's variables ($T = \beta(\log\pi - \log\pi_{\mathrm{ref}})$): "
            r"$-\log\sigma\big(\beta(\log\frac{\pi_w}{\pi_{\mathrm{ref},w}} - "
            r"\log\frac{\pi_l}{\pi_{\mathrm{ref},l}})\big) = \log 2 - I_{\mathrm{NCE},2}$",
            -sp.log(1 / (1 + sp.exp(-(implicit[t_w] - implicit[t_l])))),
            sp.log(2) - INFONCE_2.subs(implicit)),
        sign(
            r"Consistent with P7: the DPO loss is positive, i.e. $I_{\mathrm{NCE},2} < \log 2$",
            DPO, "positive"),
    ]


def spot_check(rng: np.random.Generator) -> float:
    """preference_loss('dpo') = log 2 - infonce_bound_from_negatives = log 2 - infonce_bound."""
    from mi_bounds.preference import preference_loss

    worst = 0.0
    for _ in range(4):
        b = float(np.exp(rng.normal(-1, 1)))
        pw, pl, rw, rl = (torch.tensor(rng.normal(-30, 10, 256)) for _ in range(4))
        loss = preference_loss("dpo", pw, pl, rw, rl, beta=b, reduction="none")
        tw, tl = b * (pw - rw), b * (pl - rl)
        nce = infonce_bound_from_negatives(tw[:, None], tl[:, None, None])  # N = 1, K = 2
        worst = max(worst, float((loss - (math.log(2) - nce)).abs().max()))
        # the same pair as a 2 x 2 score matrix whose second row is (T_l, T_w): the
        # score-matrix InfoNCE averages both rows, each a K = 2 InfoNCE term
        scores = torch.stack([torch.stack([tw, tl], -1), torch.stack([tl, tw], -1)], -2)
        worst = max(worst, float((infonce_bound(scores) - nce).abs().max()))
    return worst


PROOF = Proof(
    key="p08",
    title="DPO = log 2 − two-sample InfoNCE",
    statement=(
        r"With the implicit critic $T = \beta\log(\pi/\pi_{\mathrm{ref}})$, the DPO loss of a "
        r"pair is $\log 2$ minus the InfoNCE bound with $K = 2$ (the chosen response is the "
        r"positive, the rejected one its only negative): "
        r"$\mathrm{softplus}(-(T_w - T_l)) = \log 2 - \big(T_w - \log\frac{e^{T_w} + e^{T_l}}{2}"
        r"\big)$."
    ),
    latex=(sp.latex(sp.Eq(DPO, sp.log(2) - INFONCE_2)),),
    derive=derive,
    spot_check=spot_check,
    spot_check_doc=(
        "4 x 256 random pairs and betas: mi_bounds.preference.preference_loss('dpo') against "
        "log 2 - mi_bounds.bounds.infonce_bound_from_negatives (K = 2), and the latter against "
        "infonce_bound of the symmetric 2 x 2 score matrix"
    ),
    source="Rafailov et al. 2023 (DPO), Eq. 7; van den Oord et al. 2018 (InfoNCE)",
)
