"""The exact population optimum of a preference loss over the simplex (tabular policy).

Used by claim C4 (experiments/claims.py) and by the loss audit: the policy that minimises the
exact expected loss under a pair distribution of a :class:`~toy_models.world.CategoricalWorld`,
compared with the RLHF optimum ``pi*`` (docs/THEORY.md, "Population optima").
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp

from mi_bounds.preference import preference_loss
from toy_models._threads import single_threaded
from toy_models.oracle import kl_log
from toy_models.world import CategoricalWorld

__all__ = ["population_optimum"]


def population_optimum(
    world: CategoricalWorld,
    kind: str,
    *,
    pairs: str = "bradley_terry",
    params: dict | None = None,
    max_rounds: int = 20,
    grad_tol: float = 1e-8,
) -> dict:
    """The policy that minimises the exact expected loss ``E_{(x,w,l)~pairs}[loss]``.

    Tabular policy ``pi = softmax(theta)`` per prompt, ``theta`` started at ``log pi_ref``,
    minimised with scipy's L-BFGS-B (float64, value and gradient by torch autograd), restarted
    until the gradient's max-norm is below ``grad_tol``, the loss stops changing, or
    ``max_rounds`` restarts pass. The loss uses
    ``beta = world.beta``. Requires ``pi_ref > 0`` everywhere.

    Returns:
        ``policy`` ``[X, Y]`` (list), ``loss``, ``grad_norm``, ``converged`` (gradient below
        ``grad_tol``), ``rounds``, ``at_boundary`` (some probability fell below 1e-12 times
        the smallest of ``pi*``: the loss's infimum lies on the simplex's boundary, i.e. some
        responses are driven to probability 0), ``theta_range`` (largest ``max - min`` of a
        prompt's logits), ``kl_to_optimal``
        ``E_x KL(pi ‖ pi*)``, ``kl_optimal_to_pi`` ``E_x KL(pi* ‖ pi)``, ``kl_to_reference``,
        ``expected_reward``.
    """
    if np.any(world.pi_ref <= 0):
        raise ValueError("population_optimum needs pi_ref > 0 everywhere")
    table = world.pair_distribution(pairs)
    xs, ws, ls = np.nonzero(table)
    prob = torch.tensor(table[xs, ws, ls])
    log_ref = torch.tensor(np.log(world.pi_ref))
    ref_w, ref_l = log_ref[xs, ws], log_ref[xs, ls]
    kw = dict(params or {})
    shape = tuple(log_ref.shape)

    def value_and_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
        theta = torch.tensor(flat.reshape(shape), requires_grad=True)
        log_pi = torch.log_softmax(theta, -1)
        per = preference_loss(kind, log_pi[xs, ws], log_pi[xs, ls], ref_w, ref_l,
                              beta=world.beta, reduction="none", **kw)
        value = (prob * per).sum()
        (g,) = torch.autograd.grad(value, theta)
        return float(value.detach()), g.numpy().ravel().copy()

    # scipy's L-BFGS-B on the exact loss (torch.optim would import torch._dynamo: ~10 s).
    flat = log_ref.numpy().ravel().copy()
    grad_norm = math.inf
    last = math.inf
    rounds = 0
    with single_threaded():
        for rounds in range(1, max_rounds + 1):  # noqa: B007 (reported below)
            opt = minimize(value_and_grad, flat, jac=True, method="L-BFGS-B",
                           options={"maxiter": 2000, "maxcor": 50, "gtol": grad_tol * 1e-2,
                                    "ftol": 1e-300})
            flat = opt.x
            v, g = value_and_grad(flat)
            grad_norm = float(np.abs(g).max())
            if grad_norm < grad_tol or not math.isfinite(grad_norm):
                break
            if abs(last - v) <= 1e-15 * max(1.0, abs(v)):  # stalled: infimum on the boundary
                break
            last = v
    th = flat.reshape(shape)
    log_pi = th - logsumexp(th, axis=1, keepdims=True)
    pi = np.exp(log_pi)
    value = v
    log_star = world.log_optimal_policy()  # log space: pi* underflows at small beta
    d = world.prompt_weights
    return {
        "policy": pi.tolist(),
        "loss": value,
        "grad_norm": grad_norm,
        "converged": bool(grad_norm < grad_tol),
        "rounds": rounds,
        "at_boundary": bool(log_pi.min() < math.log(1e-12) + log_star.min()),
        "theta_range": float((th.max(1) - th.min(1)).max()),
        "kl_to_optimal": float(d @ kl_log(log_pi, log_star)),
        "kl_optimal_to_pi": float(d @ kl_log(log_star, log_pi)),
        "kl_to_reference": float(d @ kl_log(log_pi, log_ref.numpy())),
        "expected_reward": float(d @ (pi * world.reward).sum(1)),
    }
