"""Invariance of the estimates to monotone re-measurement of each feature (docs/RESULTS.md §4.8).

One Gaussian sample per setting (d + d dimensions, ``y = ρ x + sqrt(1 - ρ²) ε`` per coordinate,
I = -(d/2) log(1 - ρ²) nats), then the *same rows* re-measured feature by feature through a
strictly increasing map: identity, ``log Φ(·)`` (a heavy left tail), cube, ``exp(2·)``, the
Cauchy quantile of ``Φ(·)`` and a mixture (each feature its own map, cycling through the four).
MI is the same for all six; each estimator (DV, InfoNCE, NWJ by the held-out protocol with their
defaults and seed 0; KSG with k = 3) is run on each with ``marginals="standard"`` (z-scores,
asinh for heavy tails) and ``marginals="rank"`` (normal scores of the train-row ranks), and the
*spread* (max − min over the six re-measurements) is reported per estimator, setting and
marginal map.

Command (2-core x86-64 VM, one thread; about 25 min for the full grid)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_invariance.py \
        --out benchmarks/results/invariance.json

``--quick`` runs one setting (3 + 3 dims, I = 1.5) for a look. Resumable: settings already in
``--out`` are skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.stats import cauchy, norm

from mi_bounds.estimation.heldout import estimate_mi_on_samples, sample_config
from mi_bounds.estimation.ksg import ksg_mi

ROWS = 5000
NEURAL = ("dv", "infonce", "nwj")
MAPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda a: a,
    "log_cdf": lambda a: norm.logcdf(a),
    "cube": lambda a: a**3,
    "exp2": lambda a: np.exp(2 * a),
    "cauchy_quantile": lambda a: cauchy.ppf(norm.cdf(a)),
}
CYCLE = ("log_cdf", "cube", "exp2", "cauchy_quantile")


def remeasure(a: np.ndarray, name: str) -> np.ndarray:
    """``a`` [n, d] through the map ``name``; ``"mixture"``: feature j through CYCLE[j % 4]."""
    if name == "mixture":
        return np.stack([MAPS[CYCLE[j % len(CYCLE)]](a[:, j]) for j in range(a.shape[1])], 1)
    return MAPS[name](a)


def gaussian_sample(dim: int, mi: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rho = math.sqrt(1.0 - math.exp(-2.0 * mi / dim))  # I = -(d/2) log(1 - ρ²)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, dim))
    y = rho * x + math.sqrt(1.0 - rho**2) * rng.normal(size=(ROWS, dim))
    return x, y


def run_setting(dim: int, mi: float) -> dict:
    x, y = gaussian_sample(dim, mi, seed=dim * 100 + int(mi * 10))
    names = [*MAPS, "mixture"]
    out: dict = {"dim": dim, "true_mi": mi, "rows": ROWS, "maps": names, "estimates": {}}
    for marginals in ("standard", "rank"):
        for est in (*NEURAL, "ksg"):
            values = []
            t0 = time.perf_counter()
            for name in names:
                xm, ym = remeasure(x, name), remeasure(y, name)
                if est == "ksg":
                    values.append(ksg_mi(xm, ym, marginals=marginals).estimate)
                else:
                    cfg = sample_config(bound=est, marginals=marginals, seed=0)
                    res, _ = estimate_mi_on_samples(xm, ym, cfg)
                    values.append(float(res.final[est][0]))
            out["estimates"][f"{est}/{marginals}"] = {
                "values": values, "spread": max(values) - min(values),
                "seconds": time.perf_counter() - t0}
            print(f"d={dim}+{dim} I={mi}: {est:8s} {marginals:8s} spread "
                  f"{max(values) - min(values):.4f}  values "
                  + " ".join(f"{v:.3f}" for v in values), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/invariance.json"))
    p.add_argument("--quick", action="store_true", help="one setting only (3 + 3 dims, I = 1.5)")
    args = p.parse_args()
    torch.set_num_threads(1)
    settings = [(3, 1.5)] if args.quick else [(d, i) for d in (3, 5) for i in (0.5, 1.5, 3.0)]
    done = json.loads(args.out.read_text()) if args.out.is_file() else {"settings": []}
    have = {(s["dim"], s["true_mi"]) for s in done["settings"]}
    for dim, mi in settings:
        if (dim, mi) in have:
            continue
        done["settings"].append(run_setting(dim, mi))
        done["command"] = ("OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_invariance.py"
                           + (" --quick" if args.quick else ""))
        done["date"] = time.strftime("%Y-%m-%d", time.gmtime())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(done, indent=1) + "\n")
    worst: dict[str, float] = {}
    for s in done["settings"]:
        for key, rec in s["estimates"].items():
            worst[key] = max(worst.get(key, 0.0), rec["spread"])
    print("largest spread over the settings:")
    for key in sorted(worst):
        print(f"  {key:18s} {worst[key]:.4f} nats")


if __name__ == "__main__":
    main()
