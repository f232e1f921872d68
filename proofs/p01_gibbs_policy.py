"""P1. The Gibbs policy maximises KL-regularised reward, and J(pi*) = beta log Z.

For one prompt, a finite response set of size n, reference policy rho, reward r and beta > 0:
J(pi) = sum_i pi_i r_i - beta sum_i pi_i log(pi_i / rho_i) on the simplex. The derivation is for
a general n: the objective is a sum of one term per response, so the stationarity condition and
the Hessian are per coordinate, and the sums are sympy ``Sum`` objects over i = 1..n.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from scipy.special import logsumexp

from proofs._core import Proof, Step, equal, log_inequality, second_derivative_sign, solves, tex
from toy_models.oracle import kl

i, n = sp.symbols("i n", integer=True, positive=True)
beta = sp.Symbol("beta", positive=True)
lam = sp.Symbol("lambda", real=True)
Z = sp.Symbol("Z", positive=True)
rho = sp.IndexedBase("rho", positive=True)
r = sp.IndexedBase("r", real=True)
pi = sp.IndexedBase("pi", positive=True)
pi_i, rho_i, r_i = sp.Symbol("pi_i", positive=True), sp.Symbol("rho_i", positive=True), sp.Symbol(
    "r_i", real=True)

#: the partition function Z = sum_i rho_i exp(r_i / beta)
Z_SUM = sp.Sum(rho[i] * sp.exp(r[i] / beta), (i, 1, n))
#: the Gibbs policy, coordinate i
GIBBS = rho[i] * sp.exp(r[i] / beta) / Z
#: the optimal value
OPTIMAL_VALUE = beta * sp.log(Z)


def objective_term(p: sp.Expr, ref: sp.Expr, rew: sp.Expr) -> sp.Expr:
    """One response's contribution to J: pi r - beta pi log(pi / rho)."""
    return p * rew - beta * p * sp.log(p / ref)


def derive() -> list[Step]:
    steps: list[Step] = []
    # Lagrangian L = sum_i [pi_i r_i - beta pi_i log(pi_i/rho_i)] - lambda (sum_i pi_i - 1):
    # separable, so dL/dpi_i involves coordinate i only.
    lagrange_term = objective_term(pi_i, rho_i, r_i) - lam * pi_i
    stationary = sp.diff(lagrange_term, pi_i)
    steps.append(solves(
        r"Stationarity of the Lagrangian $L = J(\pi) - \lambda(\sum_i \pi_i - 1)$ in $\pi_i$ "
        r"has exactly one solution, proportional to $\rho_i e^{r_i/\beta}$",
        stationary, pi_i, rho_i * sp.exp((r_i - lam - beta) / beta)))
    # the multiplier from the constraint: sum_i rho_i e^{(r_i - lambda - beta)/beta} = 1
    normaliser = sp.Sum(rho[i] * sp.exp((r[i] - lam - beta) / beta), (i, 1, n))
    steps.append(equal(
        r"The constraint sum factorises: $\sum_i \rho_i e^{(r_i-\lambda-\beta)/\beta} = "
        r"e^{-(\lambda+\beta)/\beta} Z$",
        normaliser, sp.exp(-(lam + beta) / beta) * Z, definitions={Z: Z_SUM}))
    steps.append(solves(
        r"The constraint $\sum_i \pi_i = 1$ fixes the multiplier: $\lambda = \beta\log Z - \beta$",
        sp.exp(-(lam + beta) / beta) * Z - 1, lam, beta * sp.log(Z) - beta))
    steps.append(equal(
        r"Substituting $\lambda$ gives the Gibbs policy $\pi^*_i = \rho_i e^{r_i/\beta} / Z$",
        rho[i] * sp.exp((r[i] - (beta * sp.log(Z) - beta) - beta) / beta), GIBBS))
    steps.append(equal(
        r"$\pi^*$ is normalised: $\sum_i \pi^*_i = 1$",
        sp.Sum(GIBBS, (i, 1, n)), sp.Integer(1), definitions={Z: Z_SUM}))
    # concavity: the Hessian of J is diagonal with entries -beta/pi_i < 0
    steps.append(second_derivative_sign(
        r"Concavity: $\partial^2 J / \partial\pi_i^2 = -\beta/\pi_i < 0$",
        objective_term(pi_i, rho_i, r_i), pi_i, "negative"))
    j3 = sum(objective_term(pi[k], rho[k], r[k]) for k in (1, 2, 3))
    steps.append(equal(
        r"Mixed partials vanish ($n = 3$ shown): the Hessian is diagonal, hence negative "
        r"definite, and $J$ is strictly concave on the simplex",
        sp.diff(j3, pi[1], pi[2]), sp.Integer(0)))
    # the value: J(pi*) = beta log Z
    j_opt = sp.Sum(objective_term(GIBBS, rho[i], r[i]), (i, 1, n))
    steps.append(equal(
        r"The optimal value is $J(\pi^*) = \beta \log Z$",
        j_opt, OPTIMAL_VALUE, definitions={Z: Z_SUM}))
    # the gap: J(pi*) - J(pi) = beta KL(pi || pi*), term by term (sum_i pi_i = 1)
    gap_term = beta * sp.log(Z) * pi[i] - objective_term(pi[i], rho[i], r[i])
    steps.append(equal(
        r"Global optimality: $J(\pi^*) - J(\pi) = \beta\,\mathrm{KL}(\pi \| \pi^*)$ for every "
        r"$\pi$ on the simplex (shown term by term; sum with $\sum_i \pi_i = 1$)",
        gap_term, beta * pi[i] * sp.log(pi[i] / GIBBS)))
    steps.append(log_inequality(
        r"Gibbs' inequality, $\mathrm{KL}(\pi\|\pi^*) \ge 0$, so $\pi^*$ is the unique "
        r"maximiser: from $x - 1 - \log x \ge 0$ for $x > 0$ (at $x = \pi^*_i/\pi_i$)"))
    return steps


def spot_check(rng: np.random.Generator) -> float:
    """J(pi*) = beta log Z, and J(pi*) - J(pi) = beta KL(pi || pi*) >= 0, on random worlds."""
    worst = 0.0
    for _ in range(50):
        n_resp = int(rng.integers(2, 8))
        ref = rng.dirichlet(np.ones(n_resp)) + 1e-3
        ref /= ref.sum()
        reward = rng.normal(0, 2, n_resp)
        b = float(np.exp(rng.normal(0, 1)))
        log_z = logsumexp(np.log(ref) + reward / b)
        opt = np.exp(np.log(ref) + reward / b - log_z)

        def j(p: np.ndarray, ref: np.ndarray = ref, reward: np.ndarray = reward,
              b: float = b) -> float:
            return float(p @ reward - b * kl(p, ref))

        worst = max(worst, abs(j(opt) - b * log_z))
        other = rng.dirichlet(np.ones(n_resp))
        gap = j(opt) - j(other)
        worst = max(worst, abs(gap - b * kl(other, opt)), max(0.0, -gap))
    return worst


PROOF = Proof(
    key="p01",
    title="Gibbs optimal policy of KL-regularised reward maximisation",
    statement=(
        r"For $J(\pi) = \mathbb{E}_{y\sim\pi}[r(y)] - \beta\,\mathrm{KL}(\pi\|\pi_{\mathrm{ref}})$ "
        r"over distributions on $n$ responses, the unique maximiser is the Gibbs policy "
        r"$\pi^*(y) = \pi_{\mathrm{ref}}(y)\,e^{r(y)/\beta}/Z$ with "
        r"$Z = \sum_y \pi_{\mathrm{ref}}(y) e^{r(y)/\beta}$, and $J(\pi^*) = \beta \log Z$. "
        r"(Here $\rho = \pi_{\mathrm{ref}}$.)"
    ),
    latex=(
        tex(r"\pi^*_i", GIBBS.subs({rho[i]: rho_i, r[i]: r_i})),
        tex("Z", Z_SUM),
        tex(r"J(\pi^*)", OPTIMAL_VALUE),
    ),
    derive=derive,
    spot_check=spot_check,
    spot_check_doc=(
        "50 random worlds (2–7 responses, random reference, rewards and beta): "
        "|J(pi*) - beta log Z| and |J(pi*) - J(pi) - beta KL(pi||pi*)| for a random pi, with "
        "J computed from toy_models.oracle.kl"
    ),
    source="Peters & Schaal 2007; Rafailov et al. 2023 (DPO), Eq. 4 and Appendix A.1",
)
