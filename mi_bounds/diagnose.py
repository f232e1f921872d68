"""Read a preference-training log and say what its chosen log-likelihood did (DESIGN.md §9).

A log is a sequence of records, each a step and TRL's metric names with their values
(``logps/chosen``, ``logps/rejected``, ``rewards/chosen``, ``rewards/rejected``,
``rewards/margins``; ``eval_`` in front for an evaluation). Three kinds of file give one:

* a TRL / transformers ``trainer_state.json``: its ``log_history`` list (train and eval entries
  interleaved, each with its ``step``); a bare JSON list (or JSON Lines) of such entries also works;
* a CSV whose columns are metric names and a step column (``step``, ``global_step``,
  ``train/global_step``, ``_step``; without one the row number is the step). Exports that write
  ``train/logps/chosen`` or ``eval/logps/chosen`` (W&B's rewriting of TRL's names) are read too;
  empty cells mean "not logged at this step";
* this toolkit's align-run result, ``DIR/align/<loss>-seed<s>/result.json`` (also the copies in
  ``results/lm-cpu/*/align_runs/``): its ``history`` list, one record per evaluation, with the
  metrics nested per split (``{"step": 20, "train": {"logps/chosen": …}, "heldout": {…}}``).
  Nested dicts are flattened with ``/`` (``train/logps/chosen``, ``heldout/logps/chosen``), and
  the split is found from the prefix, so a renamed history key (``eval`` for ``heldout``, a flat
  ``train_logps/chosen``) is read as well; see :data:`SPLIT_PREFIXES`.

A directory is read through the file it holds: ``trainer_state.json``, else ``result.json``, else
the ``trainer_state.json`` of its latest ``checkpoint-*`` folder.

:func:`diagnose` classifies the chosen curve (``logps/chosen``, else ``rewards/chosen``) with
:func:`mi_bounds.decline.decline_shape` — the one definition of the four shapes — and reads the
reward margin and the rejected curve beside it (their trend: ``rising``, ``falling`` or ``flat``
by the same noise rule: smoothed ``final - start`` beyond ``±σ``). Errors in the file (not JSON or
CSV, no such metric, fewer than 3 points, NaN) raise :class:`LogError`, which the
``mi-bounds diagnose`` command turns into a message and exit code 2.
"""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mi_bounds.decline import SHAPES, DeclineShape, _as_curve, decline_shape, seed_thresholds

__all__ = [
    "CHOSEN_METRICS",
    "METRICS",
    "SPLIT_PREFIXES",
    "STEP_KEYS",
    "LogError",
    "Series",
    "TrainingLog",
    "diagnose",
    "diagnose_seeds",
    "format_report",
    "log_from_entries",
    "plot_diagnosis",
    "read_log",
    "trend",
]

#: TRL's preference metrics, as ``DPOTrainer`` logs them (``eval_`` prefix in evaluation).
METRICS: tuple[str, ...] = (
    "logps/chosen", "logps/rejected", "rewards/chosen", "rewards/rejected", "rewards/margins",
)
#: the curve that is classified, in order of preference
CHOSEN_METRICS: tuple[str, ...] = ("logps/chosen", "rewards/chosen")
#: column / key names of the step, in order of preference
STEP_KEYS: tuple[str, ...] = (
    "step", "global_step", "train/global_step", "trainer/global_step", "_step", "Step",
)
#: prefixes under which a metric is looked for, per split, in order of preference
SPLIT_PREFIXES: dict[str, tuple[str, ...]] = {
    "train": ("", "train/", "train_"),
    "eval": ("eval_", "eval/", "heldout/", "held_out/", "heldout_", "validation/", "valid/",
             "test/", "test_"),
}
SPLITS: tuple[str, ...] = ("train", "eval")

_FORMATS = {
    "trainer_state": "TRL trainer_state.json (log_history)",
    "log_history": "JSON list of log entries",
    "jsonl": "JSON Lines log entries",
    "csv": "CSV of metric columns",
    "align_result": "mi-bounds align-run result.json (history)",
    "seeds": "several seeds (noise level from their spread)",
}


class LogError(ValueError):
    """A training log that cannot be read or diagnosed (``mi-bounds diagnose`` exits with 2)."""


@dataclass(frozen=True)
class Series:
    """One metric of one split as read from a log.

    Attributes:
        metric: the TRL name (``logps/chosen``) or, for a key given verbatim, the key.
        key: the key or column it was read from (``eval_logps/chosen``).
        split: ``"train"`` or ``"eval"`` (``"?"`` for a key given verbatim).
        steps, values: shape ``[n]``, in log order (values may hold NaN as logged).
    """

    metric: str
    key: str
    split: str
    steps: NDArray[np.float64]
    values: NDArray[np.float64]

    def to_dict(self) -> dict[str, Any]:
        """``{"key", "steps", "values"}``, JSON-ready (NaN as ``None``)."""
        return {"key": self.key, "steps": _jsonable(self.steps.tolist()),
                "values": _jsonable(self.values.tolist())}


@dataclass(frozen=True)
class TrainingLog:
    """Records of one training log: each a dict of numeric values with its step.

    Attributes:
        source: where it was read from (a path, or a caller's label).
        format: a key of the formats listed in the module docstring (``trainer_state``, …).
        records: one flat ``{key: value}`` dict per log entry, in log order.
        step_key: the key holding the step, or ``None`` when the record index is used.
    """

    source: str
    format: str
    records: tuple[dict[str, float], ...]
    step_key: str | None

    def keys(self) -> list[str]:
        """Every key that occurs in some record, sorted."""
        return sorted({k for r in self.records for k in r})

    def _points(self, key: str) -> Series | None:
        steps, values = [], []
        for i, rec in enumerate(self.records):
            if key in rec:
                step = rec.get(self.step_key, math.nan) if self.step_key else float(i)
                steps.append(step)
                values.append(rec[key])
        if not values:
            return None
        return Series(key, key, "?", np.asarray(steps, np.float64), np.asarray(values, np.float64))

    def series(self, metric: str, split: str) -> Series | None:
        """The series of a TRL metric in one split, or ``None`` if the log never has it.

        The keys tried are ``prefix + metric`` for each prefix of :data:`SPLIT_PREFIXES`, then
        (eval only) TRL's per-dataset ``eval_<name>_<metric>`` when exactly one such key exists.

        Raises:
            LogError: several named eval sets log the metric (say which with a verbatim key).
        """
        if split not in SPLIT_PREFIXES:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        for prefix in SPLIT_PREFIXES[split]:
            s = self._points(prefix + metric)
            if s is not None:
                return Series(metric, s.key, split, s.steps, s.values)
        if split == "eval":
            named = [k for k in self.keys() if k.startswith("eval_") and k.endswith("_" + metric)]
            if len(named) > 1:
                raise LogError(f"{self.source}: several eval sets log {metric} "
                               f"({', '.join(named)}); choose one with --metric KEY")
            if named:
                s = self._points(named[0])
                assert s is not None
                return Series(metric, s.key, split, s.steps, s.values)
        return None

    def series_by_key(self, key: str) -> Series | None:
        """The series of a key or column given verbatim, or ``None``."""
        return self._points(key)


# ------------------------------------------------------------------------------------------
# Reading files.
# ------------------------------------------------------------------------------------------


def _number(value: object) -> float | None:
    """A finite or non-finite float for numbers (not bools) and numeric strings, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return float(text)
        except ValueError:
            return None
    return None


def _flatten(entry: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a (nested) dict, nested keys joined with ``/``."""
    out: dict[str, float] = {}
    for key, value in entry.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _step_key(records: Sequence[Mapping[str, float]]) -> str | None:
    for key in STEP_KEYS:
        if records and all(key in r for r in records):
            return key
    for key in STEP_KEYS:  # a step column that some rows lack: keep only rows that have it
        if any(key in r for r in records):
            return key
    return None


def log_from_entries(entries: Iterable[Mapping[str, Any]], *, source: str = "<entries>",
                     format: str = "log_history") -> TrainingLog:
    """A :class:`TrainingLog` from log entries (TRL's ``log_history`` dicts, possibly nested).

    Entries without any numeric value (e.g. strings only) are dropped; nested dicts are
    flattened with ``/``. Raises :class:`LogError` if an entry is not a dict.
    """
    records = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise LogError(f"{source}: log entry {i} is a {type(entry).__name__}, not an object")
        rec = _flatten(entry)
        if rec:
            records.append(rec)
    key = _step_key(records)
    if key is not None:
        records = [r for r in records if key in r]
    return TrainingLog(source, format, tuple(records), key)


def _from_json(data: Any, source: str, fmt: str) -> TrainingLog:
    if isinstance(data, Mapping):
        if isinstance(data.get("log_history"), list):
            return log_from_entries(data["log_history"], source=source, format="trainer_state")
        if isinstance(data.get("history"), list):
            return log_from_entries(data["history"], source=source, format="align_result")
        raise LogError(
            f"{source}: a JSON object with neither 'log_history' (a TRL trainer_state.json) nor "
            f"'history' (a mi-bounds align result.json); its keys: {', '.join(map(str, data))}")
    if isinstance(data, list):
        return log_from_entries(data, source=source, format=fmt)
    raise LogError(f"{source}: JSON {type(data).__name__}, not a log (an object or a list)")


def _from_csv(text: str, source: str) -> TrainingLog:
    reader = csv.DictReader(io.StringIO(text))
    header = [h for h in (reader.fieldnames or []) if h is not None]
    if not any(h.endswith(m) for h in header for m in METRICS):
        shown = ", ".join(header[:8]) + (" …" if len(header) > 8 else "")
        raise LogError(
            f"{source}: neither JSON nor a CSV with TRL metric columns (e.g. logps/chosen, "
            f"rewards/margins); first line's fields: {shown or '(none)'}")
    rows = []
    for row in reader:
        rec = {k: x for k, v in row.items() if k is not None and (x := _number(v)) is not None}
        if rec:
            rows.append(rec)
    key = _step_key(rows)
    if key is not None:
        rows = [r for r in rows if key in r]
    return TrainingLog(source, "csv", tuple(rows), key)


def _file_in_directory(d: Path) -> Path:
    for name in ("trainer_state.json", "result.json"):
        if (d / name).is_file():
            return d / name
    ckpts = sorted(d.glob("checkpoint-*/trainer_state.json"),
                   key=lambda p: int(s) if (s := p.parent.name.split("-")[-1]).isdigit() else -1)
    if ckpts:
        return ckpts[-1]
    raise LogError(f"{d}: a directory without trainer_state.json, result.json or "
                   "checkpoint-*/trainer_state.json")


def read_log(path: str | Path) -> TrainingLog:
    """Read a TRL ``trainer_state.json``, a metrics CSV or a mi-bounds align ``result.json``.

    The format is told from the content, not the name: JSON (an object with ``log_history`` or
    ``history``, or a list of entries), JSON Lines, else CSV with a header row.

    Raises:
        LogError: no such file, not text, not JSON/CSV, or a JSON of another shape.
    """
    p = Path(path)
    if p.is_dir():
        p = _file_in_directory(p)
    if not p.is_file():
        raise LogError(f"{path}: no such file")
    source = str(p)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LogError(f"{source}: not a text file (expected JSON or CSV)") from None
    if not text.strip():
        raise LogError(f"{source}: empty file")
    if text.lstrip().startswith(("{", "[")):
        try:
            return _from_json(json.loads(text), source, "log_history")
        except json.JSONDecodeError as err:
            lines = [ln for ln in text.splitlines() if ln.strip()]
            try:
                entries = [json.loads(ln) for ln in lines]
            except json.JSONDecodeError:
                raise LogError(f"{source}: not valid JSON ({err})") from None
            return _from_json(entries, source, "jsonl")
    return _from_csv(text, source)


# ------------------------------------------------------------------------------------------
# Diagnosis.
# ------------------------------------------------------------------------------------------


def trend(shape: DeclineShape) -> str | None:
    """``rising`` / ``falling`` / ``flat``: the smoothed ``final - start`` against ``±σ``
    (``None`` for a ``too-short`` curve)."""
    if shape.shape == "too-short":
        return None
    if shape.change > shape.noise:
        return "rising"
    if -shape.change > shape.noise:
        return "falling"
    return "flat"


def _checked(s: Series, source: str, least: int = 3) -> Series:
    """The series, if it has ≥ ``least`` points and no NaN/inf (else :class:`LogError`)."""
    bad = ~np.isfinite(s.values) | ~np.isfinite(s.steps)
    if bad.any():
        where = ", ".join(f"{x:g}" for x in s.steps[bad][:5]) + (" …" if bad.sum() > 5 else "")
        raise LogError(f"{source}: {s.key} is NaN or infinite at step(s) {where} "
                       f"({int(bad.sum())} of {s.values.size} points; did training diverge?)")
    if np.unique(s.steps).size < least:
        raise LogError(f"{source}: {s.key} has {np.unique(s.steps).size} logged step(s); the "
                       f"shape needs at least {least} (start, peak, end)")
    return s


def _chosen_series(log: TrainingLog, split: str, metric: str | None) -> Series | None:
    if metric is not None:
        return log.series(metric, split)
    for m in CHOSEN_METRICS:
        s = log.series(m, split)
        if s is not None:
            return s
    return None


def _enough(s: Series | None) -> bool:
    """At least 3 logged steps (NaN counts: reading that series then reports it)."""
    return s is not None and np.unique(s.steps).size >= 3


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_jsonable(v) for v in x]
    return x


def diagnose(
    log: TrainingLog,
    *,
    split: str | None = None,
    metric: str | None = None,
    noise: float | None = None,
    threshold: float | tuple[float, float, float] | None = None,
    min_points: int = 3,
    z: float = 3.0,
) -> dict[str, Any]:
    """The shape of a log's chosen curve and the trends beside it, as one JSON-ready dict.

    Args:
        log: from :func:`read_log` or :func:`log_from_entries`.
        split: ``"train"``, ``"eval"``, or ``None``: the eval series when the log has one with at
            least 3 points, else the train series.
        metric: the curve to classify: a TRL name (looked up in the split) or a key/column given
            verbatim (e.g. ``eval_test_logps/chosen``); default ``logps/chosen``, else
            ``rewards/chosen``.
        noise: per-point noise σ of the curve; default: estimated from it.
        threshold: the level σ itself, or (rise, drop, change) levels (e.g.
            :func:`~mi_bounds.decline.seed_thresholds`); overrides ``noise``.
        min_points: fewer distinct steps (but at least 3) give ``too-short``.
        z: passed to :func:`~mi_bounds.decline.decline_shape`.

    Returns:
        Every field of :class:`~mi_bounds.decline.DeclineShape` for the chosen curve (``shape``,
        ``peak_step``, ``drop_from_peak``, ``noise``, …; NaN as ``None``), and ``source``,
        ``format``, ``split``, ``metric``, ``key``, ``step_source``, ``margin_trend`` and
        ``margin_change`` (of ``rewards/margins``; ``None`` if not logged), ``rejected_trend``
        and ``rejected_change`` (of ``logps/rejected``, or ``rewards/rejected`` when the chosen
        curve is ``rewards/chosen``), ``reading`` (one paragraph), and ``series``: every series
        read, ``{name: {"key", "steps", "values"}}``.

    Raises:
        LogError: no such metric in the split, fewer than 3 points, NaN or infinite values.
    """
    if split is not None and split not in SPLITS:
        raise LogError(f"series must be one of {', '.join(SPLITS)}, got {split!r}")
    if int(min_points) < 3:
        raise LogError(f"min_points must be >= 3, got {min_points}")
    src = log.source
    verbatim = metric is not None and metric not in METRICS and log.series_by_key(metric)
    if verbatim:
        chosen = verbatim
        used_split = split or next((sp for sp in ("eval", "train") if any(
            metric.startswith(p) for p in SPLIT_PREFIXES[sp] if p)), "train")
    else:
        if split is None:
            ev = _chosen_series(log, "eval", metric)
            used_split = "eval" if _enough(ev) else "train"
        else:
            used_split = split
        chosen = _chosen_series(log, used_split, metric)
        if chosen is None:
            wanted = metric or " or ".join(CHOSEN_METRICS)
            known = ", ".join(k for k in log.keys() if any(k.endswith(m) for m in METRICS))
            raise LogError(f"{src}: no {used_split} series of {wanted} "
                           f"(metric keys in the log: {known or 'none'})")
    chosen = _checked(chosen, src)
    result_shape = decline_shape(chosen.values, chosen.steps, noise=noise, threshold=threshold,
                                 z=z, min_points=min_points)
    series = {chosen.metric: chosen.to_dict()}
    out: dict[str, Any] = {
        "source": src, "format": log.format, "split": used_split, "metric": chosen.metric,
        "key": chosen.key, "step_source": log.step_key or "row index",
        **result_shape.to_dict(),
    }
    rejected_name = "rewards/rejected" if chosen.metric == "rewards/chosen" else "logps/rejected"
    for label, name in (("margin", "rewards/margins"), ("rejected", rejected_name)):
        s = log.series(name, used_split) if used_split in SPLITS else None
        out[f"{label}_trend"] = out[f"{label}_change"] = None
        if s is None or np.unique(s.steps).size < 3:  # not logged (enough): no trend
            continue
        s = _checked(s, src)
        sh = decline_shape(s.values, s.steps, z=z)
        if sh.shape != "too-short":
            out[f"{label}_trend"], out[f"{label}_change"] = trend(sh), sh.change
        series[name] = s.to_dict()
    out["reading"] = _reading(out)
    out["series"] = series
    return _jsonable(out)


def diagnose_seeds(
    logs: Sequence[TrainingLog],
    *,
    split: str | None = None,
    metric: str | None = None,
    min_points: int = 3,
    z: float = 3.0,
) -> dict[str, Any]:
    """Several runs that differ only in their seed, with the noise level taken from the seeds.

    The rule of :func:`mi_bounds.decline.shapes_over_seeds`: each seed is classified with its
    own noise estimate, and the mean curve (chosen, margin and rejected averaged across seeds)
    with the levels of :func:`~mi_bounds.decline.seed_thresholds` of the chosen curves (its rise,
    drop and change each against ``z`` times its paired standard error across seeds).

    Returns:
        :func:`diagnose`'s fields for the mean curve (``source`` lists the files), plus
        ``seeds`` (n), ``seed_thresholds`` ({rise, drop, change}), ``counts`` (``{shape:
        number of seeds}``) and ``per_seed`` (each seed's ``source``, ``shape``, ``peak_step``,
        ``drop_from_peak``, ``noise``, ``margin_trend``, ``rejected_trend``).

    Raises:
        LogError: fewer than 2 logs, a log without the series, or seeds logged at other steps.
    """
    if len(logs) < 2:
        raise LogError(f"several seeds need at least 2 logs, got {len(logs)}")
    first = diagnose(logs[0], split=split, metric=metric, min_points=min_points, z=z)
    used_split, used_metric = first["split"], metric or first["metric"]
    grid: NDArray[np.float64] | None = None
    curves: dict[str, list[NDArray[np.float64]]] = {}
    keys: dict[str, str] = {}
    rejected = "rewards/rejected" if first["metric"] == "rewards/chosen" else "logps/rejected"
    verbatim = used_metric not in METRICS and logs[0].series_by_key(used_metric) is not None
    for log in logs:
        chosen = (log.series_by_key(used_metric) if verbatim
                  else _chosen_series(log, used_split, used_metric))
        if chosen is None:
            raise LogError(f"{log.source}: no {used_split} series of {used_metric}")
        steps, values = _as_curve(_checked(chosen, log.source).values, chosen.steps)
        if grid is None:
            grid = steps
        elif not np.array_equal(grid, steps):
            raise LogError(f"{log.source}: {chosen.key} is logged at other steps than in "
                           f"{logs[0].source}; the seeds' noise needs one step grid")
        curves.setdefault(first["metric"], []).append(values)
        keys[first["metric"]] = chosen.key
        for name in ("rewards/margins", rejected):
            side = log.series(name, used_split)
            if side is not None and np.isfinite(side.values).all():
                st, va = _as_curve(side.values, side.steps)
                if np.array_equal(st, steps):
                    curves.setdefault(name, []).append(va)
                    keys[name] = side.key
    assert grid is not None
    matrix = np.stack(curves[first["metric"]])  # (n_seeds, n_steps)
    levels = seed_thresholds(matrix, grid, z=z)
    per_seed = [diagnose(log, split=used_split, metric=used_metric, min_points=min_points, z=z)
                for log in logs]
    n = len(logs)
    mean_entries = [{"step": float(st)} for st in grid]
    for name, rows in curves.items():
        if len(rows) == n:  # a side series every seed logged on the same grid
            for entry, v in zip(mean_entries, np.mean(rows, axis=0), strict=True):
                entry[keys[name]] = float(v)
    sources = [log.source for log in logs]
    mean_log = TrainingLog(f"mean of {n} seeds", "seeds", tuple(mean_entries), "step")
    out = diagnose(mean_log, split=used_split, metric=keys[first["metric"]] if verbatim
                   else first["metric"],
                   threshold=levels, min_points=min_points, z=z)
    counts = {sh: sum(r["shape"] == sh for r in per_seed) for sh in SHAPES}
    out.update(
        source=sources, seeds=n, counts=counts,
        seed_thresholds=dict(zip(("rise", "drop", "change"), levels, strict=True)),
        per_seed=[{k: r[k] for k in ("source", "shape", "peak_step", "drop_from_peak", "noise",
                                     "margin_trend", "rejected_trend")} for r in per_seed])
    out["reading"] = (
        f"Mean of {n} seeds, judged against their paired spread (levels rise {levels[0]:.3g}, "
        f"drop {levels[1]:.3g}, change {levels[2]:.3g}); per seed (own noise): "
        + ", ".join(f"{c} {sh}" for sh, c in counts.items() if c) + ". " + out["reading"])
    return _jsonable(out)


def _reading(r: Mapping[str, Any]) -> str:
    """One paragraph on what the verdict means, from the shape and the margin's trend."""
    what = "log-likelihood" if r["metric"].startswith("logps") else "implicit reward"
    if r["shape"] == "too-short":
        return (f"Too few logged steps ({r['n_points']}) for a verdict: the rule needs "
                "--min-points, and at least 4 when the noise level is estimated from the curve "
                "(pass --noise, e.g. the spread across seeds, to classify 3 points).")
    caveat = ""
    if r["noise_source"] == "estimated" and r["n_points"] < 10:
        caveat = (f" (Only {r['n_points']} points: the noise level estimated from them is rough;"
                  " --noise, e.g. the spread across seeds, makes the verdict firmer.)")
    if r["shape"] == "no-decline":
        return f"The chosen {what} did not fall beyond the noise level.{caveat}"
    when = ("after rising to a peak" if r["shape"] == "rise-then-fall" else "from the start")
    text = f"The chosen {what} fell {when}."
    margin, rejected = r.get("margin_trend"), r.get("rejected_trend")
    if margin == "rising":
        faster = ""
        if rejected == "falling" and r.get("rejected_change") is not None:
            if r["rejected_change"] < r["change"]:
                faster = ", the rejected one faster"
        text += (
            f" The reward margin rose all the same: the preference was learnt by pushing both "
            f"responses down{faster} (likelihood displacement). Under a loss of the margin alone "
            "(DPO = TRL 'sigmoid', IPO, hinge) nothing resists this; mio (= TRL 'nca_pair') and "
            "bco_pair have a chosen term with its own target, and TRL's 'sft' term adds the "
            "chosen NLL "
            "(docs/THEORY.md §2, gradients).")
    elif margin in ("flat", "falling"):
        text += (f" The reward margin is {margin} too, so the fall is not the price of a "
                 "growing margin: check the learning rate, β and the data.")
    else:
        text += " The log has no reward margin to compare with."
    return text + caveat


def format_report(r: Mapping[str, Any]) -> str:
    """The short text report of :func:`diagnose`'s result."""

    def num(x: Any, fmt: str = ".4g") -> str:
        return "n/a" if x is None else format(x, fmt)

    series = r["series"][r["metric"]]
    steps = [s for s in series["steps"] if s is not None]
    unit = " nats" if r["metric"].startswith("logps") else ""
    source = r["source"] if isinstance(r["source"], str) else f"mean of {len(r['source'])} seeds"
    lines = [
        f"{source}: {_FORMATS.get(r['format'], r['format'])}, {r['split']} series",
        f"{r['metric']} ({r['key']}, {r['n_points']} points, steps {num(min(steps), 'g')}–"
        f"{num(max(steps), 'g')}): {r['shape']}",
    ]
    if r["shape"] != "too-short":
        frac = r.get("peak_fraction")
        lines += [
            f"  start {num(r['start'])}, peak {num(r['peak'])} at step {num(r['peak_step'], 'g')}"
            f" ({num(None if frac is None else 100 * frac, '.0f')} % of training), "
            f"final {num(r['final'])}",
            f"  drop from peak {num(r['drop_from_peak'])}{unit}, noise level "
            f"{num(r['noise'])} ({r['noise_source']}; smoothing window {r['window']})",
        ]
    side = [f"{name}: {r[f'{label}_trend']} ({num(r[f'{label}_change'], '+.4g')})"
            for label, name in (("margin", "rewards/margins"), ("rejected", "rejected"))
            if r.get(f"{label}_trend") is not None]
    if side:
        lines.append("  " + "; ".join(side))
    for p in r.get("per_seed", []):
        lines.append(f"  seed {p['source']}: {p['shape']}, peak at step {num(p['peak_step'], 'g')}"
                     f", drop {num(p['drop_from_peak'])}")
    lines.append(textwrap.fill(r["reading"], width=100))
    return "\n".join(lines)


def plot_diagnosis(r: Mapping[str, Any], path: str | Path) -> Path:
    """Draw the chosen curve (raw and smoothed, peak marked) and the margin, titled by the verdict.

    The file type follows the extension (``.png``, ``.pdf``, ``.svg``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mi_bounds.decline import _as_curve, _smooth

    others = [n for n in ("rewards/margins", "logps/rejected", "rewards/rejected")
              if n in r["series"]]
    fig, axes = plt.subplots(1 + bool(others), 1, figsize=(6.4, 3.0 + 2.4 * bool(others)),
                             sharex=True, squeeze=False)
    ax = axes[0, 0]
    s = r["series"][r["metric"]]
    steps, values = _as_curve(s["values"], s["steps"])
    ax.plot(steps, values, ".", color="0.6", ms=3, label=f"{r['key']} (logged)")
    ax.plot(steps, _smooth(values, int(r["window"])), "-", color="C0",
            label=f"smoothed (window {r['window']})")
    if r.get("peak_step") is not None:
        ax.axvline(r["peak_step"], color="C3", ls=":", lw=1)
        ax.plot([r["peak_step"]], [r["peak"]], "o", color="C3", label="peak")
    ax.set_ylabel(r["metric"])
    title = f"{r['shape']}"
    if r["shape"] != "too-short":
        title += (f": peak at step {r['peak_step']:g}, drop {r['drop_from_peak']:.3g} "
                  f"(noise {r['noise']:.2g})")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    if others:
        ax2 = axes[1, 0]
        for i, name in enumerate(others):
            o = r["series"][name]
            st, va = _as_curve(o["values"], o["steps"])
            how = r.get("margin_trend" if name == "rewards/margins" else "rejected_trend")
            ax2.plot(st, va, "-", color=f"C{i + 1}", label=f"{o['key']} ({how})")
        ax2.legend(fontsize=7, loc="best")
        ax2.set_xlabel("step")
    else:
        ax.set_xlabel("step")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
