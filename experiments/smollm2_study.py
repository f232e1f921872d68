"""The pre-registered SmolLM2 decline study: collect a run directory, and rebuild every table
and figure of the write-up from the committed files alone.

    python -m experiments.smollm2_study collect RUN_DIR results/smollm2-study
    python -m experiments.smollm2_study report results/smollm2-study

``RUN_DIR`` is made by ``mi-bounds lm run --model smollm2 --preset smollm2-study --out RUN_DIR``
(docs/LM.md). ``collect`` keeps what :func:`mi_bounds.lm.collect.collect_run` keeps (every run's
full history, with the per-pair chosen and rejected log-probabilities and margins of every train
and held-out pair at every evaluation, as compact JSON), plus ``run.log`` and the held-out
prompts in the order of the per-prompt greedy correctness. ``report`` reads only
``<setting>/align_runs/*.json`` under the results folder and writes ``report/`` there:

* ``hypotheses.md``: per pre-registered hypothesis (results/smollm2-study/PREREGISTRATION.md)
  the statistic, its ``1 − α`` interval and the decision the pre-registration's rule gives;
* ``matched_kl.md``, ``matched_margin.md``, ``equal_steps.md``: the chosen log-likelihood change
  ``c(t) − c(0)`` (mean over the pairs, then over the seeds) on train and held-out pairs where a
  run first reaches each fixed level (linear interpolation between evaluations), with the
  two-level bootstrap interval (seeds and pairs resampled:
  :func:`mi_bounds.decline.stats.matched_bootstrap`); a level that not every seed of an arm
  reaches is "not reached";
* ``verdicts.md``: the calibrated decline rule (docs/THEORY.md §6) on every arm's train and
  held-out chosen curve, over seeds (:func:`mi_bounds.decline.shapes_over_seeds`) and over seeds
  × pairs (:func:`mi_bounds.decline.stats.two_level_bootstrap`);
* ``accuracy.md``: final greedy accuracy per arm and the difference MIO − DPO, paired by prompt;
* ``scatter_chosen.png``: every pair's chosen change under DPO against under MIO (seed means),
  at the largest matched KL both reach and at the last step; ``chosen_vs_kl.png``: the chosen
  change against the sampled KL, per arm;
* ``report.json``: every number above.

Differences between two arms (H3, H4, H5) resample the shared pairs (or prompts) once per
replicate and each arm's seeds independently; their interval is ``d ± t_{1−α/2, k−1}·se`` with
``k`` the smaller seed count.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

#: the pre-registered constants (results/smollm2-study/PREREGISTRATION.md)
ALPHA = 0.05
N_BOOT = 2000
KL_LEVELS = (2.0, 4.0, 6.0, 8.0, 12.0, 16.0)
MARGIN_LEVELS = (1.0, 2.0, 3.0)
STEP_LEVELS = (30.0, 60.0, 90.0)
#: H3's range: KL levels at or above this (DPO's range at lr 1e-5 in the pilot)
DPO_RANGE = 10.0
#: the arms of the hypotheses: ``<loss>@<lr>`` (β = 0.1)
DPO, MIO, MIO_HIGH = "dpo@1e-05", "mio@1e-05", "mio@3e-05"
SECTIONS = ("train", "heldout")


# --------------------------------------------------------------------------- collect


def collect(run_dir: Path, out: Path) -> None:
    """:func:`mi_bounds.lm.collect.collect_run`, plus ``run.log`` and ``heldout_prompts.json``."""
    from mi_bounds.lm.collect import collect_run

    run_dir, out = Path(run_dir), Path(out)
    collect_run(run_dir, out)
    if (run_dir / "run.log").is_file():
        shutil.copy(run_dir / "run.log", out / "run.log")
    data = json.loads((run_dir / "sample" / "data.json").read_text())
    (out / "heldout_prompts.json").write_text(json.dumps(data["heldout_prompts"]) + "\n")


# --------------------------------------------------------------------------- loading


def arm_name(result: dict) -> str:
    """``<loss>@<lr>`` (plus ``/beta<β>`` where β ≠ 0.1)."""
    name = f"{result['loss']}@{result['lr']:.0e}"
    return name + ("" if result.get("beta", 0.1) == 0.1 else f"/beta{result['beta']:g}")


def load_arms(results_dir: Path) -> dict[str, list[dict]]:
    """Every ``<setting>/align_runs/*.json`` under ``results_dir``, grouped by arm, by seed."""
    arms: dict[str, list[dict]] = {}
    for path in sorted(Path(results_dir).glob("*/align_runs/*.json")):
        r = json.loads(path.read_text())
        arms.setdefault(arm_name(r), []).append(r)
    if not arms:
        raise ValueError(f"{results_dir}: no <setting>/align_runs/*.json files")
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in sorted(arms.items())}


def _steps(runs: list[dict]) -> np.ndarray:
    steps = [[h["step"] for h in r["history"]] for r in runs]
    if any(s != steps[0] for s in steps):
        raise ValueError(f"runs of {arm_name(runs[0])} have different evaluation steps")
    return np.asarray(steps[0], dtype=float)


def seed_curve(runs: list[dict], quantity: str) -> np.ndarray:
    """``[seeds, steps]`` of a per-seed quantity: ``kl`` (``kl.k1``), ``margin`` (train
    ``rewards/margins``) or ``step``."""
    _steps(runs)
    if quantity == "step":
        return np.array([[h["step"] for h in r["history"]] for r in runs], dtype=float)
    if quantity == "kl":
        return np.array([[h["kl"]["k1"] for h in r["history"]] for r in runs], dtype=float)
    if quantity == "margin":
        return np.array([[h["train"]["rewards/margins"] for h in r["history"]] for r in runs],
                        dtype=float)
    raise ValueError(f"unknown quantity {quantity!r}")


def pair_values(runs: list[dict], section: str, key: str = "logps/chosen") -> np.ndarray:
    """``[seeds, pairs, steps]`` of a per-pair metric (``"<key>/per_pair"``)."""
    from mi_bounds.decline.compare import per_pair

    pp = per_pair(runs, section, key)
    if pp is None:
        raise ValueError(f"runs of {arm_name(runs[0])}: {section!r} {key}/per_pair is missing "
                         "or uneven (was align.per_pair set?)")
    return pp


# --------------------------------------------------------------------------- statistics


def _crossing(x: np.ndarray, y: np.ndarray, level: float) -> np.ndarray:
    from mi_bounds.decline.stats import _first_crossing

    return _first_crossing(x, y, float(level))


def matched(x_seed: np.ndarray, y_pp: np.ndarray, level: float) -> dict[str, Any]:
    """The chosen change at the first crossing of ``level`` by the per-seed curve ``x_seed``
    (``[S, T]``), pairs of ``y_pp`` (``[S, P, T]``) averaged: :func:`matched_bootstrap` with
    ``x`` the same for every pair. ``reached``: every seed reaches the level."""
    from mi_bounds.decline.stats import matched_bootstrap

    x = np.broadcast_to(x_seed[:, None, :], y_pp.shape)
    out = matched_bootstrap(x, y_pp, level, alpha=ALPHA, n_boot=N_BOOT)
    out["reached"] = out["n_reached"] == out["n_seeds"]
    out["level"] = float(level)
    return out


def matched_difference(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
                       level: float, seed: int = 0) -> dict[str, Any]:
    """``A − B`` of the chosen change at the first crossing of ``level``: ``a = (x_seed [S_a,
    T], y_pp [S_a, P, T])``, ``b`` likewise on the same ``P`` pairs. Each replicate draws the
    pairs once (shared) and each arm's seeds independently; ``mean ± t_{1−α/2, k−1}·se``,
    ``k = min(S_a, S_b)``. NaN unless every seed of both arms reaches the level."""
    from mi_bounds.decline.stats import t_quantile

    (xa, ya), (xb, yb) = a, b
    if ya.shape[1] != yb.shape[1]:
        raise ValueError("the two arms must be evaluated on the same pairs")
    va = _crossing(xa, ya.mean(1) - ya.mean(1)[:, :1], level)
    vb = _crossing(xb, yb.mean(1) - yb.mean(1)[:, :1], level)
    reached = bool(np.isfinite(va).all() and np.isfinite(vb).all())
    est = float(va.mean() - vb.mean()) if reached else float("nan")
    rng = np.random.default_rng(seed)
    n_pairs = ya.shape[1]
    wp = rng.multinomial(n_pairs, np.full(n_pairs, 1.0 / n_pairs), size=N_BOOT) / n_pairs
    reps = []
    for x, y in ((xa, ya), (xb, yb)):
        yb_ = np.einsum("bj,ijt->bit", wp, y, optimize=True)
        xb_ = np.broadcast_to(x[None], yb_.shape)
        vals = _crossing(xb_, yb_ - yb_[..., :1], level)
        si = rng.integers(0, x.shape[0], size=(N_BOOT, x.shape[0]))
        vals = np.take_along_axis(vals, si, axis=1)
        got = np.isfinite(vals)
        count = got.sum(axis=1)
        total = np.where(got, vals, 0.0).sum(axis=1)
        reps.append(np.where(count > 0, total / np.maximum(count, 1), np.nan))
    d = reps[0] - reps[1]
    d = d[np.isfinite(d)]
    se = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    q = t_quantile(1 - ALPHA / 2, min(xa.shape[0], xb.shape[0]) - 1)
    return {"level": float(level), "mean": est, "ci": [est - q * se, est + q * se], "se": se,
            "reached": reached, "n_seeds": [int(xa.shape[0]), int(xb.shape[0])],
            "n_pairs": int(n_pairs)}


def final_accuracy(runs: list[dict]) -> np.ndarray:
    """``[seeds, prompts]`` 0/1 greedy correctness at the last step."""
    rows = [r["history"][-1].get("acc_heldout_per_prompt") for r in runs]
    if any(not isinstance(v, list) for v in rows) or len({len(v) for v in rows}) != 1:
        raise ValueError(f"runs of {arm_name(runs[0])}: no acc_heldout_per_prompt at the last "
                         "step (was align.per_prompt_accuracy set?)")
    return np.asarray(rows, dtype=float)


def accuracy_difference(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Mean accuracy of ``a`` minus ``b`` (``[seeds, prompts]``, the same prompts), paired by
    prompt: each replicate draws the prompts once (shared) and each arm's seeds
    independently; ``d ± t_{1−α/2, k−1}·se``, ``k = min(S_a, S_b)`` (normal for ``k = 1``)."""
    from mi_bounds.decline.stats import t_quantile

    if a.shape[1] != b.shape[1]:
        raise ValueError("the two arms must be scored on the same prompts")
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    wp = rng.multinomial(n, np.full(n, 1.0 / n), size=N_BOOT) / n
    reps = []
    for x in (a, b):
        si = rng.integers(0, x.shape[0], size=(N_BOOT, x.shape[0]))
        per_seed = x @ wp.T  # [S, B]
        reps.append(np.take_along_axis(per_seed.T, si, axis=1).mean(1))
    d = reps[0] - reps[1]
    est = float(a.mean() - b.mean())
    se = float(d.std(ddof=1))
    q = t_quantile(1 - ALPHA / 2, min(a.shape[0], b.shape[0]) - 1)
    return {"a": float(a.mean()), "b": float(b.mean()), "mean": est,
            "ci": [est - q * se, est + q * se], "se": se, "n_prompts": int(n),
            "n_seeds": [int(a.shape[0]), int(b.shape[0])],
            "prompts_a_only": int(((a.mean(0) > 0.5) & (b.mean(0) <= 0.5)).sum()),
            "prompts_b_only": int(((b.mean(0) > 0.5) & (a.mean(0) <= 0.5)).sum())}


def decide(ci: list[float], reached: bool = True) -> str:
    """The pre-registered three-way decision on a difference or change that should be
    positive: ``supported`` (interval above 0), ``refuted`` (interval below 0),
    ``inconclusive`` (interval contains 0), ``not reached``."""
    if not reached or not all(math.isfinite(v) for v in ci):
        return "not reached"
    return "supported" if ci[0] > 0 else "refuted" if ci[1] < 0 else "inconclusive"


def combine(decisions: list[str]) -> str:
    """Across the levels (and sections) of one hypothesis: ``refuted`` if any is,
    ``supported`` if every reached one is (and one is), ``not testable`` if none is reached,
    else ``inconclusive``."""
    got = [d for d in decisions if d != "not reached"]
    if not got:
        return "not testable (no level reached)"
    if "refuted" in got:
        return "refuted"
    return "supported" if all(d == "supported" for d in got) else "inconclusive"


# --------------------------------------------------------------------------- the analysis


def analyse(arms: dict[str, list[dict]]) -> dict[str, Any]:
    """Every number of the report (module docstring), from the runs grouped by arm."""
    from mi_bounds.decline.compare import shape_counts

    out: dict[str, Any] = {"alpha": ALPHA, "n_boot": N_BOOT, "arms": {}, "matched": {},
                           "hypotheses": {}}
    pp = {a: {s: pair_values(runs, s) for s in SECTIONS} for a, runs in arms.items()}
    for a, runs in arms.items():
        out["arms"][a] = {"seeds": [r["seed"] for r in runs], "n_pairs":
                          {s: int(pp[a][s].shape[1]) for s in SECTIONS},
                          "kl_final": [r["history"][-1]["kl"]["k1"] for r in runs],
                          "kl_final_se": [r["history"][-1]["kl"].get("k1_se") for r in runs],
                          "kl_max": [max(h["kl"]["k1"] for h in r["history"]) for r in runs],
                          "verdicts": shape_counts(runs, ALPHA)}
    plan = {"kl": KL_LEVELS, "margin": MARGIN_LEVELS, "step": STEP_LEVELS}
    for quantity, levels in plan.items():
        table: dict[str, Any] = {}
        for a, runs in arms.items():
            x = seed_curve(runs, quantity)
            table[a] = {}
            for s in SECTIONS:
                rows = []
                for lv in levels:
                    if quantity == "margin" and s == "train":  # margins per pair: both resampled
                        from mi_bounds.decline.stats import matched_bootstrap

                        xm = pair_values(runs, "train", "rewards/margins")
                        row = matched_bootstrap(xm, pp[a][s], lv, alpha=ALPHA, n_boot=N_BOOT)
                        row.update(reached=row["n_reached"] == row["n_seeds"], level=float(lv))
                    else:
                        row = matched(x, pp[a][s], lv)
                    rows.append(row)
                table[a][s] = rows
        out["matched"][quantity] = table
    out["hypotheses"] = hypotheses(arms, pp, out)
    return out


def hypotheses(arms: dict[str, list[dict]], pp: dict, res: dict) -> dict[str, Any]:
    """H1–H5 of the pre-registration, each with its statistics and decision."""
    h: dict[str, Any] = {}
    if DPO in arms:
        tl = res["arms"][DPO]["verdicts"].get("train", {}).get("two_level", {})
        shape = tl.get("shape", "n/a")
        h["H1"] = {"statement": "DPO's train chosen log-likelihood rises then falls (two-level "
                   "verdict rise-then-fall)", "two_level": tl,
                   "seed_rule": {k: v for k, v in res["arms"][DPO]["verdicts"]["train"].items()
                                 if k != "two_level"},
                   "decision": "supported" if shape == "rise-then-fall" else
                   f"not supported ({shape})"}
    if MIO in arms and DPO in arms:
        rows, decisions = [], []
        for s in SECTIONS:
            for i, lv in enumerate(KL_LEVELS):
                m = res["matched"]["kl"][MIO][s][i]
                both = m["reached"] and res["matched"]["kl"][DPO][s][i]["reached"]
                # ">= 0 with its interval": supported iff the interval's lower end is >= 0
                d = ("not reached" if not both else "supported" if m["ci"][0] >= 0
                     else "refuted" if m["ci"][1] < 0 else "inconclusive")
                rows.append({"section": s, "level": lv, "mean": m["mean"], "ci": m["ci"],
                             "reached_by_both": both, "decision": d})
                decisions.append(d)
        h["H2"] = {"statement": "MIO (lr 1e-5): chosen change >= 0 with its interval at every "
                   "KL level both MIO and DPO reach, train and held-out", "levels": rows,
                   "decision": combine(decisions)}
    for name, other, sections, levels, statement in (
            ("H3", MIO_HIGH, ("train", "heldout"), [lv for lv in KL_LEVELS if lv >= DPO_RANGE],
             "at matched KL in DPO's range (>= 10 nats), MIO at lr 3e-5 minus DPO at 1e-5: "
             "chosen change > 0 (primary: train pairs)"),
            ("H4", MIO, ("heldout",), list(KL_LEVELS),
             "held-out chosen change at matched KL, MIO minus DPO (both lr 1e-5) > 0")):
        if other not in arms or DPO not in arms:
            continue
        rows, primary = [], []
        for s in sections:
            for lv in levels:
                d = matched_difference((seed_curve(arms[other], "kl"), pp[other][s]),
                                       (seed_curve(arms[DPO], "kl"), pp[DPO][s]), lv)
                d.update(section=s, decision=decide(d["ci"], d["reached"]))
                rows.append(d)
                if s == sections[0]:
                    primary.append(d["decision"])
        h[name] = {"statement": statement, "arms": [other, DPO], "levels": rows,
                   "decision": combine(primary)}
    if MIO_HIGH in arms and DPO in arms:  # H4's secondary reading: MIO at the higher rate
        rows = []
        for lv in KL_LEVELS:
            d = matched_difference((seed_curve(arms[MIO_HIGH], "kl"), pp[MIO_HIGH]["heldout"]),
                                   (seed_curve(arms[DPO], "kl"), pp[DPO]["heldout"]), lv)
            d.update(section="heldout", decision=decide(d["ci"], d["reached"]))
            rows.append(d)
        h.setdefault("H4", {})["secondary_mio_high"] = rows
    if MIO in arms and DPO in arms:
        acc = accuracy_difference(final_accuracy(arms[MIO]), final_accuracy(arms[DPO]))
        h["H5"] = {"statement": "final greedy accuracy, MIO minus DPO (lr 1e-5), paired by "
                   "prompt, > 0", **acc, "decision": decide(acc["ci"])}
    return h


def exploratory(arms: dict[str, list[dict]]) -> dict[str, Any]:
    """Differences that the pre-registration does not contain, added after its results were
    read (2026-12-07). They decide nothing; ``exploratory.md`` and the write-up say so.

    ``mio@1e-05 − dpo@1e-05`` of the chosen change (:func:`matched_difference`: pairs shared,
    seeds of each arm drawn independently) at matched KL on train pairs (the pre-registration
    compares the two losses at matched KL only on held-out pairs, H4), and at matched train
    reward margin on train and held-out pairs, with each run's *mean* train margin as the
    matched quantity for both sections (the pilot's headline was at matched margin).
    """
    if MIO not in arms or DPO not in arms:
        return {}
    rows = []
    for quantity, levels, sections in (("kl", KL_LEVELS, ("train",)),
                                       ("margin", MARGIN_LEVELS, SECTIONS)):
        for s in sections:
            for lv in levels:
                d = matched_difference(
                    (seed_curve(arms[MIO], quantity), pair_values(arms[MIO], s)),
                    (seed_curve(arms[DPO], quantity), pair_values(arms[DPO], s)), lv)
                d.update(quantity=quantity, section=s)
                rows.append(d)
    return {"comparison": [MIO, DPO], "rows": rows}


def _exploratory_md(res: dict) -> str:
    ex = res.get("exploratory") or {}
    lines = ["Exploratory: not in PREREGISTRATION.md, added after its results were read; these "
             "numbers decide no hypothesis. Chosen change difference "
             f"{' − '.join(ex.get('comparison', [MIO, DPO]))} (nats) where each run first "
             "reaches the level; 95% interval (pairs shared, seeds of each arm resampled "
             "independently, 2000 replicates, mean ± t·se). Margin = the run's mean train "
             "reward margin.", ""]
    rows = [[r["quantity"], r["section"], f"{r['level']:g}",
             _f(r["mean"]) if r["reached"] else "not reached",
             _ci(r["ci"]) if r["reached"] else "n/a"] for r in ex.get("rows", [])]
    header = ["matched on", "pairs", "level", "difference", "interval"]
    return "\n".join(lines) + "\n" + _table(header, rows)


# --------------------------------------------------------------------------- writing


def _f(v: float, d: int = 2) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{d}f}"


def _ci(ci: list[float], d: int = 2) -> str:
    return "n/a" if not all(math.isfinite(v) for v in ci) else f"[{ci[0]:.{d}f}, {ci[1]:.{d}f}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def _matched_md(res: dict, quantity: str, unit: str) -> str:
    parts = [f"Chosen log-likelihood change c(t) − c(0) (nats; mean over pairs, then seeds) where "
             f"each run first reaches the {unit}; {1 - ALPHA:.0%} two-level bootstrap interval "
             f"(seeds × pairs, {N_BOOT} replicates). 'not reached': not every seed reaches it "
             "(k/n: seeds that do).\n"]
    for s in SECTIONS:
        parts.append(f"\n### {s} pairs\n\n")
        table = res["matched"][quantity]
        levels = [r["level"] for r in next(iter(table.values()))[s]]
        rows = []
        for a, t in table.items():
            cells = [a]
            for r in t[s]:
                if r["reached"]:
                    cells.append(f"{_f(r['mean'])} {_ci(r['ci'])}")
                else:
                    cells.append(f"not reached ({r['n_reached']}/{r['n_seeds']})")
            rows.append(cells)
        parts.append(_table(["arm"] + [f"{unit.split()[0]} {lv:g}" for lv in levels], rows))
    return "".join(parts)


def _verdicts_md(res: dict) -> str:
    rows = []
    for a, info in res["arms"].items():
        for s in SECTIONS:
            v = info["verdicts"].get(s)
            if not v:
                continue
            tl = v.get("two_level", {})
            counts = ", ".join(f"{k} {n}" for k, n in sorted(v.get("counts", {}).items()) if n)
            rows.append([a, s, str(len(info["seeds"])), v.get("mean", {}).get("shape", "n/a"),
                         counts,
                         tl.get("shape", "n/a"),
                         f"{_f(tl.get('rise', math.nan))} {_ci(tl.get('rise_ci', [math.nan]))}",
                         f"{_f(tl.get('drop_from_peak', math.nan))} "
                         f"{_ci(tl.get('drop_ci', [math.nan]))}",
                         f"{_f(tl.get('change', math.nan))} "
                         f"{_ci(tl.get('change_ci', [math.nan]))}",
                         _f(tl.get("peak_step", math.nan), 0)])
    head = ("The calibrated decline rule (docs/THEORY.md §6) at alpha = "
            f"{ALPHA}: over seeds (the seed-mean curve against its own noise and the seeds' "
            "Student-t levels; per-seed counts), and over seeds × pairs (two-level bootstrap, "
            f"{N_BOOT} replicates; rise, drop from peak and change in nats with "
            f"{1 - ALPHA:.0%} intervals).\n\n")
    return head + _table(["arm", "pairs", "seeds", "rule over seeds", "per-seed shapes",
                          "two-level verdict", "rise", "drop from peak", "change",
                          "peak step"], rows)


def _hypotheses_md(res: dict) -> str:
    h = res["hypotheses"]
    out = [f"Each hypothesis of PREREGISTRATION.md with its statistic, the {1 - ALPHA:.0%} "
           "interval and the pre-registered decision.\n"]
    if "H1" in h:
        tl = h["H1"]["two_level"]
        out.append(f"\n## H1 — {h['H1']['statement']}\n\nTwo-level verdict: "
                   f"**{tl.get('shape', 'n/a')}**; rise {_f(tl.get('rise', math.nan))} "
                   f"{_ci(tl.get('rise_ci', [math.nan]))} (level "
                   f"{_f(tl.get('levels', {}).get('rise', math.nan))}), drop from peak "
                   f"{_f(tl.get('drop_from_peak', math.nan))} "
                   f"{_ci(tl.get('drop_ci', [math.nan]))} (level "
                   f"{_f(tl.get('levels', {}).get('drop', math.nan))}), peak at step "
                   f"{_f(tl.get('peak_step', math.nan), 0)}. Rule over seeds: "
                   f"{h['H1']['seed_rule'].get('mean', {}).get('shape', 'n/a')}. **Decision: "
                   f"{h['H1']['decision']}.**\n")
    if "H2" in h:
        rows = [[r["section"], f"{r['level']:g}", _f(r["mean"]), _ci(r["ci"]), r["decision"]]
                for r in h["H2"]["levels"]]
        out.append(f"\n## H2 — {h['H2']['statement']}\n\n"
                   + _table(["pairs", "KL", "MIO chosen change", "interval", "decision"], rows)
                   + f"\n**Decision: {h['H2']['decision']}.**\n")
    for name in ("H3", "H4"):
        if name not in h or "levels" not in h[name]:
            continue
        a, b = h[name]["arms"]
        rows = [[r["section"], f"{r['level']:g}", _f(r["mean"]), _ci(r["ci"]), r["decision"]]
                for r in h[name]["levels"]]
        out.append(f"\n## {name} — {h[name]['statement']}\n\n"
                   + _table(["pairs", "KL", f"{a} − {b}", "interval", "decision"], rows)
                   + f"\n**Decision: {h[name]['decision']}.**\n")
        if name == "H4" and "secondary_mio_high" in h[name]:
            rows = [[r["section"], f"{r['level']:g}", _f(r["mean"]), _ci(r["ci"]),
                     r["decision"]] for r in h[name]["secondary_mio_high"]]
            out.append(f"\nSecondary reading ({MIO_HIGH} − {DPO}, held-out):\n\n"
                       + _table(["pairs", "KL", "difference", "interval", "decision"], rows))
    if "H5" in h:
        r = h["H5"]
        out.append(f"\n## H5 — {r['statement']}\n\nMIO {_f(r['a'], 3)}, DPO {_f(r['b'], 3)}, "
                   f"difference {_f(r['mean'], 3)} {_ci(r['ci'], 3)} over {r['n_prompts']} "
                   f"prompts (seeds {r['n_seeds'][0]} and {r['n_seeds'][1]}). **Decision: "
                   f"{r['decision']}.**\n")
    return "".join(out)


def _accuracy_md(arms: dict[str, list[dict]], res: dict) -> str:
    rows = []
    for a, runs in arms.items():
        acc = final_accuracy(runs).mean(1)
        rows.append([a, str(len(runs)), _f(float(acc.mean()), 3),
                     ", ".join(f"{v:.3f}" for v in acc)])
    out = "Final greedy accuracy on the held-out prompts (per seed and mean).\n\n"
    out += _table(["arm", "seeds", "mean", "per seed"], rows)
    if "H5" in res["hypotheses"]:
        r = res["hypotheses"]["H5"]
        out += (f"\nMIO − DPO (lr 1e-5), paired by prompt: {_f(r['mean'], 3)} "
                f"{_ci(r['ci'], 3)}; prompts right in most seeds under MIO only: "
                f"{r['prompts_a_only']}, under DPO only: {r['prompts_b_only']}.\n")
    return out


def _pair_change_at(x_seed: np.ndarray, y_pp: np.ndarray, level: float | None) -> np.ndarray:
    """Each pair's chosen change, seed mean, at the first crossing of ``level`` (None: the
    last step)."""
    ch = y_pp - y_pp[..., :1]
    if level is None:
        return ch[..., -1].mean(0)
    xs = np.broadcast_to(x_seed[:, None, :], ch.shape)
    return _crossing(xs, ch, level).mean(0)


def figures(arms: dict[str, list[dict]], res: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    if DPO in arms and MIO in arms:
        fig, axes = plt.subplots(2, 2, figsize=(8, 7.5))
        common = [lv for i, lv in enumerate(KL_LEVELS)
                  if res["matched"]["kl"][DPO]["train"][i]["reached"]
                  and res["matched"]["kl"][MIO]["train"][i]["reached"]]
        for r, level in enumerate((common[-1] if common else None, None)):
            for c, s in enumerate(SECTIONS):
                ax = axes[r, c]
                xd = _pair_change_at(seed_curve(arms[DPO], "kl"), pair_values(arms[DPO], s),
                                     level)
                xm = _pair_change_at(seed_curve(arms[MIO], "kl"), pair_values(arms[MIO], s),
                                     level)
                ax.scatter(xd, xm, s=9, alpha=0.7)
                lim = [float(np.nanmin([xd.min(), xm.min()])),
                       float(np.nanmax([xd.max(), xm.max()]))]
                ax.plot(lim, lim, color="0.5", lw=0.7)
                ax.axhline(0, color="0.8", lw=0.6)
                ax.axvline(0, color="0.8", lw=0.6)
                where = f"KL {level:g}" if level is not None else "last step"
                ax.set_title(f"{s} pairs, at {where}", fontsize=9)
                ax.set_xlabel(f"{DPO} chosen change (nats)", fontsize=8)
                ax.set_ylabel(f"{MIO} chosen change (nats)", fontsize=8)
        fig.suptitle("Per-pair chosen log-likelihood change (seed means)", fontsize=10)
        fig.tight_layout()
        paths.append(out_dir / "scatter_chosen.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for i, (a, runs) in enumerate(arms.items()):
        kl = seed_curve(runs, "kl")
        for c, s in enumerate(SECTIONS):
            y = pair_values(runs, s).mean(1)
            y = y - y[:, :1]
            for j in range(len(runs)):
                axes[c].plot(kl[j], y[j], color=f"C{i}", lw=0.9, alpha=0.8,
                             label=a if j == 0 else None)
            axes[c].set_title(f"{s} pairs", fontsize=9)
            axes[c].set_xlabel("sampled KL(π‖π_ref) (nats)", fontsize=8)
            axes[c].axhline(0, color="0.7", lw=0.6)
    axes[0].set_ylabel("chosen change (nats)", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "chosen_vs_kl.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def report(results_dir: Path) -> list[Path]:
    """Rebuild ``results_dir/report/`` from ``results_dir/<setting>/align_runs/*.json``."""
    from mi_bounds._json import rounded

    results_dir = Path(results_dir)
    arms = load_arms(results_dir)
    res = analyse(arms)
    res["exploratory"] = exploratory(arms)
    out = results_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "hypotheses.md": _hypotheses_md(res),
        "matched_kl.md": _matched_md(res, "kl", "KL level (nats)"),
        "matched_margin.md": _matched_md(res, "margin", "margin level (train reward margin)"),
        "equal_steps.md": _matched_md(res, "step", "step"),
        "verdicts.md": _verdicts_md(res),
        "accuracy.md": _accuracy_md(arms, res),
        "exploratory.md": _exploratory_md(res),
    }
    paths = []
    for name, text in files.items():
        paths.append(out / name)
        paths[-1].write_text(text)
    paths.append(out / "report.json")
    paths[-1].write_text(json.dumps(rounded(res, 6), sort_keys=True, indent=1) + "\n")
    paths += figures(arms, res, out)
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    usage = ("usage: python -m experiments.smollm2_study collect RUN_DIR OUT_DIR\n"
             "       python -m experiments.smollm2_study report RESULTS_DIR")
    if len(argv) == 3 and argv[0] == "collect":
        collect(Path(argv[1]), Path(argv[2]))
        return 0
    if len(argv) == 2 and argv[0] == "report":
        try:
            for p in report(Path(argv[1])):
                print(p)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
