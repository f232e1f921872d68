"""Exact training dynamics of categorical policies under each preference loss.

A policy over a finite response set is trained by gradient descent on the **exact expected
preference loss** of a pair distribution ``P(x, y_w, y_l)`` (docs/THEORY.md §3)::

    L(theta) = Σ_{x, w, l} P(x, w, l) · loss(log pi_theta(w|x), log pi_theta(l|x),
                                             log pi_ref(w|x), log pi_ref(l|x); beta)

in float64, with the per-pair loss taken from :func:`mi_bounds.preference.preference_loss`
(``reduction='none'``; there is no second implementation of any loss here) and the gradient from
torch autograd. Two policy families, both equal to ``pi_ref`` at ``theta = 0``:

* **tabular**: ``pi_theta(.|x) = softmax(log pi_ref(.|x) + theta[x, :])``, ``theta`` of shape
  ``[X, Y]``: every (prompt, response) cell has its own parameter;
* **shared-feature (log-linear)**: ``pi_theta(y|x) ∝ pi_ref(y|x) exp(theta · phi(x, y))`` with
  features ``phi`` of shape ``[X, Y, d]`` and one ``theta`` of shape ``[d]`` shared by every
  prompt, so that pushing one response down can move others (the setting of claim C3).

:func:`gradient_descent` runs full-batch gradient descent (``batch_size=None``) or the
mini-batch variant that samples ``batch_size`` pairs from ``P`` per step (seeded; the step
minimises the mean loss of the sampled pairs). Either way every recorded metric is exact: it is
an expectation under ``P`` or under the prompt weights, not a sample average. A run returns a
:class:`Trajectory` of per-step numpy arrays and is deterministic (same inputs, identical arrays).
:func:`gradient_descent_many` runs several worlds of one shape in a single batched computation
(the worlds do not interact: the summed loss has block-diagonal gradients); it is what the C3
phase diagram uses.

The world is any object with ``prompt_weights [X]``, ``pi_ref [X, Y]``, ``reward [X, Y]``,
``beta`` and ``optimal_policy() -> [X, Y]`` (:class:`toy_models.world.CategoricalWorld`), and,
when ``pairs`` is a name, ``pair_distribution(kind) -> [X, Y, Y]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from mi_bounds._validation import check_positive, sum_tolerance
from toy_models.oracle import kl_log, safe_log

__all__ = [
    "METRICS",
    "Trajectory",
    "WorldLike",
    "expected_loss",
    "gradient_descent",
    "gradient_descent_many",
    "policy_log_probs",
    "policy_log_ratios",
]

#: The per-step quantities a :class:`Trajectory` records, in order.
METRICS = (
    "loss",
    "chosen_logps",
    "rejected_logps",
    "margin",
    "reward_accuracy",
    "kl_to_reference",
    "expected_reward",
    "kl_to_optimal",
)

_DTYPE = torch.float64
#: A run whose parameters leave [-_THETA_LIMIT, _THETA_LIMIT] (or become non-finite) has diverged.
_THETA_LIMIT = 1e6
#: Steps whose metrics are computed together (memory ~ _METRIC_CHUNK · B · X · Y · 8 bytes · 4).
_METRIC_CHUNK = 256


class WorldLike(Protocol):
    """What the dynamics need from a world (:class:`toy_models.world.CategoricalWorld` has it)."""

    prompt_weights: Any  # [X]
    pi_ref: Any  # [X, Y]
    reward: Any  # [X, Y]
    beta: float

    def optimal_policy(self) -> Any: ...  # [X, Y]

    # Optional: ``log_optimal_policy() -> [X, Y]``; used instead of ``log(optimal_policy())``
    # where present (exact where pi* underflows, at small beta).


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Per-step record of one gradient-descent run; every array has length ``steps + 1``.

    Entry ``t`` is measured at the parameters after ``t`` updates (entry 0 is ``pi_ref``).
    All expectations are exact. With ``T_w = beta (log pi(w|x) - log pi_ref(w|x))`` and ``T_l``
    likewise (TRL's ``rewards/chosen`` and ``rewards/rejected``):

    Attributes:
        kind: the preference loss (a name in :data:`mi_bounds.preference.LOSSES`).
        beta: the loss's beta.
        lr: the learning rate.
        batch_size: pairs sampled per step, or ``None`` for full-batch (exact) descent.
        step: ``0, 1, ..., steps``.
        loss: exact expected loss ``E_P[loss]`` (the full-batch objective, also in mini-batch
            runs).
        chosen_logps: ``E_P[log pi(w|x)]`` (TRL's ``logps/chosen``, in expectation).
        rejected_logps: ``E_P[log pi(l|x)]``.
        margin: ``E_P[T_w - T_l]`` (TRL's ``rewards/margins``).
        reward_accuracy: ``P(T_w > T_l)`` (TRL's ``rewards/accuracies``; 0 at step 0, ties lose).
        kl_to_reference: ``E_x KL(pi(.|x) ‖ pi_ref(.|x))``, with ``x ~ prompt_weights``.
        expected_reward: ``E_x E_{y~pi(.|x)} r(x, y)``.
        kl_to_optimal: ``E_x KL(pi(.|x) ‖ pi*(.|x))`` for the world's Gibbs policy ``pi*`` at the
            world's beta; ``J(pi*) - J(pi) = beta_world · kl_to_optimal`` (RLHF suboptimality).
        theta: the final parameters (``[X, Y]`` tabular, ``[d]`` shared-feature).
        diverged_at: ``None``, or the first step whose parameters would have been non-finite or
            larger than ``1e6`` in absolute value (gradient descent with too large a rate); the
            run is stopped there and every metric from that step on is NaN.
    """

    kind: str
    beta: float
    lr: float
    batch_size: int | None
    step: NDArray[np.int64]
    loss: NDArray[np.float64]
    chosen_logps: NDArray[np.float64]
    rejected_logps: NDArray[np.float64]
    margin: NDArray[np.float64]
    reward_accuracy: NDArray[np.float64]
    kl_to_reference: NDArray[np.float64]
    expected_reward: NDArray[np.float64]
    kl_to_optimal: NDArray[np.float64]
    theta: NDArray[np.float64] = field(repr=False)
    diverged_at: int | None = None

    @property
    def chosen_peak_step(self) -> int:
        """The first step at which ``chosen_logps`` is largest (before divergence, if any)."""
        return int(np.argmax(self.chosen_logps[:self.diverged_at]))

    def peak_to_final_drop(self, metric: str = "chosen_logps") -> float:
        """``max_t m_t - m_final`` for a metric ``m`` (>= 0; 0 if it never falls from its peak).

        NaN for a run that diverged (see ``diverged_at``).
        """
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
        values = getattr(self, metric)
        if self.diverged_at is not None:
            return float("nan")
        return float(values.max() - values[-1])

    def as_dict(self) -> dict[str, Any]:
        """The run as plain lists and numbers (for JSON)."""
        out: dict[str, Any] = {
            "kind": self.kind, "beta": self.beta, "lr": self.lr, "batch_size": self.batch_size,
            "step": self.step.tolist(), "theta": self.theta.tolist(),
            "diverged_at": self.diverged_at,
        }
        out.update({m: getattr(self, m).tolist() for m in METRICS})
        return out


# --------------------------------------------------------------------------------------------
# Policy and loss
# --------------------------------------------------------------------------------------------


def policy_log_ratios(
    theta: torch.Tensor, log_pi_ref: torch.Tensor, features: torch.Tensor | None = None
) -> torch.Tensor:
    """Log-ratios ``z = log pi_theta(y|x) - log pi_ref(y|x)`` of a tabular or log-linear policy.

    With scores ``s = theta`` (tabular) or ``s = phi · theta`` (log-linear),
    ``z(x, y) = s(x, y) - log Σ_y' pi_ref(y'|x) exp(s(x, y'))``. At ``theta = 0`` it is one
    number per prompt (``-log Σ pi_ref``: 0 up to round-off), so chosen-minus-rejected
    differences, the margin, are exactly 0 there.

    Args:
        theta: ``[..., X, Y]`` (tabular) or ``[..., d]`` (with ``features``).
        log_pi_ref: ``[..., X, Y]``; ``-inf`` where ``pi_ref = 0``.
        features: ``None`` (tabular) or ``phi`` of shape ``[..., X, Y, d]``.

    Returns:
        ``[..., X, Y]`` (finite also where ``pi_ref = 0``, where the policy is 0 too).
    """
    if features is None:
        scores = theta.expand_as(log_pi_ref)
    else:
        scores = (features @ theta[..., None, :, None]).squeeze(-1)  # [..., X, Y]
    return scores - torch.logsumexp(log_pi_ref + scores, dim=-1, keepdim=True)


def policy_log_probs(
    theta: torch.Tensor, log_pi_ref: torch.Tensor, features: torch.Tensor | None = None
) -> torch.Tensor:
    """``log pi_theta(y|x) = log pi_ref(y|x) + z(x, y)`` (see :func:`policy_log_ratios`).

    The tabular policy is ``softmax(log pi_ref + theta)``, the log-linear one
    ``pi_ref · exp(phi · theta) / Z``; both equal ``pi_ref`` at ``theta = 0`` and keep its zeros.
    Shapes as in :func:`policy_log_ratios`.
    """
    return log_pi_ref + policy_log_ratios(theta, log_pi_ref, features)


def _preference_loss():
    # Imported lazily so that this module imports even while mi_bounds.preference is absent.
    from mi_bounds.preference import preference_loss

    return preference_loss


@dataclass(frozen=True)
class _Batch:
    """Several same-shape worlds stacked along a leading dimension ``B`` (float64 tensors)."""

    log_ref: torch.Tensor  # [B, X, Y]
    log_opt: torch.Tensor  # [B, X, Y]
    prompt_weights: torch.Tensor  # [B, X]
    reward: torch.Tensor  # [B, X, Y]
    features: torch.Tensor | None  # [B, X, Y, d]
    # Support of the pair distributions, flattened over worlds: pair n is (b[n], x[n], w[n], l[n]).
    b: torch.Tensor
    x: torch.Tensor
    w: torch.Tensor
    l: torch.Tensor
    prob: torch.Tensor  # [n_pairs]: P_b(x, w, l)
    offsets: tuple[int, ...]  # pairs of world b are prob[offsets[b]:offsets[b+1]]


def _as_table(value: Any, name: str, shape: tuple[int, ...] | None = None) -> NDArray[np.float64]:
    arr = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _log_optimal(world: WorldLike, i: int, shape: tuple[int, ...]) -> NDArray[np.float64]:
    """``log pi*`` of a world: its ``log_optimal_policy()`` if it has one (exact where ``pi*``
    underflows), else ``log`` of ``optimal_policy()``."""
    if hasattr(world, "log_optimal_policy"):
        log_opt = np.asarray(world.log_optimal_policy(), dtype=np.float64)
        if log_opt.shape != shape or np.any(np.isnan(log_opt)) or np.any(log_opt > 0):
            raise ValueError(f"worlds[{i}].log_optimal_policy() must be log-probabilities of "
                             f"shape {shape}")
        return log_opt
    return safe_log(_as_table(world.optimal_policy(), f"worlds[{i}].optimal_policy()", shape))


def _pair_table(world: WorldLike, pairs: Any, name: str) -> NDArray[np.float64]:
    pi_ref = np.asarray(world.pi_ref, dtype=np.float64)
    n_x, n_y = pi_ref.shape
    if isinstance(pairs, str):
        if not hasattr(world, "pair_distribution"):
            raise TypeError(f"{name}={pairs!r} needs a world with pair_distribution()")
        pairs = world.pair_distribution(pairs)
    raw = pairs.detach().cpu() if isinstance(pairs, torch.Tensor) else pairs
    itemsize = np.asarray(raw).dtype.itemsize if np.asarray(raw).dtype.kind == "f" else 8
    table = _as_table(raw, name, (n_x, n_y, n_y))
    if np.any(table < 0):
        raise ValueError(f"{name} must be non-negative probabilities")
    if abs(table.sum() - 1.0) > sum_tolerance(itemsize, table.size):  # follows the dtype
        raise ValueError(f"{name} must sum to 1 over (x, y_w, y_l), got {table.sum():.12g}")
    if itemsize < 8:  # normalised in a lower precision: renormalise in float64
        table = table / table.sum()
    mass = table.sum(2) + table.sum(1)  # [X, Y]: probability that y appears in a pair
    if np.any(mass[pi_ref <= 0] > 0):
        raise ValueError(f"{name} puts mass on a response with pi_ref = 0 (undefined log-ratio)")
    return table


def _stack(
    worlds: Sequence[WorldLike], pairs: Sequence[Any], features: Sequence[Any] | None
) -> _Batch:
    log_ref, log_opt, weights, rewards, feats = [], [], [], [], []
    bs, xs, ws, ls, probs, offsets = [], [], [], [], [], [0]
    shape = None
    for i, (world, pair) in enumerate(zip(worlds, pairs, strict=True)):
        pi_ref = _as_table(world.pi_ref, f"worlds[{i}].pi_ref")
        if pi_ref.ndim != 2:
            raise ValueError(f"worlds[{i}].pi_ref must have shape [X, Y], got {pi_ref.shape}")
        if shape is None:
            shape = pi_ref.shape
        elif pi_ref.shape != shape:
            raise ValueError(f"all worlds must have one shape {shape}; worlds[{i}]: {pi_ref.shape}")
        n_x, n_y = shape
        log_ref.append(safe_log(pi_ref))
        log_opt.append(_log_optimal(world, i, shape))
        weights.append(_as_table(world.prompt_weights, f"worlds[{i}].prompt_weights", (n_x,)))
        rewards.append(_as_table(world.reward, f"worlds[{i}].reward", shape))
        table = _pair_table(world, pair, "pairs" if len(worlds) == 1 else f"pairs[{i}]")
        x, w, l = np.nonzero(table)
        bs.append(np.full(x.shape, i))
        xs.append(x)
        ws.append(w)
        ls.append(l)
        probs.append(table[x, w, l])
        offsets.append(offsets[-1] + len(x))
        if features is not None:
            phi = _as_table(features[i], "features" if len(worlds) == 1 else f"features[{i}]")
            if phi.ndim != 3 or phi.shape[:2] != shape:
                raise ValueError(f"features must have shape [X, Y, d] = [{n_x}, {n_y}, d], "
                                 f"got {phi.shape}")
            if feats and phi.shape != feats[0].shape:
                raise ValueError("all feature tables must have one shape")
            feats.append(phi)

    def t(arrays: list) -> torch.Tensor:
        return torch.as_tensor(np.stack(arrays), dtype=_DTYPE)

    def idx(arrays: list) -> torch.Tensor:
        return torch.as_tensor(np.concatenate(arrays), dtype=torch.long)

    return _Batch(
        log_ref=t(log_ref), log_opt=t(log_opt), prompt_weights=t(weights), reward=t(rewards),
        features=None if features is None else t(feats),
        b=idx(bs), x=idx(xs), w=idx(ws), l=idx(ls),
        prob=torch.as_tensor(np.concatenate(probs), dtype=_DTYPE), offsets=tuple(offsets),
    )


def _pair_losses(
    kind: str, z: torch.Tensor, batch: _Batch, beta: float, params: Mapping[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses ``[n_pairs]`` and the chosen/rejected log-ratios on the pair support."""
    z_w = z[batch.b, batch.x, batch.w]
    z_l = z[batch.b, batch.x, batch.l]
    ref_w = batch.log_ref[batch.b, batch.x, batch.w]
    ref_l = batch.log_ref[batch.b, batch.x, batch.l]
    losses = _preference_loss()(
        kind, ref_w + z_w, ref_l + z_l, ref_w, ref_l, beta=beta, reduction="none", **params
    )
    return losses, z_w, z_l


def expected_loss(
    kind: str,
    theta: torch.Tensor,
    world: WorldLike,
    pairs: Any = "bradley_terry",
    *,
    features: Any = None,
    beta: float | None = None,
    **params: Any,
) -> torch.Tensor:
    """Exact expected preference loss ``Σ P(x, w, l) loss(...)`` at parameters ``theta``.

    Args:
        kind: a loss name of :data:`mi_bounds.preference.LOSSES`.
        theta: float64 tensor, ``[X, Y]`` (tabular) or ``[d]`` (with ``features``); autograd
            flows through it.
        world: see :class:`WorldLike`.
        pairs: a pair table ``[X, Y, Y]`` (P(x, chosen, rejected), summing to 1) or a name passed
            to ``world.pair_distribution``.
        features: ``None`` (tabular policy) or ``phi`` ``[X, Y, d]`` (log-linear policy).
        beta: the loss's beta; default ``world.beta``.
        **params: extra loss parameters, passed to ``preference_loss``.

    Returns:
        A 0-dim float64 tensor.
    """
    beta = check_positive(world.beta if beta is None else beta, "beta")
    batch = _stack([world], [pairs], None if features is None else [features])
    if not isinstance(theta, torch.Tensor):
        raise TypeError(f"theta must be a torch.Tensor, got {type(theta).__name__}")
    expected = tuple(batch.log_ref.shape[1:]) if features is None else (batch.features.shape[-1],)
    if tuple(theta.shape) != expected:
        raise ValueError(f"theta must have shape {list(expected)}, got {list(theta.shape)}")
    z = policy_log_ratios(theta.to(_DTYPE)[None], batch.log_ref, batch.features)
    losses, _, _ = _pair_losses(kind, z, batch, beta, params)
    return (batch.prob * losses).sum()


# --------------------------------------------------------------------------------------------
# Gradient descent
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def _metrics(
    z: torch.Tensor, z_w: torch.Tensor, z_l: torch.Tensor, batch: _Batch, beta: float
) -> dict[str, torch.Tensor]:
    """Exact per-world metrics (each ``[T, B]``) from the log-ratios ``z [T, B, X, Y]`` of ``T``
    steps and their values ``z_w``, ``z_l`` ``[T, n_pairs]`` on the pair support."""
    n_steps, n_worlds = z.shape[:2]
    p = batch.prob

    def per_world(values: torch.Tensor) -> torch.Tensor:  # Σ_pairs P · values, per world
        out = torch.zeros(n_steps, n_worlds, dtype=_DTYPE)
        return out.index_add_(1, batch.b, p * values)

    log_pi = batch.log_ref + z
    pi = log_pi.exp()
    support = pi > 0  # = (pi_ref > 0): both policy families keep pi_ref's zeros and only those

    def expected(values: torch.Tensor) -> torch.Tensor:  # E_x E_{y~pi} values, per world
        terms = torch.where(support, pi * values, torch.zeros_like(pi))
        return (batch.prompt_weights * terms.sum(-1)).sum(-1)

    def kl_to(**log_q_or_ratio: torch.Tensor) -> torch.Tensor:  # E_x KL(pi ‖ q), per world
        arrays = {k: v.numpy() for k, v in log_q_or_ratio.items()}
        per_prompt = np.asarray(kl_log(log_pi.numpy(), **arrays))  # [T, B, X]
        return (batch.prompt_weights * torch.from_numpy(per_prompt)).sum(-1)

    t_w, t_l = beta * z_w, beta * z_l
    return {
        "chosen_logps": per_world(batch.log_ref[batch.b, batch.x, batch.w] + z_w),
        "rejected_logps": per_world(batch.log_ref[batch.b, batch.x, batch.l] + z_l),
        "margin": per_world(t_w - t_l),
        "reward_accuracy": per_world((t_w > t_l).to(_DTYPE)),
        "kl_to_reference": kl_to(log_ratio=z),  # z = log pi - log pi_ref, exactly
        "expected_reward": expected(batch.reward),
        "kl_to_optimal": kl_to(log_q=batch.log_opt),
    }


def gradient_descent_many(
    worlds: Sequence[WorldLike],
    kind: str,
    *,
    pairs: Any = "bradley_terry",
    features: Sequence[Any] | None = None,
    lr: float | Sequence[float] = 0.1,
    steps: int = 200,
    beta: float | None = None,
    batch_size: int | None = None,
    seeds: int | Sequence[int] = 0,
    loss_params: Mapping[str, Any] | None = None,
) -> list[Trajectory]:
    """Run :func:`gradient_descent` on several same-shape worlds in one batched computation.

    ``pairs`` is one name/table for all worlds or a sequence (one per world); ``features`` is
    ``None`` or a sequence of ``[X, Y, d]`` tables of one shape; ``lr`` is one rate or one per
    world; ``seeds`` is one seed per world (an ``int`` s means ``s, s + 1, ...``). All worlds use
    one loss ``beta`` (default: the worlds' common ``beta``). Result ``i`` equals
    ``gradient_descent(worlds[i], ...)`` with that world's pairs, features, lr and seed (to
    float64 round-off).
    """
    worlds = list(worlds)
    if not worlds:
        raise ValueError("worlds must not be empty")
    n = len(worlds)
    if isinstance(pairs, str) or hasattr(pairs, "shape"):
        pairs = [pairs] * n
    if len(pairs) != n:
        raise ValueError(f"pairs must be one table/name or {n} of them, got {len(pairs)}")
    if features is not None and len(features) != n:
        raise ValueError(f"features must be None or {n} tables, got {len(features)}")
    if beta is None:
        betas = {float(w.beta) for w in worlds}
        if len(betas) != 1:
            raise ValueError("the worlds have different beta; pass the loss's beta explicitly")
        beta = betas.pop()
    beta = check_positive(beta, "beta")
    lrs = list(lr) if isinstance(lr, (list, tuple, np.ndarray)) and np.ndim(lr) > 0 else [lr] * n
    if len(lrs) != n:
        raise ValueError(f"lr must be one rate or {n} of them, got {len(lrs)}")
    lrs = [check_positive(v, "lr") for v in lrs]
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be None or an integer >= 1, got {batch_size!r}")
    seed_list = [int(seeds) + i for i in range(n)] if isinstance(seeds, (int, np.integer)) \
        else [int(s) for s in seeds]
    if len(seed_list) != n:
        raise ValueError(f"seeds must be one int or {n} of them, got {len(seed_list)}")
    params = dict(loss_params or {})

    batch = _stack(worlds, pairs, features)
    theta_shape = batch.log_ref.shape if batch.features is None else (n, batch.features.shape[-1])
    theta = torch.zeros(theta_shape, dtype=_DTYPE, requires_grad=True)
    lr_t = torch.tensor(lrs, dtype=_DTYPE).reshape((n,) + (1,) * (theta.ndim - 1))
    rngs = [np.random.default_rng(s) for s in seed_list]
    counts = [batch.offsets[i + 1] - batch.offsets[i] for i in range(n)]
    world_probs = [batch.prob[batch.offsets[i]:batch.offsets[i + 1]].numpy() for i in range(n)]

    diverged_at: list[int | None] = [None] * n
    stopped = torch.zeros(n, dtype=torch.bool)
    zs: list[torch.Tensor] = []  # z [B, X, Y] per step; the metrics are computed at the end
    exact_losses: list[torch.Tensor] = []
    for t in range(steps + 1):
        z = policy_log_ratios(theta, batch.log_ref, batch.features)
        losses, z_w, z_l = _pair_losses(kind, z, batch, beta, params)
        weighted = batch.prob * losses
        exact_losses.append(torch.zeros(n, dtype=_DTYPE).index_add(0, batch.b, weighted.detach()))
        zs.append(z.detach())
        if t == steps:
            break
        if batch_size is None:
            objective = weighted.sum()
        else:  # mean loss of batch_size pairs drawn from each world's P, summed over worlds
            picks = [
                batch.offsets[i] + rngs[i].choice(counts[i], size=batch_size,
                                                  p=world_probs[i] / world_probs[i].sum())
                for i in range(n)
            ]
            objective = losses[torch.as_tensor(np.concatenate(picks))].sum() / batch_size
        (grad,) = torch.autograd.grad(objective, theta)
        with torch.no_grad():
            new = theta - lr_t * grad
            flat = new.reshape(n, -1)
            bad = ~torch.isfinite(flat).all(1) | (flat.abs().amax(1) > _THETA_LIMIT)
            bad &= ~stopped
            if bool(bad.any()):
                for i in torch.nonzero(bad).flatten().tolist():
                    diverged_at[i] = t + 1  # stop this world here; its metrics from t+1 are NaN
                stopped |= bad
                lr_t[stopped] = 0.0
            if bool(stopped.any()):
                theta.copy_(torch.where(stopped.reshape(lr_t.shape), theta, new))
            else:
                theta.copy_(new)

    history: dict[str, list[torch.Tensor]] = {m: [] for m in METRICS if m != "loss"}
    for start in range(0, steps + 1, _METRIC_CHUNK):  # in chunks of steps, to bound memory
        z_chunk = torch.stack(zs[start:start + _METRIC_CHUNK])  # [T, B, X, Y]
        z_w = z_chunk[:, batch.b, batch.x, batch.w]
        z_l = z_chunk[:, batch.b, batch.x, batch.l]
        for name, value in _metrics(z_chunk, z_w, z_l, batch, beta).items():
            history[name].append(value)
    arrays = {m: torch.cat(v).T.numpy() for m, v in history.items()}  # each [B, steps + 1]
    arrays["loss"] = torch.stack(exact_losses, dim=1).numpy()
    for i, d in enumerate(diverged_at):
        if d is not None:
            for m in METRICS:
                arrays[m][i, d:] = np.nan
    final = theta.detach().numpy()
    return [
        Trajectory(
            kind=kind, beta=beta, lr=lrs[i], batch_size=batch_size,
            step=np.arange(steps + 1, dtype=np.int64),
            theta=final[i].copy(), diverged_at=diverged_at[i],
            **{m: arrays[m][i].copy() for m in METRICS},
        )
        for i in range(n)
    ]


def gradient_descent(
    world: WorldLike,
    kind: str,
    *,
    pairs: Any = "bradley_terry",
    features: Any = None,
    lr: float = 0.1,
    steps: int = 200,
    beta: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    loss_params: Mapping[str, Any] | None = None,
) -> Trajectory:
    """Train a policy from ``pi_ref`` by gradient descent on a preference loss; exact metrics.

    Full batch (``batch_size=None``): ``theta <- theta - lr · ∇ E_P[loss]``, the exact expected
    loss of the pair distribution ``P``. Mini-batch: each step draws ``batch_size`` pairs from
    ``P`` (with replacement, ``numpy.random.default_rng(seed)``) and descends their mean loss.

    Args:
        world: see :class:`WorldLike`.
        kind: a loss name of :data:`mi_bounds.preference.LOSSES` (``'dpo'``, ``'mio'``, ...).
        pairs: ``[X, Y, Y]`` table of ``P(x, chosen, rejected)`` or a name for
            ``world.pair_distribution`` (``'bradley_terry'`` or ``'base_labelled'``).
        features: ``None`` for the tabular policy (``theta [X, Y]``) or ``phi [X, Y, d]`` for the
            shared-feature log-linear policy (``theta [d]``).
        lr: learning rate (> 0).
        steps: number of updates; the trajectory has ``steps + 1`` entries.
        beta: the loss's beta; default ``world.beta``.
        batch_size: ``None`` (exact full batch) or pairs per step.
        seed: seed of the pair sampler (mini-batch only).
        loss_params: extra keyword parameters of the loss.

    Returns:
        A :class:`Trajectory`. Same arguments give identical arrays.
    """
    return gradient_descent_many(
        [world], kind, pairs=[pairs], features=None if features is None else [features], lr=lr,
        steps=steps, beta=beta, batch_size=batch_size, seeds=[seed], loss_params=loss_params,
    )[0]
