"""Claims C1, C2 and C4, each an exact computation that returns its numbers.

* :func:`claim_c1`: at ``T = r/beta`` the DV bound on ``KL(pi* ‖ pi_ref)`` is tight and the RLHF
  optimum equals ``beta E_x log Z(x)`` (random worlds, float64 round-off).
* :func:`claim_c2`: the base model caps RLHF: ``pi* = 0`` where ``pi_ref = 0``; the reward gap
  needed for ``pi*(y) ≥ ½`` is ``beta log((1 - p)/p)`` for ``pi_ref(y) = p``; and sampled
  on-policy REINFORCE (with the KL term) on a world whose right answer has a tiny ``pi_ref``.
* :func:`claim_c4`: the population optimum of each preference loss over the simplex (tabular
  policy, exact expected loss, L-BFGS to convergence), against ``pi*``.

C3 (the late-stage decline) lives in :mod:`experiments.claims_c3`. Every function is
deterministic (fixed seeds) and returns plain Python numbers and lists (JSON-ready).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mi_bounds.preference import LOSSES
from toy_models._threads import in_single_thread
from toy_models.optimum import population_optimum
from toy_models.world import CategoricalWorld

__all__ = [
    "C4_LOSSES",
    "claim_c1",
    "claim_c2",
    "claim_c4",
    "population_optimum",
    "reinforce_rlhf",
]


# --------------------------------------------------------------------------------------------
# C1: the DV bound is tight at T = r/beta, and J(pi*) = beta E log Z.
# --------------------------------------------------------------------------------------------




@in_single_thread
def claim_c1(
    *,
    n_worlds: int = 200,
    seed: int = 0,
    betas: Sequence[float] = (0.05, 0.1, 0.5, 1.0, 5.0),
    n_prompts: int = 4,
    n_responses: int = 6,
    zero_fraction: float = 0.2,
    shifts: Sequence[float] = (-3.0, 0.0, 3.0),
    n_eps: int = 41,
) -> dict:
    """C1 on ``n_worlds`` random worlds per beta (``CategoricalWorld.random``, seeds from ``seed``).

    For each world, with ``pi*`` its Gibbs policy:

    * ``dv_gap = |DV(r/beta + c; pi*, pi_ref) - E_x KL(pi* ‖ pi_ref)|`` for each shift ``c``;
    * ``j_gap = |J(pi*) - beta E_x log Z(x)|``;
    * ``j_dv_gap = |J(pi*) - beta (E_{pi*}[r/beta] - KL)|`` (J is beta times the DV value);
    * ``critic_gap``: the implicit critic of ``pi*`` minus ``(r - beta log Z)`` on supp(pi_ref).

    Also a tightness curve on the first world at ``beta = betas[0]``'s neighbour 0.5: the DV,
    NWJ and JS values at ``T = r/beta + eps·noise`` for ``eps`` in ``[-1, 1]`` (maximal at
    ``eps = 0``, where DV = KL).

    Returns:
        dict with ``max_dv_gap``, ``max_rel_dv_gap``, ``max_j_gap``, ``max_rel_j_gap``,
        ``max_j_dv_gap``, ``max_critic_gap``, ``n_worlds`` (total), per-beta maxima, and the
        curve ``{"eps", "dv", "nwj", "kl"}``.
    """
    per_beta = []
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 2**31 - 1, size=n_worlds)
    for beta in betas:
        dv_gap = rel_dv = j_gap = rel_j = j_dv = crit = 0.0
        for s in seeds:
            w = CategoricalWorld.random(int(s), n_prompts, n_responses, beta,
                                        zero_fraction=zero_fraction)
            p = w.optimal_policy()
            klv = w.kl_to_reference(p)
            for c in shifts:
                dv = w.bound_at("dv", w.reward / beta + c)
                dv_gap = max(dv_gap, abs(dv - klv))
                rel_dv = max(rel_dv, abs(dv - klv) / max(klv, 1e-300))
            j = w.rlhf_objective(p)
            blz = beta * float(w.prompt_weights @ w.log_partition())
            j_gap = max(j_gap, abs(j - blz))
            rel_j = max(rel_j, abs(j - blz) / max(abs(blz), 1e-300))
            e_t = float(w.prompt_weights @ (p * w.reward).sum(1)) / beta
            j_dv = max(j_dv, abs(j - beta * (e_t - klv)))
            s_ = w.pi_ref > 0
            t = w.implicit_critic(w.log_optimal_policy(), log=True)
            crit = max(crit, float(np.abs(t - (w.reward - beta * w.log_partition()[:, None]))[s_]
                                   .max()))
        per_beta.append({"beta": float(beta), "max_dv_gap": dv_gap, "max_rel_dv_gap": rel_dv,
                         "max_j_gap": j_gap, "max_rel_j_gap": rel_j, "max_j_dv_gap": j_dv,
                         "max_critic_gap": crit})

    # tightness curve: bounds at perturbed critics, one world
    w = CategoricalWorld.random(int(seeds[0]), n_prompts, n_responses, 0.5,
                                zero_fraction=zero_fraction)
    p = w.optimal_policy()
    noise = np.random.default_rng(seed + 1).standard_normal(w.pi_ref.shape)
    log_ratio = np.where(w.pi_ref > 0, w.reward / w.beta - w.log_partition()[:, None], 0.0)
    eps = np.linspace(-1.0, 1.0, n_eps)
    curve = {
        "eps": eps.tolist(),
        "dv": [w.bound_at("dv", log_ratio + e * noise) for e in eps],
        "nwj": [w.bound_at("nwj", log_ratio + 1.0 + e * noise) for e in eps],
        "kl": w.kl_to_reference(p),
    }
    keys = ("max_dv_gap", "max_rel_dv_gap", "max_j_gap", "max_rel_j_gap", "max_j_dv_gap",
            "max_critic_gap")
    out = {k: max(b[k] for b in per_beta) for k in keys}
    out.update(n_worlds=n_worlds * len(betas), n_prompts=n_prompts, n_responses=n_responses,
               zero_fraction=zero_fraction, per_beta=per_beta, curve=curve)
    return out


# --------------------------------------------------------------------------------------------
# C2: the base model caps what RLHF can reach.
# --------------------------------------------------------------------------------------------


def _needle_world(p_right: float, n_responses: int, beta: float, gap: float) -> CategoricalWorld:
    """One prompt; response 0 (the right answer) has ``pi_ref = p_right`` and reward ``gap``;
    the other responses share ``1 - p_right`` equally and have reward 0."""
    pi_ref = np.full(n_responses, (1.0 - p_right) / (n_responses - 1))
    pi_ref[0] = p_right
    reward = np.zeros(n_responses)
    reward[0] = gap
    return CategoricalWorld(np.ones(1), pi_ref[None], reward[None], beta)


def _gap_for_half(p_right: float, n_responses: int, beta: float) -> float:
    """The reward gap at which pi*(right) = ½, by bisection on the exact world (independent of
    the closed form)."""
    lo, hi = 0.0, 1.0
    while _needle_world(p_right, n_responses, beta, hi).optimal_policy()[0, 0] < 0.5:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _needle_world(p_right, n_responses, beta, mid).optimal_policy()[0, 0] < 0.5:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


def reinforce_rlhf(
    world: CategoricalWorld,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> dict:
    """Sampled on-policy RLHF: REINFORCE on the KL-regularised reward, tabular logits.

    Each step samples ``batch_size`` responses per prompt from the current policy (one prompt
    worlds are the intended use; every prompt is updated), scores each with
    ``a = r(x, y) - beta (log pi(y|x) - log pi_ref(y|x))`` (an unbiased REINFORCE signal for
    ``∇J``), subtracts a leave-one-out baseline and ascends
    ``mean_i (a_i - b_i) ∇ log pi(y_i|x)`` with step ``lr``. The logits start at
    ``log pi_ref`` (``-inf`` where ``pi_ref = 0``: those responses are never sampled).

    Returns:
        ``first_hit``: for each prompt, the first step (1-based) at which the response with the
        highest reward was sampled, or ``None``; ``hits``: how often it was sampled;
        ``first_half``: the first step after which the policy gave it probability ≥ ½;
        ``final_policy`` ``[X, Y]``; ``final_pi_best``, ``pi_star_best``; ``J_final``,
        ``J_star``, ``J_ref``.
    """
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore"):
        log_ref = np.log(world.pi_ref)
    theta = log_ref.copy()
    best = world.reward.argmax(1)
    first_hit: list[int | None] = [None] * world.n_prompts
    first_half: list[int | None] = [None] * world.n_prompts
    hits = np.zeros(world.n_prompts, dtype=np.int64)
    n = batch_size
    for step in range(1, steps + 1):
        m = theta.max(1, keepdims=True)
        log_pi = theta - m - np.log(np.exp(theta - m).sum(1, keepdims=True))
        pi = np.exp(log_pi)
        for x in range(world.n_prompts):
            ys = rng.choice(world.n_responses, size=n, p=pi[x] / pi[x].sum())
            found = int((ys == best[x]).sum())
            if found and first_hit[x] is None:
                first_hit[x] = step
            hits[x] += found
            if first_half[x] is None and pi[x, best[x]] >= 0.5:
                first_half[x] = step - 1
            a = world.reward[x, ys] - world.beta * (log_pi[x, ys] - log_ref[x, ys])
            adv = a - (a.sum() - a) / (n - 1)
            grad = np.bincount(ys, weights=adv, minlength=world.n_responses) / n
            grad -= adv.mean() * pi[x]  # Σ_i adv_i (e_{y_i} - pi) / n
            theta[x] += lr * grad
    m = theta.max(1, keepdims=True)
    final = np.exp(theta - m)
    final /= final.sum(1, keepdims=True)
    star = world.optimal_policy()
    rows = np.arange(world.n_prompts)
    return {
        "first_hit": first_hit,
        "hits": hits.tolist(),
        "first_half": first_half,
        "final_policy": final.tolist(),
        "final_pi_best": final[rows, best].tolist(),
        "pi_star_best": star[rows, best].tolist(),
        "J_final": world.rlhf_objective(final),
        "J_star": world.rlhf_objective(star),
        "J_ref": world.rlhf_objective(world.pi_ref),
    }


@in_single_thread
def claim_c2(
    *,
    seed: int = 0,
    n_support_worlds: int = 100,
    betas: Sequence[float] = (0.1, 0.5, 1.0),
    p_grid: Sequence[float] = tuple(10.0 ** -np.arange(1, 13)),
    n_responses: int = 8,
    rl_p: Sequence[float] = (1e-2, 1e-4, 1e-6, 1e-8),
    rl_beta: float = 0.05,
    rl_gap: float = 1.0,
    rl_steps: int = 2000,
    rl_batch: int = 64,
    rl_lr: float = 10.0,
    rl_seeds: Sequence[int] = (0, 1, 2, 3, 4),
) -> dict:
    """C2: support, reward-gap curve, and sampled REINFORCE on a needle-in-a-haystack world.

    1. Support: on ``n_support_worlds`` random worlds with 30 % of ``pi_ref`` cells zero and a
       reward of ``+1000`` put on exactly those cells, ``pi*`` there is exactly 0 (reported:
       the number of such cells and the largest ``pi*`` on them).
    2. Gap curve: for ``pi_ref(right) = p`` (the rest uniform, reward 0), the gap needed for
       ``pi*(right) ≥ ½``, by bisection on the exact world, against ``beta log((1-p)/p)``.
    3. REINFORCE (:func:`reinforce_rlhf`) on the needle world with ``pi_ref(right) = p`` for
       ``p`` in ``rl_p``, reward gap ``rl_gap``, ``beta = rl_beta``: the step of the first
       sample of the right answer (``None``: never in ``rl_steps·rl_batch`` samples), where
       the policy ends, and ``pi*(right)``; ``expected_first_hit = 1/(1-(1-p)^batch)`` is the
       mean of the geometric first-hit time while the policy stays at ``pi_ref``.
    """
    rng = np.random.default_rng(seed)
    n_cells = 0
    max_pi = 0.0
    for s in rng.integers(0, 2**31 - 1, size=n_support_worlds):
        w0 = CategoricalWorld.random(int(s), 3, 6, 0.1, zero_fraction=0.3)
        zero = w0.pi_ref == 0
        reward = np.where(zero, 1000.0, w0.reward)
        w = CategoricalWorld(w0.prompt_weights, w0.pi_ref, reward, 0.1)
        p = w.optimal_policy()
        n_cells += int(zero.sum())
        if zero.any():
            max_pi = max(max_pi, float(p[zero].max()))
    support = {"n_worlds": n_support_worlds, "n_zero_cells": n_cells,
               "max_pi_star_on_zero_cells": max_pi, "reward_on_zero_cells": 1000.0}

    curve = {"p": [float(v) for v in p_grid], "betas": [float(b) for b in betas],
             "gap_numeric": [], "gap_closed_form": []}
    rel_err = 0.0
    for beta in betas:
        num = [_gap_for_half(float(p), n_responses, beta) for p in p_grid]
        closed = [beta * math.log((1 - p) / p) for p in p_grid]
        rel_err = max(rel_err, max(abs(a - b) / b for a, b in zip(num, closed, strict=True)))
        curve["gap_numeric"].append(num)
        curve["gap_closed_form"].append(closed)
    curve["max_rel_err"] = rel_err

    runs = []
    for p in rl_p:
        world = _needle_world(float(p), n_responses, rl_beta, rl_gap)
        rows = []
        for s in rl_seeds:
            res = reinforce_rlhf(world, steps=rl_steps, batch_size=rl_batch, lr=rl_lr, seed=s)
            rows.append({"seed": int(s), "first_hit": res["first_hit"][0],
                         "hits": res["hits"][0], "first_half": res["first_half"][0],
                         "final_pi_right": res["final_pi_best"][0],
                         "J_final": res["J_final"]})
            pi_star, j_star, j_ref = res["pi_star_best"][0], res["J_star"], res["J_ref"]
        runs.append({
            "p_right": float(p),
            "pi_star_right": pi_star,
            "J_star": j_star,
            "J_ref": j_ref,
            "expected_first_hit": 1.0 / -math.expm1(rl_batch * math.log1p(-float(p))),
            "runs": rows,
        })
    reinforce = {"beta": rl_beta, "gap": rl_gap, "steps": rl_steps, "batch": rl_batch,
                 "lr": rl_lr, "n_responses": n_responses, "results": runs}
    return {"support": support, "gap_curve": curve, "reinforce": reinforce}


# --------------------------------------------------------------------------------------------
# C4: population optima of the preference losses.
# --------------------------------------------------------------------------------------------

#: Losses compared in C4, with the parameters used (TRL's defaults where TRL has one; exo_pair
#: needs label_smoothing > 0 and robust is shown with a 10 % flip rate). ``nca_pair`` is ``mio``
#: and ``infonce`` with one negative is ``dpo - log 2``, so neither is repeated.
C4_LOSSES: dict[str, dict] = {
    "dpo": {},
    "mio": {},
    "bco_pair": {},
    "nwj": {},
    "ipo": {},
    "robust": {"label_smoothing": 0.1},
    "exo_pair": {"label_smoothing": 1e-3},
    "sppo_hard": {},
    "apo_zero": {},
    "apo_down": {},
    "discopop": {},
    "hinge": {},
}


def claim_c4(
    *,
    seed: int = 0,
    n_prompts: int = 2,
    n_responses: int = 5,
    reward_scale: float = 1.0,
    betas: Sequence[float] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
    losses: Sequence[str] | None = None,
    pairs: Sequence[str] = ("bradley_terry",),
) -> dict:
    """C4: for each beta and loss, the exact population optimum on one random world.

    The world is ``CategoricalWorld.random(seed, n_prompts, n_responses, beta,
    reward_scale=reward_scale)`` (the same tables for every beta). Also reported, per beta:
    ``pi*``'s KL to the reference and expected reward, and for ``mio`` the *unconstrained*
    JS-optimal critic ``T_y = log(c_y / m_y)`` (``c`` = chosen marginal, ``m = ½(c + d)``,
    ``d`` = rejected marginal of the pair distribution), whose policy
    ``pi ∝ pi_ref (c/m)^{1/beta}`` would be MIO's optimum if it were normalised.
    """
    losses = list(losses) if losses is not None else list(C4_LOSSES)
    unknown = [k for k in losses if k not in LOSSES]
    if unknown:
        raise ValueError(f"unknown losses {unknown}; valid: {', '.join(LOSSES)}")
    results = []
    for pair_kind in pairs:
        for beta in betas:
            w = CategoricalWorld.random(seed, n_prompts, n_responses, beta,
                                        reward_scale=reward_scale)
            star = w.optimal_policy()
            table = w.pair_distribution(pair_kind)
            c, dd = table.sum(2), table.sum(1)  # chosen / rejected marginals [X, Y]
            m = 0.5 * (c + dd)
            with np.errstate(divide="ignore", invalid="ignore"):
                mio_free = w.pi_ref * (c / m) ** (1.0 / beta)
            row = {
                "pairs": pair_kind,
                "beta": float(beta),
                "pi_star_kl_to_reference": w.kl_to_reference(star),
                "pi_star_expected_reward": w.expected_reward(star),
                "mio_unconstrained_mass": (mio_free.sum(1)).tolist(),
                "losses": {},
            }
            for kind in losses:
                res = population_optimum(w, kind, pairs=pair_kind,
                                         params=C4_LOSSES.get(kind, {}))
                row["losses"][kind] = res
            results.append(row)
    return {"seed": seed, "n_prompts": n_prompts, "n_responses": n_responses,
            "reward_scale": reward_scale, "results": results}
