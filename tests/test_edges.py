"""Regression tests: each example of a silent wrong result at a numerical edge .

Every test states the exact answer, computed independently (mpmath at 50 digits, or a closed
form), and checks that the library returns it or raises its documented error.
"""

from __future__ import annotations

import math
from pathlib import Path

import mpmath
import numpy as np
import pytest
import torch

from mi_bounds import bounds as B
from mi_bounds.preference import preference_loss
from toy_models import oracle
from toy_models.world import CategoricalWorld

mpmath.mp.dps = 50


def _mp_log_gibbs(pi_ref, reward, beta):
    """log pi* = log pi_ref + r/beta - log Z, in 50-digit arithmetic (rows of one prompt)."""
    terms = [mpmath.log(p) + mpmath.mpf(r) / beta for p, r in zip(pi_ref, reward, strict=True)]
    log_z = mpmath.log(mpmath.fsum(mpmath.exp(t) for t in terms))
    return [t - log_z for t in terms], log_z


def _mp_kl_ref_to_gibbs(pi_ref, reward, beta) -> float:
    log_opt, _ = _mp_log_gibbs(pi_ref, reward, beta)
    return float(mpmath.fsum(mpmath.mpf(p) * (mpmath.log(p) - lo)
                             for p, lo in zip(pi_ref, log_opt, strict=True)))


# ---- toy_models: pi* in log space -------------------------------------------------------------


@pytest.mark.parametrize(
    ("pi_ref", "expected"),
    [([0.5, 0.3, 0.2], 499.31), ([1 / 3, 1 / 3, 1 / 3], 665.57)],
)
def test_kl_to_optimal_small_beta_is_finite_and_exact(pi_ref, expected):
    """beta = 0.01, r = [10, 0, 0]: KL(pi_ref ‖ pi*) = log Z - E_ref[r]/beta, finite (not inf)."""
    reward, beta = [10.0, 0.0, 0.0], 0.01
    exact = _mp_kl_ref_to_gibbs(pi_ref, reward, beta)
    assert exact == pytest.approx(expected, abs=5e-3)  # the numbers
    w = CategoricalWorld(np.ones(1), np.array([pi_ref]), np.array([reward]), beta)
    assert w.kl_to_optimal(w.pi_ref) == pytest.approx(exact, rel=1e-13)


def test_implicit_critic_of_the_optimal_policy_is_finite_and_exact():
    """T(pi*) = r - beta log Z on supp(pi_ref), even where pi* underflows to 0 in float64."""
    pi_ref, reward, beta = [0.5, 0.3, 0.2], [10.0, 0.0, 0.0], 0.01
    _, log_z = _mp_log_gibbs(pi_ref, reward, beta)
    expected = [float(mpmath.mpf(r) - beta * log_z) for r in reward]
    w = CategoricalWorld(np.ones(1), np.array([pi_ref]), np.array([reward]), beta)
    for t in (w.implicit_critic(w.log_optimal_policy(), log=True),
              w.implicit_critic(w.optimal_policy())):
        np.testing.assert_allclose(t[0], expected, rtol=1e-12, atol=1e-12)
    assert w.kl_to_optimal(w.optimal_policy()) == 0.0


def test_dynamics_kl_to_optimal_at_step_zero_is_exact_for_small_beta():
    """The trajectory's kl_to_optimal at step 0 (pi = pi_ref) is KL(pi_ref ‖ pi*), finite."""
    from toy_models.dynamics import gradient_descent

    pi_ref, reward, beta = [0.5, 0.3, 0.2], [10.0, 0.0, 0.0], 0.01
    w = CategoricalWorld(np.ones(1), np.array([pi_ref]), np.array([reward]), beta)
    traj = gradient_descent(w, "dpo", steps=1, lr=0.1)
    assert traj.kl_to_optimal[0] == pytest.approx(_mp_kl_ref_to_gibbs(pi_ref, reward, beta),
                                                  rel=1e-12)


def test_population_optimum_kl_to_optimal_is_finite_for_small_beta():
    """claims.population_optimum reports KL(pi ‖ pi*) in log space: IPO's optimum keeps ~1e-22 of
    mass where pi* has e^-1000, so the exact KL is finite (today: inf)."""
    from toy_models.optimum import population_optimum

    pi_ref, reward, beta = [0.5, 0.3, 0.2], [10.0, 0.0, 0.0], 0.01
    w = CategoricalWorld(np.ones(1), np.array([pi_ref]), np.array([reward]), beta)
    res = population_optimum(w, "ipo", max_rounds=2)
    log_opt, _ = _mp_log_gibbs(pi_ref, reward, beta)
    pi = res["policy"][0]
    exact = float(mpmath.fsum(mpmath.mpf(p) * (mpmath.log(p) - lo)
                              for p, lo in zip(pi, log_opt, strict=True) if p > 0))
    assert 0 < pi[1] < 1e-12  # the regime of the bug
    assert res["kl_to_optimal"] == pytest.approx(exact, rel=1e-9, abs=0)


# ---- toy_models: oracle and validation ---------------------------------------------------------


def test_mutual_information_does_not_underflow():
    """I = H(X) for a diagonal joint; [[1e-170, 0], [0, 1 - 1e-170]] has I ≈ 3.92e-168."""
    joint = np.array([[1e-170, 0.0], [0.0, 1.0]])
    a = mpmath.mpf("1e-170")
    exact = float(-(a * mpmath.log(a)) - (1 - a) * mpmath.log(1 - a))
    assert oracle.mutual_information(joint) == pytest.approx(exact, rel=1e-12)


def test_float32_normalised_distributions_are_accepted():
    """A float32 probability vector normalised in float32 (sum error ~1e-8) is valid; the same
    error in a float64 vector is not (tolerances follow the dtype)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.dirichlet(np.ones(7)).astype(np.float32)
        p /= p.sum()
        oracle.as_distribution(p, "p")
    p32 = np.array([0.1, 0.2, 0.7], dtype=np.float32)
    assert abs(float(p32.astype(np.float64).sum()) - 1.0) > 1e-9  # really off in float64
    oracle.as_distribution(p32, "p")
    w = CategoricalWorld(np.ones(1, dtype=np.float32), p32[None], np.zeros((1, 3)), 1.0)
    pairs32 = w.pair_distribution().astype(np.float32)  # a float32 pair table is valid too
    from toy_models.dynamics import gradient_descent

    assert gradient_descent(w, "dpo", pairs=pairs32, steps=1).loss.shape == (2,)
    with pytest.raises(ValueError, match="p must sum to 1"):
        oracle.as_distribution(p32.astype(np.float64) + 1e-7 / 3, "p")


# ---- bounds: exp overflow, zero weights, scalar arguments ---------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fn", [B.nwj_bound, B.tuba_bound])
def test_exp_term_overflow_is_a_clear_error(fn, dtype):
    """NWJ at neg = [1e4, 0]: e^{1e4 - 1}/2 exceeds every float, so the value and its gradient
    are not representable: a ValueError naming ``neg`` and the threshold, never inf/NaN."""
    pos = torch.zeros(2, dtype=dtype)
    neg = torch.tensor([1e4, 0.0], dtype=dtype, requires_grad=True)
    with pytest.raises(ValueError, match=r"neg.*(88\.72|709\.78)"):
        fn(pos, neg)


@pytest.mark.parametrize("fn", [B.nwj_bound, B.tuba_bound])
def test_exp_term_just_below_the_threshold_is_finite_with_finite_gradient(fn):
    """float32 critics at 88 (just below the threshold): value and gradient finite and equal to
    the float64 computation within float32 round-off of the exponent (|x|·eps ≈ 1e-5 relative)."""
    pos = torch.tensor([0.0, 1.0])
    neg32 = torch.tensor([88.0, 0.0], requires_grad=True)
    neg64 = neg32.detach().double().requires_grad_(True)
    v32, v64 = fn(pos, neg32), fn(pos.double(), neg64)
    (g32,), (g64,) = torch.autograd.grad(v32, neg32), torch.autograd.grad(v64, neg64)
    assert math.isfinite(float(v32.detach())) and bool(torch.isfinite(g32).all())
    assert float(v32.detach()) == pytest.approx(float(v64.detach()), rel=5e-5)
    torch.testing.assert_close(g32.double(), g64, rtol=5e-5, atol=0)


def test_nwj_preference_loss_overflow_is_a_clear_error():
    """preference_loss('nwj') in float32 with T_l - 1 > 88.72: ValueError naming the rejected
    log-probabilities and the threshold (today: loss inf, gradient NaN)."""
    z = torch.zeros(2)
    pr = torch.tensor([100.0, 0.0], requires_grad=True)
    with pytest.raises(ValueError, match=r"policy_rejected_logps.*88\.72"):
        preference_loss("nwj", z, pr, z, z, beta=1.0)


@pytest.mark.parametrize("name", ["dv", "nwj", "tuba", "smile"])
def test_gradient_with_respect_to_a_zero_weight_is_the_exact_derivative(name):
    """d/dw_j of a bound at w_j = 0 is finite and equals the one-sided finite difference
    (w_j: 0 -> h, w_k: q_k -> q_k - h, so the weights still sum to one)."""
    fn = B.BOUNDS[name].fn
    t = torch.tensor([0.4, -1.0, 2.0, 0.7], dtype=torch.float64)
    p = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    q = torch.tensor([0.5, 0.0, 0.5, 0.0], dtype=torch.float64, requires_grad=True)
    value = fn(t, t, pos_weight=p, neg_weight=q)
    (grad,) = torch.autograd.grad(value, q)
    assert bool(torch.isfinite(grad).all()), grad
    h = 1e-7
    for j, k in [(1, 0), (3, 2)]:
        q2 = q.detach().clone()
        q2[j] += h
        q2[k] -= h
        fd = (float(fn(t, t, pos_weight=p, neg_weight=q2)) - float(value.detach())) / h
        assert float(grad[j] - grad[k]) == pytest.approx(fd, rel=1e-5, abs=1e-6), (j, fd)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_weight_on_a_huge_critic_value_keeps_value_and_gradient_finite(dtype):
    """A zero-weight cell whose critic value is far above the rest: the value ignores it, and
    its derivative e^{T_j}/E_Q[e^T] (beyond the float range here) saturates instead of being
    inf or NaN."""
    t = torch.tensor([0.0, 1e3], dtype=dtype)
    q = torch.tensor([1.0, 0.0], dtype=dtype, requires_grad=True)
    for name in ("dv", "smile"):
        value = B.BOUNDS[name].fn(t, t, neg_weight=q, clip=None) if name == "smile" else \
            B.dv_bound(t, t, neg_weight=q)
        (grad,) = torch.autograd.grad(value, q)
        assert float(value.detach()) == pytest.approx(500.0)  # E_P[T] - log e^0
        assert bool(torch.isfinite(grad).all()), grad


def test_numpy_and_tensor_scalars_are_accepted_as_numbers():
    """clip, log_baseline, label_smoothing and beta accept numpy scalars and 0-d tensors."""
    pos, neg = torch.tensor([0.3, 1.0]), torch.tensor([-0.5, 2.0, 0.1])
    ref = B.smile_bound(pos, neg, clip=5.0)
    for clip in (np.float32(5), np.int64(5), np.array(5.0), torch.tensor(5.0)):
        torch.testing.assert_close(B.smile_bound(pos, neg, clip=clip), ref)
    ref = B.tuba_bound(pos, neg, log_baseline=0.5)
    for a in (np.float32(0.5), np.float64(0.5), np.array(0.5)):
        torch.testing.assert_close(B.tuba_bound(pos, neg, log_baseline=a), ref)
    z, pr = torch.zeros(3), torch.tensor([-1.0, 0.5, 2.0])
    ref = preference_loss("robust", z, pr, z, z, beta=0.5, label_smoothing=0.1)
    for eps in (np.float32(0.1), np.float64(0.1), torch.tensor(0.1)):
        got = preference_loss("robust", z, pr, z, z, beta=0.5, label_smoothing=eps)
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)
    for beta in (np.float32(0.5), torch.tensor(0.5), np.array(0.5)):
        got = preference_loss("robust", z, pr, z, z, beta=beta, label_smoothing=0.1)
        torch.testing.assert_close(got, ref)
    with pytest.raises(TypeError, match="clip"):
        B.smile_bound(pos, neg, clip="5")
    with pytest.raises(ValueError, match="clip"):
        B.smile_bound(pos, neg, clip=np.float32(-1))
    with pytest.raises(ValueError, match="label_smoothing"):
        preference_loss("robust", z, pr, z, z, label_smoothing=np.float64(0.7))


# ---- command line: arguments are validated before any work ---------------------------------------


def test_verify_rejects_a_negative_seed_before_running_or_writing(tmp_path, capsys):
    from proofs.verify import main

    out = tmp_path / "PROOFS.md"
    with pytest.raises(SystemExit) as err:
        main(["--seed", "-1", "--out", str(out)])
    assert err.value.code == 2
    assert "--seed" in capsys.readouterr().err
    assert not out.exists()


def test_report_rejects_a_negative_seed(capsys):
    from mi_bounds.cli import main

    assert main(["report", "--seed", "-1"]) == 2  # in-process: the exit code, returned
    assert "--seed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["report", "--worlds", "0"], "--worlds"),
        (["report", "--critics", "x"], "--critics"),
        (["report", "--json", "/nonexistent-folder/r.json"], "--json"),
        (["verify", "--out", str(Path(__file__).parent)], "--out"),  # a folder
        (["figures", "--out", __file__], "--out"),  # a file
    ],
)
def test_cli_arguments_are_validated_first(argv, match, capsys):
    """Bad arguments: a message naming the option and exit code 2, before any work."""
    from mi_bounds.cli import main

    assert main(argv) == 2  # in-process: the exit code, returned
    assert match in capsys.readouterr().err
