"""Claim C3, the late-stage decline of the chosen likelihood, measured exactly.

The claim (docs/THEORY.md §2): trained on preference pairs, a *shared-feature* policy under
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

**The measure** (docs/THEORY.md §6, :mod:`mi_bounds.decline.shape`): ``drop = max_t c_t - c_T ≥ 0``
for ``c_t`` the mean chosen log-likelihood, and the curve's *shape* (``rise-then-fall``,
``fall-from-start``, ``no-decline``) by :func:`mi_bounds.decline.decline_shape` on the raw curve (no
smoothing: the dynamics are exact, noise-free) with the noise level :data:`TOY_NOISE` = 0.01 nats —
a rise or fall counts when it exceeds 0.01 nats (:func:`curve_shape`).

**Matched comparisons** (:func:`matched_comparison`, :func:`matched_grid`). A loss that moves
the policy less also lowers the chosen likelihood less, so each loss's chosen change is read
where it *first* reaches MIO's final reward margin, MIO's final KL(π‖π_ref) and MIO's final
reward accuracy (:func:`mi_bounds.decline.value_at_first_crossing`), not only at equal steps.
At ``T = 0`` MIO's gradient is exactly half of DPO's (``dL/dT_w = 1.5σ(0) - 1 = -¼`` against
``-½``, ``dL/dT_l = ¼`` against ``½``), so the *matched-initial-gradient control* is DPO at
half the learning rate (``dpo_half``).

**Held-out prompts** (:func:`heldout_world`, :func:`trajectory_with_heldout`): prompts built
like the training ones but never trained on; with one ``theta`` shared by all prompts the
policy moves on them too, and their chosen log-likelihood, margin, reward accuracy and KL are
computed exactly at every step from the recorded parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from mi_bounds._validation import check_positive
from mi_bounds.decline.shape import SHAPES, decline_shape, value_at_first_crossing
from toy_models.dynamics import (
    Trajectory,
    expected_loss,
    gradient_descent,
    gradient_descent_many,
    policy_log_ratios,
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

#: Noise level (nats) of an exact toy curve for :func:`mi_bounds.decline.decline_shape`: a rise
#: or a fall counts when it exceeds it (the same 0.01 as ``C3Grid.threshold``).
TOY_NOISE = 0.01

#: Matching quantities of a trajectory: name -> Trajectory attribute.
MATCH_ON = {"margin": "margin", "kl": "kl_to_reference", "reward_accuracy": "reward_accuracy"}


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


def curve_shape(values: Any, steps: Any) -> dict[str, Any] | None:
    """:func:`mi_bounds.decline.decline_shape` of an exact toy curve: raw (``window=1``), noise
    level :data:`TOY_NOISE`. ``None`` for a diverged run (a curve with NaN)."""
    v = np.asarray(values, dtype=float)
    if not np.isfinite(v).all():
        return None
    return decline_shape(v, steps, noise=0.0, window=1, min_noise=TOY_NOISE).to_dict()


def summarise_decline(traj: Trajectory) -> dict[str, Any]:
    """The C3 numbers of one run: initial, peak and final chosen log-likelihood, the drop
    ``max c - c_T`` and the shape (:func:`curve_shape`), the peak step, the final margin and
    the margin at the chosen peak, the final KL to pi_ref, reward accuracy and expected reward.
    A diverged run has NaN numbers and shape ``"diverged"``."""
    peak = traj.chosen_peak_step
    shape = curve_shape(traj.chosen_logps, traj.step)
    return {
        "chosen_initial": float(traj.chosen_logps[0]),
        "chosen_peak": float(traj.chosen_logps[peak]),
        "chosen_final": float(traj.chosen_logps[-1]),
        "drop": float("nan") if shape is None else float(shape["drop_from_peak"]),
        "shape": "diverged" if shape is None else shape["shape"],
        "peak_step": float(peak),
        "margin_at_peak": float(traj.margin[peak]),
        "margin_final": float(traj.margin[-1]),
        "kl_to_reference_final": float(traj.kl_to_reference[-1]),
        "reward_accuracy_final": float(traj.reward_accuracy[-1]),
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


# --------------------------------------------------------------------------------------------
# Held-out prompts and matched comparisons.
# --------------------------------------------------------------------------------------------


def heldout_world(*, seed: int = 0, **kwargs: Any) -> C3World:
    """Held-out prompts for :func:`displacement_world` (same arguments): the world of seed
    ``seed + 10_000``: the same construction, other prompts, features and ``pi_ref``."""
    return displacement_world(seed=seed + 10_000, **kwargs)


def trajectory_with_heldout(
    c3: C3World, heldout: C3World, kind: str, *, lr: float, steps: int,
    beta: float | None = None,
) -> tuple[Trajectory, dict[str, NDArray[np.float64]]]:
    """A full-batch run on ``c3`` and its exact metrics on the held-out prompts at every step.

    The parameters ``theta_t`` are recorded by the same update as :func:`gradient_descent`
    (``theta <- theta - lr ∇ E_P[loss]``, the gradient of :func:`toy_models.dynamics.
    expected_loss`); the last one must equal the run's final ``theta`` (checked, 1e-8). On the
    held-out world's pairs ``(x, 0, 1)``: ``chosen_logps`` = mean log π(0|x), ``margin`` =
    β·mean(z_0 - z_1), ``reward_accuracy`` = fraction of prompts with z_0 > z_1 (ties lose),
    ``kl_to_reference`` = mean KL(π(.|x) ‖ π_ref(.|x)).
    """
    beta = c3.world.beta if beta is None else beta
    traj = gradient_descent(c3.world, kind, pairs=c3.pairs, features=c3.features, lr=lr,
                            steps=steps, beta=beta)
    theta = torch.zeros(c3.features.shape[-1], dtype=torch.float64, requires_grad=True)
    thetas = [theta.detach().clone()]
    for _ in range(steps):
        (grad,) = torch.autograd.grad(
            expected_loss(kind, theta, c3.world, c3.pairs, features=c3.features, beta=beta),
            theta)
        with torch.no_grad():
            theta -= lr * grad
        thetas.append(theta.detach().clone())
    th = torch.stack(thetas)  # [T + 1, d]
    if traj.diverged_at is None and not np.allclose(th[-1].numpy(), traj.theta, atol=1e-8):
        raise RuntimeError("recorded parameters do not reproduce gradient_descent's run")
    log_ref = torch.as_tensor(np.log(heldout.world.pi_ref), dtype=torch.float64)
    phi = torch.as_tensor(heldout.features, dtype=torch.float64)
    with torch.no_grad():
        z = policy_log_ratios(th, log_ref, phi)  # [T + 1, X, Y]
        pi = (log_ref + z).exp()
        held = {
            "chosen_logps": (log_ref[:, 0] + z[..., 0]).mean(-1),
            "rejected_logps": (log_ref[:, 1] + z[..., 1]).mean(-1),
            "margin": beta * (z[..., 0] - z[..., 1]).mean(-1),
            "reward_accuracy": (z[..., 0] > z[..., 1]).double().mean(-1),
            "kl_to_reference": (pi * z).sum(-1).mean(-1),
        }
    return traj, {k: v.numpy() for k, v in held.items()}


def _matched_reads(curves: dict[str, dict[str, NDArray[np.float64]]], reference: str,
                   quantities: Any) -> dict[str, Any]:
    """Chosen change of every run where it first reaches the reference run's final value of
    each quantity; and at equal steps (the last step)."""
    out: dict[str, Any] = {"fixed_budget": {
        k: float(c["chosen_logps"][-1] - c["chosen_logps"][0]) for k, c in curves.items()}}
    for name, (source, attr) in quantities.items():
        level = float(curves[reference][attr][-1]) if source == "train" else \
            float(curves[reference][f"heldout/{attr}"][-1])
        key = attr if source == "train" else f"heldout/{attr}"
        out[name] = {"level": level, "chosen_change": {
            k: value_at_first_crossing(c[key], c["chosen_logps"] - c["chosen_logps"][0], level)
            if np.isfinite(c[key]).all() else float("nan") for k, c in curves.items()}}
    return out


def matched_comparison(
    c3: C3World | None = None,
    *,
    losses: Sequence[str] = ("dpo", "mio", "ipo"),
    lr: float = 10.0,
    steps: int = 2000,
    reference: str = "mio",
    heldout_seed: int | None = 0,
) -> dict[str, Any]:
    """C3 compared like with like in one world (default: the canonical ``displacement_world()``).

    Runs every loss and the matched-initial-gradient control ``dpo_half`` (DPO at ``lr/2``),
    and reads each run's chosen log-likelihood change ``c_t - c_0`` where it first reaches the
    ``reference`` run's final margin, KL(π‖π_ref), reward accuracy and held-out reward
    accuracy; plus the change at equal steps. Held-out prompts: ``heldout_world(seed=
    heldout_seed, ...)`` with ``c3``'s sizes (``None``, or a world without an overlap: none).
    Also each run's
    :func:`summarise_decline` (shape of the train curve) and, with held-out prompts, the shape of
    the held-out chosen curve. Returns JSON-ready numbers and the per-step curves.
    """
    c3 = displacement_world() if c3 is None else c3
    held = None
    if heldout_seed is not None and np.isfinite(c3.overlap):
        n_x, n_y, dim = c3.features.shape
        held = heldout_world(n_prompts=n_x, n_responses=n_y, dim=dim, overlap=c3.overlap,
                             beta=c3.world.beta, seed=heldout_seed)
    runs = {k: (k, lr) for k in losses}
    runs["dpo_half"] = ("dpo", lr / 2)
    curves: dict[str, dict[str, NDArray[np.float64]]] = {}
    summary: dict[str, Any] = {}
    for name, (kind, rate) in runs.items():
        if held is not None:
            traj, h = trajectory_with_heldout(c3, held, kind, lr=rate, steps=steps)
        else:
            traj, h = gradient_descent(c3.world, kind, pairs=c3.pairs, features=c3.features,
                                       lr=rate, steps=steps), {}
        curves[name] = {m: np.asarray(getattr(traj, m)) for m in
                        ("chosen_logps", "rejected_logps", "margin", "reward_accuracy",
                         "kl_to_reference", "expected_reward")}
        curves[name].update({f"heldout/{k}": v for k, v in h.items()})
        summary[name] = summarise_decline(traj)
        summary[name]["lr"] = rate
        if h:
            hs = curve_shape(h["chosen_logps"], traj.step)
            summary[name]["heldout_shape"] = "diverged" if hs is None else hs["shape"]
            summary[name]["heldout_chosen_change"] = float(h["chosen_logps"][-1]
                                                           - h["chosen_logps"][0])
    quantities = {"margin": ("train", "margin"), "kl": ("train", "kl_to_reference"),
                  "reward_accuracy": ("train", "reward_accuracy")}
    if held is not None:
        quantities["heldout_reward_accuracy"] = ("heldout", "reward_accuracy")
    return {"lr": lr, "steps": steps, "reference": reference, "summary": summary,
            "matched": _matched_reads(curves, reference, quantities),
            "curves": {k: {m: v.tolist() for m, v in c.items()} for k, c in curves.items()}}


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
