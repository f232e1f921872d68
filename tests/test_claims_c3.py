"""C3 compared like with like (experiments.claims_c3): shapes from mi_bounds.decline.shape, held-out
prompts, matched reads, and the matched-initial-gradient control."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.claims_c3 import (
    TOY_NOISE,
    C3Grid,
    curve_shape,
    displacement_world,
    heldout_world,
    matched_comparison,
    matched_grid,
    summarise_decline,
    trajectory_with_heldout,
)
from mi_bounds.decline.shape import decline_shape, value_at_first_crossing
from mi_bounds.preference import preference_loss
from toy_models.dynamics import gradient_descent


@pytest.fixture(scope="module")
def small():
    c3 = displacement_world(n_prompts=4, n_responses=6, dim=4, overlap=0.8, beta=0.2, seed=3)
    held = heldout_world(n_prompts=4, n_responses=6, dim=4, overlap=0.8, beta=0.2, seed=3)
    return c3, held


def test_summary_drop_and_shape_follow_the_one_definition(small):
    """drop = max c - c_T (mi_bounds.decline.shape), = Trajectory.peak_to_final_drop; the shape is
    decline_shape on the raw curve with noise level TOY_NOISE."""
    c3, _ = small
    traj = gradient_descent(c3.world, "dpo", pairs=c3.pairs, features=c3.features, lr=5.0,
                            steps=200)
    s = summarise_decline(traj)
    assert s["drop"] == pytest.approx(traj.peak_to_final_drop(), abs=1e-12)
    assert s["drop"] == pytest.approx(traj.chosen_logps.max() - traj.chosen_logps[-1], abs=1e-12)
    want = decline_shape(traj.chosen_logps, traj.step, noise=0.0, window=1, min_noise=TOY_NOISE)
    assert s["shape"] == want.shape
    # a hand-made curve: rises 0.5 by step 20 of 100, then falls 2
    t = np.arange(101.0)
    c = np.where(t <= 20, 0.025 * t, 0.5 - 2 * (t - 20) / 80)
    assert curve_shape(c, t)["shape"] == "rise-then-fall"
    assert curve_shape(-0.001 * t, t)["shape"] == "fall-from-start"  # 0.1 > 0.01
    assert curve_shape(-0.00005 * t, t)["shape"] == "no-decline"  # 0.005 < 0.01
    assert curve_shape(np.r_[c[:50], np.nan], np.arange(51.0)) is None


def test_recorded_parameters_reproduce_the_run_and_heldout_metrics_are_exact(small):
    c3, held = small
    traj, h = trajectory_with_heldout(c3, held, "mio", lr=5.0, steps=60)
    # step 0 is pi_ref on the held-out prompts: margin 0, KL 0, no pair ranked right (ties)
    assert h["margin"][0] == 0.0 and h["kl_to_reference"][0] == pytest.approx(0.0, abs=1e-15)
    assert h["reward_accuracy"][0] == 0.0
    np.testing.assert_allclose(h["chosen_logps"][0], np.log(held.world.pi_ref[:, 0]).mean(),
                               atol=1e-14)
    # the held-out metrics at the last step, from the final parameters, independently
    theta = traj.theta
    s = held.features @ theta + np.log(held.world.pi_ref)
    logp = s - np.logaddexp.reduce(s, axis=1, keepdims=True)
    pi, z = np.exp(logp), logp - np.log(held.world.pi_ref)
    assert h["chosen_logps"][-1] == pytest.approx(logp[:, 0].mean(), abs=1e-12)
    assert h["margin"][-1] == pytest.approx(0.2 * (z[:, 0] - z[:, 1]).mean(), abs=1e-12)
    assert h["kl_to_reference"][-1] == pytest.approx((pi * z).sum(1).mean(), abs=1e-12)
    assert h["reward_accuracy"][-1] == (z[:, 0] > z[:, 1]).mean()
    assert len(h["chosen_logps"]) == 61


def test_mio_initial_gradient_is_half_of_dpos():
    """At T = 0: dL_mio/dT = ½ dL_dpo/dT for both responses, so DPO at lr/2 takes MIO's first
    step exactly (the matched-initial-gradient control)."""
    z = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    zl = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    ref = torch.zeros(3, dtype=torch.float64)
    g = {}
    for kind in ("dpo", "mio"):
        g[kind] = torch.autograd.grad(preference_loss(kind, z, zl, ref, ref, beta=0.1), (z, zl))
    for a, b in zip(g["mio"], g["dpo"], strict=True):
        torch.testing.assert_close(a, 0.5 * b)
    c3 = displacement_world()
    half = gradient_descent(c3.world, "dpo", pairs=c3.pairs, features=c3.features, lr=5.0,
                            steps=1)
    mio = gradient_descent(c3.world, "mio", pairs=c3.pairs, features=c3.features, lr=10.0,
                           steps=1)
    np.testing.assert_allclose(half.theta, mio.theta, atol=1e-13)


def test_matched_comparison_reads(small):
    """Each loss is read where it first reaches MIO's final margin/KL/accuracy; MIO's own read
    at its final margin is its final change when its margin first gets there at the end."""
    c3, _ = small
    out = matched_comparison(c3, losses=("dpo", "mio"), lr=5.0, steps=80)
    cur = out["curves"]
    for q, key in (("margin", "margin"), ("kl", "kl_to_reference"),
                   ("reward_accuracy", "reward_accuracy"),
                   ("heldout_reward_accuracy", "heldout/reward_accuracy")):
        level = out["matched"][q]["level"]
        assert level == pytest.approx(cur["mio"][key][-1])
        for name in ("dpo", "mio", "dpo_half"):
            c = np.asarray(cur[name]["chosen_logps"])
            want = value_at_first_crossing(cur[name][key], c - c[0], level)
            got = out["matched"][q]["chosen_change"][name]
            assert got == pytest.approx(want, nan_ok=True)
    m = np.asarray(cur["mio"]["margin"])
    if np.all(np.diff(m) > 0):  # strictly growing: first reached at the last step
        assert out["matched"]["margin"]["chosen_change"]["mio"] == pytest.approx(
            out["matched"]["fixed_budget"]["mio"])
    for name in ("dpo", "mio", "dpo_half"):
        assert out["summary"][name]["heldout_shape"] in ("rise-then-fall", "fall-from-start",
                                                         "no-decline")
    assert out["summary"]["dpo_half"]["lr"] == 2.5


def test_matched_grid_structure():
    grid = C3Grid(betas=(0.1,), lrs=(10.0,), n_responses=(4,), overlaps=(0.5, 0.9), seeds=(0,),
                  steps=40, losses=("dpo", "mio"))
    out = matched_grid(grid)
    assert out["summary"]["n_worlds"] == 2 and len(out["rows"]) == 2
    row = out["rows"][1]
    c3 = displacement_world(n_prompts=8, n_responses=4, dim=8, overlap=0.9, beta=0.1, seed=0)
    dpo = gradient_descent(c3.world, "dpo", pairs=c3.pairs, features=c3.features, lr=10.0,
                           steps=40)
    mio = gradient_descent(c3.world, "mio", pairs=c3.pairs, features=c3.features, lr=10.0,
                           steps=40)
    want = value_at_first_crossing(dpo.margin, dpo.chosen_logps - dpo.chosen_logps[0],
                                   mio.margin[-1])
    assert row["margin"]["chosen_change"]["dpo"] == pytest.approx(want, abs=1e-10, nan_ok=True)
    assert row["fixed_budget"]["mio"] == pytest.approx(mio.chosen_logps[-1] - mio.chosen_logps[0])
    assert set(out["summary"]["shape_counts"]) == {"dpo", "mio", "dpo_half"}
