"""P4. NWJ: optimal critic 1 + log(p/q), value KL(P||Q), and NWJ <= DV.

NWJ(T) = E_P[T] - e^{-1} E_Q[e^T] is a sum of one term per support point, so the stationarity
condition and the second derivative are per coordinate (general n). NWJ <= DV because
DV - NWJ = u/e - log u >= 0 with u = E_Q[e^T] (log u <= u/e).
"""

from __future__ import annotations

import numpy as np
import sympy as sp
import torch

from mi_bounds.bounds import dv_bound, nwj_bound
from proofs._core import (
    Proof,
    Step,
    equal,
    log_inequality,
    random_distribution,
    second_derivative_sign,
    stationary_point,
    tex,
)
from toy_models.oracle import kl

i, n = sp.symbols("i n", integer=True, positive=True)
p = sp.IndexedBase("p", positive=True)
q = sp.IndexedBase("q", positive=True)
T = sp.IndexedBase("T", real=True)
p_i, q_i = sp.symbols("p_i q_i", positive=True)
t_i = sp.Symbol("T_i", real=True)
u = sp.Symbol("u", positive=True)
NORMALISED = {sp.Sum(p[i], (i, 1, n)): 1}


def expect(weights: sp.IndexedBase, f: sp.Expr) -> sp.Expr:
    return sp.Sum(weights[i] * f, (i, 1, n))


def nwj(critic: sp.Expr) -> sp.Expr:
    """NWJ(T) = E_P[T] - e^{-1} E_Q[e^T]."""
    return expect(p, critic) - sp.exp(-1) * expect(q, sp.exp(critic))


def dv(critic: sp.Expr) -> sp.Expr:
    return expect(p, critic) - sp.log(expect(q, sp.exp(critic)))


KL = expect(p, sp.log(p[i] / q[i]))
OPTIMAL_CRITIC = 1 + sp.log(p[i] / q[i])


def derive() -> list[Step]:
    term = p_i * t_i - sp.exp(-1) * q_i * sp.exp(t_i)  # coordinate i's contribution
    return [
        stationary_point(
            r"Stationarity, coordinate by coordinate: the only zero of "
            r"$\partial\,\mathrm{NWJ}/\partial T_i$ is $T_i = 1 + \log(p_i/q_i)$",
            term, t_i, OPTIMAL_CRITIC.subs({p[i]: p_i, q[i]: q_i})),
        second_derivative_sign(
            r"Concavity: the Hessian is diagonal with entries $-e^{T_i - 1} q_i < 0$, so the "
            r"stationary point is the global maximum",
            term, t_i, "negative"),
        equal(
            r"Value at the optimum: $\mathrm{NWJ}(1 + \log(p/q)) = \mathrm{KL}(P\|Q)$",
            nwj(OPTIMAL_CRITIC), KL, given=NORMALISED),
        equal(
            r"The gap to DV depends on $u = \mathbb{E}_Q[e^T]$ only: "
            r"$\mathrm{DV}(T) - \mathrm{NWJ}(T) = u/e - \log u$",
            dv(T[i]) - nwj(T[i]), (u / sp.E - sp.log(u)).subs(u, expect(q, sp.exp(T[i])))),
        equal(
            r"With $x = u/e$: $u/e - \log u = x - 1 - \log x$",
            u / sp.E - sp.log(u), (sp.Symbol("x") - 1 - sp.log(sp.Symbol("x"))),
            definitions={sp.Symbol("x"): u / sp.E}),
        log_inequality(
            r"$x - 1 - \log x \ge 0$ for $x > 0$ (equality iff $x = 1$), hence "
            r"$\mathrm{NWJ}(T) \le \mathrm{DV}(T)$ for every critic, with equality iff "
            r"$\mathbb{E}_Q[e^T] = e$"),
    ]


def spot_check(rng: np.random.Generator) -> float:
    """nwj_bound at 1 + log(p/q) equals oracle KL; NWJ(T) <= DV(T) for random critics."""
    worst = 0.0
    for _ in range(50):
        m = int(rng.integers(2, 9))
        pp, qq = (torch.tensor(random_distribution(rng, m)) for _ in range(2))
        opt = 1 + torch.log(pp / qq)
        worst = max(worst, abs(float(nwj_bound(opt, opt, pos_weight=pp, neg_weight=qq))
                               - float(kl(pp.numpy(), qq.numpy()))))
        crit = torch.tensor(rng.normal(0, 3, m))
        gap = float(dv_bound(crit, crit, pos_weight=pp, neg_weight=qq)
                    - nwj_bound(crit, crit, pos_weight=pp, neg_weight=qq))
        u_val = float((qq * crit.exp()).sum())
        worst = max(worst, max(0.0, -gap), abs(gap - (u_val / np.e - np.log(u_val))))
    return worst


PROOF = Proof(
    key="p04",
    title="NWJ: optimal critic 1 + log(p/q), value KL, NWJ ≤ DV",
    statement=(
        r"$\mathrm{NWJ}(T) = \mathbb{E}_P[T] - e^{-1}\mathbb{E}_Q[e^T]$ is maximised exactly at "
        r"$T = 1 + \log(dP/dQ)$ with value $\mathrm{KL}(P\|Q)$, and "
        r"$\mathrm{NWJ}(T) \le \mathrm{DV}(T)$ for every critic, because "
        r"$\log u \le u/e$ for $u > 0$."
    ),
    latex=(
        tex(r"\mathrm{NWJ}(T)", nwj(T[i])),
        tex(r"T^*_i", OPTIMAL_CRITIC),
        tex(r"\mathrm{DV}(T) - \mathrm{NWJ}(T)", u / sp.E - sp.log(u))
        + r",\quad u = \mathbb{E}_Q[e^T]",
    ),
    derive=derive,
    spot_check=spot_check,
    spot_check_doc=(
        "50 random pairs of distributions on 2–8 points: mi_bounds.bounds.nwj_bound at "
        "1 + log(p/q) against toy_models.oracle.kl; for random critics, max(0, NWJ - DV) and "
        "|DV - NWJ - (u/e - log u)| with dv_bound"
    ),
    source="Nguyen, Wainwright & Jordan 2010; Poole et al. 2019, Sec. 2.2",
)
