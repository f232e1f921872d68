"""The losses with a chosen-NLL term, ``rpo`` and ``sft`` (mi_bounds.preference), against TRL.

TRL 1.16 has no ``rpo_alpha`` any more: RPO (Pang et al. 2024) is ``loss_type=["sigmoid",
"sft"]`` with ``loss_weights=[1, α]``, and ``sft`` is ``-mean`` of the chosen per-token
log-probabilities over every chosen completion token of the batch (``DPOTrainer._compute_loss``).
The TRL tests below run that method itself on given sequence log-probabilities.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from trl_stand_in import trl_compute_loss

from mi_bounds.preference import LOSSES, preference_loss


def _batch(seed: int, b: int = 8):
    g = torch.Generator().manual_seed(seed)
    pc, pr, rc, rr = (-20 * torch.rand(b, generator=g, dtype=torch.float64) for _ in range(4))
    n_w = torch.randint(1, 7, (b,), generator=g).double()
    n_l = torch.randint(1, 7, (b,), generator=g).double()
    return pc, pr, rc, rr, n_w, n_l


def _trl_loss(loss_types, loss_weights, pc, pr, rc, rr, n_w, n_l, beta):
    """TRL 1.16's ``DPOTrainer._compute_loss`` with the sequence log-probability spread evenly
    over the completion tokens (so per-token means differ from per-sequence ones)."""
    return trl_compute_loss(loss_types, loss_weights, pc, pr, rc, rr, n_w, n_l, beta,
                            spread=True)[0]


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("beta", [0.01, 0.1, 0.5])
def test_rpo_equals_trl_sigmoid_plus_alpha_sft(alpha, beta):
    pytest.importorskip("trl")
    pc, pr, rc, rr, n_w, n_l = _batch(int(alpha * 10 + beta * 100))
    want = _trl_loss(["sigmoid", "sft"], [1.0, alpha], pc, pr, rc, rr, n_w, n_l, beta)
    got = preference_loss("rpo", pc, pr, rc, rr, beta=beta, rpo_alpha=alpha, chosen_logps=pc,
                          chosen_lengths=n_w)
    torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-12, atol=1e-12)


def test_sft_equals_trl_sft():
    pytest.importorskip("trl")
    pc, pr, rc, rr, n_w, n_l = _batch(3)
    want = _trl_loss(["sft"], [1.0], pc, pr, rc, rr, n_w, n_l, 0.1)
    got = preference_loss("sft", pc, pr, rc, rr, chosen_logps=pc, chosen_lengths=n_w)
    torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-12, atol=1e-12)
    # the same number, written independently: -Σ log π(y_w) / Σ n_w
    assert float(got) == pytest.approx(float(-pc.sum() / n_w.sum()), rel=1e-12)
    assert float(preference_loss("sft", pc, pr, rc, rr, chosen_logps=pc, reduction="sum",
                                 chosen_lengths=n_w)) == pytest.approx(
        float(-pc.sum() / n_w.mean()), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e3, 0), st.floats(-1e3, 0), st.floats(-1e3, 0),
                          st.floats(-1e3, 0), st.integers(1, 50)), min_size=1, max_size=12),
       st.floats(1e-3, 5.0), st.floats(0.0, 10.0))
def test_rpo_is_dpo_plus_alpha_times_token_mean_nll(rows, beta, alpha):
    """Old TRL (``rpo_alpha``): ``losses + rpo_alpha · CE(chosen tokens)``, the cross-entropy
    averaged over every chosen token of the batch: ``Σ_i -log π(y_w,i) / Σ_i n_i``."""
    pc, pr, rc, rr, n = (torch.tensor(c, dtype=torch.float64) for c in zip(*rows, strict=True))
    dpo = -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()
    want = dpo + alpha * (-pc.sum() / n.sum())
    got = preference_loss("rpo", pc, pr, rc, rr, beta=beta, rpo_alpha=alpha, chosen_logps=pc,
                          chosen_lengths=n)
    assert float(got) == pytest.approx(float(want), rel=1e-10, abs=1e-10)


def test_rpo_and_sft_gradients():
    """d/d log π(y_w,i) of the mean sft loss is -1/Σn (rejected: 0); rpo's is dpo's plus α
    times that; both agree with finite differences."""
    pc, pr, rc, rr, n_w, _ = _batch(5, b=6)
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    (g_c, g_r) = torch.autograd.grad(
        preference_loss("sft", pc, pr, rc, rr, chosen_logps=pc, chosen_lengths=n_w), (pc, pr),
        allow_unused=True)
    torch.testing.assert_close(g_c, torch.full_like(pc, -1.0) / n_w.sum())
    assert g_r is None or torch.all(g_r == 0)
    dpo_c, = torch.autograd.grad(preference_loss("dpo", pc, pr, rc, rr, beta=0.3), pc)
    rpo_c, = torch.autograd.grad(preference_loss("rpo", pc, pr, rc, rr, beta=0.3, rpo_alpha=2.0,
                                                 chosen_logps=pc, chosen_lengths=n_w), pc)
    torch.testing.assert_close(rpo_c, dpo_c - 2.0 / n_w.sum())
    for kind in ("rpo", "sft"):
        def f(a, b, kind=kind):
            return preference_loss(kind, a, b, rc, rr, beta=0.5, reduction="none",
                                   chosen_logps=a, chosen_lengths=n_w)
        assert torch.autograd.gradcheck(f, (pc, pr))


def test_rpo_alpha_zero_is_dpo_and_registry():
    pc, pr, rc, rr, _, _ = _batch(7)
    torch.testing.assert_close(
        preference_loss("rpo", pc, pr, rc, rr, rpo_alpha=0.0, chosen_logps=pc),
        preference_loss("dpo", pc, pr, rc, rr))
    assert LOSSES["sft"].trl_name == "sft" and LOSSES["rpo"].params["rpo_alpha"] == 1.0


@pytest.mark.parametrize(
    ("kind", "kwargs", "exc", "match"),
    [("rpo", {}, ValueError, "chosen_logps"),
     ("sft", {}, ValueError, "chosen_logps"),
     ("rpo", {"rpo_alpha": -1.0, "chosen_logps": "pc"}, ValueError, "rpo_alpha"),
     ("rpo", {"rpo_alpha": float("nan"), "chosen_logps": "pc"}, ValueError, "rpo_alpha"),
     ("sft", {"chosen_logps": "short"}, ValueError, "chosen_logps must have the shape"),
     ("sft", {"chosen_logps": [1.0]}, TypeError, "chosen_logps"),
     ("sft", {"chosen_logps": "pc", "label_smoothing": 0.1}, TypeError, "unexpected")],
)
def test_rpo_sft_bad_input(kind, kwargs, exc, match):
    pc, pr, rc, rr, _, _ = _batch(9)
    subst = {"pc": pc, "short": pc[:3]}
    kwargs = {k: subst.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(exc, match=match):
        preference_loss(kind, pc, pr, rc, rr, **kwargs)
