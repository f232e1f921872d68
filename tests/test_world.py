"""Tests of toy_models.world.CategoricalWorld against independent computations."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toy_models import strategies
from toy_models.oracle import jsd, kl
from toy_models.world import CategoricalWorld

seeds = st.integers(0, 10_000)
betas = strategies.betas()  # [1e-3, 10]


def _world(seed, beta, zero_fraction=0.3, n_x=3, n_y=5, scale=2.0):
    return CategoricalWorld.random(seed, n_x, n_y, beta, reward_scale=scale,
                                   zero_fraction=zero_fraction)


def _brute_log_gibbs(w):
    """log pi* by exp-then-normalise in 30-digit mpmath loops (no overflow at any beta):
    independent of the world's log-space code. -inf where pi_ref = 0."""
    out = np.full(w.pi_ref.shape, -np.inf)
    with mpmath.workdps(30):
        for x in range(w.n_prompts):
            un = [mpmath.mpf(w.pi_ref[x, y]) * mpmath.exp(mpmath.mpf(w.reward[x, y]) / w.beta)
                  for y in range(w.n_responses)]
            z = mpmath.fsum(un)
            for y, u in enumerate(un):
                if u > 0:
                    out[x, y] = float(mpmath.log(u / z))
    return out


def _gibbs_error(w) -> float:
    """Largest |log pi* - brute force| on supp(pi_ref), relative to 1 + |log pi*| (and inf if
    the zeros of pi* differ from those of pi_ref)."""
    got, want = w.log_optimal_policy(), _brute_log_gibbs(w)
    s = w.pi_ref > 0
    if not np.array_equal(np.isneginf(got), ~s):
        return math.inf
    return float(np.max(np.abs(got[s] - want[s]) / (1 + np.abs(want[s]))))


def test_validation():
    d, q, r = np.array([0.5, 0.5]), np.full((2, 3), 1 / 3), np.zeros((2, 3))
    CategoricalWorld(d, q, r, 1.0)
    with pytest.raises(ValueError, match="beta"):
        CategoricalWorld(d, q, r, 0.0)
    with pytest.raises(ValueError, match="prompt_weights"):
        CategoricalWorld(np.array([0.5, 0.6]), q, r, 1.0)
    with pytest.raises(ValueError, match="pi_ref"):
        CategoricalWorld(d, np.full((2, 3), 0.5), r, 1.0)
    with pytest.raises(ValueError, match="pi_ref"):
        CategoricalWorld(d, np.full((3, 3), 1 / 3), r, 1.0)
    with pytest.raises(ValueError, match="reward"):
        CategoricalWorld(d, q, np.zeros((2, 4)), 1.0)
    with pytest.raises(ValueError, match="reward"):
        CategoricalWorld(d, q, np.full((2, 3), np.nan), 1.0)
    w = CategoricalWorld(d, q, r, 1.0)
    with pytest.raises(ValueError):
        w.pi_ref[0, 0] = 1.0  # read-only
    with pytest.raises(ValueError, match="unknown pair distribution"):
        w.pair_distribution("nope")
    with pytest.raises(ValueError, match="unknown bound"):
        w.bound_at("nope", r)
    with pytest.raises(ValueError, match="pi"):
        w.kl_to_reference(np.full((2, 4), 0.25))


def test_random_is_deterministic():
    a, b = _world(3, 0.5), _world(3, 0.5)
    np.testing.assert_array_equal(a.pi_ref, b.pi_ref)
    np.testing.assert_array_equal(a.reward, b.reward)
    np.testing.assert_array_equal(a.prompt_weights, b.prompt_weights)


@settings(max_examples=50)
@given(seeds, betas)
def test_optimal_policy_is_gibbs_and_optimal(seed, beta):
    """log pi* = log(pi_ref e^{r/β}/Z) (vs a 30-digit loop), pi* zero exactly off supp(pi_ref);
    J(pi) = J(pi*) - β KL(pi‖pi*) for random policies pi (so pi* is the maximiser), for β down
    to 1e-3 (where pi* underflows in float64 and only log pi* keeps its value)."""
    w = _world(seed, beta, scale=1.0)
    p = w.optimal_policy()
    assert _gibbs_error(w) <= 1e-13
    assert np.all(p[w.pi_ref == 0] == 0)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        pi = rng.dirichlet(np.ones(w.n_responses), size=w.n_prompts) * (w.pi_ref > 0)
        pi /= pi.sum(1, keepdims=True)
        j = w.rlhf_objective(pi)
        assert j == pytest.approx(w.rlhf_objective(p) - w.beta * w.kl_to_optimal(pi), abs=1e-10)
        assert j <= w.rlhf_objective(p) + 1e-12


def test_a_wrong_partition_function_is_caught(monkeypatch):
    """Mutation check: log Z off by 1e-9 makes the Gibbs check fail."""
    w = _world(1, 0.01, scale=1.0)
    assert _gibbs_error(w) <= 1e-13
    real = CategoricalWorld.log_partition
    monkeypatch.setattr(CategoricalWorld, "log_partition", lambda self: real(self) + 1e-9)
    assert _gibbs_error(w) > 1e-13


def test_quantities_against_oracle():
    w = _world(11, 0.7)
    p = w.optimal_policy()
    want_kl = sum(w.prompt_weights[x] * kl(p[x], w.pi_ref[x]) for x in range(w.n_prompts))
    assert w.kl_to_reference(p) == pytest.approx(want_kl, rel=1e-12)
    joint = w.prompt_weights[:, None] * p
    marg = joint.sum(0)
    want_mi = sum(joint[x, y] * math.log(joint[x, y] / (w.prompt_weights[x] * marg[y]))
                  for x in range(w.n_prompts) for y in range(w.n_responses) if joint[x, y] > 0)
    assert w.mutual_information(p) == pytest.approx(want_mi, rel=1e-12)
    # a policy with mass outside supp(pi_ref): infinite KL, J = -inf
    off = np.argwhere(w.pi_ref == 0)
    if len(off):
        bad = w.pi_ref.copy()
        x, y = off[0]
        bad[x] = 0.0
        bad[x, y] = 1.0
        assert w.kl_to_reference(bad) == math.inf
        assert w.rlhf_objective(bad) == -math.inf
        assert w.implicit_critic(bad)[x, y] == math.inf


def test_implicit_critic_of_optimum_is_shifted_reward():
    """T_{pi*}(x, y) = r(x, y) - β log Z(x) on supp(pi_ref)."""
    w = _world(5, 0.4)
    t = w.implicit_critic(w.optimal_policy())
    s = w.pi_ref > 0
    want = w.reward - w.beta * w.log_partition()[:, None]
    np.testing.assert_allclose(t[s], want[s], rtol=1e-10, atol=1e-10)


@settings(max_examples=40)
@given(seeds, betas, st.floats(-3, 3))
def test_bounds_at_critics(seed, beta, shift):
    """At T = r/β + c: DV = E_x KL(pi*‖pi_ref) (any c); NWJ at T = 1 + log dP/dQ and TUBA(a) at
    log dP/dQ + log a equal it too; JS at log dP/dQ = E_x[2 JSD - 2 log 2] (scipy oracle);
    at a perturbed critic every KL bound is below the KL."""
    w = _world(seed, beta, scale=1.0)
    p, q = w.optimal_policy(), w.pi_ref
    klv = w.kl_to_reference(w.log_optimal_policy(), log=True)
    assert w.kl_to_reference(p) == pytest.approx(klv, rel=1e-12, abs=1e-300)
    s = q > 0
    log_ratio = np.where(s, w.reward / w.beta - w.log_partition()[:, None], 0.0)
    tol = 1e-9 * max(1.0, klv)
    assert w.bound_at("dv", w.reward / w.beta + shift) == pytest.approx(klv, abs=tol)
    assert w.bound_at("nwj", log_ratio + 1.0) == pytest.approx(klv, abs=tol)
    assert w.bound_at("tuba", log_ratio + 0.3, log_baseline=0.3) == pytest.approx(klv, abs=tol)
    js_want = sum(w.prompt_weights[x] * (2 * jsd(p[x], q[x]) - 2 * math.log(2))
                  for x in range(w.n_prompts))
    assert w.bound_at("js", log_ratio) == pytest.approx(js_want, abs=1e-9)
    noise = np.random.default_rng(seed).standard_normal(q.shape)
    for name in ("dv", "nwj", "tuba"):
        assert w.bound_at(name, log_ratio + noise) <= klv + 1e-9


def test_infonce_at_critic_by_enumeration():
    """bound_at('infonce', T, K) equals a loop over all K-tuples, is ≤ min(KL, log K)."""
    w = _world(2, 0.5, n_x=2, n_y=3)
    p, q = w.optimal_policy(), w.pi_ref
    t = np.where(q > 0, w.reward / w.beta, 0.0)
    for k in (2, 3):
        total = 0.0
        for x in range(w.n_prompts):
            for ys in np.ndindex(*(w.n_responses,) * k):
                prob = p[x, ys[0]] * np.prod([q[x, y] for y in ys[1:]])
                if prob == 0:
                    continue
                vals = [t[x, y] for y in ys]
                total += w.prompt_weights[x] * prob * (
                    vals[0] - (max(vals) + math.log(sum(math.exp(v - max(vals)) for v in vals)))
                    + math.log(k))
        got = w.bound_at("infonce", t, K=k)
        assert got == pytest.approx(total, abs=1e-12)
        assert got <= min(w.kl_to_reference(p), math.log(k)) + 1e-12


@pytest.mark.parametrize("kind", ["bradley_terry", "base_labelled"])
def test_pair_distribution(kind):
    """Sums to 1; zero on w == l; prompt marginal D; conditional given the unordered pair is
    BT with the true reward (or the reward's argmax); independent loop for one prompt."""
    w = _world(7, 0.5, zero_fraction=0.0, n_x=2, n_y=4)
    pd = w.pair_distribution(kind)
    assert pd.shape == (2, 4, 4)
    assert pd.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.diagonal(pd, axis1=1, axis2=2) == 0)
    np.testing.assert_allclose(pd.sum((1, 2)), w.prompt_weights, rtol=1e-12)
    x = 1
    q, r = w.pi_ref[x], w.reward[x]
    want = np.zeros((4, 4))
    for a in range(4):
        for b in range(4):
            if a == b:
                continue
            if kind == "bradley_terry":
                pw = 1 / (1 + math.exp(-(r[a] - r[b])))
            else:
                pw = float(r[a] > r[b])
            want[a, b] += q[a] * q[b] * pw  # (y1, y2) = (a, b), a chosen
            want[a, b] += q[b] * q[a] * pw  # (y1, y2) = (b, a), a chosen
    want /= want.sum()
    np.testing.assert_allclose(pd[x] / pd[x].sum(), want, rtol=1e-12)


def test_pair_distribution_drops_prompts_without_pairs():
    d = np.array([0.25, 0.75])
    q = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    w = CategoricalWorld(d, q, np.arange(6.0).reshape(2, 3), 1.0)
    pd = w.pair_distribution()
    assert pd[0].sum() == 0
    assert pd[1].sum() == pytest.approx(1.0)
    w1 = CategoricalWorld(np.array([1.0]), np.array([[1.0, 0.0]]), np.zeros((1, 2)), 1.0)
    with pytest.raises(ValueError, match="no prompt"):
        w1.pair_distribution()
