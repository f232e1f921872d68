"""P2. Bradley–Terry with the reparameterised reward: the partition function cancels (DPO).

Inverting the Gibbs policy of P1 gives r(y) = beta log(pi(y)/rho(y)) + beta log Z: the reward is
the implicit critic T(y) = beta log(pi(y)/rho(y)) plus a prompt-dependent constant. Bradley–Terry
only sees reward differences, so the constant (the intractable Z) cancels and the likelihood of a
preference is a function of the policy alone: the DPO loss.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
import torch

from proofs._core import Proof, Step, equal, sigmoid, softplus, solves, tex

beta = sp.Symbol("beta", positive=True)
Z = sp.Symbol("Z", positive=True)
r, r_w, r_l = sp.symbols("r r_w r_l", real=True)
pi_y, rho_y = sp.symbols("pi_y rho_y", positive=True)
pi_w, pi_l, rho_w, rho_l = sp.symbols("pi_w pi_l rho_w rho_l", positive=True)


def reward(policy: sp.Expr, reference: sp.Expr) -> sp.Expr:
    """The reward that makes ``policy`` the Gibbs policy: beta log(pi/rho) + beta log Z."""
    return beta * sp.log(policy / reference) + beta * sp.log(Z)


def bradley_terry(rw: sp.Expr, rl: sp.Expr) -> sp.Expr:
    """P(y_w > y_l) = e^{r_w} / (e^{r_w} + e^{r_l})."""
    return sp.exp(rw) / (sp.exp(rw) + sp.exp(rl))


#: the implicit-critic margin beta log(pi_w/rho_w) - beta log(pi_l/rho_l)
MARGIN = beta * sp.log(pi_w / rho_w) - beta * sp.log(pi_l / rho_l)
#: the DPO loss of one pair
DPO_LOSS = softplus(-MARGIN)


def derive() -> list[Step]:
    return [
        solves(
            r"Inverting the Gibbs policy $\pi = \rho\,e^{r/\beta}/Z$ (P1) for the reward gives "
            r"$r = \beta\log(\pi/\rho) + \beta\log Z$, uniquely",
            pi_y - rho_y * sp.exp(r / beta) / Z, r, reward(pi_y, rho_y)),
        equal(
            r"Bradley–Terry is a logistic model of the reward difference: "
            r"$e^{r_w}/(e^{r_w} + e^{r_l}) = \sigma(r_w - r_l)$",
            bradley_terry(r_w, r_l), sigmoid(r_w - r_l)),
        equal(
            r"With the reparameterised reward, $\log Z$ cancels from the reward difference",
            reward(pi_w, rho_w) - reward(pi_l, rho_l), MARGIN),
        equal(
            r"So the negative log-likelihood of the preference $y_w \succ y_l$ is the DPO loss "
            r"$\mathrm{softplus}(-(T_w - T_l))$, free of $Z$",
            -sp.log(bradley_terry(reward(pi_w, rho_w), reward(pi_l, rho_l))), DPO_LOSS),
    ]


def spot_check(rng: np.random.Generator) -> float:
    """mi_bounds.preference's dpo loss equals -log Bradley–Terry with the full reward (any Z)."""
    from mi_bounds.preference import preference_loss

    worst = 0.0
    for _ in range(4):  # beta is a scalar argument of the loss
        b = float(np.exp(rng.normal(-1, 1)))
        logp_w, logp_l, ref_w, ref_l = (torch.tensor(rng.normal(-20, 8, 500)) for _ in range(4))
        log_z = torch.tensor(rng.normal(0, 10, 500))  # an arbitrary per-prompt log-partition
        rw = b * (logp_w - ref_w) + b * log_z
        rl = b * (logp_l - ref_l) + b * log_z
        nll = -(rw - torch.logaddexp(rw, rl))  # -log e^{r_w} / (e^{r_w} + e^{r_l})
        loss = preference_loss("dpo", logp_w, logp_l, ref_w, ref_l, beta=b, reduction="none")
        worst = max(worst, float((loss - nll).abs().max()))
    return worst


PROOF = Proof(
    key="p02",
    title="Bradley–Terry with the reparameterised reward: the partition function cancels",
    statement=(
        r"If the policy is the Gibbs policy of a reward $r$, then "
        r"$r(y) = \beta\log\frac{\pi(y)}{\pi_{\mathrm{ref}}(y)} + \beta\log Z$, and the "
        r"Bradley–Terry probability $P(y_w \succ y_l) = \sigma(r_w - r_l)$ depends on the policy "
        r"only through the implicit rewards $T = \beta\log(\pi/\pi_{\mathrm{ref}})$: its negative "
        r"log-likelihood is the DPO loss $\mathrm{softplus}(-(T_w - T_l))$."
    ),
    latex=(
        tex("r", reward(pi_y, rho_y)),
        tex(r"-\log P(y_w \succ y_l)", DPO_LOSS),
    ),
    derive=derive,
    spot_check=spot_check,
    spot_check_doc=(
        "4 x 500 random pairs (log-probabilities, beta, an arbitrary log Z per prompt): "
        "mi_bounds.preference.preference_loss('dpo') against -log of the Bradley–Terry "
        "probability computed from the full reward, Z included"
    ),
    source="Bradley & Terry 1952; Rafailov et al. 2023 (DPO), Eqs. 5–7",
)
