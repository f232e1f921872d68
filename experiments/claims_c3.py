"""Claim C3, the late-stage decline of the chosen likelihood, measured exactly.

The claim (docs/THEORY.md §2): trained on preference pairs, a *shared-feature* policy under
DPO first raises and then lowers the mean log-likelihood of the chosen responses while its
margin keeps growing; under MIO (the JS bound) the chosen likelihood does not fall, or falls far
less. This module runs the exact dynamics of :mod:`toy_models.dynamics` over grids of worlds and
returns the numbers; ``figures/fig_c3_decline.py`` and ``figures/fig_c3_trajectories.py`` draw
them.

The worlds, the per-run decline summary and the matched comparison in one world live in
:mod:`toy_models.displacement` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mi_bounds._validation import check_positive
from mi_bounds.decline.shape import SHAPES
from toy_models.displacement import (
    MATCH_ON,
    TOY_NOISE,
    C3World,
    _matched_reads,
    curve_shape,
    displacement_world,
    heldout_world,
    labelled_pairs_world,
    matched_comparison,
    summarise_decline,
    trajectory_with_heldout,
)
from toy_models.dynamics import (
    Trajectory,
    gradient_descent,
    gradient_descent_many,
)

__all__ = [
    "C3_LOSSES",
    "MATCH_ON",
    "TOY_NOISE",
    "C3Grid",
    "C3World",
    "canonical_trajectories",
    "curve_shape",
    "decline_grid",
    "displacement_world",
    "heldout_world",
    "labelled_pairs_check",
    "labelled_pairs_world",
    "matched_comparison",
    "matched_grid",
    "minibatch_check",
    "summarise_decline",
    "trajectory_with_heldout",
]

#: The losses C3 compares: the claim is about dpo and mio; ipo and nca_pair for comparison
#: (nca_pair is mio term for term, so its numbers must equal mio's).
C3_LOSSES = ("dpo", "mio", "ipo", "nca_pair")

def labelled_pairs_check(
    *,
    pair_kinds: Sequence[str] = ("base_labelled", "bradley_terry"),
    dims: Sequence[int] = (4, 16),
    seeds: Sequence[int] = tuple(range(6)),
    losses: Sequence[str] = ("dpo", "mio"),
    lr: float = 10.0,
    steps: int = 2000,
) -> dict[str, Any]:
    """C3 in :func:`labelled_pairs_world` worlds: per (pair kind, dim, loss), each seed's
    :func:`summarise_decline` numbers (runs batched over seeds); and, with ``dpo`` and ``mio``
    among the losses, per (pair kind, dim) and seed the matched reads of
    :func:`matched_comparison` for dpo, mio and ``dpo_half`` (DPO at ``lr/2``)."""
    out: dict[str, Any] = {"lr": lr, "steps": steps, "seeds": list(seeds), "runs": [],
                           "matched": []}
    for pair_kind in pair_kinds:
        for dim in dims:
            worlds = [labelled_pairs_world(pair_kind=pair_kind, dim=dim, seed=s) for s in seeds]
            runs = {}
            for kind in losses:
                trajs = gradient_descent_many(
                    [c.world for c in worlds], kind, pairs=[c.pairs for c in worlds],
                    features=[c.features for c in worlds], lr=lr, steps=steps)
                runs[kind] = trajs
                out["runs"].append({"pair_kind": pair_kind, "dim": dim, "loss": kind,
                                    "per_seed": [summarise_decline(t) for t in trajs]})
            if "dpo" not in runs or "mio" not in runs:
                continue
            runs["dpo_half"] = gradient_descent_many(
                [c.world for c in worlds], "dpo", pairs=[c.pairs for c in worlds],
                features=[c.features for c in worlds], lr=lr / 2, steps=steps)
            reads = []
            for i in range(len(worlds)):
                curves = {name: {m: np.asarray(getattr(runs[name][i], m)) for m in
                                 ("chosen_logps", "margin", "reward_accuracy", "kl_to_reference")}
                          for name in ("dpo", "mio", "dpo_half")}
                if all(np.isfinite(c["chosen_logps"]).all() for c in curves.values()):
                    reads.append(_matched_reads(curves, "mio", {
                        "margin": ("train", "margin"), "kl": ("train", "kl_to_reference"),
                        "reward_accuracy": ("train", "reward_accuracy")}))
                else:
                    reads.append(None)
            out["matched"].append({"pair_kind": pair_kind, "dim": dim, "per_seed": reads,
                                   "dpo_half_shape": [summarise_decline(t)["shape"]
                                                      for t in runs["dpo_half"]]})
    return out


def canonical_trajectories(
    c3: C3World | None = None,
    *,
    losses: Sequence[str] = C3_LOSSES,
    lr: float = 10.0,
    steps: int = 2000,
) -> dict[str, Trajectory]:
    """Full-batch trajectories of each loss in one world (default: ``displacement_world()``)."""
    c3 = displacement_world() if c3 is None else c3
    return {
        kind: gradient_descent(c3.world, kind, pairs=c3.pairs, features=c3.features, lr=lr,
                               steps=steps)
        for kind in losses
    }


def minibatch_check(
    *,
    batch_sizes: Sequence[int] = (2, 4),
    seeds: Sequence[int] = (0, 1, 2),
    losses: Sequence[str] = ("dpo", "mio"),
    lr: float = 10.0,
    steps: int = 2000,
) -> dict[str, Any]:
    """C3 in the canonical world with sampled pairs: each step descends the mean loss of
    ``batch_size`` pairs drawn from the 8 (seeded); returns :func:`summarise_decline` per
    (batch size, loss, seed), next to the full-batch numbers."""
    c3 = displacement_world()
    out: dict[str, Any] = {"lr": lr, "steps": steps, "seeds": list(seeds), "runs": []}
    for kind in losses:
        full = gradient_descent(c3.world, kind, pairs=c3.pairs, features=c3.features, lr=lr,
                                steps=steps)
        out["runs"].append({"loss": kind, "batch_size": None,
                            "per_seed": [summarise_decline(full)]})
        for batch_size in batch_sizes:
            trajs = gradient_descent_many(
                [c3.world] * len(seeds), kind, pairs=c3.pairs,
                features=[c3.features] * len(seeds), lr=lr, steps=steps,
                batch_size=int(batch_size), seeds=list(seeds))
            out["runs"].append({"loss": kind, "batch_size": int(batch_size),
                                "per_seed": [summarise_decline(t) for t in trajs]})
    return out


@dataclass(frozen=True)
class C3Grid:
    """The phase-diagram grid: every combination is run for every loss and seed.

    Attributes:
        betas, overlaps, lrs, n_responses: the four axes.
        seeds: worlds per grid cell (the drop is averaged over them; also the fraction of
            seeds in which DPO's drop exceeds MIO's is reported).
        n_prompts, dim: fixed world size.
        steps: full-batch gradient steps per run.
        losses: the losses to run.
        threshold: a run "declines" when its drop exceeds this (nats).
    """

    betas: tuple[float, ...] = (0.05, 0.1, 0.5)
    overlaps: tuple[float, ...] = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)
    lrs: tuple[float, ...] = (1.0, 10.0)
    n_responses: tuple[int, ...] = (2, 4, 8, 16)
    seeds: tuple[int, ...] = (0, 1, 2)
    n_prompts: int = 8
    dim: int = 8
    steps: int = 1000
    losses: tuple[str, ...] = C3_LOSSES
    threshold: float = 0.01

    def __post_init__(self) -> None:
        for name in ("betas", "overlaps", "lrs", "n_responses", "seeds", "losses"):
            if len(getattr(self, name)) == 0:
                raise ValueError(f"{name} must not be empty")
        for b in self.betas:
            check_positive(b, "betas[i]")
        for v in self.lrs:
            check_positive(v, "lrs[i]")
        if any(not 0.0 <= o < 1.0 for o in self.overlaps):
            raise ValueError(f"overlaps must lie in [0, 1), got {self.overlaps}")
        if any(int(n) < 2 for n in self.n_responses):
            raise ValueError(f"n_responses must be >= 2, got {self.n_responses}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        check_positive(self.threshold, "threshold")

    @classmethod
    def quick(cls) -> C3Grid:
        """A tiny grid for tests (a few seconds)."""
        return cls(betas=(0.1,), overlaps=(0.0, 0.9), lrs=(10.0,), n_responses=(2, 8),
                   seeds=(0,), steps=150)


def decline_grid(grid: C3Grid | None = None) -> dict[str, Any]:
    """Run the C3 grid; return the drops as nested lists (JSON-ready).

    Returns:
        ``{"grid": {axis: values}, "axes": ["beta", "lr", "n_responses", "overlap", "seed"],
        "drop": {loss: array [beta, lr, n_responses, overlap, seed]}, and, of the same shape,
        "peak_step", "margin_growth_after_peak" (margin_T - margin at the chosen peak),
        "chosen_initial", "chosen_final", "expected_reward_final"; "shape": the decline shape
        of every run (:func:`curve_shape`, or "diverged"); "summary": per loss the mean, median
        and max drop over non-diverged runs, the fractions of runs that diverged, declined
        (drop > threshold), of each shape and, of the declining runs, whose margin still grew
        after the peak; and the fractions of runs where MIO's drop is below DPO's}`` — arrays
        as nested lists (NaN = diverged).
    """
    grid = C3Grid() if grid is None else grid
    shape = (len(grid.betas), len(grid.lrs), len(grid.n_responses), len(grid.overlaps),
             len(grid.seeds))
    out: dict[str, dict[str, NDArray[np.float64]]] = {
        key: {k: np.zeros(shape) for k in grid.losses}
        for key in ("drop", "peak_step", "margin_growth_after_peak", "chosen_initial",
                    "chosen_final", "expected_reward_final")
    }
    shapes: dict[str, NDArray[np.object_]] = {k: np.empty(shape, dtype=object)
                                               for k in grid.losses}
    for i, beta in enumerate(grid.betas):
        for k, n_resp in enumerate(grid.n_responses):
            cells = [(j, m, s) for j in range(len(grid.lrs)) for m in range(len(grid.overlaps))
                     for s in range(len(grid.seeds))]
            worlds = [displacement_world(n_prompts=grid.n_prompts, n_responses=int(n_resp),
                                         dim=grid.dim, overlap=grid.overlaps[m], beta=beta,
                                         seed=grid.seeds[s]) for _, m, s in cells]
            for kind in grid.losses:
                trajs = gradient_descent_many(
                    [c.world for c in worlds], kind, pairs=[c.pairs for c in worlds],
                    features=[c.features for c in worlds], lr=[grid.lrs[j] for j, _, _ in cells],
                    steps=grid.steps,
                )
                for (j, m, s), traj in zip(cells, trajs, strict=True):
                    summ = summarise_decline(traj)
                    idx = (i, j, k, m, s)
                    out["drop"][kind][idx] = summ["drop"]
                    out["peak_step"][kind][idx] = summ["peak_step"]
                    out["margin_growth_after_peak"][kind][idx] = (
                        summ["margin_final"] - summ["margin_at_peak"])
                    out["chosen_initial"][kind][idx] = summ["chosen_initial"]
                    out["chosen_final"][kind][idx] = summ["chosen_final"]
                    out["expected_reward_final"][kind][idx] = summ["expected_reward_final"]
                    shapes[kind][idx] = summ["shape"]

    summary: dict[str, Any] = {}
    for kind in grid.losses:
        d = out["drop"][kind]
        ok = ~np.isnan(d)  # diverged runs (too large a rate for this loss) have NaN drops
        declining = ok & (d > grid.threshold)
        summary[kind] = {
            "mean_drop": float(d[ok].mean()) if ok.any() else float("nan"),
            "median_drop": float(np.median(d[ok])) if ok.any() else float("nan"),
            "max_drop": float(d[ok].max()) if ok.any() else float("nan"),
            "fraction_diverged": float((~ok).mean()),
            "fraction_declining": float(declining.mean()),
            "shape_fractions": {sh: float((shapes[kind] == sh).mean())
                                for sh in (*SHAPES[:3], "diverged")},
            "fraction_margin_grows_after_peak": float(
                (declining & (out["margin_growth_after_peak"][kind] > 0)).sum()
                / max(int(declining.sum()), 1)),
        }
    if "dpo" in grid.losses and "mio" in grid.losses:
        dpo, mio = out["drop"]["dpo"], out["drop"]["mio"]
        summary["fraction_mio_drop_below_dpo"] = float((mio < dpo).mean())
        summary["fraction_dpo_declines_mio_does_not"] = float(
            ((dpo > grid.threshold) & (mio <= grid.threshold)).mean())
        summary["fraction_mio_declines_more"] = float((mio > dpo + grid.threshold).mean())
    return {
        "grid": {"beta": list(grid.betas), "lr": list(grid.lrs),
                 "n_responses": list(grid.n_responses), "overlap": list(grid.overlaps),
                 "seed": list(grid.seeds), "n_prompts": grid.n_prompts, "dim": grid.dim,
                 "steps": grid.steps, "threshold": grid.threshold},
        "axes": ["beta", "lr", "n_responses", "overlap", "seed"],
        **{key: {k: v.tolist() for k, v in val.items()} for key, val in out.items()},
        "shape": {k: v.tolist() for k, v in shapes.items()},
        "summary": summary,
    }


def matched_grid(grid: C3Grid | None = None, *, reference: str = "mio") -> dict[str, Any]:
    """:func:`matched_comparison`'s reads over every world of a grid (train prompts only).

    Default grid: the phase diagram's axes with ``Y ≥ 4`` (responses outside the pairs exist)
    and ``ρ ∈ {0.5, 0.9}``: 3 β × 2 lr × 3 Y × 2 ρ × 3 seeds = 108 worlds, 1000 steps; losses
    dpo, mio and ``dpo_half`` (DPO at half the rate). Returns per world the chosen change of
    each run at equal steps and at the reference run's final margin, KL and reward accuracy,
    the shapes, and a summary (means, medians, the DPO/MIO ratio of means, the fraction of
    worlds where DPO falls more, the fraction where DPO reaches MIO's level).
    """
    grid = C3Grid(n_responses=(4, 8, 16), overlaps=(0.5, 0.9), losses=("dpo", "mio")) \
        if grid is None else grid
    names = {"dpo": ("dpo", 1.0), "mio": ("mio", 1.0), "dpo_half": ("dpo", 0.5)}
    rows: list[dict[str, Any]] = []
    for beta in grid.betas:
        for n_resp in grid.n_responses:
            cells = [(lr, o, s) for lr in grid.lrs for o in grid.overlaps for s in grid.seeds]
            worlds = [displacement_world(n_prompts=grid.n_prompts, n_responses=int(n_resp),
                                         dim=grid.dim, overlap=o, beta=beta, seed=s)
                      for _, o, s in cells]
            trajs = {name: gradient_descent_many(
                [c.world for c in worlds], kind, pairs=[c.pairs for c in worlds],
                features=[c.features for c in worlds],
                lr=[factor * lr for lr, _, _ in cells], steps=grid.steps)
                for name, (kind, factor) in names.items()}
            for i, (lr, o, s) in enumerate(cells):
                curves = {name: {m: np.asarray(getattr(tr[i], m)) for m in
                                 ("chosen_logps", "margin", "reward_accuracy", "kl_to_reference")}
                          for name, tr in trajs.items()}
                row: dict[str, Any] = {"beta": beta, "lr": lr, "n_responses": int(n_resp),
                                       "overlap": o, "seed": s}
                if any(not np.isfinite(c["chosen_logps"]).all() for c in curves.values()):
                    row["diverged"] = True
                    rows.append(row)
                    continue
                row.update(_matched_reads(curves, reference, {
                    "margin": ("train", "margin"), "kl": ("train", "kl_to_reference"),
                    "reward_accuracy": ("train", "reward_accuracy")}))
                row["shape"] = {name: summarise_decline(tr[i])["shape"]
                                for name, tr in trajs.items()}
                rows.append(row)
    ok = [r for r in rows if not r.get("diverged")]

    def stats(values: list[float]) -> dict[str, float]:
        v = np.asarray(values, dtype=float)
        f = v[np.isfinite(v)]
        return {"mean": float(f.mean()) if f.size else float("nan"),
                "median": float(np.median(f)) if f.size else float("nan"),
                "n": int(f.size), "n_worlds": int(v.size)}

    summary: dict[str, Any] = {"n_worlds": len(rows), "n_diverged": len(rows) - len(ok)}
    for key in ("fixed_budget", "margin", "kl", "reward_accuracy"):
        per = {name: [r[key][name] if key == "fixed_budget" else r[key]["chosen_change"][name]
                      for r in ok] for name in names}
        entry: dict[str, Any] = {name: stats(v) for name, v in per.items()}
        d, m = np.asarray(per["dpo"], float), np.asarray(per[reference], float)
        both = np.isfinite(d) & np.isfinite(m)
        entry["dpo_over_mio_ratio_of_means"] = (float(d[both].mean() / m[both].mean())
                                                if both.any() and m[both].mean() != 0
                                                else float("nan"))
        entry["fraction_dpo_falls_more"] = float((d[both] < m[both]).mean()) if both.any() \
            else float("nan")
        entry["fraction_dpo_reaches_level"] = float(np.isfinite(d).mean()) if d.size else \
            float("nan")
        summary[key] = entry
    summary["shape_counts"] = {name: {sh: sum(r["shape"][name] == sh for r in ok)
                                      for sh in SHAPES[:3]}
                               for name in names}
    return {"grid": {"beta": list(grid.betas), "lr": list(grid.lrs),
                     "n_responses": list(grid.n_responses), "overlap": list(grid.overlaps),
                     "seed": list(grid.seeds), "steps": grid.steps, "n_prompts": grid.n_prompts,
                     "dim": grid.dim}, "reference": reference, "rows": rows, "summary": summary}
