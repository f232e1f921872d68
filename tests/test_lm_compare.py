"""Matched comparisons and decline shapes of the small-LM report (mi_bounds.decline.compare), on
hand-made run histories whose answers are known exactly; and the decline-study presets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mi_bounds.decline import compare
from mi_bounds.decline.shape import decline_shape
from mi_bounds.lm.config import PRESETS, get_preset


def _run(loss: str, seed: int, steps, chosen, margin, kl=None, acc=None) -> dict:
    hist = []
    for i, s in enumerate(steps):
        h = {"step": int(s), "train": {"logps/chosen": float(chosen[i]),
                                      "rewards/margins": float(margin[i])},
             "heldout": {"logps/chosen": float(chosen[i]) - 1.0,
                         "rewards/accuracies": float(acc[i]) if acc is not None else 0.0}}
        if kl is not None:
            h["kl"] = {"k1": float(kl[i])}
        hist.append(h)
    return {"loss": loss, "seed": seed, "history": hist}


def test_matched_margin_reads_each_loss_where_it_first_reaches_the_level():
    """dpo: margin t, chosen -t; mio: margin t/2, chosen -t/4 (t = 0..10). The common reach is
    mio's 5, the levels 1.25, 2.5, 5; dpo's chosen change at margin m is -m, mio's -m/2."""
    t = np.arange(11.0)
    runs = [_run("dpo", s, t, -t, t, kl=t, acc=np.minimum(1, t / 10)) for s in (0, 1)]
    runs += [_run("mio", s, t, -t / 4, t / 2, kl=t / 3, acc=np.minimum(1, t / 20)) for s in (0, 1)]
    groups = compare.by_loss(runs)
    levels = compare.matched_levels(groups, "margin")
    assert levels == pytest.approx([1.25, 2.5, 5.0])
    m = compare.matched_chosen(groups, "margin", levels)
    assert [r["mean"] for r in m["dpo"]] == pytest.approx([-1.25, -2.5, -5.0])
    assert [r["mean"] for r in m["mio"]] == pytest.approx([-0.625, -1.25, -2.5])
    assert all(r["n_reached"] == 2 and r["std"] == 0 for rows in m.values() for r in rows)
    # KL: reach min(10, 10/3); dpo's chosen at KL k is -k, mio's -3k/4
    kl_levels = compare.matched_levels(groups, "kl")
    assert kl_levels[-1] == pytest.approx(10 / 3)
    mk = compare.matched_chosen(groups, "kl", kl_levels)
    assert mk["dpo"][-1]["mean"] == pytest.approx(-10 / 3)
    assert mk["mio"][-1]["mean"] == pytest.approx(-2.5)
    # accuracy: chance is 1/2; mio reaches 0.5 only, so there is no level above chance
    assert compare.matched_levels(groups, "heldout_reward_accuracy") == []


def test_matched_level_not_reached_is_nan_and_counted():
    t = np.arange(5.0)
    runs = [_run("dpo", 0, t, -t, t), _run("mio", 0, t, -t, t), _run("sft", 0, t, t, -t)]
    groups = compare.by_loss(runs)
    rows = compare.matched_chosen(groups, "margin", [2.0])
    assert rows["dpo"][0]["mean"] == -2.0 and rows["sft"][0]["n_reached"] == 0
    assert math.isnan(rows["sft"][0]["mean"])
    # no recorded KL (an older run): no levels, and nothing breaks
    assert compare.matched_levels(groups, "kl") == []


def test_shape_counts_use_the_seed_noise():
    """Three seeds of a curve that rises by 1 and falls by 3, with small seed-to-seed offsets:
    every seed is rise-then-fall with its own noise, and so is the seed mean judged against the
    seeds' paired spread (shapes_over_seeds)."""
    s = np.arange(21.0)
    base = np.where(s <= 5, s / 5, 1 - 3 * (s - 5) / 15)
    runs = [_run("dpo", k, s, base + 0.01 * k * np.sin(s), np.zeros(21)) for k in range(3)]
    out = compare.shape_counts(runs)
    assert out["train"]["counts"]["rise-then-fall"] == 3
    assert out["heldout"]["counts"]["rise-then-fall"] == 3
    want = decline_shape(base, s)  # seed 0 is base itself, judged with its own noise
    assert out["train"]["per_seed"][0] == want.to_dict()
    assert out["train"]["mean"]["shape"] == "rise-then-fall"
    assert out["train"]["mean"]["noise_source"] == "seeds"
    assert out["train"]["per_seed"][0]["drop_from_peak"] == pytest.approx(3.0)


def test_matched_readings_have_student_t_intervals():
    """Three seeds reaching the level with chosen changes -1, -2, -3 at margin 1: mean -2,
    interval -2 ± t_{0.975, 2} · 1/√3 (t = 4.302653, tables)."""
    t = np.arange(6.0)
    runs = [_run("dpo", k, t, -(k + 1) * t, t) for k in range(3)]
    row = compare.matched_chosen(compare.by_loss(runs), "margin", [1.0])["dpo"][0]
    assert row["mean"] == pytest.approx(-2.0)
    half = 4.302653 / math.sqrt(3)
    assert row["ci"] == pytest.approx([-2.0 - half, -2.0 + half], rel=1e-6)
    one = compare.matched_chosen(compare.by_loss(runs[:1]), "margin", [1.0])["dpo"][0]
    assert all(math.isnan(x) for x in one["ci"])  # one seed: no interval over seeds


def _per_pair_run(loss, seed, steps, chosen_pp, margin_pp):
    """A run whose history also logs every pair's chosen log-prob and margin."""
    r = _run(loss, seed, steps, chosen_pp.mean(0), margin_pp.mean(0))
    for i, h in enumerate(r["history"]):
        h["train"]["logps/chosen/per_pair"] = chosen_pp[:, i].tolist()
        h["train"]["rewards/margins/per_pair"] = margin_pp[:, i].tolist()
    return r


def test_per_pair_logs_switch_on_the_two_level_bootstrap():
    """Where pairs are logged one by one, shape_counts and the matched readings add the
    seeds-and-pairs bootstrap (mi_bounds.decline.stats); without them they do not."""
    from mi_bounds.decline.stats import matched_bootstrap, two_level_bootstrap

    rng = np.random.default_rng(0)
    s = np.arange(21.0)
    hump = np.where(s <= 8, s / 8, 1 - 2 * (s - 8) / 12)
    runs, chosen, margin = [], [], []
    for k in range(3):
        c = hump[None] + 0.3 * rng.standard_normal((16, 21))
        m = 0.1 * s[None] * rng.uniform(0.5, 1.5, (16, 1))
        runs.append(_per_pair_run("dpo", k, s, c, m))
        chosen.append(c)
        margin.append(m)
    out = compare.shape_counts(runs)
    want = two_level_bootstrap(np.array(chosen), s)
    assert out["train"]["two_level"] == want
    assert "two_level" not in out["heldout"]  # held-out pairs not logged one by one
    row = compare.matched_chosen(compare.by_loss(runs), "margin", [1.0])["dpo"][0]
    assert row["two_level"] == matched_bootstrap(np.array(margin), np.array(chosen), 1.0)
    assert row["two_level"]["mean"] == pytest.approx(row["mean"])
    plain = [_run("dpo", k, s, hump, 0.1 * s) for k in range(3)]
    assert "two_level" not in compare.shape_counts(plain)["train"]
    # a run that lacks the per-pair values at one evaluation: no two-level reading
    del runs[1]["history"][3]["train"]["logps/chosen/per_pair"]
    assert "two_level" not in compare.shape_counts(runs)["train"]


def test_runs_with_different_steps_are_refused():
    a = _run("dpo", 0, [0, 1, 2], [0, 1, 0], [0, 1, 2])
    b = _run("dpo", 1, [0, 2, 4], [0, 1, 0], [0, 1, 2])
    with pytest.raises(ValueError, match="different evaluation steps"):
        compare.shape_counts([a, b])


# ------------------------------------------------------------------------------------------
# Presets of the decline study
# ------------------------------------------------------------------------------------------


def test_decline_presets_cover_the_issue_grid():
    """cpu-decline: one β, two learning rates reaching a decade below cpu-small's, six losses,
    three seeds, and an off-policy (gold) setting; gpu-small: β ∈ {0.01, 0.1, 0.5}, a learning
    rate sweep over more than a decade, the same losses and seeds, and gold settings."""
    losses = {"dpo", "mio", "ipo", "rpo", "sft", "bco_pair"}
    old_lr = get_preset("cpu-small").align.lr
    for name in ("cpu-decline", "gpu-small"):
        cfg = get_preset(name)
        variants = [cfg.variant(i) for i in range(len(cfg.grid))]
        names = [cfg.variant_name(i) for i in range(len(cfg.grid))]
        assert len(set(names)) == len(names)
        sampled = [v.align for v in variants if v.align.chosen == "sampled"]
        assert {loss for a in sampled for loss in a.losses} == losses
        assert all(len(a.seeds) >= 3 for a in sampled)
        assert any(v.align.chosen == "gold" for v in variants)
        assert min(a.lr for a in sampled) <= old_lr / 10
        assert all(v.grid == () for v in variants)
    gpu = get_preset("gpu-small")
    betas = {gpu.variant(i).align.beta for i in range(len(gpu.grid))}
    lrs = {gpu.variant(i).align.lr for i in range(len(gpu.grid))}
    assert betas == {0.01, 0.1, 0.5} and max(lrs) / min(lrs) >= 10
    assert set(PRESETS) >= {"cpu-tiny", "cpu-small", "cpu-decline", "gpu-small"}


def test_grid_entries_are_validated():
    cfg = get_preset("cpu-tiny")
    with pytest.raises(ValueError, match=r"grid\[0\]: unknown align field"):
        cfg.replace(grid=[{"learning_rate": 1e-4}])
    with pytest.raises(ValueError, match=r"align\.chosen"):
        cfg.replace(grid=[{"chosen": "best"}])
    with pytest.raises(ValueError, match="repeated"):
        cfg.replace(grid=[{"lr": 1e-4}, {"lr": 1e-4, "losses": ["dpo"]}])
    with pytest.raises(TypeError, match="grid"):
        cfg.replace(grid=[3])


def test_report_tables_carry_the_intervals():
    """lm/report.py on the committed three-epoch SmolLM2 runs: the table has the seed-mean
    rise and drop with their intervals, the matched table an interval per reading."""
    pytest.importorskip("matplotlib")
    import json
    from pathlib import Path

    from mi_bounds.lm.report import _table_rows, effect_label, matched_markdown, summarise

    folder = Path(__file__).resolve().parents[1] / "results/lm-smollm2-cpu/long/align_runs"
    if not folder.is_dir():
        pytest.skip("no committed runs")
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    summary = summarise(results)
    header, rows = _table_rows(summary, {})
    assert "drop, seed mean [95 % CI]" in header
    dpo = next(r for r in rows if r[0] == "dpo")
    mean = summary["dpo"]["shapes"]["train"]["mean"]
    lo, hi = mean["drop_ci"]
    assert dpo[header.index("drop, seed mean [95 % CI]")] == \
        f"{mean['drop_from_peak']:.2f} [{lo:.2f}, {hi:.2f}]"
    assert lo < mean["drop_from_peak"] < hi
    md = matched_markdown(compare.compare(results))
    assert md.count(" [") >= 6  # every reading of dpo and mio at the 3 margins has one
    assert effect_label({}) == "-"
