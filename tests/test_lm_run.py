"""End-to-end checks of the small-LM path on the ``cpu-tiny`` preset: the full run, the stored
numbers against independent recomputation, kill-and-resume, --model/--pairs, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")

import torch

from mi_bounds.lm import _io, cli, stages
from mi_bounds.lm.config import get_preset
from mi_bounds.lm.logps import pad_sequences, response_logps
from mi_bounds.lm.model import load_model_dir
from mi_bounds.lm.task_format import ArithmeticFormat


def _truth(prompt: str) -> int:
    """The answer of ``a+b=`` computed without the package's verifier."""
    a, b = prompt[:-1].split("+")
    return int(a) + int(b)


@pytest.fixture(scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: extra threads only cost time on a busy machine
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, one_thread):
    """The cpu-tiny preset, end to end, once for the module (its wall time is printed)."""
    out = tmp_path_factory.mktemp("lm") / "tiny"
    t0, c0 = time.perf_counter(), time.process_time()
    run = stages.open_run(out, get_preset("cpu-tiny"), device="cpu", log=lambda m: None)
    paths = stages.run_all(run)
    print(f"\ncpu-tiny end to end: {time.perf_counter() - t0:.1f} s wall, "
          f"{time.process_time() - c0:.1f} s CPU")
    return run, paths


def test_tiny_run_writes_every_stage(tiny_run):
    run, paths = tiny_run
    names = {p.name for p in paths}
    assert {"lm_chosen_logp.png", "lm_chosen_logp.pdf", "lm_table.png", "lm_table.pdf",
            "lm_table.md", "lm_report.json"} <= names
    for loss in ("dpo", "mio", "ipo"):
        res = _io.read_json(run.dir / "align" / f"{loss}-seed0" / "result.json")
        assert [h["step"] for h in res["history"]] == [0, 8, 16, 24]
        assert res["throughput"]["tokens_per_s"] > 0 and 0 < res["throughput"]["mfu"] < 1
        assert 0 <= res["throughput"]["padding_fraction"] < 0.5
        assert not (run.dir / "align" / f"{loss}-seed0" / "ckpt.pt").exists()
    assert not list(run.dir.rglob("*.tmp*")), "temporary files left behind"


def test_sample_stage_labels_and_pairs(tiny_run):
    run, _ = tiny_run
    data = _io.read_json(run.dir / "sample" / "data.json")
    assert data["train_pairs"], "cpu-tiny must produce training pairs"
    for pr in data["train_pairs"] + data["heldout_pairs"]:
        assert int(pr["chosen"]) == _truth(pr["prompt"])  # chosen: correct
        assert pr["rejected"] != str(_truth(pr["prompt"]))  # rejected: incorrect
    assert not set(data["train_prompts"]) & set(data["heldout_prompts"])
    acc = data["base_accuracy"]
    assert 0 < acc["heldout_greedy"] < 1, "the base model must be right on some, wrong on others"
    # hard prompts: none of the k base samples was right (threshold 0), recomputed here
    for p in data["hard_prompts"]:
        assert all(not (fin and t == str(_truth(p))) for t, fin in data["heldout_samples"][p])
    assert data["counts"]["hard_prompts"] == len(data["hard_prompts"]) > 0


def test_reference_logps_match_token_by_token_recomputation(tiny_run):
    """Stored reference log-probs (batched, chosen+rejected in one padded pass) equal the sum
    of next-token log-probs computed one unpadded sequence and one position at a time."""
    run, _ = tiny_run
    model, tok = load_model_dir(run.dir / "base" / "model")
    model.eval()
    ref = _io.torch_load(run.dir / "align" / "reference.pt")
    pairs = _io.read_json(run.dir / "sample" / "data.json")["train_pairs"]
    with torch.no_grad():
        for i in (0, len(pairs) // 2, len(pairs) - 1):
            for key, col in (("chosen", 0), ("rejected", 1)):
                ids, n_prompt = ArithmeticFormat(tok).encode(pairs[i]["prompt"], pairs[i][key])
                total = 0.0
                for t in range(n_prompt, len(ids)):
                    logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1]
                    total += float(torch.log_softmax(logits.double(), -1)[ids[t]])
                assert float(ref["train"][col][i]) == pytest.approx(total, abs=1e-4)


def test_stacked_forward_equals_separate_forwards(tiny_run):
    run, _ = tiny_run
    model, tok = load_model_dir(run.dir / "base" / "model")
    enc = ArithmeticFormat(tok).encode
    seqs = [enc("1+2=", "3"), enc("45+67=", "112"), enc("9+9=", "99")]
    with torch.no_grad():
        together = response_logps(model, pad_sequences(seqs, tok.pad_id))
        alone = torch.cat([response_logps(model, pad_sequences([s], tok.pad_id)) for s in seqs])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_step_zero_is_the_reference_and_report_matches_history(tiny_run):
    run, _ = tiny_run
    report = _io.read_json(run.dir / "report" / "lm_report.json")
    sample = _io.read_json(run.dir / "sample" / "data.json")
    base = sample["base_accuracy"]
    n_by_level = {lv: v["n"] for lv, v in base["by_level"].items()}
    for loss in ("dpo", "mio", "ipo"):
        res = _io.read_json(run.dir / "align" / f"{loss}-seed0" / "result.json")
        h0, hN = res["history"][0], res["history"][-1]
        assert h0["train"]["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)  # policy == ref
        assert h0["train"]["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
        # step 0 is the base model: same greedy accuracy as the sample stage measured
        assert h0["acc_heldout"] == pytest.approx(base["heldout_greedy"])
        assert h0["acc_hard"] == pytest.approx(base["hard_greedy"])
        for h in res["history"]:  # per-level accuracies average back to the total
            total = sum(n_by_level[lv] * a for lv, a in h["acc_heldout_by_level"].items())
            assert total / sum(n_by_level.values()) == pytest.approx(h["acc_heldout"])
        s = report["summary"][loss]
        change = hN["train"]["logps/chosen"] - h0["train"]["logps/chosen"]
        assert s["chosen_change"]["mean"] == pytest.approx(change)
        peak = max(h["train"]["logps/chosen"] for h in res["history"])
        # the one "drop" convention (mi_bounds.decline.shape): max c - c(T) >= 0
        assert s["chosen_drop_from_peak"]["mean"] == pytest.approx(
            peak - hN["train"]["logps/chosen"])
        assert s["chosen_drop_from_peak"]["mean"] >= 0
        assert s["acc_heldout"]["mean"] == pytest.approx(hN["acc_heldout"])


def _fresh_copy(src: Path, dst: Path, *, with_reference: bool = True) -> Path:
    """A run directory holding only the finished base and sample stages of ``src``."""
    dst.mkdir(parents=True)
    for name in ("config.json", "inputs.json"):
        shutil.copy(src / name, dst / name)
    shutil.copytree(src / "base", dst / "base")
    shutil.copytree(src / "sample", dst / "sample")
    if with_reference:
        (dst / "align").mkdir()
        shutil.copy(src / "align" / "reference.pt", dst / "align" / "reference.pt")
    return dst


def test_align_interrupted_then_resumed_equals_uninterrupted(tiny_run, tmp_path):
    run, _ = tiny_run
    d = _fresh_copy(run.dir, tmp_path / "resume")
    cfg = run.config.replace(align={"losses": ("dpo",)})
    r = stages.open_run(d, cfg, device="cpu", log=lambda m: None)
    with pytest.raises(stages.StageInterrupted):
        stages.run_align(r, stop_after=13)  # a "kill" after step 13; last checkpoint: step 8
    ck = _io.torch_load(d / "align" / "dpo-seed0" / "ckpt.pt")
    assert ck["step"] == 8
    assert not (d / "align" / "dpo-seed0" / "result.json").exists()
    stages.run_align(stages.open_run(d, cfg, device="cpu", log=lambda m: None))
    got = _io.read_json(d / "align" / "dpo-seed0" / "result.json")
    want = _io.read_json(run.dir / "align" / "dpo-seed0" / "result.json")
    assert len(got["history"]) == len(want["history"])
    for hg, hw in zip(got["history"], want["history"], strict=True):
        for section in ("train", "heldout"):
            for k, v in hw[section].items():
                assert hg[section][k] == pytest.approx(v, abs=1e-6), (hg["step"], section, k)
        assert hg["acc_heldout"] == hw["acc_heldout"] and hg["acc_hard"] == hw["acc_hard"]


def test_base_interrupted_then_resumed_equals_uninterrupted(tmp_path, one_thread):
    cfg = get_preset("cpu-tiny").replace(base={"steps": 12, "batch_size": 8, "ckpt_every": 5})
    runs = {}
    for name, stop in (("straight", None), ("killed", 8)):
        r = stages.open_run(tmp_path / name, cfg, device="cpu", log=lambda m: None)
        if stop is not None:
            with pytest.raises(stages.StageInterrupted):
                stages.run_base(r, stop_after=stop)
            assert _io.torch_load(tmp_path / name / "base" / "ckpt.pt")["step"] == 5
            assert not (tmp_path / name / "base" / "result.json").exists()
        stages.run_base(r)
        runs[name] = load_model_dir(tmp_path / name / "base" / "model")[0].state_dict()
    for k, v in runs["straight"].items():
        torch.testing.assert_close(runs["killed"][k], v, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_killed_subprocess_resumes(tiny_run, tmp_path):
    """A real SIGKILL of `mi-bounds lm align` mid-run; the re-run finishes from the checkpoint."""
    run, _ = tiny_run
    d = _fresh_copy(run.dir, tmp_path / "kill", with_reference=False)
    cmd = [sys.executable, "-m", "mi_bounds.cli", "lm", "align", "--out", str(d),
           "--losses", "mio", "--set", "align.steps=400", "--set", "align.ckpt_every=20"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = d / "align" / "mio-seed0" / "ckpt.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert ckpt.exists()
    step = _io.torch_load(ckpt)["step"]
    assert 0 < step < 400
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0
    assert (d / "align" / "mio-seed0" / "result.json").exists()


def test_cli_rerun_skips_finished_work(tiny_run, capsys, tmp_path):
    run, _ = tiny_run
    before = _io.read_json(run.dir / "align" / "dpo-seed0" / "result.json")
    assert cli.main(["align", "--out", str(run.dir), "--preset", "cpu-tiny"]) == 0
    err = capsys.readouterr().err
    assert "align dpo seed 0: done" in err and "resuming" not in err
    assert _io.read_json(run.dir / "align" / "dpo-seed0" / "result.json") == before
    # a stage whose inputs are missing is a clear error (exit code 2), not a traceback
    assert cli.main(["align", "--out", str(tmp_path / "new")]) == 2
    assert "stage has not finished" in capsys.readouterr().err


def test_model_path_and_user_pairs(tiny_run, tmp_path):
    run, _ = tiny_run
    model_dir = shutil.copytree(run.dir / "base" / "model", tmp_path / "my-model")
    pairs = _io.read_json(run.dir / "sample" / "data.json")["train_pairs"][:16]
    pfile = tmp_path / "pairs.jsonl"
    pfile.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    cfg = get_preset("cpu-tiny").replace(
        align={"losses": ("mio",), "steps": 4, "eval_every": 2, "ckpt_every": 2},
        sample={"heldout_fraction": 0.25})
    r = stages.open_run(tmp_path / "user", cfg, model_path=model_dir, pairs_path=pfile,
                        device="cpu", log=lambda m: None)
    stages.run_base(r)
    stages.run_sample(r)
    stages.run_align(r)
    assert _io.read_json(tmp_path / "user" / "base" / "result.json")["trained"] is False
    data = _io.read_json(tmp_path / "user" / "sample" / "data.json")
    assert data["counts"]["train_pairs"] == 12 and data["counts"]["heldout_pairs"] == 4
    res = _io.read_json(tmp_path / "user" / "align" / "mio-seed0" / "result.json")
    assert res["final"]["acc_heldout"] is not None  # held-out prompts are task prompts


def test_bad_input_writes_nothing(tiny_run, tmp_path):
    run, _ = tiny_run
    cfg = get_preset("cpu-tiny")
    out = tmp_path / "never"
    no_tok = shutil.copytree(run.dir / "base" / "model", tmp_path / "no-tok")
    os.remove(no_tok / "char_tokenizer.json")
    with pytest.raises(ValueError, match="has no tokenizer"):
        stages.open_run(out, cfg, model_path=no_tok, device="cpu")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1+1=", "chosen": "2", "rejected": "3"}\n{"prompt": 1}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        stages.open_run(out, cfg, pairs_path=bad, device="cpu")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty pair set"):
        stages.open_run(out, cfg, pairs_path=empty, device="cpu")
    with pytest.raises(ValueError, match="unknown preference loss"):
        stages.open_run(out, cfg.replace(align={"losses": ("dpo", "nope")}), device="cpu")
    with pytest.raises(ValueError, match="longer than the model's context"):
        stages.open_run(out, cfg.replace(task={"levels": (1, 9), "level_weights": (1, 1)}),
                        device="cpu")
    assert not out.exists()
    # a different config on an existing run is refused, and the run is left as it was
    before = (run.dir / "config.json").read_text()
    with pytest.raises(ValueError, match="different config"):
        stages.open_run(run.dir, cfg.replace(base={"steps": 7}), device="cpu")
    assert (run.dir / "config.json").read_text() == before
    # the CLI turns these into exit code 2 with the message
    assert cli.main(["run", "--out", str(out), "--pairs", str(bad)]) == 2
    assert not out.exists()


def test_checkpoint_with_hugging_face_tokenizer(tiny_run, tmp_path):
    """--model PATH whose tokenizer is a Hugging Face one (no char_tokenizer.json)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from mi_bounds.lm.tokenizer import CharTokenizer, HFTokenizer, load_tokenizer

    run, _ = tiny_run
    model_dir = shutil.copytree(run.dir / "base" / "model", tmp_path / "hf-model")
    char = CharTokenizer.load(model_dir)
    os.remove(model_dir / "char_tokenizer.json")
    tk = Tokenizer(models.WordLevel(vocab={s: i for i, s in enumerate(char.itos)},
                                    unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                            pad_token="<pad>").save_pretrained(str(model_dir))
    hf = load_tokenizer(model_dir)
    assert isinstance(hf, HFTokenizer)
    assert hf.encode("12+34=") == char.encode("12+34=") and hf.eos_id == char.eos_id
    pairs = _io.read_json(run.dir / "sample" / "data.json")["train_pairs"][:8]
    pfile = tmp_path / "pairs.jsonl"
    pfile.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    cfg = get_preset("cpu-tiny").replace(
        align={"losses": ("dpo",), "steps": 2, "eval_every": 2, "ckpt_every": 2})
    r = stages.open_run(tmp_path / "hf-run", cfg, model_path=model_dir, pairs_path=pfile,
                        device="cpu", log=lambda m: None)
    stages.run_base(r)
    stages.run_sample(r)
    res = stages.run_align(r)[0]
    assert [h["step"] for h in res["history"]] == [0, 2]
    # same ids as the char tokenizer, so the reference log-probs equal the tiny run's
    ref = _io.torch_load(run.dir / "align" / "reference.pt")["train"][0][:8]
    got = _io.torch_load(tmp_path / "hf-run" / "align" / "reference.pt")
    all_c = torch.cat([got["train"][0], got["heldout"][0]])
    assert torch.allclose(torch.sort(all_c).values, torch.sort(ref).values, atol=1e-5)


def test_no_pairs_from_an_untrained_base_is_a_clear_error(tmp_path, one_thread):
    """A base model that is never right yields no (correct, incorrect) pair: ValueError, and the
    sample stage writes nothing (a re-run after fixing the config starts it afresh)."""
    cfg = get_preset("cpu-tiny").replace(base={"steps": 0},
                                         sample={"n_train_prompts": 16, "n_heldout_prompts": 8})
    r = stages.open_run(tmp_path / "untrained", cfg, device="cpu", log=lambda m: None)
    stages.run_base(r)
    with pytest.raises(ValueError, match="empty pair set"):
        stages.run_sample(r)
    assert not (tmp_path / "untrained" / "sample").exists()
    with pytest.raises(ValueError, match="sample stage has not finished"):
        stages.run_align(r)


# ------------------------------------------------------------------------------------------
# The decline study: gold pairs, sampled KL, shapes, rpo/sft/bco_pair, grids
# ------------------------------------------------------------------------------------------


def test_gold_pairs_are_verified_answers(tiny_run):
    """Off-policy pairs: chosen = the true answer, rejected = an incorrect sample; every prompt
    with an on-policy pair also has gold pairs, and prompts with no correct sample can too."""
    run, _ = tiny_run
    data = _io.read_json(run.dir / "sample" / "data.json")
    gold = data["train_pairs_gold"]
    assert data["counts"]["train_pairs_gold"] == len(gold) >= len(data["train_pairs"])
    for pr in gold:
        assert pr["chosen"] == str(_truth(pr["prompt"]))
        assert pr["rejected"] != str(_truth(pr["prompt"]))
    assert {p["prompt"] for p in data["train_pairs"]} <= {p["prompt"] for p in gold}


def test_sampled_kl_matches_exact_first_token_kl(tiny_run):
    """With one new token, a response is that token (with or without EOS), so the estimator's
    target is the exact KL of the first-token distributions: the estimate must agree with it
    within 4 standard errors, and is exactly 0 for π = π_ref."""
    from mi_bounds.lm.align import _sampled_kl
    from mi_bounds.lm.task_format import task_format

    run, _ = tiny_run
    ref, tok = load_model_dir(run.dir / "base" / "model")
    fmt = task_format(tok)
    assert fmt.kind == "raw"
    enc = fmt.encode
    pol = load_model_dir(run.dir / "base" / "model")[0]
    with torch.no_grad():
        for p in pol.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    prompts = ["12+34=", "7+5="]
    got = _sampled_kl(pol, ref, fmt, prompts, 1500, 1, 3, torch.device("cpu"))
    exact = []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([enc(prompt, "")[0][:-1]])  # [BOS] prompt
            lp = torch.log_softmax(pol(input_ids=ids).logits[0, -1].double(), -1)
            lr = torch.log_softmax(ref(input_ids=ids).logits[0, -1].double(), -1)
            exact.append(float((lp.exp() * (lp - lr)).sum()))
    want = sum(exact) / len(exact)
    assert want > 0.01  # the perturbation moved the policy
    assert abs(got["k1"] - want) < 4 * got["k1_se"], (got, want)
    assert got["k3"] >= 0 and got["n"] == 3000
    same = _sampled_kl(ref, ref, fmt, prompts, 10, 3, 0, torch.device("cpu"))
    assert same["k1"] == 0.0 and same["k3"] == 0.0


def test_every_run_records_kl_and_its_decline_shape(tiny_run):
    from mi_bounds._json import strict
    from mi_bounds.decline.shape import SHAPES, decline_shape

    run, _ = tiny_run
    res = _io.read_json(run.dir / "align" / "dpo-seed0" / "result.json")
    assert res["history"][0]["kl"]["k1"] == 0.0  # step 0: the policy is the reference
    for section in ("train", "heldout"):
        curve = [h[section]["logps/chosen"] for h in res["history"]]
        want = decline_shape(curve, [h["step"] for h in res["history"]]).to_dict()
        want = strict(want)  # result.json is strict JSON: NaN is stored as null
        got = res["shape"][section]
        assert got.keys() == want.keys()  # intervals and levels are lists: compared one by one
        for key, value in want.items():
            if value is None or isinstance(value, str):
                assert got[key] == value, key
            elif isinstance(value, list):
                assert len(got[key]) == len(value), key
                for g, w in zip(got[key], value, strict=True):
                    assert g == (w if w is None else pytest.approx(w)), key
            else:
                assert got[key] == pytest.approx(value), key
        assert res["shape"][section]["shape"] in SHAPES
    report = _io.read_json(run.dir / "report" / "lm_report.json")
    counts = report["summary"]["dpo"]["shapes"]["train"]["counts"]
    assert sum(counts.values()) == 1
    assert set(report["comparison"]["matched"]) == {"margin", "kl", "heldout_reward_accuracy"}
    assert (run.dir / "report" / "lm_matched.md").is_file()
    assert (run.dir / "report" / "lm_matched.png").is_file()


def test_grid_runs_each_setting_with_new_losses_and_gold_pairs(tiny_run, tmp_path):
    """A config with a grid: one run directory per setting sharing base and sample; rpo, sft
    and bco_pair train; the gold setting trains on the gold pairs; the side-by-side report."""
    run, _ = tiny_run
    d = _fresh_copy(run.dir, tmp_path / "grid", with_reference=False)
    cfg = run.config.replace(
        align={"steps": 4, "eval_every": 2, "ckpt_every": 2, "kl_prompts": 4, "kl_samples": 2},
        grid=[{"lr": 3e-4, "losses": ["rpo", "sft", "bco_pair"]},
              {"lr": 3e-4, "chosen": "gold", "losses": ["dpo"]}])
    (d / "config.json").write_text(cfg.to_json())
    r = stages.open_run(d, cfg, device="cpu", log=lambda m: None)
    stages.run_align(r)
    paths = stages.run_report(r)
    names = ["beta0.1-lr0.0003", "beta0.1-lr0.0003-gold"]
    assert sorted(p.name for p in (d / "grid").iterdir()) == names
    assert (d / "grid" / names[0] / "base").is_symlink()
    data = _io.read_json(d / "sample" / "data.json")
    for loss in ("rpo", "sft", "bco_pair"):
        res = _io.read_json(d / "grid" / names[0] / "align" / f"{loss}-seed0" / "result.json")
        assert res["n_train_pairs"] == len(data["train_pairs"]) and res["chosen"] == "sampled"
    sft = _io.read_json(d / "grid" / names[0] / "align" / "sft-seed0" / "result.json")
    assert sft["final"]["train"]["logps/chosen"] > sft["history"][0]["train"]["logps/chosen"]
    gold = _io.read_json(d / "grid" / names[1] / "align" / "dpo-seed0" / "result.json")
    assert gold["n_train_pairs"] == len(data["train_pairs_gold"]) and gold["chosen"] == "gold"
    # the settings share one reference pass: the gold setting's file holds the on-policy pairs'
    # log-probs too (taken from its sibling), and the held-out ones are the sibling's
    refs = [_io.torch_load(d / "grid" / n / "align" / "reference.pt") for n in names]
    assert set(refs[1]) == {"train", "train_gold", "heldout"}
    assert all(torch.equal(a, b) for a, b in zip(refs[0]["heldout"], refs[1]["heldout"],
                                                  strict=True))
    assert {p.name for p in paths} >= {"grid_table.md", "grid_matched.md", "grid_report.json",
                                       "grid_chosen.png"}
    rep = _io.read_json(d / "report" / "grid_report.json")
    assert set(rep["summary"]) == set(names)
    assert set(rep["summary"][names[0]]) == {"rpo", "sft", "bco_pair"}
    # a re-run skips every finished run
    before = _io.read_json(d / "grid" / names[1] / "align" / "dpo-seed0" / "result.json")
    stages.run_align(stages.open_run(d, cfg, device="cpu", log=lambda m: None))
    assert _io.read_json(d / "grid" / names[1] / "align" / "dpo-seed0" / "result.json") == before


def test_grid_shares_reference_passes_and_step0_between_its_settings(tiny_run, tmp_path,
                                                                     monkeypatch):
    """The grid hands each setting the other settings' align folders: two settings that differ
    only in lr (same base, pairs, beta and step-0 key) compute one reference pass per pair set
    and one step-0 evaluation between them; the second setting stores copies of both."""
    from mi_bounds.lm import align, grid

    run, _ = tiny_run
    d = _fresh_copy(run.dir, tmp_path / "shared", with_reference=False)
    cfg = run.config.replace(align={"losses": ("dpo",), "steps": 2, "eval_every": 2,
                                    "ckpt_every": 2, "kl_prompts": 2, "kl_samples": 2},
                             grid=[{"lr": 3e-4}, {"lr": 1e-4}])
    (d / "config.json").write_text(cfg.to_json())
    r = stages.open_run(d, cfg, device="cpu", log=lambda m: None)
    settings = grid.grid_runs(r)
    names = [n for n, _ in settings]
    assert grid.shared_align_dirs(settings, names[0]) == [d / "grid" / names[1] / "align"]
    calls = {"reference": 0, "step0": 0}
    pair_logps, evaluate = align._pair_logps, align._evaluate

    def counting_pair_logps(*args, **kwargs):
        calls["reference"] += 1
        return pair_logps(*args, **kwargs)

    def counting_evaluate(ev, model, step, train_loss):
        calls["step0"] += step == 0
        return evaluate(ev, model, step, train_loss)

    monkeypatch.setattr(align, "_pair_logps", counting_pair_logps)
    monkeypatch.setattr(align, "_evaluate", counting_evaluate)
    grid.run_grid_align(r)
    # reference: the train and held-out pair sets once (the first setting); the second reuses
    # them. _pair_logps also scores the evaluations' pairs (2 per evaluation, 3 evaluations).
    assert calls == {"reference": 2 + 2 * 3, "step0": 1}
    step0 = [_io.read_json(d / "grid" / n / "align" / "step0.json") for n in names]
    assert step0[0] == step0[1]
    refs = [_io.torch_load(d / "grid" / n / "align" / "reference.pt") for n in names]
    assert all(torch.equal(a, b) for k in ("train", "heldout")
               for a, b in zip(refs[0][k], refs[1][k], strict=True))


def test_cli_set_top_level_field(tmp_path):
    args = cli._parser().parse_args(["run", "--out", str(tmp_path / "r"), "--preset",
                                     "cpu-decline", "--set", "grid=[]", "--set", "seed=3"])
    cfg = cli._config(args)
    assert cfg.grid == () and cfg.seed == 3
    assert cli.main(["run", "--out", str(tmp_path / "r"), "--set", "nope=1"]) == 2
    assert not (tmp_path / "r").exists()
