"""Tests of proofs/: every proof passes, the checks can fail, and docs/PROOFS.md does not drift.

The full set of proofs is run once per session (``results``); the perturbation tests re-run
single proofs with a formula changed, or build proofs that state a wrong identity, and check that
the failure is reported and makes ``mi-bounds verify`` exit non-zero.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import proofs
import proofs.verify as verify
from proofs import _core
from proofs._core import Proof, ProofResult, Step, equal, sign, softplus, solves

ROOT = Path(__file__).resolve().parent.parent
EXPECTED_KEYS = [f"p{k:02d}" for k in range(1, 15)]


@pytest.fixture(scope="session")
def results() -> dict[str, ProofResult]:
    return {r.proof.key: r for r in verify.run_proofs(seed=0)}


# --------------------------------------------------------------------------------------------
# Every proof passes.
# --------------------------------------------------------------------------------------------


def test_all_results_are_discovered() -> None:
    assert [p.key for p in proofs.discover()] == EXPECTED_KEYS


@pytest.mark.parametrize("key", EXPECTED_KEYS)
def test_proof_passes_symbolically_and_numerically(results, key) -> None:
    r = results[key]
    assert r.passed, r.failures()
    assert r.fully_symbolic, [s.claim for s in r.steps if not s.symbolic]
    assert r.spot_error <= r.proof.tolerance
    assert len(r.steps) >= 3


def test_get_proof_and_unknown_key() -> None:
    assert proofs.get_proof("p03").key == "p03"
    assert proofs.get_proof("p03_dv_bound").key == "p03"
    with pytest.raises(ValueError, match="valid keys: p01"):
        proofs.get_proof("p99")


# --------------------------------------------------------------------------------------------
# The checks can fail.
# --------------------------------------------------------------------------------------------


def test_equal_rejects_an_identity_off_by_a_constant(results) -> None:
    """P6's value step holds (see ``results``); the same statement off by log 2 fails."""
    from proofs import p06_js_bound as p06

    assert all(s.ok for s in results["p06"].steps)
    bad = equal("JS value, wrong constant", p06.js(p06.OPTIMAL_CRITIC),
                p06.VALUE + sp.log(2), given=p06.NORMALISED)
    assert not bad.ok and not bad.symbolic
    # and the normalisation is needed: without sum p = sum q = 1 the value is not 2 JSD - 2 log 2
    assert not _core._numeric_equal(p06.js(p06.OPTIMAL_CRITIC), p06.VALUE)
    assert _core._numeric_equal(p06.js(p06.OPTIMAL_CRITIC), p06.VALUE, given=p06.NORMALISED)


def test_solve_sign_and_fallback_checks_can_fail() -> None:
    t = sp.Symbol("t", real=True)
    x = sp.Symbol("x", positive=True)
    mio_weight = sp.Rational(3, 2) / (1 + sp.exp(-t)) - 1
    assert solves("", mio_weight, t, sp.log(2)).ok
    assert not solves("", mio_weight, t, sp.log(3)).ok
    # two roots: the uniqueness requirement rejects it even though log 2 is one of them
    assert not solves("", (t - sp.log(2)) * (t - 1), t, sp.log(2)).ok
    assert sign("", -x / (1 + x), "negative").ok
    assert not sign("", x - 1, "positive").ok  # not provable, and false at random points
    assert _core._numeric_equal(sp.log(x**2), 2 * sp.log(x))
    assert not _core._numeric_equal(softplus(t), sp.log(1 + sp.exp(t)) + 1e-6)


def _wrong_proof() -> Proof:
    """DV's value stated with an extra constant: the symbolic step must fail."""
    from proofs import p03_dv_bound as p03

    return Proof(
        key="p98", title="deliberately wrong: DV(T*) = KL + 1",
        statement="wrong on purpose", latex=("",),
        derive=lambda: [equal("value", p03.dv(p03.OPTIMAL_CRITIC), p03.KL + 1,
                              given=p03.NORMALISED)],
        spot_check=lambda rng: 0.0, spot_check_doc="none", source="test")


def test_wrong_proof_is_reported_failed_and_verify_exits_nonzero(monkeypatch, capsys,
                                                                 tmp_path) -> None:
    result = _wrong_proof().run()
    assert not result.passed and result.verdict.startswith("FAILED")
    monkeypatch.setattr(verify, "discover", lambda: [_wrong_proof()])
    out = tmp_path / "PROOFS.md"
    assert verify.main(["--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "FAIL" in printed and "p98" in printed
    assert "**FAILED**" in out.read_text(encoding="utf-8")


def test_monkeypatched_formula_fails_its_proof(monkeypatch) -> None:
    """NWJ's optimal critic without the +1: stationarity and value steps must both fail."""
    from proofs import p04_nwj_bound as p04

    monkeypatch.setattr(p04, "OPTIMAL_CRITIC", sp.log(p04.p[p04.i] / p04.q[p04.i]))
    result = p04.PROOF.run()
    assert not result.passed
    failed = [s.claim for s in result.steps if not s.ok]
    assert any("Stationarity" in c for c in failed)
    assert any("Value at the optimum" in c for c in failed)


def test_perturbed_decomposition_fails_p12(monkeypatch) -> None:
    """P12 with the gap's pi_Y replaced by the reference marginal (a plausible slip): the
    decomposition step must fail; and a gap off by 1e-9 in toy_models.mi_reading must fail the
    spot check (tolerance 1e-12)."""
    from proofs import p12_mi_decomposition as p12

    wrong = p12.expect(sp.log(p12.REF_Y[p12.y]) - sp.log(p12.REF[p12.x, p12.y]))
    monkeypatch.setattr(p12, "GAP", wrong)
    failed = [s.claim for s in p12.derive() if not s.ok]
    assert any("weighted by $P$ and summed" in c for c in failed)  # the decomposition step
    assert any("The gap in general" in c for c in failed)  # and the gap's split
    monkeypatch.undo()

    import toy_models.mi_reading as mr

    real = mr.decompose_tables

    def shifted(*args, **kwargs):
        out = real(*args, **kwargs)
        return {**out, "gap": out["gap"] + 1e-9}

    monkeypatch.setattr(mr, "decompose_tables", shifted)
    assert p12.spot_check(np.random.default_rng(0)) > p12.PROOF.tolerance


def test_broken_library_fails_the_numeric_spot_check(monkeypatch) -> None:
    """A DPO loss off by 1e-3 in mi_bounds.preference: P8's symbolic part still holds, its
    spot check does not, so the result fails."""
    import mi_bounds.preference as pref

    real = pref.preference_loss
    monkeypatch.setattr(pref, "preference_loss", lambda *a, **k: real(*a, **k) + 1e-3)
    result = proofs.get_proof("p08").run()
    assert result.symbolic_ok and not result.spot_ok and not result.passed
    assert "spot check error" in "\n".join(result.failures())


def test_a_raising_proof_is_reported_not_raised() -> None:
    def boom() -> list[Step]:
        raise RuntimeError("boom")

    proof = Proof(key="p97", title="raises", statement="", latex=(), derive=boom,
                  spot_check=lambda rng: float("nan"), spot_check_doc="", source="")
    result = proof.run()
    assert result.verdict == "ERROR" and not result.passed and result.spot_error == np.inf
    assert "boom" in "\n".join(result.failures())


def test_numeric_fallback_is_labelled_not_symbolic() -> None:
    proof = Proof(key="p96", title="fallback", statement="", latex=(),
                  derive=lambda: [Step("c", "x", True, "numeric", symbolic=False)],
                  spot_check=lambda rng: 0.0, spot_check_doc="", source="")
    result = proof.run()
    assert result.passed and not result.fully_symbolic
    assert result.verdict.startswith("numerically only")
    assert "*(numerically only)*" in verify.render_markdown([result])


# --------------------------------------------------------------------------------------------
# The document and the command.
# --------------------------------------------------------------------------------------------


def test_docs_proofs_md_matches_what_verify_writes(results) -> None:
    committed = (ROOT / "docs" / "PROOFS.md").read_text(encoding="utf-8")
    rendered = verify.render_markdown([results[k] for k in EXPECTED_KEYS])
    assert committed == rendered, "docs/PROOFS.md is out of date: run `mi-bounds verify`"
    for key in EXPECTED_KEYS:
        assert f'<a id="{key}"></a>' in committed
    assert "FAILED" not in committed and "numerically only" not in committed.split("## P01")[1]


def test_table_lists_every_result(results) -> None:
    table = verify.format_table(list(results.values()))
    for key in EXPECTED_KEYS:
        assert key in table
    assert "FAIL" not in table


def test_cli_dispatch_runs_verify(capsys, tmp_path) -> None:
    from mi_bounds.cli import main as cli_main

    out = tmp_path / "p07.md"
    assert cli_main(["verify", "--only", "p07", "--out", str(out)]) == 0
    assert "InfoNCE" in out.read_text(encoding="utf-8")
    assert "1 of 1 results verified" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        verify.main(["--only", "p42", "--no-write"])
