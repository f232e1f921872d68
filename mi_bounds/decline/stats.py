"""The statistics under the decline rule: curve noise with autocorrelation, calibrated levels,
Student-t levels over seeds, and a two-level (seeds × pairs) bootstrap (docs/THEORY.md §6).

**Noise of one curve.** A logged curve is a trend plus noise ``e_t`` that may be autocorrelated
(consecutive evaluations share data, optimiser state, …). The model is a stationary Gaussian
AR(1) in logging order, ``e_t = ρ e_{t-1} + √(1-ρ²) σ u_t``, marginal standard deviation ``σ``.
The trend is removed by the least-squares continuous piecewise-linear fit in the steps with one knot
(anywhere between the second and the second-to-last step): it follows a rise, a fall, a rise then a
fall, a rise to a plateau, and — being stiff — leaves slow noise in the residuals (curvature it
cannot follow is read as slow noise: conservative). The residuals give a raw scale ``s`` (root mean
square) and a raw lag-1 autocorrelation ``r``.

**Confidence bound on ρ.** ``r`` is simulated for AR(1) noise with ``ρ`` on a grid 0, 0.05, …,
0.95 (same length, same fit). ``ρ_u`` is the largest ``ρ`` (interpolated) at which the observed
``r`` is not in the lower ``β`` tail — the upper end of a one-sided ``1 − β`` confidence set;
beyond 0.95 the grid ends (a random walk is not covered). Berger & Boos (1994, J. Am. Stat.
Assoc. 89:1012): a test run at level ``α − β`` at the least favourable ``ρ`` of a ``1 − β``
confidence set has level ``α``. Here ``β = α/2`` (:data:`BETA_SHARE`).

**Calibrated levels.** With ``m`` the curve smoothed by the rule's moving average and ``A`` the
admissible peak positions (after ``min_peak_fraction`` of training), the null distributions of

    D_rise = max_{a∈A} (m_a − m_0),  D_drop = max_{a∈A} (m_a − m_T),  D_fall = m_0 − m_T

under pure AR(1) noise at ``ρ_u`` are simulated, *studentized* by the ``s`` of each simulated
curve (so the uncertainty of the noise estimate is in the level), and their ``1 − (α − β)``
quantiles times the observed ``s`` are the levels. The maximum over ``A`` accounts for the peak
being chosen from the data: under any non-decreasing trend ``m_a − m_T`` is at most its noise
part, so ``P(drop > level) ≤ α`` there (likewise for the rise under a non-increasing trend);
``rise-then-fall`` needs both (an intersection–union test). With the noise given
(``noise=σ``, independent points) the quantiles are unstudentized, at ``ρ = 0``, times ``σ``.
Simulations use a fixed generator seed, so a verdict is a deterministic function of the curve;
the tables are cached per ``(n, w, first admissible index, ρ)``. Curves longer than
:data:`MAX_POINTS` are first averaged in that many consecutive blocks.

**Intervals.** A difference of two smoothed values ``m_a − m_b`` has, under the fitted AR(1)
(``σ`` at ``ρ_u``), the variance ``σ² uᵀ R u`` (``u`` the two windows' weights, ``R_ij =
ρ_u^|i−j|``); the ``1 − α`` interval is ``± z_{1−α/2}`` standard errors around the estimate,
conditional on the peak step found.

**Seeds.** ``k`` seeds give per-seed differences ``d_i``; their level is
``t_{1−α, k−1} · sd(d)/√k`` (one-sided) and the interval ``± t_{1−α/2, k−1} · sd(d)/√k``.

**Two levels.** :func:`two_level_bootstrap` and :func:`matched_bootstrap` resample seeds and
evaluation pairs independently (the seeds × pairs design is crossed: every seed is evaluated on
the same pairs; Owen 2007, "The pigeonhole bootstrap", Ann. Appl. Stat. 1:386), so an interval
reaches beyond both the seeds and the particular evaluation pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

__all__ = [
    "BETA_SHARE",
    "MAX_POINTS",
    "MIN_POINTS_ESTIMATED",
    "RHO_GRID",
    "CurveNoise",
    "auto_window",
    "curve_levels",
    "curve_noise",
    "diff_se",
    "matched_bootstrap",
    "seed_levels",
    "smooth",
    "t_quantile",
    "two_level_bootstrap",
]

#: AR(1) coefficients at which the null is simulated
RHO_GRID: NDArray[np.float64] = np.round(np.arange(0.0, 0.951, 0.05), 2)
#: fewer points than this cannot calibrate their own noise: ``inconclusive``
MIN_POINTS_ESTIMATED = 10
#: longer curves are first averaged in this many consecutive blocks (a 10,000-row log)
MAX_POINTS = 200
#: share of α spent on the confidence bound of ρ (Berger–Boos): β = BETA_SHARE · α
BETA_SHARE = 0.5
_N_KNOTS = 30  # knot candidates of the trend fit in the simulations (interior indices)
_N_KNOTS_FINE = 120  # knot candidates of the trend fit of an observed curve (anywhere)
_N_MAP = 1000  # simulations per grid ρ of the residual autocorrelation r
_N_NULL = 2000  # simulations for the null quantiles at one ρ
_SEED = 20261206


def auto_window(n: int) -> int:
    """About 5 % of the points, odd; 1 (no smoothing) below 20 points."""
    if n < 20:
        return 1
    w = max(1, round(0.05 * n))
    return w if w % 2 == 1 else w + 1


def smooth(v: NDArray[np.float64], w: int) -> NDArray[np.float64]:
    """Centred moving average of odd width ``w`` along the last axis, truncated at both ends."""
    if w <= 1:
        return np.array(v, dtype=np.float64, copy=True)
    n = v.shape[-1]
    h = w // 2
    c = np.concatenate([np.zeros((*v.shape[:-1], 1)), np.cumsum(v, axis=-1)], axis=-1)
    i = np.arange(n)
    lo, hi = np.maximum(i - h, 0), np.minimum(i + h + 1, n)
    return (c[..., hi] - c[..., lo]) / (hi - lo)


def _fit_halfwidth(n: int) -> int:
    """The number of knot candidates of the trend fit (part of the tables' cache key)."""
    return min(n - 2, _N_KNOTS)


def _bases_at(t: NDArray[np.float64], knots: NDArray[np.float64]) -> NDArray[np.float64]:
    n = t.size
    bases = []
    for kappa in knots:
        x = np.stack([np.ones(n), t, np.maximum(t - kappa, 0.0)], axis=1)
        q, _ = np.linalg.qr(x)
        bases.append(q)
    return np.stack(bases)


@lru_cache(maxsize=256)
def _knot_bases(n: int) -> NDArray[np.float64]:
    """Orthonormal bases ``[n_knots, n, 3]`` of ``{1, t, (t - κ)₊}`` for the candidate knots
    ``κ`` (every interior index up to :data:`_N_KNOTS` of them, else evenly spaced)."""
    idx = np.unique(np.linspace(1, n - 2, min(n - 2, _N_KNOTS)).round())
    return _bases_at(np.arange(n, dtype=np.float64), idx)


@lru_cache(maxsize=64)
def _fine_bases(steps_bytes: bytes) -> NDArray[np.float64]:
    """The bases of :func:`_trend_residuals` for a curve's own steps (cached by their bytes)."""
    steps = np.frombuffer(steps_bytes, dtype=np.float64)
    n = steps.size
    t = (steps - steps[0]) / (steps[-1] - steps[0]) * (n - 1)
    return _bases_at(t, np.linspace(t[1], t[-2], _N_KNOTS_FINE))


def _trend_residuals(v: NDArray[np.float64],
                     steps: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
    """``v - f`` for ``f`` the least-squares continuous piecewise-linear trend in the steps with one
    knot, chosen by least squares among :data:`_N_KNOTS_FINE` positions evenly spaced between the
    second and the second-to-last step (default, for the simulations: equally spaced steps and up to
    :data:`_N_KNOTS` knots at interior indices), along the last axis: it fits a rise, a fall, a rise
    then a fall and a rise to a plateau, and leaves the noise — slow noise included — in the
    residuals."""
    n = v.shape[-1]
    if steps is None:
        q = _knot_bases(n)  # [K, n, 3]
    else:
        q = _fine_bases(np.asarray(steps, dtype=np.float64).tobytes())
    flat = v.reshape(-1, n)
    coef = (flat @ q.transpose(1, 0, 2).reshape(n, -1)).reshape(flat.shape[0], q.shape[0], -1)
    best = np.argmax(np.sum(coef * coef, axis=-1), axis=-1)  # most variance explained
    cb = coef[np.arange(flat.shape[0]), best]  # [B, 3]
    fit = np.sum(q[best] * cb[:, None, :], axis=-1)
    return (flat - fit).reshape(v.shape)


def _raw_scale_and_r(v: NDArray[np.float64],
                     steps: NDArray[np.float64] | None = None) -> tuple[NDArray, NDArray]:
    """Root-mean-square residual and lag-1 residual autocorrelation, along the last axis."""
    r = _trend_residuals(v, steps)
    ss = np.sum(r * r, axis=-1)
    s = np.sqrt(ss / r.shape[-1])
    lag = np.sum(r[..., 1:] * r[..., :-1], axis=-1)
    fitted = ss > 1e-20 * np.sum(v * v, axis=-1)  # else: an exact fit, up to round-off
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(fitted, lag / np.where(fitted, ss, 1.0), 0.0)
    return s, rho


def _ar1(rng: np.random.Generator, rho: float, size: tuple[int, int]) -> NDArray[np.float64]:
    """Stationary AR(1) noise of unit marginal variance, ``size = (n_sims, n)``."""
    u = rng.standard_normal(size)
    if rho == 0.0:
        return u
    u[:, 1:] *= math.sqrt(1.0 - rho * rho)
    for t in range(1, size[1]):  # e_t = ρ e_{t-1} + √(1-ρ²) u_t, vectorised over the sims
        u[:, t] += rho * u[:, t - 1]
    return u


def t_quantile(q: float, df: int) -> float:
    """Student-t quantile (normal for ``df < 1``)."""
    return float(special.stdtrit(df, q)) if df >= 1 else float(special.ndtri(q))


@lru_cache(maxsize=1024)
def _r_table(n: int, h: int, j: int) -> tuple[NDArray[np.float64], float]:
    """Sorted simulated residual autocorrelations ``r`` and the mean residual scale ``E[s]`` for
    unit-variance AR(1) noise at ``ρ = RHO_GRID[j]``."""
    rng = np.random.default_rng([_SEED, n, h, j])
    s, r = _raw_scale_and_r(_ar1(rng, float(RHO_GRID[j]), (_N_MAP, n)))
    return np.sort(r), float(s.mean())


def _r_quantile(n: int, h: int, j: int, q: float) -> float:
    return float(np.quantile(_r_table(n, h, j)[0], q))


@lru_cache(maxsize=512)
def _null_table(n: int, w: int, h: int, a0: int, j: int) -> dict[str, NDArray[np.float64]]:
    """Sorted simulated null statistics at ``ρ = RHO_GRID[j]``: studentized (``*_t``, divided by
    each simulation's own ``s``) and raw (unit σ), for rise, drop and fall."""
    rng = np.random.default_rng([_SEED, n, w, h, a0, j, 1])
    e = _ar1(rng, float(RHO_GRID[j]), (_N_NULL, n))
    m = smooth(e, w)
    top = m[:, a0:].max(axis=1)
    raw = {"rise": top - m[:, 0], "drop": top - m[:, -1], "fall": m[:, 0] - m[:, -1]}
    s, _ = _raw_scale_and_r(e)
    s = np.maximum(s, 1e-12)
    out = {k: np.sort(v) for k, v in raw.items()}
    out.update({f"{k}_t": np.sort(v / s) for k, v in raw.items()})
    return out


@dataclass(frozen=True)
class CurveNoise:
    """The fitted noise of one curve: ``rho``, the upper ``1 − β`` confidence bound of its AR(1)
    coefficient (at most 0.95), ``sigma`` the marginal sd at that ``rho``, ``scale`` the raw
    residual scale, ``grid_pos`` the (fractional) grid position of ``rho``, ``r`` the raw
    residual lag-1 autocorrelation."""

    sigma: float
    rho: float
    scale: float
    grid_pos: float
    r: float


def curve_noise(v: NDArray[np.float64], beta: float,
                steps: NDArray[np.float64] | None = None) -> CurveNoise:
    """Fit the AR(1) noise of one curve at ``steps`` (increasing; default equally spaced)
    (module docstring); ``n ≥ 4`` points. The trend is fitted in the steps, the noise is AR(1)
    in logging order.

    ``rho`` is the largest ``ρ`` on the grid (interpolated) at which the observed residual
    autocorrelation ``r`` is not in the lower ``β`` tail of its simulated distribution — the
    upper end of a one-sided ``1 − β`` confidence set of ``ρ`` (Berger & Boos 1994, J. Am.
    Stat. Assoc. 89:1012: a test maximised over a ``1 − β`` confidence set of the nuisance
    parameter, at level ``α − β``, has level ``α``). The ``β`` quantile of ``r`` rises with
    ``ρ``, so the set is an interval ``[0, rho]`` found by bisection.
    """
    n = v.size
    h = _fit_halfwidth(n)
    s, r = (float(x) for x in _raw_scale_and_r(v, steps))
    last = RHO_GRID.size - 1
    if _r_quantile(n, h, 0, beta) > r:
        pos = 0.0
    elif _r_quantile(n, h, last, beta) <= r:
        pos = float(last)
    else:  # q(0) <= r < q(last): the largest j with q(j) <= r, then interpolate to q = r
        lo, hi = 0, last
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _r_quantile(n, h, mid, beta) <= r:
                lo = mid
            else:
                hi = mid
        q_lo, q_hi = _r_quantile(n, h, lo, beta), _r_quantile(n, h, hi, beta)
        pos = lo + (r - q_lo) / (q_hi - q_lo) if q_hi > q_lo else float(lo)
    j = min(math.floor(pos), last)
    f = pos - j
    unit = _r_table(n, h, j)[1] if f == 0 else (
        (1 - f) * _r_table(n, h, j)[1] + f * _r_table(n, h, min(j + 1, last))[1])
    rho = float(np.interp(pos, np.arange(RHO_GRID.size), RHO_GRID))
    return CurveNoise(sigma=s / unit if unit > 0 else 0.0, rho=rho, scale=s, grid_pos=pos, r=r)


def _quantile(sorted_sims: NDArray[np.float64], q: float) -> float:
    return float(np.quantile(sorted_sims, q, method="higher"))


def curve_levels(
    n: int, w: int, a0: int, alpha: float, noise: CurveNoise | None = None,
    given_sigma: float | None = None,
) -> tuple[float, float, float]:
    """The (rise, drop, fall) levels of one curve at one-sided level ``alpha``: studentized null
    quantiles at the fitted ``ρ`` times the residual scale (``noise``), or white-noise quantiles
    times a given per-point ``σ`` (``given_sigma``)."""
    h = _fit_halfwidth(n)
    if given_sigma is not None:
        tab = _null_table(n, w, h, a0, 0)
        return tuple(_quantile(tab[k], 1 - alpha) * given_sigma  # type: ignore[return-value]
                     for k in ("rise", "drop", "fall"))
    assert noise is not None
    lo = math.floor(noise.grid_pos)
    hi = min(lo + 1, RHO_GRID.size - 1)
    frac = noise.grid_pos - lo
    q = 1 - alpha * (1 - BETA_SHARE)  # level α − β, β spent on the bound of ρ
    out = []
    for k in ("rise_t", "drop_t", "fall_t"):
        q_lo = _quantile(_null_table(n, w, h, a0, lo)[k], q)
        q_hi = _quantile(_null_table(n, w, h, a0, hi)[k], q) if frac > 0 else q_lo
        out.append(((1 - frac) * q_lo + frac * q_hi) * noise.scale)
    return out[0], out[1], out[2]


def _window_weights(n: int, w: int, i: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    h = w // 2
    lo, hi = max(i - h, 0), min(i + h + 1, n)
    idx = np.arange(lo, hi)
    return idx, np.full(idx.size, 1.0 / idx.size)


def diff_se(n: int, w: int, a: int, b: int, sigma: float, rho: float) -> float:
    """Standard error of ``m_a − m_b`` (smoothed values at indices ``a``, ``b``) under AR(1)
    noise of marginal sd ``sigma`` and coefficient ``rho``."""
    ia, wa = _window_weights(n, w, a)
    ib, wb = _window_weights(n, w, b)
    idx = np.concatenate([ia, ib])
    u = np.concatenate([wa, -wb])
    lag = np.abs(idx[:, None] - idx[None, :])
    var = float(u @ (rho ** lag if rho > 0 else (lag == 0).astype(float)) @ u)
    return sigma * math.sqrt(max(var, 0.0))


def seed_levels(diffs: NDArray[np.float64], alpha: float) -> tuple[NDArray, NDArray]:
    """One-sided levels ``t_{1−α,k−1}·se`` and two-sided half-widths ``t_{1−α/2,k−1}·se`` of
    the seed mean of each row of ``diffs`` (``[3, k]``, ``k ≥ 2`` seeds)."""
    k = diffs.shape[1]
    se = diffs.std(axis=1, ddof=1) / math.sqrt(k)
    return t_quantile(1 - alpha, k - 1) * se, t_quantile(1 - alpha / 2, k - 1) * se


def two_level_bootstrap(
    per_pair: ArrayLike, steps: ArrayLike | None = None, *, alpha: float = 0.05,
    n_boot: int = 2000, window: int | None = None, min_peak_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, object]:
    """Rise, drop and change of the seed-and-pair mean curve with intervals that resample
    seeds and evaluation pairs (crossed design: every seed evaluated on the same pairs).

    Args:
        per_pair: ``[n_seeds, n_pairs, n_steps]``, e.g. the chosen log-probability of every
            evaluation pair at every evaluation, per seed.
        steps: ``[n_steps]``, increasing; default ``0 … n_steps-1``.
        alpha: one-sided level of the verdict; intervals are two-sided ``1 − α``.
        n_boot: bootstrap replicates; each draws seeds and pairs with replacement,
            independently (Owen's pigeonhole bootstrap).
        window: smoothing width of the curve (default as the rule's).
        min_peak_fraction: the peak must come after this fraction of training.
        seed: generator seed (the result is deterministic).

    The curve is the mean over seeds and pairs; ``k`` is the step of its smoothed maximum. In
    each replicate the rise ``m_k − m_0``, drop ``m_k − m_T`` and change ``m_T − m_0`` of the
    resampled mean curve are read at the same ``k``; their bootstrap standard errors ``se``
    give levels ``q_{1−α}·se`` and intervals ``± q_{1−α/2}·se``, with ``q`` the Student-t
    quantile with ``n_seeds − 1`` degrees of freedom (the normal one for one seed) — the few
    seeds, not the many pairs, limit what a resample can show. With at least
    :data:`MIN_POINTS_ESTIMATED` steps each level is also at least the one-curve level of the
    mean curve (its own AR(1) noise), as in the rule for seeds. Verdict: ``rise-then-fall`` if
    the peak is admissible and rise and drop exceed their levels, else ``fall-from-start`` if
    ``−change`` exceeds its level, else ``no-decline``.

    Returns:
        ``{"shape", "peak_step", "rise", "drop_from_peak", "change", "rise_ci", "drop_ci",
        "change_ci", "levels": {rise, drop, change}, "se": {…}, "n_seeds", "n_pairs",
        "n_boot", "alpha"}``.
    """
    x = np.asarray(per_pair, dtype=np.float64)
    if x.ndim != 3 or min(x.shape) < 1:
        raise ValueError(f"per_pair must have shape [n_seeds, n_pairs, n_steps], got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("per_pair must be finite")
    if not 0.0 < float(alpha) < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha!r}")
    if int(n_boot) < 100:
        raise ValueError(f"n_boot must be >= 100, got {n_boot!r}")
    n_seeds, n_pairs, n = x.shape
    s = np.arange(n, dtype=np.float64) if steps is None else np.asarray(steps, np.float64)
    if s.shape != (n,) or np.any(np.diff(s) <= 0):
        raise ValueError(f"steps must be increasing of length {n}, got shape {s.shape}")
    if n < 3:
        raise ValueError(f"the shape needs at least 3 steps, got {n}")
    w = auto_window(n) if window is None else int(window)
    m = smooth(x.mean(axis=(0, 1)), w)
    k = int(np.argmax(m))
    frac = float((s[k] - s[0]) / (s[-1] - s[0]))
    est = np.array([m[k] - m[0], m[k] - m[-1], m[-1] - m[0]])
    rng = np.random.default_rng(seed)
    ws = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot) / n_seeds
    wp = rng.multinomial(n_pairs, np.full(n_pairs, 1.0 / n_pairs), size=n_boot) / n_pairs
    cols = sorted({0, k, n - 1} | set(range(max(k - w // 2, 0), min(k + w // 2 + 1, n)))
                  | set(range(min(w // 2 + 1, n))) | set(range(max(n - 1 - w // 2, 0), n)))
    sub = x[:, :, cols]  # only the steps the three smoothed values need
    curves = np.einsum("bi,bj,ijt->bt", ws, wp, sub, optimize=True)
    full = np.zeros((n_boot, n))
    full[:, cols] = curves
    mb = smooth(full, w)  # the smoothed values at 0, k, T use only the columns filled in
    boot = np.stack([mb[:, k] - mb[:, 0], mb[:, k] - mb[:, -1], mb[:, -1] - mb[:, 0]])
    se = boot.std(axis=1, ddof=1)
    df = n_seeds - 1
    q1, q2 = t_quantile(1 - alpha, df), t_quantile(1 - alpha / 2, df)
    lv = q1 * se
    if n >= MIN_POINTS_ESTIMATED:  # and the one-curve test of the mean curve (its roughness)
        a0 = int(np.searchsorted((s - s[0]) / (s[-1] - s[0]), min_peak_fraction, "left"))
        fit = curve_noise(x.mean(axis=(0, 1)), BETA_SHARE * float(alpha), s)
        curve = curve_levels(n, w, a0, float(alpha), noise=fit)
        lv = np.maximum(lv, np.array(curve))
    if frac >= min_peak_fraction and est[0] > lv[0] and est[1] > lv[1]:
        shape = "rise-then-fall"
    elif -est[2] > lv[2]:
        shape = "fall-from-start"
    else:
        shape = "no-decline"
    names = ("rise", "drop", "change")
    return {
        "shape": shape, "peak_step": float(s[k]), "peak_fraction": frac,
        "rise": float(est[0]), "drop_from_peak": float(est[1]), "change": float(est[2]),
        **{f"{nm}_ci": [float(e - q2 * d), float(e + q2 * d)]
           for nm, e, d in zip(names, est, se, strict=True)},
        "levels": dict(zip(names, (float(v) for v in lv), strict=True)),
        "se": dict(zip(names, (float(v) for v in se), strict=True)),
        "n_seeds": n_seeds, "n_pairs": n_pairs, "n_boot": int(n_boot), "alpha": float(alpha),
    }


def _first_crossing(x: NDArray[np.float64], y: NDArray[np.float64],
                    level: float) -> NDArray[np.float64]:
    """Row-wise :func:`~mi_bounds.decline.value_at_first_crossing` of ``[..., T]`` arrays."""
    hit = x >= level
    any_hit = hit.any(axis=-1)
    i = np.argmax(hit, axis=-1)
    im1 = np.maximum(i - 1, 0)
    take = lambda a, j: np.take_along_axis(a, j[..., None], axis=-1)[..., 0]  # noqa: E731
    x0, x1, y0, y1 = take(x, im1), take(x, i), take(y, im1), take(y, i)
    with np.errstate(invalid="ignore", divide="ignore"):
        val = np.where(i == 0, y1, y0 + (level - x0) / np.where(x1 != x0, x1 - x0, 1.0)
                       * (y1 - y0))
    return np.where(any_hit, val, np.nan)


def matched_bootstrap(
    x_per_pair: ArrayLike, y_per_pair: ArrayLike, level: float, *, alpha: float = 0.05,
    n_boot: int = 2000, seed: int = 0,
) -> dict[str, object]:
    """The change ``y(t) − y(0)`` of the pair-mean ``y`` where the pair-mean ``x`` first reaches
    ``level`` (linear interpolation), averaged over seeds, with a two-level bootstrap interval.

    Args:
        x_per_pair, y_per_pair: ``[n_seeds, n_pairs, n_steps]`` (e.g. the reward margin and the
            chosen log-probability of every evaluation pair).
        level: the matched value of ``x``.
        alpha: the interval is two-sided ``1 − α``.
        n_boot, seed: replicates (seeds and pairs drawn with replacement, independently) and
            generator seed.

    Returns:
        ``{"mean", "ci", "se", "n_reached", "n_seeds", "n_pairs"}``: the mean over the seeds
        whose curve reaches the level (NaN if none), and ``mean ± q·se`` with ``q`` the
        Student-t quantile with ``n_seeds − 1`` degrees of freedom (normal for one seed) and
        ``se`` the bootstrap standard deviation over the replicates in which a seed reaches it.
    """
    x = np.asarray(x_per_pair, dtype=np.float64)
    y = np.asarray(y_per_pair, dtype=np.float64)
    if x.ndim != 3 or x.shape != y.shape or min(x.shape) < 1:
        raise ValueError(f"x and y must have one shape [n_seeds, n_pairs, n_steps], got "
                         f"{x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite")
    if not 0.0 < float(alpha) < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha!r}")
    n_seeds, n_pairs, _ = x.shape
    per_seed = _first_crossing(x.mean(1), y.mean(1) - y.mean(1)[:, :1], float(level))
    ok = np.isfinite(per_seed)
    mean = float(per_seed[ok].mean()) if ok.any() else float("nan")
    rng = np.random.default_rng(seed)
    wp = rng.multinomial(n_pairs, np.full(n_pairs, 1.0 / n_pairs), size=n_boot) / n_pairs
    si = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    xb = np.einsum("bj,ijt->bit", wp, x, optimize=True)  # [B, seeds, T]
    yb = np.einsum("bj,ijt->bit", wp, y, optimize=True)
    vals = _first_crossing(xb, yb - yb[..., :1], float(level))  # [B, seeds]
    vals = np.take_along_axis(vals, si, axis=1)
    got = np.isfinite(vals)
    count = got.sum(axis=1)
    reps = np.where(got, vals, 0.0).sum(axis=1)[count > 0] / count[count > 0]
    se = float(reps.std(ddof=1)) if reps.size > 1 else float("nan")
    df = n_seeds - 1
    q = t_quantile(1 - alpha / 2, df)
    return {"mean": mean, "ci": [mean - q * se, mean + q * se], "se": se,
            "n_reached": int(ok.sum()), "n_seeds": n_seeds, "n_pairs": n_pairs}
