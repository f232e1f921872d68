"""Keep the finished part of a long run directory in git, so that another machine can resume it.

    python -m experiments.snapshot RUN_DIR DEST

Copies ``RUN_DIR`` to ``DEST`` (replacing what ``DEST`` held) without what can be remade or is
too large to commit: the base model (``base/``, remade by the base stage), training checkpoints
(``ckpt.pt``), other files over 1 MB that are not JSON or logs, symbolic links (a grid
setting's ``base`` and ``sample`` links are remade by the grid) and hidden files (the run's
lock). What remains is the sample, the reference passes, the step-0 evaluations and every
finished run's ``result.json``: resuming from it redoes only the run that was cut off (from
step 0) and what had not started. To resume, copy ``DEST`` back to ``RUN_DIR`` and re-run the
command that made it (results/smollm2-study-resume/README.md).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

#: files larger than this are left out unless they are JSON or JSONL (bytes)
MAX_BYTES = 1 << 20


def keep(path: Path) -> bool:
    """Whether a file of a run directory belongs in the snapshot (module docstring)."""
    if path.is_symlink() or path.name.startswith(".") or path.name == "ckpt.pt":
        return False
    if path.suffix == ".safetensors":
        return False
    return path.suffix in (".json", ".jsonl", ".log") or path.stat().st_size <= MAX_BYTES


def snapshot(run_dir: Path, dest: Path) -> list[Path]:
    """Copy the files of ``run_dir`` that :func:`keep` accepts to ``dest``; returns them."""
    run_dir, dest = Path(run_dir), Path(dest)
    if not run_dir.is_dir():
        raise ValueError(f"run_dir {run_dir} is not a directory")
    if dest.exists():
        shutil.rmtree(dest)
    copied = []
    for src in sorted(run_dir.rglob("*")):
        rel = src.relative_to(run_dir)
        if rel.parts[0] == "base" or any(p.is_symlink() for p in src.parents if
                                          run_dir in p.parents):
            continue
        if src.is_file() and keep(src):
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)
            copied.append(out)
    return copied


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m experiments.snapshot RUN_DIR DEST")
    for p in snapshot(Path(sys.argv[1]), Path(sys.argv[2])):
        print(p)
