"""What the held-out interval covers: a coverage study (docs/RESULTS.md §4.9).

For each setting (a task with exact MI, ``n`` rows) and each of ``R`` independent samples: run
the held-out protocol (:func:`~mi_bounds.estimation.heldout.estimate_mi_on_samples`, defaults,
seed = the replicate) for DV, InfoNCE and NWJ, read the estimate ``θ̂`` and its two intervals on
the test rows:

* the jackknife's ``θ̂ ± 1.96·se`` (``se``: the delete-a-group jackknife the CLI prints by
  default), and
* the bootstrap's 95 % percentile interval ``[q_2.5, q_97.5]`` of 200 resamples of the test
  rows (:func:`~mi_bounds.estimation.intervals.rows_bootstrap`, seed = the replicate, at the
  same critic and on the same score matrix; ``--interval bootstrap`` of the CLI), and its basic
  (reflected) interval ``[2θ̂ − q_97.5, 2θ̂ − q_2.5]``;

and compute two targets for the trained, capped critic ``T``:

* the bound's *population value at that critic*, by Monte Carlo on fresh rows from the task's
  exact sampler: ``DV(T) = E_P[T] − log E_Q[e^T]`` and ``NWJ(T) = E_P[T] − e^{-1} E_Q[e^T]``
  from ``M`` fresh joint pairs and the off-diagonal pairs of fresh ``2000 × 2000`` blocks (the
  product of the marginals), and ``InfoNCE_m(T)`` (``m`` = the test rows in one block, the batch
  size of the estimate) as the mean over ``M / m`` fresh ``m``-row batches (``M`` = 20,000 at
  500 rows, 200,000 at 5,000 rows: :data:`SETTINGS`),
  each with its Monte Carlo standard error (``population_se``; :func:`population_value`);
* the true ``I(X; Y)``.

It reports, per setting, estimator and interval, the fraction of replicates whose interval
covers each target (with a Wilson 95 % interval of that fraction), and the mean of
``θ̂ − target``. A lower bound's interval is not meant to cover I: the table says whether it does.

Settings (``--settings``, run in the order given): ``gaussian-500``, ``gaussian-5000`` (the
Gaussian task, 3 + 3 dimensions, I = 1 nat) and ``student-500``, ``student-5000`` (the
multivariate Student-t with ν = 5 degrees of freedom, 3 + 3 dimensions, I = 1 nat:
:class:`~mi_bounds.estimation.tasks.StudentTask`), 500 and 5,000 rows, all with
``--marginals standard`` (the design of the first study); ``gaussian-500-rank`` and
``student-500-rank``: the same 500-row tasks with the CLI's default map, ``--marginals rank``
(the population value is then the bound at the critic *with its fitted map*, on fresh rows
from the task); ``gaussian-5000-rank`` and ``student-5000-rank``: the same at 5,000 rows.

``--no-bootstrap`` stores the jackknife interval and the targets only; at 5,000 rows the
bootstrap (200 resamples of a 2,500 × 2,500 score matrix, 19–28 s per estimator) is about
2/3 of a replicate's time (the rest: 21–34 s for the three estimators; one thread,
2026-12-07). ``--backfill`` adds it later, replicate by replicate, and checks that the
recomputation reproduces the stored numbers.

The results file is resumable: replicates are appended as they finish, and a finished replicate
is never rewritten. Replicates written before the bootstrap existed have no ``boot_*`` fields;
the summary counts the bootstrap over the replicates that have them (``replicates`` in its
table). ``--backfill`` recomputes such a replicate (same seed: on the same machine the same
critic and the same numbers, which it checks) and adds only the ``boot_*`` fields and
``population_se`` (the Monte Carlo standard error of the population value).

Commands (2-core x86-64 VM, one thread; from the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_coverage.py --reps 200 \\
        --settings gaussian-500 student-500 gaussian-5000 student-5000 --backfill \\
        --out benchmarks/results/coverage.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_coverage.py --reps 200 \\
        --settings gaussian-500-rank --out benchmarks/results/coverage_rank.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_coverage.py --reps 200 \\
        --settings student-500-rank --out benchmarks/results/coverage_rank_student.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_coverage.py --reps 200 \\
        --settings gaussian-5000-rank --no-bootstrap \\
        --out benchmarks/results/coverage_rank_gaussian_5000.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_coverage.py --reps 200 \\
        --settings student-5000-rank --no-bootstrap \\
        --out benchmarks/results/coverage_rank_student_5000.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_coverage.py --quick \\
        --out /tmp/coverage-quick.json      # smoke test: 2 replicates, short runs
    .venv/bin/python benchmarks/bench_coverage.py --table \\
        --out benchmarks/results/coverage.json  # the tables of docs/RESULTS.md §4.9
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import scipy.stats
import torch

from mi_bounds.bounds import infonce_bound
from mi_bounds.estimation.heldout import (
    UNSTABLE_STDERR,
    estimate_mi_on_samples,
    jackknife_quantile,
    prepare_samples,
    sample_config,
)
from mi_bounds.estimation.intervals import BOOTSTRAP_RESAMPLES, rows_bootstrap
from mi_bounds.estimation.tasks import GaussianTask, StudentTask, Task
from mi_bounds.estimation.training import DivergenceError

ESTIMATORS = ("dv", "infonce", "nwj")
#: name -> setting; the key of a setting in the results file is :func:`setting_key`.
#: ``fresh_pairs``: the Monte Carlo size of the population value (:func:`population_value`).
#: At 5,000 rows 20,000 fresh pairs left its standard error at 0.42–0.69 of the estimate's
#: (one replicate each, Gaussian and Student-t; 2026-12-07): an independent error of 0.5 se in
#: the target alone pulls a 95 % interval's coverage of it to ~92 %. 200,000 cut it by √10 (and
#: give InfoNCE 80 fresh batches of 2,500 rows instead of 8): 0.11–0.16 of the se. At 500 rows
#: 20,000 gave 0.12–0.35 (Gaussian, replicates 0 and 1): gaussian-500 keeps 20,000, the size of
#: its 200 stored replicates, and student-500, which has none, gets 200,000.
SETTINGS: dict[str, dict] = {
    "gaussian-500": {"task": "gaussian", "dim": 3, "mi": 1.0, "rows": 500,
                     "fresh_pairs": 20_000},
    "gaussian-5000": {"task": "gaussian", "dim": 3, "mi": 1.0, "rows": 5000,
                      "fresh_pairs": 200_000},
    "student-500": {"task": "student", "df": 5.0, "dim": 3, "mi": 1.0, "rows": 500,
                    "fresh_pairs": 200_000},
    "student-5000": {"task": "student", "df": 5.0, "dim": 3, "mi": 1.0, "rows": 5000,
                     "fresh_pairs": 200_000},
    # the CLI's default map since 2026-12-07 (--marginals rank, the empirical copula fitted on
    # the train rows); the settings above pin "standard", the design of the first study
    "gaussian-500-rank": {"task": "gaussian", "dim": 3, "mi": 1.0, "rows": 500,
                          "fresh_pairs": 200_000, "marginals": "rank"},
    "student-500-rank": {"task": "student", "df": 5.0, "dim": 3, "mi": 1.0, "rows": 500,
                         "fresh_pairs": 200_000, "marginals": "rank"},
    "gaussian-5000-rank": {"task": "gaussian", "dim": 3, "mi": 1.0, "rows": 5000,
                           "fresh_pairs": 200_000, "marginals": "rank"},
    "student-5000-rank": {"task": "student", "df": 5.0, "dim": 3, "mi": 1.0, "rows": 5000,
                          "fresh_pairs": 200_000, "marginals": "rank"},
}
DEFAULT_OUT = Path("benchmarks/results/coverage.json")
FRESH_PAIRS = 20_000
BLOCK = 2000
#: The normal 97.5 % quantile: Wilson intervals, and the jackknife interval ``estimate ±
#: Z95·se`` the CLI printed until 2026-12-07 (the first design of this study; "z" below). The
#: CLI's interval is now ``estimate ± t·se`` with ``t`` =
#: :func:`~mi_bounds.estimation.heldout.jackknife_quantile` of the test rows ("t" below;
#: benchmarks/preregistration/jackknife_t_interval.md).
Z95 = float(scipy.stats.norm.ppf(0.975))
#: --quick: a smoke test of the whole pipeline (not a measurement): short training, fewer
#: fresh pairs and resamples, 2 replicates of the 500-row settings.
QUICK = {"steps": 300, "fresh_pairs": 4000, "block": 1000, "resamples": 50, "reps": 2,
         "settings": ["gaussian-500", "student-500"]}
#: A recomputed replicate (--backfill) must reproduce the stored numbers to this (relative).
BACKFILL_RTOL = 1e-9


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion k / n (None for n = 0)."""
    if n == 0:
        return None
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (mid - half, mid + half)


def setting_key(setting: dict) -> str:
    """The setting's key in the results file (the Gaussian keys are those of the first study;
    a map other than the pinned "standard" is named at the end)."""
    d, i, n = setting["dim"], setting["mi"], setting["rows"]
    marginals = setting.get("marginals", "standard")
    suffix = "" if marginals == "standard" else f" marginals={marginals}"
    if setting["task"] == "gaussian":
        return f"gaussian d={d}+{d} I={i} n={n}{suffix}"
    return f"student nu={setting['df']:g} d={d}+{d} I={i} n={n}{suffix}"


def make_task(setting: dict) -> Task:
    if setting["task"] == "gaussian":
        return GaussianTask(mi=setting["mi"], dim=setting["dim"])
    return StudentTask(mi=setting["mi"], dim=setting["dim"], df=setting["df"])


@torch.no_grad()
def population_value(critic: torch.nn.Module, task: Task, name: str, m: int, seed: int, *,
                     fresh_pairs: int = FRESH_PAIRS, block: int = BLOCK) -> tuple[float, float]:
    """The bound ``name`` at ``critic`` under the task's law, by Monte Carlo (module docstring),
    and the Monte Carlo standard error of that number: InfoNCE, the standard deviation of the
    batch values over √(batches); DV and NWJ, the delta method on ``E_P[T]`` (standard
    deviation over √M) and on ``Ẑ = E_Q[e^T]`` (the spread of the blocks' means:
    ``se(log Ẑ) = sd_b(Ẑ_b) / (√B Ẑ)``), the two taken as independent (an approximation: a
    block's product pairs reuse its joint pairs' rows). Heavy-tailed ``e^T`` (Student-t rows)
    make the second large; it says how far the target itself can be trusted."""
    gen = torch.Generator().manual_seed(10_000_000 + seed)
    if name == "infonce":
        values = []
        for _ in range(max(1, fresh_pairs // m)):
            x, y = task(0, m, gen)
            values.append(float(infonce_bound(critic.cross_scores(x, y).double())))
        se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
        return float(np.mean(values)), se
    x, y = task(0, fresh_pairs, gen)
    pos = critic(x, y).double()  # T(x_n, y_n) on the joint pairs
    mean_pos = float(pos.mean())
    log_terms = []
    for b in range(fresh_pairs // block):
        s = critic.cross_scores(x[b * block:(b + 1) * block],
                                y[b * block:(b + 1) * block]).double()
        off = s[~torch.eye(block, dtype=torch.bool)]
        log_terms.append(torch.logsumexp(off, 0) - math.log(off.numel()))
    terms = torch.stack(log_terms)
    log_mean_exp = float(torch.logsumexp(terms, 0) - math.log(len(log_terms)))
    se_pos = float(pos.std()) / math.sqrt(pos.numel())
    rel = torch.exp(terms - log_mean_exp)  # Ẑ_b / Ẑ
    se_log_z = float(rel.std()) / math.sqrt(len(log_terms)) if len(log_terms) > 1 else math.nan
    if name == "dv":
        return mean_pos - log_mean_exp, math.hypot(se_pos, se_log_z)
    z_term = math.exp(log_mean_exp - 1.0)
    return mean_pos - z_term, math.hypot(se_pos, z_term * se_log_z)  # nwj


def replicate(setting: dict, rep: int, quick: bool = False, bootstrap: bool = True) -> dict:
    """One sample, the three estimators: estimate, jackknife se, bootstrap interval (unless
    ``bootstrap`` is False: then no ``boot_*`` fields, for ``--backfill`` to add), targets."""
    task = make_task(setting)
    gen = torch.Generator().manual_seed(rep)
    x, y = task(0, setting["rows"], gen)
    x, y = x.double().numpy(), y.double().numpy()
    extra = {"steps": QUICK["steps"]} if quick else {}
    mc = ({"fresh_pairs": QUICK["fresh_pairs"], "block": QUICK["block"]} if quick
          else {"fresh_pairs": setting.get("fresh_pairs", FRESH_PAIRS), "block": BLOCK})
    resamples = QUICK["resamples"] if quick else BOOTSTRAP_RESAMPLES
    out: dict[str, object] = {"rep": rep}
    t0 = time.perf_counter()
    for name in ESTIMATORS:
        # the study's design: --marginals standard, the default when it started (the default
        # is rank since 2026-12-07; pinned so that every replicate of a setting has the same
        # map), except in the settings that name their map ("-rank")
        cfg = sample_config(bound=name, seed=rep,
                            marginals=setting.get("marginals", "standard"), **extra)
        prepared = prepare_samples(x, y, cfg)
        try:
            res, critic = estimate_mi_on_samples(x, y, cfg, prepared=prepared)
        except DivergenceError as err:  # no estimate, so no interval: kept, counted as a miss
            out[name] = {"failed": str(err)[:500]}
            continue
        est, se = res.final[name]
        m = min(res.extra["split"]["test"], 4096)
        pop, pop_se = population_value(critic, task, name, m, rep, **mc)
        out[name] = {"estimate": float(est), "stderr": float(se), "population": pop,
                     "population_se": pop_se, "batch": m}
        if not bootstrap:
            continue
        t1 = time.perf_counter()
        x_test, y_test = prepared.rows("test")  # the rows and the map the estimate used
        boot = rows_bootstrap(critic.critic, x_test, y_test, (name,), clip=cfg.clip,
                              cap=critic.cap, seed=rep, resamples=resamples,
                              max_abs_score=cfg.max_abs_score, where="on the test rows")[name]
        boot_seconds = time.perf_counter() - t1
        if boot.estimate != est:
            raise RuntimeError(f"{name} rep {rep}: the bootstrap valued another matrix "
                               f"({boot.estimate!r} != {est!r})")
        out[name].update({"boot_stderr": boot.stderr, "boot_low": boot.low,
                          "boot_high": boot.high, "boot_resamples": resamples,
                          "boot_seconds": round(boot_seconds, 2)})
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _t_quantile(r: dict) -> float:
    """The CLI's jackknife multiplier for a replicate: Student's t at the test rows' degrees of
    freedom (``batch`` = the test rows, all in one score block at these sizes)."""
    return jackknife_quantile(int(r["batch"]))


def _coverage(rows: list[dict], target: str | float, interval: str) -> tuple[int, int]:
    """(replicates whose ``interval`` covers ``target``, replicates with that interval):
    ``jackknife`` (``± Z95·se``), ``jackknife-t`` (``± t·se``, the CLI's), ``percentile`` or
    ``basic`` (the bootstrap's, over the replicates that have it)."""
    hits = n = 0
    for r in rows:
        if "failed" in r:  # a diverged critic: no interval, a miss for every interval
            n += 1
            continue
        t = r["population"] if target == "population" else float(target)
        if interval in ("jackknife", "jackknife-t"):
            q = Z95 if interval == "jackknife" else _t_quantile(r)
            lo, hi = r["estimate"] - q * r["stderr"], r["estimate"] + q * r["stderr"]
        elif "boot_low" not in r:
            continue
        elif interval == "percentile":
            lo, hi = r["boot_low"], r["boot_high"]
        else:  # basic
            lo, hi = 2 * r["estimate"] - r["boot_high"], 2 * r["estimate"] - r["boot_low"]
        n += 1
        hits += lo <= t <= hi
    return hits, n


def summarise(setting: dict, reps: list[dict]) -> dict:
    """Per estimator: the jackknife's coverage (the first study's fields, same formulas) and
    the bootstrap's (``bootstrap``: percentile and basic intervals, over the replicates that
    have them; None where none has)."""
    table = {}
    for name in ESTIMATORS:
        every = [r[name] for r in reps]
        n = len(every)
        # a replicate whose critic diverged has no estimate and no interval: it counts in n as a
        # miss; the means are over the replicates with an estimate
        rows = [r for r in every if "failed" not in r]
        cov_pop = sum(abs(r["estimate"] - r["population"]) <= Z95 * r["stderr"] for r in rows)
        cov_mi = sum(abs(r["estimate"] - setting["mi"]) <= Z95 * r["stderr"] for r in rows)
        table[name] = {
            "replicates": n, "failed": n - len(rows),
            "covers_population_value": cov_pop / n, "wilson_population": wilson(cov_pop, n),
            "covers_true_mi": cov_mi / n, "wilson_true_mi": wilson(cov_mi, n),
            "mean_estimate_minus_population": float(np.mean(
                [r["estimate"] - r["population"] for r in rows])) if rows else None,
            "mean_estimate_minus_true_mi": float(np.mean(
                [r["estimate"] - setting["mi"] for r in rows])) if rows else None,
            "sd_estimate": float(np.std([r["estimate"] for r in rows], ddof=1))
            if len(rows) > 1 else None,
            "mean_stderr": float(np.mean([r["stderr"] for r in rows])) if rows else None,
        }
        for target, covers, wil in (("population", "population_value", "population"),
                                    (setting["mi"], "true_mi", "true_mi")):
            k, nt = _coverage(every, target, "jackknife-t")
            table[name][f"covers_{covers}_t"] = k / nt
            table[name][f"wilson_{wil}_t"] = wilson(k, nt)
        with_se = [r for r in rows if r.get("population_se") is not None]
        if with_se:  # absent in the replicates of the first study
            pop_se = [r["population_se"] for r in with_se]
            table[name]["median_population_se"] = float(np.median(pop_se))
            table[name]["max_population_se"] = float(np.max(pop_se))
            # the target's own noise, in units of the estimate's: r pulls a nominal 95 %
            # interval's coverage to P(|Z| <= 1.96 / sqrt(1 + r²)) (92 % at r = 0.5)
            table[name]["median_population_se_over_stderr"] = float(np.median(
                [r["population_se"] / r["stderr"] for r in with_se]))
        booted = [r for r in every if "boot_low" in r or "failed" in r]
        boot: dict[str, object] | None = None
        if booted:
            fine = [r for r in booted if "failed" not in r]
            boot = {"replicates": len(booted),
                    "mean_stderr": float(np.mean([r["boot_stderr"] for r in fine])),
                    "mean_jackknife_stderr": float(np.mean([r["stderr"] for r in fine]))}
            for interval in ("percentile", "basic"):
                for target, covers, wil in (("population", "population_value", "population"),
                                            (setting["mi"], "true_mi", "true_mi")):
                    k, nb = _coverage(booted, target, interval)
                    boot[f"{interval}_covers_{covers}"] = k / nb
                    boot[f"{interval}_wilson_{wil}"] = wilson(k, nb)
        table[name]["bootstrap"] = boot
    return table


def _pct(k: float, wil: tuple[float, float] | None) -> str:
    return f"{100 * k:.1f} % [{100 * wil[0]:.1f}, {100 * wil[1]:.1f}]" if wil else "–"


def markdown_table(rec: dict) -> str:
    """The setting's summary as the markdown tables of docs/RESULTS.md §4.9: per estimator the
    replicates (of which diverged), what the CLI's jackknife interval ``± t·se`` covers (its
    critic's population value, I), what the first design's ``± 1.96·se`` and the bootstrap
    percentile interval cover, all with Wilson intervals, and the median and mean of
    ``estimate − I`` (the mean is meaningless where a few estimates run away: the count of
    estimates more than 1 nat below 0 says how many); then a second table: the median of the
    critics' population values and how many lie below −1, the jackknife's coverage (t / z)
    among the estimates whose standard error is at most ``UNSTABLE_STDERR`` (not flagged for
    it), the replicates where only the jackknife or only the bootstrap covers (paired; z / t),
    the target's Monte Carlo error relative to the estimate's, and the mean and standard
    deviation of ``(estimate − population value) / se`` over the estimates not flagged."""
    lines = [f"{rec['key']}: {len(rec['replicates'])} replicates",
             "",
             "| estimator | replicates (diverged) | jackknife ± t·se covers its critic's value | "
             "jackknife ± t·se covers I | jackknife ± 1.96·se covers its critic's value | "
             "jackknife ± 1.96·se covers I | bootstrap covers its critic's value | "
             "bootstrap covers I | median est − I | mean est − I | estimates < −1 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in ESTIMATORS:
        row = rec["summary"][name]
        est = [r[name]["estimate"] for r in rec["replicates"] if "failed" not in r[name]]
        boot = row.get("bootstrap") or {}
        cells = [name, f"{row['replicates']} ({row.get('failed', 0)})",
                 _pct(row["covers_population_value_t"], row["wilson_population_t"]),
                 _pct(row["covers_true_mi_t"], row["wilson_true_mi_t"]),
                 _pct(row["covers_population_value"], row["wilson_population"]),
                 _pct(row["covers_true_mi"], row["wilson_true_mi"]),
                 _pct(boot.get("percentile_covers_population_value", 0.0),
                      boot.get("percentile_wilson_population")),
                 _pct(boot.get("percentile_covers_true_mi", 0.0),
                      boot.get("percentile_wilson_true_mi")),
                 f"{float(np.median(est)) - rec['mi']:+.3f}" if est else "–",
                 f"{row['mean_estimate_minus_true_mi']:+.3f}" if est else "–",
                 str(sum(e < -1.0 for e in est))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| estimator | median population value | population values < −1 | "
              f"jackknife t / z covers its critic's value where se ≤ {UNSTABLE_STDERR:g} (of) | "
              "only the jackknife covers (z / t) | only the bootstrap covers (against z / t) | "
              f"median population se / se | z = (est − value) / se where se ≤ "
              f"{UNSTABLE_STDERR:g}: mean, sd |",
              "|---|---|---|---|---|---|---|---|"]
    for name in ESTIMATORS:
        rows = [r[name] for r in rec["replicates"] if "failed" not in r[name]]
        pop = [r["population"] for r in rows]
        hit_z = [abs(r["estimate"] - r["population"]) <= Z95 * r["stderr"] for r in rows]
        hit_t = [abs(r["estimate"] - r["population"]) <= _t_quantile(r) * r["stderr"]
                 for r in rows]
        steady = [(t, z) for t, z, r in zip(hit_t, hit_z, rows, strict=True)
                  if r["stderr"] <= UNSTABLE_STDERR]
        boot = [(z, t, r["boot_low"] <= r["population"] <= r["boot_high"])
                for z, t, r in zip(hit_z, hit_t, rows, strict=True) if "boot_low" in r]
        ratio = rec["summary"][name].get("median_population_se_over_stderr")
        # the pivot: ~ t_9 if the jackknife's variance has its 9 degrees of freedom (sd 1.134)
        z = [(r["estimate"] - r["population"]) / r["stderr"] for r in rows
             if r["stderr"] <= UNSTABLE_STDERR]
        only_jack = (f"{sum(z and not b for z, _, b in boot)} / "
                     f"{sum(t and not b for _, t, b in boot)}")
        only_boot = (f"{sum(b and not z for z, _, b in boot)} / "
                     f"{sum(b and not t for _, t, b in boot)}")
        cells = [name, f"{float(np.median(pop)):+.3f}" if pop else "–",
                 str(sum(v < -1.0 for v in pop)),
                 (f"{100 * np.mean([t for t, _ in steady]):.1f} / "
                  f"{100 * np.mean([z for _, z in steady]):.1f} % ({len(steady)})")
                 if steady else "–",
                 only_jack if boot else "–", only_boot if boot else "–",
                 f"{ratio:.3f}" if ratio is not None else "–",
                 f"{np.mean(z):+.2f}, {np.std(z, ddof=1):.2f}" if len(z) > 1 else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _matches(old: dict, new: dict) -> bool:
    """The recomputed replicate reproduces the stored estimate, se and population value."""
    if any(("failed" in old[name]) != ("failed" in new[name]) for name in ESTIMATORS):
        return False
    return all(math.isclose(old[name][k], new[name][k], rel_tol=BACKFILL_RTOL, abs_tol=1e-12)
               for name in ESTIMATORS if "failed" not in old[name]
               for k in ("estimate", "stderr", "population"))


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, help=f"replicates per setting (default 200; --quick: "
                   f"{QUICK['reps']})")
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS),
                   help=f"settings to run, in this order (default: all; --quick: "
                   f"{' '.join(QUICK['settings'])})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--backfill", action="store_true",
                   help="add the bootstrap (and population_se) to stored replicates that lack it "
                   "(recomputed with their seed; refused where the recomputation does not "
                   "reproduce them)")
    p.add_argument("--no-bootstrap", action="store_true",
                   help="jackknife only: store replicates without the bootstrap (most of a "
                   "5,000-row replicate's time), for --backfill to add later")
    p.add_argument("--quick", action="store_true", help="smoke test: short training, fewer "
                   "fresh pairs and resamples; refuses the default --out")
    p.add_argument("--table", action="store_true", help="print the markdown tables of the "
                   "settings stored in --out (docs/RESULTS.md §4.9), summarised afresh from "
                   "their replicates, and run nothing")
    p.add_argument("--first", type=int, default=0, metavar="K",
                   help="with --table: count only the replicates K and later (a confirmation "
                   "subset, benchmarks/preregistration/)")
    args = p.parse_args(argv)
    if args.first < 0:
        p.error(f"--first must be an int >= 0, got {args.first}")
    if args.table:
        if not args.out.is_file():
            p.error(f"--out {args.out} does not exist")
        for rec in json.loads(args.out.read_text())["settings"]:
            setting = next(s for s in SETTINGS.values() if setting_key(s) == rec["key"])
            reps = rec["replicates"][args.first:]
            if reps:
                part = {**rec, "replicates": reps, "summary": summarise(setting, reps)}
                if args.first:
                    part["key"] += f", replicates {args.first}–{len(rec['replicates']) - 1}"
                print(markdown_table(part) + "\n")
        return 0
    if args.quick and args.out.resolve() == DEFAULT_OUT.resolve():
        p.error("--quick is a smoke test: give it another --out than the study's results")
    reps = args.reps if args.reps is not None else (QUICK["reps"] if args.quick else 200)
    if reps < 1:
        p.error(f"--reps must be an int >= 1, got {reps}")
    if args.no_bootstrap and args.backfill:
        p.error("--backfill adds the bootstrap: it cannot go with --no-bootstrap")
    names = args.settings or (QUICK["settings"] if args.quick else list(SETTINGS))
    torch.set_num_threads(1)
    data = (json.loads(args.out.read_text()) if args.out.is_file()
            else {"settings": [], "quick": args.quick})
    if bool(data.get("quick", False)) != args.quick:
        p.error(f"{args.out} was written {'with' if data.get('quick') else 'without'} --quick; "
                "do not mix smoke tests and measurements in one file")
    command = ("OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_coverage.py "
               + " ".join(argv if argv is not None else sys.argv[1:]))
    for sname in names:
        setting = SETTINGS[sname]
        key = setting_key(setting)
        rec = next((s for s in data["settings"] if s["key"] == key), None)
        if rec is None:
            rec = {"key": key, **setting, "replicates": []}
            data["settings"].append(rec)
        todo = ([i for i, r in enumerate(rec["replicates"][:reps]) if "boot_low" not in r["dv"]]
                if args.backfill else [])
        todo += list(range(len(rec["replicates"]), reps))
        for rep in todo:
            t0 = time.perf_counter()
            new = replicate(setting, rep, args.quick, bootstrap=not args.no_bootstrap)
            if rep < len(rec["replicates"]):  # backfill: add the boot_* fields only
                old = rec["replicates"][rep]
                if not _matches(old, new):
                    print(f"{key} rep {rep}: the recomputation does not reproduce the stored "
                          "replicate (another machine or library version?); not backfilled",
                          file=sys.stderr)
                    return 1
                for name in ESTIMATORS:
                    old[name].update({k: v for k, v in new[name].items()
                                      if k.startswith("boot_") or k == "population_se"})
                what = "backfilled"
            else:
                rec["replicates"].append(new)
                what = "done"
            rec["summary"] = summarise(setting, rec["replicates"])
            data["command"] = command
            data["date"] = time.strftime("%Y-%m-%d", time.gmtime())
            _write(args.out, data)
            print(f"{key} rep {rep} {what}: {time.perf_counter() - t0:.1f} s", flush=True)
        if not rec["replicates"]:
            continue
        summary = summarise(setting, rec["replicates"])
        if rec.get("summary") != json.loads(json.dumps(summary)):  # a summary of older code
            rec["summary"] = summary
            _write(args.out, data)
            print(f"{key}: summary refreshed", flush=True)
        for name, row in rec.get("summary", {}).items():
            line = (f"{key} {name:8s} jackknife ± t·se covers population "
                    f"{row['covers_population_value_t']:.3f}, covers I "
                    f"{row['covers_true_mi_t']:.3f}; ± 1.96·se covers population "
                    f"{row['covers_population_value']:.3f}, covers I "
                    f"{row['covers_true_mi']:.3f}")
            boot = row.get("bootstrap")
            if boot:
                line += (f"; bootstrap ({boot['replicates']} reps) percentile covers population "
                         f"{boot['percentile_covers_population_value']:.3f}, basic "
                         f"{boot['basic_covers_population_value']:.3f}")
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
