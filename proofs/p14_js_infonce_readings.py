"""P14. JS and InfoNCE on the two readings: what each bounds, and when it is tight.

Readings as in P12/P13: P = D(x) pi(y|x) against Q = D(x) Q_x(y) with Q_x = pi_Y ("mi") or
Q_x = pi_ref(.|x) ("rlhf").

* JS(T) = E_P[log sigma(T)] + E_Q[log sigma(-T)] is a sum over cells, so its joint and per-prompt
  forms coincide, and cell by cell it falls short of its maximum by (p + q) KL_Bern(p/(p+q) ||
  sigma(T)): JS(T) <= 2 JSD(P, Q) - 2 log 2 (= E_x of the per-prompt JSDs), with equality iff
  T = log(P/Q) on every cell (no constant may be added). At pi*: r/beta is tight on the RLHF
  reading iff Z(x) = 1 for every x; beta log(pi*/pi_ref) iff beta = 1 or pi* = pi_ref; on the MI
  reading r/beta is tight iff pi_ref(.|x) = Z(x) pi*_Y, i.e. Z = 1 and pi_ref(.|x) = pi*_Y.
  JS bounds a JSD, not I(X;Y) or the KL.
* InfoNCE with a positive y_1 ~ P_x and K - 1 negatives ~ Q_x: with F = T(y_1) - log (1/K) sum_j
  e^{T(y_j)}, E_{Q_x^K}[e^F] = 1, so InfoNCE = DV(F; P_x Q_x^{K-1}, Q_x^K) <= KL(P_x || Q_x): a
  lower bound on I_pi(X;Y) (mi) or E_x KL(pi || pi_ref) (rlhf), and <= log K (P7). It is never
  tight unless P_x = Q_x (on the tuple y_1 = ... = y_K, F = 0). On the MI reading it is exactly
  the score-matrix InfoNCE of K iid joint pairs (spot check).
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp
import torch
from scipy.special import xlogy

from mi_bounds.bounds import infonce_bound
from proofs._core import Proof, Step, equal, sigmoid, sign, tex
from proofs.p13_dv_readings import SYMMETRIC

i, n = sp.symbols("i n", integer=True, positive=True)
p, q, d_x, beta, Z = sp.symbols("p q D_x beta Z", positive=True)
t = sp.Symbol("T", real=True)
rho = sp.IndexedBase(r"\pi_{\mathrm{ref}}", positive=True)
p_y = sp.IndexedBase(r"\pi^*_Y", positive=True)
pi = sp.IndexedBase(r"\pi", positive=True)
qq = sp.IndexedBase("Q", positive=True)
pp = sp.IndexedBase("p", positive=True)
qb = sp.IndexedBase("q", positive=True)
r = sp.IndexedBase("r", real=True)
ell = sp.IndexedBase(r"\ell", real=True)

GIBBS = rho[i] * sp.exp(r[i] / beta) / Z
Z_SUM = sp.Sum(rho[i] * sp.exp(r[i] / beta), (i, 1, n))


def js_cell(pw: sp.Expr, qw: sp.Expr, critic: sp.Expr) -> sp.Expr:
    """One cell of JS: p log sigma(T) + q log sigma(-T)."""
    return pw * sp.log(sigmoid(critic)) + qw * sp.log(sigmoid(-critic))


def bern_kl(a_: sp.Expr, s_: sp.Expr) -> sp.Expr:
    """KL(Bernoulli(a) || Bernoulli(s))."""
    return a_ * sp.log(a_ / s_) + (1 - a_) * sp.log((1 - a_) / (1 - s_))


def _infonce2_mi(world: dict, critic: list) -> sp.Expr:
    """Exact InfoNCE_2 on the MI reading: y_1 ~ pi*(.|x), y_2 ~ pi*_Y."""
    d, opt, py = world["d"], world["opt"], world["py"]
    return sum(d[j] * opt[j][a] * py[b] * (critic[j][a] - sp.log(
        (sp.exp(critic[j][a]) + sp.exp(critic[j][b])) / 2))
        for j in range(len(d)) for a in range(len(py)) for b in range(len(py)))


def derive() -> list[Step]:
    t_star = sp.log(p / q)
    q1, q2, q3 = sp.symbols("q_1:4", positive=True)
    t1, t2, t3 = sp.symbols("T_1:4", real=True)
    qs, ts = (q1, q2, q3), (t1, t2, t3)
    e_f = sum(qs[a] * qs[b] * sp.exp(ts[a]) / ((sp.exp(ts[a]) + sp.exp(ts[b])) / 2)
              for a in range(3) for b in range(3))
    j = sp.Symbol("j", integer=True, positive=True)
    sym = SYMMETRIC
    reward_sym = [[sp.log(w) for w in row] for row in sym["w"]]
    nce = _infonce2_mi(sym, reward_sym)
    return [
        equal(r"JS cell by cell: $p\log\sigma(T) + q\log\sigma(-T) = "
              r"[\text{same at } T^* = \log\frac pq] - (p + q)\,\mathrm{KL}_{\mathrm{Bern}}"
              r"\big(\frac{p}{p+q}\,\|\,\sigma(T)\big)$: JS is at most $2\,\mathrm{JSD} - 2\log 2$ "
              r"(P6), with equality iff $T = \log(P/Q)$ on every cell, no constant added",
              js_cell(p, q, t), js_cell(p, q, t_star) - (p + q) * bern_kl(p / (p + q), sigmoid(t))),
        equal(r"Joint and per-prompt JS coincide: each prompt's cells carry the factor $D_x$ "
              r"($\ell_1 = \log\sigma(T)$, $\ell_2 = \log\sigma(-T)$)",
              sp.Sum(d_x * pi[i] * ell[1, i] + d_x * qq[i] * ell[2, i], (i, 1, n)),
              d_x * sp.Sum(pi[i] * ell[1, i] + qq[i] * ell[2, i], (i, 1, n))),
        equal(r"... and so do the JSDs: $\mathrm{JSD}(D\pi, DQ) = \mathbb{E}_x\mathrm{JSD}"
              r"(\pi(\cdot|x), Q_x)$ ($D_x$ cancels inside each log)",
              d_x * p * sp.log(d_x * p / (d_x * (p + q) / 2))
              + d_x * q * sp.log(d_x * q / (d_x * (p + q) / 2)),
              d_x * (p * sp.log(p / ((p + q) / 2)) + q * sp.log(q / ((p + q) / 2)))),
        equal(r"RLHF reading at $\pi^*$: $r/\beta - \log(\pi^*/\pi_{\mathrm{ref}}) = \log Z(x)$, "
              r"so JS at $r/\beta$ is tight iff $Z(x) = 1$ for every prompt (DV is tight for "
              r"every $Z$: it is shift-invariant, JS is not)",
              r[i] / beta - sp.log(GIBBS / rho[i]), sp.log(Z)),
        equal(r"... and at the implicit critic: $\beta\log\frac{\pi}{\pi_{\mathrm{ref}}} - "
              r"\log\frac{\pi}{\pi_{\mathrm{ref}}} = "
              r"(\beta - 1)\log\frac{\pi}{\pi_{\mathrm{ref}}}$, "
              r"tight iff $\beta = 1$ or $\pi = \pi_{\mathrm{ref}}$",
              beta * sp.log(GIBBS / rho[i]) - sp.log(GIBBS / rho[i]),
              (beta - 1) * (r[i] / beta - sp.log(Z))),
        equal(r"MI reading at $\pi^*$: $r/\beta - \log(\pi^*/\pi^*_Y) = \log Z(x) + "
              r"\log(\pi^*_Y/\pi_{\mathrm{ref}})$, zero iff $\pi_{\mathrm{ref}}(\cdot|x) = "
              r"Z(x)\pi^*_Y$; summing over $y$, iff $Z(x) = 1$ and "
              r"$\pi_{\mathrm{ref}}(\cdot|x) = \pi^*_Y$",
              r[i] / beta - sp.log(GIBBS / p_y[i]), sp.log(Z) + sp.log(p_y[i] / rho[i])),
        equal(r"InfoNCE with $K - 1$ negatives from $Q_x$: $\mathbb{E}_{Q_x^K}[e^F] = 1$ for "
              r"$F = T(y_1) - \log\frac1K\sum_j e^{T(y_j)}$ (shown for $K = 2$, three responses, "
              r"$q_3 = 1 - q_1 - q_2$; in general by exchangeability of $y_1..y_K$)",
              e_f, sp.Integer(1), definitions={q3: 1 - q1 - q2}),
        equal(r"So InfoNCE $= \mathbb{E}_{P_x\otimes Q_x^{K-1}}[F] = \mathrm{DV}(F; P_x\otimes "
              r"Q_x^{K-1}, Q_x^K) \le \mathrm{KL}(P_x\otimes Q_x^{K-1}\|Q_x^K) = "
              r"\mathrm{KL}(P_x\|Q_x)$ (uses $\sum_j q_j = 1$): a lower bound on the reading's "
              r"KL, $I_\pi(X;Y)$ or $\mathbb{E}_x\mathrm{KL}(\pi\|\pi_{\mathrm{ref}})$",
              sp.Sum(pp[i] * qb[j] * sp.log(pp[i] * qb[j] / (qb[i] * qb[j])), (j, 1, n)),
              pp[i] * sp.log(pp[i] / qb[i]), given={sp.Sum(qb[j], (j, 1, n)): 1}),
        equal(r"Never tight unless $P_x = Q_x$: on the tuple $y_1 = y_2$ the DV critic $F$ is "
              r"0, while $\log\frac{dP_x\otimes Q_x}{dQ_x^2}(y, y) = \log\frac{p(y)}{q(y)}$ "
              r"would have to be constant",
              t - sp.log((sp.exp(t) + sp.exp(t)) / 2), sp.Integer(0)),
        sign(r"Example: in P13's exact world ($\pi_{\mathrm{ref}}(\cdot|x) = \pi^*_Y$, where DV "
             r"at $r/\beta$ equals $I_{\pi^*}$), InfoNCE$_2$ at $r/\beta$ on the MI reading is "
             rf"strictly below it: $I - \mathrm{{InfoNCE}}_2 = {float(sym['mi'] - nce):.4f}$",
             sym["mi"] - nce, "positive"),
    ]


def spot_check(rng: np.random.Generator) -> float:
    """JS and InfoNCE values of toy_models.mi_reading against independent computations."""
    from toy_models.mi_reading import bound_target, bound_value, critic_table, reading_distributions
    from toy_models.world import CategoricalWorld

    worst = 0.0
    for k in range(20):
        w = CategoricalWorld.random(int(rng.integers(2**31)), int(rng.integers(1, 4)),
                                    int(rng.integers(2, 5)), float(np.exp(rng.normal(0, 1))),
                                    reward_scale=2.0, zero_fraction=0.3 if k % 2 else 0.0)
        opt = w.optimal_policy()
        for reading in ("mi", "rlhf"):
            p_joint, q_joint = reading_distributions(w, opt, reading)
            with np.errstate(divide="ignore", invalid="ignore"):
                t_opt = np.where(p_joint > 0, np.log(p_joint) - np.log(q_joint), -np.inf)
            # JS at log(P/Q) = 2 JSD - 2 log 2 (oracle), in both forms
            target = bound_target(w, opt, "js", reading)
            for form in ("per_prompt", "joint"):
                worst = max(worst, abs(bound_value(w, opt, "js", reading, t_opt, form=form)
                                       - target))
            for critic in ("reward", "implicit"):
                tt = critic_table(w, opt, critic)
                per = bound_value(w, opt, "js", reading, critic)
                joint = bound_value(w, opt, "js", reading, critic, form="joint")
                # JS* - JS(T) = sum over cells (p + q) KL_Bern(p/(p+q) || sigma(T)), numpy
                m = p_joint + q_joint
                a = np.divide(p_joint, m, out=np.zeros_like(m), where=m > 0)
                log_s, log_1ms = -np.logaddexp(0.0, -tt), -np.logaddexp(0.0, tt)  # log σ(±T)
                with np.errstate(invalid="ignore"):
                    gap = np.sum(xlogy(p_joint, a) + xlogy(q_joint, 1 - a)
                                 - np.where(p_joint > 0, p_joint * log_s, 0.0)
                                 - np.where(q_joint > 0, q_joint * log_1ms, 0.0))
                worst = max(worst, abs(per - joint), abs(target - per - gap))
                nce = bound_value(w, opt, "infonce", reading, critic, K=2)
                kl_target = bound_target(w, opt, "infonce", reading)
                worst = max(worst, nce - min(kl_target, math.log(2)), 0.0)
        # MI reading: InfoNCE_2 = the score-matrix InfoNCE over 2 iid joint pairs (library)
        joint = w.joint(opt)
        cells = np.argwhere(joint > 0)
        tt = critic_table(w, opt, "reward")
        weights, mats = [], []
        for x1, y1 in cells:
            for x2, y2 in cells:
                weights.append(joint[x1, y1] * joint[x2, y2])
                mats.append([[tt[x1, y1], tt[x1, y2]], [tt[x2, y1], tt[x2, y2]]])
        enum = float(np.array(weights) @ infonce_bound(torch.tensor(mats)).double().numpy())
        worst = max(worst, abs(enum - bound_value(w, opt, "infonce", "mi", "reward", K=2)))
    return worst


PROOF = Proof(
    key="p14",
    title="JS and InfoNCE on the two readings: JS bounds a JSD; InfoNCE ≤ the KL, never tight",
    statement=(
        r"On either reading ($Q_x = \pi_Y$: MI; $Q_x = \pi_{\mathrm{ref}}(\cdot|x)$: RLHF KL), "
        r"the JS bound is the same in joint and per-prompt form and is at most "
        r"$2\,\mathrm{JSD}(D\pi, DQ) - 2\log 2 = "
        r"\mathbb{E}_x[2\,\mathrm{JSD}(\pi(\cdot|x), Q_x)] - 2\log 2$, with equality iff "
        r"$T = \log(\pi/Q_x)$ exactly: at $\pi^*$ the critic "
        r"$r/\beta$ is JS-tight on the RLHF reading only if $Z(x) = 1$, the implicit critic "
        r"only at $\beta = 1$ (or $\pi^* = \pi_{\mathrm{ref}}$), and $r/\beta$ on the MI reading "
        r"only if $Z = 1$ and $\pi_{\mathrm{ref}}(\cdot|x) = \pi^*_Y$. InfoNCE with negatives from "
        r"$Q_x$ equals $\mathrm{DV}(F; P_x\otimes Q_x^{K-1}, Q_x^K)$, so it is at most the "
        r"reading's KL ($I_\pi(X;Y)$ or $\mathbb{E}_x\mathrm{KL}(\pi\|\pi_{\mathrm{ref}})$) and "
        r"$\log K$, and equals the KL only when it is 0; on the MI reading it is the score-matrix "
        r"InfoNCE of $K$ iid joint pairs."
    ),
    latex=(
        tex(r"\mathrm{JS}(T^*) - \mathrm{JS}(T)",
            sp.Sum((pp[i] + qb[i]) * bern_kl(pp[i] / (pp[i] + qb[i]), sigmoid(ell[i])),
                   (i, 1, n))),
        r"\mathbb{E}_{Q_x^K}\Big[\frac{e^{T(y_1)}}{\frac1K\sum_j e^{T(y_j)}}\Big] = 1"
        r"\ \Rightarrow\ \mathrm{InfoNCE}_K(T) \le \mathrm{KL}(P_x\|Q_x)",
    ),
    derive=derive,
    spot_check=spot_check,
    spot_check_doc=(
        "20 random worlds (1–3 prompts, 2–4 responses, half with zeros in pi_ref, random beta), "
        "at pi*: toy_models.mi_reading.bound_value('js') (mi_bounds.bounds.js_bound) at log(P/Q) "
        "against 2·oracle JSD − 2 log 2 in both forms, per-prompt = joint at both critics, "
        "JS* − JS(T) against the sum of (p+q)·KL_Bern computed in numpy; InfoNCE_2 "
        "(infonce_bound_from_negatives) at most min(KL, log 2), and on the MI reading equal to "
        "mi_bounds.bounds.infonce_bound over every pair of joint samples, enumerated"
    ),
    source="This toolkit; JS: Nowozin et al. 2016, Hjelm et al. 2019; InfoNCE as "
           "DV on K-tuples: Poole et al. 2019, Sec. 2.3",
    tolerance=1e-12,
)
