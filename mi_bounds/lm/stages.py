"""The four stages of a small-LM run, in order: base, sample, align, report.

Each stage lives in its own module and reads alone: :mod:`mi_bounds.lm.base`,
:mod:`mi_bounds.lm.sample`, :mod:`mi_bounds.lm.align`, :mod:`mi_bounds.lm.report`; the run
directory they share (layout, config, inputs, resumption) is :mod:`mi_bounds.lm.run_dir`; a
config with a ``grid`` runs several align settings side by side (:mod:`mi_bounds.lm.grid`). This
module only names the stages (:data:`STAGES`), runs them in order (:func:`run_all`) and
re-exports the entry points, so ``from mi_bounds.lm import stages`` gives the whole pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mi_bounds.lm import align, grid, report
from mi_bounds.lm.align import align_one
from mi_bounds.lm.base import copy_base, run_base
from mi_bounds.lm.run_dir import Run, StageInterrupted, open_run
from mi_bounds.lm.sample import run_sample

__all__ = [
    "STAGES",
    "Run",
    "StageInterrupted",
    "align_one",
    "copy_base",
    "open_run",
    "run_align",
    "run_all",
    "run_base",
    "run_report",
    "run_sample",
]



def run_align(run: Run, *, stop_after: int | None = None,
              deadline: float | None = None) -> list[dict[str, Any]]:
    """The align stage: :func:`mi_bounds.lm.align.run_align`, or, for a config with a grid,
    one align stage per grid setting (:func:`mi_bounds.lm.grid.run_grid_align`).

    ``deadline`` (a :func:`time.monotonic` value): a grid starts a setting only if it would end
    before it (:func:`~mi_bounds.lm.grid.run_grid_align`); a config without a grid is one
    setting, started only before it (otherwise nothing runs and ``[]`` is returned).
    """
    if run.config.grid:
        return grid.run_grid_align(run, stop_after=stop_after, deadline=deadline)
    if deadline is not None and time.monotonic() >= deadline:
        run.log("align: not started (past the deadline)")
        return []
    return align.run_align(run, stop_after=stop_after)


def run_report(run: Run, out_dir: Path | None = None) -> list[Path]:
    """The report stage: :func:`mi_bounds.lm.report.run_report`, or, for a config with a grid,
    every setting's report and the side-by-side one (:func:`mi_bounds.lm.grid.run_grid_report`).
    """
    if run.config.grid:
        return grid.run_grid_report(run, out_dir)
    return report.run_report(run, out_dir)


STAGES: dict[str, Callable[..., Any]] = {
    "base": run_base, "sample": run_sample, "align": run_align, "report": run_report,
}


def run_all(run: Run) -> list[Path]:
    """base, sample, align, report in order; finished work is skipped."""
    run_base(run)
    run_sample(run)
    run_align(run)
    return run_report(run)
