"""Executable sympy derivations of every identity the toolkit relies on (``mi-bounds verify``).

One module per result, ``proofs/pNN_<name>.py``, each defining ``PROOF``: a
:class:`proofs._core.Proof` with the statement in prose and LaTeX, a derivation whose every step
sympy checks (and which can fail: see :mod:`proofs._core`), and a numeric spot check on random
values that uses :mod:`mi_bounds` where the result is about its functions.
``mi-bounds verify`` (:mod:`proofs.verify`) runs them all, prints a table and writes
``docs/PROOFS.md`` from the same objects.
"""

from __future__ import annotations

import importlib
import pkgutil

from proofs._core import Proof, ProofResult, Step

__all__ = ["Proof", "ProofResult", "Step", "available", "discover", "get_proof"]


def available() -> list[str]:
    """Module names of the proofs (``pNN_*``), sorted."""
    return sorted(
        m.name for m in pkgutil.iter_modules(__path__)
        if len(m.name) > 3 and m.name[0] == "p" and m.name[1:3].isdigit()
    )


def discover() -> list[Proof]:
    """Every proof, in order (imports each ``pNN_*`` module and returns its ``PROOF``)."""
    return [importlib.import_module(f"proofs.{name}").PROOF for name in available()]


def get_proof(key: str) -> Proof:
    """A proof by key (``"p03"``) or module name; unknown names raise ``ValueError``."""
    for name in available():
        if key in (name, name[:3]):
            return importlib.import_module(f"proofs.{name}").PROOF
    valid = ", ".join(n[:3] for n in available())
    raise ValueError(f"unknown proof {key!r}; valid keys: {valid}")
