"""The scipy oracle against definitions written out by hand and against textbook identities."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given

from toy_models import oracle
from toy_models.strategies import distribution_pairs, distributions, joint_tables


def _kl_error(p, q) -> float:
    """|oracle.kl(p, q) - Σ_{p>0} p (log p - log q)| written out by hand."""
    s = p > 0
    manual = float(np.sum(p[s] * (np.log(p[s]) - np.log(q[s]))))
    return abs(float(oracle.kl(p, q)) - manual)


@given(distribution_pairs())
def test_kl_matches_definition_and_is_nonnegative(pq):
    p, q = pq
    assert _kl_error(p, q) <= 1e-12
    assert oracle.kl(p, q) >= -1e-15  # Gibbs' inequality, up to round-off


def test_a_wrong_kl_is_caught(monkeypatch):
    """Mutation check: kl_log with 0·log 0 taken as the term at the smallest float instead of 0,
    or scaled by 1 + 1e-9, fails the definition check."""
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.2, 0.3, 0.5])
    assert _kl_error(p, q) <= 1e-12
    real = oracle.kl_log
    monkeypatch.setattr(oracle, "kl_log", lambda *a, **k: real(*a, **k) * (1 + 1e-9))
    assert _kl_error(p, q) > 1e-12


@given(distribution_pairs(absolutely_continuous=False))
def test_kl_is_inf_off_support(pq):
    assert oracle.kl(*pq) == math.inf


@given(distribution_pairs(absolutely_continuous=False))
def test_jsd_in_range_and_symmetric(pq):
    """0 ≤ JSD ≤ log 2 (nats), symmetric, finite even where KL is infinite."""
    p, q = pq
    j = oracle.jsd(p, q)
    assert -1e-15 <= j <= math.log(2) + 1e-12
    assert j == pytest.approx(oracle.jsd(q, p), abs=1e-15)


@given(distributions())
def test_entropy_bounds(p):
    """0 ≤ H(P) ≤ log n, and H = log n - KL(P ‖ uniform)."""
    n = len(p)
    h = oracle.entropy(p)
    assert -1e-15 <= h <= math.log(n) + 1e-12
    assert h == pytest.approx(math.log(n) - oracle.kl(p, np.full(n, 1 / n)), abs=1e-12)


@given(joint_tables())
def test_mutual_information_identity(joint):
    """I(X;Y) = H(X) + H(Y) - H(X,Y) ≥ 0, and 0 for a product table."""
    hx, hy = oracle.entropy(joint.sum(1)), oracle.entropy(joint.sum(0))
    hxy = oracle.entropy(joint.ravel())
    mi = oracle.mutual_information(joint)
    assert mi == pytest.approx(hx + hy - hxy, abs=1e-12)
    assert mi >= -1e-15
    product = np.outer(joint.sum(1), joint.sum(0))
    assert oracle.mutual_information(product) == pytest.approx(0.0, abs=1e-12)


def test_kl_log_exact_where_probabilities_underflow():
    """KL from log-probabilities: p = [1 - e^-2000, e^-2000], q = [1/2, 1/2] has KL = log 2
    (the second cell contributes e^-2000·(-2000 + log 2) = 0 in float64), and q's log -inf
    where p has (underflowed) mass gives +inf."""
    log_p = np.array([0.0, -2000.0])
    assert oracle.kl_log(log_p, np.log([0.5, 0.5])) == pytest.approx(math.log(2), abs=1e-15)
    assert oracle.kl_log(log_p, np.array([0.0, -np.inf])) == math.inf
    assert oracle.kl_log(np.array([0.0, -np.inf]), np.array([0.0, -np.inf])) == 0.0


def test_zero_cells_are_exact():
    assert oracle.kl([1.0, 0.0], [0.5, 0.5]) == pytest.approx(math.log(2), abs=1e-15)
    assert oracle.entropy([1.0, 0.0]) == 0.0
    assert oracle.mutual_information(np.eye(4) / 4) == pytest.approx(math.log(4), abs=1e-15)


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        (([0.5, 0.6], [0.5, 0.5]), ValueError, "p must sum to 1"),
        (([0.5, 0.5], [1.5, -0.5]), ValueError, "q must be non-negative"),
        (([0.5, 0.5], [1.0]), ValueError, "support size"),
        (([math.nan, 1.0], [0.5, 0.5]), ValueError, "p must be finite"),
        (([], []), ValueError, "non-empty"),
        ((["a", "b"], [0.5, 0.5]), TypeError, "numeric"),
    ],
)
def test_bad_input(args, exc, match):
    with pytest.raises(exc, match=match):
        oracle.kl(*args)


def test_mutual_information_needs_2d():
    with pytest.raises(ValueError, match="2-D"):
        oracle.mutual_information([0.5, 0.5])
