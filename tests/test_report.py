"""The verification report: every fact holds, and a broken bound is reported as failing."""

from __future__ import annotations

import pytest
import torch

from mi_bounds import bounds as B
from mi_bounds.cli import main as cli_main
from toy_models import report


def test_report_all_facts_hold(capsys):
    assert cli_main(["report", "--worlds", "30", "--critics", "6"]) == 0
    out = capsys.readouterr().out
    assert "15/15 facts hold" in out and "FAILED" not in out


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("dv_bound", ["1. DV(T) <= KL", "3. |DV(T*) - KL|"]),
        ("nwj_bound", ["3. |NWJ(T*) - KL|"]),
        ("tuba_bound", ["3. |TUBA(T*,a) - KL|"]),
        ("js_bound", ["3. |JS(T*) - (2JSD-2log2)|"]),
        ("infonce_bound", ["5. InfoNCE batch value <= log K"]),
    ],
)
def test_report_detects_a_wrong_bound(monkeypatch, name, rows):
    """Mutation check: a bound shifted up by 0.01 is caught by its fact 3 row (and fact 1 or 5
    rows where its random critics come within 0.01 of the target), and the other bounds' rows
    still hold."""
    real = getattr(B, name)

    def wrong(*args, **kw) -> torch.Tensor:
        return real(*args, **kw) + 0.01

    monkeypatch.setattr(B, name, wrong)
    result = {r.fact: r for r in report.verify(worlds=20, critics=4, seed=1)}
    for row in rows:
        assert not result[row].ok, row
    if name != "js_bound":
        assert result["1. JS(T) <= 2JSD - 2log2"].ok
    else:
        assert result["1. DV(T) <= KL"].ok


def test_cli_usage_and_unknown_command(capsys):
    assert cli_main([]) == 2
    assert cli_main(["--help"]) == 0
    assert "report" in capsys.readouterr().out
    assert cli_main(["nope"]) == 2
