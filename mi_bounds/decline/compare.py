"""Losses compared like with like: decline shapes over seeds, and the chosen log-likelihood at
matched reward margin, matched KL(π‖π_ref) and matched held-out reward accuracy.

Input: the ``result.json`` dicts of the align stage (:mod:`mi_bounds.lm.align`), grouped by loss.
Every number here is read from their recorded histories; nothing is re-run.

**Shapes.** For each loss, the per-seed curves of the mean chosen log-likelihood (train pairs,
and held-out pairs) are classified by :func:`mi_bounds.decline.shapes_over_seeds` at level
``alpha`` (docs/THEORY.md §6: the mean curve against its own noise and the seeds' Student-t
levels, with intervals); ``counts`` says how many seeds have each shape. Where a run's history
also holds every evaluation pair's value (``"logps/chosen/per_pair"``: a list, one entry per
pair, the same pairs for every seed), ``two_level`` adds the verdict and intervals of
:func:`mi_bounds.decline.stats.two_level_bootstrap`, which resample seeds *and* pairs.

**Matched comparisons.** A loss that moves the policy less also moves the chosen likelihood
less; comparing at equal steps rewards doing little. So the chosen log-likelihood change
``c(t) - c(0)`` is read where a run *first* reaches a level of a matching quantity
(:func:`mi_bounds.decline.value_at_first_crossing`, linear interpolation between evaluations):

* ``margin``: mean reward margin ``β(z_w - z_l)`` of the evaluated train pairs (TRL's
  ``rewards/margins``);
* ``kl``: the sampled estimate of E_x KL(π ‖ π_ref) on held-out prompts (``kl.k1``);
* ``heldout_reward_accuracy``: TRL's ``rewards/accuracies`` on the held-out pairs.

The levels are set by the losses being compared (default: ``dpo`` and ``mio``): ``L*`` is the
largest level that every seed of those losses reaches (the minimum over their runs of the
maximum over steps), and the levels are ``L*/4, L*/2, L*`` (margin, KL) or
``½ + f (L* - ½)`` for ``f = ½, 1`` (accuracy, whose chance level is ½). A run that never
reaches a level has no value there (``n_reached`` counts those that do). Each reading has a
``1 − alpha`` interval over seeds, ``mean ± t_{1−α/2, k−1} · std/√k`` for the ``k ≥ 2`` seeds
that reach the level, and — where margin and chosen values are logged per pair (``"…/per_pair"``)
— ``two_level``: :func:`mi_bounds.decline.stats.matched_bootstrap`, seeds and pairs resampled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mi_bounds.decline.shape import shapes_over_seeds, value_at_first_crossing
from mi_bounds.decline.stats import matched_bootstrap, t_quantile, two_level_bootstrap

__all__ = [
    "MATCH_ON",
    "by_loss",
    "matched_chosen",
    "matched_levels",
    "per_pair",
    "series",
    "shape_counts",
]

#: matching quantities: name -> (history section, key)
MATCH_ON: dict[str, tuple[str, str]] = {
    "margin": ("train", "rewards/margins"),
    "kl": ("kl", "k1"),
    "heldout_reward_accuracy": ("heldout", "rewards/accuracies"),
}


def by_loss(results: Sequence[dict]) -> dict[str, list[dict]]:
    """Results grouped by loss (in the order first seen), each group sorted by seed."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["loss"], []).append(r)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in groups.items()}


def series(result: dict, section: str, key: str | None) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of one recorded metric of one run; NaN where it is missing."""
    steps, values = [], []
    for h in result["history"]:
        entry = h.get(section)
        v = entry.get(key) if isinstance(entry, dict) and key is not None else entry
        steps.append(h["step"])
        values.append(np.nan if v is None or isinstance(v, dict) else float(v))
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


PER_PAIR = "/per_pair"  # suffix of a history key holding one value per evaluation pair


def per_pair(runs: Sequence[dict], section: str, key: str) -> np.ndarray | None:
    """``[n_seeds, n_pairs, n_steps]`` of a metric logged per evaluation pair (``key +
    "/per_pair"``), or ``None`` unless every run logged it at every evaluation for the same
    number of pairs."""
    rows = []
    for r in runs:
        steps = []
        for h in r["history"]:
            entry = h.get(section)
            vals = entry.get(key + PER_PAIR) if isinstance(entry, dict) else None
            if not isinstance(vals, list) or not vals:
                return None
            steps.append(np.asarray(vals, dtype=float))
        if len({v.size for v in steps}) != 1:
            return None
        rows.append(np.stack(steps, axis=1))  # [pairs, steps]
    if len({x.shape for x in rows}) != 1:
        return None
    arr = np.stack(rows)
    return arr if np.isfinite(arr).all() else None


def shape_counts(runs: Sequence[dict], alpha: float = 0.05) -> dict[str, Any]:
    """:func:`mi_bounds.decline.shapes_over_seeds` of the train and held-out chosen curves of
    one loss's runs (which must share their evaluation steps), at level ``alpha``; with
    ``two_level`` (:func:`~mi_bounds.decline.stats.two_level_bootstrap`) where the chosen
    log-likelihood is logged per pair."""
    out: dict[str, Any] = {}
    for section in ("train", "heldout"):
        curves = [series(r, section, "logps/chosen") for r in runs]
        steps = curves[0][0]
        if any(not np.array_equal(s, steps) for s, _ in curves):
            raise ValueError(f"runs of loss {runs[0]['loss']!r} have different evaluation steps")
        values = np.array([v for _, v in curves])
        if values.size and np.isfinite(values).all():
            out[section] = shapes_over_seeds(values, steps, alpha=alpha)
            pp = per_pair(runs, section, "logps/chosen")
            if pp is not None and pp.shape[2] >= 3:
                out[section]["two_level"] = two_level_bootstrap(pp, steps, alpha=alpha)
    return out


def _reach(run: dict, quantity: str) -> float:
    section, key = MATCH_ON[quantity]
    _, x = series(run, section, key)
    x = x[np.isfinite(x)]
    return float(x.max()) if x.size else float("nan")


def matched_levels(groups: dict[str, list[dict]], quantity: str,
                   reference: Sequence[str] = ("dpo", "mio")) -> list[float]:
    """The levels of ``quantity`` at which the losses are compared (module docstring); empty
    if a reference run never recorded it or the common reach is not above the start."""
    ref = [k for k in reference if k in groups] or list(groups)
    reach = [_reach(r, quantity) for k in ref for r in groups[k]]
    if not reach or not all(math.isfinite(v) for v in reach):
        return []
    top = min(reach)
    if quantity == "heldout_reward_accuracy":
        return [0.5 + f * (top - 0.5) for f in (0.5, 1.0)] if top > 0.5 else []
    return [top / 4, top / 2, top] if top > 0 else []


def _seed_interval(got: np.ndarray, alpha: float) -> list[float]:
    """``mean ± t_{1−α/2, k−1} · std/√k`` over ``k ≥ 2`` values; NaN for fewer."""
    if got.size < 2:
        return [float("nan"), float("nan")]
    half = t_quantile(1 - alpha / 2, got.size - 1) * got.std(ddof=1) / math.sqrt(got.size)
    return [float(got.mean() - half), float(got.mean() + half)]


def matched_chosen(groups: dict[str, list[dict]], quantity: str, levels: Sequence[float],
                   section: str = "train", alpha: float = 0.05) -> dict[str, list[dict[str, Any]]]:
    """Per loss and level: the chosen log-likelihood change ``c(t) - c(0)`` (mean of the
    ``section`` pairs) at the first crossing of the level, per seed, with mean, std (ddof 1),
    the number of seeds that reach it, ``ci`` (``1 − alpha``, Student-t over those seeds) and,
    where the quantity and the chosen curve are logged per pair, ``two_level``
    (:func:`~mi_bounds.decline.stats.matched_bootstrap`)."""
    q_section, q_key = MATCH_ON[quantity]
    out: dict[str, list[dict[str, Any]]] = {}
    for loss, runs in groups.items():
        rows = []
        x_pp = per_pair(runs, q_section, q_key)
        y_pp = per_pair(runs, section, "logps/chosen")
        if x_pp is not None and (y_pp is None or x_pp.shape != y_pp.shape):
            x_pp = None
        for level in levels:
            vals = []
            for r in runs:
                _, x = series(r, q_section, q_key)
                _, c = series(r, section, "logps/chosen")
                ok = np.isfinite(x) & np.isfinite(c)
                vals.append(value_at_first_crossing(x[ok], c[ok] - c[0], level)
                            if ok.any() and ok[0] else float("nan"))
            v = np.array(vals)
            got = v[np.isfinite(v)]
            row = {"level": float(level), "per_seed": [float(a) for a in v],
                   "n_reached": int(got.size), "n_seeds": len(runs),
                   "mean": float(got.mean()) if got.size else float("nan"),
                   "std": float(got.std(ddof=1)) if got.size > 1 else
                   (0.0 if got.size else float("nan")),
                   "ci": _seed_interval(got, alpha), "alpha": float(alpha)}
            if x_pp is not None and y_pp is not None:
                row["two_level"] = matched_bootstrap(x_pp, y_pp, level, alpha=alpha)
            rows.append(row)
        out[loss] = rows
    return out


def compare(results: Sequence[dict], reference: Sequence[str] = ("dpo", "mio"),
            alpha: float = 0.05) -> dict:
    """Shapes per loss and the matched tables for every quantity of :data:`MATCH_ON`, at
    level ``alpha`` (intervals ``1 − alpha``)."""
    groups = by_loss(results)
    matched = {}
    for quantity in MATCH_ON:
        levels = matched_levels(groups, quantity, reference)
        matched[quantity] = {"levels": levels,
                             "train": matched_chosen(groups, quantity, levels, "train", alpha),
                             "heldout": matched_chosen(groups, quantity, levels, "heldout",
                                                       alpha)}
    return {"shapes": {loss: shape_counts(runs, alpha) for loss, runs in groups.items()},
            "matched": matched, "reference_losses": [k for k in reference if k in groups],
            "alpha": float(alpha)}
