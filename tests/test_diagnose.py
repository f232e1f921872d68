"""`mi-bounds diagnose` on hand-made logs of every shape, in every file format it reads.

The logs are noisy (Gaussian, sd 0.05 on curves that change by ≥ 0.5 nats), logged at irregular
steps, with eval entries interleaved with train entries, and the train and eval curves of one
log have different shapes, so reading the wrong series gives the wrong verdict.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from mi_bounds.decline.cli import main
from mi_bounds.decline.diagnose import LogError, diagnose, log_from_entries, read_log
from mi_bounds.decline.shape import decline_shape

SHAPE_CURVES = {
    # chosen log-likelihood as a function of training progress u in [0, 1]
    "rise-then-fall": lambda u: np.where(u < 0.4, -8.0 + 1.25 * u, -7.5 - 2.5 * (u - 0.4)),
    "fall-from-start": lambda u: -8.0 - 3.0 * u**2,
    "no-decline": lambda u: -8.0 + 0.8 * np.sqrt(u),
}
MARGIN = {"rise-then-fall": "rising", "fall-from-start": "rising", "no-decline": "rising"}
PAIRS = [("rise-then-fall", "no-decline"), ("fall-from-start", "rise-then-fall"),
         ("no-decline", "fall-from-start")]


def _steps(rng, n, last=1000):
    """n distinct irregular integer steps in [1, last], always including 1 and last."""
    inner = rng.choice(np.arange(2, last), size=n - 2, replace=False)
    return np.sort(np.concatenate([[1, last], inner])).astype(int)


def _log_history(train_shape, eval_shape, seed, n_train=80, n_eval=25):
    """A TRL-like log_history: train entries, eval entries interleaved, a final summary."""
    rng = np.random.default_rng(seed)
    ts, es = _steps(rng, n_train), _steps(rng, n_eval)
    entries = []
    for s in ts:
        u = (s - 1) / 999
        c = float(SHAPE_CURVES[train_shape](u) + rng.normal(0, 0.05))
        entries.append({"loss": 0.69 - 0.3 * u, "grad_norm": 1.0, "learning_rate": 1e-4,
                        "rewards/chosen": 0.1 * (c + 8.0), "rewards/margins": 0.1 + 2.0 * u
                        + float(rng.normal(0, 0.05)), "logps/chosen": c,
                        "logps/rejected": c - 1.0 - 3.0 * u, "epoch": u, "step": int(s)})
    for s in es:
        u = (s - 1) / 999
        c = float(SHAPE_CURVES[eval_shape](u) + rng.normal(0, 0.05))
        entries.append({"eval_loss": 0.7, "eval_logps/chosen": c,
                        "eval_rewards/chosen": 0.1 * (c + 8.0),
                        "eval_rewards/margins": 0.1 + 1.5 * u + float(rng.normal(0, 0.05)),
                        "eval_logps/rejected": c - 2.0 * u, "epoch": u, "step": int(s)})
    entries.sort(key=lambda e: (e["step"], "eval_loss" in e))  # eval after train at one step
    entries.append({"train_runtime": 12.0, "train_loss": 0.5, "step": 1000})
    return entries


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _json(capsys, *argv):
    code, out, err = _run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def _write_trainer_state(path, entries):
    path.write_text(json.dumps({"global_step": 1000, "log_history": entries}))
    return path


def _write_wandb_csv(path, entries):
    """W&B-style export: train/… and eval/… columns, train/global_step, empty cells."""
    rows = []
    for e in entries:
        row = {"train/global_step": e["step"]}
        for k, v in e.items():
            if k.startswith("eval_"):
                row["eval/" + k[5:]] = v
            elif k != "step":
                row["train/" + k] = v
        rows.append(row)
    fields = sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def _write_align_result(path, entries):
    """A mi-bounds align result.json: history entries with nested train/heldout metrics."""
    by_step: dict[int, dict] = {}
    for e in entries:
        rec = by_step.setdefault(e["step"], {"step": e["step"], "train_loss": None})
        for k, v in e.items():
            if "/" in k:
                split, name = ("heldout", k[5:]) if k.startswith("eval_") else ("train", k)
                rec.setdefault(split, {})[name] = v
    hist = [r for r in by_step.values() if "train" in r or "heldout" in r]
    path.write_text(json.dumps({"loss": "dpo", "seed": 0, "history": hist, "final": hist[-1]}))
    return path


WRITERS = {"trainer_state.json": _write_trainer_state, "metrics.csv": _write_wandb_csv,
           "result.json": _write_align_result}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}|{p[1]}")
@pytest.mark.parametrize("name", list(WRITERS))
def test_right_verdict_for_each_series_and_format(tmp_path, capsys, name, pair, seed):
    """--series train / eval give each curve's own shape; the default reads eval."""
    train_shape, eval_shape = pair
    entries = _log_history(train_shape, eval_shape, seed)
    path = WRITERS[name](tmp_path / name, entries)
    for series, want in (("train", train_shape), ("eval", eval_shape)):
        r = _json(capsys, path, "--series", series)
        assert r["shape"] == want, (series, r["reading"])
        assert r["split"] == series and r["metric"] == "logps/chosen"
        assert r["margin_trend"] == "rising"
        key = "logps/chosen" if series == "train" else "eval_logps/chosen"
        want_steps = [e["step"] for e in entries if key in e]
        got = r["series"]["logps/chosen"]
        assert got["steps"] == want_steps
        assert got["values"] == pytest.approx([e[key] for e in entries if key in e], abs=1e-12)
        # the numbers are decline_shape's on the series read (one definition, docs/THEORY.md §6)
        d = decline_shape(got["values"], got["steps"])
        assert r["peak_step"] == d.peak_step
        assert r["drop_from_peak"] == pytest.approx(d.drop_from_peak)
        assert r["noise"] == pytest.approx(d.noise)
        assert r["drop_from_peak"] >= 0
        if want == "rise-then-fall":  # peak of the clean curve at 40 % of training
            assert 250 < r["peak_step"] < 550
    assert _json(capsys, path)["split"] == "eval"


def test_text_report_and_plot(tmp_path, capsys):
    path = _write_trainer_state(tmp_path / "trainer_state.json",
                                _log_history("rise-then-fall", "rise-then-fall", 0))
    code, out, _ = _run(capsys, tmp_path, "--plot", tmp_path / "d.png")  # a directory works
    assert code == 0
    assert "rise-then-fall" in out and "peak" in out and "rewards/margins: rising" in out
    assert "likelihood displacement" in " ".join(out.split())  # wrapped at 100 columns
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from mi_bounds.cli import main as mi_bounds_main  # registered as `mi-bounds diagnose`

    assert mi_bounds_main(["diagnose", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: TRL trainer_state.json")


def test_too_short_and_rewards_fallback(tmp_path, capsys):
    entries = _log_history("fall-from-start", "fall-from-start", 1)
    path = _write_trainer_state(tmp_path / "s.json", entries)
    assert _json(capsys, path, "--min-points", 200)["shape"] == "too-short"
    no_logps = [{k: v for k, v in e.items() if "logps" not in k} for e in entries]
    r = _json(capsys, _write_trainer_state(tmp_path / "r.json", no_logps), "--series", "train")
    assert r["metric"] == "rewards/chosen" and r["shape"] == "fall-from-start"
    assert r["rejected_trend"] is None  # no rewards/rejected logged
    r = _json(capsys, path, "--metric", "eval_rewards/chosen")  # a key given verbatim
    assert r["key"] == "eval_rewards/chosen" and r["split"] == "eval"


def test_real_align_result_of_this_toolkit(capsys):
    """The committed align runs (results/lm-cpu) are read; verdicts match decline_shape."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "results/lm-cpu/lr1e-4/align_runs/dpo-seed0.json"
    if not path.is_file():
        pytest.skip("no committed align runs")
    data = json.loads(path.read_text())
    r = _json(capsys, path, "--series", "eval")
    c = [h["heldout"]["logps/chosen"] for h in data["history"]]
    assert r["series"]["logps/chosen"]["values"] == c
    assert r["shape"] == decline_shape(c, [h["step"] for h in data["history"]]).shape


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not a text file"),
    (b"# a README\n\nsome text, and more\n", "neither JSON nor a CSV"),
    (b'{"a": 1}', "neither 'log_history'"),
    (b'{"log_history": [', "not valid JSON"),
    (b"", "empty file"),
    (b"step,loss\n1,0.5\n2,0.4\n", "neither JSON nor a CSV with TRL metric"),
    (json.dumps({"log_history": [{"loss": 0.6, "step": s} for s in range(5)]}).encode(),
     "no eval series|no train series"),
    (json.dumps({"log_history": [{"logps/chosen": -1.0 - s, "step": s} for s in (1, 2)]}).encode(),
     "2 logged step"),
    (json.dumps({"log_history": [{"logps/chosen": v, "step": s}
                                 for s, v in enumerate([-1.0, -2.0, math.nan, -3.0])]}).encode(),
     "NaN or infinite at step"),
    (b"step,logps/chosen\n1,-1\n2,nan\n3,-2\n4,-3\n", "NaN or infinite at step"),
])
def test_bad_files_exit_2_with_a_clear_message(tmp_path, capsys, content, message):
    path = tmp_path / "log"
    path.write_bytes(content)
    code, out, err = _run(capsys, path, "--json")
    assert code == 2 and out == ""
    assert err.startswith("mi-bounds diagnose: error:")
    assert any(m in err for m in message.split("|")), err
    assert "Traceback" not in err


def test_missing_series_and_file(tmp_path, capsys):
    entries = [e for e in _log_history("no-decline", "no-decline", 0) if "eval_loss" not in e]
    path = _write_trainer_state(tmp_path / "s.json", entries)
    code, _, err = _run(capsys, path, "--series", "eval")
    assert code == 2 and "no eval series of logps/chosen or rewards/chosen" in err
    assert _json(capsys, path)["split"] == "train"  # default falls back to train
    code, _, err = _run(capsys, tmp_path / "nope.json")
    assert code == 2 and "no such file" in err
    code, _, err = _run(capsys, path, "--noise", "-1")
    assert code == 2 and "--noise" in err


def test_given_noise_is_used():
    """--noise σ (e.g. across seeds) replaces the estimate; a large σ makes a fall 'no-decline'."""
    log = log_from_entries(_log_history("fall-from-start", "fall-from-start", 0))
    assert diagnose(log, split="train")["shape"] == "fall-from-start"
    r = diagnose(log, split="train", noise=10.0)
    assert r["noise_source"] == "given" and r["shape"] == "no-decline"


def test_named_eval_sets_and_json_lines(tmp_path):
    entries = [{"eval_a_logps/chosen": -1.0 - 0.1 * s, "eval_b_logps/chosen": -1.0, "step": s}
               for s in range(10)]
    with pytest.raises(LogError, match="several eval sets"):
        diagnose(log_from_entries(entries), split="eval")
    one = [{k: v for k, v in e.items() if "_b_" not in k} for e in entries]
    assert diagnose(log_from_entries(one), split="eval")["key"] == "eval_a_logps/chosen"
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in one))
    log = read_log(path)
    assert log.format == "jsonl" and len(log.records) == 10


def test_decline_callback_online_equals_offline(caplog):
    """Fed a log entry at a time, the callback's last verdict = decline_shape on the whole curve;
    the verdict and peak step are written into the log entries; a decline is warned about once."""
    pytest.importorskip("transformers")
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from mi_bounds.integrations.decline_callback import DeclineCallback

    entries = _log_history("rise-then-fall", "fall-from-start", 2)[:-1]
    cb = DeclineCallback()
    state, control = TrainerState(), TrainerControl()
    args = TrainingArguments(output_dir="unused", report_to=[])
    with caplog.at_level("INFO", logger="mi_bounds.integrations.decline_callback"):
        for e in entries:
            logs = {k: v for k, v in e.items() if k != "step"}
            state.global_step = e["step"]
            state.log_history.append({**logs, "step": e["step"]})
            cb.on_log(args, state, control, logs=logs)
    for key, want in (("logps/chosen", "rise-then-fall"),
                      ("eval_logps/chosen", "fall-from-start")):
        pts = [(e["step"], e[key]) for e in entries if key in e]
        offline = decline_shape([v for _, v in pts], [s for s, _ in pts])
        assert cb.verdicts[key] == offline and offline.shape == want
        last = [h for h in state.log_history if key in h][-1]
        assert last[f"decline/{key}"] == want
        assert last[f"decline/{key}/peak_step"] == offline.peak_step
        first = next(h for h in state.log_history if key in h)
        assert first[f"decline/{key}"] == "too-short"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("logps/chosen is rise-then-fall" in w for w in warnings)
    assert set(cb.verdicts) == {"logps/chosen", "rewards/chosen", "rewards/margins",
                                "eval_logps/chosen", "eval_rewards/chosen",
                                "eval_rewards/margins"}
    with pytest.raises(ValueError, match="min_points"):
        DeclineCallback(min_points=2)


def test_nan_in_the_eval_series_is_reported_not_skipped(tmp_path, capsys):
    """The default reads eval when it has ≥ 3 points; a NaN there is an error naming eval."""
    entries = _log_history("no-decline", "no-decline", 0)
    bad = next(e for e in entries if "eval_logps/chosen" in e and e["step"] > 100)
    bad["eval_logps/chosen"] = math.nan
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"log_history": entries}))  # json writes NaN as NaN
    code, _, err = _run(capsys, path)
    assert code == 2 and f"eval_logps/chosen is NaN or infinite at step(s) {bad['step']}" in err
    assert _json(capsys, path, "--series", "train")["shape"] == "no-decline"


def test_side_series_with_few_points_give_no_trend():
    """A margin logged at only 2 or 3 steps has no trend (None), not a made-up one."""
    entries = [{"logps/chosen": -1.0 - 0.1 * s, "step": s} for s in range(12)]
    for n in (2, 3):
        for e in entries[:n]:
            e["rewards/margins"] = 0.1 * e["step"]
        r = diagnose(log_from_entries(entries), split="train")
        assert r["shape"] == "fall-from-start" and r["margin_trend"] is None


def _seed_logs(tmp_path, shape, n, sd, seed=0, jitter=0.0):
    """n seeds: the same curve at the same steps, per-seed noise sd, plus a per-seed offset."""
    rng = np.random.default_rng(seed)
    steps = _steps(rng, 40)
    u = (steps - 1) / 999
    paths = []
    for i in range(n):
        c = SHAPE_CURVES[shape](u) + rng.normal(0, sd, u.size) + rng.normal(0, jitter)
        entries = [{"eval_logps/chosen": float(v), "eval_rewards/margins": float(m), "step": int(s)}
                   for s, v, m in zip(steps, c, 0.1 + u + rng.normal(0, sd, u.size), strict=True)]
        paths.append(_write_trainer_state(tmp_path / f"seed{i}.json", entries))
    return paths, steps


@pytest.mark.parametrize("shape", list(SHAPE_CURVES))
def test_several_seeds_take_their_noise_from_each_other(tmp_path, capsys, shape):
    """diagnose A B C = shapes_over_seeds on the chosen curves (each seed with its own noise,
    the mean curve judged against seed_thresholds), with each seed's verdict beside it."""
    from mi_bounds.decline.shape import shapes_over_seeds

    paths, steps = _seed_logs(tmp_path, shape, 3, 0.05)
    r = _json(capsys, *paths)
    curves = [json.loads(p.read_text())["log_history"] for p in paths]
    matrix = [[e["eval_logps/chosen"] for e in h] for h in curves]
    want = shapes_over_seeds(matrix, steps)
    assert r["seed_thresholds"] == pytest.approx(want["thresholds"])
    assert r["shape"] == want["mean"]["shape"] == shape
    assert [p["shape"] for p in r["per_seed"]] == [s["shape"] for s in want["per_seed"]]
    assert r["counts"] == want["counts"]
    assert r["series"]["logps/chosen"]["values"] == pytest.approx(np.mean(matrix, 0).tolist())
    assert r["margin_trend"] == "rising" and r["seeds"] == 3
    code, out, _ = _run(capsys, *paths)
    assert code == 0 and "mean of 3 seeds" in out and out.count("  seed ") == 3


def test_seeds_at_other_steps_or_with_noise_are_refused(tmp_path, capsys):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    a, _ = _seed_logs(tmp_path / "a", "no-decline", 2, 0.05, seed=1)
    b, _ = _seed_logs(tmp_path / "b", "no-decline", 1, 0.05, seed=2)  # other random steps
    code, _, err = _run(capsys, a[0], b[0])
    assert code == 2 and "other steps" in err
    code, _, err = _run(capsys, *a, "--noise", "0.1")
    assert code == 2 and "several seeds" in err


def test_alpha_and_intervals_in_json_and_text(tmp_path, capsys):
    """--alpha sets the level of every test and the 1 - alpha intervals; both reach the JSON and
    the text report; a bad alpha is exit code 2 with one line."""
    path = _write_trainer_state(tmp_path / "s.json",
                                _log_history("rise-then-fall", "rise-then-fall", 0))
    r05 = _json(capsys, path, "--series", "train")
    r01 = _json(capsys, path, "--series", "train", "--alpha", "0.01")
    assert r05["alpha"] == 0.05 and r01["alpha"] == 0.01
    assert all(a > b for a, b in zip(r01["levels"], r05["levels"], strict=True))
    for name, value in (("rise", "rise"), ("drop", "drop_from_peak"), ("change", "change")):
        lo, hi = r05[f"{name}_ci"]
        assert lo < r05[value] < hi
        lo1, hi1 = r01[f"{name}_ci"]
        assert lo1 < lo and hi < hi1  # 99 % intervals are wider
    code, out, _ = _run(capsys, path, "--series", "train")
    assert code == 0 and "95 % intervals" in out and "levels at alpha 0.05" in out
    for bad in ("0", "0.5", "1.2", "-0.1"):
        code, out, err = _run(capsys, path, "--alpha", bad)
        assert code == 2 and "--alpha" in err and err.count("\n") == 1 and not out


def test_few_points_are_inconclusive(tmp_path, capsys):
    """4 to 9 logged steps cannot calibrate the curve's own noise: inconclusive, said so; with
    --noise they are classified."""
    entries = [{"logps/chosen": -1.0 - 0.5 * s, "step": s} for s in range(6)]
    path = _write_trainer_state(tmp_path / "s.json", entries)
    r = _json(capsys, path)
    assert r["shape"] == "inconclusive" and "Inconclusive" in r["reading"]
    code, out, _ = _run(capsys, path)
    assert code == 0 and "inconclusive" in out
    assert _json(capsys, path, "--noise", "0.1")["shape"] == "fall-from-start"
