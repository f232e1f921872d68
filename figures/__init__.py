"""Paper figures: one module per figure, ``figures/fig_<name>.py``.

Every figure module defines::

    def make(out_dir: pathlib.Path, *, quick: bool = False) -> list[pathlib.Path]

which computes its numbers with ``mi_bounds`` / ``toy_models``, writes ``<name>.png`` and
``<name>.pdf`` (and, where it has numbers, ``<name>.json``) with :func:`figures._style.save`, and
returns the paths it wrote. ``quick=True`` is a reduced version for the tests. ``mi-bounds
figures`` discovers the modules and runs them all (or those named with ``--only``).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from mi_bounds._paths import check_output_dir

#: Where `mi-bounds figures` writes by default (the README gallery shows these files).
DEFAULT_OUT = Path("docs/figures")


def available() -> list[str]:
    """Names of the figure modules (``fig_*``), sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("fig_"))


def main(argv: Sequence[str] | None = None) -> int:
    """``mi-bounds figures [--only NAME ...] [--out DIR] [--quick]``."""
    names = available()
    parser = argparse.ArgumentParser(prog="mi-bounds figures", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: %(default)s)")
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME",
                        help=f"figure modules to run (default: all of {', '.join(names)})")
    parser.add_argument("--quick", action="store_true", help="reduced versions (as in the tests)")
    parser.add_argument("--list", action="store_true", help="list the figure modules and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(names))
        return 0
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out: {args.out} exists and is not a folder")
    try:  # a writable folder, before any figure is computed
        check_output_dir(args.out)
    except ValueError as err:
        parser.error(str(err))
    # One torch thread for every figure: the tensors are small, and a fixed thread count fixes
    # the order of every reduction, so the numbers (and files) do not depend on the machine's
    # core count. (`make run` also pins the BLAS threads and SOURCE_DATE_EPOCH.)
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in args.only or names:
            t0 = time.perf_counter()
            module = importlib.import_module(f"figures.{name}")
            paths = module.make(args.out, quick=args.quick)
            dt = time.perf_counter() - t0
            print(f"{name}: {', '.join(str(p) for p in paths)}  ({dt:.1f} s)", file=sys.stderr)
    finally:
        torch.set_num_threads(n_threads)
    return 0
