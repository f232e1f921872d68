"""P5. TUBA with baseline a > 0: optimal critic log(p/q) + log a, value KL(P||Q); TUBA <= DV.

TUBA(T, a) = E_P[T] - E_Q[e^T]/a - log a + 1 is separable in the critic (general n). It is DV
with log u replaced by its tangent-line upper bound at u = a, log u <= u/a + log a - 1, hence
TUBA <= DV, with equality iff E_Q[e^T] = a. NWJ is TUBA with a = e.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
import torch

from mi_bounds.bounds import dv_bound, nwj_bound, tuba_bound
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
a = sp.Symbol("a", positive=True)
p = sp.IndexedBase("p", positive=True)
q = sp.IndexedBase("q", positive=True)
T = sp.IndexedBase("T", real=True)
p_i, q_i = sp.symbols("p_i q_i", positive=True)
t_i = sp.Symbol("T_i", real=True)
u, x = sp.symbols("u x", positive=True)
NORMALISED = {sp.Sum(p[i], (i, 1, n)): 1}


def expect(weights: sp.IndexedBase, f: sp.Expr) -> sp.Expr:
    return sp.Sum(weights[i] * f, (i, 1, n))


def tuba(critic: sp.Expr, baseline: sp.Expr = a) -> sp.Expr:
    """TUBA(T, a) = E_P[T] - E_Q[e^T]/a - log a + 1."""
    return expect(p, critic) - expect(q, sp.exp(critic)) / baseline - sp.log(baseline) + 1


def nwj(critic: sp.Expr) -> sp.Expr:
    return expect(p, critic) - sp.exp(-1) * expect(q, sp.exp(critic))


def dv(critic: sp.Expr) -> sp.Expr:
    return expect(p, critic) - sp.log(expect(q, sp.exp(critic)))


KL = expect(p, sp.log(p[i] / q[i]))
OPTIMAL_CRITIC = sp.log(p[i] / q[i]) + sp.log(a)


def derive() -> list[Step]:
    term = p_i * t_i - q_i * sp.exp(t_i) / a
    return [
        stationary_point(
            r"Stationarity, coordinate by coordinate: the only zero of "
            r"$\partial\,\mathrm{TUBA}/\partial T_i$ is $T_i = \log(p_i/q_i) + \log a$",
            term, t_i, OPTIMAL_CRITIC.subs({p[i]: p_i, q[i]: q_i})),
        second_derivative_sign(
            r"Concavity: diagonal Hessian with entries $-q_i e^{T_i}/a < 0$",
            term, t_i, "negative"),
        equal(
            r"Value at the optimum: $\mathrm{TUBA}(\log(p/q) + \log a, a) = \mathrm{KL}(P\|Q)$ "
            r"(uses $\sum_i p_i = 1$)",
            tuba(OPTIMAL_CRITIC), KL, given=NORMALISED),
        equal(
            r"NWJ is TUBA with $a = e$",
            tuba(T[i], sp.E), nwj(T[i])),
        equal(
            r"The gap to DV depends on $u = \mathbb{E}_Q[e^T]$ only: "
            r"$\mathrm{DV} - \mathrm{TUBA} = u/a + \log a - 1 - \log u$",
            dv(T[i]) - tuba(T[i]),
            (u / a + sp.log(a) - 1 - sp.log(u)).subs(u, expect(q, sp.exp(T[i])))),
        equal(
            r"With $x = u/a$ the gap is $x - 1 - \log x$",
            u / a + sp.log(a) - 1 - sp.log(u), x - 1 - sp.log(x), definitions={x: u / a}),
        log_inequality(
            r"$x - 1 - \log x \ge 0$ (equality iff $x = 1$): $\mathrm{TUBA}(T, a) \le "
            r"\mathrm{DV}(T)$ for every critic and baseline, with equality iff "
            r"$\mathbb{E}_Q[e^T] = a$"),
    ]


def spot_check(rng: np.random.Generator) -> float:
    """tuba_bound at log(p/q) + log a equals oracle KL; TUBA <= DV; TUBA(a = e) = NWJ."""
    worst = 0.0
    for _ in range(50):
        m = int(rng.integers(2, 9))
        pp, qq = (torch.tensor(random_distribution(rng, m)) for _ in range(2))
        log_a = float(rng.normal(0, 3))
        opt = torch.log(pp / qq) + log_a
        val = float(tuba_bound(opt, opt, log_baseline=log_a, pos_weight=pp, neg_weight=qq))
        worst = max(worst, abs(val - float(kl(pp.numpy(), qq.numpy()))))
        crit = torch.tensor(rng.normal(0, 3, m))
        t_val = tuba_bound(crit, crit, log_baseline=log_a, pos_weight=pp, neg_weight=qq)
        d_val = dv_bound(crit, crit, pos_weight=pp, neg_weight=qq)
        n_val = nwj_bound(crit, crit, pos_weight=pp, neg_weight=qq)
        t_e = tuba_bound(crit, crit, log_baseline=1.0, pos_weight=pp, neg_weight=qq)
        worst = max(worst, max(0.0, float(t_val - d_val)), abs(float(t_e - n_val)))
    return worst


PROOF = Proof(
    key="p05",
    title="TUBA with baseline a: optimum, value KL, TUBA ≤ DV",
    statement=(
        r"$\mathrm{TUBA}(T, a) = \mathbb{E}_P[T] - \mathbb{E}_Q[e^T]/a - \log a + 1$, $a > 0$, is "
        r"maximised exactly at $T = \log(dP/dQ) + \log a$ with value $\mathrm{KL}(P\|Q)$; "
        r"$\mathrm{TUBA}(T, a) \le \mathrm{DV}(T)$ for every critic (tangent line "
        r"$\log u \le u/a + \log a - 1$); NWJ is the case $a = e$."
    ),
    latex=(
        tex(r"\mathrm{TUBA}(T, a)", tuba(T[i])),
        tex(r"T^*_i", OPTIMAL_CRITIC),
        tex(r"\mathrm{DV}(T) - \mathrm{TUBA}(T, a)", u / a + sp.log(a) - 1 - sp.log(u))
        + r",\quad u = \mathbb{E}_Q[e^T]",
    ),
    derive=derive,
    spot_check=spot_check,
    spot_check_doc=(
        "50 random pairs of distributions on 2–8 points and random log a: "
        "mi_bounds.bounds.tuba_bound at log(p/q) + log a against toy_models.oracle.kl; for "
        "random critics, max(0, TUBA - DV) and |TUBA(a = e) - NWJ|"
    ),
    source="Poole et al. 2019, Sec. 2.2 (I_TUBA)",
)
