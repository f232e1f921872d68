"""Several align settings from one base model and one sample: the grid of a preset.

A config with a non-empty ``grid`` (:class:`mi_bounds.lm.config.RunConfig`) runs, after its base
and sample stages, one align stage per grid entry, each in a run directory of its own that
shares the base and the sample by symbolic links::

    DIR/grid/<name>/config.json     the single-setting config (align overridden, no grid)
    DIR/grid/<name>/base -> ../../base,  sample -> ../../sample
    DIR/grid/<name>/align/...       as in any run directory (resumable, run by run)
    DIR/grid/<name>/report/...      the report of that setting
    DIR/report/grid_*.{md,json,png,pdf}   every setting side by side

``<name>`` is :meth:`RunConfig.variant_name` (e.g. ``beta0.1-lr5e-05``, ``...-gold``). The
settings run in the order of the grid, loss by loss, seed by seed; a re-run skips finished
(loss, seed) runs, so a killed grid resumes where it stopped.

The settings share the base model and the sample, so the grid shares what depends on nothing
else: the reference log-probabilities of the pairs and the step-0 evaluation. It hands each
setting the ``align/`` folders of the others (:func:`shared_align_dirs`), and the align stage
reuses a reference pass or a step-0 evaluation stored there (where the step-0 key agrees:
:func:`mi_bounds.lm.align.load_reference`) instead of computing it again.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from mi_bounds.lm import _io
from mi_bounds.lm.align import run_align
from mi_bounds.lm.report import (
    _COLORS,
    matched_markdown,
    plt,
    run_report,
    save_figure,
    shape_label,
    summarise,
)
from mi_bounds.lm.run_dir import Run, open_run, require_stage

__all__ = ["grid_runs", "run_grid_align", "run_grid_report", "shared_align_dirs"]


def _link(target: Path, link: Path) -> None:
    """``link`` -> ``target`` (relative symlink; a copy where links are not supported)."""
    if link.is_symlink() or link.exists():
        return
    try:
        os.symlink(os.path.relpath(target, link.parent), link, target_is_directory=True)
    except OSError:
        shutil.copytree(target, link)


def grid_runs(run: Run) -> list[tuple[str, Run]]:
    """Open (creating if needed) the run directory of every grid entry of ``run``."""
    require_stage(run, run.dir / "sample" / "data.json", "sample")
    out = []
    for i in range(len(run.config.grid)):
        name = run.config.variant_name(i)
        d = run.dir / "grid" / name
        d.mkdir(parents=True, exist_ok=True)
        for stage in ("base", "sample"):
            _link(run.dir / stage, d / stage)
        out.append((name, open_run(d, run.config.variant(i), model_path=run.model_path,
                                   pairs_path=run.pairs_path, device=str(run.device),
                                   log=run.log)))
    return out


def shared_align_dirs(settings: list[tuple[str, Run]], name: str) -> list[Path]:
    """The ``align/`` folders of the settings other than ``name`` (sorted by path), whose
    reference passes and step-0 evaluations setting ``name`` may reuse: every setting of a
    grid aligns from the same base model and pairs (``settings``: :func:`grid_runs`)."""
    return sorted(sub.dir / "align" for other, sub in settings if other != name)


def run_grid_align(run: Run, *, stop_after: int | None = None,
                   deadline: float | None = None) -> list[dict[str, Any]]:
    """The align stage of every grid entry, in order (finished runs are skipped); each
    setting reuses the reference passes and step-0 evaluation the others stored.

    ``deadline``: a :func:`time.monotonic` value. A setting starts only if it would end before
    it, taking the longest setting run so far as its duration (none: no setting starts after
    the deadline); the settings not started are logged and left for a re-run.
    """
    results, longest = [], 0.0
    settings = grid_runs(run)
    for name, sub in settings:
        if deadline is not None and time.monotonic() + longest > deadline:
            run.log(f"grid: {name} not started (it would end after the deadline)")
            continue
        run.log(f"grid: {name}")
        started = time.monotonic()
        results += run_align(sub, stop_after=stop_after,
                             shared=shared_align_dirs(settings, name))
        longest = max(longest, time.monotonic() - started)
    return results


def _grid_table(summaries: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    header = ["setting", "loss", "seeds", "epochs", "chosen Δ", "chosen drop", "shape train",
              "shape held-out", "reward acc (held-out)", "acc held-out", "KL (sampled)"]
    rows = []
    for name, summary in summaries.items():
        for loss, e in summary.items():
            sh = e.get("shapes", {})

            def f(key: str, digits: int = 2, e: dict = e) -> str:
                d = e[key]
                return "n/a" if not np.isfinite(d["mean"]) else \
                    f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"

            rows.append([name, loss, str(len(e["seeds"])), f"{e.get('epochs', float('nan')):.2f}",
                         f("chosen_change"), f("chosen_drop_from_peak"),
                         shape_label(sh.get("train", {})), shape_label(sh.get("heldout", {})),
                         f("heldout_reward_accuracy"), f("acc_heldout"), f("kl_final", 3)])
    return header, rows


def _plot_grid(results: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """Rows: settings. Columns: train chosen log-lik. change against step, and against margin."""
    from mi_bounds.decline.compare import by_loss, series

    names = list(results)
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 2.6 * len(names) + 0.6), squeeze=False)
    for r, name in enumerate(names):
        for i, (loss, runs) in enumerate(by_loss(results[name]).items()):
            c = _COLORS.get(loss, f"C{i % 10}")
            for j, run in enumerate(runs):
                s, y = series(run, "train", "logps/chosen")
                _, m = series(run, "train", "rewards/margins")
                lab = f"{loss}" if j == 0 else None
                axes[r, 0].plot(s, y - y[0], color=c, lw=0.9, alpha=0.85, label=lab)
                axes[r, 1].plot(m, y - y[0], color=c, lw=0.9, alpha=0.85, marker=".", ms=2)
        axes[r, 0].set_ylabel(f"{name}\nchosen Δ (nats)", fontsize=8)
        for ax in axes[r]:
            ax.axhline(0, color="0.6", lw=0.6)
    axes[0, 0].legend(fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel("alignment step")
    axes[-1, 1].set_xlabel("reward margin (train pairs)")
    axes[0, 0].set_title("train chosen log-lik. change against step (one line per seed)",
                         fontsize=9)
    axes[0, 1].set_title("… against the reward margin", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_dir, "grid_chosen")


def run_grid_report(run: Run, out_dir: Path | None = None) -> list[Path]:
    """Each setting's own report, then every setting side by side in ``DIR/report``."""
    from mi_bounds.decline.compare import compare

    out_dir = Path(out_dir or run.dir / "report")
    summaries, comparisons, all_results, paths = {}, {}, {}, []
    for name, sub in grid_runs(run):
        results = [_io.read_json(p) for p in sorted((sub.dir / "align").glob("*/result.json"))]
        if not results:
            continue
        paths += run_report(sub)
        summaries[name] = summarise(results)
        comparisons[name] = compare(results)
        all_results[name] = results
    if not summaries:
        raise ValueError(f"{run.dir}: no finished alignment runs in any grid setting")
    header, rows = _grid_table(summaries)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    paths.append(_io.write_text(out_dir / "grid_table.md", "\n".join(md) + "\n"))
    matched = [f"## {name}\n\n" + matched_markdown(c) for name, c in comparisons.items()]
    paths.append(_io.write_text(out_dir / "grid_matched.md", "\n".join(matched)))
    paths += _plot_grid(all_results, out_dir)
    sample = _io.read_json(run.dir / "sample" / "data.json")
    paths.append(_io.write_json(out_dir / "grid_report.json", {
        "preset": run.config.preset, "config": run.config.to_dict(),
        "base_accuracy": sample.get("base_accuracy", {}), "counts": sample.get("counts", {}),
        "summary": summaries, "comparison": comparisons}))
    run.log(f"grid report: {out_dir}")
    return paths
