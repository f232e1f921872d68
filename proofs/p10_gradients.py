"""P10. Gradients with respect to the implicit rewards: DPO against MIO.

DPO, softplus(-(T_w - T_l)): one shared weight sigma(T_l - T_w) on (grad T_w - grad T_l), which
vanishes as the margin grows, and the loss is invariant to shifting T_w and T_l together (so both
likelihoods can fall while the margin grows). MIO, softplus(-T_w) + 1/2 softplus(T_w) +
1/2 softplus(T_l): decoupled terms, 1.5 sigma(T_w) - 1 for the chosen (zero only at T_w = log 2,
a minimum) and 1/2 sigma(T_l) for the rejected. MIO is the JS bound (negated) with
Q = 1/2(chosen + rejected), and term for term TRL's pairwise NCA loss; DPO is log 2 minus the DV
bound with the same Q.
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp
import torch
import torch.nn.functional as F

from mi_bounds.bounds import dv_bound, js_bound
from proofs._core import (
    Proof,
    Step,
    equal,
    log_sigmoid,
    second_derivative_sign,
    sigmoid,
    softplus,
    solves,
    tex,
)

t_w, t_l, c = sp.symbols("T_w T_l c", real=True)
theta = sp.Symbol("theta", real=True)
tw_f, tl_f = sp.Function("T_w")(theta), sp.Function("T_l")(theta)

DPO = softplus(-(t_w - t_l))
MIO = softplus(-t_w) + softplus(t_w) / 2 + softplus(t_l) / 2
#: TRL's nca_pair: -logsigmoid(T_w) - 1/2 logsigmoid(-T_w) - 1/2 logsigmoid(-T_l)
NCA_PAIR = -log_sigmoid(t_w) - log_sigmoid(-t_w) / 2 - log_sigmoid(-t_l) / 2
#: JS bound with P = delta_w and Q = 1/2 (delta_w + delta_l)
JS_MIX = -softplus(-t_w) - (softplus(t_w) + softplus(t_l)) / 2
#: DV bound with P = delta_w and Q = 1/2 (delta_w + delta_l)
DV_MIX = t_w - sp.log((sp.exp(t_w) + sp.exp(t_l)) / 2)
MIO_CHOSEN_WEIGHT = sp.Rational(3, 2) * sigmoid(t_w) - 1
MIO_REJECTED_WEIGHT = sigmoid(t_l) / 2


def derive() -> list[Step]:
    shift = {t_w: t_w + c, t_l: t_l + c}
    return [
        equal(r"DPO: $\partial L/\partial T_w = -\sigma(T_l - T_w)$",
              sp.diff(DPO, t_w), -sigmoid(t_l - t_w)),
        equal(r"DPO: $\partial L/\partial T_l = +\sigma(T_l - T_w)$",
              sp.diff(DPO, t_l), sigmoid(t_l - t_w)),
        equal(
            r"DPO, chain rule: $\nabla_\theta L = -\sigma(T_l - T_w)\,(\nabla T_w - \nabla T_l)$, "
            r"one shared weight",
            sp.diff(DPO.subs({t_w: tw_f, t_l: tl_f}), theta),
            -sigmoid(tl_f - tw_f) * (sp.diff(tw_f, theta) - sp.diff(tl_f, theta))),
        equal(r"DPO is shift invariant: $L(T_w + c, T_l + c) = L(T_w, T_l)$ (sympy cancels "
              r"$c$ as soon as it substitutes)",
              DPO.subs(shift, simultaneous=True), DPO,
              display=r"\mathrm{softplus}\big(-((T_w + c) - (T_l + c))\big) = "
                      + sp.latex(DPO)),
        equal(r"MIO: $\partial L/\partial T_w = \frac32\sigma(T_w) - 1$",
              sp.diff(MIO, t_w), MIO_CHOSEN_WEIGHT),
        equal(r"MIO: $\partial L/\partial T_l = \frac12\sigma(T_l)$",
              sp.diff(MIO, t_l), MIO_REJECTED_WEIGHT),
        equal(r"MIO's terms are decoupled: $\partial^2 L/\partial T_w\partial T_l = 0$",
              sp.diff(MIO, t_w, t_l), sp.Integer(0)),
        solves(r"MIO's chosen weight vanishes only at $T_w = \log 2$",
               MIO_CHOSEN_WEIGHT, t_w, sp.log(2)),
        second_derivative_sign(
            r"... where the loss is convex in $T_w$ "
            r"($\partial^2 L/\partial T_w^2 = \frac32\sigma(T_w)\sigma(-T_w) > 0$): "
            r"a fixed target that pulls the chosen reward back to $\log 2$",
            MIO, t_w, "positive"),
        equal(
            r"MIO shifted together: $\frac{d}{dc}L(T_w + c, T_l + c)\big|_{c=0} = "
            r"\frac32\sigma(T_w) - 1 + \frac12\sigma(T_l)$ (not identically 0: not shift "
            r"invariant)",
            sp.diff(MIO.subs(shift, simultaneous=True), c).subs(c, 0),
            MIO_CHOSEN_WEIGHT + MIO_REJECTED_WEIGHT),
        equal(r"MIO is minus the JS bound with $P = \delta_w$, "
              r"$Q = \frac12(\delta_w + \delta_l)$", MIO, -JS_MIX),
        equal(r"MIO equals TRL's pairwise NCA loss, term for term", MIO, NCA_PAIR),
        equal(r"DPO is $\log 2$ minus the DV bound with $P = \delta_w$, "
              r"$Q = \frac12(\delta_w + \delta_l)$", DPO, sp.log(2) - DV_MIX),
    ]


def spot_check(rng: np.random.Generator) -> float:
    """Autograd of mi_bounds.preference against the weights; MIO = -JS, = NCA; DPO = log 2 - DV."""
    from mi_bounds.preference import preference_loss

    worst = 0.0
    for _ in range(4):
        b = float(np.exp(rng.normal(-1, 1)))
        pw, pl = (torch.tensor(rng.normal(-30, 10, 256), requires_grad=True) for _ in range(2))
        rw, rl = (torch.tensor(rng.normal(-30, 10, 256)) for _ in range(2))
        tw, tl = (b * (pw - rw)).detach(), (b * (pl - rl)).detach()
        # gradients w.r.t. the policy log-probabilities are beta times those w.r.t. T
        dpo = preference_loss("dpo", pw, pl, rw, rl, beta=b, reduction="sum")
        gw, gl = torch.autograd.grad(dpo, (pw, pl))
        weight = torch.sigmoid(tl - tw)
        worst = max(worst, float((gw + b * weight).abs().max()),
                    float((gl - b * weight).abs().max()))
        shift = float(rng.normal(0, 20))
        pw, pl = pw.detach(), pl.detach()
        dpo_none = preference_loss("dpo", pw, pl, rw, rl, beta=b, reduction="none")
        shifted = preference_loss("dpo", pw + shift, pl + shift, rw, rl, beta=b, reduction="none")
        worst = max(worst, float((shifted - dpo_none).abs().max()))
        pw.requires_grad_(True)
        pl.requires_grad_(True)
        mio = preference_loss("mio", pw, pl, rw, rl, beta=b, reduction="sum")
        gw, gl = torch.autograd.grad(mio, (pw, pl))
        worst = max(worst, float((gw - b * (1.5 * torch.sigmoid(tw) - 1)).abs().max()),
                    float((gl - b * 0.5 * torch.sigmoid(tl)).abs().max()))
        mio_none = preference_loss("mio", pw, pl, rw, rl, beta=b, reduction="none").detach()
        nca = -F.logsigmoid(tw) - 0.5 * F.logsigmoid(-tw) - 0.5 * F.logsigmoid(-tl)
        js = js_bound(tw[:, None], torch.stack([tw, tl], -1))  # P = δ_w, Q = ½(δ_w + δ_l)
        dv = dv_bound(tw[:, None], torch.stack([tw, tl], -1))
        worst = max(worst, float((mio_none - nca).abs().max()), float((mio_none + js).abs().max()),
                    float((dpo_none.detach() - (math.log(2) - dv)).abs().max()))
    return worst


PROOF = Proof(
    key="p10",
    title="Gradients in the implicit rewards: DPO's shared weight, MIO's decoupled terms",
    statement=(
        r"For $L_{\mathrm{DPO}} = \mathrm{softplus}(-(T_w - T_l))$ the gradient is "
        r"$-\sigma(T_l - T_w)(\nabla T_w - \nabla T_l)$, a single weight that vanishes as the "
        r"margin grows, and $L_{\mathrm{DPO}}$ is invariant to shifting $T_w$ and $T_l$ "
        r"together. For $L_{\mathrm{MIO}} = \mathrm{softplus}(-T_w) + "
        r"\frac12\mathrm{softplus}(T_w) + \frac12\mathrm{softplus}(T_l)$ the terms are decoupled: "
        r"$\partial L/\partial T_w = \frac32\sigma(T_w) - 1$ (zero only at $T_w = \log 2$) and "
        r"$\partial L/\partial T_l = \frac12\sigma(T_l)$. $L_{\mathrm{MIO}}$ is minus the JS bound "
        r"and $L_{\mathrm{DPO}}$ is $\log 2$ minus the DV bound, both with $P = \delta_w$ and "
        r"$Q = \frac12(\delta_w + \delta_l)$; $L_{\mathrm{MIO}}$ is, term for term, TRL's "
        r"pairwise NCA loss (Chen et al. 2024)."
    ),
    latex=(
        tex(r"\nabla_\theta L_{\mathrm{DPO}}", -sigmoid(t_l - t_w))
        + r"\,(\nabla_\theta T_w - \nabla_\theta T_l)",
        tex(r"\partial L_{\mathrm{MIO}}/\partial T_w", MIO_CHOSEN_WEIGHT)
        + r",\quad " + tex(r"\partial L_{\mathrm{MIO}}/\partial T_l", MIO_REJECTED_WEIGHT),
        tex(r"L_{\mathrm{MIO}}", -JS_MIX),
        tex(r"L_{\mathrm{DPO}}", sp.log(2) - DV_MIX),
    ),
    derive=derive,
    spot_check=spot_check,
    spot_check_doc=(
        "4 x 256 random pairs and betas: autograd gradients of "
        "mi_bounds.preference.preference_loss('dpo'/'mio') with respect to the policy "
        "log-probabilities against beta times the weights above; DPO under a common shift of "
        "both log-probabilities; MIO against a TRL nca_pair transcription (logsigmoid) and "
        "against -mi_bounds.bounds.js_bound; DPO against log 2 - dv_bound (Q = ½(δ_w + δ_l))"
    ),
    source=("Rafailov et al. 2023 (DPO), Sec. 4 'What does the DPO update do?'; MIO as the JS "
            "estimator (docs/THEORY.md §2); Chen et al. 2024 (NCA); TRL 1.16 nca_pair"),
)
