"""The scipy oracle against definitions written out by hand and against textbook identities."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given

from toy_models import oracle
from toy_models.strategies import distribution_pairs, distributions, joint_tables


@given(distribution_pairs())
def test_kl_matches_definition_and_is_nonnegative(pq):
    p, q = pq
    s = p > 0
    manual = float(np.sum(p[s] * (np.log(p[s]) - np.log(q[s]))))
    assert oracle.kl(p, q) == pytest.approx(manual, abs=1e-12)
    assert oracle.kl(p, q) >= -1e-15  # Gibbs' inequality, up to round-off


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
