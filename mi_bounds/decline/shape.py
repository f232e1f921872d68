"""The shape of a chosen-log-likelihood trajectory, and comparisons at matched margin.

One definition serves the toy worlds, the small-LM runs, the figures and external training logs
(docs/THEORY.md §6). A trajectory ``c(s_0), …, c(s_T)`` at (possibly irregular) steps ``s_t`` with a
noise level ``σ`` has exactly one of four shapes:

* ``rise-then-fall``: the maximum of ``c`` is reached at a step ``s*`` with
  ``s* - s_0 ≥ 0.1 (s_T - s_0)`` (after at least 10 % of training), and
  ``max c - c(s_0) > σ`` and ``max c - c(s_T) > σ``;
* ``fall-from-start``: not the above, and ``c(s_0) - c(s_T) > σ``;
* ``no-decline``: neither;
* ``too-short``: fewer than ``min_points`` (default 3) points — or fewer than 4 when σ is
  estimated from the curve itself: 3 points have one second difference, whose MAD is 0 whatever
  the data, so the estimate would always be the floor ``min_noise``.

**Drop** is always ``max c - c(s_T) ≥ 0`` in nats (how far the curve ends below its peak);
**change** is ``c(s_T) - c(s_0)`` (negative when it ended below its start). These are the only
sign conventions used in the toolkit.

**Noise.** The curve is first smoothed by a centred moving average of ``w`` points (``w = 1``,
no smoothing, for fewer than 20 points; otherwise about 5 % of the points, odd), truncated at
the ends, so that one noisy logging step can neither make a peak nor an end. ``σ`` is the
level a difference of two smoothed values must exceed:

    σ = max(z · √2 · σ_point / √n_end, min_noise),

where ``σ_point`` is the noise of one raw point, ``n_end = (w + 1) / 2`` is the number of raw
points in the smoothing window at either end (the noisiest smoothed values), ``z = 3`` and
``min_noise = 1e-6`` nats by default. ``σ_point`` is what the caller passes, or a robust
estimate from the curve itself: ``1.4826 · MAD(Δ²c) / √6``, the median absolute deviation of
second differences (a linear trend cancels in ``Δ²c``, and for independent noise of standard
deviation σ the second difference has variance ``6σ²``).

**Seeds.** With several seeds (:func:`shapes_over_seeds`) each seed's curve gets its own verdict
as above, and the seed-mean curve — the loss's verdict — is judged with levels from the seeds
(:func:`seed_thresholds`): each of its three comparisons (rise, drop, change) must exceed ``z``
times its own paired standard error across seeds, read at the mean curve's start, peak and end.
A small rise that every seed shows is then a rise, however far the seeds drift apart later (the
median across-seed spread over all steps, a first version of this rule, was dominated by that
late drift and hid such rises).

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
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "SHAPES",
    "DeclineShape",
    "decline_shape",
    "seed_thresholds",
    "shapes_over_seeds",
    "value_at_first_crossing",
]

Shape = Literal["rise-then-fall", "fall-from-start", "no-decline", "too-short"]
SHAPES: tuple[Shape, ...] = ("rise-then-fall", "fall-from-start", "no-decline", "too-short")

_MAD_TO_SD = 1.4826  # 1 / Φ^{-1}(3/4): MAD → standard deviation for Gaussian noise


@dataclass(frozen=True)
class DeclineShape:
    """The verdict on one trajectory and the numbers it rests on (all in the curve's units).

    Attributes:
        shape: one of :data:`SHAPES`.
        start, peak, final: smoothed values at the first step, the maximum, and the last step.
        peak_step: the step of the (smoothed) maximum.
        rise: ``peak - start ≥ 0``.
        drop_from_peak: ``peak - final ≥ 0`` (the toolkit's one "drop").
        change: ``final - start``.
        noise: the level σ a difference had to exceed.
        noise_source: ``"given"`` (per-point noise passed), ``"seeds"`` (levels passed as
            ``threshold``, e.g. :func:`seed_thresholds`; ``noise`` is then the largest of the
            three), ``"estimated"`` or ``"floor"`` (σ is ``min_noise``).
        window: the smoothing window ``w`` (1 = none).
        n_points: number of (distinct-step) points read.
        peak_fraction: ``(peak_step - s_0) / (s_T - s_0)``.
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

    def to_dict(self) -> dict[str, float | str | int]:
        """A JSON-ready dict of every field."""
        return asdict(self)


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


def _smooth(v: NDArray[np.float64], w: int) -> NDArray[np.float64]:
    """Centred moving average of odd width ``w``, truncated (not padded) at both ends."""
    if w <= 1:
        return v.copy()
    h = w // 2
    c = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(v.size)
    lo, hi = np.maximum(i - h, 0), np.minimum(i + h + 1, v.size)
    return (c[hi] - c[lo]) / (hi - lo)


def _auto_window(n: int) -> int:
    """About 5 % of the points, odd; 1 (no smoothing) below 20 points."""
    if n < 20:
        return 1
    w = max(1, round(0.05 * n))
    return w if w % 2 == 1 else w + 1


def _point_noise(v: NDArray[np.float64]) -> float:
    """Robust per-point noise from second differences: 1.4826·MAD(Δ²v)/√6 (0 if < 3 points)."""
    if v.size < 3:
        return 0.0
    d2 = np.diff(v, 2)
    return float(_MAD_TO_SD * np.median(np.abs(d2 - np.median(d2))) / math.sqrt(6.0))


def decline_shape(
    values: ArrayLike,
    steps: ArrayLike | None = None,
    *,
    noise: float | None = None,
    threshold: float | tuple[float, float, float] | None = None,
    window: int | None = None,
    z: float = 3.0,
    min_noise: float = 1e-6,
    min_points: int = 3,
    min_peak_fraction: float = 0.1,
) -> DeclineShape:
    """Classify a chosen-log-likelihood trajectory (module docstring: the rule and σ).

    Args:
        values: the curve, shape ``[n]`` (e.g. mean chosen log-probability per evaluation).
        steps: its steps, shape ``[n]``, any order, may repeat (repeats are averaged); default
            ``0, 1, …, n-1``.
        noise: standard deviation of one raw point; ``None`` estimates it from the curve's
            second differences.
        threshold: σ itself (the level a difference must exceed), or one level for each of
            (rise, drop, change), e.g. from the seeds (:func:`seed_thresholds`); overrides
            ``noise``. ``min_noise`` still floors each.
        window: smoothing width (odd, ≥ 1); ``None`` chooses it (1 below 20 points).
        z: how many standard deviations of a difference count as a real change.
        min_noise: floor of σ in the curve's units (nats).
        min_points: fewer distinct steps than this give ``too-short`` (and fewer than 4 when
            ``noise`` is ``None``: σ cannot be estimated from one second difference).
        min_peak_fraction: the peak must come after this fraction of training (0.1).

    Returns:
        A :class:`DeclineShape`.

    Raises:
        ValueError: values/steps of different shapes, NaN or inf, or invalid parameters.
    """
    for name, val, lo in (("z", z, 0.0), ("min_noise", min_noise, 0.0)):
        if not (isinstance(val, (int, float, np.integer, np.floating)) and math.isfinite(val)
                and val >= lo):
            raise ValueError(f"{name} must be a finite number >= {lo}, got {val!r}")
    levels = None
    if threshold is not None:
        levels = tuple(float(x) for x in np.broadcast_to(np.asarray(threshold, float), (3,)))
    for name, vals in (("noise", () if noise is None else (noise,)),
                       ("threshold", levels or ())):
        if not all(math.isfinite(float(val)) and float(val) >= 0 for val in vals):
            raise ValueError(f"{name} must be finite and >= 0 (or None), got {vals!r}")
    given = noise is not None or threshold is not None
    if not 0.0 <= float(min_peak_fraction) < 1.0:
        raise ValueError(f"min_peak_fraction must lie in [0, 1), got {min_peak_fraction!r}")
    if int(min_points) < 3:
        raise ValueError(f"min_points must be >= 3 (start, peak, end), got {min_points!r}")
    s, v = _as_curve(values, steps)
    n = v.size
    if n < (int(min_points) if given else max(int(min_points), 4)):
        nan = float("nan")
        first = float(v[0]) if n else nan
        last = float(v[-1]) if n else nan
        peak = float(v.max()) if n else nan
        return DeclineShape("too-short", first, peak, last, float(s[np.argmax(v)]) if n else nan,
                            peak - first, peak - last, last - first, nan, "none", 1, n, nan)
    w = _auto_window(n) if window is None else int(window)
    if w < 1 or w % 2 == 0:
        raise ValueError(f"window must be an odd integer >= 1, got {window!r}")
    m = _smooth(v, w)
    if levels is not None:
        source = "seeds"
    else:
        if noise is None:
            sigma_point, source = _point_noise(v), "estimated"
        else:
            sigma_point, source = float(noise), "given"
        sig = z * math.sqrt(2.0) * sigma_point / math.sqrt((min(w, n) + 1) / 2)
        levels = (sig, sig, sig)
    if max(levels) < min_noise:
        source = "floor"
    sig_rise, sig_drop, sig_change = (max(x, float(min_noise)) for x in levels)
    sigma = max(sig_rise, sig_drop, sig_change)
    k = int(np.argmax(m))  # first index of the maximum
    span = s[-1] - s[0]
    frac = float((s[k] - s[0]) / span)
    start, peak, final = float(m[0]), float(m[k]), float(m[-1])
    rise, drop = peak - start, peak - final
    if frac >= min_peak_fraction and rise > sig_rise and drop > sig_drop:
        shape: Shape = "rise-then-fall"
    elif start - final > sig_change:
        shape = "fall-from-start"
    else:
        shape = "no-decline"
    return DeclineShape(shape, start, peak, final, float(s[k]), rise, drop, final - start,
                        sigma, source, w, n, frac)


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


def seed_thresholds(
    curves: ArrayLike, steps: ArrayLike | None = None, *, window: int | None = None,
    z: float = 3.0,
) -> tuple[float, float, float]:
    """The levels (rise, drop, change) for the seed-mean curve, from the paired spread of seeds.

    Read every seed's smoothed curve at the three points the verdict compares — the first
    step, the step of the mean curve's maximum, the last step — and form each seed's rise
    ``c_i(s*) - c_i(s_0)``, drop ``c_i(s*) - c_i(s_T)`` and change ``c_i(s_T) - c_i(s_0)``.
    The standard error of the seed mean of each is ``sd_i / √n``; its level is ``z`` times
    that. Differences are paired within a seed, so a rise every seed shows is a rise, however
    far the seeds drift apart later in training.

    Args:
        curves: ``[n_seeds ≥ 2, n_steps]``, one step grid for all seeds.
        steps: ``[n_steps]``; default ``0 … n_steps-1``.
        window, z: as in :func:`decline_shape` (``window=None``: the same automatic width).
    """
    _, c = _seed_matrix(curves, steps)
    if c.shape[0] < 2:
        raise ValueError(f"seed_thresholds needs at least 2 seeds, got {c.shape[0]}")
    w = _auto_window(c.shape[1]) if window is None else int(window)
    if w < 1 or w % 2 == 0:
        raise ValueError(f"window must be an odd integer >= 1, got {window!r}")
    sm = np.stack([_smooth(row, w) for row in c])
    k = int(np.argmax(sm.mean(0)))
    diffs = np.stack([sm[:, k] - sm[:, 0], sm[:, k] - sm[:, -1], sm[:, -1] - sm[:, 0]])
    rise, drop, change = z * diffs.std(axis=1, ddof=1) / math.sqrt(c.shape[0])
    return float(rise), float(drop), float(change)


def shapes_over_seeds(
    curves: ArrayLike, steps: ArrayLike | None = None, **kwargs: object
) -> dict[str, object]:
    """The verdict of each seed, and of the loss (the seed-mean curve) with σ from the seeds.

    Each seed's curve is classified with its own noise level (estimated from its second
    differences, as for any one curve: that run's verdict). The seed-mean curve is classified
    with the levels of :func:`seed_thresholds` — its rise, drop and change each against its own
    paired standard error across seeds — so the loss's verdict says whether the shape is
    reproducible over seeds.

    Args:
        curves: ``[n_seeds, n_steps]``; with one seed the mean is that curve, classified with its
            own noise estimate.
        steps: ``[n_steps]``, shared by the seeds.
        **kwargs: passed to :func:`decline_shape` (not ``noise``/``threshold``).

    Returns:
        ``{"thresholds": {"rise", "drop", "change"} levels of the mean curve, or None (one
        seed), "per_seed":
        [DeclineShape.to_dict(), …], "counts": {shape: number of seeds}, "mean":
        DeclineShape.to_dict() of the seed mean}``.
    """
    if "noise" in kwargs or "threshold" in kwargs:
        raise TypeError("shapes_over_seeds takes its noise from the seeds; do not pass noise")
    s, c = _seed_matrix(curves, steps)
    per = [decline_shape(row, s, **kwargs) for row in c]  # type: ignore[arg-type]
    thr = None
    if c.shape[0] >= 2:
        thr = seed_thresholds(c, s, window=kwargs.get("window"),  # type: ignore[arg-type]
                              z=float(kwargs.get("z", 3.0)))  # type: ignore[arg-type]
    mean = decline_shape(c.mean(0), s, threshold=thr, **kwargs)  # type: ignore[arg-type]
    counts = {sh: sum(p.shape == sh for p in per) for sh in SHAPES}
    named = None if thr is None else dict(zip(("rise", "drop", "change"), thr, strict=True))
    return {"thresholds": named, "per_seed": [p.to_dict() for p in per], "counts": counts,
            "mean": mean.to_dict()}


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
