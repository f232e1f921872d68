"""The misuse table: bad inputs, misuses and unwritable destinations, across every command.

Each case is a command line, the exit code it must give and a fragment its one-line message
must hold; every case runs in-process (``mi_bounds.cli.main``) and must print no traceback.
Every case is refused before any work (nothing is trained, no file is written), which is what
keeps the table fast. Heavier checks (a real Ctrl-C, a truncated reference file, a real run's
report) are at the end; the ones that train a model are marked slow.
See docs/THEORY.md, "Misuse and edges".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mi_bounds.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _npz(d: Path, name: str, x: np.ndarray, y: np.ndarray) -> None:
    np.savez(d / name, X=x, Y=y)


def _curve_rows(seed: int = 0, n: int = 12) -> list[list[object]]:
    rng = np.random.default_rng(seed)
    u = np.linspace(0, 1, n)
    c = -8.0 - 3.0 * u**2 + rng.normal(0, 0.05, n)
    return [[10 * (i + 1), float(c[i]), 0.1 * i] for i in range(n)]


def _csv(path: Path, rows: list[list[object]]) -> None:
    path.write_text("step,logps/chosen,rewards/margins\n"
                    + "".join(",".join(map(str, r)) + "\n" for r in rows))


def _align(path: Path, loss: str, seed: int) -> None:
    hist = [{"step": r[0], "train": {"logps/chosen": r[1], "rewards/margins": r[2]}}
            for r in _curve_rows(seed)]
    path.write_text(json.dumps({"loss": loss, "seed": seed, "beta": 0.1, "history": hist}))


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Path:
    """Every input file the table needs."""
    d = tmp_path_factory.mktemp("misuse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    noise = rng.normal(size=(300, 2))
    y = 0.6 * x + 0.8 * noise
    _npz(d, "ok.npz", x, y)
    _npz(d, "identity.npz", x, x)
    _npz(d, "affine.npz", x, 2.0 * x - 3.0)
    _npz(d, "cubic.npz", x, x**3)
    _npz(d, "copycol.npz", x, np.hstack([x[:, :1], noise[:, :1]]))
    _npz(d, "near.npz", x, x + 1e-7 * noise)
    _npz(d, "dups.npz", np.vstack([x, x[:9]]), np.vstack([y, y[:9]]))
    _npz(d, "consty.npz", x, np.ones((300, 1)))
    _npz(d, "tiny.npz", x * 1e-170, y * 1e-170)
    np.savez(d / "oned.npz", X=x[:, 0], Y=y[:, 0])
    _npz(d, "nan.npz", np.where(np.arange(300)[:, None] == 7, np.nan, x), y)
    np.savez(d / "nox.npz", A=x, Y=y)
    (d / "notnpz.npz").write_text("X,Y\n1,2\n")
    raw = (d / "ok.npz").read_bytes()
    (d / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    _csv(d / "a.csv", _curve_rows(0))
    _csv(d / "b.csv", _curve_rows(1))
    _csv(d / "copy.csv", _curve_rows(0))
    rows = _curve_rows(0)
    _csv(d / "dupstep.csv", [*rows[:5], [rows[4][0], -9.0, 0.3], *rows[5:]])
    bad = _curve_rows(0)
    bad[3][1] = "oops"
    _csv(d / "badcell.csv", bad)
    _csv(d / "strstep.csv", [[f"s{r[0]}", *r[1:]] for r in _curve_rows(0)])
    (d / "empty.csv").write_text("")
    (d / "binary.csv").write_bytes(b"\xff\xfe\x00\x81" * 10)
    (d / "trunc.json").write_text('{"log_history": [{"step": 1, "logps/chosen": -1.0}, ')
    _align(d / "dpo.json", "dpo", 0)
    _align(d / "mio.json", "mio", 1)
    (d / "nolog").mkdir()
    (d / "file.txt").write_text("a file, not a folder\n")
    (d / "badrun").mkdir()
    (d / "badrun" / "config.json").write_text('{"seed": 0, "model": {')
    return d


E = ["estimate"]
DATA = ["estimate", "--no-progress", "--data"]
CASES: list[tuple[str, list[str], int, str]] = [
    # --- estimate: names, options that do not apply, sizes
    ("unknown bound lists ksg", [*E, "--bound", "nope"], 2, "ksg"),
    ("unknown --report estimator", [*E, "--report", "nope"], 2, "--report"),
    ("bad smile clip", [*E, "--bound", "smile_-1"], 2, "smile"),
    ("ksg ignores --steps", [*E, "--bound", "ksg", "--steps", "10"], 2, "--steps"),
    ("ksg ignores --test-fraction", [*E, "--bound", "ksg", "--test-fraction", "0.3"], 2,
     "--test-fraction"),
    ("ksg ignores --device", [*E, "--bound", "ksg", "--device", "cpu"], 2, "--device"),
    ("ksg ignores --critic", [*E, "--bound", "ksg", "--critic", "concat"], 2, "--critic"),
    ("ksg ignores --lr", [*E, "--bound", "ksg", "--lr", "0.1"], 2, "--lr"),
    ("ksg k near n", [*E, "--bound", "ksg", "--data", "{d}/ok.npz", "--ksg-k", "200"], 2,
     "--ksg-k"),
    ("ksg k = 0", [*E, "--bound", "ksg", "--samples", "100", "--ksg-k", "0"], 2, "--ksg-k"),
    ("ksg --samples with --data", [*E, "--bound", "ksg", "--data", "{d}/ok.npz", "--samples",
                                   "10"], 2, "--samples"),
    ("ksg too few samples", [*E, "--bound", "ksg", "--samples", "1"], 2, "--samples"),
    ("ksg absurd samples", [*E, "--bound", "ksg", "--samples", "100000000000"], 2, "memory"),
    ("--ksg-k without ksg", [*E, "--ksg-k", "3"], 2, "only used by --bound ksg"),
    ("--samples without ksg", [*E, "--samples", "100"], 2, "only used by --bound ksg"),
    ("absurd steps", [*E, "--steps", "1000000000000"], 2, "memory"),
    ("absurd batch", [*E, "--batch-size", "10000000"], 2, "memory"),
    ("zero steps", [*E, "--steps", "0"], 2, "--steps"),
    ("negative lr", [*E, "--lr", "-1"], 2, "--lr"),
    ("zero threads", [*E, "--threads", "0"], 2, "--threads"),
    ("negative mi", [*E, "--mi", "-1"], 2, "mi"),
    ("test fraction without data", [*E, "--test-fraction", "0.3"], 2, "only for --data"),
    ("--mi with --data", [*DATA, "{d}/ok.npz", "--mi", "3"], 2, "--mi"),
    ("--df with --data", [*DATA, "{d}/ok.npz", "--df", "3"], 2, "--df"),
    ("--df without student", [*E, "--task", "gaussian", "--df", "3"], 2,
     "--df: only for --task student"),
    ("student mi below its zero-correlation MI", [*E, "--task", "student", "--mi", "0.01",
                                                  "--dim", "3"], 2, "--mi must be a finite"),
    ("student df 0", [*E, "--task", "student", "--df", "0"], 2, "--df must be a finite"),
    ("interval without data", [*E, "--interval", "bootstrap"], 2, "only for --data"),
    ("unknown interval", [*DATA, "{d}/ok.npz", "--interval", "bca"], 2, "invalid choice"),
    ("ksg ignores --interval", [*E, "--bound", "ksg", "--interval", "bootstrap"], 2,
     "--interval"),
    ("test fraction 1.5", [*DATA, "{d}/ok.npz", "--test-fraction", "1.5"], 2,
     "--test-fraction"),
    ("unknown duplicates policy", [*E, "--duplicates", "maybe"], 2, "invalid choice"),
    ("critic auto without data", [*E, "--critic", "auto"], 2, "--data"),
    ("unknown device", [*E, "--device", "tpu9"], 2, "device"),
    ("staircase zero threads", ["estimate", "staircase", "--threads", "0"], 2, "--threads"),
    # --- estimate --data: files
    ("missing npz", [*DATA, "{d}/missing.npz"], 2, "no such"),
    ("csv named .npz", [*DATA, "{d}/notnpz.npz"], 2, "not an .npz"),
    ("truncated npz", [*DATA, "{d}/trunc.npz"], 2, "trunc.npz"),
    ("npz without X", [*DATA, "{d}/nox.npz"], 2, "'X'"),
    ("1-D arrays", [*DATA, "{d}/oned.npz"], 2, "2-D"),
    ("NaN in X", [*DATA, "{d}/nan.npz"], 2, "finite"),
    # --- estimate --data: degenerate dependence
    ("Y = X", [*DATA, "{d}/identity.npz"], 2, "infinite"),
    ("Y = X, dv", [*DATA, "{d}/identity.npz", "--bound", "dv"], 2, "infinite"),
    ("Y = X, infonce", [*DATA, "{d}/identity.npz", "--bound", "infonce"], 2, "infinite"),
    ("Y = X, ksg", [*E, "--bound", "ksg", "--data", "{d}/identity.npz"], 2, "infinite"),
    ("Y = aX + b", [*DATA, "{d}/affine.npz"], 2, "exact affine"),
    ("Y = X^3", [*DATA, "{d}/cubic.npz"], 2, "strictly monotone"),
    ("a copied column", [*DATA, "{d}/copycol.npz"], 2, "infinite"),
    ("near-exact copy", [*DATA, "{d}/near.npz"], 2, "near-exact"),
    ("duplicate rows", [*DATA, "{d}/dups.npz"], 2, "9 duplicate rows"),
    ("duplicate rows, ksg", [*E, "--bound", "ksg", "--data", "{d}/dups.npz"], 2,
     "9 duplicate rows"),
    ("constant Y", [*DATA, "{d}/consty.npz"], 2, "every column of Y is constant"),
    ("1e-170 without standardising", [*DATA, "{d}/tiny.npz", "--no-standardize"], 2,
     "float32"),
    # --- estimate: output destinations, checked before the work
    ("--out into /proc", [*DATA, "{d}/ok.npz", "--out", "/proc/nope/r.json"], 2, "--out"),
    ("--out is a directory", [*DATA, "{d}/ok.npz", "--out", "{d}"], 2, "is a directory"),
    ("--out under a file", [*DATA, "{d}/ok.npz", "--out", "{d}/file.txt/r.json"], 2, "--out"),
    ("ksg --out into /proc", [*E, "--bound", "ksg", "--samples", "100", "--out",
                              "/proc/nope.json"], 2, "--out"),
    # --- diagnose
    ("missing log", ["diagnose", "{d}/missing.csv"], 2, "no such file"),
    ("same file twice", ["diagnose", "{d}/a.csv", "{d}/a.csv"], 2, "given twice"),
    ("identical logs", ["diagnose", "{d}/a.csv", "{d}/copy.csv"], 2, "identical"),
    ("dpo and mio as seeds", ["diagnose", "{d}/dpo.json", "{d}/mio.json"], 2, "--allow-mixed"),
    ("step logged twice", ["diagnose", "{d}/dupstep.csv"], 2, "logged twice"),
    ("non-numeric cell", ["diagnose", "{d}/badcell.csv"], 2, "row 5, column logps/chosen"),
    ("string steps", ["diagnose", "{d}/strstep.csv"], 2, "'s10'"),
    ("truncated JSON log", ["diagnose", "{d}/trunc.json"], 2, "trunc.json"),
    ("empty log", ["diagnose", "{d}/empty.csv"], 2, "empty file"),
    ("binary log", ["diagnose", "{d}/binary.csv"], 2, "not a text file"),
    ("directory without a log", ["diagnose", "{d}/nolog"], 2, "directory without"),
    ("unknown metric", ["diagnose", "{d}/a.csv", "--metric", "nope"], 2, "nope"),
    ("negative noise", ["diagnose", "{d}/a.csv", "--noise", "-1"], 2, "--noise"),
    ("noise with seeds", ["diagnose", "{d}/a.csv", "{d}/b.csv", "--noise", "0.1"], 2,
     "--noise"),
    ("--plot into /proc", ["diagnose", "{d}/a.csv", "--plot", "/proc/nope/p.png"], 2, "--plot"),
    ("unknown series", ["diagnose", "{d}/a.csv", "--series", "test"], 2, "invalid choice"),
    # --- lm
    ("lm without --out", ["lm", "run"], 2, "--out"),
    ("lm unknown command", ["lm", "fly", "--out", "{d}/r"], 2, "invalid choice"),
    ("lm --out is a file", ["lm", "run", "--out", "{d}/file.txt"], 2, "file.txt"),
    ("lm --out in /proc", ["lm", "run", "--out", "/proc/nope/run"], 2, "cannot write"),
    ("lm --set without =", ["lm", "run", "--out", "{d}/r", "--set", "align.beta"], 2, "--set"),
    ("lm unknown preset", ["lm", "run", "--out", "{d}/r", "--preset", "nope"], 2, "nope"),
    ("lm unknown loss", ["lm", "run", "--out", "{d}/r", "--losses", "nope"], 2, "nope"),
    ("lm zero threads", ["lm", "run", "--out", "{d}/r", "--threads", "0"], 2, "--threads"),
    ("lm unknown model", ["lm", "run", "--out", "{d}/r", "--model", "{d}/nomodel"], 2,
     "neither"),
    ("lm missing pairs", ["lm", "run", "--out", "{d}/r", "--pairs", "{d}/none.jsonl"], 2,
     "none.jsonl"),
    ("lm truncated config.json", ["lm", "report", "--out", "{d}/badrun"], 2,
     "config.json is not valid JSON"),
    ("lm --report-dir in /proc", ["lm", "report", "--out", "{d}/r", "--report-dir",
                                  "/proc/nope"], 2, "--report-dir"),
    # --- verify, report, figures, top level
    ("verify --out into /proc", ["verify", "--out", "/proc/nope/PROOFS.md"], 2, "--out"),
    ("verify --out a folder", ["verify", "--out", "{d}"], 2, "folder"),
    ("verify negative seed", ["verify", "--seed", "-1"], 2, "--seed"),
    ("report --json into /proc", ["report", "--json", "/proc/nope.json"], 2, "--json"),
    ("report --json a folder", ["report", "--json", "{d}"], 2, "--json"),
    ("report zero worlds", ["report", "--worlds", "0"], 2, "--worlds"),
    ("figures --out in /proc", ["figures", "--out", "/proc/nope"], 2, "--out"),
    ("figures --out a file", ["figures", "--out", "{d}/file.txt"], 2, "not a folder"),
    ("figures unknown figure", ["figures", "--only", "nope"], 2, "invalid choice"),
    ("unknown command", ["nope"], 2, "unknown command"),
    ("no command", [], 2, "usage"),
]


@pytest.mark.parametrize(("argv", "code", "fragment"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_misuse(d, argv, code, fragment, capsys):
    before = sorted(p.name for p in d.iterdir())
    got = main([a.format(d=d) for a in argv])
    out, err = capsys.readouterr()
    assert got == code, (got, out[-500:], err[-500:])
    assert fragment in out + err, err[-800:]
    assert "Traceback" not in out + err
    message = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert len(message) <= 1 or code != 2, err  # one line, not a cascade
    assert sorted(p.name for p in d.iterdir()) == before  # nothing written beside the inputs


def test_the_table_is_large_and_spans_the_commands():
    assert len(CASES) >= 60
    commands = {c[1][0] for c in CASES if c[1]}
    assert {"estimate", "diagnose", "lm", "verify", "report", "figures"} <= commands


# ------------------------------------------------------------------------ heavier checks


def _wait_until_training(pid: int, *, timeout: float = 60.0) -> None:
    """Sleep until the child has loaded torch (its maps name libtorch), then 3 s more, so that the
    SIGINT lands in training and not in the imports, however loaded the machine is (without
    /proc: 6 s)."""
    maps = Path(f"/proc/{pid}/maps")
    if not maps.exists():
        time.sleep(6.0)
        return
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if "libtorch" in maps.read_text():
                break
        except OSError:
            break
        time.sleep(0.2)
    time.sleep(3.0)


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default disposition. A test run started in
    the background by a shell without job control inherits SIGINT ignored, and Python installs
    no KeyboardInterrupt handler for an ignored SIGINT: the child would train on, deaf to it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_is_one_line_and_exit_130(tmp_path):
    """A real SIGINT to a real `mi-bounds estimate` mid-training."""
    out = tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mi_bounds.cli", "estimate", "--steps", "1000000",
         "--eval-every", "1000000", "--no-progress", "--dim", "2", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        preexec_fn=_default_sigint)
    try:
        _wait_until_training(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:  # never leave a million-step run behind if the signal did not end it
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        ln for ln in err.splitlines() if "interrupted (Ctrl-C)" in ln]
    assert not out.exists()


def test_keyboard_interrupt_in_process(monkeypatch, capsys):
    import mi_bounds.decline.cli as dcli

    def boom(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(dcli, "main", boom)
    assert main(["diagnose", "x"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0]


def test_strict_json_writers(tmp_path):
    """NaN and inf never reach a file as bare NaN / Infinity."""
    from mi_bounds._json import dumps
    from mi_bounds.lm import _io

    data = {"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], "c": np.float64("nan")}
    path = _io.write_json(tmp_path / "x.json", data)

    def reject(token):
        raise ValueError(token)

    assert json.loads(path.read_text(), parse_constant=reject) == {
        "a": None, "b": ["inf", "-inf", 1.5], "c": None}
    assert json.loads(dumps(data), parse_constant=reject)["a"] is None


def test_truncated_json_names_the_file(tmp_path):
    from mi_bounds.lm import _io

    path = tmp_path / "result.json"
    path.write_text('{"a": [1, 2')
    with pytest.raises(ValueError, match=r"result\.json is not valid JSON.*delete it"):
        _io.read_json(path)


def test_truncated_torch_file_names_the_file(tmp_path):
    import torch

    from mi_bounds.lm import _io

    path = tmp_path / "reference.pt"
    torch.save({"x": torch.arange(1000.0)}, path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"reference\.pt is truncated or corrupt.*delete it"):
        _io.torch_load(path)


@pytest.mark.slow
def test_lm_truncated_model_then_a_corrected_model(tmp_path, capsys):
    """A truncated model.safetensors is refused before anything is written; a run directory
    whose base stage never finished accepts a corrected --model; lm_report.json is strict."""
    good = tmp_path / "good"
    assert main(["lm", "base", "--out", str(good), "--set", "base.steps=20"]) == 0
    model = good / "base" / "model"
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in model.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    w = broken / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["lm", "run", "--out", str(run), "--model", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors is truncated" in err and "Traceback" not in err
    assert not run.exists()
    # a run directory started with the broken model (before the check existed) is not stuck
    run.mkdir()
    (run / "inputs.json").write_text(json.dumps({"model": str(broken), "model_spec":
                                                 str(broken), "pairs": None}))
    (run / "config.json").write_text((good / "config.json").read_text())
    assert main(["lm", "run", "--out", str(run), "--model", str(model),
                 "--set", "align.steps=4", "--set", "align.eval_every=2"]) == 0
    assert "corrected --model" in capsys.readouterr().err

    def reject(token):
        raise ValueError(token)

    for p in run.rglob("*.json"):
        json.loads(p.read_text(), parse_constant=reject)
    ref = run / "align" / "reference.pt"
    assert ref.is_file()
    ref.write_bytes(ref.read_bytes()[:100])
    for p in (run / "align").glob("*/result.json"):
        p.unlink()
    assert main(["lm", "align", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "reference.pt is truncated or corrupt" in err and "Traceback" not in err


def test_a_full_device_leaves_the_old_file_and_one_line(d, tmp_path, monkeypatch, capsys):
    """ENOSPC while writing: the temporary file is removed, the old file is kept whole, and
    `estimate` ends with one line and exit 2 (after the work, which cannot be helped)."""
    import errno

    from mi_bounds import _paths

    target = tmp_path / "r.json"
    target.write_text("old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_paths.os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        _paths.write_text_atomic(target, "new\n")
    assert target.read_text() == "old\n" and sorted(tmp_path.iterdir()) == [target]
    code = main(["estimate", "--bound", "ksg", "--samples", "200", "--dim", "1",
                 "--out", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    assert target.read_text() == "old\n"
