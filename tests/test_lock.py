"""The run-directory lock (mi_bounds._lock): two real processes, a stale lock, the commands.

Each test starts a second Python process that holds (or races for) the lock, so the O_EXCL
creation, the holder's message and the stale-lock take-over are checked across processes, not
within one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mi_bounds._lock import LOCK_NAME, LockHeld, lock_holder, run_lock
from mi_bounds.cli import main

ROOT = Path(__file__).resolve().parent.parent


#: the lock module loaded from its file alone (stdlib only): the helper processes start in a
#: fraction of a second instead of importing the package (and torch)
LOAD = textwrap.dedent(f"""
    import importlib.util
    _spec = importlib.util.spec_from_file_location("lock", {str(ROOT / "mi_bounds" / "_lock.py")!r})
    lock = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(lock)
    run_lock, LockHeld = lock.run_lock, lock.LockHeld
""")


def _holder(directory: Path, seconds: float = 60.0) -> subprocess.Popen:
    """A process that takes the lock of ``directory``, prints 'held' and sleeps."""
    code = LOAD + textwrap.dedent(f"""
        import sys, time
        with run_lock({str(directory)!r}, "test holder"):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def held(tmp_path):
    directory = tmp_path / "run"
    proc = _holder(directory)
    yield directory, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_second_process_gets_an_error_naming_the_holder(held):
    directory, proc = held
    with pytest.raises(LockHeld) as err, run_lock(directory, "second"):
        pass
    msg = str(err.value)
    assert f"pid {proc.pid}" in msg and socket.gethostname() in msg and "test holder" in msg
    assert "started 20" in msg  # the start time, ISO 8601
    assert lock_holder(directory)["pid"] == proc.pid  # the holder's lock is untouched


def test_stale_lock_of_a_killed_process_is_taken_over(held):
    directory, proc = held
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock_holder(directory)["pid"] == proc.pid  # SIGKILL left the lock behind
    with run_lock(directory, "after the kill"):
        assert lock_holder(directory)["pid"] == os.getpid()
    assert not (directory / LOCK_NAME).exists()


def test_reused_pid_is_stale(tmp_path):
    """A lock whose pid now belongs to a process started at another time is stale."""
    directory = tmp_path / "run"
    directory.mkdir()
    stale = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2000-01-01T00:00:00Z",
             "pid_start": "1", "command": "old"}
    (directory / LOCK_NAME).write_text(json.dumps(stale))
    with run_lock(directory, "new"):
        assert lock_holder(directory)["command"] == "new"


def test_lock_of_another_host_is_not_taken(tmp_path):
    directory = tmp_path / "run"
    directory.mkdir()
    other = {"pid": 1, "host": "elsewhere.example", "started": "2026-01-01T00:00:00Z",
             "command": "lm run"}
    (directory / LOCK_NAME).write_text(json.dumps(other))
    with pytest.raises(LockHeld, match=r"elsewhere\.example.*delete"), run_lock(directory, "x"):
        pass


def test_two_processes_racing_one_wins(tmp_path):
    """Eight processes started together on one fresh directory: exactly one holds it."""
    directory = tmp_path / "race"
    code = LOAD + textwrap.dedent(f"""
        import time
        time.sleep(max(0.0, {time.time() + 2.0} - time.time()))
        try:
            with run_lock({str(directory)!r}, "racer"):
                print("won", flush=True)
                time.sleep(1.5)
        except LockHeld:
            print("lost", flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env=env) for _ in range(8)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(outs) == ["lost"] * 7 + ["won"]


def test_lock_removed_and_new_directory_cleaned(tmp_path):
    directory = tmp_path / "new"
    with run_lock(directory, "x"):
        assert (directory / LOCK_NAME).is_file()
    assert not directory.exists()  # created by the lock, left empty: removed


@pytest.mark.parametrize("argv", [
    ["lm", "run", "--out", "{d}", "--preset", "cpu-tiny"],
    ["lm", "base", "--out", "{d}"],
    ["lm", "report", "--out", "{d}"],
    ["estimate", "staircase", "--plan", "quick", "--out-dir", "{d}"],
])
def test_commands_refuse_a_locked_run_directory(held, argv, capsys):
    directory, proc = held
    code = main([a.format(d=directory) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"pid {proc.pid}" in err and "in use" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in directory.iterdir()) == [LOCK_NAME]  # nothing written
