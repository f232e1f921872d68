"""Bring your own loss: ``register_loss`` and ``mi-bounds audit`` (docs/THEORY.md, "Auditing a
loss").

The audit is validated on known answers: for every built-in loss its findings agree with what
docs/THEORY.md §2 states and what each formula implies (margin-only or not, the chosen term's
fixed point, the MI reading, the population optimum); losses built from a known bound with a
known scale and constant are read back exactly, and a perturbed one is not read at all.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mi_bounds.preference import (
    LOSSES,
    get_loss,
    load_loss,
    preference_loss,
    register_loss,
    registered_losses,
    unregister_loss,
)
from toy_models.audit import audit_one, invariances, main, mi_reading

REPO = Path(__file__).resolve().parents[1]
DPOP = f"{REPO / 'examples' / 'dpop.py'}:dpop"


@pytest.fixture
def clean_registry():
    """Remove what a test registered."""
    before = set(registered_losses())
    yield
    for name in set(registered_losses()) - before:
        unregister_loss(name)


def _dpo_like(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))


def _batch(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    pc, pr, rc, rr = (-20 * torch.rand(n, generator=g, dtype=torch.float64) - 1 for _ in range(4))
    return pc, pr, rc, rr


# --------------------------------------------------------------------------------------------
# register_loss: what it accepts, what it refuses.
# --------------------------------------------------------------------------------------------


def test_registered_loss_is_computed_by_preference_loss(clean_registry):
    """A registered copy of DPO equals the built-in dpo, per pair and reduced; parameters with
    defaults become the loss's keyword parameters."""
    register_loss("my_dpo", _dpo_like)
    pc, pr, rc, rr = _batch()
    for red in ("none", "mean", "sum"):
        torch.testing.assert_close(preference_loss("my_dpo", pc, pr, rc, rr, beta=0.3,
                                                   reduction=red),
                                   preference_loss("dpo", pc, pr, rc, rr, beta=0.3,
                                                   reduction=red), rtol=1e-14, atol=1e-14)

    def scaled(pc, pr, rc, rr, beta, c=1.0):
        return c * _dpo_like(pc, pr, rc, rr, beta)

    register_loss("scaled", scaled)
    assert dict(get_loss("scaled").params) == {"c": 1.0}
    torch.testing.assert_close(preference_loss("scaled", pc, pr, rc, rr, c=3.0),
                               3.0 * preference_loss("dpo", pc, pr, rc, rr))
    with pytest.raises(TypeError, match="unexpected parameter"):
        preference_loss("scaled", pc, pr, rc, rr, d=1.0)


def test_register_loss_refuses_what_it_cannot_run(clean_registry):
    with pytest.raises(ValueError, match="shadows the built-in loss 'dpo'"):
        register_loss("dpo", _dpo_like)
    with pytest.raises(TypeError, match="five positional arguments"):
        register_loss("two", lambda pc, pr: pc - pr)
    with pytest.raises(TypeError, match="needs a default"):
        register_loss("extra", lambda pc, pr, rc, rr, beta, lam: pc)
    with pytest.raises(ValueError, match=r"shape \(\) for 4 pairs.*no mean or sum"):
        register_loss("mean", lambda pc, pr, rc, rr, beta: _dpo_like(pc, pr, rc, rr, beta).mean())
    with pytest.raises(ValueError, match="not finite"):
        register_loss("nan", lambda pc, pr, rc, rr, beta: torch.log(pc - rc))  # log of < 0
    with pytest.raises(TypeError, match="returned ndarray"):
        register_loss("numpy", lambda pc, pr, rc, rr, beta: (pc - rc).detach().numpy())
    with pytest.raises(ValueError, match="autograd graph"):
        register_loss("detached", lambda pc, pr, rc, rr, beta: (pc - rc).detach())
    with pytest.raises(ValueError, match="raised ZeroDivisionError"):
        register_loss("raises", lambda pc, pr, rc, rr, beta: 1 / 0)
    with pytest.raises(ValueError, match="without ':'"):
        register_loss("a:b", _dpo_like)
    assert not set(registered_losses()) & {"dpo", "two", "extra", "mean", "nan", "numpy",
                                           "detached", "raises"}
    register_loss("ok", _dpo_like)
    register_loss("ok", _dpo_like)  # the same function again: no error
    with pytest.raises(ValueError, match="already registered"):
        register_loss("ok", lambda pc, pr, rc, rr, beta: _dpo_like(pc, pr, rc, rr, beta))
    with pytest.raises(ValueError, match="is a built-in"):
        unregister_loss("dpo")
    assert "dpo" in LOSSES and LOSSES["dpo"].builtin


def test_built_in_registries_are_read_only():
    from mi_bounds.bounds import BOUNDS
    from mi_bounds.estimation.training import ESTIMATORS

    for registry in (LOSSES, BOUNDS, ESTIMATORS):
        with pytest.raises(TypeError):
            registry["new"] = None  # type: ignore[index]
    with pytest.raises(TypeError):
        LOSSES["rpo"].params["rpo_alpha"] = 2.0  # type: ignore[index]


def test_file_reference_is_loaded_once_and_unknown_references_say_why(clean_registry):
    assert get_loss(DPOP).name == "dpop"
    assert load_loss(DPOP) == "dpop" and get_loss("dpop").source == DPOP
    with pytest.raises(ValueError, match="no file"):
        get_loss("nowhere.py:f")
    with pytest.raises(ValueError, match="has no 'nope'"):
        get_loss(f"{REPO / 'examples' / 'dpop.py'}:nope")
    with pytest.raises(ValueError, match="cannot import"):
        get_loss("no_such_module_xyz:f")
    with pytest.raises(ValueError, match=r"unknown preference loss 'nope'.*FILE\.py:FUNCTION"):
        get_loss("nope")


def test_dpop_file_matches_its_formula(clean_registry):
    pc, pr, rc, rr = _batch(seed=1)
    z_w, z_l = pc - rc, pr - rr
    want = torch.log1p(torch.exp(-0.1 * (z_w - z_l - 50.0 * torch.clamp(-z_w, min=0.0))))
    torch.testing.assert_close(preference_loss(DPOP, pc, pr, rc, rr, beta=0.1,
                                               reduction="none"), want, rtol=1e-12, atol=1e-12)


def test_registered_loss_runs_in_the_toy_dynamics_optimum_and_lm_config(clean_registry):
    """Everywhere a built-in name works: the exact dynamics and population optimum (a copy of
    DPO gives DPO's numbers) and the LM path's config (a file reference becomes its name)."""
    from mi_bounds.lm.config import AlignConfig
    from toy_models.displacement import displacement_world
    from toy_models.dynamics import gradient_descent
    from toy_models.optimum import population_optimum
    from toy_models.world import CategoricalWorld

    register_loss("my_dpo", _dpo_like)
    w = CategoricalWorld.random(0, 2, 4, 0.1)
    a, b = population_optimum(w, "my_dpo"), population_optimum(w, "dpo")
    np.testing.assert_allclose(a["policy"], b["policy"], atol=1e-10)
    c3 = displacement_world()
    ta = gradient_descent(c3.world, "my_dpo", pairs=c3.pairs, features=c3.features, lr=10.0,
                          steps=20)
    tb = gradient_descent(c3.world, "dpo", pairs=c3.pairs, features=c3.features, lr=10.0,
                          steps=20)
    np.testing.assert_allclose(ta.chosen_logps, tb.chosen_logps, rtol=1e-12)
    assert AlignConfig(losses=("dpo", DPOP)).losses == ("dpo", "dpop")
    with pytest.raises(ValueError, match="duplicates"):
        AlignConfig(losses=("dpop", DPOP))


# --------------------------------------------------------------------------------------------
# The audit on known answers: every built-in loss.
# --------------------------------------------------------------------------------------------

#: Losses that are functions of the margin T_w - T_l alone, by their formulas (docs/THEORY.md
#: §2; infonce with one negative is dpo - log 2; robust at ε = 0 and sigmoid_norm without
#: lengths are dpo).
MARGIN_ONLY = {"dpo", "ipo", "hinge", "robust", "exo_pair", "discopop", "sigmoid_norm",
               "infonce"}
#: The reading each bound loss has (LossSpec.bound, P = δ_w), as (bound, Q).
MIX, REJ = "½(δ_w + δ_l)", "δ_l"
READINGS = {
    "dpo": {("DV", MIX), ("InfoNCE_2", REJ)},  # log 2 - DV = log 2 - InfoNCE_2
    "infonce": {("DV", MIX), ("InfoNCE_2", REJ)},
    "mio": {("JS", MIX)},
    "nca_pair": {("JS", MIX)},
    "bco_pair": {("JS", REJ)},
    "nwj": {("NWJ", REJ)},
    # not bounds in the registry, but equal to dpo at their default parameters
    "robust": {("DV", MIX), ("InfoNCE_2", REJ)},  # label_smoothing = 0
    "sigmoid_norm": {("DV", MIX), ("InfoNCE_2", REJ)},  # no lengths
}
#: Chosen fixed points T_w* (∂L/∂T_w = 0 for every T_l): mio's 1.5σ(T_w) = 1 at log 2; SPPO's
#: squared chosen term (z_w - 1/(2β))² at β z_w = ½.
FIXED = {"mio": math.log(2.0), "nca_pair": math.log(2.0), "sppo_hard": 0.5}


@pytest.mark.parametrize("kind", list(LOSSES))
def test_audit_agrees_with_theory_on_every_built_in_loss(kind):
    a = audit_one(kind, worlds=2)
    inv = a["invariances"]
    assert a["depends_on_margin_only"] is (kind in MARGIN_ONLY)
    # rpo and sft read the policy's log-likelihood itself (their NLL term), the rest only T
    assert inv["depends_on_critic_only"] is (kind not in ("rpo", "sft"))
    assert inv["depends_on_T_l"] is (kind != "sft")
    if kind in MARGIN_ONLY:  # then nothing resists a joint fall
        assert not inv["resists_joint_fall_somewhere"]
        assert a["population_optimum"]["zeros_of_pi_ref"].startswith("indifferent")
    fp = inv["chosen_fixed_point"]
    if kind in FIXED:
        assert fp is not None and fp["attracting"]
        assert fp["t_w"] == pytest.approx(FIXED[kind], abs=1e-9)
    else:
        assert fp is None
    got = {(r["bound"], r["Q"].split(" (")[0]) for r in a["mi_reading"]["readings"]}
    assert got == READINGS.get(kind, set())
    for r in a["mi_reading"]["readings"]:  # a negated bound, scale 1, constant log 2 or 0
        assert r["scale"] == pytest.approx(1.0, abs=1e-9)
        assert r["constant"] == pytest.approx(math.log(2.0) if kind != "infonce" and
                                              r["bound"] in ("DV", "InfoNCE_2") else 0.0,
                                              abs=1e-9)
    kl = a["population_optimum"]["mean_kl_to_pi_star"]
    if kind in ("dpo", "infonce", "robust", "sigmoid_norm"):  # DPO's optimum is π*
        assert kl < 1e-8
    if kind in ("mio", "nca_pair", "ipo", "sft", "rpo"):
        assert kl > 1e-3
    if kind in ("mio", "nca_pair"):  # its chosen term pulls every chosen log-ratio up
        assert a["population_optimum"]["keeps_zeros"]


def test_fixed_point_of_mio_is_where_its_gradient_weight_vanishes():
    """The chosen fixed point is a zero of the gradient field: 1.5σ(T_w) - 1 = 0."""
    inv = invariances("mio")
    t = inv["chosen_fixed_point"]["t_w"]
    assert 1.5 / (1.0 + math.exp(-t)) - 1.0 == pytest.approx(0.0, abs=1e-12)


def test_reading_recovers_a_known_scale_and_constant_and_rejects_a_perturbation(clean_registry):
    """3 − 2·JS(δ_w, ½(δ_w+δ_l)) is read back as JS with s = 2, a = 3; mio plus 1e-3·T_w² has
    no reading (the fit is not at round-off)."""
    from mi_bounds.preference import preference_loss as pl

    def two_js(pc, pr, rc, rr, beta):
        return 3.0 + 2.0 * pl("mio", pc, pr, rc, rr, beta=beta, reduction="none")

    def bent(pc, pr, rc, rr, beta):
        return pl("mio", pc, pr, rc, rr, beta=beta, reduction="none") + 1e-3 * (
            beta * (pc - rc)) ** 2

    register_loss("two_js", two_js)
    register_loss("bent", bent)
    (r,) = mi_reading("two_js")["readings"]
    assert (r["bound"], r["Q"]) == ("JS", MIX)
    assert r["scale"] == pytest.approx(2.0, abs=1e-9) and r["constant"] == pytest.approx(3.0)
    assert mi_reading("bent")["readings"] == []


# --------------------------------------------------------------------------------------------
# The command.
# --------------------------------------------------------------------------------------------


def test_cli_json_and_report_for_a_file_loss(tmp_path, capsys, clean_registry):
    code = main([DPOP, "--steps", "40", "--worlds", "1", "--json", "--out", str(tmp_path)])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["loss"] == "dpop" and out["against"] == ["dpo", "mio"]
    assert out["depends_on_margin_only"] is False
    assert isinstance(out["population_optimum_kl_to_pi_star"], float)
    assert out["population_optimum_kl_to_pi_star"] == pytest.approx(
        out["audits"]["dpop"]["population_optimum"]["worlds"][0]["kl_to_pi_star"])
    assert set(out["dynamics"]["summary"]) == {"dpop", "dpo", "mio", "dpo_half"}
    for name in ("report.md", "audit.json", "gradient_fields.png", "dynamics.png"):
        assert (tmp_path / name).is_file()
    report = (tmp_path / "report.md").read_text()
    assert "# Audit of `dpop`" in report and "Margin only: no" in report
    assert "mio` = " in report  # mio's JS reading, with its numbers


@pytest.mark.parametrize(("argv", "message"), [
    (["nope"], "unknown preference loss 'nope'"),
    (["dpo", "--against", "nope"], "--against: unknown preference loss"),
    (["missing.py:f"], "no file missing.py"),
    (["dpo", "--beta", "0"], "--beta must be a number > 0"),
    (["dpo", "--lm"], "--lm needs --out"),
])
def test_cli_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err and err.startswith("mi-bounds audit: ")


def test_cli_registers_the_subcommand():
    from mi_bounds.cli import SUBCOMMANDS

    assert SUBCOMMANDS["audit"][0] == "toy_models.audit:main"


@pytest.mark.slow
def test_cli_lm_runs_the_small_lm_beside_the_comparators(tmp_path, capsys, clean_registry):
    """``--lm``: the cpu-tiny run with the file loss, dpo and mio; a verdict per run."""
    assert main([DPOP, "--against", "dpo", "mio", "--steps", "20", "--worlds", "1", "--lm",
                 "--out", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lm"]["losses"][1:] == ["dpo", "mio"]
    assert {k: len(v) for k, v in out["lm"]["verdicts"].items()} == {"dpop": 1, "dpo": 1,
                                                                    "mio": 1}
    assert (tmp_path / "lm" / "align" / "dpop-seed0" / "result.json").is_file()
    assert "## Small LM (cpu-tiny)" in (tmp_path / "report.md").read_text()
