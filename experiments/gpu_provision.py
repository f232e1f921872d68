#!/usr/bin/env python3
"""What one lent GPU machine has, what a call must bring to it, and what it allows back.

This is the provisioning of the GPU validation (experiments/gpu_validation.py) for one lent
machine, kept apart from the validation itself: another machine changes this file only.

The machine (its documentation, 2026-11): Python 3.12 (/opt/torch/.venv/bin/python3) with
torch 2.11.0 (CUDA 13.0), transformers 5.17.0, accelerate 1.15.0, tokenizers 0.23.2,
huggingface_hub 1.33.0, numpy, scipy, sympy, matplotlib, safetensors, pyarrow, pandas, xxhash
(:data:`GPU_MACHINE_PACKAGES`), but no trl, datasets, gguf or network. Bring along:

    trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 gguf==0.19.0

(``python experiments/gpu_provision.py --print-wheels`` prints them; datasets 5.2 is the
oldest release that accepts huggingface_hub 1.33, trl 1.16 accepts transformers >= 4.56.2, and
fsspec is pinned to the newest version datasets 5.2 accepts.) Prepare them here, in the
repository root, with ``bash experiments/gpu_prepare.sh`` (add ``--no-gguf`` to skip SmolLM2's
parts), which runs

    python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \\
        --platform manylinux2014_x86_64 -d .whl trl==1.16.0 datasets==5.2.0 dill==0.4.1 \\
        multiprocess==0.70.19 fsspec==2026.9.0 gguf==0.19.0

then checks every wheel's Requires-Dist against the machine's packages (``--check-wheels
.whl``), installs the set into an empty folder with ``--no-index --no-deps`` (Python 3.12 where
there is one) and checks the size of what each call carries.

Limits of a call: at most :data:`CARRY_LIMIT` (64 MiB) carried — the working tree and the
carried folders — so the SmolLM2 GGUF file (98 MB) travels in two halves, ``.gguf-1/`` and
``.gguf-2/``, one per call (experiments/gpu_gguf.py); at most 16 MiB per file back, so the
archive is kept under :data:`ARCHIVE_LIMIT` (15 MiB). The call (the device tool's ``run``;
``.whl/`` and ``.gguf-*/`` are ignored by .gitignore, so they travel only as carried paths):

    command:   bash experiments/gpu_run.sh
    carry:     [".whl"]              (or [".whl", ".gguf-1"] to bring SmolLM2's first half)
    timeout_s: 540

gpu_run.sh installs the wheels into /tmp/site, runs the validation with ``--budget-s 420``
under a ``timeout`` of 480 s, and packs again whatever finished. Back here: ``mkdir -p
results/gpu-<device> && tar -xzf gpu-validation.tar.gz -C results/gpu-<device>`` (the summary's
``unpack`` field has the exact line). SmolLM2 (optional, only with >= 5 minutes of device time
left): right after the first call returns, ``bash experiments/gpu_run.sh smollm2`` with carry
[".whl", ".gguf-2"], timeout_s 300 (experiments/gpu_gguf.py says why two calls).

Usage (standard library and ``packaging`` only)::

    python experiments/gpu_provision.py --print-wheels | --check-wheels .whl
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: the wheels a call carries (``.whl/``): what the GPU machine lacks for the trl step and SmolLM2
WHEELS = ("trl==1.16.0", "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19",
          "fsspec==2026.9.0", "gguf==0.19.0")

#: the GPU machine's packages as its documentation lists them (2026-11): a version where it
#: gives one, ``None`` where it lists the package without a version
GPU_MACHINE_PACKAGES: dict[str, str | None] = {
    "torch": "2.11.0", "transformers": "5.17.0", "accelerate": "1.15.0", "tokenizers": "0.23.2",
    "huggingface-hub": "1.33.0", "safetensors": "0.8.0", "numpy": "2.5.2",
    "sentencepiece": "0.2.2", "triton": "3.6.0",
    **{name: None for name in (
        "aiohttp", "filelock", "httpx", "jinja2", "packaging", "pandas", "psutil", "pyarrow",
        "pyyaml", "requests", "rich", "scipy", "sympy", "matplotlib", "tqdm", "xxhash",
        "typing-extensions", "regex", "pillow")},
}

#: what one call may carry: the working tree and the carried folders
CARRY_LIMIT = 64 * 2**20
#: the device tool returns files of at most 16 MiB: the archive keeps a margin
ARCHIVE_LIMIT = 15 * 2**20


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def wheel_requirements(wheel: Path) -> tuple[str, str, list[str]]:
    """(name, version, Requires-Dist lines) read from a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
    fields: dict[str, list[str]] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            fields.setdefault(key, []).append(value.strip())
    return fields["Name"][0], fields["Version"][0], fields.get("Requires-Dist", [])


def check_requirements(packages: dict[str, tuple[str, list[str]]],
                       available: dict[str, str | None]) -> list[dict[str, str]]:
    """Each requirement of ``packages`` (name -> (version, Requires-Dist)) against
    ``available`` (name -> version, None = present with an unknown version), for CPython 3.12
    on Linux x86-64; extras are skipped. Status: ``ok``, ``present`` (version unknown),
    ``missing`` or ``conflict``."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    env = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
           "implementation_name": "cpython", "extra": ""}
    have = {_norm(k): v for k, v in available.items()}
    have.update({_norm(k): v for k, (v, _) in packages.items()})
    rows = []
    for pkg, (_, reqs) in sorted(packages.items()):
        for line in reqs:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            name = _norm(req.name)
            if name not in have:
                status = "missing"
            elif have[name] is None:
                status = "present"
            else:
                status = "ok" if req.specifier.contains(have[name], prereleases=True) \
                    else "conflict"
            rows.append({"package": pkg, "requires": str(req), "have": str(have.get(name)),
                         "status": status})
    return rows


def check_wheel_dir(whl: Path, available: dict[str, str | None]) -> dict[str, Any]:
    """The carried wheels: one per name, exactly the pinned versions, and their requirements
    checked against ``available`` (the GPU machine's packages)."""
    wheels = sorted(whl.glob("*.whl"))
    packages = {}
    for w in wheels:
        name, version, reqs = wheel_requirements(w)
        if _norm(name) in {_norm(n) for n in packages}:
            raise ValueError(f"{whl}: two wheels of {name}: keep one version")
        packages[name] = (version, reqs)
    want = {_norm(r.split("==")[0]): r.split("==")[1] for r in WHEELS}
    got = {_norm(n): v for n, (v, _) in packages.items()}
    rows = check_requirements(packages, available)
    return {"wheels": [w.name for w in wheels], "bytes": sum(w.stat().st_size for w in wheels),
            "pinned_missing": sorted(set(want) - set(got)),
            "unpinned": sorted(set(got) - set(want)),
            "version_mismatch": sorted(n for n in want if n in got and got[n] != want[n]),
            "requirements": rows,
            "problems": [r for r in rows if r["status"] in ("missing", "conflict")]}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--print-wheels", action="store_true",
                   help="print the pinned wheels to carry and exit")
    g.add_argument("--check-wheels", type=Path, metavar="DIR",
                   help="check the wheels in DIR against the GPU machine's packages")
    args = p.parse_args(argv)
    if args.print_wheels:
        print(" ".join(WHEELS))
        return 0
    if not args.check_wheels.is_dir():
        print(f"gpu_provision.py: --check-wheels {args.check_wheels} is not a folder",
              file=sys.stderr)
        return 2
    rep = check_wheel_dir(args.check_wheels, GPU_MACHINE_PACKAGES)
    for r in rep["requirements"]:
        print(f"{r['status']:9s} {r['package']:13s} needs {r['requires']:38s} "
              f"GPU machine: {r['have']}")
    bad = rep["problems"] or rep["pinned_missing"] or rep["unpinned"] or rep["version_mismatch"]
    print(f"{len(rep['wheels'])} wheels, {rep['bytes'] / 2**20:.1f} MiB; pinned but "
          f"missing: {rep['pinned_missing']}; not pinned: {rep['unpinned']}; other "
          f"versions: {rep['version_mismatch']}; problems: {len(rep['problems'])}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
