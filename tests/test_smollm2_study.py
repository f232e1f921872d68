"""The SmolLM2 decline study: the preset's structure, and the analysis
(experiments/smollm2_study.py) on a synthetic results folder whose answers are known."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from experiments import smollm2_study as st
from mi_bounds.lm.config import PRESETS, RunConfig, get_preset

STEPS = np.arange(0, 91, 10)


# --------------------------------------------------------------------------- the presets


def test_study_preset_arms_and_logging():
    cfg = get_preset("smollm2-study")
    names = [cfg.variant_name(i) for i in range(len(cfg.grid))]
    assert names == ["beta0.1-lr1e-05", "beta0.1-lr3e-05", "beta0.1-lr1e-05-secondary"]
    arms = [(v.align.losses, v.align.seeds, v.align.lr)
            for v in (cfg.variant(i) for i in range(len(cfg.grid)))]
    assert arms == [(("dpo", "mio"), (0, 1, 2, 3), 1e-5), (("mio",), (0, 1, 2), 3e-5),
                    (("ipo", "rpo"), (0, 1, 2), 1e-5)]
    a, s = cfg.align, cfg.sample
    assert (a.steps, a.batch_size, a.eval_every, a.beta) == (90, 4, 10, 0.1)
    assert a.n_eval_pairs == 0 and a.per_pair and a.per_prompt_accuracy
    assert a.kl_prompts >= 32 and a.kl_samples >= 2 and a.acc_every == a.steps
    assert s.n_heldout_prompts >= 96 and a.kl_prompts <= s.n_heldout_prompts
    gpu = get_preset("smollm2-study-gpu")
    assert gpu.align.seeds == (0, 1, 2, 3, 4) and gpu.align.per_pair
    settings = {(gpu.variant(i).align.beta, gpu.variant(i).align.lr) for i in range(9)}
    assert len(settings) == 9  # 3 betas x 3 rates


def test_other_presets_log_as_before():
    """The new logging is off in every older preset, so their numbers do not change."""
    for name, cfg in PRESETS.items():
        if not name.startswith("smollm2-study"):
            assert not cfg.align.per_pair and not cfg.align.per_prompt_accuracy, name
            assert cfg.align.n_eval_pairs > 0, name


def test_grid_tag_names_an_entry_and_is_validated():
    cfg = get_preset("chat-tiny").to_dict()
    cfg["grid"] = [{"lr": 1e-3}, {"lr": 1e-3, "losses": ["dpo"], "tag": "again"}]
    run = RunConfig.from_dict(cfg)
    assert [run.variant_name(i) for i in range(2)] == ["beta0.1-lr0.001", "beta0.1-lr0.001-again"]
    assert "tag" not in run.variant(1).to_dict()["align"]
    cfg["grid"] = [{"lr": 1e-3}, {"lr": 1e-3, "tag": "a/b"}]
    with pytest.raises(ValueError, match=r"grid\[1\]\.tag"):
        RunConfig.from_dict(cfg)
    cfg["grid"] = [{"lr": 1e-3}, {"lr": 1e-3, "losses": ["dpo"]}]
    with pytest.raises(ValueError, match="repeated"):
        RunConfig.from_dict(cfg)


@pytest.mark.parametrize("field,value,match", [
    ("per_pair", 1, "align.per_pair"), ("per_prompt_accuracy", "yes", "align.per_prompt"),
    ("n_eval_pairs", -1, "align.n_eval_pairs")])
def test_logging_fields_are_validated(field, value, match):
    with pytest.raises((TypeError, ValueError), match=match):
        get_preset("cpu-tiny").replace(align={field: value})


# --------------------------------------------------------------------------- synthetic study


def _dpo(t):  # rises by 4 nats to step 30, then falls by 10
    return np.where(t <= 30, 4 * t / 30, 4 - 10 * (t - 30) / 60)


ARMS = {  # arm -> (setting, loss, lr, seeds, chosen change f(t), KL slope per step)
    "dpo": ("beta0.1-lr1e-05", "dpo", 1e-5, 4, _dpo, 0.25),
    "mio": ("beta0.1-lr1e-05", "mio", 1e-5, 4, lambda t: 5 * t / 90, 0.1),
    "mio_high": ("beta0.1-lr3e-05", "mio", 3e-5, 3, lambda t: 6 * t / 90, 0.2),
    # a secondary arm cut short by the budget: one seed finished
    "ipo": ("beta0.1-lr1e-05-secondary", "ipo", 1e-5, 1, lambda t: 2 * t / 90, 0.15),
}
N_PAIRS = {"train": 12, "heldout": 10}
N_PROMPTS = 20
RIGHT = {"dpo": 8, "mio": 15, "mio_high": 14, "ipo": 10}  # prompts answered right (the first n)
NOISE = 0.01


def _history(rng, f, slope, right):
    base = {s: rng.normal(-15, 3, n) for s, n in N_PAIRS.items()}
    hist = []
    for t in STEPS:
        h = {"step": int(t), "kl": {"k1": slope * t, "k1_se": 0.1, "n": 64}}
        for s, n in N_PAIRS.items():
            c = base[s] + f(t) + NOISE * rng.standard_normal(n) * (t > 0)
            r = base[s] - 2 * t / 30
            m = 0.1 * ((c - base[s]) - (r - base[s]))
            h[s] = {"logps/chosen": float(c.mean()), "rewards/margins": float(m.mean()),
                    "logps/chosen/per_pair": [round(float(v), 4) for v in c],
                    "logps/rejected/per_pair": [round(float(v), 4) for v in r],
                    "rewards/margins/per_pair": [round(float(v), 4) for v in m]}
        hist.append(h)
    hist[-1]["acc_heldout_per_prompt"] = [int(i < right) for i in range(N_PROMPTS)]
    return hist


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("smollm2-study")
    rng = np.random.default_rng(0)
    for arm, (setting, loss, lr, seeds, f, slope) in ARMS.items():
        for seed in range(seeds):
            hist = _history(rng, f, slope, RIGHT[arm])
            path = root / setting / "align_runs" / f"{loss}-seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"loss": loss, "seed": seed, "lr": lr, "beta": 0.1,
                                        "history": hist}))
    t0 = time.perf_counter()
    assert st.main(["report", str(root)]) == 0
    return root, time.perf_counter() - t0


def test_report_writes_every_table_and_figure_from_the_files_alone(results):
    root, seconds = results
    names = {p.name for p in (root / "report").iterdir()}
    assert {"hypotheses.md", "matched_kl.md", "matched_margin.md", "equal_steps.md",
            "verdicts.md", "accuracy.md", "report.json", "scatter_chosen.png",
            "chosen_vs_kl.png"} <= names
    assert seconds < 60
    verdicts = (root / "report" / "verdicts.md").read_text()
    assert "| dpo@1e-05 | train | 4 | rise-then-fall | rise-then-fall 4 | rise-then-fall |" \
        in verdicts
    assert "| ipo@1e-05 | train | 1 |" in verdicts


def test_matched_values_are_the_interpolated_curves(results):
    """Chosen change where KL first reaches each level: f(level / slope) (every f is linear
    between evaluations), up to the pair noise; levels beyond an arm's reach are not reached."""
    root, _ = results
    rep = json.loads((root / "report" / "report.json").read_text())
    for arm, key in (("dpo", st.DPO), ("mio", st.MIO), ("mio_high", st.MIO_HIGH)):
        _, _, _, _, f, slope = ARMS[arm]
        for s in st.SECTIONS:
            for row in rep["matched"]["kl"][key][s]:
                t = row["level"] / slope
                assert row["reached"] == (t <= 90), (arm, row["level"])
                if row["reached"]:
                    assert row["mean"] == pytest.approx(float(f(t)), abs=0.02)
                    assert row["ci"][0] <= row["mean"] <= row["ci"][1]
        steps = rep["matched"]["step"][key]["train"]
        assert [r["mean"] for r in steps] == pytest.approx([float(f(t)) for t in (30, 60, 90)],
                                                           abs=0.02)
    assert "not reached (0/4)" in (root / "report" / "matched_kl.md").read_text()


def test_exploratory_differences_match_the_matched_tables(results):
    """The exploratory MIO − DPO difference at a KL level both reach is the difference of the
    two arms' matched values (two code paths), and the file says it decides nothing."""
    root, _ = results
    rep = json.loads((root / "report" / "report.json").read_text())
    rows = [r for r in rep["exploratory"]["rows"] if r["quantity"] == "kl"]
    assert rows and all(r["section"] == "train" for r in rows)
    checked = 0
    for r, m, d in zip(rows, rep["matched"]["kl"][st.MIO]["train"],
                       rep["matched"]["kl"][st.DPO]["train"], strict=True):
        assert r["level"] == m["level"] == d["level"]
        assert r["reached"] == (m["reached"] and d["reached"])
        if r["reached"]:
            assert r["mean"] == pytest.approx(m["mean"] - d["mean"], abs=1e-5)  # JSON: 6 digits
            assert r["ci"][0] <= r["mean"] <= r["ci"][1]
            checked += 1
    assert checked >= 1
    assert {r["section"] for r in rep["exploratory"]["rows"] if r["quantity"] == "margin"} == \
        set(st.SECTIONS)
    text = (root / "report" / "exploratory.md").read_text()
    assert text.startswith("Exploratory: not in PREREGISTRATION.md")


def test_hypotheses_follow_the_preregistered_rules(results):
    root, _ = results
    h = json.loads((root / "report" / "report.json").read_text())["hypotheses"]
    assert h["H1"]["two_level"]["shape"] == "rise-then-fall"
    assert h["H1"]["decision"] == "supported"
    # MIO reaches KL 9: levels 2-8 are tested, 12 and 16 are not reached
    assert [r["decision"] for r in h["H2"]["levels"] if r["section"] == "train"] == \
        ["supported"] * 4 + ["not reached"] * 2
    assert h["H2"]["decision"] == "supported"
    # H3 at KL 12, 16: MIO(3e-5) change f(60), f(80) = 4, 5.33; DPO's f(48), f(64) = 1, -1.67
    h3 = {(r["section"], r["level"]): r for r in h["H3"]["levels"]}
    assert h3[("train", 12.0)]["mean"] == pytest.approx(4 - 1, abs=0.03)
    assert h3[("train", 16.0)]["mean"] == pytest.approx(6 * 80 / 90 - float(_dpo(64)), abs=0.03)
    assert h["H3"]["decision"] == "supported"
    assert h["H5"]["mean"] == pytest.approx((RIGHT["mio"] - RIGHT["dpo"]) / N_PROMPTS)
    assert h["H5"]["decision"] == "supported"
    text = (root / "report" / "hypotheses.md").read_text()
    for name in ("H1", "H2", "H3", "H4", "H5"):
        assert f"## {name}" in text


def test_differences_of_an_arm_with_itself_are_zero_and_undecided():
    rng = np.random.default_rng(1)
    x = np.tile(np.linspace(0, 10, 10), (3, 1))
    y = rng.normal(size=(3, 15, 10)).cumsum(axis=2)
    d = st.matched_difference((x, y), (x, y), 5.0)
    assert d["mean"] == 0.0 and d["ci"][0] < 0 < d["ci"][1] and d["reached"]
    assert st.decide(d["ci"]) == "inconclusive"
    acc = rng.integers(0, 2, size=(3, 30)).astype(float)
    a = st.accuracy_difference(acc, acc)
    assert a["mean"] == 0.0 and a["ci"][0] < 0 < a["ci"][1]
    assert st.matched_difference((x, y), (x, y), 50.0)["reached"] is False


def test_decisions_combine_as_preregistered():
    assert st.decide([0.1, 2]) == "supported"
    assert st.decide([-2, -0.1]) == "refuted"
    assert st.decide([-1, 1]) == "inconclusive"
    assert st.decide([0.1, 2], reached=False) == "not reached"
    assert st.combine(["supported", "not reached"]) == "supported"
    assert st.combine(["supported", "inconclusive"]) == "inconclusive"
    assert st.combine(["supported", "refuted"]) == "refuted"
    assert st.combine(["not reached"]).startswith("not testable")


def test_report_without_per_pair_logs_says_so(tmp_path):
    d = tmp_path / "s" / "align_runs"
    d.mkdir(parents=True)
    hist = [{"step": s, "kl": {"k1": 0.1 * s}, "train": {"logps/chosen": -1.0},
             "heldout": {"logps/chosen": -1.0}} for s in (0, 10, 20)]
    (d / "dpo-seed0.json").write_text(json.dumps({"loss": "dpo", "seed": 0, "lr": 1e-5,
                                                  "history": hist}))
    assert st.main(["report", str(tmp_path)]) == 2
    assert st.main(["report", str(tmp_path / "nothing")]) == 2


def test_study_script_usage(capsys):
    assert st.main([]) == 2
    assert "usage" in capsys.readouterr().err


