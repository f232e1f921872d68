"""experiments/ches_validation.py on a synthetic study with a planted answer: the pre-registered
removal sets, the correlations and their decisions, the intervention at matched KL, and the
report rebuilt from the files alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import ches_validation as cv

STEPS = np.arange(0, 91, 10)
N_TRAIN, N_HELD, N_PROMPTS = 40, 12, 16


def test_removal_sets_are_the_preregistered_ones():
    ches = [0.0] * 84
    for rank, i in enumerate([5, 70, 3, 9, 11, 40, 41, 42, 60, 61, 62, 63, 64, 65]):
        ches[i] = 100.0 - rank
    sets = cv.removal_sets(ches)
    assert len(sets["drop-ches"]) == 13 == len(sets["drop-random"])
    assert sets["drop-ches"] == sorted([5, 70, 3, 9, 11, 40, 41, 42, 60, 61, 62, 63, 64])
    drawn = np.random.default_rng(0).choice(84, 13, replace=False)
    assert sets["drop-random"] == sorted(int(i) for i in drawn)
    tied = cv.removal_sets([1.0] * 20)  # ties: the lower index first
    assert tied["drop-ches"] == [0, 1, 2]


def _run(rng, loss, seed, lr, change, kl_slope, right, n_train=N_TRAIN):
    """An align result whose train pair i changes by change[i]·t/90 (plus small noise)."""
    base = {"train": rng.normal(-15, 3, n_train), "heldout": rng.normal(-15, 3, N_HELD)}
    hist = []
    for t in STEPS:
        h = {"step": int(t), "kl": {"k1": kl_slope * t, "k1_se": 0.1, "n": 64}}
        for sec, b in base.items():
            ch = (change if sec == "train" else np.full(N_HELD, change.mean())) * t / 90
            c = b + ch + 0.05 * rng.standard_normal(b.size) * (t > 0)
            r = b - 3 * t / 30
            m = 0.1 * ((c - b) - (r - b))
            h[sec] = {"logps/chosen": float(c.mean()), "rewards/margins": float(m.mean()),
                      "logps/chosen/per_pair": [round(float(v), 4) for v in c],
                      "logps/rejected/per_pair": [round(float(v), 4) for v in r],
                      "rewards/margins/per_pair": [round(float(v), 4) for v in m]}
        hist.append(h)
    hist[-1]["acc_heldout_per_prompt"] = [int(i < right) for i in range(N_PROMPTS)]
    return {"loss": loss, "seed": seed, "lr": lr, "beta": 0.1, "history": hist}


@pytest.fixture(scope="module", autouse=True)
def fewer_replicates():
    """400 bootstrap replicates instead of the pre-registered 2,000: the planted effects are
    far from 0, and the suite stays fast."""
    from experiments import smollm2_study as study

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cv, "N_BOOT", 400)
        mp.setattr(study, "N_BOOT", 400)
        yield


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """CHES predicts DPO's drop (change = −CHES + noise) and not MIO's (independent); removing
    the top-CHES pairs leaves the kept pairs falling less than a random removal does."""
    root = tmp_path_factory.mktemp("ches")
    study_dir, out = root / "study", root / "out"
    rng = np.random.default_rng(0)
    ches = rng.normal(size=N_TRAIN)
    rows = [{"index": i, "ches": float(c), "ches_normalized": float(c) / 2 + 0.1 * rng.normal(),
             "n_chosen": int(rng.integers(5, 30)), "n_rejected": int(rng.integers(5, 30)),
             "edit_distance": int(rng.integers(0, 20)), "margin0": float(rng.normal()),
             "chosen_logp0": -15.0} for i, c in enumerate(ches)]
    out.mkdir()
    (out / "ches_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    arms = {"dpo": ("beta0.1-lr1e-05", 1e-5, 4, lambda: -3 * ches - 2, 0.2),
            "mio": ("beta0.1-lr1e-05", 1e-5, 4, lambda: rng.normal(size=N_TRAIN), 0.1),
            "mio_h": ("beta0.1-lr3e-05", 3e-5, 3, lambda: rng.normal(size=N_TRAIN), 0.3)}
    for name, (setting, lr, seeds, change, slope) in arms.items():
        loss = name.split("_")[0]
        fixed = change()
        for s in range(seeds):
            noisy = fixed + 0.3 * rng.normal(size=N_TRAIN)
            path = study_dir / setting / "align_runs" / f"{loss}-seed{s}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(_run(rng, loss, s, lr, noisy, slope, 8)))
    removed = cv.removal_sets([r["ches"] for r in rows])
    kept = {k: [i for i in range(N_TRAIN) if i not in v] for k, v in removed.items()}
    (out / "removal.json").write_text(json.dumps({"removed": removed, "kept": kept}))
    # kept pairs fall by 1 nat after the top-CHES removal and by 4 after the random one
    for arm, fall in (("drop-ches", -1.0), ("drop-random", -4.0)):
        for s in range(3):
            change = np.full(len(kept[arm]), fall) + 0.2 * rng.normal(size=len(kept[arm]))
            path = out / "intervention" / arm / "align_runs" / f"dpo-seed{s}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(_run(rng, "dpo", s, 1e-5, change, 0.2, 9,
                                            n_train=len(kept[arm]))))
    assert cv.main(["report", str(out), str(study_dir)]) == 0
    return out, json.loads((out / "report" / "report.json").read_text())


def test_correlations_find_the_planted_predictor_and_decide(synthetic):
    _, res = synthetic
    c = res["correlations"]
    dpo = c["times"]["step90"]["dpo@1e-05"]["ches"]
    assert dpo["rho"] > 0.8 and dpo["ci"][0] > 0.6
    mio = c["times"]["step90"]["mio@1e-05"]["ches"]
    assert mio["ci"][0] < 0 < mio["ci"][1]
    h = c["hypotheses"]
    assert h["C1"]["decision"] == "supported"
    assert h["C3"]["decision"] == "supported"
    # the normalised variant is CHES/2 plus noise: not a "baseline", so not in C2
    assert set(h["C2"]["baselines"]) == {"n_chosen", "n_rejected", "edit_distance", "margin0"}
    assert h["C2"]["decision"] == "supported"
    # the KL level both DPO (0.2/step) and MIO (0.1/step) reach at step 90: 8 (≤ 9)
    assert "kl8" in c["times"]


def test_per_seed_change_matches_the_curves(synthetic):
    out, _ = synthetic
    from experiments import smollm2_study as study

    arms = study.load_arms(out.parent / "study")
    ch = cv.per_seed_change(arms["dpo@1e-05"], 90.0)
    y = study.pair_values(arms["dpo@1e-05"], "train")
    np.testing.assert_allclose(ch, y[..., -1] - y[..., 0])
    half = cv.per_seed_change(arms["dpo@1e-05"], "kl9")  # KL 0.2·t reaches 9 at t = 45
    mid = y[..., 4] + 0.5 * (y[..., 5] - y[..., 4]) - y[..., 0]
    np.testing.assert_allclose(half, mid, atol=1e-9)
    with pytest.raises(ValueError, match="step 35"):
        cv.per_seed_change(arms["dpo@1e-05"], 35.0)


def test_intervention_compares_the_common_pairs_at_matched_kl(synthetic):
    out, res = synthetic
    iv = res["intervention"]
    removal = json.loads((out / "removal.json").read_text())
    common = set(removal["kept"]["drop-ches"]) & set(removal["kept"]["drop-random"])
    assert iv["n_common_pairs"] == len(common)
    kl = iv["matched"]["kl"]["train_common"]
    reached = [r for r in kl if r["reached"]]
    assert [r["level"] for r in reached] == [2.0, 4.0, 6.0, 8.0, 12.0, 16.0]
    for r in reached:  # change ∝ t and KL = 0.2 t: at level L, t = 5L: +3·(5L/90)
        assert r["mean"] == pytest.approx(3 * 5 * r["level"] / 90, abs=0.15)
    assert iv["C4"]["decision"] == "supported"
    assert iv["accuracy_difference"]["mean"] == pytest.approx(0.0)
    md = (out / "report" / "report.md").read_text()
    assert "**C4**: supported" in md and "**C1**: supported" in md
    assert (out / "report" / "intervention_kl.png").stat().st_size > 1000
    assert (out / "report" / "ches_vs_drop.png").stat().st_size > 1000


def test_report_without_the_intervention_says_so(synthetic, tmp_path):
    out, _ = synthetic
    for name in ("ches_train.jsonl", "removal.json"):
        (tmp_path / name).write_text((out / name).read_text())
    assert cv.main(["report", str(tmp_path), str(out.parent / "study")]) == 0
    assert "Intervention: not run yet" in (tmp_path / "report" / "report.md").read_text()


def test_usage(capsys):
    assert cv.main([]) == 2
    assert "usage" in capsys.readouterr().err
