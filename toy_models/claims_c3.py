"""Claim C3, the late-stage decline of the chosen likelihood, measured exactly.

The claim (issue 3; DESIGN.md §5): trained on preference pairs, a *shared-feature* policy under
DPO first raises and then lowers the mean log-likelihood of the chosen responses while its
margin keeps growing; under MIO (the JS bound) the chosen likelihood does not fall, or falls far
less. This module builds the worlds, runs the exact dynamics of :mod:`toy_models.dynamics` and
returns the numbers; ``figures/fig_c3_decline.py`` and ``figures/fig_c3_trajectories.py`` draw
them.

**The world** (:func:`displacement_world`). ``X`` prompts (uniform weights), ``Y`` responses per
prompt, a log-linear policy ``pi_theta(y|x) ∝ pi_ref(y|x) exp(theta · phi(x, y))`` with one
``theta ∈ R^d`` shared by all prompts. For each prompt, response 0 is the chosen one and
response 1 the rejected one; the data is one pair per prompt, ``P(x, 0, 1) = 1/X``. Features are
unit vectors: ``phi(x, 0) = a_x``, ``phi(x, 1) = ρ a_x + sqrt(1 - ρ²) b_x`` with ``b_x ⟂ a_x``,
so that the cosine between chosen and rejected features is exactly the **overlap** ``ρ``; the
other ``Y - 2`` responses have independent uniformly random unit features (responses that are in
no pair). ``pi_ref(.|x) = softmax(g_x)``, ``g_x ~ N(0, ½²)``. The true reward is 1 for the chosen
response and 0 for every other one (a task with one right answer), so ``expected_reward`` is the
mean probability of the right answer.

**Why the decline can happen** (see docs/THEORY.md, "Exact dynamics"): DPO's gradient moves
``theta`` along ``phi_w - phi_l``, and ``d log pi(w) ∝ (phi_w - E_pi phi) · (phi_w - phi_l)``;
once probability mass has moved to a response that lies further along ``phi_w - phi_l`` than
``phi_w`` does, the chosen likelihood falls while the margin still grows. With high overlap,
``phi_w · (phi_w - phi_l) = 1 - ρ`` is small, so such a response exists more often.

**The measure**: ``drop = max_t c_t - c_T`` for ``c_t`` the mean chosen log-likelihood
(``Trajectory.peak_to_final_drop()``); ``0`` means it never fell below its running peak at the
end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mi_bounds._validation import check_positive
from toy_models.dynamics import Trajectory, gradient_descent, gradient_descent_many

__all__ = [
    "C3_LOSSES",
    "C3Grid",
    "C3World",
    "canonical_trajectories",
    "decline_grid",
    "displacement_world",
    "labelled_pairs_check",
    "labelled_pairs_world",
    "minibatch_check",
    "summarise_decline",
]

#: The losses C3 compares: the claim is about dpo and mio; ipo and nca_pair for comparison
#: (nca_pair is mio term for term, so its numbers must equal mio's).
C3_LOSSES = ("dpo", "mio", "ipo", "nca_pair")


@dataclass(frozen=True, eq=False)
class C3World:
    """A shared-feature world with one (chosen, rejected) pair per prompt.

    Attributes:
        world: the :class:`toy_models.world.CategoricalWorld` (prompt weights, pi_ref, reward,
            beta).
        features: ``phi`` ``[X, Y, d]``.
        pairs: ``P(x, w, l)`` ``[X, Y, Y]``: ``1/X`` at ``(x, 0, 1)``, else 0.
        overlap: the cosine ``ρ`` between each prompt's chosen and rejected features.
    """

    world: Any
    features: NDArray[np.float64] = field(repr=False)
    pairs: NDArray[np.float64] = field(repr=False)
    overlap: float


def _unit(v: NDArray[np.float64]) -> NDArray[np.float64]:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def displacement_world(
    *,
    n_prompts: int = 8,
    n_responses: int = 8,
    dim: int = 8,
    overlap: float = 0.9,
    beta: float = 0.1,
    seed: int = 0,
) -> C3World:
    """Build the C3 world described in the module docstring (deterministic in ``seed``).

    Args:
        n_prompts: ``X`` ≥ 1.
        n_responses: ``Y`` ≥ 2 (chosen, rejected, and ``Y - 2`` responses in no pair).
        dim: feature dimension ``d`` ≥ 2 (``theta`` is shared by all prompts).
        overlap: cosine ``ρ ∈ [0, 1)`` between chosen and rejected features.
        beta: the world's (and the losses') KL weight.
        seed: seed of ``numpy.random.default_rng``.
    """
    for name, value, least in (("n_prompts", n_prompts, 1), ("n_responses", n_responses, 2),
                               ("dim", dim, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if not isinstance(overlap, (int, float, np.floating)) or not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be a number in [0, 1), got {overlap!r}")
    beta = check_positive(beta, "beta")
    from toy_models.world import CategoricalWorld

    rng = np.random.default_rng(seed)
    a = _unit(rng.standard_normal((n_prompts, dim)))
    b = rng.standard_normal((n_prompts, dim))
    b = _unit(b - (b * a).sum(-1, keepdims=True) * a)  # b ⟂ a
    others = _unit(rng.standard_normal((n_prompts, n_responses - 2, dim)))
    features = np.concatenate(
        [a[:, None], (overlap * a + np.sqrt(1.0 - overlap**2) * b)[:, None], others], axis=1
    )
    logits = 0.5 * rng.standard_normal((n_prompts, n_responses))
    pi_ref = np.exp(logits - logits.max(-1, keepdims=True))
    pi_ref /= pi_ref.sum(-1, keepdims=True)
    reward = np.zeros((n_prompts, n_responses))
    reward[:, 0] = 1.0
    pairs = np.zeros((n_prompts, n_responses, n_responses))
    pairs[:, 0, 1] = 1.0 / n_prompts
    world = CategoricalWorld(
        prompt_weights=np.full(n_prompts, 1.0 / n_prompts), pi_ref=pi_ref, reward=reward, beta=beta
    )
    return C3World(world=world, features=features, pairs=pairs, overlap=float(overlap))


def labelled_pairs_world(
    *,
    pair_kind: str = "base_labelled",
    n_prompts: int = 8,
    n_responses: int = 8,
    dim: int = 16,
    beta: float = 0.1,
    seed: int = 0,
) -> C3World:
    """A second C3 setting, closer to the paper's data: many pairs per prompt.

    ``CategoricalWorld.random(seed, n_prompts, n_responses, beta, uniform_prompts=True)``
    (Dirichlet ``pi_ref``, Gaussian reward), random unit features ``phi [X, Y, dim]``
    (``default_rng(100 + seed)``; the reward is not a function of them), and the pair
    distribution ``world.pair_distribution(pair_kind)``: two responses drawn from ``pi_ref`` and
    labelled by the reward (``"base_labelled"``) or by Bradley–Terry (``"bradley_terry"``).
    ``overlap`` is NaN (not controlled).
    """
    from toy_models.world import CategoricalWorld

    world = CategoricalWorld.random(seed, n_prompts, n_responses, beta, uniform_prompts=True)
    phi = np.random.default_rng(100 + seed).standard_normal((n_prompts, n_responses, dim))
    return C3World(world=world, features=_unit(phi), pairs=world.pair_distribution(pair_kind),
                   overlap=float("nan"))


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
    :func:`summarise_decline` numbers (runs batched over seeds)."""
    out: dict[str, Any] = {"lr": lr, "steps": steps, "seeds": list(seeds), "runs": []}
    for pair_kind in pair_kinds:
        for dim in dims:
            worlds = [labelled_pairs_world(pair_kind=pair_kind, dim=dim, seed=s) for s in seeds]
            for kind in losses:
                trajs = gradient_descent_many(
                    [c.world for c in worlds], kind, pairs=[c.pairs for c in worlds],
                    features=[c.features for c in worlds], lr=lr, steps=steps)
                out["runs"].append({"pair_kind": pair_kind, "dim": dim, "loss": kind,
                                    "per_seed": [summarise_decline(t) for t in trajs]})
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


def summarise_decline(traj: Trajectory) -> dict[str, float]:
    """The C3 numbers of one run: initial, peak and final chosen log-likelihood, the drop,
    the peak step, the final margin and the margin at the chosen peak, the final KL to pi_ref
    and the final expected reward."""
    peak = traj.chosen_peak_step
    return {
        "chosen_initial": float(traj.chosen_logps[0]),
        "chosen_peak": float(traj.chosen_logps[peak]),
        "chosen_final": float(traj.chosen_logps[-1]),
        "drop": traj.peak_to_final_drop(),
        "peak_step": float(peak),
        "margin_at_peak": float(traj.margin[peak]),
        "margin_final": float(traj.margin[-1]),
        "kl_to_reference_final": float(traj.kl_to_reference[-1]),
        "expected_reward_final": float(traj.expected_reward[-1]),
    }


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
        "chosen_initial", "chosen_final", "expected_reward_final"; "summary": per loss the mean,
        median and max drop over non-diverged runs, the fractions of runs that diverged,
        declined (drop > threshold), rose then fell (declined with a peak after step 0) and,
        of the declining runs, whose margin still grew after the peak; and the fractions of
        runs where MIO's drop is below DPO's}`` — arrays as nested lists (NaN = diverged).
    """
    grid = C3Grid() if grid is None else grid
    shape = (len(grid.betas), len(grid.lrs), len(grid.n_responses), len(grid.overlaps),
             len(grid.seeds))
    out: dict[str, dict[str, NDArray[np.float64]]] = {
        key: {k: np.zeros(shape) for k in grid.losses}
        for key in ("drop", "peak_step", "margin_growth_after_peak", "chosen_initial",
                    "chosen_final", "expected_reward_final")
    }
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
            "fraction_rises_then_falls": float((declining & (out["peak_step"][kind] > 0)).mean()),
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
        "summary": summary,
    }
