"""The verification report: every fact holds, and a broken bound is reported as failing."""

from __future__ import annotations

import torch

from mi_bounds import bounds as B
from mi_bounds.cli import main as cli_main
from toy_models import report


def test_report_all_facts_hold(capsys):
    assert cli_main(["report", "--worlds", "30", "--critics", "6"]) == 0
    out = capsys.readouterr().out
    assert "15/15 facts hold" in out and "FAILED" not in out


def test_report_detects_a_wrong_bound(monkeypatch):
    """A DV 'bound' shifted up by 0.01 must be caught by fact 1 and fact 3 rows."""
    real = B.dv_bound

    def wrong(*args, **kw) -> torch.Tensor:
        return real(*args, **kw) + 0.01

    monkeypatch.setattr(B, "dv_bound", wrong)
    rows = {r.fact: r for r in report.verify(worlds=20, critics=4, seed=1)}
    assert not rows["1. DV(T) <= KL"].ok
    assert not rows["3. |DV(T*) - KL|"].ok
    assert rows["1. JS(T) <= 2JSD - 2log2"].ok


def test_cli_usage_and_unknown_command(capsys):
    assert cli_main([]) == 2
    assert cli_main(["--help"]) == 0
    assert "report" in capsys.readouterr().out
    assert cli_main(["nope"]) == 2
