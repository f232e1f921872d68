"""The ``mi-bounds`` command line.

Subcommands::

    mi-bounds report     verification table of the bounds on random finite distributions
    mi-bounds figures    regenerate every figure (one script per figure under figures/)
    mi-bounds verify     run every sympy proof under proofs/ and write docs/PROOFS.md
    mi-bounds estimate   estimate MI from samples with a neural critic
    mi-bounds lm         the small-LM path (needs the ``lm`` extra)
    mi-bounds diagnose   shape of a training log's chosen log-likelihood (TRL or mi-bounds logs)
    mi-bounds audit      audit a preference loss (yours or built-in): MI reading, optimum, decline
    mi-bounds ches       which preference pairs will displace the chosen likelihood (CHES)

Each subcommand lives in its own module and is imported only when it is called, so that the
library itself (``mi_bounds``) never imports ``toy_models``, ``experiments``, ``figures`` or
``proofs``; this file is the one place that reaches outward, on request (``report`` is
:mod:`toy_models.report`: it checks the bounds against the oracle of ``toy_models``; ``audit``
is :mod:`toy_models.audit`: it needs the exact worlds).
``figures/`` and ``proofs/`` are not installed into site-packages (their names are too generic):
they are read from the source checkout, found beside the installed ``mi_bounds`` (an editable
install) or in the working directory.

Exit codes, every command: 0 done; 2 bad input (one line naming the option; argparse's own
errors too); 130 Ctrl-C, with one line saying what was kept (:data:`INTERRUPTED`). Called
in-process, :func:`main` returns the code instead of raising ``SystemExit`` (docs/THEORY.md,
"Misuse and edges").
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

#: subcommand -> ("module:function", one-line help). The function takes argv and returns an
#: exit code; it parses its own arguments.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "report": ("toy_models.report:main", "verification table of the bounds on random worlds"),
    "figures": ("figures:main", "regenerate every figure (PNG and PDF)"),
    "verify": ("proofs.verify:main", "run every sympy proof; write docs/PROOFS.md"),
    "estimate": ("mi_bounds.estimation.cli:main", "estimate MI from samples with a neural critic"),
    "lm": ("mi_bounds.lm.cli:main", "small transformer LM path: base, sample, align, report"),
    "diagnose": ("mi_bounds.decline.cli:main", "shape of a training log's chosen log-likelihood"),
    "audit": ("toy_models.audit:main", "audit a preference loss: MI reading, optimum, decline"),
    "ches": ("mi_bounds.decline.ches_cli:main", "score preference pairs by CHES before training"),
}


#: What a Ctrl-C leaves, per command (the one line printed before exit code 130).
RERUN = "nothing was written; run the command again"
INTERRUPTED: dict[str, str] = {
    "lm": "finished stages and (loss, seed) runs, and the last checkpoint, are kept; the same "
          "command continues where it stopped",
    "estimate": "no estimate was reported and no --out file written (a staircase keeps its "
                "finished runs; the same command continues); run the command again",
    "figures": "the figures already written are kept; run the command again (--only NAME "
               "for the rest)",
    "verify": "docs/PROOFS.md was not rewritten; run the command again",
}


#: Top-level packages that live only in the source checkout, not in the installed distribution.
CHECKOUT_PACKAGES = ("figures", "proofs", "experiments")


def checkout_root() -> Path | None:
    """The source checkout that holds ``figures/``, ``proofs/`` and ``experiments/``, or None.

    Looked for beside the imported ``mi_bounds`` package (an editable install or a checkout on
    ``sys.path``), then in the working directory.
    """
    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if all((root / name / "__init__.py").is_file() for name in CHECKOUT_PACKAGES):
            return root
    return None


def _import_target(module_name: str) -> ModuleType:
    """Import ``module_name``; a checkout-only package is imported from the checkout root."""
    if module_name.split(".")[0] in CHECKOUT_PACKAGES:
        root = checkout_root()
        if root is None:
            raise ModuleNotFoundError(
                f"{module_name} lives in the source checkout (figures/, proofs/, experiments/), "
                "which was not found beside mi_bounds or in the working directory"
            )
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
    return importlib.import_module(module_name)


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
        module = _import_target(module_name)
    except ModuleNotFoundError as err:
        print(
            f"mi-bounds {name}: cannot import {module_name} ({err}). The `lm` command needs "
            "`pip install 'mi-bounds[lm]'`; `figures` and `verify` need a source checkout "
            "(git clone; run them from its folder).",
            file=sys.stderr,
        )
        return 2
    try:
        return int(getattr(module, func_name)(rest) or 0)
    except SystemExit as stop:  # argparse's error (2) and --help (0): an exit code, in-process
        code = stop.code
        if code is None or isinstance(code, int):
            return int(code or 0)
        print(code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        sys.stdout.flush()
        print(f"\nmi-bounds {name}: interrupted (Ctrl-C); {INTERRUPTED.get(name, RERUN)}",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mi-bounds ... | head`: the reader left
        sys.stderr.close()
        return 141


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
