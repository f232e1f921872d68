"""P9. RLHF's optimum makes the DV bound with critic r/beta tight.

With pi* the Gibbs policy of P1, the critic T = r/beta, P = pi* and Q = pi_ref:
DV(r/beta) = E_{pi*}[r/beta] - log Z = KL(pi* || pi_ref). Equivalently r/beta =
log(pi*/pi_ref) + log Z is DV's optimal critic (P3) with c = log Z. Corollaries: pi* = 0 wherever
pi_ref = 0, and lifting one response to pi*(y) = 1/2 against zero rewards elsewhere needs
r(y) = beta log((1 - rho_y)/rho_y), which grows like beta log(1/rho_y).
"""

from __future__ import annotations

import numpy as np
import sympy as sp
import torch
from scipy.special import logsumexp

from mi_bounds.bounds import dv_bound
from proofs._core import Proof, Step, equal, solves, tex
from toy_models.oracle import kl

i, n = sp.symbols("i n", integer=True, positive=True)
beta = sp.Symbol("beta", positive=True)
Z = sp.Symbol("Z", positive=True)
rho = sp.IndexedBase("rho", positive=True)
r = sp.IndexedBase("r", real=True)
r_y = sp.Symbol("r_y", real=True)
rho_y = sp.Symbol("rho_y", positive=True)

Z_SUM = sp.Sum(rho[i] * sp.exp(r[i] / beta), (i, 1, n))
GIBBS = rho[i] * sp.exp(r[i] / beta) / Z
#: DV(T = r/beta; P = pi*, Q = pi_ref)
DV_AT_REWARD = sp.Sum(GIBBS * r[i] / beta, (i, 1, n)) - sp.log(Z)
KL_OPT = sp.Sum(GIBBS * sp.log(GIBBS / rho[i]), (i, 1, n))


def derive() -> list[Step]:
    half = rho_y * sp.exp(r_y / beta) / (rho_y * sp.exp(r_y / beta) + 1 - rho_y)
    return [
        equal(
            r"$\log\mathbb{E}_{\pi_{\mathrm{ref}}}[e^{r/\beta}] = \log Z$, so "
            r"$\mathrm{DV}(r/\beta;\ \pi^*, \pi_{\mathrm{ref}}) = "
            r"\mathbb{E}_{\pi^*}[r/\beta] - \log Z$",
            sp.Sum(GIBBS * r[i] / beta, (i, 1, n)) - sp.log(Z_SUM), DV_AT_REWARD,
            definitions={Z: Z_SUM}),
        equal(
            r"The DV bound with critic $r/\beta$ is tight at the RLHF optimum: "
            r"$\mathrm{DV}(r/\beta) = \mathrm{KL}(\pi^*\|\pi_{\mathrm{ref}})$",
            DV_AT_REWARD, KL_OPT, definitions={Z: Z_SUM}),
        equal(
            r"Equivalently $r/\beta$ is DV's optimal critic (P3), "
            r"$\log(\pi^*/\pi_{\mathrm{ref}}) + c$ with $c = \log Z$",
            r[i] / beta, sp.log(GIBBS / rho[i]) + sp.log(Z)),
        solves(
            r"Corollary: one response $y$ against rewards 0 elsewhere reaches "
            r"$\pi^*(y) = \frac12$ only at $r(y) = \beta\log\frac{1 - \rho_y}{\rho_y}$, a gap "
            r"that grows like $\beta\log(1/\rho_y)$ as $\rho_y \to 0$ (and $\pi^*(y) = 0$ "
            r"whenever $\rho_y = 0$, whatever $r$)",
            half - sp.Rational(1, 2), r_y, beta * sp.log((1 - rho_y) / rho_y)),
    ]


def spot_check(rng: np.random.Generator) -> float:
    """dv_bound(r/beta; pi*, pi_ref) = oracle KL(pi* || pi_ref); the pi*(y) = 1/2 threshold."""
    worst = 0.0
    for _ in range(50):
        m = int(rng.integers(2, 9))
        ref = rng.dirichlet(np.ones(m)) + 1e-3
        ref /= ref.sum()
        reward = rng.normal(0, 3, m)
        b = float(np.exp(rng.normal(0, 1)))
        opt = np.exp(np.log(ref) + reward / b - logsumexp(np.log(ref) + reward / b))
        crit = torch.tensor(reward / b)
        val = float(dv_bound(crit, crit, pos_weight=torch.tensor(opt),
                             neg_weight=torch.tensor(ref)))
        worst = max(worst, abs(val - float(kl(opt, ref))))
        # threshold: response 0 gets r = beta log((1 - rho_0)/rho_0), the others 0
        thr = np.zeros(m)
        thr[0] = b * np.log((1 - ref[0]) / ref[0])
        pi0 = np.exp(np.log(ref[0]) + thr[0] / b - logsumexp(np.log(ref) + thr / b))
        worst = max(worst, abs(pi0 - 0.5))
    return worst


PROOF = Proof(
    key="p09",
    title="RLHF's optimum makes the DV bound with critic r/β tight",
    statement=(
        r"At the RLHF optimum $\pi^* \propto \pi_{\mathrm{ref}} e^{r/\beta}$, the Donsker–Varadhan "
        r"bound with $P = \pi^*$, $Q = \pi_{\mathrm{ref}}$ and critic $T = r/\beta$ equals "
        r"$\mathrm{KL}(\pi^*\|\pi_{\mathrm{ref}})$: RLHF is the point where the DV bound with "
        r"critic $r/\beta$ is tight. A response the base model never samples stays at "
        r"probability 0, and raising a rare one to $\frac12$ needs a reward gap "
        r"$\beta\log\frac{1-\rho_y}{\rho_y}$."
    ),
    latex=(
        tex(r"\mathrm{DV}(r/\beta;\ \pi^*, \pi_{\mathrm{ref}})", DV_AT_REWARD),
        tex(r"\mathrm{KL}(\pi^*\|\pi_{\mathrm{ref}})", KL_OPT),
    ),
    derive=derive,
    spot_check=spot_check,
    spot_check_doc=(
        "50 random worlds (2–8 responses): mi_bounds.bounds.dv_bound with critic r/beta and "
        "weights (pi*, pi_ref) against toy_models.oracle.kl(pi*, pi_ref); and pi*(y) at the "
        "threshold reward against 1/2"
    ),
    source="Rafailov et al. 2023, Eq. 4; DV reading: docs/THEORY.md §2",
)
