"""Held-out estimation on a finite sample: the test rows are read once, the checkpoint is chosen
on validation rows, the jackknife error is the formula, the divergence guard stops a run, and
the CLI answers bad input with exit code 2."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from mi_bounds.estimation.cli import main as cli_main
from mi_bounds.estimation.heldout import (
    StandardizedCritic,
    estimate_mi_on_samples,
    prepare_samples,
    rows_value,
    sample_config,
)
from mi_bounds.estimation.tasks import Standardizer
from mi_bounds.estimation.training import (
    DivergenceError,
    EstimateConfig,
    check_scores,
    estimator_value,
)

FAST = {"steps": 150, "eval_every": 50, "patience": 3}


class FixedCritic(nn.Module):
    """A 'critic' whose score matrix is a given table: S[i, j] = table[x_i, y_j] (x, y hold
    row indices)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def cross_scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0].long()][:, y[:, 0].long()]


def _jackknife_by_hand(s: np.ndarray, name: str, groups: int) -> tuple[float, float]:
    """Delete-a-group jackknife written out with numpy index arithmetic."""
    m = s.shape[0]
    full = float(estimator_value(name, torch.from_numpy(s)))
    theta = []
    for g in range(groups):
        keep = np.array([i for i in range(m) if i % groups != g])
        theta.append(float(estimator_value(name, torch.from_numpy(s[np.ix_(keep, keep)]))))
    t = np.array(theta)
    return full, math.sqrt((groups - 1) / groups * np.sum((t - t.mean()) ** 2))


@pytest.mark.parametrize("name", ["dv", "infonce", "nwj", "smile_1"])
def test_rows_value_is_the_full_matrix_value_with_a_jackknife_error(name: str) -> None:
    """Estimate = the estimator on the whole score matrix; standard error = the delete-a-group
    jackknife (Efron & Tibshirani 1993, 11.5), recomputed by hand; with max_rows = n/2 the
    estimate is the mean of the two blocks' values and se = sqrt(se1² + se2²) / 2."""
    rng = np.random.default_rng(0)
    table = torch.from_numpy(rng.normal(size=(40, 40)) * 2 + 3 * np.eye(40))
    rows = torch.arange(40, dtype=torch.float64)[:, None]
    critic = FixedCritic(table)
    got = rows_value(critic, rows, rows, (name,), groups=10)[name]
    want = _jackknife_by_hand(table.numpy(), name, 10)
    assert got == pytest.approx(want, rel=1e-10)
    halves = rows_value(critic, rows, rows, (name,), groups=4, max_rows=20)[name]
    a = _jackknife_by_hand(table.numpy()[:20, :20], name, 4)
    b = _jackknife_by_hand(table.numpy()[20:, 20:], name, 4)
    assert halves[0] == pytest.approx((a[0] + b[0]) / 2, rel=1e-10)
    assert halves[1] == pytest.approx(math.hypot(a[1], b[1]) / 2, rel=1e-10)


def test_check_scores_threshold_and_non_finite() -> None:
    """|T| ≤ max_abs_score passes, one value above it or one non-finite value raises."""
    s = torch.tensor([[1e4, -1e4], [0.0, 1.0]])
    check_scores(s, 1e4, "here")
    check_scores(s * 1e30, None, "here")  # no bound: only non-finite values stop the run
    with pytest.raises(DivergenceError, match=r"\|T\| = 1e\+04 > max_abs_score = 9999\) here"):
        check_scores(s, 9999.0, "here")
    with pytest.raises(DivergenceError, match="non-finite critic values"):
        check_scores(torch.tensor([[0.0, math.nan]]), None, "here")
    with pytest.raises(DivergenceError, match="--lr"):
        check_scores(torch.tensor([[math.inf]]), 1.0, "here")


def _independent(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)), rng.normal(size=(n, 5))


def test_training_never_reads_the_test_rows() -> None:
    """Replacing the test rows by anything (here shifted by 5 and independent) changes
    neither the training trajectory nor the validation history nor the chosen step: the
    critic, the checkpoint choice and the standardisation read only train rows. The held-out
    estimate does change."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 2))
    y = x + 0.5 * rng.normal(size=(400, 2))
    cfg = sample_config(bound="dv", batch_size=32, **FAST)
    a, _ = estimate_mi_on_samples(x, y, cfg)
    test = prepare_samples(x, y, cfg).split.test
    x2, y2 = x.copy(), y.copy()
    x2[test] += 5.0
    y2[test] = rng.normal(size=(test.size, 2))
    b, _ = estimate_mi_on_samples(x2, y2, cfg)
    np.testing.assert_array_equal(a.estimates["dv"], b.estimates["dv"])
    assert a.selection == b.selection
    assert a.final_train["dv"][0] == b.final_train["dv"][0]
    assert a.final["dv"] != b.final["dv"]


def test_checkpoint_is_the_best_validation_score_and_patience_stops() -> None:
    """The chosen step is the argmax of the recorded validation history (ties: the first);
    training stops after `patience` scores without a new best."""
    x, y = _independent(300, seed=2)
    cfg = sample_config(bound="nwj", batch_size=32, steps=2000, eval_every=20, patience=4)
    res, critic = estimate_mi_on_samples(x, y, cfg)
    hist = np.array(res.selection["validation"])
    best = int(np.argmax(hist[:, 1]))
    assert res.selection["step"] == int(hist[best, 0])
    assert len(hist) - 1 - best == 4  # stopped by patience, not by the step limit
    assert res.selection["stopped_at"] == int(hist[-1, 0]) == res.steps_run
    # the returned critic is that checkpoint, applied to raw rows: it reproduces the estimate
    data = prepare_samples(x, y, cfg)
    xt, yt = (torch.from_numpy(a[data.split.test]).float() for a in (x, y))
    again = rows_value(critic, xt, yt, ("nwj",))["nwj"]
    assert again[0] == pytest.approx(res.final["nwj"][0], abs=1e-5)


@pytest.mark.parametrize("bound", ["infonce", pytest.param("dv", marks=pytest.mark.slow),
                                   pytest.param("nwj", marks=pytest.mark.slow)])
def test_independent_data_held_out_estimate_is_near_zero(bound: str) -> None:
    """Independent X, Y (5 + 5 dims, true MI 0), 300 rows, default settings (batch = the 120
    fit rows) except fewer steps: the held-out estimate is at most 0.1 nats (scored on their
    own training rows, critics reported up to 5 nats before held-out evaluation)."""
    x, y = _independent(300, seed=3)
    res, _ = estimate_mi_on_samples(x, y, sample_config(bound=bound, steps=400, batch_size=120))
    assert res.final[bound][0] <= 0.1, res.final


def test_standardized_critic_applies_the_map() -> None:
    torch.manual_seed(0)
    inner = nn.Bilinear(2, 3, 1)

    class Inner(nn.Module):
        def scores(self, x, y):
            return inner(x[:, None, :].expand(-1, y.shape[0], -1),
                         y[None, :, :].expand(x.shape[0], -1, -1))[..., 0]

    rng = np.random.default_rng(0)
    x, y = rng.standard_cauchy(size=(50, 2)), rng.normal(size=(50, 3)) * 7
    std = Standardizer.fit(x, y)
    wrapped = StandardizedCritic(Inner(), std)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    zx, zy = (torch.from_numpy(a) for a in std(x, y))
    with torch.no_grad():
        torch.testing.assert_close(wrapped.scores(xt.float(), yt.float()),
                                   Inner().scores(zx.float(), zy.float()))


def test_divergence_stops_the_run_with_advice() -> None:
    """Data scaled by 1e6 without standardisation: the critic's values explode (4.4e5 nats
    used to be reported); the run raises DivergenceError naming what to change."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = 0.8 * x + 0.6 * rng.normal(size=(400, 3))
    cfg = sample_config(bound="nwj", batch_size=32, standardize=False, **FAST)
    with pytest.raises(DivergenceError, match=r"max_abs_score.*--lr.*smile.*standardi"):
        estimate_mi_on_samples(x * 1e6, y * 1e6, cfg)
    res, _ = estimate_mi_on_samples(x * 1e6, y * 1e6, sample_config(bound="nwj", batch_size=32,
                                                                     **FAST))
    assert abs(res.final["nwj"][0]) < 5  # standardised: an ordinary number


def test_config_rejects_bad_protocol_settings() -> None:
    for kwargs, match in [({"test_fraction": 1.0}, r"test_fraction must be in \(0, 1\)"),
                          ({"test_fraction": 0}, r"test_fraction must be in \(0, 1\)"),
                          ({"validation_fraction": -0.1}, r"validation_fraction must be in"),
                          ({"eval_every": 0}, "eval_every must be an int >= 1"),
                          ({"patience": -1}, "patience must be an int >= 0"),
                          ({"max_abs_score": 0.0}, "max_abs_score must be a number > 0"),
                          ({"standardize": 1}, "standardize must be a bool")]:
        with pytest.raises((ValueError, TypeError), match=match):
            EstimateConfig(**kwargs)
    x, y = _independent(100)
    with pytest.raises(ValueError, match=r"batch_size \(64\) is larger than the fit part \(40"):
        prepare_samples(x, y, EstimateConfig(batch_size=64))


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = x[:, :2] + rng.normal(size=(400, 2))
    files = {"ok": (x, y)}
    nan = x.copy()
    nan[7, 0] = math.nan
    files.update(nan=(nan, y), one=(x[:1], y[:1]), rows=(x, y[:300]), flat=(x[:, 0], y[:, 0]),
                 big=(x * 1e300, y))
    for name, (a, b) in files.items():
        np.savez(tmp_path / f"{name}.npz", X=a, Y=b)
    np.savez(tmp_path / "empty.npz")
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    np.save(tmp_path / "arr.npy", x)
    return tmp_path


BAD = [
    (["--data", "{d}/nan.npz"], r"X must be finite: 1 row\(s\) .*row 7"),
    (["--data", "{d}/one.npz"], "at least 2 rows"),
    (["--data", "{d}/rows.npz"], "same number of rows, got 400 and 300"),
    (["--data", "{d}/ok.npz", "--batch-size", "300"], r"--batch-size \(300\) is larger than the"),
    (["--data", "{d}/flat.npz"], r"X must be a 2-D array \[n, d\]"),
    (["--data", "{d}/ok.npz", "--test-fraction", "1"], r"--test-fraction must be in \(0, 1\)"),
    (["--data", "{d}/ok.npz", "--test-fraction", "0"], r"--test-fraction must be in \(0, 1\)"),
    (["--data", "{d}/empty.npz"], "missing: X, Y"),
    (["--data", "{d}/cut.npz"], r"not a readable \.npz file"),
    (["--data", "{d}/arr.npy"], r"single array \(\.npy\)"),
    (["--data", "{d}/big.npz"], "beyond the float32 range"),
    (["--data", "{d}/ok.npz", "--hidden-dim", "0"], "--hidden-dim must be an int >= 1"),
    (["--data", "{d}/ok.npz", "--threads", "0"], "--threads must be an int >= 1"),
    (["--data", "{d}/missing.npz"], "no such .npz file"),
    (["--task", "gaussian", "--mi", "20", "--dim", "1"], "mi / dim must be at most 9"),
    (["--data", "{d}/ok.npz", "--bound", "ksg", "--ksg-k", "0"], "--ksg-k must be an int"),
    (["staircase", "--threads", "0", "--table"], "--threads must be an int >= 1"),
    (["--task", "gaussian", "--critic", "auto"], "--critic auto .* needs --data"),
    (["--data", "{d}/ok.npz", "--critic", "auto", "--validation-fraction", "0"],
     "--validation-fraction > 0"),
]
if not torch.cuda.is_available():
    BAD.append((["--data", "{d}/ok.npz", "--device", "cuda"], "CUDA is not available"))


@pytest.mark.parametrize(("argv", "match"), BAD)
def test_cli_bad_input_is_exit_code_2_with_a_message(npz, capsys, argv, match) -> None:
    argv = [a.format(d=npz) for a in argv]
    with pytest.raises(SystemExit) as exc:
        cli_main([*argv, "--no-progress"] if argv[0] != "staircase" else argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert __import__("re").search(match, err), err


def test_cli_divergence_is_exit_code_1_and_writes_nothing(npz, tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_cauchy(size=(400, 2)) * 1e6
    # noise on the scale of X: MI ~ log 2 per dimension (X + unit noise would be ~14 nats,
    # refused as beyond what 200 rows resolve); the divergence comes from the raw 1e6 scale
    np.savez(tmp_path / "cauchy.npz", X=x, Y=x + 1e6 * rng.standard_cauchy(size=(400, 2)))
    out = tmp_path / "r.json"
    code = cli_main(["--data", str(tmp_path / "cauchy.npz"), "--no-standardize", "--steps", "50",
                     "--no-progress", "--out", str(out)])
    assert code == 1 and not out.exists()
    assert "critic diverged" in capsys.readouterr().err


def test_cli_data_run_reports_held_out_and_train_values(npz, tmp_path, capsys) -> None:
    out = tmp_path / "r.json"
    assert cli_main(["--data", str(npz / "ok.npz"), "--bound", "infonce", "--report", "dv",
                     "--steps", "100", "--eval-every", "25", "--no-progress",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "held out: 200 test rows" in printed and "on the 160 fit rows" in printed
    assert "checkpoint: step" in printed
    record = json.loads(out.read_text())
    assert set(record["final"]) == {"infonce", "dv"}
    assert set(record["final"]["dv"]) == {"estimate", "stderr", "train_estimate", "reliable",
                                          "flags", "interval"}
    assert record["score_cap"]["b"] > 0 and record["config"]["cap_scores"] is True
    assert record["critic"] == {"name": "separable", "hidden_dim": 64, "embed_dim": 16,
                                "layers": 1}
    assert record["config"]["batch_size"] == 128 and record["standardize"] is True
    assert record["selection"]["step"] in [s for s, _ in record["selection"]["validation"]]
    # the printed line names its 95 % interval (the JSON's: estimate ± t_9·se) and what it is for
    low, high = record["final"]["dv"]["interval"]
    assert (f"95 % interval [{low:.4f}, {high:.4f}] (t, 9 df) for the dv value of this critic, "
            "not for I") in printed
    assert cli_main(["--data", str(npz / "ok.npz"), "--bound", "ksg", "--out", str(out)]) == 0
    ksg = json.loads(out.read_text())
    assert ksg["n"] == 400 and ksg["final"]["ksg"]["stderr"] > 0


def test_a_large_held_out_error_is_reported_with_a_warning(monkeypatch, capsys, npz) -> None:
    """A jackknife standard error above UNSTABLE_STDERR keeps the number and adds a warning
    (JSON and stderr); below it, no warning."""
    import mi_bounds.estimation.heldout as heldout

    real = heldout.rows_value

    def noisy(*args, **kwargs):
        out = real(*args, **kwargs)
        if kwargs.get("where") == "on the test rows":
            return {k: (v, heldout.UNSTABLE_STDERR + 0.01) for k, (v, _) in out.items()}
        return out

    x, y = _independent(300)
    cfg = sample_config(bound="dv", batch_size=32, **FAST)
    assert estimate_mi_on_samples(x, y, cfg)[0].extra["warnings"] == []
    assert estimate_mi_on_samples(x, y, cfg)[0].to_dict()["final"]["dv"]["reliable"] is True
    monkeypatch.setattr(heldout, "rows_value", noisy)
    res, _ = estimate_mi_on_samples(x, y, cfg)
    assert res.final["dv"][1] == heldout.UNSTABLE_STDERR + 0.01
    assert res.extra["warnings"] == [
        "dv: UNRELIABLE: the held-out standard error (0.26 nats) exceeds 0.25: a few test pairs "
        "dominate the estimate; InfoNCE or SMILE (--bound smile --clip 5) are steadier"]
    assert res.to_dict()["final"]["dv"]["reliable"] is False
    assert res.to_dict()["final"]["dv"]["flags"] == ["stderr > 0.25"]
    assert cli_main(["--data", str(npz / "ok.npz"), "--bound", "dv", "--steps", "50",
                     "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "warning: dv: UNRELIABLE: the held-out standard error" in out.err
    assert "nats UNRELIABLE (held out" in out.out


class SpikedCritic(nn.Module):
    """T(x, y) = a·x·y (a trainable, starts at 0.5) plus a spike of 30 nats where x > 2.5 and
    y < -2.5: a region the joint (y ≈ x) never reaches but ~8 in 100,000 product pairs do
    (~300 of the 2,000² test pairs): an extrapolating critic, as on bmi's spiral."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.5))

    def _t(self, x: torch.Tensor, y: torch.Tensor, spike: float = 30.0) -> torch.Tensor:
        bump = spike * ((x[..., 0] > 2.5) & (y[..., 0] < -2.5)).float()
        return self.a * x[..., 0] * y[..., 0] + bump

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._t(x, y)

    def cross_scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._t(x[:, None, :], y[None, :, :])

    scores = cross_scores


class _NoSpike(SpikedCritic):
    def cross_scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._t(x[:, None, :], y[None, :, :], spike=0.0)


def test_pairs_scored_beyond_every_fit_pair_do_not_dominate_the_estimate(monkeypatch) -> None:
    """A critic that extrapolates (30 nats on a few product pairs far from the joint) made the
    held-out DV a few pairs' log-mean-exp (bmi spiral: -1.82 ± 3.09) and NWJ absurd. The
    reported critic is capped at the largest value it gives a fit-row pair (min(T, b) is a
    critic, so DV, NWJ and InfoNCE of it stay bounds on I): the spike no longer decides the
    estimate, which is the smooth critic's (under the same cap) with a small standard error."""
    import mi_bounds.estimation.heldout as heldout

    monkeypatch.setattr(heldout, "make_critic", lambda *a, **k: SpikedCritic())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 1))
    y = x + 0.5 * rng.normal(size=(4000, 1))
    cfg = sample_config(bound="dv", report=("nwj",), steps=20, eval_every=10, lr=1e-6,
                        standardize=False)
    res, critic = estimate_mi_on_samples(x, y, cfg)
    cap = res.extra["score_cap"]["b"]
    assert cap < 20  # the spike lies beyond every fit-row positive pair
    data = prepare_samples(x, y, cfg)
    xt, yt = (torch.from_numpy(a[data.split.test]).float() for a in (x, y))
    smooth = _NoSpike()
    smooth.a.data = critic.critic.a.data.clone()
    want = rows_value(smooth, xt, yt, ("dv", "nwj"), cap=cap)
    for name in ("dv", "nwj"):
        est, se = res.final[name]
        assert se < 0.05 and est == pytest.approx(want[name][0], abs=0.05), (name, res.final, want)
        assert res.to_dict()["final"][name]["reliable"] is True
    raw, _ = estimate_mi_on_samples(x, y, replace(cfg, cap_scores=False))
    assert raw.final["dv"][0] < res.final["dv"][0] - 1  # uncapped: the spike decides


def test_auto_critic_keeps_the_candidate_with_the_best_validation_score() -> None:
    """critic='auto' trains the separable and the concat critic (same seed, same batches) and
    keeps the one with the higher best validation score; its result is that critic's run,
    number for number, and the other candidate's test rows are never scored."""
    rng = np.random.default_rng(4)
    x = rng.uniform(size=(300, 1))
    y = x + rng.uniform(-0.1, 0.1, size=(300, 1))
    cfg = sample_config(bound="infonce", batch_size=32, **FAST)
    auto, _ = estimate_mi_on_samples(x, y, cfg, critic="auto")
    single = {c: estimate_mi_on_samples(x, y, cfg, critic=c)[0] for c in ("separable", "concat")}
    best = {c: max(v for _, v in r.selection["validation"]) for c, r in single.items()}
    record = auto.selection["critic"]
    assert record["validation_best"] == best
    chosen = max(best, key=lambda c: (best[c], c == "separable"))
    assert record["chosen"] == chosen
    assert auto.final == single[chosen].final
    assert auto.selection["validation"] == single[chosen].selection["validation"]


def test_auto_critic_drops_a_diverging_candidate(monkeypatch) -> None:
    """A candidate whose critic diverges is dropped (and recorded); if both diverge, the run
    raises DivergenceError instead of reporting a number."""
    import mi_bounds.estimation.heldout as heldout

    real = heldout.make_critic

    def blowing(name, *args, scale=1e6, **kwargs):  # concat: values far beyond max_abs_score
        net = real(name, *args, **kwargs)
        if name == "concat":
            with torch.no_grad():
                net.f[-1].bias.fill_(scale)
        return net

    monkeypatch.setattr(heldout, "make_critic", blowing)
    x, y = _independent(300, seed=5)
    cfg = sample_config(bound="dv", batch_size=32, **FAST)
    res, _ = estimate_mi_on_samples(x, y, cfg, critic="auto")
    assert res.selection["critic"]["chosen"] == "separable"
    assert "critic diverged" in res.selection["critic"]["diverged"]["concat"]
    with pytest.raises(DivergenceError):
        estimate_mi_on_samples(x, y, replace(cfg, max_abs_score=1e-9), critic="auto")
