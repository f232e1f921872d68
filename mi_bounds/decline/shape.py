"""The shape of a chosen-log-likelihood trajectory, and comparisons at matched margin.

One definition serves the toy worlds, the small-LM runs, the figures and external training logs
(docs/THEORY.md §6). A trajectory ``c(s_0), …, c(s_T)`` at (possibly irregular) steps ``s_t``,
smoothed to ``m`` (a centred moving average of ``w`` points: 1 below 20 points, else about 5 %
of them, odd, truncated at the ends), with ``k`` the step of the maximum of ``m``, has exactly
one of five shapes at a level ``alpha`` (default 0.05):

* ``rise-then-fall``: ``s_k - s_0 ≥ 0.1 (s_T - s_0)`` (after at least 10 % of training), and the
  rise ``m_k - m_0`` and the drop ``m_k - m_T`` each exceed their level;
* ``fall-from-start``: not the above, and ``m_0 - m_T`` exceeds its level;
* ``no-decline``: neither;
* ``too-short``: fewer than ``min_points`` (default 3) points — or fewer than 4 when the noise is
  estimated from the curve itself;
* ``inconclusive``: 4 to 9 points and the noise estimated: too few to calibrate it.

**Drop** is always ``max m - m(s_T) ≥ 0`` in nats (how far the curve ends below its peak);
**change** is ``m(s_T) - m(s_0)`` (negative when it ended below its start). These are the only
sign conventions used in the toolkit.

**Levels** (:mod:`mi_bounds.decline.stats`). Each level is the ``1 - α`` quantile of the
statistic under pure noise: AR(1) noise fitted to the curve (residuals of a one-knot
piecewise-linear trend, with an upper confidence bound on the autocorrelation), the maximum over
admissible peaks (the peak is chosen from the data), studentized by the noise estimate of each
simulated curve. Given a per-point ``noise`` (independent points) the levels are white-noise
quantiles times it; ``noise=0`` (an exact toy curve) leaves only the floor ``min_noise``.
Every verdict carries its rise, drop and change with ``1 - α`` intervals.

**Seeds.** With several seeds (:func:`shapes_over_seeds`) each seed's curve gets its own verdict
as above, and the seed-mean curve — the loss's verdict — must pass, for each comparison, both its
own one-curve level (noise that the seeds share shows as roughness of the mean curve) and the
Student-t level over seeds (:func:`seed_thresholds`: ``t_{1-α, k-1}`` times the paired standard
error of the per-seed differences at the mean curve's start, peak and end). A small rise that
every seed shows passes the second however far the seeds drift apart later.

**Matched comparisons.** :func:`value_at_first_crossing` reads a curve (say, the chosen
log-likelihood) at the first step where another curve (say, the reward margin) reaches a level,
by linear interpolation, so two losses can be compared at equal margin, KL or accuracy instead
of at equal steps.

Sources for the phenomenon: Rafailov et al. 2023 (DPO); Pal et al. 2024 ("Smaug", DPOP);
Razin et al. 2025 ("Unintentional unalignment: likelihood displacement"); Ren & Sutherland
2025 ("Learning dynamics of LLM finetuning", the squeezing effect); Lv et al. 2025
(arXiv 2506.22578, MIO).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mi_bounds.decline.stats import (
    BETA_SHARE,
    MAX_POINTS,
    MIN_POINTS_ESTIMATED,
    auto_window,
    curve_levels,
    curve_noise,
    diff_se,
    seed_levels,
    smooth,
    t_quantile,
)

__all__ = [
    "SHAPES",
    "DeclineShape",
    "decline_shape",
    "seed_thresholds",
    "shapes_over_seeds",
    "value_at_first_crossing",
]

Shape = Literal["rise-then-fall", "fall-from-start", "no-decline", "too-short", "inconclusive"]
SHAPES: tuple[Shape, ...] = ("rise-then-fall", "fall-from-start", "no-decline", "too-short",
                             "inconclusive")

_NAN = float("nan")
_NAN_CI = (_NAN, _NAN)


@dataclass(frozen=True)
class DeclineShape:
    """The verdict on one trajectory and the numbers it rests on (all in the curve's units).

    Attributes:
        shape: one of :data:`SHAPES`.
        start, peak, final: smoothed values at the first step, the maximum, and the last step.
        peak_step: the step of the (smoothed) maximum.
        rise: ``peak - start``.
        drop_from_peak: ``peak - final ≥ 0`` (the toolkit's one "drop").
        change: ``final - start``.
        noise: the largest of the three levels (rise, drop, fall) a difference had to exceed.
        noise_source: ``"estimated"`` (AR(1) noise fitted to the curve), ``"given"`` (per-point
            noise passed), ``"threshold"`` (levels passed), ``"seeds"`` (the seed rule:
            the larger of the mean curve's own level and the Student-t level over seeds),
            ``"floor"`` (every level is ``min_noise``) or ``"none"`` (too short).
        window: the smoothing window ``w`` (1 = none).
        n_points: number of (distinct-step) points read (after block averaging, if any).
        peak_fraction: ``(peak_step - s_0) / (s_T - s_0)``.
        alpha: the one-sided level of each test; intervals are two-sided ``1 - alpha``.
        levels: ``(rise, drop, fall)``: what rise, drop and ``-change`` had to exceed.
        rise_ci, drop_ci, change_ci: two-sided ``1 - alpha`` intervals (NaN when the noise is
            given as a threshold or the curve is too short).
        noise_point: the fitted (or given) standard deviation of one raw point.
        rho: the fitted lag-1 autocorrelation of the noise (0 when the noise is given).
    """

    shape: Shape
    start: float
    peak: float
    final: float
    peak_step: float
    rise: float
    drop_from_peak: float
    change: float
    noise: float
    noise_source: str
    window: int
    n_points: int
    peak_fraction: float
    alpha: float = 0.05
    levels: tuple[float, float, float] = (_NAN, _NAN, _NAN)
    rise_ci: tuple[float, float] = _NAN_CI
    drop_ci: tuple[float, float] = _NAN_CI
    change_ci: tuple[float, float] = _NAN_CI
    noise_point: float = _NAN
    rho: float = _NAN

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _as_curve(
    values: ArrayLike, steps: ArrayLike | None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Validate, sort by step and average duplicate steps; return (steps, values)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {v.shape}")
    s = np.arange(v.size, dtype=np.float64) if steps is None else np.asarray(steps, np.float64)
    if s.shape != v.shape:
        raise ValueError(f"steps must have the shape of values {v.shape}, got {s.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"values must be finite; {int((~np.isfinite(v)).sum())} are NaN or inf")
    if not np.isfinite(s).all():
        raise ValueError("steps must be finite")
    order = np.argsort(s, kind="stable")
    s, v = s[order], v[order]
    uniq, inverse = np.unique(s, return_inverse=True)
    if uniq.size < s.size:  # e.g. a log with two entries at one step: their mean
        v = np.bincount(inverse, weights=v) / np.bincount(inverse)
    return uniq, v


def _blocks(x: NDArray[np.float64], n_max: int = MAX_POINTS) -> NDArray[np.float64]:
    """Means of ``n_max`` consecutive blocks along the last axis (unchanged if not longer)."""
    n = x.shape[-1]
    if n <= n_max:
        return x
    edges = np.linspace(0, n, n_max + 1).round().astype(int)
    c = np.concatenate([np.zeros((*x.shape[:-1], 1)), np.cumsum(x, axis=-1)], axis=-1)
    return (c[..., edges[1:]] - c[..., edges[:-1]]) / np.diff(edges)


# the old private names (diagnose's plot uses them)
_smooth = smooth
_auto_window = auto_window


def _check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, (int, float, np.integer, np.floating)) and 0.0 < alpha < 0.5):
        raise ValueError(f"alpha must be a number in (0, 0.5), got {alpha!r}")
    return float(alpha)


def _first_admissible(s: NDArray[np.float64], min_peak_fraction: float) -> int:
    span = s[-1] - s[0]
    return int(np.searchsorted((s - s[0]) / span, min_peak_fraction - 1e-12, "left"))


def decline_shape(
    values: ArrayLike,
    steps: ArrayLike | None = None,
    *,
    alpha: float = 0.05,
    noise: float | None = None,
    threshold: float | tuple[float, float, float] | None = None,
    window: int | None = None,
    min_noise: float = 1e-6,
    min_points: int = 3,
    min_peak_fraction: float = 0.1,
) -> DeclineShape:
    """Classify a chosen-log-likelihood trajectory (module docstring: the rule; its statistics
    in :mod:`mi_bounds.decline.stats`).

    Args:
        values: the curve, shape ``[n]`` (e.g. mean chosen log-probability per evaluation).
        steps: its steps, shape ``[n]``, any order, may repeat (repeats are averaged); default
            ``0, 1, …, n-1``.
        alpha: one-sided level of each test (rise, drop, fall), in (0, 0.5); default 0.05.
        noise: standard deviation of one raw point, the points independent (``0`` for an exact
            curve: the levels are then ``min_noise``); ``None`` fits AR(1) noise to the curve.
        threshold: the levels themselves, one or (rise, drop, fall); overrides ``noise``.
            ``min_noise`` still floors each.
        window: smoothing width (odd, ≥ 1); ``None`` chooses it (1 below 20 points).
        min_noise: floor of every level in the curve's units (nats).
        min_points: fewer distinct steps than this give ``too-short`` (and fewer than 4 when
            ``noise`` is ``None``); with ``noise`` ``None`` and 4 to 9 points the noise cannot
            be calibrated: ``inconclusive``.
        min_peak_fraction: the peak must come after this fraction of training (0.1).

    Returns:
        A :class:`DeclineShape`.

    Raises:
        ValueError: values/steps of different shapes, NaN or inf, or invalid parameters.
    """
    return _decline(values, steps, alpha=alpha, noise=noise, threshold=threshold, window=window,
                    min_noise=min_noise, min_points=min_points,
                    min_peak_fraction=min_peak_fraction)


def _decline(
    values: ArrayLike, steps: ArrayLike | None, *, alpha: float, noise: float | None,
    threshold: float | tuple[float, float, float] | None, window: int | None,
    min_noise: float, min_points: int, min_peak_fraction: float,
    seed_rule: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None,
) -> DeclineShape:
    """:func:`decline_shape`; ``seed_rule`` = (levels, half-widths) from the seeds, combined
    with the curve's own by the larger of each."""
    alpha = _check_alpha(alpha)
    if not (isinstance(min_noise, (int, float, np.integer, np.floating))
            and math.isfinite(min_noise) and min_noise >= 0):
        raise ValueError(f"min_noise must be a finite number >= 0, got {min_noise!r}")
    given_levels = None
    if threshold is not None:
        given_levels = tuple(float(x) for x in np.broadcast_to(np.asarray(threshold, float), (3,)))
    for name, vals in (("noise", () if noise is None else (noise,)),
                       ("threshold", given_levels or ())):
        if not all(math.isfinite(float(val)) and float(val) >= 0 for val in vals):
            raise ValueError(f"{name} must be finite and >= 0 (or None), got {vals!r}")
    given = noise is not None or threshold is not None
    if not 0.0 <= float(min_peak_fraction) < 1.0:
        raise ValueError(f"min_peak_fraction must lie in [0, 1), got {min_peak_fraction!r}")
    if int(min_points) < 3:
        raise ValueError(f"min_points must be >= 3 (start, peak, end), got {min_points!r}")
    if window is not None and (int(window) < 1 or int(window) % 2 == 0):
        raise ValueError(f"window must be an odd integer >= 1, got {window!r}")
    s, v = _as_curve(values, steps)
    if not given:  # block means only where the noise is estimated: a curve with a stated noise
        s, v = _blocks(s), _blocks(v)  # (an exact toy curve) is read point by point, as before
    n = v.size
    if n < (int(min_points) if given else max(int(min_points), 4)):
        first = float(v[0]) if n else _NAN
        last = float(v[-1]) if n else _NAN
        peak = float(v.max()) if n else _NAN
        return DeclineShape("too-short", first, peak, last, float(s[np.argmax(v)]) if n else _NAN,
                            peak - first, peak - last, last - first, _NAN, "none", 1, n, _NAN,
                            alpha)
    w = auto_window(n) if window is None else int(window)
    m = smooth(v, w)
    k = int(np.argmax(m))  # first index of the maximum
    frac = float((s[k] - s[0]) / (s[-1] - s[0]))
    start, peak, final = float(m[0]), float(m[k]), float(m[-1])
    est = np.array([peak - start, peak - final, final - start])
    a0 = _first_admissible(s, float(min_peak_fraction))
    z2 = t_quantile(1 - alpha / 2, 0)
    sigma_point, rho, half = _NAN, _NAN, np.full(3, _NAN)
    if given_levels is not None:
        levels, source = np.array(given_levels), "threshold"
    elif noise is not None:
        sigma_point, rho, source = float(noise), 0.0, "given"
        levels = (np.zeros(3) if sigma_point == 0.0  # an exact curve: min_noise alone
                  else np.array(curve_levels(n, w, a0, alpha, given_sigma=sigma_point)))
        half = z2 * np.array([diff_se(n, w, k, 0, sigma_point, 0.0),
                              diff_se(n, w, k, n - 1, sigma_point, 0.0),
                              diff_se(n, w, n - 1, 0, sigma_point, 0.0)])
    elif n < MIN_POINTS_ESTIMATED:
        return DeclineShape("inconclusive", start, peak, final, float(s[k]), *est.tolist(),
                            _NAN, "none", w, n, frac, alpha)
    else:
        fit = curve_noise(v, BETA_SHARE * alpha, s)
        sigma_point, rho, source = fit.sigma, fit.rho, "estimated"
        levels = np.array(curve_levels(n, w, a0, alpha, noise=fit))
        half = z2 * np.array([diff_se(n, w, k, 0, fit.sigma, fit.rho),
                              diff_se(n, w, k, n - 1, fit.sigma, fit.rho),
                              diff_se(n, w, n - 1, 0, fit.sigma, fit.rho)])
    if seed_rule is not None:
        levels = np.maximum(levels, seed_rule[0])
        half = np.fmax(half, seed_rule[1])
        source = "seeds"
    if levels.max() < min_noise:
        source = "floor"
    lv_rise, lv_drop, lv_fall = (max(float(x), float(min_noise)) for x in levels)
    if frac >= min_peak_fraction and est[0] > lv_rise and est[1] > lv_drop:
        shape: Shape = "rise-then-fall"
    elif -est[2] > lv_fall:
        shape = "fall-from-start"
    else:
        shape = "no-decline"
    ci = [(float(e - h), float(e + h)) for e, h in zip(est, half, strict=True)]
    return DeclineShape(shape, start, peak, final, float(s[k]), *est.tolist(),
                        max(lv_rise, lv_drop, lv_fall), source, w, n, frac, alpha,
                        (lv_rise, lv_drop, lv_fall), ci[0], ci[1], ci[2], sigma_point, rho)


def _seed_matrix(
    curves: ArrayLike, steps: ArrayLike | None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Validate ``[n_seeds, n_steps]`` curves on one step grid; return (steps, curves)."""
    c = np.asarray(curves, dtype=np.float64)
    if c.ndim == 1:
        c = c[None, :]
    if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 1:
        raise ValueError(f"curves must have shape [n_seeds, n_steps], got {c.shape}")
    rows = [_as_curve(row, steps) for row in c]
    return rows[0][0], np.stack([v for _, v in rows])


def _seed_diffs(
    c: NDArray[np.float64], w: int
) -> tuple[NDArray[np.float64], int]:
    """Each seed's (rise, drop, change) at the mean curve's smoothed peak: ``[3, k]``."""
    sm = smooth(c, w)
    k = int(np.argmax(sm.mean(0)))
    return np.stack([sm[:, k] - sm[:, 0], sm[:, k] - sm[:, -1], sm[:, -1] - sm[:, 0]]), k


def seed_thresholds(
    curves: ArrayLike, steps: ArrayLike | None = None, *, window: int | None = None,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """The Student-t levels (rise, drop, fall) of the seed mean, from the paired spread of seeds.

    Read every seed's smoothed curve at the three points the verdict compares — the first
    step, the step of the mean curve's maximum, the last step — and form each seed's rise
    ``c_i(s*) - c_i(s_0)``, drop ``c_i(s*) - c_i(s_T)`` and change ``c_i(s_T) - c_i(s_0)``.
    The level of each is ``t_{1-α, k-1} · sd_i / √k`` for ``k`` seeds (the fall's is that of
    ``-change``). Differences are paired within a seed, so a rise every seed shows is a rise,
    however far the seeds drift apart later in training.

    Args:
        curves: ``[n_seeds ≥ 2, n_steps]``, one step grid for all seeds.
        steps: ``[n_steps]``; default ``0 … n_steps-1``.
        window: as in :func:`decline_shape` (``None``: the same automatic width).
        alpha: one-sided level.
    """
    alpha = _check_alpha(alpha)
    _, c = _seed_matrix(curves, steps)
    c = _blocks(c)
    if c.shape[0] < 2:
        raise ValueError(f"seed_thresholds needs at least 2 seeds, got {c.shape[0]}")
    w = auto_window(c.shape[1]) if window is None else int(window)
    if w < 1 or w % 2 == 0:
        raise ValueError(f"window must be an odd integer >= 1, got {window!r}")
    levels, _ = seed_levels(_seed_diffs(c, w)[0], alpha)
    return float(levels[0]), float(levels[1]), float(levels[2])


def shapes_over_seeds(
    curves: ArrayLike, steps: ArrayLike | None = None, *, per_seed: bool = True,
    **kwargs: Any
) -> dict[str, Any]:
    """The verdict of each seed, and of the loss (the seed-mean curve) with levels that hold
    for shared and for seed-specific noise.

    Each seed's curve is classified as one curve (its own AR(1) noise: that run's verdict). The
    seed-mean curve — the loss's verdict — must pass two tests for each comparison (rise, drop,
    fall): its own one-curve level (which sees noise the seeds share, e.g. which pairs are in
    the evaluation set, as roughness of the mean curve) *and* the Student-t level over seeds
    (:func:`seed_thresholds`: the shape is reproducible over seeds). Its intervals are the wider
    of the two (one-curve ``± z·se``; ``± t_{1-α/2,k-1}·sd/√k`` over seeds).

    Args:
        curves: ``[n_seeds, n_steps]``; with one seed the mean is that curve.
        steps: ``[n_steps]``, shared by the seeds.
        per_seed: also classify each seed alone (``False``: only the loss's verdict; the
            ``per_seed`` list is then empty and ``counts`` all 0).
        **kwargs: passed to :func:`decline_shape` (``alpha``, ``window``, …; not
            ``noise``/``threshold``).

    Returns:
        ``{"thresholds": {"rise", "drop", "fall"} Student-t levels over seeds, or None (one
        seed), "per_seed": [DeclineShape.to_dict(), …], "counts": {shape: number of seeds},
        "mean": DeclineShape.to_dict() of the seed mean, "n_seeds"}``.
    """
    if "noise" in kwargs or "threshold" in kwargs:
        raise TypeError("shapes_over_seeds takes its noise from the seeds; do not pass noise")
    opts = {"alpha": 0.05, "noise": None, "threshold": None, "window": None, "min_noise": 1e-6,
            "min_points": 3, "min_peak_fraction": 0.1}
    unknown = set(kwargs) - set(opts)
    if unknown:
        raise TypeError(f"unknown arguments {sorted(unknown)}")
    opts.update(kwargs)
    alpha = _check_alpha(opts["alpha"])
    s, c = _seed_matrix(curves, steps)
    per = [_decline(row, s, **opts) for row in c] if per_seed else []
    rule = None
    thr = None
    sb, cb = _blocks(s), _blocks(c)
    if c.shape[0] >= 2 and cb.shape[1] >= 3:
        w = auto_window(cb.shape[1]) if opts["window"] is None else int(opts["window"])
        diffs, _ = _seed_diffs(cb, w)
        diffs[2] = -diffs[2]  # the fall is -change
        levels, half = seed_levels(diffs, alpha)
        rule = (levels, half)
        thr = dict(zip(("rise", "drop", "fall"), (float(x) for x in levels), strict=True))
    mean = _decline(cb.mean(0), sb, **opts, seed_rule=rule)
    counts = {sh: sum(p.shape == sh for p in per) for sh in SHAPES}
    return {"thresholds": thr, "per_seed": [p.to_dict() for p in per], "counts": counts,
            "mean": mean.to_dict(), "n_seeds": int(c.shape[0])}


def value_at_first_crossing(
    x: Sequence[float] | ArrayLike, y: Sequence[float] | ArrayLike, level: float
) -> float:
    """``y`` where ``x`` first reaches ``level`` (linear interpolation); NaN if it never does.

    Args:
        x: the matching variable along a run (e.g. reward margin, KL to π_ref), shape ``[n]``.
        y: the compared variable (e.g. chosen log-likelihood), shape ``[n]``.
        level: the matched value of ``x``.

    If ``x[0] ≥ level`` the answer is ``y[0]``. Used to compare losses at equal margin: DPO's
    chosen log-likelihood at the step where its margin first equals MIO's final margin.
    """
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1 or xa.size == 0:
        raise ValueError(f"x and y must be 1-D of one length, got {xa.shape} and {ya.shape}")
    if not math.isfinite(float(level)):
        raise ValueError(f"level must be finite, got {level!r}")
    hit = np.flatnonzero(xa >= level)
    if hit.size == 0:
        return float("nan")
    i = int(hit[0])
    if i == 0:
        return float(ya[0])
    x0, x1, y0, y1 = xa[i - 1], xa[i], ya[i - 1], ya[i]
    return float(y0 + (level - x0) / (x1 - x0) * (y1 - y0))
