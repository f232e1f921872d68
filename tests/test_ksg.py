"""KSG estimator 1 (Kraskov, Stögbauer & Grassberger 2004): against a brute-force O(N²)
implementation, against the exact MI of Gaussians, and its invariances and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import digamma

from mi_bounds.estimation.ksg import ksg_mi, ksg_pointwise


def _ksg_brute_force(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Eq. (8) of Kraskov et al. (2004) with every pairwise max-norm distance written out."""
    n = x.shape[0]
    dx = np.abs(x[:, None, :] - x[None, :, :]).max(-1)
    dy = np.abs(y[:, None, :] - y[None, :, :]).max(-1)
    dz = np.maximum(dx, dy)
    total = 0.0
    for i in range(n):
        others = np.delete(np.arange(n), i)
        eps = np.sort(dz[i, others])[k - 1]
        n_x = int(np.sum(dx[i, others] < eps))
        n_y = int(np.sum(dy[i, others] < eps))
        total += digamma(n_x + 1) + digamma(n_y + 1)
    return float(digamma(k) + digamma(n) - total / n)


@settings(max_examples=25, deadline=None)
@given(st.integers(8, 60), st.integers(1, 3), st.integers(1, 3), st.integers(1, 5),
       st.integers(0, 10_000))
def test_ksg_matches_brute_force(n: int, dx: int, dy: int, k: int, seed: int) -> None:
    """cKDTree counts (strict radius by nextafter) = the O(N²) definition, to round-off."""
    k = min(k, n - 1)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dx))
    y = x[:, :1] * rng.uniform(-2, 2) + rng.standard_t(3, size=(n, dy))
    got = ksg_mi(x, y, k=k, standardize=False).estimate
    assert got == pytest.approx(_ksg_brute_force(x, y, k), abs=1e-12)


@pytest.mark.parametrize(("dim", "rho", "n"), [(1, 0.9, 3000), (2, 0.6, 3000), (3, 0.0, 2000)])
def test_ksg_recovers_gaussian_mi(dim: int, rho: float, n: int) -> None:
    """Gaussian pairs with exact I = -(d/2) log(1 - ρ²): 0.830, 0.446 and 0 nats. KSG is
    nearly unbiased in low dimension; tolerance 0.05 nats (~3 of its standard errors)."""
    rng = np.random.default_rng(dim)
    x = rng.normal(size=(n, dim))
    y = rho * x + math.sqrt(1 - rho**2) * rng.normal(size=(n, dim))
    exact = -0.5 * dim * math.log1p(-(rho**2))
    est = ksg_mi(x, y)
    assert est.estimate == pytest.approx(exact, abs=0.05), est
    assert 0 < est.stderr < 0.05 and est.n == n and est.k == 3


def test_ksg_invariances() -> None:
    """Standardised KSG is unchanged by per-feature scaling by powers of two (exact in
    floating point) and by reordering the rows; the per-point terms average to the estimate."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 2))
    y = x @ np.array([[1.0], [0.5]]) + rng.normal(size=(500, 1))
    base = ksg_mi(x, y).estimate
    assert ksg_mi(x * np.array([4.0, 0.125]), y * 1024.0).estimate == base
    perm = rng.permutation(500)
    assert ksg_mi(x[perm], y[perm]).estimate == pytest.approx(base, abs=1e-12)
    assert ksg_pointwise(x, y).mean() == pytest.approx(base, abs=1e-12)


def test_ksg_errors() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 2)), rng.normal(size=(20, 1))
    with pytest.raises(ValueError, match=r"k must be an int in \[1, N - 1\] = \[1, 19\]"):
        ksg_mi(x, y, k=20)
    with pytest.raises(ValueError, match="k must be"):
        ksg_mi(x, y, k=0)
    dup = np.repeat(x[:5], 4, axis=0)
    with pytest.raises(ValueError, match="repeated rows"):
        ksg_mi(dup, np.repeat(y[:5], 4, axis=0), k=2)
    with pytest.raises(ValueError, match="2-D"):
        ksg_mi(x[:, 0], y)
