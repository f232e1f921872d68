"""`mi-bounds diagnose` refuses inputs that are not what they claim to be.

Seeds that are not seeds (the same file twice, different losses or settings), a step logged
twice, non-numeric cells and string steps are errors that name the file, the row and the
column, never silent repairs; the explanation names the metric it read.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mi_bounds.cli import main


def _curve(n: int = 12, seed: int = 0) -> tuple[list[int], list[float]]:
    rng = np.random.default_rng(seed)
    steps = list(range(10, 10 * n + 1, 10))
    u = np.linspace(0, 1, n)
    return steps, (-8.0 - 3.0 * u**2 + rng.normal(0, 0.05, n)).tolist()


def _csv(path, rows, header="step,logps/chosen,rewards/margins"):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return str(path)


def _good_rows(seed: int = 0):
    steps, c = _curve(seed=seed)
    return [[s, v, 0.1 * i] for i, (s, v) in enumerate(zip(steps, c, strict=True))]


def _align(path, loss: str, seed: int, beta: float = 0.1, curve_seed: int | None = None):
    steps, c = _curve(seed=seed if curve_seed is None else curve_seed)
    hist = [{"step": s, "train": {"logps/chosen": v, "rewards/margins": 0.1 * i}}
            for i, (s, v) in enumerate(zip(steps, c, strict=True))]
    path.write_text(json.dumps({"loss": loss, "seed": seed, "beta": beta, "lr": 1e-3,
                                "history": hist, "final": hist[-1]}))
    return str(path)


def _run(argv, capsys):
    code = main(["diagnose", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_the_same_file_twice_is_not_two_seeds(tmp_path, capsys):
    path = _csv(tmp_path / "a.csv", _good_rows())
    code, _, err = _run([path, path], capsys)
    assert code == 2 and "same file" in err and "a.csv" in err


def test_identical_contents_are_not_two_seeds(tmp_path, capsys):
    a = _csv(tmp_path / "a.csv", _good_rows())
    b = _csv(tmp_path / "b.csv", _good_rows())
    code, _, err = _run([a, b], capsys)
    assert code == 2 and "identical" in err and "b.csv" in err


def test_different_losses_are_not_seeds(tmp_path, capsys):
    a = _align(tmp_path / "dpo.json", "dpo", 0)
    b = _align(tmp_path / "mio.json", "mio", 1)
    code, _, err = _run([a, b], capsys)
    assert code == 2 and "loss" in err and "'dpo'" in err and "'mio'" in err
    assert "--allow-mixed" in err
    code, out, _ = _run([a, b, "--allow-mixed"], capsys)
    assert code == 0 and "mean of 2 seeds" in out


def test_different_settings_are_not_seeds(tmp_path, capsys):
    a = _align(tmp_path / "a.json", "dpo", 0, beta=0.1)
    b = _align(tmp_path / "b.json", "dpo", 1, beta=0.5)
    code, _, err = _run([a, b], capsys)
    assert code == 2 and "beta" in err


def test_true_seeds_pass(tmp_path, capsys):
    a = _align(tmp_path / "a.json", "dpo", 0)
    b = _align(tmp_path / "b.json", "dpo", 1)
    code, _, err = _run([a, b], capsys)
    assert code == 0, err


def test_a_step_logged_twice_is_an_error_naming_the_rows(tmp_path, capsys):
    rows = _good_rows()
    rows.insert(5, [rows[4][0], -9.0, 0.3])  # step of row 5 again
    path = _csv(tmp_path / "d.csv", rows)
    code, _, err = _run([path], capsys)
    assert code == 2
    assert f"step {rows[4][0]}" in err and "logps/chosen" in err and "rows 6 and 7" in err


def test_a_non_numeric_cell_is_an_error_naming_row_and_column(tmp_path, capsys):
    rows = _good_rows()
    rows[3][1] = "oops"
    path = _csv(tmp_path / "d.csv", rows)
    code, _, err = _run([path], capsys)
    assert code == 2 and "row 5" in err and "logps/chosen" in err and "'oops'" in err


def test_string_steps_are_an_error_not_the_row_index(tmp_path, capsys):
    rows = [[f"s{r[0]}", *r[1:]] for r in _good_rows()]
    path = _csv(tmp_path / "d.csv", rows)
    code, _, err = _run([path], capsys)
    assert code == 2 and "step" in err and "'s10'" in err and "row 2" in err


def test_json_entry_with_a_string_metric_is_an_error(tmp_path, capsys):
    steps, c = _curve()
    entries = [{"step": s, "logps/chosen": v} for s, v in zip(steps, c, strict=True)]
    entries[2]["logps/chosen"] = "n/a"
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"log_history": entries}))
    code, _, err = _run([str(path)], capsys)
    assert code == 2 and "entry 2" in err and "logps/chosen" in err


def test_the_explanation_names_the_metric(tmp_path, capsys):
    steps, c = _curve()
    rows = [[s, v, 0.1 * i, 0.7 - 0.01 * i] for i, (s, v) in enumerate(zip(steps, c,
                                                                          strict=True))]
    path = _csv(tmp_path / "d.csv", rows, header="step,logps/chosen,rewards/margins,loss")
    code, out, _ = _run([path, "--metric", "loss"], capsys)
    assert code == 0
    assert "implicit reward" not in out and "log-likelihood" not in out
    assert "'loss'" in out
    code, out, _ = _run([path], capsys)
    assert code == 0 and "chosen log-likelihood (logps/chosen)" in out


@pytest.mark.parametrize("plot", ["fig", "figs/"])
def test_plot_path_is_honoured(tmp_path, capsys, plot):
    path = _csv(tmp_path / "d.csv", _good_rows())
    target = tmp_path / plot
    if plot.endswith("/"):
        target.mkdir()
    code, out, _ = _run([path, "--plot", str(target) + ("/" if plot.endswith("/") else "")],
                        capsys)
    want = tmp_path / ("fig.png" if plot == "fig" else "figs/diagnose.png")
    assert code == 0 and want.is_file()
    assert f"plot: {want}" in out


def test_plot_into_an_unwritable_place_fails_before_reading(tmp_path, capsys):
    path = _csv(tmp_path / "d.csv", _good_rows())
    code, _, err = _run([path, "--plot", "/proc/x/y.png"], capsys)
    assert code == 2 and "--plot" in err
