"""The rank-based marginal transform (mi_bounds.estimation.marginals): exact on train rows under
every increasing re-measurement, within one rank step on other rows, and the same in numpy and
torch; wired into the held-out protocol and KSG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtri
from scipy.stats import cauchy, norm, rankdata

from mi_bounds.estimation.heldout import estimate_mi_on_samples, sample_config
from mi_bounds.estimation.ksg import ksg_mi
from mi_bounds.estimation.marginals import RankGaussian, rank_gaussian_knots

#: strictly increasing re-measurements (on finite float64 values of moderate size)
REMEASURE = {
    "cube": lambda a: a**3,
    "exp2": lambda a: np.exp(2 * a),
    "cauchy_quantile": lambda a: cauchy.ppf(norm.cdf(a)),
    "affine": lambda a: 3.0 * a - 7.0,
}


def _sample(n: int, dx: int, dy: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dx))
    y = 0.8 * x[:, :dy] + 0.6 * rng.normal(size=(n, dy))
    return x, y


def test_knots_are_normal_scores_of_mid_ranks():
    """Independent computation: scipy's average ranks, Φ⁻¹(r / (n + 1)); ties share a rank."""
    a = np.array([3.0, 1.0, 1.0, 2.0, 5.0, 5.0, 5.0])
    u, z, tail = rank_gaussian_knots(a)
    ranks = rankdata(a, method="average")
    want = {v: ndtri(r / (a.size + 1)) for v, r in zip(a, ranks, strict=True)}
    assert u.tolist() == [1.0, 2.0, 3.0, 5.0]
    np.testing.assert_allclose(z, [want[v] for v in u], rtol=0, atol=1e-15)
    assert tail == pytest.approx(ndtri((a.size + 0.5) / (a.size + 1)), abs=1e-15)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), name=st.sampled_from(sorted(REMEASURE)))
def test_train_rows_map_identically_under_any_increasing_remeasurement(seed, name):
    """z(f(x)) = z(x) exactly on the rows the map was fitted on: ranks do not see units."""
    x, y = _sample(200, 3, 2, seed)
    f = REMEASURE[name]
    fx, fy = f(x), f(y)
    if any(np.unique(a[:, j]).size != a.shape[0] for a in (fx, fy) for j in range(a.shape[1])):
        return  # float rounding merged two values (never for these maps at this n in practice)
    zx, zy = RankGaussian.fit(x, y)(x, y)
    wx, wy = RankGaussian.fit(fx, fy)(fx, fy)
    assert np.array_equal(zx, wx) and np.array_equal(zy, wy)


def test_other_rows_move_at_most_one_rank_step():
    """Test rows are interpolated between train values: under a re-measurement a test row stays
    between the same two knots, so its z moves by at most that interval's z-gap; a test row that
    copies a train value maps exactly like it."""
    x, y = _sample(500, 2, 2, 1)
    train, test = slice(0, 300), slice(300, 500)
    for f in REMEASURE.values():
        a = RankGaussian.fit(x[train], y[train])
        b = RankGaussian.fit(f(x[train]), f(y[train]))
        za, _ = a(x[test], y[test])
        zb, _ = b(f(x[test]), f(y[test]))
        for j, (u, z, _) in enumerate(a.x_knots):
            hi = np.clip(np.searchsorted(u, x[test][:, j]), 1, u.size - 1)
            gap = np.where((x[test][:, j] > u[0]) & (x[test][:, j] < u[-1]),
                           z[hi] - z[hi - 1], 0.0)
            assert np.all(np.abs(za[:, j] - zb[:, j]) <= gap + 1e-12)
        copy_a, _ = a(x[train][:5], y[train][:5])
        copy_b, _ = b(f(x[train][:5]), f(y[train][:5]))
        np.testing.assert_allclose(copy_a, copy_b, rtol=0, atol=1e-12)


def test_tails_constant_feature_and_symmetry():
    x, y = _sample(101, 1, 1, 2)
    y[:, 0] = 4.0  # a constant feature
    m = RankGaussian.fit(x, y)
    tail = m.x_knots[0][2]
    zx, zy = m(np.array([[1e9], [-1e9]]), np.array([[4.0], [0.0]]))
    assert zx[:, 0].tolist() == [tail, -tail]
    assert np.all(zy == 0.0)
    z_train, _ = m(x, y)
    assert abs(z_train.mean()) < 1e-12  # ranks 1..n are symmetric: the scores sum to 0
    assert m.describe()["y_tied_rows"] == [100]


def test_torch_map_equals_numpy_map():
    x, y = _sample(300, 3, 2, 3)
    m = RankGaussian.fit(x[:200], y[:200])
    rng = np.random.default_rng(5)
    qx = np.vstack([x[200:], x[:10], rng.normal(scale=5, size=(10, 3))])
    qy = np.vstack([y[200:], y[:10], rng.normal(scale=5, size=(10, 2))])
    nx, ny = m(qx, qy)
    tx, ty = m.map_torch(torch.from_numpy(qx), torch.from_numpy(qy))
    np.testing.assert_allclose(tx.numpy(), nx, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ty.numpy(), ny, rtol=0, atol=1e-12)
    t32, _ = m.map_torch(torch.from_numpy(qx).float(), torch.from_numpy(qy).float())
    assert t32.dtype == torch.float32


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="same n"):
        RankGaussian.fit(np.zeros((3, 1)), np.zeros((4, 1)))
    m = RankGaussian.fit(np.arange(6.0).reshape(3, 2), np.arange(3.0).reshape(3, 1))
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        m(np.zeros((2, 3)), np.zeros((2, 1)))


def test_ksg_with_rank_marginals_is_invariant():
    """KSG on all rows: the rank map is exact there, so every re-measurement gives the same
    estimate to the last bit (rank is the default); the z-score map does not."""
    x, y = _sample(600, 2, 2, 4)
    base = ksg_mi(x, y, marginals="rank").estimate
    for f in REMEASURE.values():
        assert ksg_mi(f(x), f(y), marginals="rank").estimate == base
        assert ksg_mi(f(x), f(y)).estimate == base
    std = ksg_mi(x, y, marginals="standard").estimate
    assert ksg_mi(np.exp(2 * x), y, marginals="standard").estimate != pytest.approx(std, abs=1e-3)
    with pytest.raises(ValueError, match="marginals must be one of"):
        ksg_mi(x, y, marginals="copula")


def test_heldout_protocol_with_rank_marginals_is_nearly_invariant():
    """The neural held-out estimate with marginals='rank' on a sample and on the same rows through
    exp(2·): the train rows map identically, test rows within one rank step, so the two
    estimates agree closely (same seed, same split, same batches)."""
    x, y = _sample(1000, 2, 2, 6)
    cfg = sample_config(bound="infonce", steps=300, batch_size=64, marginals="rank", seed=0)
    a, _ = estimate_mi_on_samples(x, y, cfg)
    b, _ = estimate_mi_on_samples(np.exp(2 * x), y**3, cfg)
    ea, eb = a.final["infonce"][0], b.final["infonce"][0]
    assert abs(ea - eb) < 0.01, (ea, eb)
    assert a.extra["marginals"] == "rank"
