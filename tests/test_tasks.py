"""Tasks with known MI: Gaussian (and cubic) and Student-t at a target MI, the staircase, .npz
samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mi_bounds.estimation.tasks import (
    MAX_MI_PER_DIM,
    ArrayTask,
    GaussianTask,
    StaircaseTask,
    Standardizer,
    StudentTask,
    check_samples,
    load_npz,
    mi_from_rho,
    rho_from_mi,
    split_rows,
    staircase,
    student_t_mi_correction,
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
    x, y = rng.normal(size=(20, 2)), rng.normal(size=(20, 1))
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
    with pytest.raises(ValueError, match=r"X must be finite: 1 row\(s\) .*first: row 0"):
        load_npz(tmp_path / "nan.npz")
    np.savez(tmp_path / "mi.npz", X=x, Y=y, true_mi=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="true_mi"):
        load_npz(tmp_path / "mi.npz")
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match="exceeds the number of samples"):
        task(0, 21, torch.Generator())


def test_gaussian_noise_scale_is_exact_near_rho_one() -> None:
    """y - ρx is the noise σε with σ = exp(-mi/dim) exactly (1 - ρ² = e^{-2 mi/dim}), also where
    ρ rounds to 1 in float64: at mi/dim = 8 the residual's std is e^{-8} to 1%, so the
    samples' Gaussian MI, -log std(y - ρx) per coordinate, is the target to 0.01 nats."""
    task = GaussianTask(mi=8.0, dim=1)
    x, y = task(0, 20000, torch.Generator().manual_seed(0))
    resid = y.double().numpy() - task.rho * x.double().numpy()
    assert resid.std() == pytest.approx(math.exp(-8.0), rel=0.01)
    assert -math.log(resid.std()) == pytest.approx(8.0, abs=0.01)


def test_gaussian_mi_beyond_float32_resolution_is_rejected() -> None:
    """mi = 20 in one dimension: σ = 2e-9 is below float32's spacing near 1, so y would round
    to ρx (Y == X) while the task still claimed 20 nats. It is an error naming the arguments."""
    with pytest.raises(ValueError, match=r"mi / dim must be at most 9 nats.*mi=20, dim=1.*dim >= 3"
                       ):
        GaussianTask(mi=20.0, dim=1)
    with pytest.raises(ValueError, match=r"levels / dim must be at most 9"):
        StaircaseTask(levels=(2.0, 20.0), dim=1)
    GaussianTask(mi=MAX_MI_PER_DIM * 3, dim=3)  # at the limit: accepted
    with pytest.raises(ValueError, match="mi / dim"):
        GaussianTask(mi=MAX_MI_PER_DIM * 3 + 1e-9, dim=3)


def test_check_samples_errors_name_the_array() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(10, 2)), rng.normal(size=(10, 3))
    xs, ys = check_samples(x.astype(np.float32), y)
    assert xs.dtype == ys.dtype == np.float64 and xs.shape == (10, 2)
    with pytest.raises(ValueError, match=r"Y must be a 2-D array \[n, d\], got shape \(10,\); "
                       r"for one feature per sample pass Y\[:, None\]"):
        check_samples(x, y[:, 0])
    bad = y.copy()
    bad[[3, 7], 1] = [math.inf, math.nan]
    with pytest.raises(ValueError,
                       match=r"Y must be finite: 2 row\(s\) hold NaN or inf \(first: row 3"):
        check_samples(x, bad)
    with pytest.raises(ValueError, match=r"X holds values beyond the float32 range"):
        check_samples(x * 1e300, y)
    check_samples(x * 1e38, y)  # inside float32's range (3.4e38): accepted
    with pytest.raises(ValueError, match="same number of rows, got 10 and 9"):
        check_samples(x, y[:9])
    with pytest.raises(ValueError, match="at least 2 rows"):
        check_samples(x[:1], y[:1])
    with pytest.raises(TypeError, match="X must be numeric"):
        check_samples(x.astype(bool), y)


def test_load_npz_rejects_other_files(tmp_path) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(size=(5, 2)))
    with pytest.raises(ValueError, match=r"single array \(\.npy\).*numpy\.savez"):
        load_npz(tmp_path / "a.npy")
    np.savez(tmp_path / "ok.npz", X=rng.normal(size=(50, 2)), Y=rng.normal(size=(50, 2)))
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"not a readable \.npz file"):
        load_npz(tmp_path / "cut.npz")
    (tmp_path / "zero.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"not an \.npz file"):
        load_npz(tmp_path / "zero.npz")
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(ValueError, match="missing: X, Y; found: nothing"):
        load_npz(tmp_path / "empty.npz")


@given(st.integers(6, 400), st.floats(0.05, 0.9), st.floats(0.0, 0.5), st.integers(0, 50))
def test_split_rows_partitions_the_rows(n: int, tf: float, vf: float, seed: int) -> None:
    """Fit, validation and test parts are disjoint, cover every row, have the documented sizes,
    and depend only on (n, fractions, seed)."""
    try:
        sp = split_rows(n, test_fraction=tf, validation_fraction=vf, seed=seed)
    except ValueError as err:
        assert "too few" in str(err)
        return
    parts = np.concatenate([sp.fit, sp.validation, sp.test])
    np.testing.assert_array_equal(np.sort(parts), np.arange(n))
    n_test = max(2, round(tf * n))
    assert sp.test.size == n_test
    assert sp.validation.size == (0 if vf == 0 else max(2, round(vf * (n - n_test))))
    assert sp.fit.size >= 2
    again = split_rows(n, test_fraction=tf, validation_fraction=vf, seed=seed)
    np.testing.assert_array_equal(again.test, sp.test)


def test_split_rows_errors_and_seeds() -> None:
    a, b = split_rows(100, seed=0), split_rows(100, seed=1)
    assert not np.array_equal(np.sort(a.test), np.sort(b.test))
    for bad in (0.0, 1.0, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
            split_rows(100, test_fraction=bad)
    with pytest.raises(ValueError, match=r"validation_fraction must be in \[0, 1\)"):
        split_rows(100, validation_fraction=1.0)
    with pytest.raises(ValueError, match="too few"):
        split_rows(5)


def test_standardizer_uses_its_rows_and_tames_heavy_tails() -> None:
    """Gaussian features: (x - mean)/std of the fitting rows exactly; a Cauchy feature (beyond
    ±10 standard deviations) goes through asinh of a median/IQR scaling; every map is strictly
    increasing (hence invertible: the MI is unchanged); map_torch equals the numpy map."""
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(3.0, 2.0, 2000), rng.standard_cauchy(2000)])
    y = rng.normal(size=(2000, 1)) * 1e6
    std = Standardizer.fit(x, y)
    assert std.x_asinh.tolist() == [False, True] and std.y_asinh.tolist() == [False]
    zx, zy = std(x, y)
    np.testing.assert_allclose(zx[:, 0], (x[:, 0] - x[:, 0].mean()) / x[:, 0].std())
    np.testing.assert_allclose(zy[:, 0], (y[:, 0] - y[:, 0].mean()) / y[:, 0].std())
    q25, med, q75 = np.percentile(x[:, 1], [25, 50, 75])
    np.testing.assert_allclose(zx[:, 1], np.arcsinh((x[:, 1] - med) / ((q75 - q25) / 1.349)))
    assert np.abs(zx[:, 1]).max() < 12  # the Cauchy tail grows like log|x|
    for a, z in ((x, zx), (y, zy)):
        for j in range(a.shape[1]):
            order = np.argsort(a[:, j])
            assert np.all(np.diff(z[order, j]) > 0)
    tx, ty = std.map_torch(torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_allclose(tx.numpy(), zx, rtol=1e-12)
    np.testing.assert_allclose(ty.numpy(), zy, rtol=1e-12)
    const = Standardizer.fit(np.ones((5, 1)), np.arange(5.0)[:, None])
    assert const.x_scale.tolist() == [1.0]


def _bivariate_t_mi_by_quadrature(df: float, rho: float) -> float:
    """I(X; Y) of the 1 + 1-dimensional t_ν(0, [[1, ρ], [ρ, 1]]) as the integral of
    p log(p / (p_x p_y)) over the plane (x = tan u, y = tan v), with the densities written out:
    p(x, y) = Γ((ν+2)/2) / (Γ(ν/2) νπ sqrt(1-ρ²)) (1 + q/ν)^{-(ν+2)/2}, q the Mahalanobis
    form; p_x the univariate t_ν."""
    from scipy import integrate
    from scipy.special import gammaln

    c2 = (gammaln((df + 2) / 2) - gammaln(df / 2) - math.log(df * math.pi)
          - 0.5 * math.log1p(-rho * rho))
    c1 = gammaln((df + 1) / 2) - gammaln(df / 2) - 0.5 * math.log(df * math.pi)

    def integrand(v: float, u: float) -> float:
        x, y = math.tan(u), math.tan(v)
        q = (x * x - 2 * rho * x * y + y * y) / (1 - rho * rho)
        log_joint = c2 - (df + 2) / 2 * math.log1p(q / df)
        log_x = c1 - (df + 1) / 2 * math.log1p(x * x / df)
        log_y = c1 - (df + 1) / 2 * math.log1p(y * y / df)
        jacobian = 1 / (math.cos(u) ** 2 * math.cos(v) ** 2)
        return math.exp(log_joint) * (log_joint - log_x - log_y) * jacobian

    h = math.pi / 2
    value, _ = integrate.dblquad(integrand, -h, h, -h, h, epsabs=1e-10, epsrel=1e-10)
    return value


@pytest.mark.parametrize(("df", "rho"), [(1.0, 0.0), (1.0, 0.5), (3.0, 0.6), (5.0, 0.9)])
def test_student_t_mi_matches_quadrature_in_two_dimensions(df: float, rho: float) -> None:
    """d_x = d_y = 1: the closed form (Gaussian MI of the correlation + the correction)
    equals the integral of p log(p / p_x p_y) to 1e-8 (the quadrature agrees to ~1e-12);
    at ρ = 0 the MI is the correction alone, and it is > 0."""
    closed = mi_from_rho(rho, 1) + student_t_mi_correction(df, 1, 1)
    assert closed == pytest.approx(_bivariate_t_mi_by_quadrature(df, rho), abs=1e-8)
    assert student_t_mi_correction(df, 1, 1) > 0


def test_student_task_samples_have_the_stated_mi() -> None:
    """StudentTask(mi=1, dim=3, df=5): the mean over 200,000 sampled rows of
    log p(x, y) - log p(x) - log p(y), with scipy's multivariate-t densities at the task's
    scale matrix, is the stated MI within 4 standard errors (se ≈ 0.002 nats). This checks the
    formula and the sampler together: a sampler of another law gives another mean."""
    from scipy.stats import multivariate_t

    task = StudentTask(mi=1.0, dim=3, df=5.0)
    x, y = task(0, 200_000, torch.Generator().manual_seed(0))
    x, y = x.double().numpy(), y.double().numpy()
    eye = np.eye(3)
    scale = np.block([[eye, task.rho * eye], [task.rho * eye, eye]])
    pmi = (multivariate_t(np.zeros(6), scale, df=5.0).logpdf(np.hstack([x, y]))
           - multivariate_t(np.zeros(3), eye, df=5.0).logpdf(x)
           - multivariate_t(np.zeros(3), eye, df=5.0).logpdf(y))
    se = pmi.std(ddof=1) / math.sqrt(pmi.size)
    assert se < 0.005
    assert abs(pmi.mean() - 1.0) < 4 * se
    # second moments: Cov = ν/(ν-2) · Σ
    cov = np.cov(np.hstack([x, y]).T)
    np.testing.assert_allclose(cov, 5.0 / 3.0 * scale, atol=0.05)
    assert task.true_mi() == 1.0 and task.x_dim == task.y_dim == 3


def test_student_task_parameters_and_errors() -> None:
    """The MI at zero correlation is the floor: mi = c gives ρ = 0, mi below it is refused
    naming mi; bad df and dim name themselves; the task is a Task, seeded and reproducible,
    and as ν grows its correction vanishes (the Gaussian limit)."""
    from mi_bounds.estimation.tasks import Task

    c = student_t_mi_correction(5.0, 3, 3)
    assert c == pytest.approx(0.0890153, abs=1e-6)
    assert StudentTask(mi=c, dim=3, df=5.0).rho == 0.0
    assert StudentTask(mi=1.0, dim=3, df=5.0).gaussian_mi == pytest.approx(1.0 - c)
    assert student_t_mi_correction(1e6, 3, 3) < 1e-9
    assert student_t_mi_correction(5.0, 2, 4) == student_t_mi_correction(5.0, 4, 2)
    with pytest.raises(ValueError, match=r"mi must be a finite number >= 0\.089"):
        StudentTask(mi=0.05, dim=3, df=5.0)
    with pytest.raises(ValueError, match="df must be a finite number > 0"):
        StudentTask(mi=1.0, dim=3, df=0.0)
    with pytest.raises(ValueError, match="x_dim must be an int >= 1"):
        student_t_mi_correction(5.0, 0, 3)
    with pytest.raises(ValueError, match="mi - correction / dim must be at most"):
        StudentTask(mi=40.0, dim=3, df=5.0)
    task = StudentTask(mi=1.0, dim=3, df=5.0)
    assert isinstance(task, Task)
    a = task(0, 64, torch.Generator().manual_seed(7))
    b = task(0, 64, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].dtype == torch.float32 and a[0].shape == (64, 3)
