"""Degenerate samples found before any training (docs/THEORY.md §4, "Misuse and edges").

Infinite or unresolvable MI (Y an exact or near-exact function of a continuous X), duplicated
rows, constant columns and float underflow: each is refused with its reason or flagged, never
reported as a finite "reliable" number. Labels: the JS value is the JS bound, KSG's k against n.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mi_bounds.cli import main
from mi_bounds.estimation.degenerate import DegenerateDependence, check_dependence
from mi_bounds.estimation.heldout import estimate_mi_on_samples, prepare_samples, sample_config
from mi_bounds.estimation.ksg import ksg_mi

N = 400


def _x(n: int = N, d: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def _noise(n: int = N, d: int = 2, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def _cfg(**kw: object):
    return sample_config(batch_size=64, steps=20, **kw)


CASES = {
    "identity": lambda x: x.copy(),
    "affine": lambda x: 3.0 * x[:, ::-1] - 7.0,
    "monotone": lambda x: x**3,
    "one duplicated column": lambda x: np.hstack([x[:, 1:2], _noise(d=1)]),
    "linear mix": lambda x: x @ np.array([[1.0, 2.0], [-0.5, 0.25]]) + 1.0,
}


@pytest.mark.parametrize("name", list(CASES))
def test_infinite_mi_is_refused_with_the_reason(name: str) -> None:
    x = _x()
    y = CASES[name](x)
    with pytest.raises(DegenerateDependence, match="infinite") as err:
        prepare_samples(x, y, _cfg())
    assert "Y[:, " in str(err.value) or "X[:, " in str(err.value)
    with pytest.raises(DegenerateDependence, match="infinite"):
        ksg_mi(x, y)


def test_near_exact_relation_is_refused_with_its_size() -> None:
    x = _x()
    y = x + 1e-7 * _noise()
    with pytest.raises(DegenerateDependence, match="near-exact") as err:
        prepare_samples(x, y, _cfg())
    assert "residual variance" in str(err.value)


def test_strong_but_finite_dependence_passes() -> None:
    """rho = 0.999 (I = 3.1 nats per dimension; residual variance 2e-3 of the variance)."""
    x = _x()
    y = 0.999 * x + math.sqrt(1 - 0.999**2) * _noise()
    prepared = prepare_samples(x, y, _cfg())
    assert prepared.flags == []
    assert check_dependence(x, y).infinite == []


def test_discrete_copy_is_finite_not_infinite() -> None:
    """Y = X with binary X: I = H(X) = log 2, finite; only the duplicate rows are reported."""
    x = np.random.default_rng(0).integers(0, 2, size=(N, 1)).astype(float)
    report = check_dependence(x, x.copy())
    assert report.infinite == []
    assert report.duplicate_rows == N - 2
    with pytest.raises(ValueError, match=f"{N - 2} duplicate rows"):
        prepare_samples(x, x.copy(), _cfg())
    kept = prepare_samples(x, x.copy(), _cfg(duplicates="keep"))
    assert any("duplicate" in f for f in kept.flags)


def test_duplicate_rows_refused_dropped_or_flagged() -> None:
    x = _x()
    y = 0.5 * x + _noise()
    xd, yd = np.vstack([x, x[:25]]), np.vstack([y, y[:25]])
    with pytest.raises(ValueError, match=r"25 duplicate rows.*--duplicates drop"):
        prepare_samples(xd, yd, _cfg())
    dropped = prepare_samples(xd, yd, _cfg(duplicates="drop"))
    assert dropped.x.shape[0] == N
    assert dropped.flags == ["removed 25 duplicate rows (of 425) before the split"]
    kept = prepare_samples(xd, yd, _cfg(duplicates="keep"))
    assert kept.x.shape[0] == N + 25 and kept.flags and "25 duplicate rows kept" in kept.flags[0]
    with pytest.raises(ValueError, match="duplicate rows"):
        ksg_mi(xd, yd)


def test_underflow_in_standardisation() -> None:
    """Data scaled by 1e-170: its variance (1e-340) underflows; the standard deviation is
    computed on rescaled values, so the standardised sample is that of the unscaled data."""
    x = _x()
    y = 0.8 * x + 0.6 * _noise()
    tiny = prepare_samples(x * 1e-170, y * 1e-170, _cfg())
    plain = prepare_samples(x, y, _cfg())
    assert torch.allclose(tiny.x, plain.x, atol=1e-5) and torch.allclose(tiny.y, plain.y, atol=1e-5)
    assert ksg_mi(x * 1e-170, y * 1e-170).estimate == pytest.approx(ksg_mi(x, y).estimate,
                                                                     abs=1e-9)
    with pytest.raises(ValueError, match="float32"):
        prepare_samples(x * 1e-170, y * 1e-170, _cfg(standardize=False))


def test_constant_columns_flagged_and_all_constant_refused() -> None:
    x = np.hstack([_x(), np.full((N, 1), 4.0)])
    y = 0.5 * x[:, :2] + _noise()
    prepared = prepare_samples(x, y, _cfg())
    assert prepared.flags == ["X[:, 2] is constant on the train rows (it carries no information)"]
    with pytest.raises(ValueError, match=r"every column of Y is constant.*I\(X; Y\) = 0"):
        prepare_samples(_x(), np.full((N, 1), 2.0), _cfg())
    # constant only in float32 (the critic's precision), without standardisation
    with pytest.raises(ValueError, match="float32"):
        prepare_samples(x[:, :2], 1e8 + 1e-3 * _noise(d=1), _cfg(standardize=False))


def test_flags_reach_the_result() -> None:
    x = np.hstack([_x(), np.full((N, 1), 4.0)])
    y = 0.5 * x[:, :2] + _noise()
    result, _ = estimate_mi_on_samples(x, y, _cfg(report=("infonce",)))
    for name in result.final:
        assert "X[:, 2] is constant" in result.flags[name][0]
        assert result.to_dict()["final"][name]["reliable"] is False


def test_bfloat16_is_upcast_like_float16() -> None:
    x = torch.from_numpy(_x()).to(torch.bfloat16)
    y = torch.from_numpy(0.5 * _x() + _noise()).to(torch.bfloat16)
    for dtype in (torch.bfloat16, torch.float16):
        prepared = prepare_samples(x.to(dtype), y.to(dtype), _cfg())
        assert prepared.x.dtype == torch.float32


def test_ksg_k_against_n() -> None:
    x = _x(n=40)
    y = 0.5 * x + _noise(n=40)
    assert ksg_mi(x, y, k=3).flags == ()
    flagged = ksg_mi(x, y, k=10)
    assert flagged.flags and "k = 10" in flagged.flags[0] and "n = 40" in flagged.flags[0]


# ---------------------------------------------------------------------------------- CLI


def _npz(tmp_path, x, y, name="d.npz"):
    path = tmp_path / name
    np.savez(path, X=x, Y=y)
    return str(path)


def test_cli_identity_is_refused_for_every_bound(tmp_path, capsys) -> None:
    data = _npz(tmp_path, _x(), _x())
    for bound in ("smile", "dv", "nwj", "infonce", "js", "ksg"):
        code = main(["estimate", "--data", data, "--bound", bound, "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and "infinite" in err and "Traceback" not in err, (bound, err)


def test_cli_js_is_labelled_as_the_js_bound(tmp_path, capsys) -> None:
    out = tmp_path / "r.json"
    code = main(["estimate", "--task", "gaussian", "--mi", "1", "--dim", "2", "--bound", "js",
                 "--steps", "30", "--eval-batches", "4", "--no-progress", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    line = next(ln for ln in text.splitlines() if ln.startswith("js:"))
    assert "JS bound" in line and "not MI" in line and "JSD" in line
    rec = json.loads(out.read_text())["final"]["js"]
    assert rec["jsd"] == pytest.approx((rec["estimate"] + 2 * math.log(2)) / 2, abs=1e-12)
    assert "not MI" in rec["label"]


def test_cli_unknown_bound_lists_ksg(capsys) -> None:
    assert main(["estimate", "--bound", "nope"]) == 2
    err = capsys.readouterr().err
    assert "ksg" in err and "infonce" in err and "--bound" in err


@pytest.mark.parametrize("flag", [["--steps", "10"], ["--test-fraction", "0.3"],
                                  ["--device", "cpu"], ["--critic", "concat"]])
def test_cli_ksg_refuses_what_it_ignores(flag, capsys) -> None:
    assert main(["estimate", "--bound", "ksg", "--samples", "200", *flag]) == 2
    err = capsys.readouterr().err
    assert flag[0] in err and "ksg" in err


def test_cli_ksg_k_close_to_n(tmp_path, capsys) -> None:
    x = _x(n=40)
    data = _npz(tmp_path, x, 0.5 * x + _noise(n=40))
    assert main(["estimate", "--data", data, "--bound", "ksg", "--ksg-k", "25"]) == 2
    assert "--ksg-k" in capsys.readouterr().err
    assert main(["estimate", "--data", data, "--bound", "ksg", "--ksg-k", "10"]) == 0
    assert "UNRELIABLE" in capsys.readouterr().out


def test_cli_duplicates_flag(tmp_path, capsys) -> None:
    x = _x()
    y = 0.5 * x + _noise()
    data = _npz(tmp_path, np.vstack([x, x[:7]]), np.vstack([y, y[:7]]))
    assert main(["estimate", "--data", data, "--no-progress"]) == 2
    assert "7 duplicate rows" in capsys.readouterr().err


def test_interrupted_estimate_keeps_the_best_checkpoint(tmp_path, monkeypatch, capsys) -> None:
    """Ctrl-C during training on a sample: the best checkpoint so far is reported (flagged),
    written to --out, and the command ends with exit code 130 and a one-line note."""
    from mi_bounds.estimation import tasks

    real = tasks.ArrayTask.__call__

    def interrupt_at_60(self, step, batch_size, gen):
        if step == 60:
            raise KeyboardInterrupt
        return real(self, step, batch_size, gen)

    monkeypatch.setattr(tasks.ArrayTask, "__call__", interrupt_at_60)
    x = _x()
    data = _npz(tmp_path, x, 0.8 * x + 0.6 * _noise())
    out = tmp_path / "r.json"
    code = main(["estimate", "--data", data, "--steps", "500", "--eval-every", "20",
                 "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err
    assert "interrupted (Ctrl-C) at step 60" in err and "run the same command again" in err
    rec = json.loads(out.read_text())
    assert rec["selection"]["interrupted_at"] == 60 and rec["selection"]["step"] in (0, 20, 40, 60)
    assert rec["final"]["smile"]["reliable"] is False
    assert "interrupted" in rec["final"]["smile"]["flags"][-1]
