"""Neural estimation: estimator values and gradients, MINE's average, the trainer, the CLI and
the staircase runner, checked against independent numpy/autograd computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from mi_bounds.estimation.cli import main as cli_main
from mi_bounds.estimation.critics import make_critic
from mi_bounds.estimation.estimate import estimate_mi
from mi_bounds.estimation.heldout import sample_config
from mi_bounds.estimation.staircase import (
    OBJECTIVES,
    RunSpec,
    bias_variance_table,
    level_stats,
    load_runs,
    plan,
    run_grid,
)
from mi_bounds.estimation.tasks import ArrayTask, GaussianTask
from mi_bounds.estimation.training import (
    ESTIMATORS,
    EstimateConfig,
    MineAverage,
    estimator_value,
    parse_estimator,
    train,
    training_objective,
)


def _scores(k: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(k, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


def _numpy_reference(name: str, s: np.ndarray, tau: float | None = None) -> float:
    """Each estimator's formula on a score matrix, written out with numpy/scipy."""
    k = s.shape[0]
    diag, off = np.diag(s), s[~np.eye(k, dtype=bool)]
    lme = lambda v: logsumexp(v) - math.log(v.size)  # noqa: E731
    if name in ("dv", "mine", "js_dv") or (name == "smile" and tau is None):
        return diag.mean() - lme(off)
    if name == "nwj":
        return diag.mean() - np.exp(lme(off) - 1.0)
    if name == "js_nwj":  # NWJ at T + 1
        return (diag + 1).mean() - np.exp(lme(off + 1) - 1.0)
    if name == "js":
        return -np.logaddexp(0, -diag).mean() - np.logaddexp(0, off).mean()
    if name == "infonce":
        return float(np.mean(diag - logsumexp(s, axis=1)) + math.log(k))
    if name == "smile":
        return diag.mean() - lme(np.clip(off, -tau, tau))
    raise AssertionError(name)


@pytest.mark.parametrize("name", [*ESTIMATORS, "smile_1", "smile_5", "smile_inf"])
def test_estimator_values_match_numpy(name: str) -> None:
    s = _scores()
    base, tau = parse_estimator(name, 2.0)
    expected = _numpy_reference(base, s.numpy(), tau)
    assert float(estimator_value(name, s, clip=2.0)) == pytest.approx(expected, abs=1e-10)


def test_parse_estimator() -> None:
    assert parse_estimator("smile_5") == ("smile", 5.0)
    assert parse_estimator("smile_inf") == ("smile", None)
    assert parse_estimator("smile", 1.0) == ("smile", 1.0)
    assert parse_estimator("mine") == ("mine", None)
    with pytest.raises(ValueError, match=r"unknown estimator 'mi'.*dv, mine, nwj"):
        parse_estimator("mi")
    with pytest.raises(ValueError, match="bad SMILE clip"):
        parse_estimator("smile_-1")


def _grad(f, s: torch.Tensor) -> torch.Tensor:
    s = s.clone().requires_grad_(True)
    f(s).backward()
    return s.grad


@pytest.mark.parametrize("name", ["js_dv", "js_nwj", "smile_1", "smile_5"])
def test_js_trained_estimators_report_their_value_with_the_js_gradient(name: str) -> None:
    """value = the reported estimator; gradient = ∇JS, computed by autograd on the numpy formula."""
    s = _scores(seed=1)
    obj = training_objective(name, s.clone().requires_grad_(True))
    assert float(obj.detach()) == pytest.approx(float(estimator_value(name, s)), abs=1e-12)
    k = s.shape[0]
    eye = torch.eye(k, dtype=torch.bool)

    def js(t: torch.Tensor) -> torch.Tensor:  # the JS bound written out
        return -torch.nn.functional.softplus(-t[eye]).mean() - torch.nn.functional.softplus(
            t[~eye]).mean()

    torch.testing.assert_close(_grad(lambda t: training_objective(name, t), s), _grad(js, s))


@pytest.mark.parametrize("name", ["dv", "nwj", "infonce", "js"])
def test_plain_estimators_train_on_their_own_gradient(name: str) -> None:
    s = _scores(seed=2)
    torch.testing.assert_close(
        _grad(lambda t: training_objective(name, t), s),
        _grad(lambda t: estimator_value(name, t), s),
    )


def test_mine_gradient_uses_the_moving_average() -> None:
    """MINE: ∇ = ∇E_P[T] - ∇Ẑ / EMA. On the first batch EMA = Ẑ, so it equals ∇DV exactly;
    on the second it equals the formula with the hand-computed EMA."""
    k, m = 5, 0.9
    eye = torch.eye(k, dtype=torch.bool)
    s1, s2 = _scores(k, 3), _scores(k, 4)
    avg = MineAverage(m)
    g1 = _grad(lambda t: training_objective("mine", t, mine=avg), s1)
    torch.testing.assert_close(g1, _grad(lambda t: estimator_value("dv", t), s1))
    z1 = float(torch.exp(s1[~eye]).mean())
    z2 = float(torch.exp(s2[~eye]).mean())
    ema = m * z1 + (1 - m) * z2
    out = training_objective("mine", s2.clone().requires_grad_(True), mine=avg)
    assert float(out.detach()) == pytest.approx(float(estimator_value("dv", s2)), abs=1e-12)
    g2 = _grad(lambda t: training_objective("mine", t, mine=MineAverage(m)), s2)  # fresh: = ∇DV
    corrected = _grad(lambda t: t[eye].mean() - torch.exp(t[~eye]).mean() / ema, s2)
    assert not torch.allclose(g2, corrected)
    avg2 = MineAverage(m)
    avg2.update(torch.tensor(math.log(z1), dtype=torch.float64))
    g2 = _grad(lambda t: training_objective("mine", t, mine=avg2), s2)
    expected = _grad(lambda t: t[eye].mean() - torch.exp(t[~eye]).mean() / ema, s2)
    torch.testing.assert_close(g2, expected)
    assert math.exp(float(avg2.log_ema)) == pytest.approx(ema, rel=1e-12)
    with pytest.raises(ValueError, match="needs its moving average"):
        training_objective("mine", s1)


def test_mine_average_matches_numpy_ema() -> None:
    z = np.exp(np.random.default_rng(0).normal(size=20) * 3)
    avg, ema = MineAverage(0.99), z[0]
    for i, zi in enumerate(z):
        out = avg.update(torch.tensor(math.log(zi), dtype=torch.float64))
        if i:
            ema = 0.99 * ema + 0.01 * zi
        assert math.exp(float(out)) == pytest.approx(ema, rel=1e-10)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown estimator"):
        EstimateConfig(bound="kl")
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        EstimateConfig(steps=0)
    with pytest.raises(ValueError, match="batch_size must be an int >= 2"):
        EstimateConfig(batch_size=1)
    with pytest.raises(ValueError, match="lr must be"):
        EstimateConfig(lr=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        EstimateConfig(mine_momentum=1.0)
    with pytest.raises(ValueError, match="device"):
        EstimateConfig(device="tpu:9")
    with pytest.raises(ValueError, match="unknown estimator"):
        EstimateConfig(report=("dv", "nope"))
    assert EstimateConfig(bound="dv", report=("dv", "nwj")).names == ("dv", "nwj")


SMALL = {"hidden_dim": 32, "embed_dim": 8, "layers": 1}


def test_training_is_deterministic_and_seed_dependent() -> None:
    task = GaussianTask(mi=1.0, dim=2)
    cfg = EstimateConfig(bound="smile", steps=10, batch_size=8, eval_batches=3, seed=5)
    a, _ = estimate_mi(task, cfg, **SMALL)
    b, _ = estimate_mi(task, cfg, **SMALL)
    cfg_c = EstimateConfig(bound="smile", steps=10, batch_size=8, eval_batches=3, seed=6)
    c, _ = estimate_mi(task, cfg_c, **SMALL)
    np.testing.assert_array_equal(a.estimates["smile"], b.estimates["smile"])
    assert a.final == b.final
    assert not np.array_equal(a.estimates["smile"], c.estimates["smile"])
    np.testing.assert_array_equal(a.true_mi, np.ones(10))


def test_training_recovers_a_small_mi() -> None:
    """On a 2-d Gaussian with I = 1 nat, a small separable critic trained 150 steps with
    InfoNCE (K = 64, log K = 4.16 ≫ I) and with SMILE(τ=5) estimates I within 0.25 nat."""
    task = GaussianTask(mi=1.0, dim=2)
    for bound in ("infonce", "smile"):
        cfg = EstimateConfig(bound=bound, steps=150, batch_size=64, lr=5e-3, eval_batches=32,
                             report=("dv",))
        result, _ = estimate_mi(task, cfg, **SMALL)
        mean, se = result.final[bound]
        assert se < 0.1
        assert mean == pytest.approx(1.0, abs=0.25), (bound, mean, se)


@pytest.mark.parametrize("bound", ["infonce", "mine", "js_nwj"])
def test_recorded_step_values_are_the_estimators_on_that_step_s_batch(bound: str) -> None:
    """The values recorded at step 0 equal the estimators recomputed by hand on the same batch
    (drawn with the documented generator, seed + 1) and the same initial critic (seeded with
    seed), to float32 round-off (the trained value carries a ``s - s.detach()`` term)."""
    task = GaussianTask(mi=3.0, dim=4)
    cfg = EstimateConfig(bound=bound, report=("dv", "smile_2"), steps=3, batch_size=16,
                         eval_batches=0, seed=7)
    result, _ = estimate_mi(task, cfg, **SMALL)
    torch.manual_seed(7)
    critic = make_critic("separable", 4, 4, **SMALL)
    x, y = task(0, 16, torch.Generator().manual_seed(8))
    with torch.no_grad():
        scores = critic.scores(x, y)
    for name in cfg.names:
        expected = float(estimator_value(name, scores))
        assert result.estimates[name][0] == pytest.approx(expected, rel=1e-6, abs=1e-7), name
    assert len(result.estimates[bound]) == 3 and result.final == {}


def test_array_task_is_estimated_on_held_out_rows() -> None:
    """estimate_mi on arrays takes the held-out path: 1,000 rows of a 2-d Gaussian pair
    (ρ = 0.8 per coordinate, I = -log(1 - 0.64) = 1.0217 nats); the test-row InfoNCE estimate
    is within 0.15 nats of the truth, reported with the train-row value and the chosen step."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 2))
    y = 0.8 * x + 0.6 * rng.normal(size=(1000, 2))
    truth = -math.log(1 - 0.64)
    cfg = sample_config(bound="infonce", steps=600, patience=3)
    result, critic = estimate_mi(ArrayTask(x, y, true_mi=truth), cfg)
    mean, se = result.final["infonce"]
    assert mean == pytest.approx(truth, abs=0.15), (mean, se)
    assert 0 < se < 0.1
    record = result.to_dict()
    assert record["final"]["infonce"]["train_estimate"] == result.final_train["infonce"][0]
    assert record["split"] == {"fit": 400, "validation": 100, "test": 500, "n": 1000, "seed": 0,
                               "test_fraction": 0.5, "validation_fraction": 0.2}
    assert record["true_mi"] == pytest.approx(truth)
    assert 0 <= record["selection"]["step"] <= record["selection"]["stopped_at"]
    with pytest.raises(TypeError, match="held-out rows"):
        train(critic, ArrayTask(x, y), cfg)


def test_cli_on_a_task_and_on_an_npz_file(tmp_path, capsys) -> None:
    out = tmp_path / "r.json"
    args = ["--steps", "15", "--batch-size", "16", "--eval-batches", "4", "--hidden-dim", "16",
            "--embed-dim", "4", "--layers", "0", "--no-progress"]
    argv = ["--task", "cubic", "--mi", "2", "--bound", "js_dv", "--out", str(out), *args]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "js_dv:" in printed and "±" in printed and "true MI: 2.0000" in printed
    record = json.loads(out.read_text())
    assert len(record["estimates"]["js_dv"]) == 15 and record["source"]["task"] == "cubic"
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.normal(size=(64, 3)), Y=rng.normal(size=(64, 1)))
    assert cli_main(["--data", str(tmp_path / "d.npz"), "--bound", "smile_1", *args]) == 0
    printed = capsys.readouterr().out
    assert "smile_1:" in printed and "true MI" not in printed
    with pytest.raises(SystemExit):
        cli_main(["--data", str(tmp_path / "missing.npz")])
    with pytest.raises(SystemExit):
        cli_main(["--bound", "kl"])


def test_level_stats_against_direct_computation() -> None:
    est = np.arange(12, dtype=float)
    stats = level_stats(est, [1.0, 5.0, 9.0], 4, window=0.5)
    seg = est[2:4]
    assert stats[0]["mean"] == pytest.approx(seg.mean())
    assert stats[0]["bias"] == pytest.approx(seg.mean() - 1.0)
    assert stats[0]["variance"] == pytest.approx(seg.var())
    assert stats[2]["mse"] == pytest.approx(np.mean((est[10:12] - 9.0) ** 2))
    for s in stats:
        assert s["mse"] == pytest.approx(s["bias"] ** 2 + s["variance"])
    with pytest.raises(ValueError, match="shape"):
        level_stats(est, [1.0], 4)


def test_staircase_runner_is_resumable(tmp_path, capsys) -> None:
    """A reduced staircase: one JSON per run; a re-run skips finished runs (files untouched)."""
    specs = plan("quick", ("js", "infonce"), steps_per_level=4, hidden_dim=16, embed_dim=4)
    paths = run_grid(specs, tmp_path)
    assert [p.name for p in paths] == [f"{s.run_id}.json" for s in specs]
    mtimes = [p.stat().st_mtime_ns for p in paths]
    run_grid(specs, tmp_path)
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    assert "skipped (done)" in capsys.readouterr().out
    runs = load_runs(tmp_path)
    js = next(r for r in runs if r["spec"]["objective"] == "js")
    assert set(js["stats"]) == set(OBJECTIVES["js"])
    assert len(js["curves"]["js_dv"]) == 20 // js["thin"]
    assert all(len(v) == 5 for v in js["stats"].values())
    table = bias_variance_table(runs)
    assert "SMILE τ=5" in table and "InfoNCE" in table
    assert cli_main(["staircase", "--table", "--out-dir", str(tmp_path)]) == 0
    with pytest.raises(ValueError, match="unknown objective"):
        RunSpec(objective="kl")


# ------------------------------------------------------------------------------------------
# Figures: the variance floor on exact categorical worlds, and the reduced staircase figure.
# ------------------------------------------------------------------------------------------


def test_variance_floor_world_matches_the_oracle() -> None:
    """The noisy-identity world's MI (closed form) equals toy_models.oracle on its joint table."""
    from figures.fig_variance_floor import world, world_at
    from toy_models.oracle import mutual_information

    for n, eps in [(6, 0.3), (9, 0.05), (4, 0.999)]:
        joint = ((1 - eps) * np.eye(n) + eps / n) / n
        assert world(n, eps)["mi"] == pytest.approx(mutual_information(joint), rel=1e-10)
    assert world_at(3.0)["mi"] == pytest.approx(3.0, abs=1e-9)
    with pytest.raises(ValueError, match="mi must be in"):
        world_at(20.0)


def test_variance_floor_exact_moments() -> None:
    """NWJ's exact variance (binomial enumeration through mi_bounds.bounds) equals the closed
    form (Var_P[log r] + Var_Q[r]) / m, lies above Song & Ermon's floor (e^I - 1)/m, and its
    mean is the true MI (NWJ is unbiased at the optimal critic); exact DV moments agree with
    Monte Carlo."""
    from figures.fig_variance_floor import exact_moments, sample_estimates, world_at

    m = 16
    for mi in (0.5, 2.0, 5.0):
        w = world_at(mi, n=4096)
        ex = exact_moments(w, m)
        mean, var = ex["nwj"]
        assert mean == pytest.approx(mi, abs=1e-8)
        assert m * var == pytest.approx(w["var_p_log_r"] + w["var_q_r"], rel=1e-8)
        assert m * var >= math.expm1(mi)
    w = world_at(1.0, n=4096)
    mc = sample_estimates(w, m, 4000, seed=0)["dv"]
    mean, var = exact_moments(w, m)["dv"]
    assert mc.mean() == pytest.approx(mean, abs=4 * math.sqrt(var / 4000))
    assert mc.var() == pytest.approx(var, rel=0.15)


@pytest.mark.parametrize("module", ["fig_variance_floor", "fig_staircase"])
def test_figures_quick(module: str, tmp_path) -> None:
    import importlib

    paths = importlib.import_module(f"figures.{module}").make(tmp_path, quick=True)
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    names = {p.name for p in paths}
    if module == "fig_staircase":
        assert {"staircase.png", "staircase_bias_variance.pdf", "staircase_table.md"} <= names
        assert "InfoNCE" in (tmp_path / "staircase_table.md").read_text()
    else:
        data = json.loads((tmp_path / "variance_floor.json").read_text())
        assert [round(r["mi"], 6) for r in data["rows"]] == [1.0, 3.0, 5.0]


def test_staircase_run_id_encodes_every_setting_that_changes_the_result() -> None:
    """lr, batch size, dim, levels, sizes and seed each give another file name (they used to
    share one, so a changed setting silently reused the old result); the published settings
    keep the short names of the committed results, and every committed file is found under the
    name its stored spec gives and belongs to the default plan (or the two seed-1 runs)."""
    import dataclasses
    from pathlib import Path

    base = RunSpec()
    assert base.run_id == "gaussian__separable__js__4000"
    changes = [{"lr": 1e-3}, {"batch_size": 128}, {"dim": 10}, {"levels": (2.0, 4.0)},
               {"hidden_dim": 64}, {"seed": 2}, {"steps_per_level": 400}]
    ids = {dataclasses.replace(base, **c).run_id for c in changes}
    assert len(ids) == len(changes) and base.run_id not in ids
    results = Path(__file__).resolve().parents[1] / "results" / "staircase"
    stems = sorted(p.stem for p in results.glob("*.json"))
    expected = {s.run_id for s in plan("default")} | {
        RunSpec(objective=o, seed=1).run_id for o in ("dv", "mine")}
    assert set(stems) == expected
    for stem in stems:
        stored = json.loads((results / f"{stem}.json").read_text())["spec"]
        assert RunSpec(**stored).run_id == stem


def test_staircase_refuses_a_result_made_with_other_settings(tmp_path) -> None:
    spec = plan("quick", ("infonce",), steps_per_level=3, hidden_dim=8, embed_dim=4)[0]
    path = run_grid([spec], tmp_path, log=False)[0]
    record = json.loads(path.read_text())
    record["spec"]["lr"] = 0.01
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"other settings \(lr: stored 0\.01, requested 0\.0005\)"):
        run_grid([spec], tmp_path, log=False)
