"""Tests of mi_bounds.preference: values against TRL's formulas, the bound identities of
docs/THEORY.md §2, gradients, metrics, input validation, and TRL itself (skipped without trl).

The reference formulas below are transcribed from TRL 1.16.0, ``trl/trainer/dpo_trainer.py``,
``DPOTrainer._compute_loss`` (f_divergence_type="reverse_kl"), with TRL's variable names.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from trl_stand_in import trl_compute_loss

from mi_bounds.bounds import (
    dv_bound,
    infonce_bound_from_negatives,
    js_bound,
    nwj_bound,
)
from mi_bounds.preference import (
    LOSSES,
    get_loss,
    implicit_reward,
    preference_loss,
    preference_metrics,
)
from toy_models.strategies import betas, log_probs

B = 64
#: losses with a chosen-NLL term (rpo, sft) take the policy's chosen log-probs as a parameter;
#: they are tested against TRL in tests/test_lm_losses.py
NLL = {k for k, s in LOSSES.items() if "chosen_logps" in s.params}
PAIRWISE = [k for k in LOSSES if k != "infonce" and k not in NLL]
#: parameters that make each TRL loss non-trivial (exo_pair requires label_smoothing > 0)
PARAMS = {
    "robust": {"label_smoothing": 0.2},
    "exo_pair": {"label_smoothing": 1e-3},
    "discopop": {"discopop_tau": 0.05},
}


def _batch(seed: int, b: int = B, scale: float = 20.0, k1: int | None = None):
    g = torch.Generator().manual_seed(seed)
    shape_r = (b,) if k1 is None else (b, k1)
    pc = -scale * torch.rand(b, generator=g, dtype=torch.float64)
    pr = -scale * torch.rand(shape_r, generator=g, dtype=torch.float64)
    rc = -scale * torch.rand(b, generator=g, dtype=torch.float64)
    rr = -scale * torch.rand(shape_r, generator=g, dtype=torch.float64)
    return pc, pr, rc, rr


# --------------------------------------------------------------------------------------------
# Independent transcriptions of TRL 1.16's formulas (per sequence, float64).
# --------------------------------------------------------------------------------------------


def trl_reference(kind, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps,
                  beta, label_smoothing=0.0, discopop_tau=0.05, chosen_len=None,
                  rejected_len=None):
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    chosen_scores, rejected_scores = chosen_logratios, rejected_logratios
    delta_score = chosen_scores - rejected_scores
    n_w = torch.ones_like(chosen_logps) if chosen_len is None else chosen_len
    n_l = torch.ones_like(chosen_logps) if rejected_len is None else rejected_len
    if kind in ("dpo", "sigmoid"):
        return -F.logsigmoid(beta * delta_score)
    if kind == "hinge":
        return torch.relu(1 - beta * delta_score)
    if kind == "ipo":
        ipo_delta = chosen_scores / n_w.clamp(min=1.0) - rejected_scores / n_l.clamp(min=1.0)
        return (ipo_delta - 1 / (2 * beta)) ** 2
    if kind == "exo_pair":
        epsilon = torch.tensor(label_smoothing, dtype=torch.float64)
        qw = torch.sigmoid(beta * delta_score)
        log_qw = F.logsigmoid(beta * delta_score)
        log_pw = torch.log1p(-epsilon)
        ql = torch.sigmoid(-beta * delta_score)
        log_ql = F.logsigmoid(-beta * delta_score)
        log_pl = torch.log(epsilon)
        return qw * (log_qw - log_pw) + ql * (log_ql - log_pl)
    if kind == "nca_pair":
        chosen_rewards = beta * chosen_logratios
        rejected_rewards = beta * rejected_logratios
        return (
            -F.logsigmoid(chosen_rewards)
            - 0.5 * F.logsigmoid(-chosen_rewards)
            - 0.5 * F.logsigmoid(-rejected_rewards)
        )
    if kind == "robust":
        clean_loss_term = -(1 - label_smoothing) * F.logsigmoid(beta * delta_score)
        flipped_loss_term = -label_smoothing * F.logsigmoid(-beta * delta_score)
        return (clean_loss_term - flipped_loss_term) / (1 - 2 * label_smoothing)
    if kind == "bco_pair":
        chosen_rewards = beta * chosen_logratios
        rejected_rewards = beta * rejected_logratios
        return -F.logsigmoid(chosen_rewards) - F.logsigmoid(-rejected_rewards)
    if kind == "sppo_hard":
        winner_margin_error = (chosen_logratios - 0.5 / beta) ** 2
        loser_margin_error = (rejected_logratios + 0.5 / beta) ** 2
        return winner_margin_error + loser_margin_error
    if kind == "apo_zero":
        losses_chosen = 1 - torch.sigmoid(beta * chosen_logratios)
        losses_rejected = torch.sigmoid(beta * rejected_logratios)
        return losses_chosen + losses_rejected
    if kind == "apo_down":
        losses_chosen = torch.sigmoid(beta * chosen_logratios)
        losses_rejected = 1 - torch.sigmoid(beta * (chosen_logratios - rejected_logratios))
        return losses_chosen + losses_rejected
    if kind == "discopop":
        logits = delta_score * beta
        log_ratio_modulation = torch.sigmoid(logits / discopop_tau)
        logistic_component = -F.logsigmoid(logits)
        exp_component = torch.exp(-logits)
        return (logistic_component * (1 - log_ratio_modulation)
                + exp_component * log_ratio_modulation)
    if kind == "sigmoid_norm":
        delta = chosen_scores / n_w.clamp(min=1.0) - rejected_scores / n_l.clamp(min=1.0)
        return -F.logsigmoid(beta * delta)
    raise KeyError(kind)


def design_reference(kind, t_w, t_l):
    """docs/THEORY.md §2's formulas for the MI losses, written with numpy (float64)."""
    t_w, t_l = np.asarray(t_w), np.asarray(t_l)
    sp = np.logaddexp  # softplus(x) = logaddexp(0, x)
    if kind == "mio":
        return sp(0, -t_w) + 0.5 * sp(0, t_w) + 0.5 * sp(0, t_l)
    if kind == "nwj":
        return -t_w + np.exp(t_l - 1)
    if kind == "infonce":
        row = np.concatenate([t_w[:, None], t_l], 1)
        m = row.max(1)
        return -t_w + m + np.log(np.exp(row - m[:, None]).sum(1)) - math.log(row.shape[1])
    raise KeyError(kind)


# --------------------------------------------------------------------------------------------
# Values.
# --------------------------------------------------------------------------------------------


def _trl_mismatch(kind: str, beta: float) -> str | None:
    """How ``preference_loss(kind)`` differs from the TRL 1.16 transcription (None: it doesn't,
    to float64 round-off: rtol = atol = 1e-12)."""
    pc, pr, rc, rr = _batch(1)
    params = PARAMS.get(kind, {})
    got = preference_loss(kind, pc, pr, rc, rr, beta=beta, reduction="none", **params)
    want = trl_reference(kind, pc, pr, rc, rr, beta, **params)
    assert got.dtype == torch.float64
    try:
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    except AssertionError as err:
        return str(err)
    return None


@pytest.mark.parametrize("beta", [0.05, 0.1, 1.0])
@pytest.mark.parametrize("kind", [k for k in PAIRWISE if k not in ("mio", "nwj")])
def test_loss_matches_trl_formula(kind, beta):
    """Every TRL loss equals its transcription from TRL 1.16 to float64 round-off."""
    assert _trl_mismatch(kind, beta) is None


@pytest.mark.parametrize(("kernel", "kinds"), [("_infonce_terms", ("dpo",)),
                                               ("_js_pos", ("nca_pair", "bco_pair")),
                                               ("_js_neg", ("nca_pair", "bco_pair"))])
def test_a_wrong_kernel_is_caught(monkeypatch, kernel, kinds):
    """Mutation check: the bound kernels the losses call, made wrong by 1e-3 relative, make the
    TRL comparison fail for each loss that uses them (and leave the others passing)."""
    import mi_bounds._losses as P  # the loss formulas call the kernels from this module

    real = getattr(P, kernel)
    monkeypatch.setattr(P, kernel, lambda *a: real(*a) * (1 + 1e-3))
    for kind in kinds:
        assert _trl_mismatch(kind, 0.1) is not None, kind
    assert _trl_mismatch("ipo", 0.1) is None


@pytest.mark.parametrize("kind", ["ipo", "sigmoid_norm"])
def test_length_normalised_losses_match_trl(kind):
    """ipo/sigmoid_norm divide the log-ratios by completion lengths clamped to ≥ 1, as TRL."""
    pc, pr, rc, rr = _batch(2)
    g = torch.Generator().manual_seed(3)
    n_w = torch.randint(0, 30, (B,), generator=g).double()
    n_l = torch.randint(0, 30, (B,), generator=g).double()
    got = preference_loss(kind, pc, pr, rc, rr, beta=0.1, reduction="none",
                          chosen_lengths=n_w, rejected_lengths=n_l)
    want = trl_reference(kind, pc, pr, rc, rr, 0.1, chosen_len=n_w, rejected_len=n_l)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["mio", "nwj"])
def test_mi_losses_match_design_formula(kind):
    pc, pr, rc, rr = _batch(4)
    beta = 0.3
    got = preference_loss(kind, pc, pr, rc, rr, beta=beta, reduction="none")
    want = design_reference(kind, (beta * (pc - rc)).numpy(), (beta * (pr - rr)).numpy())
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3, 8])
def test_infonce_matches_design_formula(k):
    pc, pr, rc, rr = _batch(5, k1=k - 1)
    beta = 0.5
    got = preference_loss("infonce", pc, pr, rc, rr, beta=beta, reduction="none")
    want = design_reference("infonce", (beta * (pc - rc)).numpy(), (beta * (pr - rr)).numpy())
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


def test_robust_with_no_flips_is_dpo_and_sigmoid_names():
    pc, pr, rc, rr = _batch(6)
    a = preference_loss("robust", pc, pr, rc, rr, beta=0.2, reduction="none")
    b = preference_loss("dpo", pc, pr, rc, rr, beta=0.2, reduction="none")
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert LOSSES["dpo"].trl_name == "sigmoid"


def test_reductions():
    pc, pr, rc, rr = _batch(7)
    per = preference_loss("mio", pc, pr, rc, rr, reduction="none")
    assert per.shape == (B,)
    torch.testing.assert_close(preference_loss("mio", pc, pr, rc, rr), per.mean())
    torch.testing.assert_close(preference_loss("mio", pc, pr, rc, rr, reduction="sum"), per.sum())


def test_numpy_and_half_inputs():
    pc, pr, rc, rr = _batch(8)
    t = preference_loss("dpo", pc, pr, rc, rr, reduction="none")
    n = preference_loss("dpo", pc.numpy(), pr.numpy(), rc.numpy(), rr.numpy(), reduction="none")
    torch.testing.assert_close(t, n)
    h = preference_loss("dpo", pc.half(), pr.half(), rc.half(), rr.half(), reduction="none")
    assert h.dtype == torch.float32
    assert torch.isfinite(h).all()


# --------------------------------------------------------------------------------------------
# Identities of docs/THEORY.md §2 (the losses as negated bounds).
# --------------------------------------------------------------------------------------------

@st.composite
def log_prob_batches(draw, max_size=16):
    """Four log-probability vectors in [-1e3, 0] (so log-ratios in [-1e3, 1e3])."""
    n = draw(st.integers(1, max_size))
    rows = [draw(st.tuples(log_probs(), log_probs(), log_probs(), log_probs())) for _ in range(n)]
    return tuple(torch.tensor(col, dtype=torch.float64) for col in zip(*rows, strict=True))


def _nwj_overflows(pr, rr, beta) -> bool:
    """Whether beta·(pr - rr) - 1 passes log(largest float64) somewhere (computed in Python)."""
    return max(beta * (a - b) - 1.0 for a, b in zip(pr.tolist(), rr.tolist(), strict=True)) \
        > math.log(torch.finfo(torch.float64).max)


@given(log_prob_batches(), betas())
def test_bound_identities(batch, beta):
    """dpo = log 2 - DV(δ_w, ½(δ_w+δ_l)) = log 2 - InfoNCE_2; mio = nca_pair = -JS(δ_w, ½(δ_w+δ_l));
    bco_pair = -JS(δ_w, δ_l); nwj = -NWJ(δ_w, δ_l) (or both raise the documented overflow
    error); all to float64 round-off, for log-probabilities in [-1e3, 0] and beta in
    [1e-3, 10]."""
    pc, pr, rc, rr = batch
    t_w, t_l = beta * (pc - rc), beta * (pr - rr)

    def loss(kind):
        return preference_loss(kind, pc, pr, rc, rr, beta=beta, reduction="none")

    both = torch.stack([t_w, t_l], -1)  # (B, 2): the support {w, l} of Q = ½(δ_w + δ_l)
    half = torch.full_like(both, 0.5)
    pos = t_w.unsqueeze(-1)  # (B, 1)
    scale = 1.0 + float(both.abs().max())
    tol = {"rtol": 1e-12, "atol": 1e-14 * scale}
    dv = dv_bound(pos, both, neg_weight=half)
    torch.testing.assert_close(loss("dpo"), math.log(2) - dv, **tol)
    nce2 = infonce_bound_from_negatives(pos, t_l.reshape(-1, 1, 1))
    torch.testing.assert_close(loss("dpo"), math.log(2) - nce2, **tol)
    torch.testing.assert_close(loss("mio"), -js_bound(pos, both, neg_weight=half), **tol)
    torch.testing.assert_close(loss("nca_pair"), loss("mio"), rtol=0, atol=0)
    torch.testing.assert_close(loss("bco_pair"), -js_bound(pos, t_l.unsqueeze(-1)), **tol)
    if _nwj_overflows(pr, rr, beta):
        for call in (lambda: loss("nwj"), lambda: nwj_bound(pos, t_l.unsqueeze(-1))):
            with pytest.raises(ValueError, match=r"709\.78"):
                call()
    else:
        torch.testing.assert_close(loss("nwj"), -nwj_bound(pos, t_l.unsqueeze(-1)), **tol)
    # infonce with one negative is dpo - log 2
    torch.testing.assert_close(loss("infonce"), loss("dpo") - math.log(2), **tol)


@given(log_prob_batches(max_size=4), betas(), st.sampled_from(sorted(LOSSES)))
def test_every_loss_finite_with_finite_gradient_at_the_edges(batch, beta, kind):
    """For log-probabilities in [-1e3, 0] and beta in [1e-3, 10], every loss is finite with a
    finite gradient, or raises its documented error (nwj past exp's overflow; ipo/sppo_hard are
    squares that overflow no float here)."""
    pc, pr, rc, rr = (x.clone().requires_grad_(True) for x in batch)
    params = PARAMS.get(kind, {})
    if kind in NLL:  # rpo, sft: the chosen NLL term needs the policy's chosen log-probs
        params = {**params, "chosen_logps": pc}
    if kind == "nwj" and _nwj_overflows(pr.detach(), rr.detach(), beta):
        with pytest.raises(ValueError, match=r"policy_rejected_logps.*709\.78"):
            preference_loss(kind, pc, pr, rc, rr, beta=beta, **params)
        return
    loss = preference_loss(kind, pc, pr, rc, rr, beta=beta, reduction="sum", **params)
    # sft does not read the rejected or reference log-probs: their gradient is None (zero)
    grads = torch.autograd.grad(loss, (pc, pr, rc, rr), allow_unused=kind == "sft")
    assert math.isfinite(float(loss.detach()))
    assert all(g is None or bool(torch.isfinite(g).all()) for g in grads), grads


def test_infonce_is_negated_infonce_bound():
    pc, pr, rc, rr = _batch(9, k1=5)
    beta = 0.7
    got = preference_loss("infonce", pc, pr, rc, rr, beta=beta, reduction="none")
    bound = infonce_bound_from_negatives((beta * (pc - rc)).unsqueeze(-1),
                                         (beta * (pr - rr)).unsqueeze(-2))
    torch.testing.assert_close(got, -bound, rtol=1e-12, atol=1e-12)
    assert bool((got >= -math.log(6) - 1e-12).all())  # InfoNCE_K ≤ log K


def test_mio_is_nca_pair_term_for_term():
    """mio's three terms are nca_pair's three terms: -log σ(T_w) = softplus(-T_w), etc."""
    assert LOSSES["mio"].fn is LOSSES["nca_pair"].fn
    pc, pr, rc, rr = _batch(10)
    beta = 0.1
    t_w, t_l = beta * (pc - rc), beta * (pr - rr)
    terms_mio = [F.softplus(-t_w), 0.5 * F.softplus(t_w), 0.5 * F.softplus(t_l)]
    terms_nca = [-F.logsigmoid(t_w), -0.5 * F.logsigmoid(-t_w), -0.5 * F.logsigmoid(-t_l)]
    for a, b in zip(terms_mio, terms_nca, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(preference_loss("mio", pc, pr, rc, rr, reduction="none"),
                               sum(terms_nca), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Gradients.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [k for k in LOSSES if k not in NLL])
def test_gradcheck(kind):
    """Autograd agrees with finite differences for every loss (float64)."""
    k1 = 3 if kind == "infonce" else None
    pc, pr, rc, rr = _batch(11, b=6, scale=3.0, k1=k1)
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    params = PARAMS.get(kind, {})

    def f(a, b):
        return preference_loss(kind, a, b, rc, rr, beta=0.5, reduction="none", **params)

    assert torch.autograd.gradcheck(f, (pc, pr))


def test_closed_form_gradients():
    """docs/THEORY.md §2: dpo dL/dT_w = -σ(T_l - T_w) = -dL/dT_l; mio dL/dT_w = 1.5σ(T_w) - 1,
    dL/dT_l = ½σ(T_l); mio's chosen gradient vanishes at T_w = log 2."""
    g = torch.Generator().manual_seed(12)
    t_w = (4 * torch.randn(B, generator=g, dtype=torch.float64)).requires_grad_(True)
    t_l = (4 * torch.randn(B, generator=g, dtype=torch.float64)).requires_grad_(True)
    zeros = torch.zeros(B, dtype=torch.float64)
    # beta = 1 so T = z
    dw, dl = torch.autograd.grad(preference_loss("dpo", t_w, t_l, zeros, zeros, beta=1.0,
                                                 reduction="sum"), (t_w, t_l))
    torch.testing.assert_close(dw, -torch.sigmoid(t_l - t_w).detach())
    torch.testing.assert_close(dl, torch.sigmoid(t_l - t_w).detach())
    dw, dl = torch.autograd.grad(preference_loss("mio", t_w, t_l, zeros, zeros, beta=1.0,
                                                 reduction="sum"), (t_w, t_l))
    torch.testing.assert_close(dw, (1.5 * torch.sigmoid(t_w) - 1).detach())
    torch.testing.assert_close(dl, (0.5 * torch.sigmoid(t_l)).detach())
    at = torch.tensor([math.log(2)], dtype=torch.float64, requires_grad=True)
    (d0,) = torch.autograd.grad(preference_loss("mio", at, at.detach() * 0, at.detach() * 0,
                                                at.detach() * 0, beta=1.0), (at,))
    assert abs(float(d0)) < 1e-15


def test_dpo_is_shift_invariant_mio_is_not():
    pc, pr, rc, rr = _batch(13)
    for c in (-5.0, 3.0):
        torch.testing.assert_close(preference_loss("dpo", pc + c, pr + c, rc, rr),
                                   preference_loss("dpo", pc, pr, rc, rr))
    assert not torch.allclose(preference_loss("mio", pc - 5, pr - 5, rc, rr),
                              preference_loss("mio", pc, pr, rc, rr))


# --------------------------------------------------------------------------------------------
# Metrics and implicit reward.
# --------------------------------------------------------------------------------------------


def test_metrics_and_implicit_reward():
    pc, pr, rc, rr = _batch(14)
    beta = 0.1
    m = preference_metrics(pc, pr, rc, rr, beta=beta)
    cr = beta * (pc - rc)
    rj = beta * (pr - rr)
    torch.testing.assert_close(implicit_reward(pc, rc, beta), cr)
    torch.testing.assert_close(m["rewards/chosen"], cr.mean())
    torch.testing.assert_close(m["rewards/rejected"], rj.mean())
    torch.testing.assert_close(m["rewards/margins"], (cr - rj).mean())
    torch.testing.assert_close(m["rewards/accuracies"], (cr > rj).double().mean())
    torch.testing.assert_close(m["logps/chosen"], pc.mean())
    torch.testing.assert_close(m["logps/rejected"], pr.mean())
    assert set(m) == {"rewards/chosen", "rewards/rejected", "rewards/margins",
                      "rewards/accuracies", "logps/chosen", "logps/rejected"}


# --------------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------------


def test_bad_input():
    pc, pr, rc, rr = _batch(15, b=4)
    with pytest.raises(ValueError, match="valid kinds: dpo, mio"):
        preference_loss("nope", pc, pr, rc, rr)
    with pytest.raises(ValueError, match="valid kinds"):
        get_loss("sigmoid")
    with pytest.raises(ValueError, match="beta"):
        preference_loss("dpo", pc, pr, rc, rr, beta=0.0)
    with pytest.raises(TypeError, match="beta"):
        preference_loss("dpo", pc, pr, rc, rr, beta="0.1")
    with pytest.raises(ValueError, match="reduction"):
        preference_loss("dpo", pc, pr, rc, rr, reduction="avg")
    with pytest.raises(ValueError, match="policy_rejected_logps"):
        preference_loss("dpo", pc, pr[:3], rc, rr[:3])
    with pytest.raises(ValueError, match="reference_chosen_logps"):
        preference_loss("dpo", pc, pr, rc[:3], rr)
    with pytest.raises(ValueError, match="policy_rejected_logps"):
        preference_loss("infonce", pc, torch.zeros(3, 2, dtype=torch.float64), rc,
                        torch.zeros(3, 2, dtype=torch.float64))
    bad = pc.clone()
    bad[0] = float("nan")
    with pytest.raises(ValueError, match="policy_chosen_logps"):
        preference_loss("dpo", bad, pr, rc, rr)
    with pytest.raises(TypeError, match="reference_rejected_logps"):
        preference_loss("dpo", pc, pr, rc, [0.0, 1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="label_smoothing"):
        preference_loss("dpo", pc, pr, rc, rr, label_smoothing=0.1)
    with pytest.raises(ValueError, match="label_smoothing"):
        preference_loss("exo_pair", pc, pr, rc, rr)  # TRL requires ε > 0 for EXO
    with pytest.raises(ValueError, match="label_smoothing"):
        preference_loss("robust", pc, pr, rc, rr, label_smoothing=0.5)
    with pytest.raises(ValueError, match="discopop_tau"):
        preference_loss("discopop", pc, pr, rc, rr, discopop_tau=-1.0)
    with pytest.raises(ValueError, match="chosen_lengths"):
        preference_loss("ipo", pc, pr, rc, rr, chosen_lengths=-torch.ones(4))
    # the caller's tensors are not modified
    before = pc.clone()
    preference_loss("mio", pc, pr, rc, rr)
    assert torch.equal(pc, before)


def test_registry_is_documented():
    for name, spec in LOSSES.items():
        assert spec.name == name
        assert spec.formula and spec.source and spec.P and spec.Q
    assert {"dpo", "mio", "bco_pair", "infonce", "nwj", "ipo", "hinge", "robust", "nca_pair",
            "sppo_hard", "apo_zero", "apo_down", "exo_pair", "discopop",
            "sigmoid_norm", "rpo", "sft"} == set(LOSSES)


# --------------------------------------------------------------------------------------------
# Against TRL itself (skipped when trl is not installed).
# --------------------------------------------------------------------------------------------


def test_against_trl_itself():
    """Each loss (mean over a batch) and each metric equals TRL 1.16's own computation."""
    pytest.importorskip("trl")
    pc, pr, rc, rr = _batch(16, b=8)
    g = torch.Generator().manual_seed(17)
    n_w = torch.randint(1, 6, (8,), generator=g).double()
    n_l = torch.randint(1, 6, (8,), generator=g).double()
    beta = 0.2
    for kind, spec in LOSSES.items():
        if spec.trl_name is None or kind in NLL:
            continue
        params = dict(PARAMS.get(kind, {}))
        if kind in ("ipo", "sigmoid_norm"):
            params.update(chosen_lengths=n_w, rejected_lengths=n_l)
        trl_kw = {k: v for k, v in params.items() if k in ("label_smoothing", "discopop_tau")}
        want, metrics = trl_compute_loss([spec.trl_name], [1.0], pc, pr, rc, rr, n_w, n_l, beta,
                                         **trl_kw)
        got = preference_loss(kind, pc, pr, rc, rr, beta=beta, **params)
        torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-6, atol=1e-9,
                                   msg=f"{kind} (TRL {spec.trl_name})")
    ours = preference_metrics(pc, pr, rc, rr, beta=beta)
    for name, value in ours.items():
        assert metrics[name][-1] == pytest.approx(float(value), rel=1e-12, abs=1e-12), name


def test_discopop_is_finite_where_the_naive_formula_overflows():
    """x = β(z_w - z_l) = -1000: exp(-x) overflows, σ(x/τ) underflows; the loss is softplus(-x)."""
    z = torch.tensor([-1000.0], dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    got = preference_loss("discopop", z, zero, zero, zero, beta=1.0)
    assert float(got) == pytest.approx(1000.0, rel=1e-12)
