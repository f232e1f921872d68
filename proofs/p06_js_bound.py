"""P6. Jensen–Shannon: optimal critic log(p/q), value 2·JSD(P, Q) - 2 log 2.

JS(T) = E_P[-softplus(-T)] - E_Q[softplus(T)] = E_P[log sigma(T)] + E_Q[log(1 - sigma(T))] is
separable in the critic (general n): per coordinate it is a strictly concave function of T_i
maximised at T_i = log(p_i/q_i). At that critic sigma(T_i) = p_i/(p_i + q_i), and the value is
sum_i [p_i log(p_i/m_i) + q_i log(q_i/m_i)] - 2 log 2 with m = (p + q)/2.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
import torch

from mi_bounds.bounds import js_bound
from proofs._core import (
    Proof,
    Step,
    equal,
    random_distribution,
    second_derivative_sign,
    sigmoid,
    softplus,
    stationary_point,
    tex,
)
from toy_models.oracle import jsd

i, n = sp.symbols("i n", integer=True, positive=True)
p = sp.IndexedBase("p", positive=True)
q = sp.IndexedBase("q", positive=True)
T = sp.IndexedBase("T", real=True)
p_i, q_i = sp.symbols("p_i q_i", positive=True)
t_i = sp.Symbol("T_i", real=True)
NORMALISED = {sp.Sum(p[i], (i, 1, n)): 1, sp.Sum(q[i], (i, 1, n)): 1}


def expect(weights: sp.IndexedBase, f: sp.Expr) -> sp.Expr:
    return sp.Sum(weights[i] * f, (i, 1, n))


def js(critic: sp.Expr) -> sp.Expr:
    """JS(T) = E_P[-softplus(-T)] - E_Q[softplus(T)]."""
    return expect(p, -softplus(-critic)) - expect(q, softplus(critic))


M = (p[i] + q[i]) / 2
#: 2 JSD(P, Q) - 2 log 2 = KL(P||M) + KL(Q||M) - 2 log 2
VALUE = expect(p, sp.log(p[i] / M)) + expect(q, sp.log(q[i] / M)) - 2 * sp.log(2)
OPTIMAL_CRITIC = sp.log(p[i] / q[i])


def derive() -> list[Step]:
    term = -p_i * softplus(-t_i) - q_i * softplus(t_i)
    m_i = (p_i + q_i) / 2
    return [
        equal(
            r"The JS bound is the log-likelihood of a logistic classifier: "
            r"$-\mathrm{softplus}(-T) = \log\sigma(T)$ and "
            r"$-\mathrm{softplus}(T) = \log(1 - \sigma(T))$",
            -softplus(-t_i) - softplus(t_i), sp.log(sigmoid(t_i)) + sp.log(1 - sigmoid(t_i))),
        stationary_point(
            r"Stationarity, coordinate by coordinate: "
            r"$p_i\sigma(-T_i) - q_i\sigma(T_i) = 0$ only at $T_i = \log(p_i/q_i)$",
            term, t_i, OPTIMAL_CRITIC.subs({p[i]: p_i, q[i]: q_i})),
        second_derivative_sign(
            r"Concavity: diagonal Hessian with entries $-(p_i + q_i)\sigma(T_i)\sigma(-T_i) < 0$",
            term, t_i, "negative"),
        equal(
            r"At the optimum the classifier is Bayes-optimal: "
            r"$\sigma(\log(p_i/q_i)) = p_i/(p_i + q_i)$",
            sigmoid(sp.log(p_i / q_i)), p_i / (p_i + q_i)),
        equal(
            r"Value at the optimum, term by term: with $m_i = (p_i + q_i)/2$, "
            r"$-p_i\,\mathrm{softplus}(-T^*_i) - q_i\,\mathrm{softplus}(T^*_i) = "
            r"p_i\log\frac{p_i}{m_i} + q_i\log\frac{q_i}{m_i} - (p_i + q_i)\log 2$",
            -p_i * softplus(-sp.log(p_i / q_i)) - q_i * softplus(sp.log(p_i / q_i)),
            p_i * sp.log(p_i / m_i) + q_i * sp.log(q_i / m_i) - (p_i + q_i) * sp.log(2)),
        equal(
            r"Summed over $i$, the constants add to $-2\log 2$ "
            r"(uses $\sum_i p_i = \sum_i q_i = 1$), so "
            r"$\mathrm{JS}(T^*) = \mathrm{KL}(P\|M) + \mathrm{KL}(Q\|M) - 2\log 2 = "
            r"2\,\mathrm{JSD}(P, Q) - 2\log 2$",
            -expect(p, sp.log(2)) - expect(q, sp.log(2)), -2 * sp.log(2), given=NORMALISED),
    ]


def spot_check(rng: np.random.Generator) -> float:
    """js_bound at log(p/q) equals 2·oracle JSD - 2 log 2; JS(T) <= that for random critics."""
    worst = 0.0
    for _ in range(50):
        m = int(rng.integers(2, 9))
        pp, qq = (torch.tensor(random_distribution(rng, m)) for _ in range(2))
        target = 2 * float(jsd(pp.numpy(), qq.numpy())) - 2 * np.log(2)
        opt = torch.log(pp / qq)
        worst = max(worst, abs(float(js_bound(opt, opt, pos_weight=pp, neg_weight=qq)) - target))
        crit = torch.tensor(rng.normal(0, 3, m))
        val = float(js_bound(crit, crit, pos_weight=pp, neg_weight=qq))
        worst = max(worst, max(0.0, val - target))
    return worst


PROOF = Proof(
    key="p06",
    title="Jensen–Shannon: optimal critic log(p/q), value 2·JSD − 2 log 2",
    statement=(
        r"$\mathrm{JS}(T) = \mathbb{E}_P[-\mathrm{softplus}(-T)] - "
        r"\mathbb{E}_Q[\mathrm{softplus}(T)]$ "
        r"is maximised exactly at $T = \log(dP/dQ)$ (not shift-invariant), with value "
        r"$2\,\mathrm{JSD}(P, Q) - 2\log 2$, JSD in nats, $M = (P + Q)/2$."
    ),
    latex=(
        tex(r"\mathrm{JS}(T)", js(T[i])),
        tex(r"T^*_i", OPTIMAL_CRITIC),
        tex(r"\mathrm{JS}(T^*)", VALUE),
    ),
    derive=derive,
    spot_check=spot_check,
    spot_check_doc=(
        "50 random pairs of distributions on 2–8 points: mi_bounds.bounds.js_bound at log(p/q) "
        "against 2·toy_models.oracle.jsd - 2 log 2, and max(0, JS(T) - that) for random critics"
    ),
    source="Nowozin et al. 2016 (f-GAN), Table 2; Hjelm et al. 2019; Poole et al. 2019, Sec. 4",
)
