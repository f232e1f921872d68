"""P11. MIO's population optimum for one prompt with two responses, compared with DPO's.

One prompt, responses y1 and y2, preference probability p = P(y1 > y2) (write pbar = 1 - p), so
the population loss of a pairwise loss L(T_w, T_l) is p L(T1, T2) + pbar L(T2, T1).

* Free implicit rewards (T1, T2 unconstrained): MIO's loss is strictly convex and separable with
  its minimum at T1 = log 2p, T2 = log 2pbar; DPO's depends on the margin only and is minimised on
  the whole line T1 - T2 = log(p/pbar). Both put the margin at logit p; MIO also fixes the level.
* A policy on the two responses, pi = sigma(u) on y1, reference (rho1, rho2), T = beta log(pi/rho):
  DPO's optimum is pi* = rho1 p^{1/beta} / (rho1 p^{1/beta} + rho2 pbar^{1/beta}) in closed form.
  MIO's free optimum is a policy only when rho1 (2p)^{1/beta} + rho2 (2pbar)^{1/beta} = 1, and then
  it coincides with DPO's (e.g. beta = 1, rho = (1/2, 1/2): pi* = p for both). Otherwise MIO's
  optimum solves the stationarity condition below; the table in docs/PROOFS.md gives it
  numerically next to DPO's.
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp
import torch
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit

from proofs._core import (
    Proof,
    Step,
    equal,
    second_derivative_sign,
    sigmoid,
    softplus,
    solves,
    tex,
)

p, pbar, beta, rho1, rho2 = sp.symbols("p pbar beta rho_1 rho_2", positive=True)
t1, t2, delta, u, c = sp.symbols("T_1 T_2 Delta u c", real=True)
COMPLEMENT = {pbar: 1 - p}


def mio(t_w: sp.Expr, t_l: sp.Expr) -> sp.Expr:
    return softplus(-t_w) + softplus(t_w) / 2 + softplus(t_l) / 2


def dpo(t_w: sp.Expr, t_l: sp.Expr) -> sp.Expr:
    return softplus(-(t_w - t_l))


def population(loss, a: sp.Expr, b: sp.Expr) -> sp.Expr:
    """p L(T1, T2) + pbar L(T2, T1): y1 is preferred with probability p."""
    return p * loss(a, b) + pbar * loss(b, a)


MIO_POP = population(mio, t1, t2)
DPO_POP = population(dpo, t1, t2)
#: implicit rewards of the two-response policy pi = (sigma(u), sigma(-u))
POLICY_T = {t1: beta * sp.log(sigmoid(u) / rho1), t2: beta * sp.log(sigmoid(-u) / rho2)}
DPO_POLICY_OPT = rho1 * p ** (1 / beta) / (rho1 * p ** (1 / beta) + rho2 * pbar ** (1 / beta))
MIO_FEASIBLE = rho1 * (2 * p) ** (1 / beta) + rho2 * (2 * pbar) ** (1 / beta)
#: dL_MIO/dT1 and dL_MIO/dT2 in closed form
MIO_GRAD_T1 = (p + sp.Rational(1, 2)) * sigmoid(t1) - p
MIO_GRAD_T2 = (pbar + sp.Rational(1, 2)) * sigmoid(t2) - pbar


def derive() -> list[Step]:
    shift = {t1: t1 + c, t2: t2 + c}
    hess_dpo = sp.hessian(DPO_POP, (t1, t2))
    # rho2 solved from the feasibility condition rho1 (2p)^{1/beta} + rho2 (2pbar)^{1/beta} = 1
    rho2_feasible = (1 - rho1 * (2 * p) ** (1 / beta)) / (2 * pbar) ** (1 / beta)
    return [
        # --- free implicit rewards ---
        equal(r"MIO, free rewards: $\partial L/\partial T_1 = (p + \frac12)\sigma(T_1) - p$ "
              r"(uses $p + \bar p = 1$)",
              sp.diff(MIO_POP, t1), MIO_GRAD_T1, given=COMPLEMENT),
        solves(r"... which vanishes only at $T_1 = \log 2p$", MIO_GRAD_T1, t1, sp.log(2 * p)),
        equal(r"and $\partial L/\partial T_2 = (\bar p + \frac12)\sigma(T_2) - \bar p$",
              sp.diff(MIO_POP, t2), MIO_GRAD_T2, given=COMPLEMENT),
        solves(r"and $\partial L/\partial T_2$ only at $T_2 = \log 2\bar p$ ($\bar p = 1 - p$)",
               sp.diff(MIO_POP, t2), t2, sp.log(2 * (1 - p)), given=COMPLEMENT),
        second_derivative_sign(r"MIO is strictly convex in $T_1$", MIO_POP, t1, "positive"),
        second_derivative_sign(r"and in $T_2$", MIO_POP, t2, "positive"),
        equal(r"and separable ($\partial^2 L/\partial T_1\partial T_2 = 0$): "
              r"$(\log 2p, \log 2\bar p)$ is its unique global minimum",
              sp.diff(MIO_POP, t1, t2), sp.Integer(0)),
        equal(r"MIO's optimal margin is $\log(p/\bar p)$",
              sp.log(2 * p) - sp.log(2 * pbar), sp.log(p / pbar)),
        equal(r"DPO, free rewards: the loss depends on the margin only, "
              r"$L(T_1 + c, T_2 + c) = L(T_1, T_2)$",
              DPO_POP.subs(shift, simultaneous=True), DPO_POP,
              display=r"p\,\mathrm{softplus}\big(-((T_1 + c) - (T_2 + c))\big) + \bar p\,"
                      r"\mathrm{softplus}\big(-((T_2 + c) - (T_1 + c))\big) = "
                      + sp.latex(DPO_POP)),
        equal(r"so its Hessian is singular (a whole line of minimisers)",
              hess_dpo.det(), sp.Integer(0)),
        solves(r"DPO's optimal margin $\Delta = T_1 - T_2$ is also $\log(p/\bar p)$",
               sp.diff(population(dpo, delta, 0), delta), delta, sp.log(p / pbar)),
        second_derivative_sign(r"(a minimum: convex in $\Delta$)",
                               population(dpo, delta, 0), delta, "positive"),
        # --- a policy on two responses ---
        equal(r"Policy $\pi = \sigma(u)$ on $y_1$: the margin is "
              r"$T_1 - T_2 = \beta(u - \log(\rho_1/\rho_2))$",
              (t1 - t2).subs(POLICY_T), beta * (u - sp.log(rho1 / rho2))),
        solves(r"DPO's optimal policy logit is $u^* = \log(\rho_1/\rho_2) + \log(p/\bar p)/\beta$",
               beta * (u - sp.log(rho1 / rho2)) - sp.log(p / pbar), u,
               sp.log(rho1 / rho2) + sp.log(p / pbar) / beta),
        equal(r"i.e. $\pi^*_{\mathrm{DPO}}(y_1) = \rho_1 p^{1/\beta} / "
              r"(\rho_1 p^{1/\beta} + \rho_2\bar p^{1/\beta})$",
              sigmoid(sp.log(rho1 / rho2) + sp.log(p / pbar) / beta), DPO_POLICY_OPT),
        equal(r"MIO on the policy: $dT_1/du = \beta\sigma(-u)$ ...",
              sp.diff(POLICY_T[t1], u), beta * sigmoid(-u)),
        equal(r"... and $dT_2/du = -\beta\sigma(u)$, so MIO's stationarity condition in the "
              r"policy logit is $\sigma(-u)\,\partial_{T_1}L = \sigma(u)\,\partial_{T_2}L$ "
              r"(the equation the table below solves)",
              sp.diff(POLICY_T[t2], u), -beta * sigmoid(u)),
        equal(r"MIO's free optimum is a policy iff "
              r"$\rho_1(2p)^{1/\beta} + \rho_2(2\bar p)^{1/\beta} = 1$, and then DPO's optimum is "
              r"the same policy, $\pi^*(y_1) = \rho_1 (2p)^{1/\beta}$",
              DPO_POLICY_OPT, rho1 * (2 * p) ** (1 / beta), definitions={rho2: rho2_feasible}),
        equal(r"Example: at $\beta = 1$ with $\rho = (\frac12, \frac12)$ the condition holds for "
              r"every $p$, so both optima are $\pi^*(y_1) = p$",
              MIO_FEASIBLE.subs({beta: 1, rho1: sp.Rational(1, 2), rho2: sp.Rational(1, 2)}),
              sp.Integer(1), given=COMPLEMENT),
        equal(r"Otherwise they differ: e.g. at $\beta = \frac12$, $\rho = (\frac12, \frac12)$ "
              r"the condition misses 1 by $(2p - 1)^2 > 0$ for every $p \ne \frac12$",
              MIO_FEASIBLE.subs({beta: sp.Rational(1, 2), rho1: sp.Rational(1, 2),
                                 rho2: sp.Rational(1, 2)}) - 1,
              (2 * p - 1) ** 2, given=COMPLEMENT),
    ]


# --------------------------------------------------------------------------------------------
# The numeric comparison (the table in docs/PROOFS.md) and the spot check.
# --------------------------------------------------------------------------------------------


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _mio_policy_loss(u_: np.ndarray, p_: float, beta_: float, rho1_: float) -> np.ndarray:
    """MIO's population loss of the policy sigma(u) on y1 (numpy, log domain)."""
    tt1 = beta_ * (-_softplus(-u_) - math.log(rho1_))  # beta log(sigma(u)/rho1)
    tt2 = beta_ * (-_softplus(u_) - math.log(1 - rho1_))

    def mio_np(w: np.ndarray, l_: np.ndarray) -> np.ndarray:
        return _softplus(-w) + 0.5 * _softplus(w) + 0.5 * _softplus(l_)

    return p_ * mio_np(tt1, tt2) + (1 - p_) * mio_np(tt2, tt1)


def global_argmin(f, lo: float = -80.0, hi: float = 80.0, points: int = 16001) -> tuple[float, int]:
    """Global minimiser of a scalar function on [lo, hi]: grid search, then a bounded refinement.

    Returns the minimiser and the number of local minima seen on the grid.
    """
    grid = np.linspace(lo, hi, points)
    vals = f(grid)
    k = int(np.argmin(vals))
    res = minimize_scalar(f, bounds=(grid[max(k - 1, 0)], grid[min(k + 1, points - 1)]),
                          method="bounded", options={"xatol": 1e-12})
    d = np.sign(np.diff(vals))
    local_minima = int(np.sum((d[:-1] < 0) & (d[1:] > 0)))
    return float(res.x), max(local_minima, 1)


def mio_policy_optimum(p_: float, beta_: float, rho1_: float) -> tuple[float, int]:
    """pi*_MIO(y1) (global minimiser over the policy logit) and the number of local minima."""
    u_opt, n_min = global_argmin(lambda x: _mio_policy_loss(x, p_, beta_, rho1_))
    return float(expit(u_opt)), n_min


def dpo_policy_optimum(p_: float, beta_: float, rho1_: float) -> float:
    return float(expit(logit(rho1_) + logit(p_) / beta_))


TABLE_RHO1 = (0.5, 0.1)
TABLE_BETA = (0.1, 0.5, 1.0, 2.0)
TABLE_P = (0.6, 0.75, 0.9, 0.99)


def notes() -> str:
    lines = [
        "Population optimum $\\pi^*(y_1)$ of the two-response policy, MIO / DPO "
        "(MIO: global minimiser over the policy logit by grid search on $[-80, 80]$ and a bounded "
        "refinement, with the loss written in numpy; DPO: the closed form above; a `*` marks a "
        "MIO loss with more than one local minimum on the grid):",
        "",
        "| $\\rho_1$ | $\\beta$ | " + " | ".join(f"$p = {v}$" for v in TABLE_P) + " |",
        "|---|---|" + "---|" * len(TABLE_P),
    ]
    gap_uniform = 0.0
    for r1 in TABLE_RHO1:
        for b in TABLE_BETA:
            cells = []
            for pv in TABLE_P:
                m, n_min = mio_policy_optimum(pv, b, r1)
                d = dpo_policy_optimum(pv, b, r1)
                if r1 == 0.5:
                    gap_uniform = max(gap_uniform, abs(m - d))
                cells.append(f"{m:.4f}{'*' if n_min > 1 else ''} / {d:.4f}")
            lines.append(f"| {r1} | {b} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Reading: with a uniform reference the two optima agree exactly at $\\beta = 1$ (proved "
        f"above) and differ by at most {gap_uniform:.3f} elsewhere in this grid. When the "
        "preferred response is rare under the reference ($\\rho_1 = 0.1$) they can differ "
        "widely, in either direction, and MIO's loss over the policy need not be unimodal. "
        "Heuristically, MIO anchors the chosen implicit reward near $\\log 2p$, i.e. "
        "$\\pi(y_1) \\approx \\rho_1 (2p)^{1/\\beta}$, which is small when $\\rho_1$ is.",
    ]
    return "\n".join(lines)


def spot_check(rng: np.random.Generator) -> float:
    """Population losses built from mi_bounds.preference: minimisers against the derivation."""
    from mi_bounds.preference import preference_loss

    def pop_loss(kind: str, uu: np.ndarray, p_: float, beta_: float, rho1_: float) -> np.ndarray:
        uu_t = torch.as_tensor(np.atleast_1d(uu), dtype=torch.float64)
        lp1, lp2 = torch.nn.functional.logsigmoid(uu_t), torch.nn.functional.logsigmoid(-uu_t)
        lr1 = torch.full_like(uu_t, math.log(rho1_))
        lr2 = torch.full_like(uu_t, math.log(1 - rho1_))
        first = preference_loss(kind, lp1, lp2, lr1, lr2, beta=beta_, reduction="none")
        second = preference_loss(kind, lp2, lp1, lr2, lr1, beta=beta_, reduction="none")
        out = (p_ * first + (1 - p_) * second).numpy()
        return out if np.ndim(uu) else out[0]

    worst = 0.0
    for _ in range(6):
        p_ = float(rng.uniform(0.55, 0.95))
        beta_ = float(rng.choice([0.5, 1.0, 2.0]))
        rho1_ = float(rng.uniform(0.2, 0.8))
        u_dpo, _ = global_argmin(lambda x, p_=p_, b=beta_, r=rho1_: pop_loss("dpo", x, p_, b, r))
        worst = max(worst, abs(float(expit(u_dpo)) - dpo_policy_optimum(p_, beta_, rho1_)))
        u_mio, _ = global_argmin(lambda x, p_=p_, b=beta_, r=rho1_: pop_loss("mio", x, p_, b, r))
        worst = max(worst, abs(float(expit(u_mio)) - mio_policy_optimum(p_, beta_, rho1_)[0]))
        # free rewards: the gradient of the MIO population loss vanishes at (log 2p, log 2pbar)
        tw = torch.tensor([math.log(2 * p_), math.log(2 * (1 - p_))], requires_grad=True)
        zero = torch.zeros(1, dtype=torch.float64)
        loss = (p_ * preference_loss("mio", tw[:1], tw[1:], zero, zero, beta=1.0, reduction="sum")
                + (1 - p_) * preference_loss("mio", tw[1:], tw[:1], zero, zero, beta=1.0,
                                             reduction="sum"))
        (grad,) = torch.autograd.grad(loss, tw)
        worst = max(worst, float(grad.abs().max()))
    return worst


PROOF = Proof(
    key="p11",
    title="MIO's population optimum for one prompt and two responses, against DPO's",
    statement=(
        r"One prompt, two responses, preference probability $p = P(y_1 \succ y_2)$, "
        r"$\bar p = 1 - p$. With free implicit rewards MIO's population loss has the unique "
        r"minimum $T_1 = \log 2p$, $T_2 = \log 2\bar p$, while DPO's is minimised on the whole "
        r"line $T_1 - T_2 = \log(p/\bar p)$: the same margin, but only MIO fixes the level. "
        r"For a policy on the two responses with reference $(\rho_1, \rho_2)$, DPO's optimum is "
        r"$\pi^*(y_1) = \rho_1 p^{1/\beta}/(\rho_1 p^{1/\beta} + \rho_2 \bar p^{1/\beta})$; "
        r"MIO's coincides with it exactly when $\rho_1 (2p)^{1/\beta} + \rho_2 (2\bar p)^{1/\beta} "
        r"= 1$ (e.g. $\beta = 1$, uniform reference) and otherwise is computed numerically below."
    ),
    latex=(
        tex(r"(T_1^*, T_2^*)_{\mathrm{MIO}}", sp.Tuple(sp.log(2 * p), sp.log(2 * pbar))),
        tex(r"\pi^*_{\mathrm{DPO}}(y_1)", DPO_POLICY_OPT),
        sp.latex(sp.Eq(MIO_FEASIBLE, 1)) + r"\ \Rightarrow\ "
        + tex(r"\pi^*_{\mathrm{MIO}}(y_1)", rho1 * (2 * p) ** (1 / beta)),
    ),
    derive=derive,
    spot_check=spot_check,
    spot_check_doc=(
        "6 random (p, beta, rho1): population losses built from "
        "mi_bounds.preference.preference_loss('dpo'/'mio') minimised over the policy logit "
        "(grid + bounded refinement), against DPO's closed form and against the numpy MIO "
        "minimiser of the table (difference in pi*(y1)); and the autograd gradient of the "
        "preference-module MIO population loss at the free optimum (log 2p, log 2pbar)"
    ),
    source="This toolkit (docs/THEORY.md §2); DPO's optimum: Rafailov et al. 2023, Eq. 4 with "
           "Bradley–Terry preferences",
    tolerance=1e-6,
    notes=notes,
)
