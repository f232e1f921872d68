"""The statistics of the decline rule (docs/THEORY.md §6, mi_bounds.decline.stats): the noise
fit, the levels, the intervals, a small fixed-seed run of the operating characteristics, and
the two-level (seeds × pairs) bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal
from scipy import stats as sps

from mi_bounds.decline import stats as st
from mi_bounds.decline.shape import (
    decline_shape,
    seed_thresholds,
    shapes_over_seeds,
    value_at_first_crossing,
)

DECLINES = ("rise-then-fall", "fall-from-start")


def _ar1(rng: np.random.Generator, rho: float, size: tuple[int, ...]) -> np.ndarray:
    """Stationary AR(1), unit marginal variance (independent of the module's own generator)."""
    u = rng.standard_normal(size)
    u[..., 1:] *= math.sqrt(1 - rho * rho)
    return signal.lfilter([1.0], [1.0, -rho], u, axis=-1)


def test_false_positive_rates_within_their_bound() -> None:
    """A small fixed-seed run of benchmarks/bench_decline_oc.py: three null families at
    n = 30 (a flat curve with white and AR(1) ρ = 0.5 noise; a curve that rises by 4 SDs in
    the first 30 % and then stays flat, ρ = 0.5; 3 seeds sharing AR(1) ρ = 0.5 noise), 200
    curves each. At α = 0.05 a count above the binomial(200, 0.05) 99.9 % quantile (21) would
    reject "FPR ≤ α" at level 0.001; the test fails there."""
    bound = int(sps.binom.ppf(0.999, 200, 0.05))
    t = np.linspace(0, 1, 30)
    saturating = 4.0 * np.minimum(t / 0.3, 1.0)
    rng = np.random.default_rng(2026)
    families = {
        "flat, white": lambda: decline_shape(rng.standard_normal(30)).shape,
        "flat, rho 0.5": lambda: decline_shape(_ar1(rng, 0.5, (30,))).shape,
        "saturating, rho 0.5": lambda: decline_shape(saturating + _ar1(rng, 0.5, (30,))).shape,
        "3 seeds, shared rho 0.5": lambda: shapes_over_seeds(
            _ar1(rng, 0.5, (1, 30)) + 0.2 * rng.standard_normal((3, 30)),
            per_seed=False)["mean"]["shape"],
    }
    for name, draw in families.items():
        hits = sum(draw() in DECLINES for _ in range(200))
        assert hits <= bound, f"{name}: {hits} false positives of 200 (bound {bound})"


def test_power_at_six_noise_sds() -> None:
    """Rise and fall of 6 noise SDs, 60 points, white noise, one curve: found in most of 100
    curves (the benchmark measures 2, 4 and 6 SDs; this guards against a rule that never
    claims anything)."""
    t = np.linspace(0, 1, 60)
    hump = np.where(t <= 0.4, 6 * t / 0.4, 6 * (1 - t) / 0.6)
    rng = np.random.default_rng(7)
    found = sum(decline_shape(hump + rng.standard_normal(60)).shape == "rise-then-fall"
                for _ in range(100))
    assert found >= 70


def test_trend_fit_is_exact_on_one_knot_piecewise_linear_curves() -> None:
    n = 30
    t = np.arange(n, dtype=float)
    knots = st._knot_bases(n)
    assert knots.shape == (n - 2, n, 3)  # every interior index is a knot candidate
    c = np.where(t < 13, 0.5 * t, 6.5 - 2.0 * (t - 13))
    assert np.abs(st._trend_residuals(c)).max() < 1e-10
    s, r = st._raw_scale_and_r(c)
    assert float(s) < 1e-10 and float(r) == 0.0


def test_noise_fit_sees_autocorrelation() -> None:
    """200 points: the upper confidence bound of ρ is above the truth in most curves, and
    white noise is told from ρ = 0.8 (the old estimator, from second differences, read
    ρ = 0.8 noise of sd 1 as sd ≈ 0.5)."""
    rng = np.random.default_rng(3)
    white = [st.curve_noise(rng.standard_normal(200), 0.025) for _ in range(40)]
    slow = [st.curve_noise(_ar1(rng, 0.8, (200,)), 0.025) for _ in range(40)]
    assert sum(f.rho >= 0.8 for f in slow) >= 36
    assert max(f.rho for f in white) < 0.5
    assert 0.85 < np.median([f.sigma for f in white]) < 1.15
    assert 0.8 < np.median([f.sigma for f in slow]) < 1.3


def test_diff_se_is_the_ar1_formula() -> None:
    """No smoothing: Var(e_a − e_b) = 2σ²(1 − ρ^|a−b|); a window of 3 at an end averages 2."""
    assert st.diff_se(50, 1, 10, 40, 2.0, 0.5) == pytest.approx(2.0 * math.sqrt(2 * (1 - 0.5**30)))
    assert st.diff_se(50, 1, 3, 4, 1.0, 0.0) == pytest.approx(math.sqrt(2))
    # w = 3 at both ends (truncated to 2 points each), white: var = 1/2 + 1/2
    assert st.diff_se(50, 3, 0, 49, 1.0, 0.0) == pytest.approx(1.0)
    # against a simulation at ρ = 0.6, w = 5, interior points 10 and 30
    rng = np.random.default_rng(0)
    e = st.smooth(_ar1(rng, 0.6, (20000, 50)), 5)
    assert np.std(e[:, 10] - e[:, 30]) == pytest.approx(st.diff_se(50, 5, 10, 30, 1.0, 0.6),
                                                        rel=0.03)


def test_levels_shrink_with_alpha_and_scale_with_given_noise() -> None:
    rng = np.random.default_rng(1)
    c = rng.standard_normal(60)
    strict, loose = decline_shape(c, alpha=0.01), decline_shape(c, alpha=0.2)
    assert all(a > b for a, b in zip(strict.levels, loose.levels, strict=True))
    one, two = decline_shape(c, noise=1.0), decline_shape(c, noise=2.0)
    assert np.allclose(np.array(two.levels), 2 * np.array(one.levels))
    for bad in (0.0, 0.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            decline_shape(c, alpha=bad)


def test_exact_curves_keep_working_with_zero_noise() -> None:
    """An exact (toy) curve with noise 0 is judged against min_noise alone, as before."""
    c = np.array([0.0, 0.1, 0.2, 0.3, 0.2, 0.1, 0.0])
    r = decline_shape(c, noise=0.0, window=1, min_noise=0.01)
    assert r.shape == "rise-then-fall" and r.noise == 0.01 and r.noise_source == "floor"
    assert r.rise_ci == (pytest.approx(0.3), pytest.approx(0.3))
    assert decline_shape(c, noise=0.0, window=1, min_noise=0.5).shape == "no-decline"


def test_seed_rule_needs_both_tests() -> None:
    """Seeds that share one wiggle (a pair-set effect) agree perfectly, so the Student-t levels
    over seeds are ~0; the mean curve's own level still calls the wiggle noise. And a hump
    every seed shows, each with its own noise, passes."""
    rng = np.random.default_rng(11)
    shared = _ar1(rng, 0.5, (1, 40))
    curves = shared + 1e-3 * rng.standard_normal((3, 40))
    out = shapes_over_seeds(curves)
    assert max(out["thresholds"].values()) < 0.02
    mean_alone = decline_shape(curves.mean(0))
    assert out["mean"]["shape"] == mean_alone.shape
    assert all(a >= b - 1e-12 for a, b in zip(out["mean"]["levels"], mean_alone.levels,
                                               strict=True))
    t = np.linspace(0, 1, 40)
    hump = np.where(t <= 0.4, 8 * t / 0.4, 8 * (1 - t) / 0.6)
    res = shapes_over_seeds(hump + rng.standard_normal((3, 40)))
    assert res["mean"]["shape"] == "rise-then-fall"
    lo, hi = res["mean"]["drop_ci"]
    assert lo < res["mean"]["drop_from_peak"] < hi
    # its interval is at least the Student-t one over seeds: t_{0.975, 2} · sd/√3 of the
    # per-seed drops at the mean curve's peak (no smoothing at 40 points: w = 3)
    m = res["mean"]
    c = hump + np.random.default_rng(0).standard_normal((3, 40))  # same form, by hand:
    sm = st.smooth(c, 3)
    k = int(np.argmax(sm.mean(0)))
    drops = sm[:, k] - sm[:, -1]
    half_t = 4.302653 * drops.std(ddof=1) / math.sqrt(3)
    out2 = shapes_over_seeds(c)["mean"]
    assert out2["drop_ci"][1] - out2["drop_from_peak"] >= half_t - 1e-9
    assert m["noise_source"] == "seeds"


def test_seed_thresholds_alpha() -> None:
    rng = np.random.default_rng(5)
    c = rng.standard_normal((4, 30))
    a = np.array(seed_thresholds(c, alpha=0.05))
    b = np.array(seed_thresholds(c, alpha=0.01))
    assert np.allclose(b / a, sps.t.ppf(0.99, 3) / sps.t.ppf(0.95, 3))


def _pairs_world(rng, n_seeds, n_pairs, n_steps, hump, pair_wiggle, seed_noise):
    """Per-pair curves: a common hump (peak at 40 %), a hump of random height N(0,
    pair_wiggle²) per pair (shared by every seed: the pairs are the same), and independent
    noise per seed, pair and step."""
    t = np.linspace(0, 1, n_steps)
    shape = np.where(t <= 0.4, t / 0.4, (1 - t) / 0.6)
    own = pair_wiggle * rng.standard_normal((n_pairs, 1)) * shape[None]  # [pairs, steps]
    return (hump * shape[None, None] + own[None]
            + seed_noise * rng.standard_normal((n_seeds, n_pairs, n_steps)))


def test_two_level_bootstrap_finds_a_common_hump() -> None:
    rng = np.random.default_rng(0)
    x = _pairs_world(rng, 3, 64, 30, hump=2.0, pair_wiggle=1.0, seed_noise=0.3)
    out = st.two_level_bootstrap(x, alpha=0.05, n_boot=500)
    assert out["shape"] == "rise-then-fall"
    assert out["rise_ci"][0] < out["rise"] < out["rise_ci"][1]
    assert out["n_seeds"] == 3 and out["n_pairs"] == 64
    # the pair resampling widens the interval over a seeds-only bootstrap
    one_pair_set = st.two_level_bootstrap(x.mean(1, keepdims=True), n_boot=500)
    assert out["se"]["drop"] > one_pair_set["se"]["drop"]


def test_two_level_bootstrap_sees_the_pairs() -> None:
    """No decline over the population of pairs (pair humps of mean 0), but the mean of 8
    evaluation pairs has a hump of random height; every seed is scored on the same pairs, so
    seeds agree and seeds alone call it a decline about half the time, while resampling the
    pairs shows that it need not generalise."""
    rng = np.random.default_rng(4)
    n_claims_seeds = n_claims_pairs = 0
    for _ in range(20):
        x = _pairs_world(rng, 3, 8, 30, hump=0.0, pair_wiggle=1.5, seed_noise=0.02)
        n_claims_seeds += st.two_level_bootstrap(x.mean(1, keepdims=True),
                                                 n_boot=200)["shape"] in DECLINES
        n_claims_pairs += st.two_level_bootstrap(x, n_boot=200)["shape"] in DECLINES
    assert n_claims_pairs <= 2
    assert n_claims_seeds >= 6


def test_two_level_bootstrap_bad_input() -> None:
    with pytest.raises(ValueError, match="n_seeds, n_pairs, n_steps"):
        st.two_level_bootstrap(np.zeros((3, 10)))
    with pytest.raises(ValueError, match="finite"):
        st.two_level_bootstrap(np.full((2, 3, 10), np.nan))
    with pytest.raises(ValueError, match="alpha"):
        st.two_level_bootstrap(np.zeros((2, 3, 10)), alpha=0.7)
    with pytest.raises(ValueError, match="steps"):
        st.two_level_bootstrap(np.zeros((2, 3, 10)), steps=np.arange(9))


def test_matched_bootstrap_reads_each_seed_like_value_at_first_crossing() -> None:
    rng = np.random.default_rng(2)
    n_seeds, n_pairs, n_steps = 3, 20, 15
    t = np.arange(n_steps, dtype=float)
    margin = t[None, None] * rng.uniform(0.5, 1.5, (n_seeds, n_pairs, 1))
    chosen = -0.3 * margin + 0.1 * rng.standard_normal((n_seeds, n_pairs, n_steps))
    out = st.matched_bootstrap(margin, chosen, 5.0, n_boot=300)
    want = [value_at_first_crossing(margin[i].mean(0), chosen[i].mean(0) - chosen[i, :, 0].mean(),
                                    5.0) for i in range(n_seeds)]
    assert out["mean"] == pytest.approx(np.mean(want))
    assert out["ci"][0] < out["mean"] < out["ci"][1]
    assert out["n_reached"] == 3
    never = st.matched_bootstrap(margin, chosen, 1e6, n_boot=300)
    assert never["n_reached"] == 0 and math.isnan(never["mean"])
    with pytest.raises(ValueError, match="one shape"):
        st.matched_bootstrap(margin, chosen[:, :, :-1], 1.0)


def test_long_logs_are_block_averaged_and_fast() -> None:
    """A 10,000-point curve is read as 200 block means (a rise-then-fall stays one)."""
    t = np.linspace(0, 1, 10_000)
    c = np.where(t <= 0.4, t, 0.4 - 2 * (t - 0.4)) + 0.05 * np.random.default_rng(0).normal(
        size=t.size)
    r = decline_shape(c, t * 1000)
    assert r.n_points == st.MAX_POINTS
    assert r.shape == "rise-then-fall"
    assert r.peak_step == pytest.approx(400, abs=20)


def test_exact_toy_curves_get_the_old_verdicts() -> None:
    """Toy C3 reads exact curves raw with noise 0 and the level min_noise = 0.01: there the
    calibrated rule is the old one — rise and drop beyond 0.01 with the peak after 10 % of
    training, else a fall beyond 0.01 (computed here by hand) — so every committed toy verdict
    stands."""
    rng = np.random.default_rng(9)
    for _ in range(300):
        n = int(rng.integers(3, 60))
        c = np.cumsum(rng.normal(0, 0.02, n)) * rng.choice([0.1, 1.0, 10.0])
        k = int(np.argmax(c))
        frac = k / (n - 1)
        if frac >= 0.1 and c[k] - c[0] > 0.01 and c[k] - c[-1] > 0.01:
            want = "rise-then-fall"
        elif c[0] - c[-1] > 0.01:
            want = "fall-from-start"
        else:
            want = "no-decline"
        assert decline_shape(c, noise=0.0, window=1, min_noise=0.01).shape == want


def test_verdicts_are_affine_equivariant() -> None:
    """Shifting a curve changes nothing, scaling it by a > 0 scales every number (levels,
    effects, intervals, point noise) by a and keeps the verdict and ρ: the rule has no hidden
    unit."""
    rng = np.random.default_rng(12)
    t = np.linspace(0, 1, 45)
    for _ in range(10):
        c = np.where(t <= 0.4, 3 * t, 1.2 - 2 * (t - 0.4)) * rng.uniform(0, 3) \
            + _ar1(rng, 0.3, (45,))
        a, b = rng.uniform(0.01, 100), rng.normal(0, 50)
        r, q = decline_shape(c), decline_shape(a * c + b)
        assert q.shape == r.shape and q.rho == pytest.approx(r.rho)
        assert np.allclose(q.levels, a * np.array(r.levels), rtol=1e-6)
        for name in ("rise_ci", "drop_ci", "change_ci"):
            # differences of the curve: the shift b cancels
            assert np.allclose(getattr(q, name), a * np.array(getattr(r, name)), rtol=1e-6,
                               atol=1e-9)
        assert q.noise_point == pytest.approx(a * r.noise_point, rel=1e-6)
