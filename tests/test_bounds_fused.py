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
@pytest.mark.parametrize("k", [2, 5, 600])
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
