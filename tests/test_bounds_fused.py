"""The score-matrix forms of NWJ, TUBA, JS and SMILE (no copy of the negatives) equal the
two-sample forms of split_scores: in float64 to round-off on the plain and the blocked CPU path,
in float32 within float32 round-off of the float64 value, with the same gradients."""

from __future__ import annotations

import math

import pytest
import torch

from mi_bounds import bounds as B

#: fused form -> the two-sample form it must equal, as functions of a score matrix
CASES = {
    "nwj": (B.nwj_bound_from_scores, lambda s: B.nwj_bound(*B.split_scores(s))),
    "nwj_shift1": (lambda s: B.nwj_bound_from_scores(s, shift=1.0),
                   lambda s: B.nwj_bound(*B.split_scores(s + 1.0))),
    "tuba": (lambda s: B.tuba_bound_from_scores(s, log_baseline=0.7),
             lambda s: B.tuba_bound(*B.split_scores(s), log_baseline=0.7)),
    "js": (B.js_bound_from_scores, lambda s: B.js_bound(*B.split_scores(s))),
    "smile5": (lambda s: B.smile_bound_from_scores(s, clip=5.0),
               lambda s: B.smile_bound(*B.split_scores(s), clip=5.0)),
    "smile_none": (lambda s: B.smile_bound_from_scores(s, clip=None),
                   lambda s: B.dv_bound(*B.split_scores(s))),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("k", [2, 5, 600, 601])
@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_fused_equals_two_sample_form_in_float64(name, k, scale):
    """K = 600 takes the blocked CPU path where there is one; NWJ/TUBA stay below overflow."""
    fused, split = CASES[name]
    g = torch.Generator().manual_seed(k)
    s = scale * torch.randn(2, k, k, generator=g, dtype=torch.float64)
    torch.testing.assert_close(fused(s), split(s), rtol=1e-12, atol=1e-12 * (1 + scale))


@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_float32_matches_float64_reference(name):
    """float32 at K = 1024 (blocked path) within float32 round-off of the float64 value, and no
    worse than 4x the float32 error of the two-sample form on the same S."""
    fused, split = CASES[name]
    g = torch.Generator().manual_seed(7)
    s = 3.0 * torch.randn(1024, 1024, generator=g)
    v32, v64 = float(fused(s)), float(fused(s.double()))
    eps = torch.finfo(torch.float32).eps
    err_split = abs(float(split(s)) - v64)
    assert abs(v32 - v64) <= max(4 * err_split, 16 * eps * (1 + abs(v64)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_gradients_equal_the_two_sample_gradients(name):
    fused, split = CASES[name]
    g = torch.Generator().manual_seed(3)
    s = 4 * torch.randn(6, 6, generator=g, dtype=torch.float64)
    grads = []
    for fn in (fused, split):
        x = s.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(x), x)
        grads.append(grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-14)


def test_blocked_and_plain_paths_agree(monkeypatch):
    """The same matrix through the blocked path (threshold lowered) and the plain path."""
    g = torch.Generator().manual_seed(11)
    s = 6 * torch.randn(3, 40, 40, generator=g, dtype=torch.float64)
    out = {}
    for min_k in (512, 2):
        monkeypatch.setattr(B, "_BLOCKED_MIN_K", min_k)
        out[min_k] = {n: f(s) for n, (f, _) in CASES.items()}
    for n in CASES:
        torch.testing.assert_close(out[512][n], out[2][n], rtol=1e-13, atol=1e-13)


def test_errors_name_the_argument():
    s = torch.zeros(4, 4)
    s[0, 1] = 200.0  # e^{200 - 1}/12 overflows float32
    with pytest.raises(ValueError, match="scores: log E_Q"):
        B.nwj_bound_from_scores(s)
    with pytest.raises(ValueError, match="clip must be a number > 0"):
        B.smile_bound_from_scores(torch.zeros(3, 3), clip=-1.0)
    with pytest.raises(ValueError, match="square"):
        B.js_bound_from_scores(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="scores must be finite"):
        B.js_bound_from_scores(torch.tensor([[0.0, math.nan], [0.0, 0.0]]))


# --------------------------------------------------------------------------------------------
# The chunked CPU kernels of JS and SMILE (mi_bounds._offdiagonal).
# --------------------------------------------------------------------------------------------

#: the score-matrix forms that read S in chunks on the CPU, and their two-sample forms
CHUNKED = {name: CASES[name] for name in ("js", "smile5")}


def _hard_scores(k: int, dtype: torch.dtype) -> torch.Tensor:
    """Scores that overflow the JS products: rows shifted by +20 (every group of 32 overflows),
    single scores of 100 and 1000 (beyond float32's exp), very negative rows (softplus below
    eps), large positives on the diagonal, the rest N(0, 3²)."""
    g = torch.Generator().manual_seed(k)
    s = 3 * torch.randn(k, k, generator=g, dtype=torch.float64)
    s[1:4] += 20.0
    s[7:9] -= 30.0
    s[10, 20], s[30, 500 % k], s[k - 1, 0] = 100.0, 1000.0, 95.0
    s.diagonal().add_(40.0)
    return s.to(dtype)


@pytest.mark.parametrize("name", sorted(CHUNKED))
@pytest.mark.parametrize("k", [600, 601])
@pytest.mark.parametrize("chunk", [1 << 17, 1024])
def test_chunked_kernels_on_overflowing_scores(monkeypatch, name, k, chunk):
    """Overflowed products are recomputed exactly: float64 equals the two-sample form to 1e-12,
    float32 is within float32 round-off of it; also with many small chunks (several batches of
    products and a short last chunk), and K = 601 (K² not a multiple of 32: an exact tail)."""
    monkeypatch.setattr(B, "_BLOCK_ELEMENTS", chunk)
    fused, split = CHUNKED[name]
    s = _hard_scores(k, torch.float64)
    ref = split(s)
    torch.testing.assert_close(fused(s), ref, rtol=1e-12, atol=1e-12)
    eps = torch.finfo(torch.float32).eps
    assert abs(float(fused(s.float())) - float(ref)) <= 16 * eps * (1 + abs(float(ref)))


@pytest.mark.parametrize("name", sorted(CHUNKED))
@pytest.mark.parametrize("shift", [-10.0, 0.0, 5.0])
def test_chunked_float32_within_round_off_of_float64(name, shift):
    """float32 at K = 1024 against the float64 value, also where every softplus is below
    float32's eps relative to 1 (shift -10) and where many products exceed 2^31 (shift 5)."""
    fused, _ = CHUNKED[name]
    g = torch.Generator().manual_seed(5)
    s = 2 * torch.randn(1024, 1024, generator=g, dtype=torch.float64) + shift
    v64 = float(fused(s))
    eps = torch.finfo(torch.float32).eps
    assert abs(float(fused(s.float())) - v64) <= 16 * eps * (1 + abs(v64))


@pytest.mark.parametrize("name", sorted(CHUNKED))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", [(3, 3), (3, 8), (600, 590)])
def test_chunked_kernels_reject_non_finite_scores(name, bad, where):
    """NaN and ±inf raise on the chunked path: off the diagonal (read as x + 0·x), on it
    (checked apart, since the kernels zero it), and in the exact tail of K = 601 (flat positions
    from K² - 17 on)."""
    fused, _ = CHUNKED[name]
    s = torch.randn(601, 601)
    s[where] = bad
    with pytest.raises(ValueError, match="scores must be finite"):
        fused(s)


@pytest.mark.parametrize("name", sorted(CHUNKED))
def test_chunked_path_value_and_gradient_at_the_threshold(name):
    """At K = 600 with gradients the plain path runs: its value equals the chunked value (no
    gradients) and its gradient equals autograd through the two-sample form."""
    fused, split = CHUNKED[name]
    s = 3 * torch.randn(600, 600, generator=torch.Generator().manual_seed(9),
                        dtype=torch.float64)
    x, y = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    value = fused(x)
    torch.testing.assert_close(value.detach(), fused(s), rtol=1e-12, atol=1e-12)
    (g_fused,) = torch.autograd.grad(value, x)
    (g_split,) = torch.autograd.grad(split(y), y)
    torch.testing.assert_close(g_fused, g_split, rtol=1e-12, atol=1e-15)
