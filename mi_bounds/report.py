"""``mi-bounds report``: the verification table of every bound on random finite distributions.

For ``--worlds`` random pairs (P, Q) over supports of 2–8 cells (a third of them sparse, with
exact zeros) and ``--critics`` random critic tables per pair, with values spanning [-50, 50], it
evaluates every bound exactly (weighted expectations, float64) and checks the facts of DESIGN.md
§4 against KL and JSD from the independent scipy oracle (:mod:`toy_models.oracle`). Each row is
one fact: how many cases were checked, the worst case (the largest violation, or the largest
error where an equality is claimed), the tolerance, and whether it held. The exit code is 1 if
any fact failed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mi_bounds import bounds as B

LOG2 = math.log(2.0)
T_MIN = -1e3  # a finite stand-in for log 0 in optimal critics: exp(-1000) == 0.0 in float64


@dataclass
class Row:
    """One verified fact: ``worst`` must be ≤ ``tol`` (a violation or an absolute error)."""

    fact: str
    checks: int
    worst: float
    tol: float

    @property
    def ok(self) -> bool:
        return self.worst <= self.tol


class _Max:
    """Running count and maximum of the quantities a fact requires to be ≤ 0 (or small)."""

    def __init__(self) -> None:
        self.n, self.worst = 0, -math.inf

    def add(self, values: np.ndarray | float) -> None:
        arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
        self.n += arr.size
        self.worst = max(self.worst, float(np.max(arr)))


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


def _log_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.log(p) - np.log(q)
    lr[(p == 0) & (q > 0)] = T_MIN
    lr[q == 0] = 0.0
    return lr


def _exact(fn: Callable[..., torch.Tensor], p, q, t, **kw) -> np.ndarray:
    """Bound at critic table(s) ``t`` ([..., n]) as the exact expectation under (p, q)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return fn(t, t, pos_weight=torch.as_tensor(p), neg_weight=torch.as_tensor(q), **kw).numpy()


def _infonce_expectation(joint: np.ndarray, critic: np.ndarray, k: int) -> float:
    """E[InfoNCE_K] by enumerating every batch of K iid pairs from ``joint`` exactly."""
    nx, ny = joint.shape
    cells = [(x, y) for x in range(nx) for y in range(ny) if joint[x, y] > 0]
    batches = list(itertools.product(cells, repeat=k))
    xs = np.array([[c[0] for c in b] for b in batches])
    ys = np.array([[c[1] for c in b] for b in batches])
    prob = np.prod(joint[xs, ys], axis=1)
    scores = torch.as_tensor(critic[xs[:, :, None], ys[:, None, :]])
    return float(np.sum(prob * B.infonce_bound(scores).numpy()))


def verify(worlds: int = 200, critics: int = 20, seed: int = 0) -> list[Row]:
    """Check DESIGN.md §4 facts 1–6 on random worlds; return one :class:`Row` per fact."""
    from toy_models import oracle  # the independent oracle; imported here, not by the library

    rng = np.random.default_rng(seed)
    facts: dict[str, _Max] = {name: _Max() for name in [
        "1. DV(T) <= KL", "1. NWJ(T) <= KL", "1. TUBA(T,a) <= KL", "1. JS(T) <= 2JSD - 2log2",
        "2. NWJ(T) <= DV(T)", "2. TUBA(T,a) <= DV(T)",
        "3. |DV(T*) - KL|", "3. |NWJ(T*) - KL|", "3. |TUBA(T*,a) - KL|",
        "3. |JS(T*) - (2JSD-2log2)|",
        "4. |DV(T+c) - DV(T)|",
        "5. InfoNCE batch value <= log K", "5. E[InfoNCE_K] <= I(X;Y) (exact enumeration)",
        "6. KL = inf off-support, bounds finite",
    ]}
    scale_of: dict[str, float] = {}

    def add(name: str, values, scale: float = 1.0) -> None:
        facts[name].add(values)
        scale_of[name] = max(scale_of.get(name, 1.0), scale)

    for _ in range(worlds):
        p, q = _random_pair(rng)
        n = len(p)
        kl, jsd = float(oracle.kl(p, q)), float(oracle.jsd(p, q))
        js_target = 2 * jsd - 2 * LOG2
        t = np.concatenate([rng.uniform(-50, 50, (critics // 2, n)),
                            rng.normal(0, 3, (critics - critics // 2, n))])
        log_a = rng.uniform(-5, 5)
        dv = _exact(B.dv_bound, p, q, t)
        nwj = _exact(B.nwj_bound, p, q, t)
        tuba = _exact(B.tuba_bound, p, q, t, log_baseline=log_a)
        js = _exact(B.js_bound, p, q, t)
        add("1. DV(T) <= KL", dv - kl, abs(kl))
        add("1. NWJ(T) <= KL", nwj - kl, abs(kl))
        add("1. TUBA(T,a) <= KL", tuba - kl, abs(kl))
        add("1. JS(T) <= 2JSD - 2log2", js - js_target)
        add("2. NWJ(T) <= DV(T)", nwj - dv, float(np.max(np.abs(dv))))
        add("2. TUBA(T,a) <= DV(T)", tuba - dv, float(np.max(np.abs(dv))))
        lr = _log_ratio(p, q)
        c = rng.uniform(-20, 20)
        add("3. |DV(T*) - KL|", abs(_exact(B.dv_bound, p, q, B.BOUNDS["dv"].optimal_critic(lr) + c)
                                     - kl), abs(kl))
        add("3. |NWJ(T*) - KL|",
            abs(_exact(B.nwj_bound, p, q, B.BOUNDS["nwj"].optimal_critic(lr)) - kl), abs(kl))
        t_tuba = B.BOUNDS["tuba"].optimal_critic(lr, log_baseline=log_a)
        add("3. |TUBA(T*,a) - KL|",
            abs(_exact(B.tuba_bound, p, q, t_tuba, log_baseline=log_a) - kl), abs(kl))
        add("3. |JS(T*) - (2JSD-2log2)|",
            abs(_exact(B.js_bound, p, q, B.BOUNDS["js"].optimal_critic(lr)) - js_target))
        shift = rng.uniform(-50, 50)
        add("4. |DV(T+c) - DV(T)|", np.abs(_exact(B.dv_bound, p, q, t + shift) - dv),
            float(np.max(np.abs(dv))) + abs(shift))
        # fact 6: move mass of P onto a cell where Q has none
        if n >= 2:
            hole = int(rng.integers(n))
            q6 = q.copy()
            q6[hole] = 0.0
            if q6.sum() > 0:
                q6 /= q6.sum()
                p6 = p.copy()
                p6[hole] = max(p6[hole], 0.1)
                p6 /= p6.sum()
                finite = all(np.isfinite(_exact(fn, p6, q6, t)).all()
                             for fn in (B.dv_bound, B.nwj_bound, B.js_bound, B.smile_bound))
                add("6. KL = inf off-support, bounds finite",
                    0.0 if (oracle.kl(p6, q6) == math.inf and finite) else 1.0)

    g = torch.Generator().manual_seed(seed)
    for k in (2, 4, 16, 256):
        s = 50 * torch.randn(max(1, critics), k, k, generator=g, dtype=torch.float64)
        add("5. InfoNCE batch value <= log K", (B.infonce_bound(s) - math.log(k)).numpy(),
            math.log(k))
    for _ in range(max(1, worlds // 10)):
        nx, ny, k = (int(v) for v in rng.integers(1, 4, 3))
        k = max(k, 2)
        joint = rng.dirichlet(np.full(nx * ny, 0.7)).reshape(nx, ny)
        critic = rng.uniform(-10, 10, (nx, ny))
        add("5. E[InfoNCE_K] <= I(X;Y) (exact enumeration)",
            _infonce_expectation(joint, critic, k) - oracle.mutual_information(joint))

    return [Row(name, m.n, m.worst, 1e-9 * (1.0 + scale_of.get(name, 1.0)))
            for name, m in facts.items()]


def format_table(rows: Sequence[Row]) -> str:
    """Fixed-width text table of the rows."""
    width = max(len(r.fact) for r in rows)
    lines = [f"{'fact (DESIGN.md §4)':<{width}}  {'checks':>7}  {'worst':>11}  {'tol':>8}  status"]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append(f"{r.fact:<{width}}  {r.checks:>7}  {r.worst:>11.3e}  {r.tol:>8.1e}  "
                     f"{'ok' if r.ok else 'FAILED'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``mi-bounds report [--worlds N] [--critics M] [--seed S] [--json PATH]``."""
    parser = argparse.ArgumentParser(prog="mi-bounds report", description=__doc__.split("\n")[0])
    parser.add_argument("--worlds", type=int, default=200, help="random (P, Q) pairs (default 200)")
    parser.add_argument("--critics", type=int, default=20,
                        help="critic tables per pair (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this path")
    args = parser.parse_args(argv)
    if args.worlds < 1 or args.critics < 2:
        parser.error("--worlds must be >= 1 and --critics >= 2")
    rows = verify(args.worlds, args.critics, args.seed)
    print(f"mi-bounds verification report: {args.worlds} random (P, Q) pairs x {args.critics} "
          f"critics in [-50, 50], seed {args.seed}; exact expectations in float64 against scipy.")
    print("'worst' is the largest violation (bound - target) or, for '|...|' rows, the largest "
          "error; a fact holds when worst <= tol.\n")
    print(format_table(rows))
    failed = [r.fact for r in rows if not r.ok]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} facts hold.")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"ok": r.ok} for r in rows], indent=2) + "\n")
    return 1 if failed else 0
