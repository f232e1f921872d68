"""Output destinations and resource sizes, checked before any work (docs/THEORY.md,
"Misuse and edges").

A command that computes for minutes and then finds its ``--out`` unwritable loses the work;
these checks run first: :func:`check_output_file` (a file is expected: not a directory, its
folder creatable and writable, tested by creating and removing a probe file),
:func:`plot_path` (``--plot``: a directory means a file inside it, a missing extension is
added and the real name is returned), :func:`check_memory` (a size whose arrays would not fit
the machine's memory is refused with the amount it would need), and :func:`write_text_atomic`
(temporary name, then rename: a full device leaves the old file or none, never half of one).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = [
    "check_memory",
    "check_output_dir",
    "check_output_file",
    "format_bytes",
    "physical_memory",
    "plot_path",
    "write_text_atomic",
]


def _probe(folder: Path, what: str) -> None:
    """Create folder (and parents) and a probe file in it; ValueError naming ``what``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".mi-bounds-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{what}: cannot write into {folder} ({err.strerror or err}); "
                         "choose a writable location") from None


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """``path`` as a Path after checking that a file can be written there.

    Raises:
        ValueError: ``path`` is an existing directory, or its folder cannot be created or
            written (``/proc``, a read-only mount, a file where a folder is needed).
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{what}: {p} is a directory; give a file name (e.g. {p / 'result.json'})")
    if p.exists() and not os.access(p, os.W_OK):
        raise ValueError(f"{what}: {p} exists and is not writable")
    _probe(p.parent if str(p.parent) else Path("."), what)
    return p


def check_output_dir(path: str | Path, what: str = "--out") -> Path:
    """``path`` as a Path after checking that it is (or can be made) a writable directory."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{what}: {p} exists and is not a directory")
    _probe(p, what)
    return p


def plot_path(path: str | Path, default_name: str, suffix: str = ".png") -> Path:
    """The file a ``--plot PATH`` writes: ``PATH/default_name`` for a directory (or a path
    ending in ``/``), ``PATH + suffix`` when PATH has no extension, else PATH itself; checked
    with :func:`check_output_file`."""
    text = str(path)
    p = Path(path)
    if p.is_dir() or text.endswith(("/", os.sep)):
        p = p / default_name
    elif not p.suffix:
        p = p.with_name(p.name + suffix)
    return check_output_file(p, "--plot")


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine, or None where unknown."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"  # pragma: no cover


def check_memory(need_bytes: float, what: str, fraction: float = 0.5) -> None:
    """ValueError when ``need_bytes`` exceeds ``fraction`` of the physical memory, giving the
    amount; ``what`` names the option(s) that set the size."""
    total = physical_memory()
    if total is not None and need_bytes > fraction * total:
        raise ValueError(f"{what} would need about {format_bytes(need_bytes)} of memory; this "
                         f"machine has {format_bytes(total)}: choose a smaller size")


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p
