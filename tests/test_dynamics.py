"""Exact dynamics (toy_models.dynamics) and claim C3 (experiments.claims_c3).

The expected loss is checked against an independent numpy transcription of the DPO and MIO
formulas (docs/THEORY.md §2) and its autograd gradient against finite differences of that
transcription; the recorded metrics against :class:`toy_models.world.CategoricalWorld`'s own
(scipy) quantities; the runs for determinism; tabular DPO on Bradley–Terry pairs for convergence
to pi*; and claim C3 in one world fixed before any C3 result was looked at.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from experiments.claims_c3 import (
    C3Grid,
    canonical_trajectories,
    displacement_world,
    labelled_pairs_world,
    summarise_decline,
)
from toy_models.dynamics import (
    METRICS,
    expected_loss,
    gradient_descent,
    gradient_descent_many,
    policy_log_probs,
)
from toy_models.world import CategoricalWorld

# --------------------------------------------------------------------------------------------
# An independent numpy transcription of the exact expected loss.
# --------------------------------------------------------------------------------------------


def _np_log_ratios(theta, log_ref, features=None):
    s = theta if features is None else features @ theta
    with np.errstate(divide="ignore"):
        return s - logsumexp(log_ref + s, axis=-1, keepdims=True)


def _np_expected_loss(kind, theta, world, pairs, features=None, beta=None):
    beta = world.beta if beta is None else beta
    with np.errstate(divide="ignore"):
        log_ref = np.log(world.pi_ref)
    z = _np_log_ratios(theta, log_ref, features)
    x, w, l = np.nonzero(pairs)
    t_w, t_l = beta * z[x, w], beta * z[x, l]
    if kind == "dpo":  # softplus(-(T_w - T_l))
        per_pair = np.logaddexp(0.0, -(t_w - t_l))
    elif kind == "mio":  # softplus(-T_w) + ½ softplus(T_w) + ½ softplus(T_l)
        per_pair = (np.logaddexp(0.0, -t_w) + 0.5 * np.logaddexp(0.0, t_w)
                    + 0.5 * np.logaddexp(0.0, t_l))
    else:
        raise AssertionError(kind)
    return float(pairs[x, w, l] @ per_pair)



@pytest.fixture(scope="module")
def world():
    return CategoricalWorld.random(3, n_prompts=3, n_responses=4, beta=0.5)


@pytest.fixture(scope="module")
def features():
    return np.random.default_rng(7).standard_normal((3, 4, 2))


@pytest.mark.parametrize("kind", ["dpo", "mio"])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("pair_kind", ["bradley_terry", "base_labelled"])
def test_expected_loss_matches_numpy_and_finite_differences(world, features, kind, shared,
                                                            pair_kind):
    """E_P[loss](theta) equals the numpy transcription (1e-12) and its autograd gradient equals
    central finite differences of the numpy value (h = 1e-6, abs. tol 1e-7)."""
    pairs = world.pair_distribution(pair_kind)
    phi = features if shared else None
    rng = np.random.default_rng(11)
    theta_np = rng.standard_normal(2 if shared else (3, 4))
    theta = torch.tensor(theta_np, requires_grad=True)
    value = expected_loss(kind, theta, world, pair_kind, features=phi)
    assert value.dtype == torch.float64
    ref = _np_expected_loss(kind, theta_np, world, pairs, phi)
    assert abs(float(value.detach()) - ref) < 1e-12
    (grad,) = torch.autograd.grad(value, theta)
    h = 1e-6
    fd = np.zeros_like(theta_np)
    for idx in np.ndindex(theta_np.shape):
        e = np.zeros_like(theta_np)
        e[idx] = h
        fd[idx] = (_np_expected_loss(kind, theta_np + e, world, pairs, phi)
                   - _np_expected_loss(kind, theta_np - e, world, pairs, phi)) / (2 * h)
    np.testing.assert_allclose(grad.numpy(), fd, atol=1e-7, rtol=0)


def test_a_wrong_policy_is_caught(world, monkeypatch):
    """Mutation check: log-ratios off by 1e-9 break the agreement with the numpy transcription
    that test_expected_loss_matches_numpy_and_finite_differences asserts (to 1e-12)."""
    import toy_models.dynamics as D

    pairs = world.pair_distribution("bradley_terry")
    theta_np = np.random.default_rng(11).standard_normal((3, 4))
    ref = _np_expected_loss("dpo", theta_np, world, pairs)

    def error() -> float:
        return abs(float(expected_loss("dpo", torch.tensor(theta_np), world, pairs)) - ref)

    assert error() < 1e-12
    real = D.policy_log_ratios
    monkeypatch.setattr(D, "policy_log_ratios", lambda *a: real(*a) * (1 + 1e-9))
    assert error() > 1e-12


@pytest.mark.parametrize("kind", ["dpo", "mio", "ipo", "bco_pair", "nwj", "infonce", "hinge"])
def test_expected_loss_gradcheck(world, features, kind):
    """torch.autograd.gradcheck of the exact expected loss, tabular and shared-feature."""
    rng = np.random.default_rng(5)
    for phi, shape in ((None, (3, 4)), (features, (2,))):
        theta = torch.tensor(0.3 * rng.standard_normal(shape), requires_grad=True)
        if kind == "hinge":  # relu kink: keep away from it by checking the smooth side only
            theta = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda t, phi=phi: expected_loss(kind, t, world, "bradley_terry", features=phi),
            (theta,),
        )


def test_policy_log_probs_is_softmax_and_keeps_reference_zeros():
    """Tabular policy = softmax(log pi_ref + theta); zeros of pi_ref stay zero."""
    pi_ref = torch.tensor([[0.5, 0.0, 0.5], [0.2, 0.3, 0.5]], dtype=torch.float64)
    theta = torch.tensor([[1.0, 5.0, -1.0], [0.0, 2.0, 0.5]], dtype=torch.float64)
    log_ref = torch.log(pi_ref)
    log_pi = policy_log_probs(theta, log_ref)
    expected = torch.softmax(log_ref + theta, -1)
    torch.testing.assert_close(log_pi.exp(), expected, rtol=0, atol=1e-15)
    assert float(log_pi.exp()[0, 1]) == 0.0
    assert torch.equal(policy_log_probs(torch.zeros(2, 3, dtype=torch.float64), log_ref), log_ref)


# --------------------------------------------------------------------------------------------
# Runs: determinism, batching, metrics.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 5])
def test_runs_are_deterministic(world, features, batch_size):
    """Same inputs give identical arrays, full batch and mini-batch."""
    kw = dict(features=features, lr=0.5, steps=30, batch_size=batch_size, seed=3)
    a = gradient_descent(world, "mio", **kw)
    b = gradient_descent(world, "mio", **kw)
    for m in (*METRICS, "theta"):
        assert np.array_equal(getattr(a, m), getattr(b, m)), m
    if batch_size is not None:
        c = gradient_descent(world, "mio", **{**kw, "seed": 4})
        assert not np.array_equal(a.theta, c.theta)


def test_batched_runs_equal_single_runs(world, features):
    """gradient_descent_many gives each world's own run (to 1e-12), with per-world lr/seed."""
    other = CategoricalWorld.random(9, n_prompts=3, n_responses=4, beta=0.5)
    phi2 = np.random.default_rng(1).standard_normal((3, 4, 2))
    for batch_size in (None, 4):
        many = gradient_descent_many([world, other], "dpo", features=[features, phi2],
                                     lr=[0.5, 1.5], steps=25, batch_size=batch_size, seeds=[2, 8])
        singles = [gradient_descent(world, "dpo", features=features, lr=0.5, steps=25,
                                    batch_size=batch_size, seed=2),
                   gradient_descent(other, "dpo", features=phi2, lr=1.5, steps=25,
                                    batch_size=batch_size, seed=8)]
        for got, want in zip(many, singles, strict=True):
            for m in (*METRICS, "theta"):
                np.testing.assert_allclose(getattr(got, m), getattr(want, m), rtol=1e-12,
                                           atol=1e-12, err_msg=m)


@pytest.mark.parametrize("shared", [False, True])
def test_metrics_agree_with_the_world(world, features, shared):
    """The recorded metrics equal CategoricalWorld's own (scipy) quantities at the final policy,
    and J(pi*) - J(pi) = beta · kl_to_optimal."""
    phi = features if shared else None
    pairs = world.pair_distribution("bradley_terry")
    traj = gradient_descent(world, "dpo", pairs=pairs, features=phi, lr=1.0, steps=40)
    with np.errstate(divide="ignore"):
        log_ref = np.log(world.pi_ref)
    log_pi = log_ref + _np_log_ratios(traj.theta, log_ref, phi)
    pi = np.exp(log_pi)
    x, w, l = np.nonzero(pairs)
    p = pairs[x, w, l]
    t_w = world.beta * (log_pi[x, w] - log_ref[x, w])
    t_l = world.beta * (log_pi[x, l] - log_ref[x, l])
    want = {
        "chosen_logps": p @ log_pi[x, w],
        "rejected_logps": p @ log_pi[x, l],
        "margin": p @ (t_w - t_l),
        "reward_accuracy": p @ (t_w > t_l),
        "kl_to_reference": world.kl_to_reference(pi),
        "expected_reward": world.expected_reward(pi),
        "kl_to_optimal": world.kl_to_optimal(pi),
        "loss": _np_expected_loss("dpo", traj.theta, world, pairs, phi),
    }
    for name, value in want.items():
        assert abs(getattr(traj, name)[-1] - value) < 1e-10, name
    gap = world.rlhf_objective(world.optimal_policy()) - world.rlhf_objective(pi)
    assert abs(gap - world.beta * traj.kl_to_optimal[-1]) < 1e-10
    assert traj.reward_accuracy[0] == 0.0 and traj.margin[0] == 0.0  # pi = pi_ref exactly


@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), zero_fraction=st.sampled_from([0.0, 0.3]),
       pair_kind=st.sampled_from(["bradley_terry", "base_labelled"]))
def test_step_zero_metrics_are_those_of_the_reference(seed, zero_fraction, pair_kind):
    """At step 0 the policy is pi_ref exactly (also with zeros in pi_ref): chosen/rejected
    log-likelihoods are E_P log pi_ref, margin and accuracy are exactly 0, the KL to pi_ref 0 to
    round-off, the KL
    to pi* is KL(pi_ref ‖ pi*) (world's scipy value), E r = E_{pi_ref} r."""
    w = CategoricalWorld.random(seed, n_prompts=3, n_responses=5, beta=0.7,
                                zero_fraction=zero_fraction)
    try:
        pairs = w.pair_distribution(pair_kind)
    except ValueError:  # no prompt with a valid pair (e.g. all rewards tied): nothing to test
        return
    traj = gradient_descent(w, "mio", pairs=pairs, steps=0)
    x, yw, yl = np.nonzero(pairs)
    p = pairs[x, yw, yl]
    assert traj.chosen_logps.shape == (1,)
    assert abs(traj.chosen_logps[0] - p @ np.log(w.pi_ref[x, yw])) < 1e-12
    assert abs(traj.rejected_logps[0] - p @ np.log(w.pi_ref[x, yl])) < 1e-12
    assert traj.margin[0] == 0.0 and traj.reward_accuracy[0] == 0.0
    assert abs(traj.kl_to_reference[0]) < 1e-15  # -log Σ pi_ref: 0 up to round-off
    assert abs(traj.kl_to_optimal[0] - w.kl_to_optimal(w.pi_ref)) < 1e-12
    assert abs(traj.expected_reward[0] - w.expected_reward(w.pi_ref)) < 1e-12


def test_tabular_dpo_on_bradley_terry_pairs_converges_to_the_optimal_policy():
    """DPO's population optimum under Bradley–Terry pairs is pi* (docs/THEORY.md §2): the KL to pi*
    falls at every checkpoint and ends below 2% of its start."""
    w = CategoricalWorld.random(0, n_prompts=3, n_responses=4, beta=0.5)
    traj = gradient_descent(w, "dpo", pairs="bradley_terry", lr=2.0, steps=600)
    kl = traj.kl_to_optimal[::100]
    assert np.all(np.diff(kl) < 0)
    assert kl[-1] < 0.02 * kl[0]
    # The exact loss falls at every step (gradient descent with a small enough rate).
    assert np.all(np.diff(traj.loss) <= 1e-15)


def test_minibatch_dpo_also_approaches_the_optimal_policy():
    """Sampled pairs (batch 32, seeded) bring the KL to pi* below 25% of its start."""
    w = CategoricalWorld.random(0, n_prompts=3, n_responses=4, beta=0.5)
    traj = gradient_descent(w, "dpo", lr=1.0, steps=400, batch_size=32, seed=0)
    assert traj.kl_to_optimal[-1] < 0.25 * traj.kl_to_optimal[0]


def test_mio_and_nca_pair_trajectories_are_identical(world, features):
    """mio is, term for term, TRL's nca_pair: identical dynamics."""
    a = gradient_descent(world, "mio", features=features, lr=1.0, steps=20)
    b = gradient_descent(world, "nca_pair", features=features, lr=1.0, steps=20)
    for m in (*METRICS, "theta"):
        assert np.array_equal(getattr(a, m), getattr(b, m)), m


def test_divergence_is_reported_and_isolated(world):
    """A run whose rate is far too large is stopped and marked (NaN from that step); the other
    world of the same batch is untouched."""
    many = gradient_descent_many([world, world], "ipo", lr=[1e4, 0.05], steps=50)
    bad, good = many
    assert bad.diverged_at is not None and 0 < bad.diverged_at <= 50
    assert np.all(np.isnan(bad.chosen_logps[bad.diverged_at:]))
    assert np.all(np.isfinite(bad.chosen_logps[:bad.diverged_at]))
    assert np.isnan(bad.peak_to_final_drop())
    assert bad.chosen_peak_step < bad.diverged_at
    single = gradient_descent(world, "ipo", lr=0.05, steps=50)
    assert good.diverged_at is None
    np.testing.assert_allclose(good.chosen_logps, single.chosen_logps, rtol=1e-12, atol=1e-12)


def test_bad_input_raises(world, features):
    with pytest.raises(ValueError, match="lr"):
        gradient_descent(world, "dpo", lr=0.0)
    with pytest.raises(ValueError, match="steps"):
        gradient_descent(world, "dpo", steps=-1)
    with pytest.raises(ValueError, match="batch_size"):
        gradient_descent(world, "dpo", batch_size=0)
    with pytest.raises(ValueError, match="unknown preference loss"):
        gradient_descent(world, "not_a_loss", steps=1)
    with pytest.raises(ValueError, match="features"):
        gradient_descent(world, "dpo", features=features[:, :3], steps=1)
    with pytest.raises(ValueError, match="sum to 1"):
        gradient_descent(world, "dpo", pairs=0.5 * world.pair_distribution(), steps=1)
    zero_world = CategoricalWorld(np.array([1.0]), np.array([[0.5, 0.5, 0.0]]),
                                  np.zeros((1, 3)), 1.0)
    pairs = np.zeros((1, 3, 3))
    pairs[0, 0, 2] = 1.0
    with pytest.raises(ValueError, match="pi_ref = 0"):
        gradient_descent(zero_world, "dpo", pairs=pairs, steps=1)
    with pytest.raises(ValueError, match="metric"):
        gradient_descent(world, "dpo", steps=1).peak_to_final_drop("nope")
    with pytest.raises(ValueError, match="theta"):
        expected_loss("dpo", torch.zeros(3, dtype=torch.float64), world)


# --------------------------------------------------------------------------------------------
# Claim C3.
# --------------------------------------------------------------------------------------------


def test_displacement_world_has_the_stated_geometry():
    """Unit features; cosine(chosen, rejected) = overlap; one pair per prompt; deterministic."""
    c3 = displacement_world(n_prompts=5, n_responses=6, dim=4, overlap=0.7, beta=0.2, seed=1)
    norms = np.linalg.norm(c3.features, axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-12)
    cos = (c3.features[:, 0] * c3.features[:, 1]).sum(-1)
    np.testing.assert_allclose(cos, 0.7, atol=1e-12)
    assert c3.pairs.sum() == pytest.approx(1.0) and np.count_nonzero(c3.pairs) == 5
    assert np.all(c3.pairs[:, 0, 1] == 0.2)
    again = displacement_world(n_prompts=5, n_responses=6, dim=4, overlap=0.7, beta=0.2, seed=1)
    assert np.array_equal(again.features, c3.features)
    assert np.array_equal(again.world.pi_ref, c3.world.pi_ref)
    with pytest.raises(ValueError, match="overlap"):
        displacement_world(overlap=1.0)
    with pytest.raises(ValueError, match="n_responses"):
        displacement_world(n_responses=1)


def test_labelled_pairs_world_uses_the_worlds_pair_distribution():
    """The second C3 setting: pairs are the world's own base-labelled pairs; unit features."""
    c3 = labelled_pairs_world(pair_kind="base_labelled", n_prompts=3, n_responses=4, dim=5,
                              seed=2)
    np.testing.assert_array_equal(c3.pairs, c3.world.pair_distribution("base_labelled"))
    np.testing.assert_allclose(np.linalg.norm(c3.features, axis=-1), 1.0, atol=1e-12)
    assert c3.features.shape == (3, 4, 5) and np.isnan(c3.overlap)
    again = labelled_pairs_world(pair_kind="base_labelled", n_prompts=3, n_responses=4, dim=5,
                                 seed=2)
    assert np.array_equal(again.features, c3.features)


def test_c3_canonical_world_mio_drops_less_than_dpo():
    """Claim C3 in the world fixed before any C3 result was seen (18:20 UTC, before the C3 runs):
    displacement_world(n_prompts=8, n_responses=8, dim=8, overlap=0.9, beta=0.1, seed=0), one
    pair per prompt, full-batch gradient descent with lr = 10 for 2000 steps. DPO's mean chosen
    log-likelihood ends below its peak while its margin has grown; MIO's peak-to-final drop is
    smaller than DPO's."""
    c3 = displacement_world(n_prompts=8, n_responses=8, dim=8, overlap=0.9, beta=0.1, seed=0)
    runs = canonical_trajectories(c3, losses=("dpo", "mio"), lr=10.0, steps=2000)
    dpo, mio = summarise_decline(runs["dpo"]), summarise_decline(runs["mio"])
    assert dpo["drop"] > 0.0
    assert dpo["margin_final"] > dpo["margin_at_peak"]
    assert mio["drop"] < dpo["drop"]


def test_decline_figure_quick_is_consistent(tmp_path):
    """fig_c3_decline (quick) writes PNG/PDF/JSON; the grid has the stated shape and its drops
    equal those of single runs."""
    from figures import fig_c3_decline

    paths = fig_c3_decline.make(tmp_path, quick=True)
    assert sorted(p.suffix for p in paths) == [".json", ".pdf", ".png"]
    assert all(p.stat().st_size > 0 for p in paths)
    out = json.loads((tmp_path / "c3_decline.json").read_text())
    grid = fig_c3_decline.grid(quick=True)
    for kind in grid.losses:
        assert np.array(out["drop"][kind], dtype=float).shape == (1, 1, 2, 2, 1)
    # every cell of dpo: the drop max_t c_t - c_T of a direct, unbatched run
    for kind in ("dpo",):
        for a, n_resp in enumerate(grid.n_responses):
            for b, overlap in enumerate(grid.overlaps):
                c3 = displacement_world(n_prompts=grid.n_prompts, n_responses=n_resp,
                                        dim=grid.dim, overlap=overlap, beta=grid.betas[0],
                                        seed=grid.seeds[0])
                single = gradient_descent(c3.world, kind, pairs=c3.pairs, features=c3.features,
                                          lr=grid.lrs[0], steps=grid.steps)
                chosen = single.chosen_logps
                assert out["drop"][kind][0][0][a][b][0] == pytest.approx(
                    float(chosen.max() - chosen[-1]), abs=1e-10), (kind, n_resp, overlap)


@pytest.mark.slow
def test_trajectories_figure_quick(tmp_path):
    """fig_c3_trajectories (quick) writes PNG/PDF/JSON; mio and nca_pair rows are identical."""
    from figures import fig_c3_trajectories

    paths = fig_c3_trajectories.make(tmp_path, quick=True)
    assert sorted(p.suffix for p in paths) == [".json", ".pdf", ".png"]
    out = json.loads((tmp_path / "c3_trajectories.json").read_text())
    for row in out["rows"]:
        assert row["summary"]["mio"] == row["summary"]["nca_pair"]
        assert row["steps"] == 100


def test_c3_grid_config_is_validated():
    with pytest.raises(ValueError, match="overlaps"):
        C3Grid(overlaps=(0.5, 1.0))
    with pytest.raises(ValueError, match="steps"):
        C3Grid(steps=0)
    with pytest.raises(ValueError, match="betas"):
        C3Grid(betas=())
    with pytest.raises(ValueError, match="n_responses"):
        C3Grid(n_responses=(1,))


def test_minibatch_check_structure_and_full_batch_row():
    """minibatch_check's full-batch row equals a direct full-batch run; sampled rows per seed."""
    from experiments.claims_c3 import minibatch_check

    out = minibatch_check(batch_sizes=(2,), seeds=(0, 1), losses=("dpo",), steps=30)
    full, sampled = out["runs"]
    assert full["batch_size"] is None and sampled["batch_size"] == 2
    assert len(sampled["per_seed"]) == 2
    c3 = displacement_world()
    direct = gradient_descent(c3.world, "dpo", pairs=c3.pairs, features=c3.features, lr=10.0,
                              steps=30)
    assert full["per_seed"][0] == summarise_decline(direct)
    assert sampled["per_seed"][0] != sampled["per_seed"][1]  # different seeds, different pairs
