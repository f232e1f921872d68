"""Audit a preference loss: what it optimises, what it converges to, and whether it declines.

``mi-bounds audit LOSS`` (docs/THEORY.md, "Auditing a loss"). LOSS is a built-in name, a
:func:`mi_bounds.preference.register_loss` name, ``FILE.py:FUNCTION`` or ``module:function``.
Every finding is computed here, exactly, in float64, and the report
(:mod:`toy_models.audit_report`) prints each one beside the numbers it comes from. Write ``T_w =
β(log π(y_w) - log π_ref(y_w))`` and ``T_l`` likewise (the implicit critic); the loss is
evaluated at reference log-probabilities ``log π_ref = REFERENCE_LOGP`` with ``log π = log π_ref
+ T/β``.

1. **Invariances** (:func:`invariances`): ``L(T_w + s, T_l + s) = L(T_w, T_l)`` on random
   points and shifts (then the loss sees the margin ``T_w - T_l`` alone, and nothing in it
   resists both likelihoods falling together); ``L`` unchanged when policy and reference
   log-probabilities move together (a function of the implicit critic alone); the derivative of
   ``L`` along a joint fall ``T_w = T_l = t``; the chosen term's fixed points, the roots of
   ``∂L/∂T_w`` in ``T_w`` for several ``T_l`` (one root, the same for every ``T_l``: a fixed
   target of the chosen log-ratio).
2. **Gradient weights** (:func:`gradient_fields`): ``∂L/∂T_w`` and ``∂L/∂T_l`` on a grid.
3. **MI reading** (:func:`mi_reading`): the least-squares fit ``L ≈ a - s·B(T_w, T_l)`` for
   each bound ``B`` of :mod:`mi_bounds.bounds` (DV, NWJ, JS, InfoNCE_2) at ``P = δ_w`` and
   ``Q = ½(δ_w + δ_l)`` or ``Q = δ_l``, evaluated by the library's own bound functions; a fit
   with ``s > 0`` and a residual at round-off is a reading ``L = a - s·B``.
4. **Population optimum** (:func:`population_optima`): the exact minimiser over the simplex of
   the expected loss under Bradley–Terry pairs (:func:`toy_models.optimum.population_optimum`,
   as claim C4) on random worlds, and ``E_x KL(π ‖ π*)``; and whether the loss keeps
   ``π = 0`` where ``π_ref = 0``: at the optimum, the derivative of the expected loss when mass
   ``ε`` moves onto a response the base model never produces (no pair contains it), per prompt
   and one-sided (``-Σ_y ∂L/∂log π(y|x)`` for a smooth loss) — positive: the loss resists
   (zeros kept);
   zero: indifferent (the zero is kept only by a policy parameterised relative to ``π_ref``);
   negative: the loss moves mass onto them.
5. **Exact dynamics** (:func:`dynamics`): full-batch gradient descent in the shared-feature
   world of :mod:`toy_models.displacement` beside the comparators, the decline verdict of
   :func:`mi_bounds.decline.decline_shape` and the matched comparisons (chosen change where
   each run first reaches the reference run's final margin, KL and reward accuracy).
6. Optionally (``--lm``) the ``cpu-tiny`` small-LM run with the loss beside the comparators.

The audit lives in ``toy_models`` (not in ``mi_bounds.decline``) because it needs the exact
worlds, and the library never imports ``toy_models``; ``mi-bounds audit`` loads it on demand.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mi_bounds.bounds import dv_bound, infonce_bound_from_negatives, js_bound, nwj_bound
from mi_bounds.preference import (
    get_loss,
    preference_loss,
    register_loss,
    unregister_loss,
)
from toy_models.displacement import displacement_world, matched_comparison
from toy_models.optimum import population_optimum
from toy_models.oracle import kl_log
from toy_models.world import CategoricalWorld

__all__ = [
    "AUDIT_PARAMS",
    "audit",
    "dynamics",
    "gradient_fields",
    "invariances",
    "main",
    "mi_reading",
    "population_optima",
]

#: Reference log-probability (nats) at which the loss is evaluated: ``log π_ref(y) = -10``.
REFERENCE_LOGP = -10.0
#: Parameters the audit passes to built-in losses that need one (exo_pair: TRL requires ε > 0).
AUDIT_PARAMS: Mapping[str, Mapping[str, object]] = {"exo_pair": {"label_smoothing": 1e-3}}
#: Relative tolerance of "equal" in float64 (invariances, readings, fixed points).
TOL = 1e-8

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------
# The loss as a function of the implicit critic.
# --------------------------------------------------------------------------------------------


def _params(kind: str, params: Mapping[str, object] | None) -> dict[str, object]:
    return {**AUDIT_PARAMS.get(kind, {}), **(params or {})}


def _call(kind: str, pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor,
          beta: float, params: Mapping[str, object]) -> torch.Tensor:
    """Per-pair losses; a loss with an NLL term on the chosen response gets ``chosen_logps=pc``
    (as the align stage passes it)."""
    kw = dict(params)
    if "chosen_logps" in get_loss(kind).params:
        kw["chosen_logps"] = pc
    return preference_loss(kind, pc, pr, rc, rr, beta=beta, reduction="none", **kw)


def critic_loss(kind: str, beta: float, params: Mapping[str, object] | None = None,
                ref: float = REFERENCE_LOGP) -> Fn:
    """``L(T_w, T_l)`` at reference log-probabilities ``ref`` (float64 tensors, any shape)."""
    kw = _params(kind, params)

    def fn(t_w: torch.Tensor, t_l: torch.Tensor) -> torch.Tensor:
        rc = torch.full_like(t_w, ref)
        return _call(kind, rc + t_w / beta, rc + t_l / beta, rc, rc.clone(), beta, kw)

    return fn


def _grads(fn: Fn, t_w: torch.Tensor, t_l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``∂L/∂T_w``, ``∂L/∂T_l`` pointwise (each pair's loss depends on its own pair only)."""
    a = t_w.detach().clone().requires_grad_(True)
    b = t_l.detach().clone().requires_grad_(True)
    g_w, g_l = torch.autograd.grad(fn(a, b).sum(), (a, b), allow_unused=True)
    zero = torch.zeros_like(a)
    return (zero if g_w is None else g_w.detach()), (zero if g_l is None else g_l.detach())


def _rel_dev(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / (1.0 + b.abs())).max())


def _critic_deviation(kind: str, beta: float, params: Mapping[str, object], t_w: torch.Tensor,
                      t_l: torch.Tensor, s: torch.Tensor) -> float:
    """Largest relative change of the loss when policy and reference log-probabilities move
    together by ``s`` nats (the implicit critic unchanged)."""
    rc = torch.full_like(t_w, REFERENCE_LOGP)
    pc, pr = rc + t_w / beta, rc + t_l / beta
    with torch.no_grad():
        return _rel_dev(_call(kind, pc + s, pr + s, rc + s, rc + s, beta, params),
                        _call(kind, pc, pr, rc, rc.clone(), beta, params))


# --------------------------------------------------------------------------------------------
# 1. Invariances and the chosen term's fixed point.
# --------------------------------------------------------------------------------------------


def _roots(fn: Fn, t_l: float, lo: float = -12.0, hi: float = 12.0, n: int = 2401
           ) -> list[dict[str, Any]]:
    """Roots of ``∂L/∂T_w`` in ``T_w ∈ [lo, hi]`` at fixed ``T_l``: sign changes on a grid of
    ``n`` points refined by 60 bisections; each with the sign of the derivative below it
    (``-`` then ``+``: an attracting target for gradient descent)."""
    grid = torch.linspace(lo, hi, n, dtype=torch.float64)
    g, _ = _grads(fn, grid, torch.full_like(grid, t_l))
    s = torch.sign(g)
    out = []
    for i in torch.nonzero(s[:-1] * s[1:] < 0).flatten().tolist():
        a, b = float(grid[i]), float(grid[i + 1])
        ga = float(g[i])
        for _ in range(60):
            m = 0.5 * (a + b)
            gm = float(_grads(fn, torch.tensor([m], dtype=torch.float64),
                              torch.tensor([t_l], dtype=torch.float64))[0][0])
            if (gm < 0) == (ga < 0):
                a, ga = m, gm
            else:
                b = m
        out.append({"t_w": 0.5 * (a + b), "attracting": bool(float(g[i]) < 0)})
    return out


def _critic_points(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` random critic points ``T_w, T_l ~ U(-3, 3)`` and shifts ``s ~ U(-2, 2)`` (float64,
    seeded): the points every check of the audit is evaluated on."""
    g = torch.Generator().manual_seed(seed)
    t_w = torch.rand(n, generator=g, dtype=torch.float64) * 6 - 3
    t_l = torch.rand(n, generator=g, dtype=torch.float64) * 6 - 3
    s = torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2
    return t_w, t_l, s


def invariances(kind: str, *, beta: float = 0.1, params: Mapping[str, object] | None = None,
                seed: int = 0, n: int = 256) -> dict[str, Any]:
    """Does the loss see the margin alone, the implicit critic alone, each of T_w and T_l?

    On ``n`` random points ``T_w, T_l ~ U(-3, 3)`` with shifts ``s ~ U(-2, 2)``: the largest
    relative change of ``L`` under ``(T_w, T_l) → (T_w + s, T_l + s)`` (``margin_deviation``)
    and under moving policy and reference log-probabilities together by ``s`` nats
    (``critic_deviation``); the largest ``|∂L/∂T_w|``, ``|∂L/∂T_l|``; the derivative of
    ``L`` along a joint fall, ``-(∂L/∂T_w + ∂L/∂T_l)`` at ``T_w = T_l = t`` for
    ``t ∈ {-2, -1, 0, 1, 2}`` (positive: falling together raises the loss, i.e. the loss
    resists it); and the roots of ``∂L/∂T_w`` for ``T_l ∈ {-2, -1, 0, 1, 2}``.
    """
    kw = _params(kind, params)
    fn = critic_loss(kind, beta, kw)
    t_w, t_l, s = _critic_points(n, seed)
    with torch.no_grad():
        base = fn(t_w, t_l)
        margin_dev = _rel_dev(fn(t_w + s, t_l + s), base)
        critic_dev = _critic_deviation(kind, beta, kw, t_w, t_l, s)
    g_w, g_l = _grads(fn, t_w, t_l)
    diag = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    d_w, d_l = _grads(fn, diag, diag)
    scale = float(torch.maximum(g_w.abs(), g_l.abs()).max()) or 1.0
    roots = {float(t): _roots(fn, float(t)) for t in diag}
    fixed = None
    single = [r[0]["t_w"] for r in roots.values() if len(r) == 1]
    if len(single) == len(roots) and max(single) - min(single) <= 1e-6 * (1 + abs(single[0])):
        fixed = {"t_w": float(np.mean(single)),
                 "attracting": all(r[0]["attracting"] for r in roots.values())}
    return {
        "points": n,
        "margin_deviation": margin_dev,
        "depends_on_margin_only": margin_dev <= TOL,
        "critic_deviation": critic_dev,
        "depends_on_critic_only": critic_dev <= TOL,
        "max_abs_dL_dTw": float(g_w.abs().max()),
        "max_abs_dL_dTl": float(g_l.abs().max()),
        "depends_on_T_w": float(g_w.abs().max()) > TOL * scale,
        "depends_on_T_l": float(g_l.abs().max()) > TOL * scale,
        "joint_fall": {"t": diag.tolist(), "dL_ds": (-(d_w + d_l)).tolist()},
        "resists_joint_fall_somewhere": bool((-(d_w + d_l) > TOL * scale).any()),
        "chosen_roots": {str(k): v for k, v in roots.items()},
        "chosen_fixed_point": fixed,
    }


# --------------------------------------------------------------------------------------------
# 2. Gradient weights on a grid.
# --------------------------------------------------------------------------------------------


def gradient_fields(kind: str, *, beta: float = 0.1, params: Mapping[str, object] | None = None,
                    lim: float = 4.0, n: int = 81) -> dict[str, Any]:
    """``∂L/∂T_w`` and ``∂L/∂T_l`` on an ``n × n`` grid of ``[-lim, lim]²`` (rows: ``T_l``,
    columns: ``T_w``), and their values at the origin."""
    fn = critic_loss(kind, beta, params)
    axis = torch.linspace(-lim, lim, n, dtype=torch.float64)
    tl, tw = torch.meshgrid(axis, axis, indexing="ij")
    g_w, g_l = _grads(fn, tw.reshape(-1), tl.reshape(-1))
    o_w, o_l = _grads(fn, torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    return {"axis": axis.tolist(), "dL_dTw": g_w.reshape(n, n).tolist(),
            "dL_dTl": g_l.reshape(n, n).tolist(),
            "at_origin": {"dL_dTw": float(o_w[0]), "dL_dTl": float(o_l[0])}}


# --------------------------------------------------------------------------------------------
# 3. The MI reading.
# --------------------------------------------------------------------------------------------

_MIX = "½(δ_w + δ_l)"
_REJ = "δ_l"


def _bound_values(t_w: torch.Tensor, t_l: torch.Tensor) -> dict[tuple[str, str], torch.Tensor]:
    """Each bound of the family at ``P = δ_w`` and ``Q = ½(δ_w + δ_l)`` or ``δ_l``, per point,
    by the library's bound functions (the exact expectations over the one-pair supports)."""
    pos = t_w.unsqueeze(-1)  # [N, 1]: E_P over δ_w
    mix = torch.stack([t_w, t_l], -1)  # [N, 2] with weights ½, ½
    half = torch.full((2,), 0.5, dtype=torch.float64)
    rej = t_l.unsqueeze(-1)
    return {
        ("DV", _MIX): dv_bound(pos, mix, neg_weight=half),
        ("DV", _REJ): dv_bound(pos, rej),
        ("NWJ", _MIX): nwj_bound(pos, mix, neg_weight=half),
        ("NWJ", _REJ): nwj_bound(pos, rej),
        ("JS", _MIX): js_bound(pos, mix, neg_weight=half),
        ("JS", _REJ): js_bound(pos, rej),
        ("InfoNCE_2", _REJ + " (the chosen one in the denominator)"):
            infonce_bound_from_negatives(pos, rej.unsqueeze(-1)),
    }


def mi_reading(kind: str, *, beta: float = 0.1, params: Mapping[str, object] | None = None,
               seed: int = 1, n: int = 400) -> dict[str, Any]:
    """Fit ``L ≈ a - s·B`` for every bound ``B`` of the family on ``n`` random critic points
    ``T_w, T_l ~ U(-3, 3)`` (least squares); a fit with ``s > 0`` and a largest residual within
    ``1e-8·(1 + max|L|)`` is a reading. A loss that is not a function of the implicit critic
    alone (``critic_deviation`` of :func:`invariances` above round-off) has none."""
    kw = _params(kind, params)
    fn = critic_loss(kind, beta, kw)
    t_w, t_l, s = _critic_points(n, seed)
    with torch.no_grad():
        loss = fn(t_w, t_l)
        critic_only = _critic_deviation(kind, beta, kw, t_w, t_l, s) <= TOL
        tol = 1e-8 * (1.0 + float(loss.abs().max()))
        rows = []
        for (bound, q), b in _bound_values(t_w, t_l).items():
            design = torch.stack([torch.ones_like(b), -b], -1)
            coef = torch.linalg.lstsq(design, loss.unsqueeze(-1)).solution.squeeze(-1)
            resid = float((design @ coef - loss).abs().max())
            a, s = float(coef[0]), float(coef[1])
            rows.append({"bound": bound, "P": "δ_w", "Q": q, "constant": a, "scale": s,
                         "max_residual": resid,
                         "fits": bool(resid <= tol and s > 1e-6 and critic_only)})
    fits = [r for r in rows if r["fits"]]
    return {"points": n, "tolerance": tol, "critic_only": critic_only,
            "candidates": rows, "readings": fits}


# --------------------------------------------------------------------------------------------
# 4. Population optimum and the zeros of π_ref.
# --------------------------------------------------------------------------------------------


def _zero_mass_derivative(world: CategoricalWorld, kind: str, policy: np.ndarray,
                          params: Mapping[str, object], eps: float = 1e-6) -> list[float]:
    """Per prompt, the one-sided ``dL/dε`` at ``policy``: the change of the expected loss when
    mass ``ε`` moves (proportionally from every response, ``log π → log π + log(1 - ε)``) onto
    a response that no pair contains, as one with ``π_ref = 0``; a forward difference of step
    ``eps``, so that it is the one-sided derivative also where the loss has a kink (for a
    smooth loss it is ``-Σ_y ∂L/∂log π(y|x)``)."""
    table = world.pair_distribution("bradley_terry")
    xs, ws, ls = np.nonzero(table)
    prob = torch.tensor(table[xs, ws, ls])
    log_ref = torch.tensor(np.log(world.pi_ref))
    log_pi = torch.tensor(np.log(np.maximum(np.asarray(policy), 1e-300)))

    def value(lp: torch.Tensor) -> float:
        with torch.no_grad():
            return float((prob * _call(kind, lp[xs, ws], lp[xs, ls], log_ref[xs, ws],
                                       log_ref[xs, ls], world.beta, params)).sum())

    v0 = value(log_pi)
    out = []
    for x in range(log_pi.shape[0]):
        moved = log_pi.clone()
        moved[x] += math.log1p(-eps)
        out.append((value(moved) - v0) / eps)
    return out


def _expected_loss(world: CategoricalWorld, kind: str, params: Mapping[str, object]
                   ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``theta [X, Y] -> E_{(x,w,l)~BT}[loss]`` for the tabular policy ``softmax(theta)``."""
    table = world.pair_distribution("bradley_terry")
    xs, ws, ls = np.nonzero(table)
    prob = torch.tensor(table[xs, ws, ls])
    log_ref = torch.tensor(np.log(world.pi_ref))

    def value(theta: torch.Tensor) -> torch.Tensor:
        log_pi = torch.log_softmax(theta, -1)
        return (prob * _call(kind, log_pi[xs, ws], log_pi[xs, ls], log_ref[xs, ws],
                             log_ref[xs, ls], world.beta, params)).sum()

    return value


def _steepest(value: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, *,
              n_random: int = 32, h: float = 1e-6, seed: int = 0) -> tuple[float, torch.Tensor]:
    """The smallest one-sided directional derivative of ``value`` at ``theta`` over every ±
    coordinate direction and ``n_random`` random unit directions (forward differences of step
    ``h``), and its direction: ≥ 0 (to round-off) means no tested direction descends, as at a
    minimum on a kink, where the gradient need not vanish."""
    n = theta.numel()
    eye = torch.eye(n, dtype=torch.float64)
    rand = torch.randn(n_random, n, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)
    dirs = torch.cat([eye, -eye, rand / rand.norm(dim=1, keepdim=True)])
    with torch.no_grad():
        v0 = float(value(theta))
        slopes = [(float(value(theta + h * d.reshape(theta.shape))) - v0) / h for d in dirs]
    i = int(np.argmin(slopes))
    return slopes[i], dirs[i].reshape(theta.shape)


def _polish(world: CategoricalWorld, kind: str, policy: np.ndarray,
            params: Mapping[str, object], rounds: int = 20) -> tuple[np.ndarray, float, int]:
    """Continue a minimisation that stopped on a kink (a gradient above tolerance): while a
    tested direction descends (:func:`_steepest` below −1e-6), step along it (the best of
    steps 1, 0.1, …, 1e-6) and run L-BFGS-B again. Returns the policy, the smallest
    directional derivative there and the number of escapes."""
    from scipy.optimize import minimize

    value = _expected_loss(world, kind, params)
    theta = torch.tensor(np.log(np.maximum(np.asarray(policy), 1e-300)))
    shape = tuple(theta.shape)

    def value_and_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
        t = torch.tensor(flat.reshape(shape), requires_grad=True)
        v = value(t)
        (g,) = torch.autograd.grad(v, t)
        return float(v.detach()), g.numpy().ravel().copy()

    escapes = 0
    slope, d = _steepest(value, theta)
    while slope < -1e-6 and escapes < rounds:
        with torch.no_grad():
            v0 = float(value(theta))
            trials = [(float(value(theta + s * d)), s) for s in 10.0 ** -np.arange(7)]
        best, step = min(trials)
        if best >= v0:
            break
        theta = theta + step * d
        opt = minimize(value_and_grad, theta.numpy().ravel(), jac=True, method="L-BFGS-B",
                       options={"maxiter": 2000, "gtol": 1e-12, "ftol": 1e-300})
        theta = torch.tensor(opt.x.reshape(shape))
        escapes += 1
        slope, d = _steepest(value, theta)
    pi = torch.softmax(theta, -1).numpy()
    return pi, slope, escapes


def population_optima(kind: str, *, beta: float = 0.1, worlds: int = 5, n_prompts: int = 2,
                      n_responses: int = 5, params: Mapping[str, object] | None = None
                      ) -> dict[str, Any]:
    """The exact population optimum under Bradley–Terry pairs on ``worlds`` random worlds
    (``CategoricalWorld.random(seed, n_prompts, n_responses, beta)``, seeds 0, 1, ...; the
    sizes of claim C4), its ``E_x KL(π ‖ π*)`` and the zero-mass derivative per prompt. Where
    the optimiser stops with a gradient above its tolerance (a loss with a kink), the smallest
    minimisation continues past the kink (:func:`_polish`) and the smallest directional
    derivative at its end says whether it is a minimum."""
    kw = _params(kind, params)
    name = _runnable(kind, kw)
    rows = []
    try:
        for seed in range(worlds):
            w = CategoricalWorld.random(seed, n_prompts, n_responses, beta)
            res = population_optimum(w, name)
            policy, slope, escapes = np.asarray(res["policy"]), None, 0
            if not res["converged"]:  # stopped on a kink: continue past it, check no descent
                policy, slope, escapes = _polish(w, kind, policy, kw)
                log_pi = np.log(np.maximum(policy, 1e-300))
                res = {**res, "kl_to_optimal": float(w.prompt_weights @ kl_log(
                    log_pi, w.log_optimal_policy())), "kl_to_reference": float(
                    w.prompt_weights @ kl_log(log_pi, np.log(w.pi_ref)))}
            dz = _zero_mass_derivative(w, kind, policy, kw)
            rows.append({"seed": seed, "kl_to_pi_star": res["kl_to_optimal"],
                         "min_directional_derivative": slope, "kink_escapes": escapes,
                         "converged": res["converged"], "at_boundary": res["at_boundary"],
                         "grad_norm": res["grad_norm"], "loss": res["loss"],
                         "pi_star_kl_to_reference": w.kl_to_reference(w.optimal_policy()),
                         "kl_to_reference": res["kl_to_reference"],
                         "zero_mass_dL_deps": dz})
    finally:
        _release(name, kind)
    kls = [r["kl_to_pi_star"] for r in rows]
    dzs = np.array([d for r in rows for d in r["zero_mass_dL_deps"]])
    scale = 1e-7 * max(1.0, float(np.abs(dzs).max()))
    resists = int((dzs > scale).sum())
    zeros = ("kept: the loss resists mass on them" if resists == dzs.size else
             "moved: the loss lowers by putting mass on them" if (dzs < -scale).any() else
             "indifferent: the loss does not see them" if resists == 0 else
             f"partly kept: the loss resists mass on them at {resists} of {dzs.size} prompts "
             f"and does not see them at the others")
    return {"worlds": rows, "beta": beta, "n_prompts": n_prompts, "n_responses": n_responses,
            "mean_kl_to_pi_star": float(np.mean(kls)), "max_kl_to_pi_star": float(np.max(kls)),
            "all_converged": all(r["converged"] for r in rows),
            "all_minima": all(r["converged"] or r["min_directional_derivative"] >= -1e-6
                              for r in rows),
            "zero_mass_dL_deps_range": [float(dzs.min()), float(dzs.max())],
            "zeros_of_pi_ref": zeros, "keeps_zeros": zeros.startswith("kept")}


def _runnable(kind: str, params: Mapping[str, object]) -> str:
    """A name the toy code can run by name alone: ``kind`` itself, or (for a loss that needs
    parameters or ``chosen_logps``) a temporary registered wrapper ``audit_<kind>``."""
    if not params and "chosen_logps" not in get_loss(kind).params:
        return kind
    name = f"audit_{kind}"

    def wrapped(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor,
                beta: float) -> torch.Tensor:
        return _call(kind, pc, pr, rc, rr, beta, params)

    register_loss(name, wrapped, source=f"{kind} with {dict(params)}", replace=True)
    return name


def _release(name: str, kind: str) -> None:
    if name != kind:
        unregister_loss(name)


# --------------------------------------------------------------------------------------------
# 5. Exact dynamics in the shared-feature world.
# --------------------------------------------------------------------------------------------


def dynamics(kind: str, against: Sequence[str], *, params: Mapping[str, object] | None = None,
             lr: float = 10.0, steps: int = 1000, overlap: float = 0.9, seed: int = 0,
             heldout: bool = True) -> dict[str, Any]:
    """:func:`toy_models.displacement.matched_comparison` of the loss and the comparators in
    ``displacement_world(overlap=overlap, seed=seed)`` (β = 0.1), with the reference of the
    matched reads ``mio`` when it is audited or a comparator (else the first comparator), and
    held-out prompts."""
    kw = _params(kind, params)
    name = _runnable(kind, kw)
    others = [k for k in against if k != kind]
    runnable = {k: _runnable(k, _params(k, None)) for k in others}
    ref = "mio" if "mio" in (kind, *others) else (others[0] if others else kind)
    try:
        c3 = displacement_world(overlap=overlap, seed=seed)
        out = matched_comparison(c3, losses=(name, *runnable.values()), lr=lr, steps=steps,
                                 reference=runnable.get(ref, name),
                                 heldout_seed=seed if heldout else None)
    finally:
        for k, n in runnable.items():
            _release(n, k)
        _release(name, kind)
    back = {name: kind, **{n: k for k, n in runnable.items()}}

    def rename(d: Mapping[str, Any]) -> dict[str, Any]:
        return {back.get(k, k): v for k, v in d.items()}

    out["summary"] = rename(out["summary"])
    out["curves"] = rename(out["curves"])
    out["reference"] = ref
    for key, val in out["matched"].items():
        if key == "fixed_budget":
            out["matched"][key] = rename(val)
        else:
            val["chosen_change"] = rename(val["chosen_change"])
    out["world"] = {"overlap": overlap, "seed": seed, "n_prompts": 8, "n_responses": 8,
                    "dim": 8, "beta": 0.1}
    return out


# --------------------------------------------------------------------------------------------
# The audit.
# --------------------------------------------------------------------------------------------


def _describe(kind: str) -> dict[str, Any]:
    spec = get_loss(kind)
    return {"name": spec.name, "builtin": spec.builtin, "formula": spec.formula,
            "source": spec.source, "registry_bound": spec.bound,
            "params": {k: v for k, v in _params(kind, None).items()}}


def audit_one(kind: str, *, beta: float = 0.1, worlds: int = 5,
              params: Mapping[str, object] | None = None) -> dict[str, Any]:
    """Every finding but the dynamics, for one loss."""
    inv = invariances(kind, beta=beta, params=params)
    return {**_describe(kind), "beta": beta,
            "depends_on_margin_only": inv["depends_on_margin_only"],
            "invariances": inv,
            "gradient_fields": gradient_fields(kind, beta=beta, params=params),
            "mi_reading": mi_reading(kind, beta=beta, params=params),
            "population_optimum": population_optima(kind, beta=beta, worlds=worlds,
                                                     params=params)}


def audit(loss: str, *, against: Sequence[str] = ("dpo", "mio"), beta: float = 0.1,
          worlds: int = 5, steps: int = 1000, lr: float = 10.0,
          params: Mapping[str, object] | None = None, run_dynamics: bool = True
          ) -> dict[str, Any]:
    """The full audit of ``loss`` beside ``against`` (JSON-ready; see the module docstring).

    Top-level keys include ``depends_on_margin_only`` (bool) and
    ``population_optimum_kl_to_pi_star`` (float: the mean over the audited worlds).
    """
    kind = _resolve(loss, "loss")
    against = [_resolve(k, "--against") for k in against]
    start = time.perf_counter()
    main_part = audit_one(kind, beta=beta, worlds=worlds, params=params)
    comps = {k: audit_one(k, beta=beta, worlds=worlds) for k in against if k != kind}
    out: dict[str, Any] = {
        "loss": kind, "reference": loss, "against": list(comps), "params": dict(params or {}),
        "depends_on_margin_only": main_part["depends_on_margin_only"],
        "population_optimum_kl_to_pi_star": main_part["population_optimum"]["mean_kl_to_pi_star"],
        "audits": {kind: main_part, **comps},
    }
    if run_dynamics:
        out["dynamics"] = dynamics(kind, list(comps), params=params, lr=lr, steps=steps)
    out["seconds"] = time.perf_counter() - start
    return out


def _resolve(loss: str, what: str) -> str:
    """The registry name of a loss reference (``FILE.py:FUNCTION`` is loaded and registered)."""
    try:
        return get_loss(loss).name
    except (ValueError, TypeError) as err:
        raise ValueError(f"{what}: {err}") from None


def _lm(kind: str, against: Sequence[str], out: Path, reference: str) -> dict[str, Any]:
    """The ``cpu-tiny`` LM run with the loss and the comparators; each run's decline verdict
    (:func:`mi_bounds.decline.diagnose.diagnose` on its ``result.json``)."""
    from mi_bounds.decline.diagnose import diagnose
    from mi_bounds.decline.training_log import read_log
    from mi_bounds.lm import cli as lm_cli

    losses = [reference if ":" in reference else kind, *[k for k in against if k != kind]]
    code = lm_cli.main(["run", "--preset", "cpu-tiny", "--out", str(out), "--losses", *losses])
    if code != 0:
        raise RuntimeError(f"the cpu-tiny LM run exited with code {code}")
    verdicts = {}
    for name in [kind, *[k for k in against if k != kind]]:
        results = sorted((out / "align").glob(f"{name}-seed*/result.json"))
        verdicts[name] = [{"run": str(p.parent.name), **{
            k: v for k, v in diagnose(read_log(p)).items()
            if k in ("shape", "drop_from_peak", "peak_step", "metric", "split")}}
            for p in results]
    return {"dir": str(out), "losses": losses, "verdicts": verdicts}


# --------------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mi-bounds audit",
        description="Audit a preference loss: invariances, gradient weights, MI reading, exact "
                    "population optimum under Bradley-Terry data, exact dynamics in the "
                    "shared-feature world beside the comparators (docs/THEORY.md, 'Auditing a "
                    "loss').")
    p.add_argument("loss", metavar="LOSS",
                   help="a built-in or registered loss name, FILE.py:FUNCTION or module:function "
                        "(FUNCTION(policy_chosen_logps, policy_rejected_logps, "
                        "reference_chosen_logps, reference_rejected_logps, beta) -> per-pair "
                        "loss)")
    p.add_argument("--against", nargs="*", default=["dpo", "mio"], metavar="LOSS",
                   help="comparators (default: %(default)s)")
    p.add_argument("--out", type=Path, help="write report.md, audit.json and figures here")
    p.add_argument("--json", action="store_true", help="print the JSON (without the grids)")
    p.add_argument("--beta", type=float, default=0.1, help="KL weight β (default: %(default)s)")
    p.add_argument("--worlds", type=int, default=5,
                   help="random worlds for the population optimum (default: %(default)s)")
    p.add_argument("--steps", type=int, default=1000,
                   help="gradient steps of the exact dynamics (default: %(default)s)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a keyword parameter of LOSS (a number), e.g. --param lam=5; repeatable")
    p.add_argument("--lm", action="store_true",
                   help="also run the cpu-tiny small-LM path with the loss (minutes; needs the "
                        "lm extra; written under OUT/lm)")
    return p


def _parse_params(items: Sequence[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name.isidentifier() or not math.isfinite(number):
            raise ValueError(f"--param must be NAME=NUMBER, got {item!r}")
        out[name] = number
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``mi-bounds audit``; exit code 2 with one line on invalid input."""
    args = _parser().parse_args(argv)
    try:
        if not (math.isfinite(args.beta) and args.beta > 0):
            raise ValueError(f"--beta must be a number > 0, got {args.beta}")
        for flag, value in (("--worlds", args.worlds), ("--steps", args.steps)):
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        if args.lm and args.out is None:
            raise ValueError("--lm needs --out DIR (the LM run is written under DIR/lm)")
        params = _parse_params(args.param)
        if params and args.lm:
            raise ValueError("--param applies to the toy audit only; --lm runs LOSS as it is")
        result = audit(args.loss, against=args.against, beta=args.beta, worlds=args.worlds,
                       steps=args.steps, params=params)
    except (ValueError, TypeError) as err:
        print(f"mi-bounds audit: {err}", file=sys.stderr)
        return 2
    if args.lm:
        result["lm"] = _lm(result["loss"], result["against"], args.out / "lm", args.loss)
    if args.out is not None:
        from toy_models.audit_report import write_report

        path = write_report(result, args.out)
        if not args.json:
            print(f"wrote {path}")
    if args.json:
        from toy_models.audit_report import slim

        print(json.dumps(slim(result), indent=1, ensure_ascii=False))
    elif args.out is None:
        from toy_models.audit_report import markdown

        print(markdown(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
