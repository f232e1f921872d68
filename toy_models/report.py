"""``mi-bounds report``: the verification table of every bound on random finite distributions.

For ``--worlds`` random pairs (P, Q) over supports of 2–8 cells (a third of them sparse, with
exact zeros) and ``--critics`` random critic tables per pair, with values spanning [-50, 50], it
checks the facts of docs/THEORY.md §1 with the fact checker :mod:`toy_models.facts` (the one the
property tests use): every bound evaluated exactly (weighted expectations, float64) against KL
and JSD from the independent scipy oracle (:mod:`toy_models.oracle`). Each row is one fact: how
many cases were checked, the worst case (the largest violation, or the largest error where an
equality is claimed), the tolerance, and whether it held. The exit code is 1 if any fact failed.

It lives in ``toy_models`` (not in the library) because it needs the oracle; the ``mi-bounds``
command loads it on demand.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mi_bounds._json import dumps
from mi_bounds._paths import check_output_file, write_text_atomic
from mi_bounds._validation import int_arg
from toy_models import facts as F


@dataclass
class Row:
    """One verified fact over many cases: the largest ``worst`` and that case's ``tol``; the
    fact holds if no case failed (``failures == 0``)."""

    fact: str
    checks: int
    worst: float
    tol: float
    failures: int = 0

    @property
    def ok(self) -> bool:
        return self.failures == 0 and self.worst <= self.tol


class _Max:
    """Running count, largest value (with its tolerance) and failures of the
    :class:`~toy_models.facts.Check` rows of one fact."""

    def __init__(self) -> None:
        self.n, self.worst, self.tol, self.failures = 0, -math.inf, F.RTOL, 0

    def add(self, check: F.Check, n: int = 1) -> None:
        self.n += n
        self.failures += 0 if check.ok else 1
        if check.worst > self.worst:
            self.worst, self.tol = check.worst, check.tol


def _random_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = int(rng.integers(2, 9))
    q = rng.dirichlet(np.full(n, 0.5))
    p = rng.dirichlet(np.full(n, 0.5))
    if rng.random() < 1 / 3:  # sparse: zero some cells of q, and p with them (P << Q)
        zero = rng.random(n) < 0.4
        zero[rng.integers(n)] = False
        q, p = np.where(zero, 0.0, q), np.where(zero, 0.0, p)
        if p.sum() == 0:
            p = q.copy()
        q, p = q / q.sum(), p / p.sum()
    return p, q


#: The rows of the report, in order.
FACTS = [
    "1. DV(T) <= KL", "1. NWJ(T) <= KL", "1. TUBA(T,a) <= KL", "1. JS(T) <= 2JSD - 2log2",
    "2. NWJ(T) <= DV(T)", "2. TUBA(T,a) <= DV(T)",
    "3. |DV(T*) - KL|", "3. |NWJ(T*) - KL|", "3. |TUBA(T*,a) - KL|",
    "3. |JS(T*) - (2JSD-2log2)|",
    "4. |DV(T+c) - DV(T)|",
    "5. InfoNCE batch value <= log K", "5. E[InfoNCE_K] <= I(X;Y) (exact enumeration)",
    "6. KL = inf off-support, bounds finite", "6. DV(T + c 1[q=0]) - DV(T) = c P(q=0)",
]


def verify(worlds: int = 200, critics: int = 20, seed: int = 0) -> list[Row]:
    """Check docs/THEORY.md §1 facts 1–6 on random worlds; return one :class:`Row` per fact.

    Runs torch on one thread (every tensor is tiny; on a busy machine a second thread makes
    each call up to 1000x slower) and restores the setting afterwards.
    """
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _verify(worlds, critics, seed)
    finally:
        torch.set_num_threads(n_threads)


def _verify(worlds: int, critics: int, seed: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    facts = {name: _Max() for name in FACTS}

    def add(checks: list[F.Check], n: int = 1) -> None:
        for c in checks:
            facts[c.fact].add(c, n)

    for _ in range(worlds):
        p, q = _random_pair(rng)
        n = len(p)
        t = np.concatenate([rng.uniform(-50, 50, (critics // 2, n)),
                            rng.normal(0, 3, (critics - critics // 2, n))])
        log_a = rng.uniform(-5, 5)
        add(F.fact1_bounds_below_targets(p, q, t, log_a), critics)
        add(F.fact2_nwj_tuba_below_dv(p, q, t, log_a), critics)
        add(F.fact3_tight_at_optimal_critics(p, q, rng.uniform(-20, 20), log_a))
        add(F.fact4_dv_shift_invariant(p, q, t, rng.uniform(-50, 50)), critics)
        # fact 6: move mass of P onto a cell where Q has none
        hole = int(rng.integers(n))
        q6 = q.copy()
        q6[hole] = 0.0
        if q6.sum() > 0:
            q6 /= q6.sum()
            p6 = p.copy()
            p6[hole] = max(p6[hole], 0.1)
            p6 /= p6.sum()
            add(F.fact6_off_support(p6, q6, t, rng.uniform(0, 100)))

    g = torch.Generator().manual_seed(seed)
    for k in (2, 4, 16, 256):
        s = 50 * torch.randn(max(1, critics), k, k, generator=g, dtype=torch.float64)
        add(F.fact5_infonce_batch_below_log_k(s), s.shape[0])
    for _ in range(max(1, worlds // 10)):
        nx, ny, k = (int(v) for v in rng.integers(1, 4, 3))
        k = max(k, 2)
        joint = rng.dirichlet(np.full(nx * ny, 0.7)).reshape(nx, ny)
        critic = rng.uniform(-10, 10, (nx, ny))
        add(F.fact5_infonce_expectation_below_mi(joint, critic, k))

    return [Row(name, m.n, m.worst, m.tol, m.failures) for name, m in facts.items()]


def format_table(rows: Sequence[Row]) -> str:
    """Fixed-width text table of the rows."""
    width = max(len(r.fact) for r in rows)
    head = "fact (docs/THEORY.md §1)"
    lines = [f"{head:<{width}}  {'checks':>7}  {'worst':>11}  {'tol':>8}  status"]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append(f"{r.fact:<{width}}  {r.checks:>7}  {r.worst:>11.3e}  {r.tol:>8.1e}  "
                     f"{'ok' if r.ok else 'FAILED'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``mi-bounds report [--worlds N] [--critics M] [--seed S] [--json PATH]``."""
    parser = argparse.ArgumentParser(prog="mi-bounds report", description=__doc__.split("\n")[0])
    parser.add_argument("--worlds", type=int_arg(1, 10**6), default=200,
                        help="random (P, Q) pairs (default 200)")
    parser.add_argument("--critics", type=int_arg(2, 10**4), default=20,
                        help="critic tables per pair (default 20)")
    parser.add_argument("--seed", type=int_arg(), default=0, help="random seed (default 0)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this path")
    args = parser.parse_args(argv)
    if args.json is not None and (args.json.is_dir() or not args.json.parent.is_dir()):
        parser.error(f"--json: cannot write {args.json} (a folder, or in a missing folder)")
    if args.json is not None:
        try:  # writable, before the work
            check_output_file(args.json, "--json")
        except ValueError as err:
            parser.error(str(err))
    rows = verify(args.worlds, args.critics, args.seed)
    print(f"mi-bounds verification report: {args.worlds} random (P, Q) pairs x {args.critics} "
          f"critics in [-50, 50], seed {args.seed}; exact expectations in float64 against scipy.")
    print("'worst' is the largest violation (bound - target) or, for '|...|' rows, the largest "
          "error; a fact holds when worst <= tol.\n")
    print(format_table(rows))
    failed = [r.fact for r in rows if not r.ok]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} facts hold.")
    if args.json:
        try:
            write_text_atomic(args.json, dumps([asdict(r) | {"ok": r.ok} for r in rows],
                                               indent=2) + "\n")
        except OSError as err:
            print(f"mi-bounds report: error: --json: cannot write {args.json} "
                  f"({err.strerror or err})", file=sys.stderr)
            return 2
    return 1 if failed else 0
