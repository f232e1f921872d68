"""P13. The DV bound on the two readings, at the critics r/beta and beta log(pi/pi_ref).

P = D(x) pi(y|x); the negatives are Q(y|x) = pi_Y(y) (reading "mi": KL(P || D Q) = I_pi(X;Y)) or
Q(y|x) = pi_ref(y|x) (reading "rlhf": KL = E_x KL(pi || pi_ref)); see P12. Per prompt,
DV(T; P_x, Q_x) = KL(P_x || Q_x) - KL(P_x || Q_{x,T}) with the tilt Q_{x,T} = Q_x e^T / Z_T(x),
Z_T(x) = E_{Q_x} e^T (the identity of P3, not re-derived here), so the per-prompt bound is
tight iff the tilt is P_x. The joint bound
DV(T; D pi, D Q) (MINE's form) is the per-prompt one minus the Jensen gap
log E_x Z_T(x) - E_x log Z_T(x) >= 0, which vanishes iff Z_T(x) does not depend on x.
At pi = pi* (Gibbs), the tilts are:

* rlhf, T = r/beta: pi* itself (tight per prompt, P9); Z_T = Z(x), so the joint form is tight iff
  Z(x) is the same for every prompt;
* rlhf, T = beta log(pi*/pi_ref) = r - beta log Z(x): the Gibbs policy at beta = 1,
  pi_ref e^r / Z_1; tight iff beta = 1 or r(x, .) is constant on the support of pi_ref(.|x);
* mi, T = r/beta: pi*(y|x) (pi*_Y(y)/pi_ref(y|x)), normalised; tight iff pi_ref(.|x) = pi*_Y for
  every x (then the gap of P12 is 0 and I_{pi*} = E_x KL(pi* || pi_ref));
* mi, T = r - beta log Z: pi*_Y e^r normalised; tight iff (1 - 1/beta) r = log(pi_ref/pi*_Y) + c(x).
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp
from scipy.special import logsumexp

from proofs._core import Proof, Step, equal, log_inequality, sign, tex
from proofs.p12_mi_decomposition import exact_world
from toy_models.oracle import kl

i, x, n = sp.symbols("i x n", integer=True, positive=True)
beta = sp.Symbol("beta", positive=True)
Z = sp.Symbol("Z", positive=True)
rho = sp.IndexedBase(r"\pi_{\mathrm{ref}}", positive=True)
p_y = sp.IndexedBase(r"\pi^*_Y", positive=True)
q = sp.IndexedBase("q", positive=True)
p = sp.IndexedBase("p", positive=True)
r = sp.IndexedBase("r", real=True)
T = sp.IndexedBase("T", real=True)
D = sp.IndexedBase("D", positive=True)
ZT = sp.IndexedBase("Z_T", positive=True)
A = sp.IndexedBase("A", real=True)

Z_SUM = sp.Sum(rho[i] * sp.exp(r[i] / beta), (i, 1, n))
GIBBS = rho[i] * sp.exp(r[i] / beta) / Z
IMPLICIT = r[i] - beta * sp.log(Z)


def tilt(weights: sp.Expr, critic: sp.Expr) -> sp.Expr:
    """Q_T = q e^T / sum_i q e^T (response index i)."""
    return weights * sp.exp(critic) / sp.Sum(weights * sp.exp(critic), (i, 1, n))


def _dv_per_prompt(world: dict, critic: list, reading: str) -> sp.Expr:
    """Exact per-prompt DV on a concrete world of :func:`exact_world`."""
    d, opt, py, ref = world["d"], world["opt"], world["py"], world["ref"]
    total = sp.Integer(0)
    for j in range(len(d)):
        neg = py if reading == "mi" else ref[j]
        total += d[j] * (sum(o * t for o, t in zip(opt[j], critic[j], strict=True))
                         - sp.log(sum(w * sp.exp(t) for w, t in zip(neg, critic[j], strict=True))))
    return total


def _dv_joint(world: dict, critic: list, reading: str) -> sp.Expr:
    d, opt, py, ref = world["d"], world["opt"], world["py"], world["ref"]
    pos = sum(d[j] * sum(o * t for o, t in zip(opt[j], critic[j], strict=True))
              for j in range(len(d)))
    neg = sum(d[j] * sum(w * sp.exp(t) for w, t in zip(py if reading == "mi" else ref[j],
                                                        critic[j], strict=True))
              for j in range(len(d)))
    return pos - sp.log(neg)


half = sp.Rational(1, 2)
#: pi_ref(.|x) = pi*_Y for every x: the MI reading at r/beta is tight (beta = 1, r = log w)
SYMMETRIC = exact_world([half, half], [[half, half], [half, half]], [[3, 1], [1, 3]])
#: P12's world whose pi_ref depends on x (gap < 0), at beta = 2 (r = 2 log w)
DEPENDENT = exact_world([half, half], [[sp.Rational(9, 10), sp.Rational(1, 10)],
                                       [sp.Rational(1, 10), sp.Rational(9, 10)]],
                        [[1, 2], [1, 1]], beta=2)


def derive() -> list[Step]:
    w1, w2, w3 = sp.symbols("w_1:4", positive=True)
    z1, z2, z3 = sp.symbols("Z_1:4", positive=True)
    d3 = [w / (w1 + w2 + w3) for w in (w1, w2, w3)]
    zs = (z1, z2, z3)
    z_bar = sum(dk * zk for dk, zk in zip(d3, zs, strict=True))
    jensen3 = sp.log(z_bar) - sum(dk * sp.log(zk) for dk, zk in zip(d3, zs, strict=True))
    joint = sp.Sum(D[x] * A[x], (x, 1, n)) - sp.log(sp.Sum(D[x] * ZT[x], (x, 1, n)))
    per_prompt = sp.Sum(D[x] * (A[x] - sp.log(ZT[x])), (x, 1, n))
    jensen = sp.log(sp.Sum(D[x] * ZT[x], (x, 1, n))) - sp.Sum(D[x] * sp.log(ZT[x]), (x, 1, n))
    sym, dep = SYMMETRIC, DEPENDENT
    reward_sym = [[sp.log(wv) for wv in row] for row in sym["w"]]  # r/beta at beta = 1
    reward_dep = [[sp.log(wv) for wv in row] for row in dep["w"]]  # r/beta = log w
    implicit_dep = [[2 * sp.log(o / rf) for o, rf in zip(orow, rrow, strict=True)]
                    for orow, rrow in zip(dep["opt"], dep["ref"], strict=True)]
    return [
        equal(r"Joint against per prompt: with $A_x = \mathbb{E}_{P_x}[T]$, "
              r"$\mathrm{DV}(T; D\pi, DQ) = \mathbb{E}_x\mathrm{DV}(T; P_x, Q_x) - "
              r"\big(\log\mathbb{E}_x Z_T(x) - \mathbb{E}_x\log Z_T(x)\big)$",
              joint, per_prompt - jensen),
        equal(r"The Jensen gap is $\mathbb{E}_x[u_x - 1 - \log u_x]$ with "
              r"$u_x = Z_T(x)/\mathbb{E}_x Z_T$ (3 prompts, $D_x = w_x/\sum w$), so by "
              r"$u - 1 - \log u \ge 0$ the joint DV is at most the per-prompt DV, equal iff "
              r"$Z_T(x)$ is the same for every prompt",
              sum(dk * (zk / z_bar - 1 - sp.log(zk / z_bar))
                  for dk, zk in zip(d3, zs, strict=True)),
              jensen3),
        log_inequality(r"($u - 1 - \log u \ge 0$, with equality only at $u = 1$)"),
        equal(r"RLHF reading, $T = r/\beta$: the tilt of $\pi_{\mathrm{ref}}$ is $\pi^*$ "
              r"($Z_T = Z(x)$): tight per prompt (P9); the joint form is tight iff $Z(x)$ does "
              r"not depend on $x$",
              tilt(rho[i], r[i] / beta), GIBBS, definitions={Z: Z_SUM}),
        equal(r"The implicit critic of $\pi^*$ is $\beta\log(\pi^*/\pi_{\mathrm{ref}}) = "
              r"r - \beta\log Z(x)$",
              beta * sp.log(GIBBS / rho[i]), IMPLICIT),
        equal(r"RLHF reading, $T = r - \beta\log Z$: the tilt of $\pi_{\mathrm{ref}}$ is the "
              r"Gibbs policy at $\beta = 1$, $\pi_{\mathrm{ref}}e^r/Z_1$, which is $\pi^*$ iff "
              r"$\beta = 1$ or $r(x,\cdot)$ is constant on the support of "
              r"$\pi_{\mathrm{ref}}(\cdot|x)$",
              tilt(rho[i], IMPLICIT),
              rho[i] * sp.exp(r[i]) / sp.Sum(rho[i] * sp.exp(r[i]), (i, 1, n))),
        equal(r"MI reading, $T = r/\beta$: the tilt of $\pi^*_Y$ is "
              r"$\pi^*(y|x)\frac{\pi^*_Y(y)}{\pi_{\mathrm{ref}}(y|x)}$ normalised, which is "
              r"$\pi^*(\cdot|x)$ iff $\pi_{\mathrm{ref}}(\cdot|x) = \pi^*_Y$ (both normalised); "
              r"then the gap of P12 is 0 and $I_{\pi^*} = \mathbb{E}_x\mathrm{KL}"
              r"(\pi^*\|\pi_{\mathrm{ref}})$",
              tilt(p_y[i], r[i] / beta),
              GIBBS * (p_y[i] / rho[i]) / sp.Sum(GIBBS * p_y[i] / rho[i], (i, 1, n)),
              definitions={Z: Z_SUM}),
        equal(r"MI reading, $T = r - \beta\log Z$: the tilt of $\pi^*_Y$ is "
              r"$\pi^*_Y e^{r}$ normalised ($Z$ cancels); comparing with "
              r"$\pi^* \propto \pi_{\mathrm{ref}}e^{r/\beta}$, it is $\pi^*$ iff "
              r"$(1 - \frac1\beta)\,r = \log\frac{\pi_{\mathrm{ref}}}{\pi^*_Y} + c(x)$",
              tilt(p_y[i], IMPLICIT),
              p_y[i] * sp.exp(r[i]) / sp.Sum(p_y[i] * sp.exp(r[i]), (i, 1, n))),
        equal(r"Example where the MI reading is exact: $D = \rho = (\frac12, \frac12)$, "
              r"$\beta = 1$, "
              r"$r(x_1, \cdot) = (\log 3, 0)$, $r(x_2, \cdot) = (0, \log 3)$: "
              r"$\pi^*_Y = \rho$ and the per-prompt DV at $r/\beta$ on the MI reading equals "
              r"$I_{\pi^*}(X;Y)$ ...",
              _dv_per_prompt(sym, reward_sym, "mi"), sym["mi"]),
        equal(r"... which equals $\mathbb{E}_x\mathrm{KL}(\pi^*\|\pi_{\mathrm{ref}})$",
              sym["mi"], sym["kl"]),
        sign(r"P12's $x$-dependent world with $\beta = 2$ and $r$ doubled (the same $\pi^*$): "
             r"on the MI reading "
             r"$I_{\pi^*} - \mathrm{DV}(r/\beta) > 0$ (not tight) ...",
             dep["mi"] - _dv_per_prompt(dep, reward_dep, "mi"), "positive"),
        sign(r"... on the RLHF reading the joint DV at $r/\beta$ is below "
             r"$\mathbb{E}_x\mathrm{KL}$ ($Z(x)$ differs across prompts) ...",
             dep["kl"] - _dv_joint(dep, reward_dep, "rlhf"), "positive"),
        sign(r"... and so is the per-prompt DV at the implicit critic "
             r"$\beta\log(\pi^*/\pi_{\mathrm{ref}})$ ($\beta \ne 1$)",
             dep["kl"] - _dv_per_prompt(dep, implicit_dep, "rlhf"), "positive"),
    ]


def spot_check(rng: np.random.Generator) -> float:
    """toy_models.mi_reading.bound_value('dv', ...) against the tilt identities (oracle KL)."""
    from toy_models.mi_reading import bound_value, critic_table, decompose
    from toy_models.world import CategoricalWorld

    worst = 0.0
    for k in range(30):
        w = CategoricalWorld.random(int(rng.integers(2**31)), int(rng.integers(1, 5)),
                                    int(rng.integers(2, 6)), float(np.exp(rng.normal(0, 1))),
                                    reward_scale=2.0, zero_fraction=0.3 if k % 2 else 0.0)
        opt, d = w.optimal_policy(), w.prompt_weights
        log_z = w.log_partition()
        marg = d @ opt
        for critic in ("reward", "implicit"):
            t = critic_table(w, opt, critic)
            for reading, neg in (("rlhf", w.pi_ref), ("mi", np.broadcast_to(marg, opt.shape))):
                with np.errstate(divide="ignore"):
                    logits = np.log(neg) + t  # the tilt Q_T = Q e^T / Z_T, in logs
                log_zt = logsumexp(logits, axis=1)
                tilted = np.exp(logits - log_zt[:, None])
                target = float(d @ (kl(opt, neg) - kl(opt, tilted)))
                per = bound_value(w, opt, "dv", reading, critic)
                joint = bound_value(w, opt, "dv", reading, critic, form="joint")
                jensen = float(logsumexp(log_zt, b=d) - d @ log_zt)
                worst = max(worst, abs(per - target), abs(joint - (per - jensen)))
        dec = decompose(w, opt)
        worst = max(worst, abs(bound_value(w, opt, "dv", "rlhf", "reward") - dec.kl_to_reference),
                    abs(bound_value(w, opt, "dv", "rlhf", "reward", form="joint")
                        - (dec.kl_to_reference - float(logsumexp(log_z, b=d) - d @ log_z))))
    # the exact world of the derivation: DV(r/beta) on the MI reading = I = E_x KL
    sym = CategoricalWorld([0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]],
                           [[math.log(3), 0.0], [0.0, math.log(3)]], 1.0)
    dec = decompose(sym, sym.optimal_policy())
    worst = max(worst, abs(bound_value(sym, sym.optimal_policy(), "dv", "mi", "reward")
                           - dec.mutual_information), abs(dec.gap))
    return worst


PROOF = Proof(
    key="p13",
    title="DV on the two readings: tight at r/β per prompt; on I(X;Y) only if π_ref(·|x) = π*_Y",
    statement=(
        r"For the joint $P = D\pi$ and negatives $Q_x = \pi_Y$ (MI reading, $\mathrm{KL} = "
        r"I_\pi(X;Y)$) or $Q_x = \pi_{\mathrm{ref}}(\cdot|x)$ (RLHF reading, $\mathrm{KL} = "
        r"\mathbb{E}_x\mathrm{KL}(\pi\|\pi_{\mathrm{ref}})$), the per-prompt DV bound "
        r"$\mathbb{E}_x\mathrm{DV}(T; P_x, Q_x)$ falls short of the KL by "
        r"$\mathbb{E}_x\mathrm{KL}(P_x\|Q_x e^T/Z_T(x))$, and the joint (MINE) form falls short "
        r"of the per-prompt form by the Jensen gap $\log\mathbb{E}_x Z_T - \mathbb{E}_x\log Z_T "
        r"\ge 0$. At the RLHF optimum: the critic $r/\beta$ makes the per-prompt DV on the RLHF "
        r"reading tight (the joint form only if $Z(x)$ is constant); the implicit critic "
        r"$\beta\log(\pi^*/\pi_{\mathrm{ref}}) = r - \beta\log Z$ does so only at $\beta = 1$ (or "
        r"for rewards constant in $y$); on the MI reading, $r/\beta$ is tight iff "
        r"$\pi_{\mathrm{ref}}(\cdot|x) = \pi^*_Y$ for every $x$, exactly when $I_{\pi^*}(X;Y) = "
        r"\mathbb{E}_x\mathrm{KL}(\pi^*\|\pi_{\mathrm{ref}})$ through a zero gap."
    ),
    latex=(
        r"\mathrm{DV}(T; D\pi, DQ) = \mathbb{E}_x\big[\mathrm{KL}(P_x\|Q_x) - "
        r"\mathrm{KL}(P_x\|Q_x e^{T}/Z_T(x))\big] - \big(\log\mathbb{E}_x Z_T(x) - "
        r"\mathbb{E}_x\log Z_T(x)\big)",
        tex(r"\mathrm{tilt}_{r/\beta}(\pi^*_Y)",
            GIBBS * (p_y[i] / rho[i]) / sp.Sum(GIBBS * p_y[i] / rho[i], (i, 1, n))),
    ),
    derive=derive,
    spot_check=spot_check,
    spot_check_doc=(
        "30 random worlds (1–4 prompts, 2–5 responses, half with 30 % zeros in pi_ref, random "
        "beta): toy_models.mi_reading.bound_value('dv') (mi_bounds.bounds.dv_bound) per prompt "
        "on both readings and at both critics against E_x[KL(P_x ‖ Q_x) − KL(P_x ‖ Q_x,T)] "
        "(oracle KL, tilts by logsumexp), the joint form against per-prompt minus the Jensen "
        "gap, C1's tightness on the RLHF reading, and the exact world above (DV on the MI "
        "reading = I, gap = 0)"
    ),
    source="This toolkit; the DV identity: Donsker & Varadhan 1983, Poole et al. "
           "2019 Sec. 2.2; MINE's joint form: Belghazi et al. 2018",
    tolerance=1e-12,
)
