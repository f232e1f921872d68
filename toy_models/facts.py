"""The fact checker: docs/THEORY.md §1 facts 1–6 on given distributions and critics.

One function per fact evaluates the bounds of :mod:`mi_bounds.bounds` *exactly* (weighted
expectations over a finite support, float64) and compares them with KL, JSD and I(X;Y) from the
independent scipy oracle (:mod:`toy_models.oracle`). Each returns :class:`Check` rows: the worst
violation of an inequality (``bound - target``) or the largest error of an equality, the scale
of the quantities involved, and whether it holds at float64 round-off (:data:`RTOL` relative to
that scale). The verification report (``mi-bounds report``, :mod:`toy_models.report`) and the
property tests (``tests/test_bounds.py``) both check the facts through these functions, so the
two cannot drift apart.

NWJ and TUBA raise their documented ``ValueError`` where ``log E_Q[e^T] - log a`` exceeds
``log`` of the largest float64 (709.78); the checks accept that error exactly where the oracle's
exponent (scipy ``logsumexp``) is past the threshold, and count it as a failure elsewhere.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import logsumexp

from mi_bounds import bounds as B
from toy_models import oracle

__all__ = [
    "LOG_MAX",
    "RTOL",
    "T_MIN",
    "Check",
    "exact",
    "fact1_bounds_below_targets",
    "fact2_nwj_tuba_below_dv",
    "fact3_tight_at_optimal_critics",
    "fact4_dv_shift_invariant",
    "fact5_infonce_batch_below_log_k",
    "fact5_infonce_expectation_below_mi",
    "fact6_off_support",
    "infonce_expectation",
    "optimal_log_ratio",
]

LOG2 = math.log(2.0)
#: A finite stand-in for log 0 in optimal critics: exp(-1000) == 0.0 in float64, so it is exact.
T_MIN = -1e3
#: Relative float64 tolerance of every check: ``worst <= RTOL · (1 + scale)``.
RTOL = 1e-10
#: log of the largest float64: past it NWJ/TUBA raise their documented ValueError.
LOG_MAX = math.log(np.finfo(np.float64).max)


@dataclass(frozen=True)
class Check:
    """One checked fact: ``worst`` must be ≤ ``RTOL · (1 + scale)``.

    ``worst`` is ``bound - target`` (an inequality), ``|bound - target|`` (an equality), or 0/1
    for a yes/no condition; ``scale`` is the magnitude of the quantities compared.
    """

    fact: str
    worst: float
    scale: float = 0.0

    @property
    def tol(self) -> float:
        return RTOL * (1.0 + self.scale)

    @property
    def ok(self) -> bool:
        return self.worst <= self.tol


def exact(fn: Callable[..., torch.Tensor], p, q, t, **kw) -> np.ndarray:
    """Bound ``fn`` at critic table(s) ``t`` ``[..., n]`` as the exact expectation under (p, q)."""
    t = torch.as_tensor(np.asarray(t, dtype=np.float64))
    return fn(t, t, pos_weight=torch.as_tensor(np.asarray(p, dtype=np.float64)),
              neg_weight=torch.as_tensor(np.asarray(q, dtype=np.float64)), **kw).numpy()


def optimal_log_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``log p/q`` with log 0 replaced by :data:`T_MIN` where ``p = 0 < q`` and 0 where
    ``q = 0`` (cells Q never samples carry no weight)."""
    lr = oracle.safe_log(p) - np.where(q > 0, oracle.safe_log(q), 0.0)
    lr[(p == 0) & (q > 0)] = T_MIN
    lr[q == 0] = 0.0
    return lr


def _exponent(q: np.ndarray, t: np.ndarray, log_a: float) -> np.ndarray:
    """The oracle's ``log E_Q[e^T] - log a`` (scipy), per critic row."""
    return logsumexp(np.asarray(t, dtype=np.float64), b=q, axis=-1) - log_a


def _tuba_or_error(fn, p, q, t, log_a: float, **kw) -> tuple[np.ndarray, bool]:
    """``fn`` (NWJ, or TUBA with ``log_baseline=log_a`` in ``kw``) at each row of ``t``, with
    ``-inf`` where the library raised its overflow error; and whether that error was wrong:
    raised where the oracle's exponent is below the threshold, or not raised above it (rows
    within round-off of the threshold may go either way)."""
    t = np.atleast_2d(t)
    exponent = _exponent(q, t, log_a)
    near = np.abs(exponent - LOG_MAX) <= 1e-12 * LOG_MAX
    values = np.full(t.shape[0], -np.inf)
    wrong = False
    below = (exponent <= LOG_MAX) & ~near
    if below.any():  # these must all give numbers (one call for all of them)
        try:
            values[below] = exact(fn, p, q, t[below], **kw)
        except ValueError:
            wrong = True
    for row in np.nonzero(~below)[0]:  # past (or at) the threshold: the documented error
        try:
            values[row] = exact(fn, p, q, t[row], **kw)
            wrong |= not near[row]
        except ValueError as err:
            wrong |= "709.78" not in str(err)
    return values, wrong


def _worst(violations: np.ndarray, wrong_error: bool = False) -> float:
    """The largest violation; ``inf`` if the overflow error was wrong (see _tuba_or_error)."""
    return math.inf if wrong_error else float(np.max(violations))


def fact1_bounds_below_targets(p, q, t, log_a: float = 0.0) -> list[Check]:
    """Fact 1: DV(T), NWJ(T), TUBA(T, a) ≤ KL(P‖Q) and JS(T) ≤ 2 JSD - 2 log 2, for every row of
    the critic table ``t`` ``[..., n]`` (NWJ/TUBA: or their documented overflow error)."""
    kl, jsd = float(oracle.kl(p, q)), float(oracle.jsd(p, q))
    js_target = 2 * jsd - 2 * LOG2
    t = np.atleast_2d(t)
    scale = max(abs(kl), float(np.max(np.abs(t))), abs(log_a))
    dv = exact(B.dv_bound, p, q, t)
    nwj, nwj_wrong = _tuba_or_error(B.nwj_bound, p, q, t, 1.0)
    tuba, tuba_wrong = _tuba_or_error(B.tuba_bound, p, q, t, log_a, log_baseline=log_a)
    js = exact(B.js_bound, p, q, t)
    return [
        Check("1. DV(T) <= KL", float(np.max(dv - kl)), scale),
        Check("1. NWJ(T) <= KL", _worst(nwj - kl, nwj_wrong), scale),
        Check("1. TUBA(T,a) <= KL", _worst(tuba - kl, tuba_wrong), scale),
        Check("1. JS(T) <= 2JSD - 2log2", float(np.max(js - js_target)), scale),
    ]


def fact2_nwj_tuba_below_dv(p, q, t, log_a: float = 0.0) -> list[Check]:
    """Fact 2: NWJ(T) ≤ DV(T) and TUBA(T, a) ≤ DV(T), row by row (``log u ≤ u/a + log a - 1``)."""
    t = np.atleast_2d(t)
    dv = exact(B.dv_bound, p, q, t)
    nwj, nwj_wrong = _tuba_or_error(B.nwj_bound, p, q, t, 1.0)
    tuba, tuba_wrong = _tuba_or_error(B.tuba_bound, p, q, t, log_a, log_baseline=log_a)
    scale = max(float(np.max(np.abs(dv))), float(np.max(np.abs(t))), abs(log_a))
    return [
        Check("2. NWJ(T) <= DV(T)", _worst(nwj - dv, nwj_wrong), scale),
        Check("2. TUBA(T,a) <= DV(T)", _worst(tuba - dv, tuba_wrong), scale),
    ]


def fact3_tight_at_optimal_critics(p, q, c: float = 0.0, log_a: float = 0.0) -> list[Check]:
    """Fact 3: each bound equals its target at its optimal critic (``BOUNDS[name]
    .optimal_critic`` of :func:`optimal_log_ratio`); DV also at the critic shifted by ``c``."""
    kl, jsd = float(oracle.kl(p, q)), float(oracle.jsd(p, q))
    js_target = 2 * jsd - 2 * LOG2
    lr = optimal_log_ratio(p, q)
    finite_lr = lr[lr > T_MIN]
    scale = max(abs(kl), float(np.max(np.abs(finite_lr))) if finite_lr.size else 0.0,
                abs(c), abs(log_a))
    t_dv = B.BOUNDS["dv"].optimal_critic(lr) + c
    t_nwj = B.BOUNDS["nwj"].optimal_critic(lr)
    t_tuba = B.BOUNDS["tuba"].optimal_critic(lr, log_baseline=log_a)
    t_js = B.BOUNDS["js"].optimal_critic(lr)
    return [
        Check("3. |DV(T*) - KL|", abs(float(exact(B.dv_bound, p, q, t_dv)) - kl), scale),
        Check("3. |NWJ(T*) - KL|", abs(float(exact(B.nwj_bound, p, q, t_nwj)) - kl), scale),
        Check("3. |TUBA(T*,a) - KL|",
              abs(float(exact(B.tuba_bound, p, q, t_tuba, log_baseline=log_a)) - kl), scale),
        Check("3. |JS(T*) - (2JSD-2log2)|",
              abs(float(exact(B.js_bound, p, q, t_js)) - js_target), scale),
    ]


def fact4_dv_shift_invariant(p, q, t, shift: float) -> list[Check]:
    """Fact 4: DV(T + c) = DV(T) for every constant c, row by row."""
    t = np.atleast_2d(t)
    dv = exact(B.dv_bound, p, q, t)
    err = np.abs(exact(B.dv_bound, p, q, t + shift) - dv)
    scale = float(np.max(np.abs(dv))) + float(np.max(np.abs(t))) + abs(shift)
    return [Check("4. |DV(T+c) - DV(T)|", float(np.max(err)), scale)]


def fact5_infonce_batch_below_log_k(scores: torch.Tensor) -> list[Check]:
    """Fact 5: every batch value of InfoNCE is ≤ log K (``scores`` ``[..., K, K]``)."""
    k = scores.shape[-1]
    value = B.infonce_bound(scores).double().numpy()
    scale = float(scores.detach().abs().max()) + math.log(k)
    return [Check("5. InfoNCE batch value <= log K", float(np.max(value - math.log(k))), scale)]


def _batches(joint: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every batch of ``k`` iid pairs from ``joint`` with positive probability: cell indices
    ``xs``, ``ys`` ``[M, k]`` and probabilities ``[M]``."""
    nx, ny = joint.shape
    cells = [(x, y) for x in range(nx) for y in range(ny) if joint[x, y] > 0]
    batches = np.array(list(itertools.product(range(len(cells)), repeat=k)))  # [M, k]
    cells_arr = np.array(cells)
    xs, ys = cells_arr[batches, 0], cells_arr[batches, 1]
    return xs, ys, np.prod(joint[xs, ys], axis=1)


def infonce_expectation(joint: np.ndarray, critic: np.ndarray, k: int) -> float:
    """E[InfoNCE_K(T)] under ``joint``, by enumerating every batch of K iid pairs exactly
    (the library's :func:`~mi_bounds.bounds.infonce_bound` on each batch)."""
    xs, ys, prob = _batches(joint, k)
    scores = torch.as_tensor(critic[xs[:, :, None], ys[:, None, :]])  # [M, K, K]
    return float(np.sum(prob * B.infonce_bound(scores).numpy()))


def fact5_infonce_expectation_below_mi(joint, critic, k: int) -> list[Check]:
    """Fact 5: E[InfoNCE_K(T)] ≤ I(X;Y) and ≤ log K, by exact enumeration."""
    value = infonce_expectation(joint, critic, k)
    mi = oracle.mutual_information(joint)
    scale = float(np.max(np.abs(critic))) + math.log(k)
    return [Check("5. E[InfoNCE_K] <= I(X;Y) (exact enumeration)",
                  max(value - mi, value - math.log(k)), scale)]


def fact6_off_support(p, q, t, c: float) -> list[Check]:
    """Fact 6, for P with mass where Q has none: KL = +inf, while every bound stays finite at
    finite critics (NWJ: or its documented overflow error); and DV grows without limit as the
    critic rises on those cells — exactly ``DV(T + c·1[q = 0]) - DV(T) = c·P(q = 0)``, since
    ``E_Q`` never sees them."""
    hole = (np.asarray(q) == 0).astype(np.float64)
    t = np.atleast_2d(t)
    values = [exact(fn, p, q, t) for fn in (B.dv_bound, B.js_bound, B.smile_bound)]
    _, nwj_wrong = _tuba_or_error(B.nwj_bound, p, q, t, 1.0)
    finite = all(np.isfinite(v).all() for v in values) and not nwj_wrong
    kl_inf = oracle.kl(p, q) == math.inf
    growth = exact(B.dv_bound, p, q, t + c * hole) - values[0]
    expected = c * float(np.sum(np.asarray(p)[hole > 0]))
    scale = float(np.max(np.abs(t))) + abs(c)
    return [
        Check("6. KL = inf off-support, bounds finite", 0.0 if kl_inf and finite else 1.0),
        Check("6. DV(T + c 1[q=0]) - DV(T) = c P(q=0)",
              float(np.max(np.abs(growth - expected))), scale),
    ]


def all_ok(checks: Iterable[Check]) -> bool:
    """True iff every check holds."""
    return all(c.ok for c in checks)
