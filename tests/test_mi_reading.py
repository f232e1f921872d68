"""Tests of toy_models.mi_reading: which MI RLHF and DPO bound (proofs P12-P14).

The decomposition E_x KL(pi ‖ pi_ref) = I_pi(X;Y) + gap and the split of the gap are checked to
1e-12 on random worlds with zeros in pi_ref: per world with hypothesis strategies, and on 1,024
worlds at once per example (vectorised). A perturbed identity must fail on the same worlds. The
bounds are checked against their targets, their equality conditions and the C1 identity.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toy_models.mi_reading import (
    BOUND_NAMES,
    CRITICS,
    FORMS,
    READINGS,
    bound_target,
    bound_value,
    critic_table,
    decompose,
    decompose_tables,
    policy_marginal,
    reading_kl,
    reading_report,
)
from toy_models.oracle import kl
from toy_models.oracle import mutual_information as oracle_mi
from toy_models.strategies import categorical_worlds
from toy_models.world import CategoricalWorld

TOL = 1e-12
BATCH = 1024


def _sub_policy(world: CategoricalWorld, seed: int) -> np.ndarray:
    """A random policy pi << pi_ref with extra zeros (at least one cell per row kept)."""
    rng = np.random.default_rng(seed)
    pi = world.pi_ref * (rng.random(world.pi_ref.shape) > 0.4) * rng.random(world.pi_ref.shape)
    keep = world.pi_ref.argmax(1)
    pi[np.arange(world.n_prompts), keep] += world.pi_ref[np.arange(world.n_prompts), keep]
    return pi / pi.sum(1, keepdims=True)


def _residuals(terms: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """|KL - I - gap| and |gap - (KL(pi_Y ‖ pibar_ref) - E[pmi_ref])|."""
    return (np.abs(terms["kl_to_reference"] - terms["mutual_information"] - terms["gap"]),
            np.abs(terms["gap"] - terms["marginal_kl"] + terms["reference_pmi"]))


# --------------------------------------------------------------------------------------------
# The decomposition, world by world (hypothesis strategies).
# --------------------------------------------------------------------------------------------


def test_mutual_information_of_a_tiny_prompt_weight_is_finite():
    """D = [1, 5e-301], pi = identity: I = H(D) ≈ 5e-301·(log(1/5e-301) + 1) — the product
    D(x) pi_Y(y) underflows to 0 there, which once gave I = inf (found by hypothesis)."""
    w = CategoricalWorld(prompt_weights=np.array([1.0, 5e-301]),
                         pi_ref=np.array([[0.5, 0.5], [1 / 3, 2 / 3]]), reward=np.zeros((2, 2)),
                         beta=1.0)
    dec = decompose(w, np.eye(2))
    h = -(5e-301 * math.log(5e-301)) - math.log1p(-5e-301)  # H(D), exactly enough
    assert dec.mutual_information == pytest.approx(h, rel=1e-12)
    assert abs(dec.kl_to_reference - dec.mutual_information - dec.gap) <= TOL


@settings(max_examples=100)
@given(categorical_worlds(), st.integers(0, 2**32 - 1))
def test_decomposition_holds_for_pi_star_and_for_sparse_policies(world, seed):
    """E_x KL(pi ‖ pi_ref) = I_pi + gap and gap = KL(pi_Y ‖ pibar_ref) - E[pmi_ref] to 1e-12, for
    pi* and for a policy with extra zeros; each term against the oracle; no NaN."""
    for pi in (world.optimal_policy(), _sub_policy(world, seed)):
        dec = decompose(world, pi)
        values = [v for v in dec.as_dict().values() if not isinstance(v, bool)]
        assert all(math.isfinite(v) for v in values), dec
        assert abs(dec.kl_to_reference - dec.mutual_information - dec.gap) <= TOL
        assert abs(dec.gap - dec.marginal_kl + dec.reference_pmi) <= TOL
        assert dec.mutual_information == pytest.approx(world.mutual_information(pi), abs=TOL)
        assert dec.kl_to_reference == pytest.approx(world.kl_to_reference(pi), abs=TOL)
        assert dec.mutual_information >= -TOL and dec.marginal_kl >= -TOL  # KLs, to round-off


@settings(max_examples=100)
@given(categorical_worlds(x_independent=True), st.integers(0, 2**32 - 1))
def test_with_an_x_independent_reference_the_gap_is_a_kl(world, seed):
    """pi_ref(y|x) = rho(y): gap = KL(pi_Y ‖ rho) ≥ 0, so E_x KL(pi ‖ rho) ≥ I_pi(X;Y)."""
    for pi in (world.optimal_policy(), _sub_policy(world, seed)):
        dec = decompose(world, pi)
        assert not dec.reference_depends_on_x or world.n_prompts == 1
        assert abs(dec.reference_pmi) <= TOL
        assert dec.gap == pytest.approx(float(kl(policy_marginal(world, pi), world.pi_ref[0])),
                                        abs=TOL)
        assert dec.gap >= -TOL and dec.kl_to_reference >= dec.mutual_information - TOL


# --------------------------------------------------------------------------------------------
# The decomposition on 1,024 worlds at once, and a perturbed identity that must fail.
# --------------------------------------------------------------------------------------------


def _world_batch(seed: int, n_x: int, n_y: int):
    """BATCH random worlds of one shape: D (some zero weights), pi_ref with exact zeros (each
    world its own zero fraction in [0, 0.6]) and near-degenerate rows (the first third
    x-independent), pi* of random rewards and beta for the first half and random policies with
    extra zeros for the second."""
    rng = np.random.default_rng(seed)
    d = rng.dirichlet(np.ones(n_x), BATCH) * (rng.random((BATCH, n_x)) > 0.1)
    d[np.arange(BATCH), rng.integers(0, n_x, BATCH)] += 0.05
    d /= d.sum(1, keepdims=True)
    ref = rng.dirichlet(np.ones(n_y), (BATCH, n_x))
    zero_fraction = rng.uniform(0.0, 0.6, (BATCH, 1, 1))
    ref = np.where(rng.random(ref.shape) < zero_fraction, 0.0, ref)
    ref[rng.random((BATCH, n_x)) < 0.2, 0] += 1e6  # near-degenerate rows
    ref[..., -1] += (ref.sum(-1) == 0)  # at least one response per prompt
    ref /= ref.sum(-1, keepdims=True)
    ref[: BATCH // 3] = ref[: BATCH // 3, :1]  # x-independent
    half = BATCH // 2
    beta = np.exp(rng.uniform(np.log(0.05), np.log(20.0), (half, 1, 1)))
    with np.errstate(divide="ignore"):
        logits = np.log(ref[:half]) + rng.normal(0, 2, (half, n_x, n_y)) / beta
    opt = np.exp(logits - logits.max(-1, keepdims=True))
    sub = ref[half:] * (rng.random((BATCH - half, n_x, n_y)) > 0.4) * rng.random(
        (BATCH - half, n_x, n_y))
    sub[..., :] += ref[half:] * (sub.sum(-1, keepdims=True) == 0)
    pi = np.concatenate([opt, sub])
    return d, pi / pi.sum(-1, keepdims=True), ref


shapes = st.tuples(st.integers(1, 5), st.integers(2, 6))


@settings(max_examples=5)
@given(st.integers(0, 2**32 - 1), shapes)
def test_decomposition_on_1024_worlds_at_once(seed, shape):
    """Each example: 1,024 worlds (a third x-independent, zeros and near-degenerate rows in
    pi_ref, pi* and sparse policies); every identity to 1e-12 in every world."""
    d, pi, ref = _world_batch(seed, *shape)
    assert (ref == 0).any() and (shape[0] == 1 or (d == 0).any())  # exact zeros in every batch
    terms = decompose_tables(d, pi, ref)
    assert all(np.all(np.isfinite(v)) for v in terms.values())
    split, gap_split = _residuals(terms)
    assert split.max() <= TOL and gap_split.max() <= TOL
    indep = slice(0, BATCH // 3)
    assert np.abs(terms["reference_pmi"][indep]).max() <= TOL
    marg = np.einsum("bx,bxy->by", d[indep], pi[indep])  # pi_Y of each world
    assert np.abs(terms["gap"][indep] - kl(marg, ref[indep, 0])).max() <= TOL
    assert terms["gap"][indep].min() >= -TOL
    # spot: the batch MI against the scipy oracle, world by world
    for b in (0, BATCH // 2, BATCH - 1):
        assert terms["mutual_information"][b] == pytest.approx(
            oracle_mi(d[b][:, None] * pi[b]), abs=TOL)


def test_a_perturbed_identity_fails_on_the_same_worlds():
    """Mutation check: with pibar_ref in place of pi_Y in the gap, or the gap dropped, or the
    reference's pointwise MI dropped from the split, the identities fail (by far more than
    1e-12) on the worlds the tests above use."""
    d, pi, ref = _world_batch(0, 3, 4)
    terms = decompose_tables(d, pi, ref)
    joint = d[..., None] * pi
    ref_marg = np.einsum("bx,bxy->by", d, ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        wrong_gap = np.where(joint > 0, joint * (np.log(ref_marg)[:, None] - np.log(ref)), 0.0)
    wrong_gap = wrong_gap.sum((-2, -1))
    dep = slice(BATCH // 3, None)  # pi_ref depends on x: the mutations matter there
    mutated = [
        np.abs(terms["kl_to_reference"] - terms["mutual_information"] - wrong_gap),
        np.abs(terms["kl_to_reference"] - terms["mutual_information"]),
        np.abs(terms["gap"] - terms["marginal_kl"]),
    ]
    for residual in mutated:
        assert residual[dep].max() > 1e-3
    split, gap_split = _residuals(terms)
    assert split.max() <= TOL and gap_split.max() <= TOL  # the true identities hold there


# --------------------------------------------------------------------------------------------
# The bounds on the two readings.
# --------------------------------------------------------------------------------------------


@settings(max_examples=15)
@given(categorical_worlds(max_prompts=3, max_responses=4), st.integers(0, 2**32 - 1))
def test_bounds_are_below_their_targets_on_both_readings(world, seed):
    """DV ≤ KL, JS ≤ 2 JSD - 2 log 2, InfoNCE_K ≤ min(KL, log K) on each reading, at both critics
    and for pi* and a sparse policy; joint DV ≤ per-prompt DV; joint JS = per-prompt JS."""
    for pi in (world.optimal_policy(), _sub_policy(world, seed)):
        for reading in READINGS:
            target_kl = reading_kl(world, pi, reading)
            for critic in CRITICS:
                dv = bound_value(world, pi, "dv", reading, critic)
                dv_joint = bound_value(world, pi, "dv", reading, critic, form="joint")
                assert dv_joint <= dv + 1e-10 and dv <= target_kl + 1e-10
                js = bound_value(world, pi, "js", reading, critic)
                assert js == pytest.approx(
                    bound_value(world, pi, "js", reading, critic, form="joint"), abs=1e-12)
                assert js <= bound_target(world, pi, "js", reading) + 1e-10
                nce = bound_value(world, pi, "infonce", reading, critic, K=3)
                assert nce <= min(target_kl, math.log(3)) + 1e-10


@settings(max_examples=50)
@given(categorical_worlds())
def test_rlhf_reading_is_tight_at_the_reward_critic_per_prompt(world):
    """C1 in this module's terms: per-prompt DV(r/beta) on the RLHF reading = E_x KL(pi* ‖ pi_ref);
    the joint form falls short by exactly log E_x Z - E_x log Z."""
    opt = world.optimal_policy()
    kl_ref = decompose(world, opt).kl_to_reference
    assert bound_value(world, opt, "dv", "rlhf", "reward") == pytest.approx(kl_ref, abs=1e-11)
    log_z = world.log_partition()
    d = world.prompt_weights
    jensen = math.log(d @ np.exp(log_z - log_z.max())) + log_z.max() - d @ log_z
    assert bound_value(world, opt, "dv", "rlhf", "reward", form="joint") == pytest.approx(
        kl_ref - jensen, abs=1e-10)


def test_mi_reading_is_tight_exactly_when_pi_ref_equals_the_policy_marginal():
    """DV(r/beta) on the MI reading equals I(pi*) in the symmetric world (pi_ref = pi*_Y), and
    falls short once the symmetry is broken (pi_ref still x-independent)."""
    world = CategoricalWorld(np.full(4, 0.25), np.full((4, 4), 0.25), np.eye(4), 0.3)
    opt = world.optimal_policy()
    dec = decompose(world, opt)
    assert abs(dec.gap) <= TOL
    assert bound_value(world, opt, "dv", "mi", "reward") == pytest.approx(
        dec.mutual_information, abs=TOL)
    broken = dataclasses.replace(world, prompt_weights=np.array([0.4, 0.3, 0.2, 0.1]))
    opt = broken.optimal_policy()
    dec = decompose(broken, opt)
    assert dec.gap > 1e-3
    assert bound_value(broken, opt, "dv", "mi", "reward") < dec.mutual_information - 1e-4


def test_optimal_critics_make_dv_and_js_tight_and_implicit_critic_only_at_beta_one():
    """At T = log(P/Q) DV and JS reach their targets on both readings (cells with P = 0 get
    -inf); the implicit critic beta log(pi*/pi_ref) makes DV tight on the RLHF reading at
    beta = 1 and not at beta = 2."""
    world = CategoricalWorld.random(4, 3, 5, 1.0, reward_scale=2.0, zero_fraction=0.3)
    opt = world.optimal_policy()
    marg = policy_marginal(world, opt)
    with np.errstate(divide="ignore"):
        t_mi = np.log(opt) - np.log(marg)
        t_rl = np.where(opt > 0, np.log(opt) - np.log(np.where(world.pi_ref > 0, world.pi_ref,
                                                                 1.0)), -np.inf)
    for reading, t in (("mi", t_mi), ("rlhf", t_rl)):
        for bound in ("dv", "js"):
            for form in FORMS:
                assert bound_value(world, opt, bound, reading, t, form=form) == pytest.approx(
                    bound_target(world, opt, bound, reading), abs=1e-12)
    kl_ref = decompose(world, opt).kl_to_reference
    assert bound_value(world, opt, "dv", "rlhf", "implicit") == pytest.approx(kl_ref, abs=1e-12)
    two = dataclasses.replace(world, beta=2.0)
    opt2 = two.optimal_policy()
    assert bound_value(two, opt2, "dv", "rlhf", "implicit") < (
        decompose(two, opt2).kl_to_reference - 1e-3)


# --------------------------------------------------------------------------------------------
# Zeros, infinities and bad input.
# --------------------------------------------------------------------------------------------


def test_zeros_are_exact_and_nothing_is_nan():
    """pi_ref with zeros, a policy with more zeros: the implicit critic is -inf exactly where pi
    is 0, every reported number is finite; a policy leaving supp(pi_ref) has KL = gap = +inf
    (the identity in the extended reals) and no implicit critic."""
    world = CategoricalWorld([0.5, 0.5, 0.0], [[0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [1.0, 0.0, 0.0]],
                             np.arange(9.0).reshape(3, 3) / 3, 0.5)
    pi = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    t = critic_table(world, pi, "implicit")
    assert np.array_equal(np.isneginf(t), pi == 0) and np.all(np.isfinite(t[pi > 0]))
    report = reading_report(world, pi, K=2)
    flat = [report["decomposition"][k] for k in ("kl_to_reference", "mutual_information", "gap",
                                                 "marginal_kl", "reference_pmi")]
    flat += [v for b in report["bounds"].values() for r in b.values() for c in r.values()
             for v in c.values()]
    assert all(math.isfinite(v) for v in flat)
    outside = np.array([[0.5, 0.0, 0.5], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    dec = decompose(world, outside)
    assert dec.kl_to_reference == math.inf and dec.gap == math.inf
    assert dec.reference_pmi == -math.inf and math.isfinite(dec.mutual_information)
    with pytest.raises(ValueError, match="implicit critic is \\+inf"):
        critic_table(world, outside, "implicit")
    assert math.isfinite(bound_value(world, outside, "dv", "mi", "reward"))


def test_bad_input_raises_naming_the_argument():
    world = CategoricalWorld.random(0, 2, 3, 1.0)
    opt = world.optimal_policy()
    with pytest.raises(ValueError, match="unknown bound 'nwj'; valid bounds: dv, js, infonce"):
        bound_value(world, opt, "nwj", "mi", "reward")
    with pytest.raises(ValueError, match="unknown reading 'kl'; valid readings: mi, rlhf"):
        bound_value(world, opt, "dv", "kl", "reward")
    with pytest.raises(ValueError, match="unknown critic 'r'"):
        bound_value(world, opt, "dv", "mi", "r")
    with pytest.raises(ValueError, match="unknown form"):
        bound_value(world, opt, "dv", "mi", "reward", form="both")
    with pytest.raises(ValueError, match="infonce has only the per_prompt form"):
        bound_value(world, opt, "infonce", "mi", "reward", form="joint")
    with pytest.raises(ValueError, match="critic must have shape"):
        bound_value(world, opt, "dv", "mi", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="critic must be finite or -inf"):
        bound_value(world, opt, "dv", "mi", np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="pi must have shape"):
        decompose(world, np.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match="pi must sum to 1"):
        decompose(world, np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="must both have shape"):
        decompose_tables(world.prompt_weights, opt, np.ones((2, 4)) / 4)
    assert set(BOUND_NAMES) == {"dv", "js", "infonce"}
