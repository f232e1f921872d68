"""One writer per run directory: a lock file created with ``O_CREAT | O_EXCL``.

Every command that writes a run directory (``mi-bounds lm run/base/sample/align/report``,
``mi-bounds estimate staircase``) holds :func:`run_lock` while it works. The lock is the file
``DIR/.mi-bounds.lock``, created atomically (``O_EXCL``: of two processes exactly one creates
it) and holding the holder's pid, host, start time and command as JSON. A second process gets
:class:`LockHeld`, whose message names the holder. A lock left by a process that no longer
exists on this host (killed with SIGKILL, a power cut) is *stale*: it is detected (the pid is
not running, or it is running but started at another time: a reused pid) and taken over. A
lock from another host cannot be checked; the message says how to remove it by hand.

Taking over a stale lock is itself guarded by a second ``O_EXCL`` file (``.mi-bounds.lock.take``),
so that of two processes that both find the same stale lock only one removes it. See
docs/THEORY.md, "Misuse and edges".
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["LOCK_NAME", "LockHeld", "lock_holder", "run_lock"]

#: the lock file's name inside the run directory
LOCK_NAME = ".mi-bounds.lock"
#: an empty or unreadable lock file older than this (seconds) is a writer killed mid-write
_UNREADABLE_STALE_S = 5.0
#: a take-over guard older than this (seconds) was left by a killed process
_TAKE_STALE_S = 30.0


class LockHeld(ValueError):
    """The run directory is in use by another process (the message names it)."""


def _proc_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux ``/proc``), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def lock_holder(directory: str | Path) -> dict[str, Any] | None:
    """The holder recorded in ``directory``'s lock (``pid``, ``host``, ``started``,
    ``command``), ``{}`` for an unreadable lock file, ``None`` when there is no lock."""
    path = Path(directory) / LOCK_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _stale(path: Path, holder: dict[str, Any]) -> bool:
    """True when the lock's holder is certainly gone (a process of this host that is not
    running, or a pid now used by a process started at another time)."""
    if not holder:
        try:
            return time.time() - path.stat().st_mtime > _UNREADABLE_STALE_S
        except FileNotFoundError:
            return False
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    if not _alive(pid):
        return True
    start = holder.get("pid_start")
    now = _proc_start(pid)
    return start is not None and now is not None and start != now


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "an unknown process (the lock file is being written or is unreadable)"
    what = f"pid {holder.get('pid')} on host {holder.get('host')}"
    what += f", started {holder.get('started')}"
    if holder.get("command"):
        what += f" ({holder['command']})"
    return what


def _take_over(path: Path, holder: dict[str, Any]) -> None:
    """Remove the stale lock ``path`` unless another process is doing the same."""
    guard = path.with_name(path.name + ".take")
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            if time.time() - guard.stat().st_mtime > _TAKE_STALE_S:
                guard.unlink()
        except FileNotFoundError:
            pass
        return
    try:
        os.close(fd)
        if lock_holder(path.parent) == holder:  # still the same stale lock
            path.unlink(missing_ok=True)
    finally:
        guard.unlink(missing_ok=True)


@contextmanager
def run_lock(directory: str | Path, command: str, *, wait_s: float = 0.0) -> Iterator[Path]:
    """Hold the lock of run directory ``directory`` (created if missing) for the ``with`` body.

    Args:
        directory: the run directory.
        command: what holds it, for the message another process gets (``"lm run"``).
        wait_s: how long to keep trying while another live process holds it (default: fail at
            once).

    Raises:
        LockHeld: a live process holds the lock (pid, host, start time and command named), or
            a lock of another host is present.
        OSError: the directory cannot be created or written.

    On exit the lock file is removed (if it is still this process's), and a directory that
    this call created and that is still empty is removed too.
    """
    d = Path(directory)
    created = not d.exists()
    d.mkdir(parents=True, exist_ok=True)
    path = d / LOCK_NAME
    pid = os.getpid()
    mine = {"pid": pid, "host": socket.gethostname(),
            "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "pid_start": _proc_start(pid), "command": command}
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock_holder(d)
            if holder is None:  # released in between
                continue
            if _stale(path, holder):
                _take_over(path, holder)
                time.sleep(0.01)
                continue
            if not holder and time.monotonic() < deadline + 1.0:
                time.sleep(0.05)  # being written: read it again
                continue
            if time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            remote = holder and holder.get("host") != socket.gethostname()
            hint = (f"if that process is gone (it ran on another host), delete {path}"
                    if remote else "wait for it to finish, or stop it, or use another directory")
            raise LockHeld(f"{d} is in use by {_describe(holder)}; {hint}") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(mine) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        break
    try:
        yield path
    finally:
        if (lock_holder(d) or {}).get("pid") == pid:
            path.unlink(missing_ok=True)
        if created:
            try:
                d.rmdir()  # only if empty
            except OSError:
                pass
