"""P7. InfoNCE: every batch value is at most log K.

InfoNCE(S) = (1/K) sum_i (S_ii - log (1/K) sum_j e^{S_ij}) = log K + (1/K) sum_i log softmax(S_i)_i,
and each log-softmax entry is negative: with a = S_ii and R = sum_{j != i} e^{S_ij} > 0,
-log(e^a / (e^a + R)) = log(1 + R e^{-a}) > 0. So InfoNCE < log K for every finite score matrix.
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp
import torch
from scipy.special import logsumexp

from mi_bounds.bounds import infonce_bound
from proofs._core import Proof, Step, equal, sign

K = 3
S = sp.Matrix(K, K, lambda r, c: sp.Symbol(f"S_{r + 1}{c + 1}", real=True))
a = sp.Symbol("a", real=True)
R = sp.Symbol("R", positive=True)


def infonce(scores: sp.Matrix) -> sp.Expr:
    """(1/K) sum_i (S_ii - log (1/K) sum_j e^{S_ij})."""
    k = scores.shape[0]
    return sp.Rational(1, k) * sum(
        scores[r, r] - sp.log(sp.Rational(1, k) * sum(sp.exp(scores[r, c]) for c in range(k)))
        for r in range(k))


def log_softmax_diagonal(scores: sp.Matrix) -> sp.Expr:
    k = scores.shape[0]
    return sp.Rational(1, k) * sum(
        sp.log(sp.exp(scores[r, r]) / sum(sp.exp(scores[r, c]) for c in range(k)))
        for r in range(k))


def derive() -> list[Step]:
    return [
        equal(
            rf"InfoNCE is $\log K$ plus the mean diagonal log-softmax ($K = {K}$, symbolic scores)",
            infonce(S), sp.log(K) + log_softmax_diagonal(S)),
        equal(
            r"Each diagonal log-softmax term, with $a = S_{ii}$ and "
            r"$R = \sum_{j\ne i} e^{S_{ij}} > 0$: "
            r"$-\log\frac{e^a}{e^a + R} = \log(1 + R e^{-a})$",
            -sp.log(sp.exp(a) / (sp.exp(a) + R)), sp.log(1 + R * sp.exp(-a))),
        sign(
            r"$\log(1 + R e^{-a}) > 0$ since $R e^{-a} > 0$: every term is negative, so "
            r"$\mathrm{InfoNCE} < \log K$ for every batch (for any $K \ge 2$: the argument is "
            r"row by row)",
            sp.log(1 + R * sp.exp(-a)), "positive"),
    ]


def spot_check(rng: np.random.Generator) -> float:
    """infonce_bound equals an independent scipy formula and never exceeds log K."""
    worst = 0.0
    for _ in range(100):
        k = int(rng.integers(2, 17))
        scale = float(rng.choice([0.1, 1.0, 10.0, 50.0]))
        scores = rng.normal(0, scale, (k, k)) + np.diag(rng.normal(0, 3 * scale, k))
        val = float(infonce_bound(torch.tensor(scores)))
        ref = float(np.mean(np.diag(scores) - logsumexp(scores, axis=1)) + math.log(k))
        worst = max(worst, abs(val - ref), max(0.0, val - math.log(k)))
    return worst


PROOF = Proof(
    key="p07",
    title="InfoNCE: each batch value is at most log K",
    statement=(
        r"For every $K \times K$ score matrix $S$ (positives on the diagonal), "
        r"$\frac1K\sum_i \big(S_{ii} - \log\frac1K\sum_j e^{S_{ij}}\big) < \log K$: "
        r"InfoNCE saturates at $\log K$ however large the mutual information."
    ),
    latex=(
        r"I_{\mathrm{NCE}}(S) - \log K = \frac{1}{K}\sum_i \log\mathrm{softmax}(S_{i\cdot})_i",
        sp.latex(sp.Eq(-sp.log(sp.exp(a) / (sp.exp(a) + R)), sp.log(1 + R * sp.exp(-a))))
        + r" > 0",
    ),
    derive=derive,
    spot_check=spot_check,
    spot_check_doc=(
        "100 random score matrices (K = 2–16, scales 0.1–50, strong diagonals): "
        "mi_bounds.bounds.infonce_bound against a scipy logsumexp formula, and "
        "max(0, InfoNCE - log K)"
    ),
    source="van den Oord et al. 2018 (CPC); Poole et al. 2019, Sec. 2.3",
)
