"""P3. Donsker–Varadhan: optimal critic log(p/q) + c, value KL(P||Q), shift invariance.

Finite support of general size n; expectations are sympy ``Sum`` objects over i = 1..n and the
normalisation sum_i p_i = 1 is used where a step needs it. The bound itself follows from an exact
identity: KL(P||Q) - DV(T) = KL(P||Q_T), with Q_T the Gibbs tilt q e^T / E_Q[e^T].
"""

from __future__ import annotations

import numpy as np
import sympy as sp
import torch

from mi_bounds.bounds import dv_bound
from proofs._core import Proof, Step, equal, log_inequality, random_distribution, tex
from toy_models.oracle import kl

i, k, n = sp.symbols("i k n", integer=True, positive=True)
c = sp.Symbol("c", real=True)
p = sp.IndexedBase("p", positive=True)
q = sp.IndexedBase("q", positive=True)
T = sp.IndexedBase("T", real=True)
v = sp.IndexedBase("v", real=True)
NORMALISED = {sp.Sum(p[i], (i, 1, n)): 1}


def expect(weights: sp.IndexedBase, f: sp.Expr) -> sp.Expr:
    """E_w[f] = sum_i w_i f_i."""
    return sp.Sum(weights[i] * f, (i, 1, n))


def dv(critic: sp.Expr) -> sp.Expr:
    """DV(T) = E_P[T] - log E_Q[e^T]."""
    return expect(p, critic) - sp.log(expect(q, sp.exp(critic)))


KL = expect(p, sp.log(p[i] / q[i]))
OPTIMAL_CRITIC = sp.log(p[i] / q[i]) + c


def derive() -> list[Step]:
    steps: list[Step] = []
    # gradient: dDV/dT_k = p_k - q_k e^{T_k} / E_Q[e^T]
    partition = expect(q, sp.exp(OPTIMAL_CRITIC))
    grad_k = p[k] - q[k] * sp.exp(OPTIMAL_CRITIC.subs(i, k)) / partition
    steps.append(equal(
        r"At $T_i = \log(p_i/q_i) + c$ the gradient "
        r"$\partial\,\mathrm{DV}/\partial T_k = p_k - q_k e^{T_k}/\mathbb{E}_Q[e^T]$ vanishes for "
        r"every $k$ (uses $\sum_i p_i = 1$)",
        grad_k, sp.Integer(0), given=NORMALISED))
    # concavity: v^T H v = -Var_w(v) <= 0, with w_i = q_i e^{T_i} / sum_j q_j e^{T_j} (n = 3);
    # after differentiating, e^{T_j} is renamed E_j > 0 so that the identity is rational.
    t3 = [T[j] for j in (1, 2, 3)]
    dv3 = sum(p[j] * T[j] for j in (1, 2, 3)) - sp.log(sum(q[j] * sp.exp(T[j]) for j in (1, 2, 3)))
    vv = sp.Matrix([v[j] for j in (1, 2, 3)])
    quad = (vv.T * sp.hessian(dv3, t3) * vv)[0, 0]
    big_e = sp.IndexedBase("E", positive=True)
    quad = quad.subs({sp.exp(T[j]): big_e[j] for j in (1, 2, 3)})
    w = [q[j] * big_e[j] / sum(q[m] * big_e[m] for m in (1, 2, 3)) for j in (1, 2, 3)]
    mean_v = sum(w[j] * vv[j] for j in range(3))
    steps.append(equal(
        r"Concavity ($n = 3$, $E_i = e^{T_i}$): the Hessian's quadratic form is minus a "
        r"variance, $v^\top H v = -\sum_i w_i (v_i - \bar v)^2$ with $w \propto q e^T$, so "
        r"$\mathrm{DV}$ is concave and its stationary points are global maxima",
        quad, -sum(w[j] * (vv[j] - mean_v) ** 2 for j in range(3)),
        display=(r"v^\top \nabla^2_T \mathrm{DV}\, v = -\sum_{i=1}^{3} w_i (v_i - \bar v)^2,"
                 r"\quad w_i = \frac{q_i E_i}{\sum_j q_j E_j},\quad \bar v = \sum_i w_i v_i"
                 r"\qquad \text{(the checked expressions are the full sympy Hessian form "
                 r"and its right-hand side, expanded)}")))
    steps.append(equal(
        r"Value at the optimum: $\mathrm{DV}(\log(p/q) + c) = \mathrm{KL}(P\|Q)$ for every $c$",
        dv(OPTIMAL_CRITIC), KL, given=NORMALISED))
    steps.append(equal(
        r"Shift invariance: $\mathrm{DV}(T + c) = \mathrm{DV}(T)$ (uses $\sum_i p_i = 1$)",
        dv(T[i] + c), dv(T[i]), given=NORMALISED))
    tilt = q[i] * sp.exp(T[i]) / expect(q, sp.exp(T[i]))
    steps.append(equal(
        r"The bound as an identity: $\mathrm{KL}(P\|Q) - \mathrm{DV}(T) = \mathrm{KL}(P\|Q_T)$, "
        r"$Q_T = q\,e^T/\mathbb{E}_Q[e^T]$; so $\mathrm{DV}(T) \le \mathrm{KL}(P\|Q)$ with "
        r"equality iff $Q_T = P$, i.e. $T = \log(p/q) + c$",
        KL - dv(T[i]), expect(p, sp.log(p[i] / tilt)), given=NORMALISED))
    steps.append(log_inequality(
        r"$\mathrm{KL}(P\|Q_T) \ge 0$: term by term, $p_i\log(p_i/u_i) \ge p_i - u_i$ "
        r"by $x - 1 - \log x \ge 0$ at $x = u_i/p_i$, and $\sum_i (p_i - u_i) = 0$"))
    return steps


def spot_check(rng: np.random.Generator) -> float:
    """dv_bound at log(p/q) + c equals oracle KL; DV(T + c) = DV(T); DV <= KL; the tilt identity."""
    worst = 0.0
    for _ in range(50):
        m = int(rng.integers(2, 9))
        pp, qq = random_distribution(rng, m), random_distribution(rng, m)
        ratio = np.log(pp / qq)
        shift = float(rng.normal(0, 5))
        exact = float(kl(pp, qq))
        at_opt = float(dv_bound(torch.tensor(ratio + shift), torch.tensor(ratio + shift),
                                pos_weight=torch.tensor(pp), neg_weight=torch.tensor(qq)))
        crit = torch.tensor(rng.normal(0, 2, m))
        val = float(dv_bound(crit, crit, pos_weight=torch.tensor(pp), neg_weight=torch.tensor(qq)))
        shifted = float(dv_bound(crit + shift, crit + shift, pos_weight=torch.tensor(pp),
                                 neg_weight=torch.tensor(qq)))
        tilt = qq * np.exp(crit.numpy())
        tilt /= tilt.sum()
        worst = max(worst, abs(at_opt - exact), abs(shifted - val), max(0.0, val - exact),
                    abs((exact - val) - float(kl(pp, tilt))))
    return worst


PROOF = Proof(
    key="p03",
    title="Donsker–Varadhan: optimal critic, value KL, shift invariance",
    statement=(
        r"$\mathrm{DV}(T) = \mathbb{E}_P[T] - \log\mathbb{E}_Q[e^T] \le \mathrm{KL}(P\|Q)$, with "
        r"equality exactly at $T = \log(dP/dQ) + c$ for any constant $c$; "
        r"$\mathrm{DV}(T + c) = \mathrm{DV}(T)$; and the gap is itself a divergence, "
        r"$\mathrm{KL}(P\|Q) - \mathrm{DV}(T) = \mathrm{KL}(P\|Q_T)$ with "
        r"$Q_T \propto Q e^T$."
    ),
    latex=(
        tex(r"\mathrm{DV}(T)", dv(T[i])),
        tex(r"T^*_i", OPTIMAL_CRITIC),
        tex(r"\mathrm{DV}(T^*)", KL),
    ),
    derive=derive,
    spot_check=spot_check,
    spot_check_doc=(
        "50 random pairs of distributions on 2–8 points: mi_bounds.bounds.dv_bound (exact "
        "weights) at log(p/q) + c against toy_models.oracle.kl; DV(T + c) - DV(T); "
        "max(0, DV(T) - KL); and KL - DV(T) - KL(P||Q_T), for random critics T"
    ),
    source="Donsker & Varadhan 1983; Belghazi et al. 2018 (MINE), Thm. 1; Poole et al. 2019",
)
