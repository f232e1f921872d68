"""``mi-bounds diagnose``: what a preference-training log's chosen log-likelihood did.

    mi-bounds diagnose PATH [PATH ...] [--json] [--plot FILE.png] [--series train|eval]
                                       [--metric NAME] [--noise SIGMA] [--min-points N]
                                       [--alpha A]

PATH is a TRL ``trainer_state.json`` (or the output/checkpoint directory holding it), a CSV with
TRL's metric names as columns, or a mi-bounds align-run ``result.json``
(:mod:`mi_bounds.decline.diagnose` lists what is read and how). The verdict is the shape of
docs/THEORY.md §6 (``rise-then-fall``, ``fall-from-start``, ``no-decline``, ``too-short``,
``inconclusive``) of ``logps/chosen`` (else ``rewards/chosen``) at level ``--alpha`` (default
0.05), with the peak step, the rise, the drop from the peak and the change, each with its
``1 - alpha`` interval, the levels and the reward margin's trend. Several PATHs are runs that
differ only in their seed: the verdict is on their mean, judged against its own noise and the
seeds' paired spread (:func:`mi_bounds.decline.diagnose.diagnose_seeds`), with each seed's own
verdict beside it. Logs that are not seeds of one run are refused
(:func:`~mi_bounds.decline.training_log.check_seeds`: one file twice, identical records, or
other recorded settings unless ``--allow-mixed``). A file that cannot be read or diagnosed (a
step logged twice, a cell that is not a number) gives a message naming the file, row and column
on stderr, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from mi_bounds._paths import plot_path
from mi_bounds.decline.diagnose import (
    SPLITS,
    LogError,
    diagnose,
    diagnose_seeds,
    format_report,
    plot_diagnosis,
    read_log,
)
from mi_bounds.decline.displacement import (
    displaced_pairs_report,
    format_displaced_pairs,
    per_pair_chosen_change,
    read_ches_scores,
)
from mi_bounds.decline.training_log import check_seeds

__all__ = ["main"]


def _format_displaced(rows: list[dict]) -> str:
    """The most-displaced pairs, one line each (with the CHES rank where scores were given)."""
    return format_displaced_pairs(
        rows, "train pairs whose chosen log-likelihood fell most (last evaluation - first):")


def _displaced(path: Path, scores: list | None, top: int) -> list[dict] | None:
    """The most-displaced train pairs of an align result.json that logs pairs one by one
    (:func:`mi_bounds.decline.displacement.per_pair_chosen_change`), or None."""
    if path.is_dir() or path.suffix != ".json":
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    history = data.get("history") if isinstance(data, dict) else None
    if not isinstance(history, list):
        return None
    change = per_pair_chosen_change(history)
    if change is None:
        return None
    return displaced_pairs_report(change, scores, k=top)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mi-bounds diagnose",
        description="Classify the chosen log-likelihood curve of a preference-training log "
        "(TRL trainer_state.json, a CSV of TRL metrics, or a mi-bounds align result.json): "
        "rise-then-fall, fall-from-start, no-decline or too-short (docs/THEORY.md §6).",
    )
    p.add_argument("path", type=Path, nargs="+",
                   help="trainer_state.json, its directory, a CSV, or an align-run result.json; "
                   "several paths = runs that differ only in their seed (the noise level is then "
                   "their spread, and the verdict is on their mean)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="draw the curves with the verdict (a directory: DIR/diagnose.png; no "
                   "extension: .png is added; the path written is printed)")
    p.add_argument("--allow-mixed", action="store_true",
                   help="average several PATHs even when their recorded settings differ (loss, "
                   "beta, lr, steps): by default such logs are refused as not seeds of one run")
    p.add_argument("--series", choices=SPLITS, default=None,
                   help="which series to read (default: eval when the log has at least 3 eval "
                   "points, else train)")
    p.add_argument("--metric", default=None,
                   help="the curve to classify: a TRL metric name or a key/column given verbatim "
                   "(default: logps/chosen, else rewards/chosen)")
    p.add_argument("--noise", type=float, default=None,
                   help="noise (standard deviation) of one logged point, e.g. across seeds "
                   "(default: estimated from the curve)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="one-sided level of each test of the rule (rise, drop, fall) and 1 - alpha "
                   "intervals (default: 0.05)")
    p.add_argument("--ches", type=Path, metavar="SCORES.jsonl",
                   help="a `mi-bounds ches` scores file of the run's train pairs: the pairs whose "
                   "chosen log-likelihood fell most are listed with their CHES rank (needs an "
                   "align result.json that logs pairs one by one: align.per_pair)")
    p.add_argument("--top", type=int, default=10,
                   help="how many of the most-displaced pairs to list (default: 10)")
    p.add_argument("--min-points", type=int, default=3,
                   help="fewer logged steps than this (>= 3) give too-short (default: 3)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mi-bounds diagnose``; returns the exit code (2 for a bad log)."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    plot = None
    try:
        if not 0.0 < args.alpha < 0.5:
            raise LogError(f"--alpha must lie in (0, 0.5), got {args.alpha}")
        if args.noise is not None and not args.noise >= 0:
            raise LogError(f"--noise must be a number >= 0, got {args.noise}")
        if args.plot is not None:  # checked before any reading
            plot = plot_path(args.plot, "diagnose.png")
        if args.top < 1:
            raise LogError(f"--top must be an int >= 1, got {args.top}")
        scores = None
        if args.ches is not None:
            if len(args.path) != 1:
                raise LogError("--ches reads one run's per-pair log: give one PATH")
            scores = read_ches_scores(args.ches)  # checked before the log is read
        logs = [read_log(p) for p in args.path]
        if len(logs) > 1:
            check_seeds(logs, allow_mixed=args.allow_mixed)
        if len(logs) == 1:
            result = diagnose(logs[0], split=args.series, metric=args.metric, noise=args.noise,
                              min_points=args.min_points, alpha=args.alpha)
        elif args.noise is not None:
            raise LogError("--noise cannot be given with several seeds: their spread is the noise")
        else:
            result = diagnose_seeds(logs, split=args.series, metric=args.metric,
                                    min_points=args.min_points, alpha=args.alpha)
        if len(logs) == 1:
            displaced = _displaced(args.path[0], scores, args.top)
            if displaced is not None:
                result = {**result, "displaced_pairs": displaced}
            elif scores is not None:
                raise LogError(f"{args.path[0]}: no per-pair log (logps/chosen/per_pair in the "
                               "train section of an align result.json); run align with "
                               "align.per_pair to use --ches")
        if plot is not None:
            plot_diagnosis(result, plot)
    except (LogError, ValueError) as err:
        print(f"mi-bounds diagnose: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        print(format_report(result))
        if result.get("displaced_pairs"):
            print(_format_displaced(result["displaced_pairs"]))
        if plot is not None:
            print(f"plot: {plot}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
