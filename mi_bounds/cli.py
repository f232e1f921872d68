"""The ``mi-bounds`` command line.

Subcommands::

    mi-bounds report     verification table of the bounds on random finite distributions
    mi-bounds figures    regenerate every figure (one script per figure under figures/)
    mi-bounds verify     run every sympy proof under proofs/ and write docs/PROOFS.md
    mi-bounds estimate   estimate MI from samples with a neural critic
    mi-bounds lm         the small-LM path (needs the ``lm`` extra)
    mi-bounds diagnose   shape of a training log's chosen log-likelihood (TRL or mi-bounds logs)

Each subcommand lives in its own module and is imported only when it is called, so that the
library itself (``mi_bounds``) never imports ``toy_models``, ``figures`` or ``proofs``; this file
is the one place that reaches outward, on request (``report`` is :mod:`toy_models.report`: it
checks the bounds against the oracle of ``toy_models``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

#: subcommand -> ("module:function", one-line help). The function takes argv and returns an
#: exit code; it parses its own arguments.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "report": ("toy_models.report:main", "verification table of the bounds on random worlds"),
    "figures": ("figures:main", "regenerate every figure (PNG and PDF)"),
    "verify": ("proofs.verify:main", "run every sympy proof; write docs/PROOFS.md"),
    "estimate": ("mi_bounds.estimate_cli:main", "estimate MI from samples with a neural critic"),
    "lm": ("mi_bounds.lm.cli:main", "small transformer LM path: base, sample, align, report"),
    "diagnose": ("mi_bounds.diagnose_cli:main", "shape of a training log's chosen log-likelihood"),
}


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: mi-bounds <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `mi-bounds <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mi-bounds`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"mi-bounds: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target = SUBCOMMANDS[name][0]
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        print(
            f"mi-bounds {name}: cannot import {module_name} ({err}). The `lm` command needs "
            "`pip install 'mi-bounds[lm]'`; `figures` and `verify` need a source checkout.",
            file=sys.stderr,
        )
        return 2
    return int(getattr(module, func_name)(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
