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
from dataclasses import dataclass
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


def jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [jsonable(v) for v in x]
    return x
