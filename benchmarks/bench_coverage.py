"""What the held-out interval covers: a coverage study (docs/RESULTS.md §4.9).

For each setting (a Gaussian task with exact MI, ``n`` rows) and each of ``R`` independent
samples: run the held-out protocol (:func:`~mi_bounds.estimation.heldout.estimate_mi_on_samples`,
defaults, seed = the replicate) for DV, InfoNCE and NWJ, read the estimate ``θ̂`` and its
jackknife standard error ``se`` on the test rows, and compute two targets for the trained,
capped critic ``T``:

* the bound's *population value at that critic*, by Monte Carlo on fresh rows from the task's
  exact sampler: ``DV(T) = E_P[T] − log E_Q[e^T]`` and ``NWJ(T) = E_P[T] − e^{-1} E_Q[e^T]``
  from ``M`` fresh joint pairs and the off-diagonal pairs of fresh ``2000 × 2000`` blocks (the
  product of the marginals), and ``InfoNCE_m(T)`` (``m`` = the test rows in one block, the batch
  size of the estimate) as the mean over fresh ``m``-row batches;
* the true ``I(X; Y)``.

It reports, per setting and estimator, the fraction of replicates whose interval
``θ̂ ± 1.96·se`` covers each target (with a Wilson 95 % interval of that fraction), and the
mean of ``θ̂ − target``. A lower bound's interval is not meant to cover I: the table says whether
it does.

Command (2-core x86-64 VM, one thread; resumable, replicates are appended as they finish)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_coverage.py --reps 200 \
        --out benchmarks/results/coverage.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from mi_bounds.bounds import infonce_bound
from mi_bounds.estimation.heldout import estimate_mi_on_samples, sample_config
from mi_bounds.estimation.tasks import GaussianTask

ESTIMATORS = ("dv", "infonce", "nwj")
SETTINGS = ({"dim": 3, "mi": 1.0, "rows": 500}, {"dim": 3, "mi": 1.0, "rows": 5000})
FRESH_PAIRS = 20_000
BLOCK = 2000
Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (mid - half, mid + half)


@torch.no_grad()
def population_value(critic: torch.nn.Module, task: GaussianTask, name: str, m: int,
                     seed: int) -> float:
    """The bound ``name`` at ``critic`` under the task's law, by Monte Carlo (module docstring)."""
    gen = torch.Generator().manual_seed(10_000_000 + seed)
    if name == "infonce":
        values = []
        for _ in range(max(1, FRESH_PAIRS // m)):
            x, y = task(0, m, gen)
            values.append(float(infonce_bound(critic.cross_scores(x, y).double())))
        return float(np.mean(values))
    x, y = task(0, FRESH_PAIRS, gen)
    mean_pos = float(critic(x, y).double().mean())  # T(x_n, y_n) on the joint pairs
    log_terms = []
    for b in range(FRESH_PAIRS // BLOCK):
        s = critic.cross_scores(x[b * BLOCK:(b + 1) * BLOCK],
                                y[b * BLOCK:(b + 1) * BLOCK]).double()
        off = s[~torch.eye(BLOCK, dtype=torch.bool)]
        log_terms.append(torch.logsumexp(off, 0) - math.log(off.numel()))
    log_mean_exp = float(torch.logsumexp(torch.stack(log_terms), 0) - math.log(len(log_terms)))
    if name == "dv":
        return mean_pos - log_mean_exp
    return mean_pos - math.exp(log_mean_exp - 1.0)  # nwj


def replicate(setting: dict, rep: int) -> dict:
    task = GaussianTask(mi=setting["mi"], dim=setting["dim"])
    gen = torch.Generator().manual_seed(rep)
    x, y = task(0, setting["rows"], gen)
    x, y = x.double().numpy(), y.double().numpy()
    out = {"rep": rep}
    for name in ESTIMATORS:
        res, critic = estimate_mi_on_samples(x, y, sample_config(bound=name, seed=rep))
        est, se = res.final[name]
        m = min(res.extra["split"]["test"], 4096)
        pop = population_value(critic, task, name, m, rep)
        out[name] = {"estimate": float(est), "stderr": float(se), "population": pop,
                     "batch": m}
    return out


def summarise(setting: dict, reps: list[dict]) -> dict:
    table = {}
    for name in ESTIMATORS:
        rows = [r[name] for r in reps]
        n = len(rows)
        cov_pop = sum(abs(r["estimate"] - r["population"]) <= Z95 * r["stderr"] for r in rows)
        cov_mi = sum(abs(r["estimate"] - setting["mi"]) <= Z95 * r["stderr"] for r in rows)
        table[name] = {
            "replicates": n,
            "covers_population_value": cov_pop / n, "wilson_population": wilson(cov_pop, n),
            "covers_true_mi": cov_mi / n, "wilson_true_mi": wilson(cov_mi, n),
            "mean_estimate_minus_population": float(np.mean(
                [r["estimate"] - r["population"] for r in rows])),
            "mean_estimate_minus_true_mi": float(np.mean(
                [r["estimate"] - setting["mi"] for r in rows])),
            "sd_estimate": float(np.std([r["estimate"] for r in rows], ddof=1)),
            "mean_stderr": float(np.mean([r["stderr"] for r in rows])),
        }
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/coverage.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    data = json.loads(args.out.read_text()) if args.out.is_file() else {"settings": []}
    for setting in SETTINGS:
        key = f"gaussian d={setting['dim']}+{setting['dim']} I={setting['mi']} n={setting['rows']}"
        rec = next((s for s in data["settings"] if s["key"] == key), None)
        if rec is None:
            rec = {"key": key, **setting, "replicates": []}
            data["settings"].append(rec)
        while len(rec["replicates"]) < args.reps:
            t0 = time.perf_counter()
            rec["replicates"].append(replicate(setting, len(rec["replicates"])))
            rec["summary"] = summarise(setting, rec["replicates"])
            data["command"] = (f"OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_coverage.py "
                               f"--reps {args.reps}")
            data["date"] = time.strftime("%Y-%m-%d", time.gmtime())
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1) + "\n")
            tmp.replace(args.out)
            print(f"{key} rep {len(rec['replicates'])}: {time.perf_counter() - t0:.1f} s",
                  flush=True)
        for name, row in rec["summary"].items():
            print(f"{key} {name:8s} covers population {row['covers_population_value']:.3f} "
                  f"{row['wilson_population']}, covers I {row['covers_true_mi']:.3f}")


if __name__ == "__main__":
    main()
