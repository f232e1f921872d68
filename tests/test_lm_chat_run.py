"""A chat model through the whole small-LM path: a tiny Llama written as a GGUF file
(tests/tiny_gguf.py, briefly trained on the chat task so that its replies are sometimes right)
goes through `mi-bounds lm run --model tiny.gguf --preset chat-tiny` end to end, offline; the
stored numbers are checked against independent recomputation; an interrupted align resumes to
the same numbers. A slow test runs the real SmolLM2 checkpoint when it is in the cache."""

from __future__ import annotations

import json
import random
import re
import shutil
import socket
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gguf")
pytest.importorskip("accelerate")

from tiny_gguf import write_tiny_llama_gguf

from mi_bounds.lm import _io, arithmetic, chat, cli, stages
from mi_bounds.lm.config import get_preset
from mi_bounds.lm.logps import pad_sequences, response_logps
from mi_bounds.lm.model import load_model_dir


def _truth(prompt: str) -> int:
    a, b = prompt[:-1].split("+")
    return int(a) + int(b)


def _right(prompt: str, reply: str) -> bool:
    """The verifier's verdict (mi_bounds.lm.chat.verify_reply, tested on its own in
    test_lm_chat.py), cross-checked here where the reply is a bare number."""
    ok = chat.verify_reply(prompt, reply)
    if re.fullmatch(r"\s*\d+\s*", reply):
        assert ok == (int(reply) == _truth(prompt)), (prompt, reply)
    return ok


class _NoNetwork:
    """Any attempt to open a network connection fails the test."""

    def __init__(self, monkeypatch):
        def refuse(*args, **kwargs):
            raise AssertionError(f"network access attempted: {args!r}")

        monkeypatch.setattr(socket.socket, "connect", refuse)
        monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def chat_gguf(tmp_path_factory):
    """A tiny chat Llama as a GGUF file, trained for 60 AdamW steps to answer ``a+b=`` with
    the bare number through its chat template (with an empty system message, as in
    chat-tiny): afterwards it is right on some level-1 prompts some of the time."""
    from mi_bounds.lm.pretrained import load_gguf
    from mi_bounds.lm.task_format import task_format
    from mi_bounds.lm.tokenizer import HFTokenizer

    d = tmp_path_factory.mktemp("chat-gguf")
    path, _ = write_tiny_llama_gguf(d / "random.gguf", seed=0)
    model, hf = load_gguf(path)
    hf.save_pretrained(str(d / "tok"))
    fmt = task_format(HFTokenizer(d / "tok"), "chat", system="")
    rng = random.Random(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(60):
            prompts = arithmetic.sample_prompts(rng, 32, [1], [1.0], "+", unique=False)
            batch = pad_sequences([fmt.encode(p, arithmetic.answer(p)) for p in prompts],
                                  fmt.pad_id)
            loss = -response_logps(model, batch).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    trained, _ = write_tiny_llama_gguf(d / "tiny-chat.gguf", model=model)
    return trained


@pytest.fixture(scope="module")
def chat_run(chat_gguf, tmp_path_factory):
    """`mi-bounds lm run --model tiny-chat.gguf --preset chat-tiny`, with no network."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("chat-run")
    mp.setenv("MI_BOUNDS_CACHE", str(root / "cache"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    _NoNetwork(mp)
    old = torch.get_num_threads()
    out = root / "run"
    try:
        rc = cli.main(["run", "--model", str(chat_gguf), "--preset", "chat-tiny", "--out",
                       str(out), "--threads", "1"])
    finally:
        torch.set_num_threads(old)
        mp.undo()
    assert rc == 0
    return out


def test_chat_run_writes_every_stage_in_the_chat_format(chat_run):
    out = chat_run
    inputs = _io.read_json(out / "inputs.json")
    assert inputs["model_spec"].endswith("tiny-chat.gguf")
    assert Path(inputs["model"]).parent.name == "cache"  # converted into MI_BOUNDS_CACHE
    base = _io.read_json(out / "base" / "result.json")
    assert base["trained"] is False and base["format"] == "chat"
    data = _io.read_json(out / "sample" / "data.json")
    assert data["format"] == "chat" and data["max_new_tokens"] == 6
    for loss in ("dpo", "mio"):
        res = _io.read_json(out / "align" / f"{loss}-seed0" / "result.json")
        assert [h["step"] for h in res["history"]] == [0, 2, 4, 6]
        # acc_every = 4: greedy accuracy at steps 0, 4 and the last step only
        assert [h["acc_heldout"] is not None for h in res["history"]] == [True, False, True, True]
    names = {p.name for p in (out / "report").iterdir()}
    assert {"lm_table.md", "lm_report.json", "lm_chosen_logp.png"} <= names


def test_chat_pairs_are_verified_sampled_replies(chat_run):
    """Every train pair: a finished reply that the verifier accepts (chosen) against a
    finished one it rejects (rejected), both sampled: their stored ids decode to their text.
    Gold pairs: chosen = "a + b = c". The base accuracy per level is recomputed from the
    stored held-out samples (unfinished = incorrect)."""
    from mi_bounds.lm.tokenizer import load_tokenizer

    out = chat_run
    data = _io.read_json(out / "sample" / "data.json")
    tok = load_tokenizer(out / "base" / "model")
    assert data["train_pairs"], "the trained tiny model should give some pairs"
    for pr in data["train_pairs"] + data["heldout_pairs"]:
        assert _right(pr["prompt"], pr["chosen"])
        assert not _right(pr["prompt"], pr["rejected"])
        for side in ("chosen", "rejected"):
            ids = pr[f"{side}_ids"]
            assert tok.eos_id not in ids
            assert tok.decode(ids) == pr[side]
    for pr in data["train_pairs_gold"]:
        a, b = pr["prompt"][:-1].split("+")
        assert pr["chosen"] == f"{a} + {b} = {int(a) + int(b)}" and "chosen_ids" not in pr
    for lv, row in data["base_accuracy"]["by_level"].items():
        prompts = [p for p in data["heldout_prompts"] if arithmetic.level_of(p) == int(lv)]
        acc = [sum(fin and _right(p, t) for t, fin in data["heldout_samples"][p])
               / len(data["heldout_samples"][p]) for p in prompts]
        assert row["sampled"] == pytest.approx(sum(acc) / len(acc))


def test_chat_reference_logps_match_an_independent_chat_encoding(chat_run):
    """reference.pt = log π_base(reply + EOS | chat prompt), recomputed token by token on the
    sequence built here from the tokenizer's own apply_chat_template; and step 0 has implicit
    rewards of 0 to float32 round-off in every run, with one shared step-0 evaluation."""
    out = chat_run
    model, tok = load_model_dir(out / "base" / "model")
    hf = tok.tok
    data = _io.read_json(out / "sample" / "data.json")
    ref = _io.torch_load(out / "align" / "reference.pt")["train"]
    for i, pr in enumerate(data["train_pairs"][:4]):
        text = hf.apply_chat_template(
            [{"role": "system", "content": ""},
             {"role": "user", "content": "What is {}?".format(pr["prompt"][:-1])}],
            tokenize=False, add_generation_prompt=True)
        head = hf.encode(text, add_special_tokens=False)
        for side, col in (("chosen", 0), ("rejected", 1)):
            ids = head + pr[f"{side}_ids"] + [hf.eos_token_id]
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
            want = sum(float(lp[t - 1, ids[t]]) for t in range(len(head), len(ids)))
            assert float(ref[col][i]) == pytest.approx(want, abs=1e-4)
    step0 = _io.read_json(out / "align" / "step0.json")["record"]
    for loss in ("dpo", "mio"):
        h0 = _io.read_json(out / "align" / f"{loss}-seed0" / "result.json")["history"][0]
        assert h0 == step0
        for section in ("train", "heldout"):
            for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
                assert abs(h0[section][key]) < 1e-6, (section, key, h0[section][key])
        assert h0["kl"]["k1"] == 0.0


def test_chat_align_resumes_after_an_interruption(chat_run, tmp_path):
    """Align stopped after step 3 (as a kill would stop it), then `mi-bounds lm run` again:
    the same history as the uninterrupted run."""
    src = chat_run
    d = tmp_path / "resumed"
    d.mkdir()
    for name in ("config.json", "inputs.json"):
        shutil.copy(src / name, d / name)
    shutil.copytree(src / "base", d / "base")
    shutil.copytree(src / "sample", d / "sample")
    cfg = get_preset("chat-tiny").replace(align={"losses": ("dpo",)})
    run = stages.open_run(d, cfg, device="cpu", log=lambda m: None)
    with pytest.raises(stages.StageInterrupted):
        stages.run_align(run, stop_after=3)
    assert (d / "align" / "dpo-seed0" / "ckpt.pt").is_file()
    assert cli.main(["run", "--out", str(d), "--losses", "dpo", "--threads", "1"]) == 0
    got = _io.read_json(d / "align" / "dpo-seed0" / "result.json")["history"]
    want = _io.read_json(src / "align" / "dpo-seed0" / "result.json")["history"]
    assert [h["step"] for h in got] == [h["step"] for h in want]
    for g, w in zip(got, want, strict=True):
        for key in ("logps/chosen", "logps/rejected", "rewards/margins"):
            assert g["train"][key] == pytest.approx(w["train"][key], abs=1e-4)


def test_frozen_embeddings_stay_put(chat_run, tmp_path):
    """align.freeze_embeddings: the token embedding (tied LM head) is the base model's after
    training, while the other weights moved."""
    src = chat_run
    d = tmp_path / "frozen"
    d.mkdir()
    for name in ("config.json", "inputs.json"):
        shutil.copy(src / name, d / name)
    for name in ("base", "sample"):
        shutil.copytree(src / name, d / name)
    cfg = get_preset("chat-tiny").replace(align={
        "losses": ("dpo",), "steps": 2, "eval_every": 2, "acc_every": 0, "kl_prompts": 0,
        "freeze_embeddings": True, "save_models": True})
    run = stages.open_run(d, cfg, device="cpu", log=lambda m: None)
    res = stages.run_align(run)[0]
    base, _ = load_model_dir(d / "base" / "model")
    after, _ = load_model_dir(d / "align" / "dpo-seed0" / "model")
    emb = "model.embed_tokens.weight"
    assert torch.equal(after.state_dict()[emb], base.state_dict()[emb])
    moved = [k for k, v in after.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert moved and emb not in moved
    n_emb = base.get_input_embeddings().weight.numel()
    assert res["throughput"]["trainable_params"] == res["throughput"]["n_params"] - n_emb


def test_chat_format_errors_are_clear(tmp_path, capsys):
    """task.format=chat on the character model, an unknown model name: exit 2 with a message
    naming the problem, nothing written."""
    out = tmp_path / "x"
    assert cli.main(["run", "--out", str(out), "--set", "task.format=chat"]) == 2
    assert "chat template" in capsys.readouterr().err
    assert cli.main(["run", "--out", str(out), "--model", "no-such-model"]) == 2
    assert "neither a named model" in capsys.readouterr().err
    assert not out.exists()


def _smollm2_cached() -> Path | None:
    from mi_bounds.lm import pretrained

    d = pretrained.cache_root() / pretrained.SMOLLM2.dirname
    return d if (d / "config.json").is_file() else None


@pytest.mark.slow
@pytest.mark.skipif(_smollm2_cached() is None, reason="SmolLM2 is not in the cache")
def test_smollm2_run_on_a_few_prompts(tmp_path, monkeypatch):
    """`mi-bounds lm run --model smollm2 --preset smollm2-cpu`, cut down to a few prompts and
    two align steps: the real model's chat replies are verified, paired and aligned, offline,
    with step-0 implicit rewards of 0."""
    _NoNetwork(monkeypatch)
    out = tmp_path / "smollm2"
    sets = ["sample.n_train_prompts=12", "sample.n_heldout_prompts=4", "sample.k=6",
            "sample.max_new_tokens=32", "align.steps=2", "align.batch_size=2",
            "align.eval_every=1", "align.n_eval_pairs=2", "align.kl_prompts=1",
            "align.kl_samples=1", "task.levels=[1]", "task.level_weights=[1.0]"]
    argv = ["run", "--model", "smollm2", "--preset", "smollm2-cpu", "--out", str(out),
            "--losses", "dpo", "--seeds", "0", "--threads", "1"]
    for s in sets:
        argv += ["--set", s]
    assert cli.main(argv) == 0
    data = _io.read_json(out / "sample" / "data.json")
    assert data["format"] == "chat" and data["train_pairs"]
    for pr in data["train_pairs"]:
        assert _right(pr["prompt"], pr["chosen"])
        assert not _right(pr["prompt"], pr["rejected"])
    res = _io.read_json(out / "align" / "dpo-seed0" / "result.json")
    assert abs(res["history"][0]["train"]["rewards/margins"]) < 1e-5
    assert json.loads((out / "inputs.json").read_text())["model_spec"] == "smollm2"


_STUDY_SMALL = ["--set", 'task.system=""', "--set", "task.levels=[1]",
                "--set", "task.level_weights=[1.0]", "--set", "sample.n_train_prompts=32",
                "--set", "sample.n_heldout_prompts=16", "--set", "sample.temperature=1.0",
                "--set", "sample.max_new_tokens=6", "--set", "align.steps=6",
                "--set", "align.eval_every=2", "--set", "align.ckpt_every=2",
                "--set", "align.kl_prompts=4", "--set", "align.acc_every=6"]


@pytest.mark.slow
def test_study_preset_runs_every_arm_resumably_and_logs_every_pair(chat_gguf, tmp_path,
                                                                    monkeypatch):
    """`lm run --preset smollm2-study` (sizes scaled down with --set) on the tiny chat model:
    every arm of the grid in its own setting, every train and held-out pair logged at every
    evaluation (recomputed here from reference.pt and the stored means), the KL from 4 x 2
    samples with its standard error, per-prompt greedy correctness at the last step; a second
    invocation redoes nothing; the study's collect and report read the result."""
    from experiments import smollm2_study

    monkeypatch.setenv("MI_BOUNDS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _NoNetwork(monkeypatch)
    out = tmp_path / "study"
    argv = ["run", "--model", str(chat_gguf), "--preset", "smollm2-study", "--out", str(out),
            "--threads", "1", *_STUDY_SMALL]
    old = torch.get_num_threads()
    try:
        assert cli.main(argv) == 0
        arms = {"beta0.1-lr1e-05": ("dpo", "mio", range(4)), "beta0.1-lr3e-05": ("mio",
                range(3)), "beta0.1-lr1e-05-secondary": ("ipo", "rpo", range(3))}
        files = {}
        data = _io.read_json(out / "sample" / "data.json")
        n = {"train": len(data["train_pairs"]), "heldout": len(data["heldout_pairs"])}
        for setting, (*losses, seeds) in arms.items():
            d = out / "grid" / setting / "align"
            ref = _io.torch_load(d / "reference.pt")
            for loss in losses:
                for seed in seeds:
                    f = d / f"{loss}-seed{seed}" / "result.json"
                    files[f] = f.stat().st_mtime_ns
                    hist = _io.read_json(f)["history"]
                    assert [h["step"] for h in hist] == [0, 2, 4, 6]
                    for h in hist:
                        assert h["kl"]["n"] == 8 and h["kl"]["k1_se"] >= 0
                        for s in ("train", "heldout"):
                            c = torch.tensor(h[s]["logps/chosen/per_pair"], dtype=torch.float64)
                            r = torch.tensor(h[s]["logps/rejected/per_pair"],
                                             dtype=torch.float64)
                            m = torch.tensor(h[s]["rewards/margins/per_pair"],
                                             dtype=torch.float64)
                            assert len(c) == len(r) == len(m) == n[s]
                            assert float(c.mean()) == pytest.approx(h[s]["logps/chosen"],
                                                                    abs=1e-3)
                            rc, rr = (v.double() for v in ref[s])
                            want = 0.1 * ((c - rc) - (r - rr))
                            assert torch.allclose(m, want, atol=2e-4)
                    last = hist[-1]["acc_heldout_per_prompt"]
                    assert len(last) == len(data["heldout_prompts"])
                    assert sum(last) / len(last) == pytest.approx(hist[-1]["acc_heldout"])
                    assert all("acc_heldout_per_prompt" not in h for h in hist[1:-1])
        assert cli.main(argv) == 0  # resumed: nothing redone
        assert {f: f.stat().st_mtime_ns for f in files} == files
    finally:
        torch.set_num_threads(old)
    res = tmp_path / "results"
    smollm2_study.collect(out, res)
    assert _io.read_json(res / "heldout_prompts.json") == data["heldout_prompts"]
    assert len(list(res.glob("*/align_runs/*.json"))) == len(files)
    assert smollm2_study.main(["report", str(res)]) == 0
    assert "## H5" in (res / "report" / "hypotheses.md").read_text()
