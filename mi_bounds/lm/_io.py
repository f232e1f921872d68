"""Atomic file writes: every file of a run directory is written to a temporary name and then
renamed, so a killed run leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from mi_bounds._json import dumps


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Strict JSON (:func:`mi_bounds._json.dumps`: NaN as null, ±inf as "inf"/"-inf")."""
    return write_text(path, dumps(data, indent=1, sort_keys=True, default=float) + "\n")


def read_json(path: str | Path) -> Any:
    """The JSON in ``path``; a truncated or corrupt file is a ``ValueError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): truncated or corrupt; delete it "
                         "and re-run the stage that writes it") from None


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    return write_text(path, "".join(dumps(r, sort_keys=True) + "\n" for r in rows))


def torch_save(path: str | Path, obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def torch_load(path: str | Path) -> Any:
    """``torch.load`` on the CPU; a truncated or corrupt file is a ``ValueError`` naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as err:
        raise ValueError(f"{path} is truncated or corrupt ({str(err).splitlines()[0][:200]}); "
                         "delete it and re-run: it is computed again") from None
