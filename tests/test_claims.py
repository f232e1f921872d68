"""Tests of claims C1, C2, C4 (experiments.claims) and their figures, against independent
computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from experiments.claims import (
    _needle_world,
    claim_c1,
    claim_c2,
    claim_c4,
    reinforce_rlhf,
)
from mi_bounds.bounds import dv_bound
from toy_models.optimum import population_optimum
from toy_models.oracle import kl
from toy_models.world import CategoricalWorld

# --------------------------------------------------------------------------------------------
# C1
# --------------------------------------------------------------------------------------------


@settings(max_examples=60)
@given(st.integers(0, 100_000), st.floats(0.02, 10.0), st.floats(-5, 5))
def test_c1_identities_on_random_worlds(seed, beta, shift):
    """With T = r/β + c, per prompt: DV(T; pi*, pi_ref) = KL(pi* ‖ pi_ref) (scipy oracle), and
    J(pi*) = E_x[E_pi* r - β KL] = β E_x log Z (log Z by scipy logsumexp), to round-off."""
    w = CategoricalWorld.random(seed, 3, 6, beta, reward_scale=2.0, zero_fraction=0.25)
    p = w.optimal_policy()
    for x in range(w.n_prompts):
        s = w.pi_ref[x] > 0
        t = torch.tensor(w.reward[x, s] / beta + shift)
        dv = float(dv_bound(t, t, pos_weight=torch.tensor(p[x, s]),
                            neg_weight=torch.tensor(w.pi_ref[x, s])))
        want = float(kl(p[x], w.pi_ref[x]))
        assert dv == pytest.approx(want, rel=1e-9, abs=1e-11)
    log_z = np.array([logsumexp(w.reward[x] / beta, b=w.pi_ref[x]) for x in range(w.n_prompts)])
    j_direct = sum(w.prompt_weights[x] * ((p[x] * w.reward[x]).sum() - beta * kl(p[x], w.pi_ref[x]))
                   for x in range(w.n_prompts))
    assert j_direct == pytest.approx(beta * w.prompt_weights @ log_z, rel=1e-10, abs=1e-12)
    assert w.rlhf_objective(p) == pytest.approx(j_direct, rel=1e-12, abs=1e-14)


def test_claim_c1_reports_round_off():
    res = claim_c1(n_worlds=4, betas=(0.1, 1.0), n_eps=5)
    for key in ("max_dv_gap", "max_j_gap", "max_j_dv_gap", "max_critic_gap"):
        assert res[key] < 1e-10, key
    curve = res["curve"]
    i0 = curve["eps"].index(0.0)
    assert curve["dv"][i0] == pytest.approx(curve["kl"], abs=1e-12)
    assert max(curve["dv"]) <= curve["kl"] + 1e-12
    assert max(curve["nwj"]) <= curve["kl"] + 1e-12


# --------------------------------------------------------------------------------------------
# C2
# --------------------------------------------------------------------------------------------


@settings(max_examples=60)
@given(st.integers(0, 100_000), st.floats(0.01, 10.0), st.floats(0.0, 700.0))
def test_c2_support(seed, beta, big):
    """pi*(y|x) = 0 exactly wherever pi_ref(y|x) = 0, whatever reward those cells get."""
    w0 = CategoricalWorld.random(seed, 3, 6, beta, zero_fraction=0.4)
    zero = w0.pi_ref == 0
    w = CategoricalWorld(w0.prompt_weights, w0.pi_ref, np.where(zero, big, w0.reward), beta)
    p = w.optimal_policy()
    assert np.all(p[zero] == 0.0)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("p_right", [1e-1, 1e-4, 1e-9])
@pytest.mark.parametrize("beta", [0.1, 2.0])
def test_c2_gap_closed_form(p_right, beta):
    """pi*(right) = ½ exactly at gap β log((1-p)/p) (others reward 0), and not below it."""
    gap = beta * math.log((1 - p_right) / p_right)
    assert _needle_world(p_right, 8, beta, gap).optimal_policy()[0, 0] == pytest.approx(0.5)
    assert _needle_world(p_right, 8, beta, 0.99 * gap).optimal_policy()[0, 0] < 0.5


def test_c2_reinforce():
    """Deterministic per seed; an answer with pi_ref = 1e-2 is found at once and learnt; one
    with pi_ref = 1e-12 is never sampled and the policy does not learn it."""
    easy = _needle_world(1e-2, 8, 0.05, 1.0)
    a = reinforce_rlhf(easy, steps=150, batch_size=32, lr=10.0, seed=3)
    b = reinforce_rlhf(easy, steps=150, batch_size=32, lr=10.0, seed=3)
    assert a == b
    assert a["first_hit"][0] <= 5
    assert a["final_pi_best"][0] > 0.9
    assert a["J_final"] > a["J_ref"]
    hard = _needle_world(1e-12, 8, 0.05, 1.0)
    h = reinforce_rlhf(hard, steps=150, batch_size=32, lr=10.0, seed=3)
    assert h["first_hit"][0] is None and h["hits"][0] == 0
    assert h["final_pi_best"][0] < 1e-11
    assert h["pi_star_best"][0] > 1e-4  # the exact optimum would have learnt something


def test_claim_c2_small():
    res = claim_c2(n_support_worlds=5, p_grid=(1e-2, 1e-8), rl_p=(1e-2,), rl_steps=30,
                   rl_seeds=(0,), betas=(0.5,))
    assert res["support"]["max_pi_star_on_zero_cells"] == 0.0
    assert res["support"]["n_zero_cells"] > 0
    assert res["gap_curve"]["max_rel_err"] < 1e-9


# --------------------------------------------------------------------------------------------
# C4
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_c4_dpo_recovers_optimal_policy(beta):
    """Under Bradley–Terry pairs with the true reward, DPO's population optimum is pi*."""
    w = CategoricalWorld.random(4, 2, 4, beta)
    res = population_optimum(w, "dpo")
    assert res["kl_to_optimal"] < 1e-10
    np.testing.assert_allclose(np.array(res["policy"]), w.optimal_policy(), atol=1e-5)


def test_c4_mio_optimum_by_independent_1d_minimisation():
    """One prompt, two responses: MIO's exact expected loss as a function of pi(y0) alone,
    minimised by scipy's bounded scalar search, agrees with population_optimum; it is not pi*."""
    beta = 0.5
    w = CategoricalWorld(np.ones(1), np.array([[0.3, 0.7]]), np.array([[1.0, 0.0]]), beta)
    s = 1 / (1 + math.exp(-1.0))  # BT: P(y0 chosen) = σ(r0 - r1)

    def sp(t):
        return np.logaddexp(0.0, t)

    def loss(a):
        t0 = beta * math.log(a / 0.3)
        t1 = beta * math.log((1 - a) / 0.7)
        # pair (w=y0, l=y1) w.p. s, (w=y1, l=y0) w.p. 1-s; mio = sp(-Tw) + ½sp(Tw) + ½sp(Tl)
        return (s * (sp(-t0) + 0.5 * sp(t0) + 0.5 * sp(t1))
                + (1 - s) * (sp(-t1) + 0.5 * sp(t1) + 0.5 * sp(t0)))

    best = minimize_scalar(loss, bounds=(1e-9, 1 - 1e-9), method="bounded",
                           options={"xatol": 1e-12})
    res = population_optimum(w, "mio")
    assert res["policy"][0][0] == pytest.approx(best.x, abs=1e-6)
    assert res["kl_to_optimal"] > 1e-4
    dpo = population_optimum(w, "dpo")
    assert dpo["policy"][0][0] == pytest.approx(w.optimal_policy()[0, 0], abs=1e-7)


def _population_kl_error(w, res) -> float:
    """|population_optimum's KL(pi ‖ pi_ref) - Σ pi log(pi/pi_ref) by hand| (numpy)."""
    pi = np.array(res["policy"])
    terms = np.where(pi > 0, pi * np.log(np.where(pi > 0, pi, 1.0) / w.pi_ref), 0.0)
    return abs(res["kl_to_reference"] - float(w.prompt_weights @ terms.sum(1)))


def test_population_optimum_kl_and_a_wrong_kl_is_caught(monkeypatch):
    """population_optimum's KLs equal the hand-written sums; mutation check: a KL off by 1e-9
    relative is caught."""
    import toy_models.optimum as C

    w = CategoricalWorld.random(4, 2, 4, 0.5)
    assert _population_kl_error(w, population_optimum(w, "mio")) < 1e-12
    real = C.kl_log
    monkeypatch.setattr(C, "kl_log", lambda *a, **k: real(*a, **k) * (1 + 1e-9))
    assert _population_kl_error(w, population_optimum(w, "mio")) > 1e-12


def test_population_optimum_needs_full_support():
    w = CategoricalWorld(np.ones(1), np.array([[0.0, 1.0, 0.0]]), np.zeros((1, 3)), 1.0)
    with pytest.raises(ValueError, match="pi_ref > 0"):
        population_optimum(w, "dpo")


# --------------------------------------------------------------------------------------------
# Figures (quick versions): they write PNG, PDF and JSON, and the JSON holds the claim's numbers.
# --------------------------------------------------------------------------------------------


def test_figure_c1(tmp_path):
    from figures import fig_c1_dv_tight

    paths = fig_c1_dv_tight.make(tmp_path, quick=True)
    assert {p.suffix for p in paths} == {".png", ".pdf", ".json"}
    data = json.loads((tmp_path / "c1_dv_tight.json").read_text())
    assert data["max_dv_gap"] < 1e-10


def test_figure_c4(tmp_path):
    from figures import fig_c4_population_optimum

    paths = fig_c4_population_optimum.make(tmp_path, quick=True)
    assert {p.suffix for p in paths} == {".png", ".pdf", ".json"}
    data = json.loads((tmp_path / "c4_population_optimum.json").read_text())
    for row in data["bradley_terry"]["results"]:
        assert row["losses"]["dpo"]["kl_to_optimal"] < 1e-10


def test_claim_c4_is_deterministic():
    a = claim_c4(betas=(0.5,), losses=["mio", "bco_pair"])
    b = claim_c4(betas=(0.5,), losses=["mio", "bco_pair"])
    assert a == b
