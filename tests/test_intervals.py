"""The bootstrap interval of a held-out value (mi_bounds.estimation.intervals): its standard
error is the sampling standard deviation of the value, a resample never puts a positive pair
among the negatives, it is seeded, and bad arguments name themselves."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from mi_bounds.estimation.heldout import (
    estimate_mi_on_samples,
    jackknife_df,
    jackknife_quantile,
    rows_value,
    sample_config,
)
from mi_bounds.estimation.intervals import (
    bootstrap_values,
    resample_rows,
    resampled_scores,
    rows_bootstrap,
)
from mi_bounds.estimation.training import EstimateConfig, estimator_value


class ProductCritic(nn.Module):
    """T(x, y) = a·x·y (one feature each)."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = a

    def cross_scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a * x @ y.T


class TableCritic(nn.Module):
    """S[i, j] = table[x_i, y_j] (x, y hold row indices)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def cross_scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0].long()][:, y[:, 0].long()]


def _gaussian_rows(m: int, rho: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(m, 1, generator=gen, dtype=torch.float64)
    y = rho * x + math.sqrt(1 - rho * rho) * torch.randn(m, 1, generator=gen, dtype=torch.float64)
    return x, y


@pytest.mark.slow  # 2,000 Monte Carlo samples: ≈ 20 s on one core
def test_bootstrap_stderr_is_the_sampling_standard_deviation() -> None:
    """A fixed critic T = 0.2·x·y on m = 200 rows of a Gaussian pair (ρ = 0.5): for DV, NWJ and
    InfoNCE, the standard deviation of the value over 2,000 independent samples (Monte Carlo)
    and the mean bootstrap standard error over 12 samples (200 resamples each) agree within
    12 % (their own noise: ~2 % and ~4 %); the jackknife's (10 groups, noisier: ~7 %) within
    25 %. The percentile interval brackets the estimate."""
    critic, m, names = ProductCritic(0.2), 200, ("dv", "nwj", "infonce")
    gen = torch.Generator().manual_seed(0)
    values: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for _ in range(20):  # 20 x 100 samples, each valued on its whole score matrix
        xy = [_gaussian_rows(m, 0.5, gen) for _ in range(100)]
        s = torch.stack([critic.cross_scores(x, y) for x, y in xy])
        for k in names:
            values[k].append(estimator_value(k, s).numpy())
    boot: dict[str, list[float]] = {k: [] for k in names}
    jack: dict[str, list[float]] = {k: [] for k in names}
    for rep in range(12):
        x, y = _gaussian_rows(m, 0.5, gen)
        b = rows_bootstrap(critic, x, y, names, seed=rep)
        j = rows_value(critic, x, y, names)
        for k in names:
            assert b[k].low < b[k].estimate < b[k].high
            boot[k].append(b[k].stderr)
            jack[k].append(j[k][1])
    for k in names:
        sd_mc = float(np.concatenate(values[k]).std(ddof=1))
        assert np.mean(boot[k]) == pytest.approx(sd_mc, rel=0.12), k
        assert np.mean(jack[k]) == pytest.approx(sd_mc, rel=0.25), k


@pytest.mark.parametrize("name", ["dv", "nwj", "infonce", "js", "smile_1"])
def test_a_resample_never_puts_a_positive_pair_among_the_negatives(name: str) -> None:
    """S = 100·I (positives 100, negatives 0): every resampled matrix has 100 on its diagonal
    and 0 off it, so every bootstrap value equals the full value. Were a repeated row's positive
    pair left off the diagonal (about m of the m(m-1) entries), DV would lose ~100 nats."""
    m = 30
    s = 100 * torch.eye(m, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    idx = resample_rows(m, 50, gen)
    assert (idx[:, :, None] == idx[:, None, :]).sum() > 50 * m  # rows were drawn twice
    sub = resampled_scores(s, idx, gen)
    assert torch.equal(sub, 100 * torch.eye(m, dtype=torch.float64).expand(50, m, m))
    rows = torch.arange(m, dtype=torch.float64)[:, None]
    b = rows_bootstrap(TableCritic(s), rows, rows, (name,), resamples=40)[name]
    full = float(estimator_value(name, s))
    np.testing.assert_allclose(b.values, full, rtol=1e-12)
    assert b.stderr == pytest.approx(0.0, abs=1e-9)


def test_resampled_matrix_is_the_rows_and_columns_of_the_drawn_rows() -> None:
    """Off the collisions, S*[i, j] = S[a_i, a_j]; a collision takes S[a_i, a_k], a_k ≠ a_i,
    from the same line of S; a resample of one row repeated m times is never drawn (m = 2:
    half of all draws)."""
    rng = np.random.default_rng(3)
    m = 12
    s = torch.from_numpy(rng.normal(size=(m, m)))
    gen = torch.Generator().manual_seed(5)
    idx = resample_rows(m, 20, gen)
    sub = resampled_scores(s, idx, gen)
    for r in range(20):
        a = idx[r].tolist()
        for i in range(m):
            for j in range(m):
                if i == j or a[i] != a[j]:
                    assert sub[r, i, j] == s[a[i], a[j]]
                else:
                    others = {s[a[i], a[k]].item() for k in range(m) if a[k] != a[i]}
                    assert sub[r, i, j].item() in others
    two = resample_rows(2, 200, torch.Generator().manual_seed(0))
    assert (two[:, 0] != two[:, 1]).all()


def test_bootstrap_is_seeded_and_its_estimate_is_rows_value() -> None:
    """Same seed, same values; another seed, other values. The estimate is rows_value's, also
    over two blocks (max_rows = n/2), where a resample's value is the mean of the blocks'.
    The interval is the percentile interval of the values, and `basic` its reflection."""
    rng = np.random.default_rng(0)
    table = torch.from_numpy(rng.normal(size=(40, 40)) + 2 * np.eye(40))
    rows = torch.arange(40, dtype=torch.float64)[:, None]
    critic = TableCritic(table)
    names = ("dv", "infonce")
    a = rows_bootstrap(critic, rows, rows, names, seed=3, resamples=50)
    b = rows_bootstrap(critic, rows, rows, names, seed=3, resamples=50)
    c = rows_bootstrap(critic, rows, rows, names, seed=4, resamples=50)
    jack = rows_value(critic, rows, rows, names)
    for k in names:
        np.testing.assert_array_equal(a[k].values, b[k].values)
        assert not np.array_equal(a[k].values, c[k].values)
        assert a[k].estimate == jack[k][0]
        lo, hi = np.quantile(a[k].values, [0.025, 0.975])
        assert (a[k].low, a[k].high) == pytest.approx((lo, hi), rel=1e-12)
        assert a[k].basic == pytest.approx((2 * a[k].estimate - hi, 2 * a[k].estimate - lo))
        assert a[k].stderr == pytest.approx(a[k].values.std(ddof=1))
    halves = rows_bootstrap(critic, rows, rows, ("dv",), max_rows=20, resamples=30, seed=1)["dv"]
    assert halves.estimate == pytest.approx(rows_value(critic, rows, rows, ("dv",),
                                                       max_rows=20)["dv"][0], rel=1e-12)
    gen = torch.Generator().manual_seed(1)
    first = bootstrap_values(table[:20, :20], ("dv",), resamples=30, generator=gen)["dv"]
    second = bootstrap_values(table[20:, 20:], ("dv",), resamples=30, generator=gen)["dv"]
    np.testing.assert_allclose(halves.values, (first + second) / 2, rtol=1e-12)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"resamples": 1}, "resamples must be an int >= 2"),
    ({"resamples": True}, "resamples must be an int >= 2"),
    ({"level": 1.0}, r"level must be a number in \(0, 1\)"),
    ({"level": 0}, r"level must be a number in \(0, 1\)"),
    ({"seed": -1}, "seed must be an int >= 0"),
    ({"max_rows": 1}, "max_rows must be an int >= 2"),
    ({"names": ()}, "names must name at least one estimator"),
    ({"names": ("nope",)}, "unknown estimator 'nope'"),
])
def test_bootstrap_bad_arguments_name_themselves(kwargs: dict, match: str) -> None:
    rows = torch.arange(10, dtype=torch.float64)[:, None]
    critic = TableCritic(torch.eye(10, dtype=torch.float64))
    names = kwargs.pop("names", ("dv",))
    with pytest.raises(ValueError, match=match):
        rows_bootstrap(critic, rows, rows, names, **kwargs)


def test_interval_option_of_the_estimate() -> None:
    """interval="bootstrap": the same training and the same estimate as the default (the
    jackknife), the bootstrap's standard error, the percentile interval in the JSON and the
    method recorded by name; the default's JSON has its interval ``estimate ± t_{9,0.975}·se``
    (Student's t with the jackknife's G − 1 = 9 degrees of freedom), and
    both say what the interval covers (the bound's value at this critic, not I: RESULTS §4.9).
    A bad name is refused."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 2))
    y = x + rng.normal(size=(300, 2))
    cfg = sample_config(bound="dv", batch_size=32, steps=100, eval_every=50, patience=2)
    jack, _ = estimate_mi_on_samples(x, y, cfg)
    boot, _ = estimate_mi_on_samples(x, y, EstimateConfig(**{**cfg.__dict__,
                                                             "interval": "bootstrap"}))
    assert boot.final["dv"][0] == jack.final["dv"][0]
    assert boot.final["dv"][1] != jack.final["dv"][1]
    rec, default = boot.to_dict(), jack.to_dict()
    low, high = rec["final"]["dv"]["interval"]
    assert low < rec["final"]["dv"]["estimate"] < high
    assert rec["config"]["interval"] == "bootstrap" and default["config"]["interval"] == "jackknife"
    covers = ("the dv value of this trained critic under the law of the rows, not I "
              "(docs/RESULTS.md §4.9)")
    assert rec["interval"] == {"method": "bootstrap", "kind": "percentile", "level": 0.95,
                               "resamples": 200, "seed": 0, "covers": {"dv": covers}}
    est, se = default["final"]["dv"]["estimate"], default["final"]["dv"]["stderr"]
    # 150 test rows: one block, 10 groups, Student's t with 9 degrees of freedom
    t9 = float(scipy.stats.t.ppf(0.975, 9))
    assert default["final"]["dv"]["interval"] == pytest.approx([est - t9 * se, est + t9 * se])
    assert default["interval"] == {"method": "jackknife", "kind": "estimate ± t·se",
                                   "level": 0.95, "groups": 10, "df": 9,
                                   "quantile": pytest.approx(t9), "covers": {"dv": covers}}
    assert jack.intervals["dv"] == tuple(default["final"]["dv"]["interval"])
    with pytest.raises(ValueError, match="interval must be one of jackknife, bootstrap"):
        sample_config(interval="bca")


def test_cli_interval_bootstrap_and_student_task(tmp_path) -> None:
    """`mi-bounds estimate --data F --interval bootstrap` prints the interval and writes it
    with the method; `--task student` runs and records its degrees of freedom."""
    import json

    from mi_bounds.estimation.cli import main
    from mi_bounds.estimation.tasks import StudentTask

    x, y = StudentTask(mi=1.0, dim=2, df=5.0)(0, 300, torch.Generator().manual_seed(0))
    np.savez(tmp_path / "t.npz", X=x.double().numpy(), Y=y.double().numpy(), true_mi=1.0)
    out = tmp_path / "r.json"
    assert main(["--data", str(tmp_path / "t.npz"), "--bound", "infonce", "--steps", "60",
                 "--interval", "bootstrap", "--no-progress", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["config"]["interval"] == "bootstrap" and rec["interval"]["resamples"] == 200
    low, high = rec["final"]["infonce"]["interval"]
    assert low < rec["final"]["infonce"]["estimate"] < high
    out2 = tmp_path / "s.json"
    assert main(["--task", "student", "--mi", "1", "--dim", "2", "--df", "4", "--steps", "20",
                 "--eval-batches", "2", "--no-progress", "--out", str(out2)]) == 0
    assert json.loads(out2.read_text())["source"] == {"task": "student", "mi": 1.0, "dim": 2,
                                                      "df": 4.0}


@pytest.mark.parametrize("n", [2, 3, 4, 5, 19, 20, 21, 150, 4096, 4097, 8192, 10_000, 12_289])
def test_jackknife_df_counts_the_groups_of_every_block(n: int) -> None:
    """The interval's degrees of freedom are Σ_b (G_b − 1) over the score blocks of
    :func:`rows_value` (blocks of ≤ 4,096 rows, G_b = min(10, m_b // 2) groups), counted here
    from the blocks' sizes as rows_value cuts them; the quantile is Student's t at that df
    (NaN where the jackknife has no standard error)."""
    edges = np.linspace(0, n, -(-n // 4096) + 1).round().astype(int)
    groups = [min(10, int(hi - lo) // 2) for lo, hi in itertools.pairwise(edges)]
    df = jackknife_df(n)
    q = jackknife_quantile(n)
    if any(g < 2 for g in groups):
        assert df == 0 and math.isnan(q)
        critic = TableCritic(torch.eye(n, dtype=torch.float64))
        rows = torch.arange(n, dtype=torch.float64)[:, None]
        if n >= 2:
            assert math.isnan(rows_value(critic, rows, rows, ("dv",))["dv"][1])
        return
    assert df == sum(g - 1 for g in groups)
    assert q == pytest.approx(float(scipy.stats.t.ppf(0.975, df)), rel=1e-12)
    assert q > 1.959963984540054  # wider than the normal quantile, for every finite df


def test_jackknife_quantile_bad_arguments_name_themselves() -> None:
    with pytest.raises(ValueError, match="n must be an int >= 2"):
        jackknife_quantile(1)
    with pytest.raises(ValueError, match="level must be in"):
        jackknife_quantile(100, level=1.0)
