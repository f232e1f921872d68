"""Preference-training logs: TRL's metrics from a trainer_state.json, a CSV or an align result.

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

The logs are read by :func:`read_log` (a file or a directory) or :func:`log_from_entries`
(records already in memory); what they say is :mod:`mi_bounds.decline.diagnose`'s business.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CHOSEN_METRICS",
    "FORMATS",
    "METRICS",
    "SPLITS",
    "SPLIT_PREFIXES",
    "STEP_KEYS",
    "LogError",
    "Series",
    "TrainingLog",
    "check_seeds",
    "jsonable",
    "log_from_entries",
    "read_log",
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

#: the formats a log can come in, with their description
FORMATS: dict[str, str] = {
    "trainer_state": "TRL trainer_state.json (log_history)",
    "log_history": "JSON list of log entries",
    "jsonl": "JSON Lines log entries",
    "csv": "CSV of metric columns",
    "align_result": "mi-bounds align-run result.json (history)",
    "seeds": "several seeds (noise level from their spread)",
}


#: every split prefix + metric name: the keys whose values must be numbers
_STRICT_METRIC_KEYS = frozenset(p + m for ps in SPLIT_PREFIXES.values() for p in ps
                                for m in METRICS)


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
        return {"key": self.key, "steps": jsonable(self.steps.tolist()),
                "values": jsonable(self.values.tolist())}


@dataclass(frozen=True)
class TrainingLog:
    """Records of one training log: each a dict of numeric values with its step.

    Attributes:
        source: where it was read from (a path, or a caller's label).
        format: a key of the formats listed in the module docstring (``trainer_state``, …).
        records: one flat ``{key: value}`` dict per log entry, in log order.
        step_key: the key holding the step, or ``None`` when the record index is used.
        rows: where each record came from, for messages: the line of a CSV file (header =
            line 1), the index of a JSON entry (empty: the record index).
        row_label: ``"row"`` (CSV lines) or ``"entry"`` (JSON entries).
        meta: the run's settings recorded beside the log (an align result's ``loss``,
            ``beta``, ``lr``, ``seed``, …; a trainer_state's ``max_steps``,
            ``train_batch_size``, …), compared by :func:`check_seeds`.
    """

    source: str
    format: str
    records: tuple[dict[str, float], ...]
    step_key: str | None
    rows: tuple[int, ...] = ()
    row_label: str = "entry"
    meta: Mapping[str, Any] = field(default_factory=dict)

    def where(self, i: int) -> int:
        """The row (CSV line) or entry number of record ``i``."""
        return self.rows[i] if self.rows else i

    def keys(self) -> list[str]:
        """Every key that occurs in some record, sorted."""
        return sorted({k for r in self.records for k in r})

    def _points(self, key: str) -> Series | None:
        """The points of ``key``; a step logged twice for it is a :class:`LogError` naming
        both rows (a resumed run that logs some steps again, or two runs in one file)."""
        steps, values = [], []
        seen: dict[float, int] = {}
        for i, rec in enumerate(self.records):
            if key in rec:
                step = rec.get(self.step_key, math.nan) if self.step_key else float(i)
                if step in seen:
                    raise LogError(
                        f"{self.source}: step {step:g} is logged twice for {key} "
                        f"({self.row_label}s {self.where(seen[step])} and {self.where(i)}); "
                        "remove the repeat (a resumed run logs some steps again) or split the "
                        "runs into separate files")
                seen[step] = i
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


def _strict_key(name: str) -> bool:
    """A key whose value must be a number: a step, or a metric of :data:`METRICS` under a split
    prefix of :data:`SPLIT_PREFIXES` (``eval_logps/chosen``; not ``decline/logps/chosen``, the
    verdict string that :mod:`mi_bounds.integrations.decline_callback` logs)."""
    return name in STEP_KEYS or name in _STRICT_METRIC_KEYS


def _flatten(entry: Mapping[str, Any], prefix: str = "", where: str = "") -> dict[str, float]:
    """Numeric leaves of a (nested) dict, nested keys joined with ``/``. A metric or step key
    (:func:`_strict_key`) whose value is neither a number nor null is a :class:`LogError`
    (``where`` names the entry); other non-numeric leaves (names, flags) are skipped."""
    out: dict[str, float] = {}
    for key, value in entry.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "/", where))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
        elif value is not None and _strict_key(name):
            raise LogError(f"{where}: {name} is {value!r}, not a number; fix or remove "
                           "that entry")
    return out


def _step_key(records: Sequence[Mapping[str, float]]) -> str | None:
    for key in STEP_KEYS:
        if records and all(key in r for r in records):
            return key
    for key in STEP_KEYS:  # a step column that some rows lack: keep only rows that have it
        if any(key in r for r in records):
            return key
    return None


def _keep_stepped(records: list[dict[str, float]], rows: list[int], key: str | None,
                  source: str, label: str) -> tuple[list[dict[str, float]], list[int]]:
    """Records that have the step; one without it that holds a metric is a LogError."""
    if key is None:
        return records, rows
    for rec, row in zip(records, rows, strict=True):
        if key not in rec and any(_strict_key(k) for k in rec):
            raise LogError(f"{source}: {label} {row} logs "
                           f"{', '.join(k for k in rec if _strict_key(k))} but no {key}; "
                           "give every logged point its step")
    kept = [(r, i) for r, i in zip(records, rows, strict=True) if key in r]
    return [r for r, _ in kept], [i for _, i in kept]


def log_from_entries(entries: Iterable[Mapping[str, Any]], *, source: str = "<entries>",
                     format: str = "log_history",
                     meta: Mapping[str, Any] | None = None) -> TrainingLog:
    """A :class:`TrainingLog` from log entries (TRL's ``log_history`` dicts, possibly nested).

    Entries without any numeric value (e.g. strings only) are dropped; nested dicts are
    flattened with ``/``. Raises :class:`LogError` if an entry is not a dict, if a metric or
    step value is not a number (or null), or if an entry logs a metric without the step that
    the others carry.
    """
    records, rows = [], []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise LogError(f"{source}: log entry {i} is a {type(entry).__name__}, not an object")
        rec = _flatten(entry, where=f"{source}: entry {i}")
        if rec:
            records.append(rec)
            rows.append(i)
    key = _step_key(records)
    records, rows = _keep_stepped(records, rows, key, source, "entry")
    return TrainingLog(source, format, tuple(records), key, tuple(rows), "entry",
                       dict(meta or {}))


#: trainer_state.json fields that describe the run's settings (compared across seeds)
_TRAINER_STATE_META = ("max_steps", "train_batch_size", "logging_steps", "eval_steps",
                       "num_train_epochs", "save_steps")
#: align result.json fields that are not settings
_ALIGN_NOT_META = ("history", "final", "shape", "throughput", "epochs", "n_train_pairs")


def _scalars(data: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: data[k] for k in keys
            if k in data and isinstance(data[k], (str, int, float, bool))}


def _from_json(data: Any, source: str, fmt: str) -> TrainingLog:
    if isinstance(data, Mapping):
        if isinstance(data.get("log_history"), list):
            return log_from_entries(data["log_history"], source=source, format="trainer_state",
                                    meta=_scalars(data, _TRAINER_STATE_META))
        if isinstance(data.get("history"), list):
            return log_from_entries(data["history"], source=source, format="align_result",
                                    meta=_scalars(data, [k for k in data
                                                         if k not in _ALIGN_NOT_META]))
        raise LogError(
            f"{source}: a JSON object with neither 'log_history' (a TRL trainer_state.json) nor "
            f"'history' (a mi-bounds align result.json); its keys: {', '.join(map(str, data))}")
    if isinstance(data, list):
        return log_from_entries(data, source=source, format=fmt)
    raise LogError(f"{source}: JSON {type(data).__name__}, not a log (an object or a list)")


def _from_csv(text: str, source: str) -> TrainingLog:
    """A CSV log. Empty cells are "not logged"; in a column that holds numbers (and in any step
    column), a cell that is not a number is a :class:`LogError` naming its line and column."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h for h in (reader.fieldnames or []) if h is not None]
    if not any(h.endswith(m) for h in header for m in METRICS):
        shown = ", ".join(header[:8]) + (" …" if len(header) > 8 else "")
        raise LogError(
            f"{source}: neither JSON nor a CSV with TRL metric columns (e.g. logps/chosen, "
            f"rewards/margins); first line's fields: {shown or '(none)'}")
    raw: list[tuple[int, dict[str, str]]] = []
    for row in reader:
        raw.append((reader.line_num, {k: v for k, v in row.items()
                                      if k is not None and isinstance(v, str)}))
    numeric = {h for h in header
               if h in STEP_KEYS or any(_number(r.get(h)) is not None for _, r in raw)}
    rows, lines = [], []
    for line, row in raw:
        rec = {}
        for k, v in row.items():
            x = _number(v)
            if x is not None:
                rec[k] = x
            elif k in numeric and v.strip():
                raise LogError(f"{source}: row {line}, column {k}: {v.strip()!r} is not a "
                               "number; fix the cell or empty it (an empty cell means not "
                               "logged at that step)")
        if rec:
            rows.append(rec)
            lines.append(line)
    key = _step_key(rows)
    rows, lines = _keep_stepped(rows, lines, key, source, "row")
    return TrainingLog(source, "csv", tuple(rows), key, tuple(lines), "row")


def check_seeds(logs: Sequence[TrainingLog], *, allow_mixed: bool = False) -> None:
    """Refuse logs that are not seeds of one run: one file given twice, two files with
    identical records (zero spread, a meaningless noise floor), or (unless ``allow_mixed``)
    logs whose recorded settings differ apart from the seed (another loss, β, learning rate,
    step count). Raises :class:`LogError` naming both files and the differences."""
    first: dict[str, TrainingLog] = {}
    contents: dict[tuple, TrainingLog] = {}
    for log in logs:
        where = str(Path(log.source).resolve()) if log.source else log.source
        if where in first:
            raise LogError(f"{log.source} is given twice (the same file): seeds must be "
                           "different runs")
        first[where] = log
        body = tuple(tuple(sorted(r.items())) for r in log.records)
        if body in contents:
            raise LogError(f"{contents[body].source} and {log.source} hold identical records: "
                           "the same run twice is not two seeds (their spread would be 0)")
        contents[body] = log
    if allow_mixed:
        return
    ref = logs[0]
    for log in logs[1:]:
        keys = sorted((set(ref.meta) | set(log.meta)) - {"seed"})
        diffs = [f"{k} {ref.meta.get(k)!r} vs {log.meta.get(k)!r}" for k in keys
                 if ref.meta.get(k) != log.meta.get(k)]
        if diffs:
            raise LogError(f"{ref.source} and {log.source} are not seeds of one run "
                           f"({'; '.join(diffs)}); pass --allow-mixed to average them anyway")


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


def jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [jsonable(v) for v in x]
    return x
