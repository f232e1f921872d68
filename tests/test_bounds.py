"""Property tests of the bound library against the scipy oracle (docs/THEORY.md §1, facts 1–6).

Every fact is checked by :mod:`toy_models.facts`, the checker the verification report uses:
each bound is evaluated as an *exact* expectation over a finite support (critic table with
probability weights), in float64, and compared with KL / JSD / I(X;Y) computed independently by
``toy_models.oracle``, at float64 round-off relative to the magnitudes involved. The inputs reach
the edges (:mod:`toy_models.strategies`): supports of one cell, masses from exact zeros to
1e-300, critics to ±1e3 (where NWJ/TUBA must raise their documented overflow error).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import logsumexp

from mi_bounds import bounds as B
from toy_models import facts, oracle
from toy_models.strategies import critics, distribution_pairs, joint_tables

LOG2 = math.log(2.0)
_exact = facts.exact


def _assert_hold(checks):
    failed = [c for c in checks if not c.ok]
    assert not failed, failed


pairs = distribution_pairs()


@st.composite
def pair_and_critic(draw, low=-1e3, high=1e3):
    p, q = draw(pairs)
    return p, q, draw(critics(len(p), low=low, high=high))


# ---- Fact 1: each bound is below what it bounds -------------------------------------------


@given(pair_and_critic(), st.floats(-10, 10))
def test_fact1_bounds_hold(pqt, log_a):
    """DV(T), NWJ(T), TUBA(T, a) ≤ KL(P‖Q) and JS(T) ≤ 2 JSD - 2 log 2 for every critic T and
    baseline a (NWJ/TUBA: or their overflow error, exactly where e^T overflows float64)."""
    p, q, t = pqt
    _assert_hold(facts.fact1_bounds_below_targets(p, q, t, log_a))


# ---- Fact 2: NWJ ≤ DV and TUBA ≤ DV (log u ≤ u/a + log a - 1) ------------------------------


@given(pair_and_critic(), st.floats(-10, 10))
def test_fact2_nwj_and_tuba_below_dv(pqt, log_a):
    """NWJ(T) ≤ DV(T) and TUBA(T, a) ≤ DV(T), pointwise in T."""
    p, q, t = pqt
    _assert_hold(facts.fact2_nwj_tuba_below_dv(p, q, t, log_a))


# ---- Fact 3: equality at the optimal critics -----------------------------------------------


@given(pairs, st.floats(-20, 20), st.floats(-5, 5))
def test_fact3_tight_at_optimal_critics(pq, c, log_a):
    """Each bound equals its target at its optimal critic (BOUNDS[name].optimal_critic)."""
    _assert_hold(facts.fact3_tight_at_optimal_critics(*pq, c, log_a))


def test_fact3_two_coin_example_values():
    """A hand-checkable example: p = (½, ½), q = (0.9, 0.1)."""
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    lr = np.log(p / q)
    kl = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert float(_exact(B.dv_bound, p, q, lr)) == pytest.approx(kl, abs=1e-15)
    assert float(_exact(B.nwj_bound, p, q, lr + 1)) == pytest.approx(kl, abs=1e-15)
    m = (p + q) / 2
    jsd = 0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m))
    assert float(_exact(B.js_bound, p, q, lr)) == pytest.approx(2 * jsd - 2 * LOG2, abs=1e-15)


# ---- Fact 4: shift invariance of DV only --------------------------------------------------


@given(pair_and_critic(), st.floats(-1e3, 1e3))
def test_fact4_dv_shift_invariant(pqt, c):
    """DV(T + c) = DV(T) for every constant c."""
    p, q, t = pqt
    _assert_hold(facts.fact4_dv_shift_invariant(p, q, t, c))


@given(pair_and_critic(low=-20, high=20), st.floats(-3, 3))
def test_fact4_nwj_shift_closed_form(pqt, c):
    """NWJ(T + c) - NWJ(T) = c - (e^c - 1) e^{-1} E_Q[e^T]: zero only where that is zero."""
    p, q, t = pqt
    expected = c - math.expm1(c) * math.exp(-1) * float(np.sum(q * np.exp(t)))
    a, b = float(_exact(B.nwj_bound, p, q, t + c)), float(_exact(B.nwj_bound, p, q, t))
    # a - b cancels: its round-off is a few ulps of |a| + |b|, not of the difference
    assert a - b == pytest.approx(expected, rel=1e-9, abs=1e-12 + 1e-14 * (abs(a) + abs(b)))


@given(pair_and_critic(low=-5, high=5))
def test_fact4_js_not_shift_invariant(pqt):
    """c ↦ JS(T + c) is strictly concave, so JS(T-1), JS(T), JS(T+1) cannot all be equal."""
    p, q, t = pqt
    vals = [float(_exact(B.js_bound, p, q, t + c)) for c in (-1.0, 0.0, 1.0)]
    assert max(vals) - min(vals) > 1e-6
    assert vals[1] > 0.5 * (vals[0] + vals[2])  # strict concavity


# ---- Fact 5: InfoNCE ---------------------------------------------------------------------


@given(st.integers(2, 9), st.integers(0, 2**31 - 1), st.sampled_from([1.0, 50.0, 1e4]))
def test_fact5_infonce_batch_value_at_most_log_k(k, seed, scale):
    """Every batch value of InfoNCE is ≤ log K, for any scores."""
    g = torch.Generator().manual_seed(seed)
    scores = scale * torch.randn(3, k, k, generator=g, dtype=torch.float64)
    _assert_hold(facts.fact5_infonce_batch_below_log_k(scores))


@st.composite
def joint_and_critic(draw):
    joint = draw(joint_tables(max_size=3))
    nx, ny = joint.shape
    critic = np.array(draw(critics(nx * ny, low=-10, high=10))).reshape(nx, ny)
    return joint, critic, draw(st.integers(2, 3))


@given(joint_and_critic())
def test_fact5_infonce_expectation_below_mi_exact_enumeration(jck):
    """E[InfoNCE_K(T)] ≤ I(X;Y), enumerating all (|X||Y|)^K batches exactly (|X|,|Y| ≤ 3, K ≤ 3)."""
    _assert_hold(facts.fact5_infonce_expectation_below_mi(*jck))


def _scipy_infonce_expectation(joint: np.ndarray, critic: np.ndarray, k: int) -> float:
    """E[InfoNCE_K] written out with scipy, batch by batch: independent of the library."""
    cells = [(x, y) for x in range(joint.shape[0]) for y in range(joint.shape[1])
             if joint[x, y] > 0]
    total = 0.0
    for batch in np.ndindex(*([len(cells)] * k)):
        xs = [cells[i][0] for i in batch]
        ys = [cells[i][1] for i in batch]
        s = critic[np.ix_(xs, ys)]
        value = np.mean(np.diag(s) - logsumexp(s, axis=1)) + math.log(k)
        total += float(np.prod([joint[x, y] for x, y in zip(xs, ys, strict=True)])) * value
    return total


def test_fact5_infonce_with_log_ratio_critic_rises_towards_mi():
    """With the log density-ratio critic, E[InfoNCE_K] equals the scipy enumeration exactly, is
    strictly increasing in K = 2, 3, 4 and stays below min(I, log K)."""
    joint = np.array([[0.4, 0.1], [0.05, 0.45]])
    critic = np.log(joint / np.outer(joint.sum(1), joint.sum(0)))
    mi = oracle.mutual_information(joint)
    values = []
    for k in (2, 3, 4):
        value = facts.infonce_expectation(joint, critic, k)
        assert value == pytest.approx(_scipy_infonce_expectation(joint, critic, k),
                                      abs=1e-14, rel=0)
        assert value < min(mi, math.log(k))
        values.append(value)
    assert values[0] < values[1] < values[2]


def test_fact5_infonce_saturates_at_log_k():
    """With I(X;Y) = log 1000 ≫ log K and a sharp critic, InfoNCE sits at log K."""
    n, k = 1000, 8
    g = torch.Generator().manual_seed(0)
    x = torch.randperm(n, generator=g)[:k]  # K distinct symbols, Y = X (I = log n)
    scores = 30.0 * (x[:, None] == x[None, :]).double()
    value = float(B.infonce_bound(scores))
    # exactly log K - log(1 + 7 e^-30): every row has one positive at 30 and 7 negatives at 0
    assert value == pytest.approx(math.log(k) - math.log1p(7 * math.exp(-30.0)), abs=1e-15)


# ---- Fact 6: KL infinite, bounds finite ----------------------------------------------------


@given(distribution_pairs(absolutely_continuous=False), st.data())
def test_fact6_kl_infinite_bounds_finite_but_unbounded(pq, data):
    """KL = +inf where P has mass and Q none; every bound is finite at a finite critic (NWJ: or
    its overflow error), and DV(T + c·1[q=0]) - DV(T) = c·P(q=0) exactly: the bound grows
    without limit towards KL = inf."""
    p, q = pq
    t = data.draw(critics(len(p)))
    c = data.draw(st.floats(0, 1e3))
    _assert_hold(facts.fact6_off_support(p, q, t, c))


# ---- Two implementations of one quantity agree ------------------------------------------


def test_score_matrix_forms_agree():
    """infonce_bound(S) == infonce_bound_from_negatives(diag, off-diagonal rows), and the
    score-matrix DV equals the hand-written off-diagonal log-mean-exp."""
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 6, 6, generator=g, dtype=torch.float64)
    pos, neg = B.split_scores(s)
    assert neg.shape == (4, 30)
    rows = neg.reshape(4, 6, 5)
    torch.testing.assert_close(B.infonce_bound(s), B.infonce_bound_from_negatives(pos, rows))
    mask = ~torch.eye(6, dtype=torch.bool)
    manual = s.diagonal(dim1=-2, dim2=-1).mean(-1) - (
        torch.logsumexp(s.masked_fill(~mask, -math.inf).flatten(-2), -1) - math.log(30)
    )
    torch.testing.assert_close(B.dv_bound(pos, neg), manual)


@pytest.mark.parametrize("k", [2, 5, 600])
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e3])
def test_score_matrix_dv_and_infonce_equal_the_two_sample_forms(k, scale):
    """dv_bound_from_scores(S) = dv_bound(*split_scores(S)) and infonce_bound(S) =
    infonce_bound_from_negatives(diag, off-diagonal rows), in float64 to round-off, on the
    plain path (K < 512) and the blocked CPU path (K = 600), also where rows overflow
    (scale 1e3: exp(S_ij - S_ii) > float max) or underflow."""
    g = torch.Generator().manual_seed(k)
    s = scale * torch.randn(2, k, k, generator=g, dtype=torch.float64)
    pos, neg = B.split_scores(s)
    tol = {"rtol": 1e-12, "atol": 1e-12 * (1 + scale)}
    torch.testing.assert_close(B.dv_bound_from_scores(s), B.dv_bound(pos, neg), **tol)
    nce = B.infonce_bound_from_negatives(pos, neg.reshape(2, k, k - 1))
    torch.testing.assert_close(B.infonce_bound(s), nce, **tol)


@pytest.mark.parametrize("fn", [B.infonce_bound, B.dv_bound_from_scores])
@pytest.mark.parametrize("scale", [1.0, 20.0, 200.0])
def test_score_matrix_float32_matches_float64_reference(fn, scale):
    """float32 InfoNCE and score-matrix DV at K = 1024 (blocked path) are within float32
    round-off of the float64 reference, no worse than torch.logsumexp's own float32 error."""
    g = torch.Generator().manual_seed(7)
    s = scale * torch.randn(1024, 1024, generator=g)
    v32, v64 = fn(s), fn(s.double())
    eps = torch.finfo(torch.float32).eps
    assert abs(float(v32) - float(v64)) <= 8 * eps * (1 + scale + abs(float(v64)))
    # torch's own float32 row logsumexp, for scale: our error is not larger than 4x its error
    ref32 = (s.diagonal() - torch.logsumexp(s, -1)).mean() + math.log(1024)
    if fn is B.infonce_bound:
        err_torch = abs(float(ref32) - float(v64))
        assert abs(float(v32) - float(v64)) <= max(4 * err_torch, 4 * eps * (1 + scale))


def test_blocked_path_gradient_equals_the_plain_path(monkeypatch):
    """The blocked kernel's custom backward equals autograd through the plain path, and passes
    gradcheck."""
    g = torch.Generator().manual_seed(8)
    s = 5 * torch.randn(2, 7, 7, generator=g, dtype=torch.float64)
    grads = {}
    for min_k in (512, 2):  # plain, then blocked
        monkeypatch.setattr(B, "_BLOCKED_MIN_K", min_k)
        for fn in (B.infonce_bound, B.dv_bound_from_scores):
            x = s.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(fn(x).sum(), x)
            grads.setdefault(fn.__name__, []).append(grad)
            assert torch.autograd.gradcheck(fn, (s[0].clone().requires_grad_(True),))
    for a, b in grads.values():
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", [(3, 3), (3, 8)])
def test_blocked_path_rejects_non_finite_scores(bad, where):
    s = torch.randn(600, 600)
    s[where] = bad
    for fn in (B.infonce_bound, B.dv_bound_from_scores):
        with pytest.raises(ValueError, match="scores must be finite"):
            fn(s)


def test_weights_equal_repeated_samples():
    """Weights k_i/n give the same value as the samples repeated k_i times."""
    t = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    counts = torch.tensor([1, 3, 2])
    w = counts.double() / counts.sum()
    rep = t.repeat_interleave(counts)
    for fn in (B.dv_bound, B.nwj_bound, B.js_bound, B.smile_bound):
        torch.testing.assert_close(fn(t, t, pos_weight=w, neg_weight=w), fn(rep, rep))


def test_batch_dimensions_broadcast_like_a_loop():
    g = torch.Generator().manual_seed(2)
    pos = torch.randn(3, 1, 5, generator=g, dtype=torch.float64)
    neg = torch.randn(4, 7, generator=g, dtype=torch.float64)
    for fn in (B.dv_bound, B.nwj_bound, B.js_bound, B.tuba_bound, B.smile_bound):
        out = fn(pos, neg)
        assert out.shape == (3, 4)
        for i in range(3):
            for j in range(4):
                torch.testing.assert_close(out[i, j], fn(pos[i, 0], neg[j]))


def test_numpy_in_torch_out_and_no_mutation():
    pos = np.array([0.1, 0.2, 0.3])
    neg = np.array([1.0, -1.0])
    before = (pos.copy(), neg.copy())
    out = B.dv_bound(pos, neg)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_array_equal(pos, before[0])
    np.testing.assert_array_equal(neg, before[1])


def test_smile_without_clip_is_dv_and_clip_bounds_the_denominator():
    g = torch.Generator().manual_seed(3)
    pos, neg = 10 * torch.randn(8, generator=g), 10 * torch.randn(9, generator=g)
    torch.testing.assert_close(B.smile_bound(pos, neg, clip=None), B.dv_bound(pos, neg))
    for tau in (1.0, 5.0):
        value = B.smile_bound(pos, neg, clip=tau)
        # clip(e^T) lies in [e^-tau, e^tau], so E_P T - tau <= SMILE <= E_P T + tau
        assert pos.mean() - tau - 1e-5 <= value <= pos.mean() + tau + 1e-5


def test_value_with_gradient_of():
    t = torch.tensor([0.5, -0.2, 1.0], dtype=torch.float64, requires_grad=True)
    u = torch.tensor([0.1, 0.3], dtype=torch.float64, requires_grad=True)
    dv, js = B.dv_bound(t, u), B.js_bound(t, u)
    mixed = B.value_with_gradient_of(dv, js)
    assert float(mixed.detach()) == pytest.approx(float(dv.detach()), abs=1e-15)
    g_mixed = torch.autograd.grad(mixed, (t, u))
    g_js = torch.autograd.grad(B.js_bound(t, u), (t, u))
    for a, b in zip(g_mixed, g_js, strict=True):
        torch.testing.assert_close(a, b)


# ---- Gradients ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dv", "nwj", "tuba", "js", "smile"])
def test_gradcheck_two_sample(name):
    fn = B.BOUNDS[name].fn
    g = torch.Generator().manual_seed(4)
    pos = torch.randn(2, 5, generator=g, dtype=torch.float64, requires_grad=True)
    neg = torch.randn(2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b), (pos, neg))
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, neg_weight=w), (pos, neg))


def test_gradcheck_infonce():
    g = torch.Generator().manual_seed(5)
    s = torch.randn(2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(B.infonce_bound, (s,))
    pos = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    neg = torch.randn(3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(B.infonce_bound_from_negatives, (pos, neg))


def test_dv_gradient_closed_form():
    """∂DV/∂T_j: p_j on the P side, -q_j e^{T_j}/E_Q[e^T] on the Q side (softmax weights)."""
    p = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    q = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    t = torch.tensor([0.4, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    u = t.detach().clone().requires_grad_(True)
    B.dv_bound(t, u, pos_weight=p, neg_weight=q).backward()
    torch.testing.assert_close(t.grad, p)
    torch.testing.assert_close(u.grad, -q * u.detach().exp() / (q * u.detach().exp()).sum())


# ---- Bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: B.dv_bound(torch.zeros(3, 4), torch.zeros(2, 4)), ValueError, "pos .* neg"),
        (lambda: B.dv_bound(torch.tensor([0.0, math.nan]), torch.zeros(2)), ValueError, "pos"),
        (lambda: B.js_bound(torch.zeros(2), torch.tensor([math.inf, 0.0])), ValueError, "neg"),
        (lambda: B.dv_bound(torch.zeros(2), torch.zeros(2), pos_weight=torch.tensor([1.5, -0.5])),
         ValueError, "pos_weight"),
        (lambda: B.dv_bound(torch.zeros(2), torch.zeros(2), neg_weight=torch.tensor([0.3, 0.3])),
         ValueError, "neg_weight"),
        (lambda: B.dv_bound(torch.zeros(2), torch.zeros(2), neg_weight=torch.ones(3) / 3),
         ValueError, "neg_weight"),
        (lambda: B.infonce_bound(torch.zeros(1, 1)), ValueError, "K >= 2"),
        (lambda: B.infonce_bound(torch.zeros(2, 3)), ValueError, "square"),
        (lambda: B.infonce_bound(torch.zeros(3)), ValueError, "scores"),
        (lambda: B.infonce_bound_from_negatives(torch.zeros(3), torch.zeros(2, 1)), ValueError,
         "neg"),
        (lambda: B.dv_bound(torch.zeros(0), torch.zeros(2)), ValueError, "pos .*empty"),
        (lambda: B.nwj_bound(torch.zeros(2, dtype=torch.int64), torch.zeros(2)), TypeError,
         "pos .*floating"),
        (lambda: B.dv_bound(np.zeros(2, dtype=np.int32), np.zeros(2)), TypeError, "pos"),
        (lambda: B.dv_bound([0.0, 1.0], torch.zeros(2)), TypeError, "pos"),
        (lambda: B.smile_bound(torch.zeros(2), torch.zeros(2), clip=0.0), ValueError, "clip"),
        (lambda: B.tuba_bound(torch.zeros(2), torch.zeros(2), log_baseline=math.nan), ValueError,
         "log_baseline"),
        (lambda: B.get_bound("nope"), ValueError, "valid names"),
    ],
)
def test_bad_input_is_a_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---- Precision ---------------------------------------------------------------------------


@given(st.integers(0, 2**31 - 1))
def test_float32_at_1e4_is_finite_and_matches_float64(seed):
    """Critic values up to ±1e4 in float32 give finite values within float32 round-off of the
    float64 computation (log-domain throughout) for DV, JS, SMILE and InfoNCE."""
    g = torch.Generator().manual_seed(seed)
    pos = (2 * torch.rand(2, 16, generator=g) - 1) * 1e4
    neg = (2 * torch.rand(2, 24, generator=g) - 1) * 1e4
    scores = (2 * torch.rand(2, 8, 8, generator=g) - 1) * 1e4
    tol = 8 * 1e4 * torch.finfo(torch.float32).eps
    for fn in (B.dv_bound, B.js_bound, B.smile_bound):
        v32, v64 = fn(pos, neg), fn(pos.double(), neg.double())
        assert v32.dtype == torch.float32 and bool(torch.isfinite(v32).all())
        torch.testing.assert_close(v32.double(), v64, atol=tol, rtol=0)
    v32, v64 = B.infonce_bound(scores), B.infonce_bound(scores.double())
    torch.testing.assert_close(v32.double(), v64, atol=tol, rtol=0)


@given(critics(6, dtype=np.float32), critics(9, dtype=np.float32), st.floats(-5, 5))
def test_float32_nwj_tuba_past_the_overflow_point(pos, neg, log_a):
    """float32 critics to ±1e3 (past exp's overflow at 88.72): NWJ and TUBA equal the float64
    value within float32 round-off of the exponent, or raise their documented ValueError
    (naming neg and 88.72) exactly where log E_Q[e^T] - log a > 88.72."""
    pos32, neg32 = torch.from_numpy(pos), torch.from_numpy(neg)
    limit = math.log(torch.finfo(torch.float32).max)
    for fn, la, kw in ((B.nwj_bound, 1.0, {}), (B.tuba_bound, log_a, {"log_baseline": log_a})):
        exponent = float(logsumexp(neg.astype(np.float64)) - math.log(len(neg)) - la)
        if abs(exponent - limit) < 1e-4:  # within float32 round-off of the threshold
            continue
        if exponent > limit:
            with pytest.raises(ValueError, match=r"neg.*88\.72"):
                fn(pos32, neg32, **kw)
            continue
        v32 = float(fn(pos32, neg32, **kw))
        v64 = float(fn(pos32.double(), neg32.double(), **kw))
        eps = torch.finfo(torch.float32).eps
        scale = float(np.abs(pos).max()) + abs(exponent) * math.exp(exponent) + abs(la) + 1
        assert abs(v32 - v64) <= 16 * eps * scale, (v32, v64)


def test_dv_at_1e4_exact_value():
    pos = torch.tensor([1e4], dtype=torch.float32)
    neg = torch.tensor([1e4, -1e4], dtype=torch.float32)
    assert float(B.dv_bound(pos, neg)) == pytest.approx(LOG2, abs=2e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_upcast(dtype):
    g = torch.Generator().manual_seed(6)
    pos = (20 * torch.randn(32, generator=g)).to(dtype)
    neg = (20 * torch.randn(40, generator=g)).to(dtype)
    s = (20 * torch.randn(6, 6, generator=g)).to(dtype)
    for fn in (B.dv_bound, B.nwj_bound, B.js_bound, B.smile_bound):
        out = fn(pos, neg)
        assert out.dtype == torch.float32 and math.isfinite(float(out))
        torch.testing.assert_close(out, fn(pos.float(), neg.float()))
    torch.testing.assert_close(B.infonce_bound(s), B.infonce_bound(s.float()))
    big = torch.tensor([1e4, -1e4], dtype=dtype)
    assert math.isfinite(float(B.dv_bound(big, big)))


def test_registry_is_complete_and_consistent():
    assert set(B.BOUNDS) == {"dv", "nwj", "tuba", "js", "smile", "infonce"}
    for name, spec in B.BOUNDS.items():
        assert spec.name == name
        assert B.get_bound(name) is spec
        assert spec.target in {"KL", "2JSD-2log2", "I(X;Y)"}
        assert (spec.optimal_critic is None) == (not spec.is_bound)


@pytest.mark.parametrize("k", [2, 3, 8])
def test_offdiagonal_equals_boolean_mask(k):
    """The strided off-diagonal extraction equals boolean-mask indexing, also on a
    non-contiguous (transposed) input."""
    s = torch.randn(2, 3, k, k, dtype=torch.float64)
    mask = ~torch.eye(k, dtype=torch.bool)
    assert torch.equal(B.offdiagonal(s), s[..., mask])
    st_ = s.transpose(-1, -2)
    assert torch.equal(B.offdiagonal(st_), st_[..., mask])


def test_js_exact_for_large_critics():
    """JS at T = 30 is -30 - 2 log1p(e^-30) to float64 round-off (a softplus that returns its
    input above a threshold would be off by ~2e-13 here)."""
    t = torch.tensor([30.0], dtype=torch.float64)
    expected = -30.0 - 2 * math.log1p(math.exp(-30.0))
    assert float(B.js_bound(t, t)) == pytest.approx(expected, abs=1e-14, rel=0)
