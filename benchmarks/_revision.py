"""A module of this repository as of another git revision, for timing old and new code side by
side in one process (``--against REV`` of the benchmarks)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def module_at(rev: str, relpath: str) -> ModuleType:
    """The file ``relpath`` (e.g. ``mi_bounds/preference.py``) as of git revision ``rev``,
    imported as its own module ``baseline_<stem>``; its imports resolve to the current
    checkout."""
    source = subprocess.run(["git", "show", f"{rev}:{relpath}"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    name = f"baseline_{Path(relpath).stem}"
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module
