"""P12. Which MI: E_x KL(pi || pi_ref) = I_pi(X;Y) + E_P[log pi_Y(y) - log pi_ref(y|x)].

A policy pi(y|x) and prompt weights D(x) define the joint P(x, y) = D(x) pi(y|x), whose response
marginal is pi_Y(y) = sum_x D(x) pi(y|x). Read against Q = D(x) pi_ref(y|x), KL(P || Q) is RLHF's
penalty E_x KL(pi || pi_ref); read against the product of its marginals D(x) pi_Y(y), it is the
policy's mutual information I_pi(X; Y). The two differ by the gap E_P[log pi_Y - log pi_ref]
= KL(pi_Y || pibar_ref) - E_P[log pi_ref(y|x) - log pibar_ref(y)], pibar_ref = sum_x D pi_ref.
If pi_ref(y|x) = rho(y) does not depend on x, the gap is KL(pi_Y || rho) >= 0 (so the RLHF KL is
an upper bound on I_pi, equal iff pi_Y = rho); otherwise it can have either sign (at pi = pi_ref
it is -I_{pi_ref}(X; Y)).

General sizes n = |X|, m = |Y| (sympy Sums); entries are positive symbols (a cell with pi = 0
contributes 0 log 0 = 0 to every term; a cell with pi > 0 = pi_ref makes both sides +inf).
The marginals pi_Y and pibar_ref appear as symbols; the one step that needs their definition
(the marginal lemma: sum_x D(x) pi(y|x) f(y) = pi_Y(y) f(y)) is checked on the defining sum.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
import torch

from mi_bounds.bounds import dv_bound
from proofs._core import Proof, Step, equal, log_inequality, random_distribution, sign, tex
from toy_models.oracle import kl
from toy_models.oracle import mutual_information as oracle_mi

x, y, u, i, n, m = sp.symbols("x y u i n m", integer=True, positive=True)
D = sp.IndexedBase("D", positive=True)
PI = sp.IndexedBase(r"\pi", positive=True)
REF = sp.IndexedBase(r"\pi_{\mathrm{ref}}", positive=True)
RHO = sp.IndexedBase(r"\rho", positive=True)
F = sp.IndexedBase("f", real=True)
PI_Y = sp.IndexedBase(r"\pi_Y", positive=True)
REF_Y = sp.IndexedBase(r"\bar\pi_{\mathrm{ref}}", positive=True)
a = sp.IndexedBase("a", positive=True)
b = sp.IndexedBase("b", positive=True)

def expect(f: sp.Expr, policy: sp.IndexedBase = PI) -> sp.Expr:
    """E_{x~D, y~policy(.|x)}[f] = sum_y sum_x D(x) policy(y|x) f(x, y)."""
    return sp.Sum(sp.Sum(D[x] * policy[x, y] * f, (x, 1, n)), (y, 1, m))


KL_REF = expect(sp.log(PI[x, y] / REF[x, y]))
MI = expect(sp.log(PI[x, y] / PI_Y[y]))
GAP = expect(sp.log(PI_Y[y]) - sp.log(REF[x, y]))
MARGINAL_KL = sp.Sum(PI_Y[y] * sp.log(PI_Y[y] / REF_Y[y]), (y, 1, m))
REF_PMI = expect(sp.log(REF[x, y]) - sp.log(REF_Y[y]))


def exact_world(d: list, ref: list, weights: list, beta: int = 1) -> dict:
    """A concrete world in exact arithmetic: reward r = beta log w, so pi* = pi_ref w / Z is
    rational. Returns the tables (``d``, ``ref``, ``w``, ``opt`` = pi*, ``py`` = pi*_Y) and
    E_x KL(pi* || pi_ref) (``kl``), I_{pi*}(X;Y) (``mi``) and the gap, as sympy numbers."""
    nx, ny = len(d), len(ref[0])
    opt = [[ref[j][k] * weights[j][k] / sum(ref[j][t] * weights[j][t] for t in range(ny))
            for k in range(ny)] for j in range(nx)]
    py = [sum(d[j] * opt[j][k] for j in range(nx)) for k in range(ny)]
    cells = [(j, k) for j in range(nx) for k in range(ny)]
    return {
        "d": d, "ref": ref, "w": weights, "opt": opt, "py": py, "beta": beta,
        "kl": sum(d[j] * opt[j][k] * sp.log(opt[j][k] / ref[j][k]) for j, k in cells),
        "mi": sum(d[j] * opt[j][k] * sp.log(opt[j][k] / py[k]) for j, k in cells),
        "gap": sum(d[j] * opt[j][k] * (sp.log(py[k]) - sp.log(ref[j][k])) for j, k in cells),
    }


half = sp.Rational(1, 2)
#: pi_ref depends on x: pi* (beta = 1, r = log w) has E_x KL < I, gap < 0
EXAMPLE_NEGATIVE = exact_world([half, half],
                            [[sp.Rational(9, 10), sp.Rational(1, 10)],
                             [sp.Rational(1, 10), sp.Rational(9, 10)]],
                                [[1, 2], [1, 1]])
#: pi_ref = rho = (1/2, 1/2) for both prompts: gap = KL(pi*_Y || rho) > 0
EXAMPLE_POSITIVE = exact_world([half, half], [[half, half], [half, half]], [[3, 1], [1, 1]])


def derive() -> list[Step]:
    ex_n, ex_p = EXAMPLE_NEGATIVE, EXAMPLE_POSITIVE
    d_x = sp.Symbol("D_x", positive=True)
    row = sp.IndexedBase(r"\pi_x", positive=True)
    ratio = b[i] / a[i]
    return [
        equal(r"The joint $P(x, y) = D(x)\pi(y|x)$ has prompt marginal $D$: "
              r"$\sum_y D_x\pi_x(y) = D_x$ with $\pi_x = \pi(\cdot|x)$ "
              r"(uses $\sum_y \pi_x(y) = 1$)",
              sp.Sum(d_x * row[y], (y, 1, m)), d_x, given={sp.Sum(row[y], (y, 1, m)): 1}),
        equal(r"RLHF reading: $\mathrm{KL}\big(D\pi \,\|\, D\pi_{\mathrm{ref}}\big) = "
              r"\mathbb{E}_x\mathrm{KL}(\pi(\cdot|x)\|\pi_{\mathrm{ref}}(\cdot|x))$ "
              r"($D$ cancels in every cell)",
              expect(sp.log(D[x] * PI[x, y]) - sp.log(D[x] * REF[x, y])), KL_REF),
        equal(r"MI reading: against the product of its marginals $D(x)\pi_Y(y)$, "
              r"$\mathrm{KL}(P\|D\otimes\pi_Y) = \mathbb{E}_P\log\frac{\pi(y|x)}{\pi_Y(y)} = "
              r"I_\pi(X;Y)$",
              expect(sp.log(D[x] * PI[x, y]) - sp.log(D[x] * PI_Y[y])), MI),
        equal(r"Cell by cell, $\log\frac{\pi}{\pi_{\mathrm{ref}}} = \log\frac{\pi}{\pi_Y} + "
              r"(\log\pi_Y - \log\pi_{\mathrm{ref}})$; weighted by $P$ and summed: "
              r"$\mathbb{E}_x\mathrm{KL}(\pi\|\pi_{\mathrm{ref}}) = I_\pi(X;Y) + "
              r"\mathbb{E}_P[\log\pi_Y(y) - \log\pi_{\mathrm{ref}}(y|x)]$",
              KL_REF, MI + GAP),
        equal(r"Marginal lemma: for any $f(y)$, $\sum_x D(x)\pi(y|x) f(y) = \pi_Y(y) f(y)$, "
              r"so $\mathbb{E}_P[f(y)] = \sum_y \pi_Y(y) f(y)$",
              sp.Sum(D[x] * PI[x, y] * F[y], (x, 1, n)),
              F[y] * sp.Sum(D[x] * PI[x, y], (x, 1, n)),
              display=sp.latex(sp.Eq(sp.Sum(D[x] * PI[x, y] * F[y], (x, 1, n)),
                                     PI_Y[y] * F[y]))),
        equal(r"The gap in general: add and subtract $\log\bar\pi_{\mathrm{ref}}(y)$, then the "
              r"marginal lemma with $f = \log(\pi_Y/\bar\pi_{\mathrm{ref}})$: "
              r"$\mathbb{E}_P[\log\pi_Y - \log\pi_{\mathrm{ref}}] = "
              r"\mathrm{KL}(\pi_Y\|\bar\pi_{\mathrm{ref}}) - \mathbb{E}_P\big[\log"
              r"\frac{\pi_{\mathrm{ref}}(y|x)}{\bar\pi_{\mathrm{ref}}(y)}\big]$, the marginals' "
              r"KL minus the reference's pointwise MI averaged under the policy",
              GAP, expect(sp.log(PI_Y[y] / REF_Y[y])) - REF_PMI,
              display=sp.latex(sp.Eq(GAP, MARGINAL_KL - REF_PMI))),
        equal(r"If $\pi_{\mathrm{ref}}(y|x) = \rho(y)$ does not depend on $x$, then "
              r"$\bar\pi_{\mathrm{ref}} = \rho$ (uses $\sum_x D(x) = 1$), the pointwise-MI term "
              r"is $\mathbb{E}_P[\log\rho - \log\rho] = 0$ and the gap is "
              r"$\mathrm{KL}(\pi_Y\|\rho)$",
              sp.Sum(D[u] * RHO[y], (u, 1, n)), RHO[y], given={sp.Sum(D[u], (u, 1, n)): 1}),
        equal(r"Gibbs' inequality, step 1: for distributions $a, b$, "
              r"$\mathrm{KL}(a\|b) = \sum_i a_i (u_i - 1 - \log u_i)$ with $u_i = b_i/a_i$ "
              r"(uses $\sum_i a_i = \sum_i b_i = 1$)",
              sp.Sum(a[i] * (ratio - 1 - sp.log(ratio)), (i, 1, m)),
              sp.Sum(a[i] * sp.log(a[i] / b[i]), (i, 1, m)),
              given={sp.Sum(a[i], (i, 1, m)): 1, sp.Sum(b[i], (i, 1, m)): 1}),
        log_inequality(r"Step 2: $u - 1 - \log u \ge 0$, so $\mathrm{KL}(\pi_Y\|\rho) \ge 0$: "
                       r"with an $x$-independent reference "
                       r"$\mathbb{E}_x\mathrm{KL}(\pi\|\rho) \ge I_\pi(X;Y)$, with equality iff "
                       r"$\pi_Y = \rho$"),
        equal(r"Otherwise either sign: at $\pi = \pi_{\mathrm{ref}}$ (so "
              r"$\pi_Y = \bar\pi_{\mathrm{ref}}$) the gap is $-I_{\pi_{\mathrm{ref}}}(X;Y) \le 0$, "
              r"negative whenever $\pi_{\mathrm{ref}}$ depends on $x$",
              expect(sp.log(REF_Y[y]) - sp.log(REF[x, y]), REF),
              -expect(sp.log(REF[x, y] / REF_Y[y]), REF)),
        equal(r"Example, $\pi_{\mathrm{ref}}$ depending on $x$: $D = (\frac12, \frac12)$, "
              r"$\pi_{\mathrm{ref}}(\cdot|x_1) = (\frac{9}{10}, \frac{1}{10})$, "
              r"$\pi_{\mathrm{ref}}(\cdot|x_2) = (\frac{1}{10}, \frac{9}{10})$, $\beta = 1$, "
              r"$r(x_1, \cdot) = (0, \log 2)$, $r(x_2, \cdot) = (0, 0)$, so "
              r"$\pi^*(\cdot|x_1) = (\frac{9}{11}, "
              r"\frac{2}{11})$, $\pi^*(\cdot|x_2) = \pi_{\mathrm{ref}}(\cdot|x_2)$: the "
              r"decomposition holds in exact arithmetic ...",
              ex_n["kl"], ex_n["mi"] + ex_n["gap"]),
        sign(r"... and the gap is negative: $\mathbb{E}_x\mathrm{KL}(\pi^*\|\pi_{\mathrm{ref}}) "
             rf"= {float(ex_n['kl']):.4f} < I_{{\pi^*}}(X;Y) = {float(ex_n['mi']):.4f}$ nats "
             rf"(gap ${float(ex_n['gap']):.4f}$)", ex_n["gap"], "negative"),
        sign(r"Example, $\pi_{\mathrm{ref}} = \rho = (\frac12, \frac12)$ for both prompts, "
             r"$r(x_1, \cdot) = (\log 3, 0)$, $r(x_2, \cdot) = (0, 0)$: "
             r"$\pi^*_Y = (\frac58, \frac38)$ and the gap "
             rf"$\mathrm{{KL}}(\pi^*_Y\|\rho) = {float(ex_p['gap']):.4f}$ nats is positive",
             ex_p["gap"], "positive"),
    ]


def _random_world(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """D, pi_ref (some zeros, sometimes the same row for every prompt) and a policy pi << pi_ref
    (pi* of a random reward, or a random policy with extra zeros)."""
    nx, ny = int(rng.integers(1, 5)), int(rng.integers(2, 7))
    d = random_distribution(rng, nx)
    ref = random_distribution(rng, ny, size=nx) * (rng.random((nx, ny)) > 0.3)
    ref[np.arange(nx), rng.integers(0, ny, nx)] += 0.1
    if rng.random() < 0.3:
        ref[:] = ref[0]
    ref /= ref.sum(1, keepdims=True)
    if rng.random() < 0.5:
        with np.errstate(divide="ignore"):
            logits = np.log(ref) + rng.normal(0, 3, ref.shape) / np.exp(rng.normal(0, 1))
        pi = np.exp(logits - logits.max(1, keepdims=True))
    else:
        pi = ref * (rng.random(ref.shape) > 0.3) * rng.random(ref.shape)
        pi[np.arange(nx), ref.argmax(1)] += 0.1
    return d, ref, pi / pi.sum(1, keepdims=True)


def spot_check(rng: np.random.Generator) -> float:
    """The decomposition's terms (toy_models.mi_reading) against the oracle and dv_bound."""
    from toy_models.mi_reading import decompose_tables

    worst = 0.0
    for _ in range(100):
        d, ref, pi = _random_world(rng)
        terms = decompose_tables(d, pi, ref)
        joint = d[:, None] * pi
        marg_y = joint.sum(0)
        mi_ = oracle_mi(joint)
        kl_ = float(d @ kl(pi, ref))
        # DV at its optimal critics on the two readings (-inf where P = 0: e^-1000 is 0 exactly)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_mi = np.where(joint > 0, np.log(pi) - np.log(marg_y)[None], -1000.0)
            t_rl = np.where(joint > 0, np.log(pi) - np.log(ref), -1000.0)
        prod = d[:, None] * marg_y[None]
        dv_mi = float(dv_bound(torch.tensor(t_mi.ravel()), torch.tensor(t_mi.ravel()),
                               pos_weight=torch.tensor(joint.ravel()),
                               neg_weight=torch.tensor(prod.ravel())))
        dv_rl = float(dv_bound(torch.tensor(t_rl.ravel()), torch.tensor(t_rl.ravel()),
                               pos_weight=torch.tensor(joint.ravel()),
                               neg_weight=torch.tensor((d[:, None] * ref).ravel())))
        errs = [terms["mutual_information"] - mi_, terms["kl_to_reference"] - kl_,
                dv_mi - mi_, dv_rl - kl_,
                terms["kl_to_reference"] - terms["mutual_information"] - terms["gap"],
                terms["gap"] - terms["marginal_kl"] + terms["reference_pmi"]]
        if np.all(ref == ref[0]):
            errs.append(terms["gap"] - float(kl(marg_y, ref[0])))
        worst = max(worst, *(abs(float(e)) for e in errs))
    return worst


PROOF = Proof(
    key="p12",
    title="Which MI: E_x KL(π‖π_ref) = I_π(X;Y) + E[log π_Y(y) − log π_ref(y|x)]",
    statement=(
        r"For prompt weights $D$ and any policy $\pi \ll \pi_{\mathrm{ref}}$, with "
        r"$\pi_Y(y) = \sum_x D(x)\pi(y|x)$ and $\bar\pi_{\mathrm{ref}}(y) = "
        r"\sum_x D(x)\pi_{\mathrm{ref}}(y|x)$: the RLHF penalty "
        r"$\mathbb{E}_x\mathrm{KL}(\pi\|\pi_{\mathrm{ref}}) = "
        r"\mathrm{KL}(D\pi\|D\pi_{\mathrm{ref}})$ "
        r"is the policy's mutual information $I_\pi(X;Y) = \mathrm{KL}(D\pi\|D\otimes\pi_Y)$ plus "
        r"the gap $\mathbb{E}_P[\log\pi_Y(y) - \log\pi_{\mathrm{ref}}(y|x)] = "
        r"\mathrm{KL}(\pi_Y\|\bar\pi_{\mathrm{ref}}) - \mathbb{E}_P[\log\pi_{\mathrm{ref}}(y|x) - "
        r"\log\bar\pi_{\mathrm{ref}}(y)]$. If $\pi_{\mathrm{ref}}(y|x) = \rho(y)$ does not depend "
        r"on $x$ the gap is $\mathrm{KL}(\pi_Y\|\rho) \ge 0$, so the KL is an upper bound on "
        r"$I_\pi(X;Y)$, equal to it iff $\pi_Y = \rho$; otherwise the gap can have either sign."
    ),
    latex=(
        tex(r"\mathbb{E}_x\mathrm{KL}(\pi\|\pi_{\mathrm{ref}})", MI + GAP),
        tex(r"\mathbb{E}_P[\log\pi_Y - \log\pi_{\mathrm{ref}}]", MARGINAL_KL - REF_PMI),
    ),
    derive=derive,
    spot_check=spot_check,
    spot_check_doc=(
        "100 random worlds (1–4 prompts, 2–6 responses, about 30 % zeros in pi_ref, a third "
        "with pi_ref the same for every prompt; pi = pi* of a random reward or a random policy "
        "with extra zeros): toy_models.mi_reading.decompose_tables against "
        "toy_models.oracle.mutual_information and oracle.kl, mi_bounds.bounds.dv_bound at the "
        "optimal critics of both readings against the same, and the residuals of "
        "KL = I + gap, gap = KL(pi_Y ‖ pibar_ref) − E_P[pmi_ref] and (x-independent pi_ref) "
        "gap = KL(pi_Y ‖ rho)"
    ),
    source="This toolkit; the x-independent case is the variational form of MI, "
           "I(X;Y) = min_ρ E_x KL(p(·|x) ‖ ρ) (Cover & Thomas, Elements of Information Theory, "
           "Lemma 10.8.1)",
    tolerance=1e-12,
)
