"""Operating characteristics of the decline rule (docs/THEORY.md §6), measured by simulation.

Null families (no decline: every claim of ``rise-then-fall`` or ``fall-from-start`` is a false
positive): a flat, a linearly rising (+4 noise SDs over the run) and a saturating rising trend
(+4 SDs reached by 30 % of the run, then flat: the least favourable rising trend for the drop
test), each with Gaussian AR(1) noise of unit marginal SD, ρ ∈ {0, 0.5, 0.8}; n ∈ {20, 30, 60,
200} points; 1, 3 or 8 seeds, the noise seed-specific, or shared by the seeds (sd 1, plus
seed-specific noise of sd 0.2: the evaluation pairs every seed is scored on). A random walk
(unit innovations, no trend) is reported separately: it is not a stationary null.

Alternatives: rise-then-fall (linear rise to a peak at 40 % of the run, then a linear fall,
both of size d noise SDs, the curve ending at its start) and fall-from-start (a linear fall of
d SDs), d ∈ {2, 4, 6}, white and AR(1) ρ = 0.5 noise, seed-specific; 30 and 60 points.

Each cell: ``--curves`` simulated curves (default 400), the rule at level ``--alpha``; rate and
its Clopper–Pearson 95 % interval. ``--rule old`` measures the rule before calibration (a fixed
z = 3 with noise from the MAD of second differences, and z = 3 paired standard errors over
seeds), copied below so that the before/after is one script. Run (about 3 CPU-minutes each):

    OMP_NUM_THREADS=1 python benchmarks/bench_decline_oc.py --rule new
    OMP_NUM_THREADS=1 python benchmarks/bench_decline_oc.py --rule old

Both write into ``benchmarks/results/decline_oc.json`` (one entry per rule); ``--markdown``
prints the tables of docs/THEORY.md §6 from it.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import signal
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mi_bounds.decline.shape import decline_shape, shapes_over_seeds

OUT = Path(__file__).resolve().parent / "results" / "decline_oc.json"
DECLINES = ("rise-then-fall", "fall-from-start")


# ---- the old rule (as committed before calibration), for the before/after ----------------
def _old_smooth(v: np.ndarray, w: int) -> np.ndarray:
    if w <= 1:
        return v.copy()
    h = w // 2
    c = np.concatenate([np.zeros((*v.shape[:-1], 1)), np.cumsum(v, axis=-1)], axis=-1)
    i = np.arange(v.shape[-1])
    lo, hi = np.maximum(i - h, 0), np.minimum(i + h + 1, v.shape[-1])
    return (c[..., hi] - c[..., lo]) / (hi - lo)


def _old_window(n: int) -> int:
    if n < 20:
        return 1
    w = max(1, round(0.05 * n))
    return w if w % 2 == 1 else w + 1


def _old_classify(m: np.ndarray, levels: tuple[float, float, float]) -> str:
    k = int(np.argmax(m))
    frac = k / (m.size - 1)
    rise, drop, fall = m[k] - m[0], m[k] - m[-1], m[0] - m[-1]
    lr, ld, lc = (max(x, 1e-6) for x in levels)
    if frac >= 0.1 and rise > lr and drop > ld:
        return "rise-then-fall"
    return "fall-from-start" if fall > lc else "no-decline"


def old_rule(curves: np.ndarray) -> str:
    """The loss's verdict of the old rule on ``[seeds, n]`` curves."""
    n = curves.shape[1]
    w = _old_window(n)
    if curves.shape[0] == 1:
        d2 = np.diff(curves[0], 2)
        sp = 1.4826 * np.median(np.abs(d2 - np.median(d2))) / math.sqrt(6.0)
        sig = 3.0 * math.sqrt(2.0) * sp / math.sqrt((min(w, n) + 1) / 2)
        return _old_classify(_old_smooth(curves[0], w), (sig, sig, sig))
    sm = _old_smooth(curves, w)
    k = int(np.argmax(sm.mean(0)))
    diffs = np.stack([sm[:, k] - sm[:, 0], sm[:, k] - sm[:, -1], sm[:, -1] - sm[:, 0]])
    lv = 3.0 * diffs.std(axis=1, ddof=1) / math.sqrt(curves.shape[0])
    return _old_classify(sm.mean(0), tuple(lv))


def new_rule(curves: np.ndarray, alpha: float) -> str:
    if curves.shape[0] == 1:
        return decline_shape(curves[0], alpha=alpha).shape
    return shapes_over_seeds(curves, alpha=alpha, per_seed=False)["mean"]["shape"]


# ---- simulation -----------------------------------------------------------------------------
def ar1(rng: np.random.Generator, rho: float, size: tuple[int, ...]) -> np.ndarray:
    u = rng.standard_normal(size)
    if rho == 0.0:
        return u
    u[..., 1:] *= math.sqrt(1 - rho * rho)
    return signal.lfilter([1.0], [1.0, -rho], u, axis=-1)


def trend(kind: str, n: int, size: float = 4.0) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    if kind == "flat":
        return np.zeros(n)
    if kind == "rising":
        return size * t
    if kind == "saturating":
        return size * np.minimum(t / 0.3, 1.0)
    if kind == "rise-then-fall":
        return np.where(t <= 0.4, size * t / 0.4, size * (1 - t) / 0.6)
    if kind == "fall-from-start":
        return -size * t
    raise ValueError(kind)


def simulate(rng, kind, n, seeds, rho, shared, size=4.0, walk=False):
    mu = trend(kind, n, size)
    if walk:
        e = np.cumsum(rng.standard_normal((seeds, n)), axis=-1)
        if shared:
            e = e[:1] + 0.2 * rng.standard_normal((seeds, n))
        return mu + e
    if shared:
        return mu + ar1(rng, rho, (1, n)) + 0.2 * ar1(rng, rho, (seeds, n))
    return mu + ar1(rng, rho, (seeds, n))


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    lo = 0.0 if k == 0 else float(sps.beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(sps.beta.ppf(0.975, k + 1, n - k))
    return lo, hi


def cells() -> list[dict]:
    out = []
    for kind in ("flat", "rising", "saturating"):
        for rho in (0.0, 0.5, 0.8):
            for n in (20, 30, 60, 200):
                for seeds in (1, 3, 8):
                    for shared in ((False,) if seeds == 1 else (False, True)):
                        out.append(dict(kind=kind, rho=rho, n=n, seeds=seeds, shared=shared,
                                        size=4.0, null=True, walk=False))
    for n in (30, 60, 200):
        for seeds in (1, 3):
            out.append(dict(kind="flat", rho=1.0, n=n, seeds=seeds, shared=False, size=0.0,
                            null=True, walk=True))
    for kind in ("rise-then-fall", "fall-from-start"):
        for size in (2.0, 4.0, 6.0):
            for rho in (0.0, 0.5):
                for n in (30, 60):
                    for seeds in (1, 3):
                        out.append(dict(kind=kind, rho=rho, n=n, seeds=seeds, shared=False,
                                        size=size, null=False, walk=False))
    return out


def _pct(r: dict) -> str:
    return f"{100 * r['rate']:.1f} [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]"


def markdown(data: dict) -> str:
    """The tables of docs/THEORY.md §6 from the stored results: per null family and seed
    set-up the worst cell over n ∈ {30, 60, 200} (and n = 20 apart), old rule against new;
    the random walk; power per alternative."""
    rules = [r for r in ("old", "new") if r in data]
    cells = {r: data[r]["cells"] for r in rules}
    out = ["| null family | seeds | " + " | ".join(
        f"{r} rule: worst FPR % n ≥ 30 [95 % CI] | {r}: n = 20" for r in rules) + " |",
        "|---|---|" + "---|---|" * len(rules)]
    setups = [(1, False), (3, False), (3, True), (8, False), (8, True)]
    for kind in ("flat", "rising", "saturating"):
        for rho in (0.0, 0.5, 0.8):
            for seeds, shared in setups:
                row = [f"{kind}, ρ = {rho}",
                       f"{seeds}{', shared' if shared else ''}"]
                for r in rules:
                    sel = [c for c in cells[r] if c["null"] and not c["walk"]
                           and c["kind"] == kind and c["rho"] == rho and c["seeds"] == seeds
                           and c["shared"] == shared]
                    big = max((c for c in sel if c["n"] >= 30), key=lambda c: c["ci95"][1])
                    small = next(c for c in sel if c["n"] == 20)
                    row += [f"{_pct(big)} (n = {big['n']})", _pct(small)]
                out.append("| " + " | ".join(row) + " |")
    out += ["", "| random walk | n | seeds | " + " | ".join(f"{r}: FPR %" for r in rules) + " |",
            "|---|---|---|" + "---|" * len(rules)]
    for c in (c for c in cells[rules[0]] if c["walk"]):
        row = ["unit innovations", str(c["n"]), str(c["seeds"])]
        for r in rules:
            m = next(x for x in cells[r] if x["walk"] and x["n"] == c["n"]
                     and x["seeds"] == c["seeds"])
            row.append(_pct(m))
        out.append("| " + " | ".join(row) + " |")
    out += ["", "| alternative | size (noise SDs) | ρ | n | seeds | " + " | ".join(
        f"{r}: power %" for r in rules) + " |", "|---|---|---|---|---|" + "---|" * len(rules)]
    for c in (c for c in cells[rules[0]] if not c["null"]):
        row = [c["kind"], f"{c['size']:g}", f"{c['rho']:g}", str(c["n"]), str(c["seeds"])]
        for r in rules:
            m = next(x for x in cells[r] if not x["null"] and x["kind"] == c["kind"]
                     and x["size"] == c["size"] and x["rho"] == c["rho"] and x["n"] == c["n"]
                     and x["seeds"] == c["seeds"])
            row.append(_pct(m))
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rule", choices=("new", "old"), default="new")
    p.add_argument("--markdown", action="store_true",
                   help="print the tables of the stored results (no simulation)")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--curves", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())))
        return
    t0 = time.perf_counter()
    rows = []
    for i, c in enumerate(cells()):
        rng = np.random.default_rng([args.seed, i])
        hits = 0
        for _ in range(args.curves):
            x = simulate(rng, c["kind"], c["n"], c["seeds"], c["rho"], c["shared"], c["size"],
                         c["walk"])
            verdict = old_rule(x) if args.rule == "old" else new_rule(x, args.alpha)
            if c["null"]:
                hits += verdict in DECLINES
            else:
                hits += verdict == c["kind"]
        lo, hi = clopper_pearson(hits, args.curves)
        row = {**c, "curves": args.curves, "hits": hits, "rate": hits / args.curves,
               "ci95": [lo, hi]}
        rows.append(row)
        what = "FPR" if c["null"] else "power"
        noise = "random walk" if c["walk"] else f"rho {c['rho']}"
        print(f"{c['kind']:>16} d={c['size']:g} {noise:>11} n={c['n']:>3} seeds={c['seeds']} "
              f"{'shared' if c['shared'] else 'own':>6}: {what} {hits / args.curves:.3f} "
              f"[{lo:.3f}, {hi:.3f}]", flush=True)
    wall = time.perf_counter() - t0
    nulls = [r for r in rows if r["null"] and not r["walk"] and r["n"] >= 30
             and r["seeds"] in (1, 3)]
    worst = max(nulls, key=lambda r: r["ci95"][1])
    print(f"worst stationary null (n >= 30, 1 or 3 seeds): {worst['kind']} rho {worst['rho']} "
          f"n={worst['n']} seeds={worst['seeds']} shared={worst['shared']}: FPR "
          f"{worst['rate']:.3f}, upper 95 % {worst['ci95'][1]:.3f}; {wall:.0f} s")
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data[args.rule] = {"alpha": args.alpha if args.rule == "new" else None,
                       "curves_per_cell": args.curves, "seed": args.seed,
                       "wall_s": round(wall, 1), "machine": platform.machine(),
                       "date": time.strftime("%Y-%m-%d", time.gmtime()), "cells": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
