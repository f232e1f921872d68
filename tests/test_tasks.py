"""Tasks with known MI: Gaussian (and cubic) at a target MI, the staircase, .npz samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mi_bounds.tasks import (
    ArrayTask,
    GaussianTask,
    StaircaseTask,
    load_npz,
    mi_from_rho,
    rho_from_mi,
    staircase,
)


def _gaussian_mi_logdet(rho: float, dim: int) -> float:
    """I(X;Y) = ½ log(det Σx det Σy / det Σ) for the joint covariance, computed with numpy."""
    eye = np.eye(dim)
    cov = np.block([[eye, rho * eye], [rho * eye, eye]])
    return 0.5 * (0.0 + 0.0 - np.linalg.slogdet(cov)[1])


@given(st.floats(0.0, 12.0), st.integers(1, 64))
def test_rho_from_mi_inverts_mi_from_rho(mi: float, dim: int) -> None:
    """rho_from_mi solves I = -(d/2) log(1 - rho²), checked against a log-det computation."""
    rho = rho_from_mi(mi, dim)
    assert 0.0 <= rho < 1.0
    if rho < 1 - 1e-6:
        assert mi_from_rho(rho, dim) == pytest.approx(mi, rel=1e-6, abs=1e-9)
        if dim <= 16:
            assert _gaussian_mi_logdet(rho, dim) == pytest.approx(mi, rel=1e-5, abs=1e-8)


def test_gaussian_samples_have_the_target_correlation() -> None:
    """Empirical per-coordinate correlation ≈ rho; the Gaussian MI estimate from it ≈ the target."""
    task = GaussianTask(mi=4.0, dim=5)
    g = torch.Generator().manual_seed(0)
    x, y = task(0, 40000, g)
    xs, ys = x.double().numpy(), y.double().numpy()
    corr = np.array([np.corrcoef(xs[:, i], ys[:, i])[0, 1] for i in range(5)])
    np.testing.assert_allclose(corr, task.rho, atol=0.01)
    assert abs(np.corrcoef(xs[:, 0], ys[:, 1])[0, 1]) < 0.03  # different coordinates independent
    assert mi_from_rho(float(corr.mean()), 5) == pytest.approx(4.0, abs=0.15)
    assert task.true_mi() == 4.0 and task.x_dim == task.y_dim == 5


def test_cubic_is_the_cube_of_the_same_sample() -> None:
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x1, y1 = GaussianTask(2.0, 4)(0, 16, g1)
    x2, y2 = GaussianTask(2.0, 4, cubic=True)(0, 16, g2)
    torch.testing.assert_close(x1, x2)
    torch.testing.assert_close(y1**3, y2)


def test_staircase_schedule_and_levels() -> None:
    sched = staircase((2, 4, 6), 3)
    np.testing.assert_array_equal(sched, [2, 2, 2, 4, 4, 4, 6, 6, 6])
    task = StaircaseTask((2.0, 4.0, 6.0), 3, dim=20)
    assert [task.true_mi(t) for t in range(10)] == [2, 2, 2, 4, 4, 4, 6, 6, 6, 6]
    assert task.total_steps == 9
    g = torch.Generator().manual_seed(0)
    x, y = task(4, 8, g)
    assert x.shape == y.shape == (8, 20)


def test_staircase_uses_rho_of_the_level() -> None:
    """A batch at a step of level k is the Gaussian task's batch at that level's MI."""
    task = StaircaseTask((2.0, 8.0), 5, dim=3)
    a = task(7, 6, torch.Generator().manual_seed(1))
    b = GaussianTask(8.0, 3)(0, 6, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)


def test_bad_task_arguments() -> None:
    with pytest.raises(ValueError, match="mi must be"):
        GaussianTask(mi=-1.0)
    with pytest.raises(ValueError, match="dim must be"):
        rho_from_mi(1.0, 0)
    with pytest.raises(ValueError, match="rho must be"):
        mi_from_rho(1.0, 3)
    with pytest.raises(ValueError, match="batch_size"):
        GaussianTask()(0, 1, torch.Generator())
    with pytest.raises(ValueError, match="steps_per_level"):
        StaircaseTask(steps_per_level=0)
    with pytest.raises(ValueError, match="levels"):
        staircase((), 3)


def test_array_task_batches_are_rows_of_the_data() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    y = x[:, :2] * 2.0
    task = ArrayTask(x, y, true_mi=1.5)
    bx, by = task(0, 10, torch.Generator().manual_seed(0))
    assert bx.shape == (10, 3) and by.shape == (10, 2)
    torch.testing.assert_close(by, bx[:, :2] * 2.0)  # rows stay paired
    rows = {tuple(np.round(r, 5)) for r in x.astype(np.float32)}
    assert all(tuple(np.round(r, 5)) in rows for r in bx.numpy())
    assert len({tuple(r) for r in bx.numpy()}) == 10  # no repeats within a batch
    assert task.true_mi() == 1.5 and task.n == 50


def test_load_npz_roundtrip_and_errors(tmp_path) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 2)), rng.normal(size=20)
    np.savez(tmp_path / "ok.npz", X=x, Y=y, true_mi=np.float64(0.25))
    task = load_npz(tmp_path / "ok.npz")
    assert task.x_dim == 2 and task.y_dim == 1 and task.true_mi() == 0.25
    np.savez(tmp_path / "no_mi.npz", X=x, Y=y)
    assert load_npz(tmp_path / "no_mi.npz").true_mi() is None
    np.savez(tmp_path / "missing.npz", X=x)
    with pytest.raises(ValueError, match="missing: Y"):
        load_npz(tmp_path / "missing.npz")
    np.savez(tmp_path / "rows.npz", X=x, Y=y[:5])
    with pytest.raises(ValueError, match="same number of rows"):
        load_npz(tmp_path / "rows.npz")
    bad = x.copy()
    bad[0, 0] = math.nan
    np.savez(tmp_path / "nan.npz", X=bad, Y=y)
    with pytest.raises(ValueError, match="X must be finite"):
        load_npz(tmp_path / "nan.npz")
    np.savez(tmp_path / "mi.npz", X=x, Y=y, true_mi=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="true_mi"):
        load_npz(tmp_path / "mi.npz")
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match="exceeds the number of samples"):
        task(0, 21, torch.Generator())
