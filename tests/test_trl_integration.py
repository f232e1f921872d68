"""mi_bounds.integrations.trl on a real TRL 1.16 DPOTrainer (tiny Llama from a config, CPU).

Every loss of mi_bounds.preference, run by MIDPOTrainer for a few optimiser steps, gives at each
step the value that preference_loss gives on the same batch, where the test computes the
sequence log-probabilities itself (a plain forward, log_softmax, gather, sum over the completion
in float64) — not with TRL's fused LM head. Gradients are compared the same way. Nothing is
downloaded: the tokenizer is a character-level ``tokenizers`` WordLevel model.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from typing import ClassVar

import pytest

pytest.importorskip("trl")

import torch
from datasets import Dataset
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import DPOConfig

from mi_bounds.decline.cli import main as diagnose_main
from mi_bounds.integrations.trl import (
    DeclineCallback,
    GroupShuffleSampler,
    MIDPOTrainer,
    expand_negatives,
    split_loss_types,
)
from mi_bounds.preference import LOSSES, preference_loss

ITOS = ["<pad>", "<bos>", "<eos>", *"0123456789+="]
#: settings that make each loss non-trivial (exo_pair requires label_smoothing > 0)
SMOOTHING = {"robust": 0.1, "exo_pair": 0.1}


def _tokenizer() -> PreTrainedTokenizerFast:
    tk = Tokenizer(models.WordLevel({s: i for i, s in enumerate(ITOS)}, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>")


def _model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(ITOS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
        pad_token_id=0, bos_token_id=1, eos_token_id=2))


def _pairs(negatives: tuple[int, ...] = (1,)) -> Dataset:
    """Sums a+b; rejected = the sum plus each offset (one row per negative, adjacent)."""
    return Dataset.from_list([
        {"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + d)}
        for a in range(3) for b in range(3) for d in negatives])


def _args(tmp_path, kind, **kw) -> DPOConfig:
    names = kind if isinstance(kind, list) else [kind]
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=3,
                learning_rate=3e-2, beta=0.5, loss_type=names,
                label_smoothing=max((SMOOTHING.get(n, 0.0) for n in names), default=0.0),
                use_cpu=True, bf16=False, report_to=[], logging_steps=1, save_strategy="no",
                disable_tqdm=True, seed=0)
    return DPOConfig(**{**base, **kw})


def _sequence_logps(model, ids, attention_mask, completion_mask) -> torch.Tensor:
    """Σ over completion tokens of log p(token | prefix), float64, from a plain forward."""
    logits = model(input_ids=ids, attention_mask=attention_mask).logits  # (2B, T, V)
    lp = logits[:, :-1].double().log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (lp * completion_mask[:, 1:]).sum(1)  # (2B,)


def _expected(names, weights, pc, pr, rc, rr, inputs, beta, smoothing):
    """Σ weight · loss, each from preference_loss (TRL's sft from its own definition)."""
    cm = inputs["completion_mask"]
    total = 0.0
    for name, w in zip(names, weights, strict=True):
        if name in ("sft", "rpo"):  # TRL: mean chosen per-token NLL over the completion tokens
            lp = inputs["_chosen_token_logps"]
            value = -lp.sum() / cm.chunk(2)[0][:, 1:].sum()
            if name == "rpo":  # RPO = DPO + α·NLL, α = 1 (its default)
                value = value + preference_loss("dpo", pc, pr, rc, rr, beta=beta)
        elif name == "infonce":  # groups = rows with identical prompt + chosen tokens
            groups: dict[tuple, list[int]] = {}
            for i in range(pc.shape[0]):
                groups.setdefault(tuple(inputs["input_ids"][i].tolist()), []).append(i)
            value = sum(preference_loss("infonce", pc[g[:1]], pr[g][None], rc[g[:1]],
                                        rr[g][None], beta=beta)
                        for g in groups.values()) / len(groups)
        else:
            kind = "dpo" if name == "sigmoid" else name
            kw: dict = {}
            if kind in ("robust", "exo_pair"):
                kw["label_smoothing"] = smoothing
            if kind in ("ipo", "sigmoid_norm"):
                c, r = cm.chunk(2)
                kw = {"chosen_lengths": c.sum(1).double(), "rejected_lengths": r.sum(1).double()}
            value = preference_loss(kind, pc, pr, rc, rr, beta=beta, **kw)
        total = total + w * value
    return total


def _spy(reference):
    """A MIDPOTrainer subclass recording (TRL-path loss, independent loss, group sizes).

    ``reference(trainer, model)`` returns (module, context) giving the reference log-probs.
    """

    class Spy(MIDPOTrainer):
        seen: ClassVar[list] = []

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            ids, am, cm = inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"]
            with torch.no_grad():
                pc, pr = _sequence_logps(model, ids, am, cm).chunk(2)
                ref_model, context = reference(self, model)
                with context:
                    rc, rr = _sequence_logps(ref_model, ids, am, cm).chunk(2)
                logits = model(input_ids=ids, attention_mask=am).logits
                lp = logits[:, :-1].double().log_softmax(-1).gather(-1, ids[:, 1:, None])
                lp = lp.squeeze(-1) * cm[:, 1:]
            b = pc.shape[0]
            extra = {**inputs, "_chosen_token_logps": lp[:b]}
            names = self.args.loss_type
            weights = self.args.loss_weights or [1.0] * len(names)
            want = _expected(names, weights, pc, pr, rc, rr, extra, self.beta,
                             self.label_smoothing)
            rows = [tuple(r) for r in ids[:b].tolist()]
            sizes = sorted(rows.count(r) for r in set(rows))
            self.seen.append((float(loss.detach()), float(want), sizes))
            return loss

    Spy.seen = []
    return Spy


def _with_ref_model(trainer, model):
    return trainer.ref_model, contextlib.nullcontext()


def _run(tmp_path, kind, dataset=None, spy_reference=_with_ref_model, ref_model=True, **kw):
    base = _model()
    Spy = _spy(spy_reference)
    trainer = Spy(model=copy.deepcopy(base), ref_model=copy.deepcopy(base) if ref_model else None,
                  args=_args(tmp_path, kind, **kw), train_dataset=dataset or _pairs(),
                  processing_class=_tokenizer())
    trainer.train()
    return trainer, Spy.seen


def _assert_matches(seen, steps):
    assert len(seen) == steps
    for got, want, _ in seen:
        assert math.isfinite(got)
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)  # float32 vs float64
    # the policy moved away from the reference, so later steps test non-zero log-ratios
    assert len({round(g, 6) for g, _, _ in seen}) > 1


FAST = ("mio", "infonce", "nwj")


@pytest.mark.parametrize("kind", [
    pytest.param(k, marks=() if k in FAST else pytest.mark.slow)
    for k in [*LOSSES, "sigmoid"]])
def test_each_loss_equals_preference_loss_in_a_real_trl_run(tmp_path, kind):
    """At each of 3 steps, TRL's loss under MIDPOTrainer = preference_loss on that batch."""
    negatives = (1, 11) if kind == "infonce" else (1,)
    _, seen = _run(tmp_path, kind, dataset=_pairs(negatives))
    _assert_matches(seen, 3)
    if kind == "infonce":  # two rejected per (prompt, chosen): K = 3, groups kept whole
        assert all(sizes == [2, 2] for *_, sizes in seen)


def test_mixed_with_trl_sft_term(tmp_path):
    """loss_type=["mio", "sft"], weights [1, 0.5]: mio by mi-bounds + 0.5·NLL by TRL."""
    _, seen = _run(tmp_path, ["mio", "sft"], loss_weights=[1.0, 0.5])
    _assert_matches(seen, 3)


@pytest.mark.slow
def test_precomputed_reference_and_gradient_accumulation(tmp_path):
    """precompute_ref_log_probs=True (no reference model kept) and 2 accumulation steps."""
    initial = _model()  # the reference: the policy before training, kept only by the test
    trainer, seen = _run(tmp_path, "mio", ref_model=False,
                         spy_reference=lambda tr, m: (initial, contextlib.nullcontext()),
                         precompute_ref_log_probs=True, gradient_accumulation_steps=2,
                         per_device_train_batch_size=2)
    assert trainer.ref_model is None
    _assert_matches(seen, 5)  # 9 pairs: micro-batches of 2, 2, 2, 2, 1 = 3 steps of 2 + 1


@pytest.mark.slow
def test_mixed_precision_bf16(tmp_path):
    """TRL's default bf16=True (autocast on CPU): same forward, same loss to round-off."""
    _, seen = _run(tmp_path, "mio", bf16=True)
    _assert_matches(seen, 3)


@pytest.mark.slow
def test_peft_reference_is_the_model_without_its_adapter(tmp_path):
    """With a LoRA adapter and no ref_model, the reference is the base model (adapter off)."""
    peft = pytest.importorskip("peft")
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                          lora_dropout=0.0)
    base = _model()
    Spy = _spy(lambda tr, m: (tr.model, tr.model.disable_adapter()))
    trainer = Spy(model=base, args=_args(tmp_path, "mio", learning_rate=0.2),
                  train_dataset=_pairs(), processing_class=_tokenizer(), peft_config=cfg)
    trainer.train()
    _assert_matches(Spy.seen, 3)


@pytest.mark.parametrize("kind", ["mio", "infonce"])
def test_gradients_equal_autograd_of_preference_loss(tmp_path, kind):
    """∂(MIDPOTrainer loss)/∂θ = ∂(preference_loss on plainly computed log-probs)/∂θ."""
    base = _model()
    trainer = MIDPOTrainer(model=copy.deepcopy(base), ref_model=copy.deepcopy(base),
                           args=_args(tmp_path, kind, max_steps=2),
                           train_dataset=_pairs((1, 11)), processing_class=_tokenizer())
    trainer.train()  # two steps, so the policy differs from the reference
    model = trainer.model
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    model.zero_grad()
    trainer.compute_loss(model, inputs).backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ids, am, cm = inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"]
    pc, pr = _sequence_logps(model, ids, am, cm).chunk(2)
    with torch.no_grad():
        rc, rr = _sequence_logps(trainer.ref_model, ids, am, cm).chunk(2)
    _expected([kind], [1.0], pc, pr, rc, rr, inputs, trainer.beta, 0.0).backward()
    for g, p in zip(got, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad.to(g.dtype), rtol=1e-4, atol=1e-6)
    assert sum(float(g.abs().sum()) for g in got) > 0


def test_unsupported_settings_and_unknown_names_raise(tmp_path):
    tok, ds = _tokenizer(), _pairs()
    for kw, word in (({"ld_alpha": 0.5}, "ld_alpha"), ({"use_weighting": True}, "use_weighting"),
                     ({"f_divergence_type": "js_divergence"}, "f_divergence_type")):
        with pytest.raises(ValueError, match=word):
            MIDPOTrainer(model=_model(), ref_model=_model(), args=_args(tmp_path, "ipo", **kw),
                         train_dataset=ds, processing_class=tok)
    with pytest.raises(ValueError, match=r"unknown loss_type 'nope'.*mio"):
        split_loss_types(["mio", "nope"])
    with pytest.raises(ValueError, match="one weight per loss_type"):
        split_loss_types(["mio", "sft"], [1.0])
    assert split_loss_types(["mio", "sft", "dpo"], [1, 2, 3]) == (
        [("mio", 1.0), ("dpo", 3.0)], [("sft", 2.0)])
    with pytest.raises(ValueError, match="multiple of the number of rejected"):
        MIDPOTrainer(model=_model(), ref_model=_model(),
                     args=_args(tmp_path, "infonce", per_device_train_batch_size=3),
                     train_dataset=_pairs((1, 11)), processing_class=tok)


def test_group_shuffle_sampler_keeps_groups_whole_and_reshuffles():
    groups = [[0, 5], [1, 2], [3, 4], [6, 7]]
    s = GroupShuffleSampler(groups, seed=3)
    first, second = list(s), list(s)
    for order in (first, second):
        assert sorted(order) == list(range(8))
        pairs = [tuple(order[i:i + 2]) for i in range(0, 8, 2)]
        assert sorted(map(list, pairs)) == sorted(groups)
    assert list(GroupShuffleSampler(groups, seed=3)) == first  # same seed, same first epoch
    s.set_epoch(0)
    assert list(s) == first


def test_expand_negatives():
    ds = Dataset.from_list([{"prompt": "1+1=", "chosen": "2", "rejected": ["3", "4"]},
                            {"prompt": "1+2=", "chosen": "3", "rejected": ["5"]}])
    out = expand_negatives(ds)
    assert out.to_list() == [
        {"prompt": "1+1=", "chosen": "2", "rejected": "3"},
        {"prompt": "1+1=", "chosen": "2", "rejected": "4"},
        {"prompt": "1+2=", "chosen": "3", "rejected": "5"}]
    msg = [{"role": "assistant", "content": "3"}]  # conversational: a response is a message list
    conv = Dataset.from_list([{"prompt": msg, "chosen": msg, "rejected": [msg, msg, msg]}])
    assert len(expand_negatives(conv)) == 3
    assert len(expand_negatives(Dataset.from_list([{"prompt": msg, "chosen": msg,
                                                    "rejected": msg}]))) == 1


def test_callback_and_diagnose_on_trls_own_log(tmp_path, capsys):
    """A real run with eval: the callback's verdicts are logged; diagnose reads the state file."""
    base = _model()
    cb = DeclineCallback()
    trainer = MIDPOTrainer(
        model=copy.deepcopy(base), ref_model=copy.deepcopy(base),
        args=_args(tmp_path, "mio", max_steps=8, eval_strategy="steps", eval_steps=2,
                   per_device_eval_batch_size=4),
        train_dataset=_pairs(), eval_dataset=_pairs((2,)), processing_class=_tokenizer(),
        callbacks=[cb])
    trainer.train()
    trainer.save_state()
    hist = trainer.state.log_history
    train = [e for e in hist if "logps/chosen" in e]
    evals = [e for e in hist if "eval_logps/chosen" in e]
    assert len(train) == 8 and len(evals) == 4
    assert set(cb.verdicts) >= {"logps/chosen", "rewards/chosen", "rewards/margins",
                                "eval_logps/chosen", "eval_rewards/chosen", "eval_rewards/margins"}
    assert train[-1]["decline/logps/chosen"] == cb.verdicts["logps/chosen"].shape
    assert evals[0]["decline/eval_logps/chosen"] == "too-short"  # one point so far
    capsys.readouterr()
    for series, entries, key in (("train", train, "logps/chosen"),
                                 ("eval", evals, "eval_logps/chosen")):
        assert diagnose_main([str(tmp_path / "trainer_state.json"), "--json", "--series",
                              series]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["format"] == "trainer_state" and out["key"] == key
        assert out["series"]["logps/chosen"]["values"] == [e[key] for e in entries]
        assert out["series"]["logps/chosen"]["steps"] == [e["step"] for e in entries]
        assert out["shape"] == cb.verdicts[key].shape
        assert out["peak_step"] == cb.verdicts[key].peak_step


def test_callback_tracks_pairs_through_a_real_trl_run(tmp_path):
    """DeclineCallback(pairs=...) in TRL's own DPOTrainer (3 steps): the model and tokenizer
    come from the trainer's callback arguments, each tracked pair's chosen change equals a
    direct computation on the initial and the trained model, and the last log entry lists the
    most-displaced pairs."""
    from trl import DPOTrainer

    base = _model()
    rows = _pairs().select(range(5))  # a datasets.Dataset of TRL rows

    def direct(model) -> list[float]:  # [BOS] prompt chosen EOS, one forward per row, float64
        model.eval()
        out = []
        with torch.no_grad():
            for r in rows:
                head = [1, *(ITOS.index(c) for c in r["prompt"])]
                ids = head + [ITOS.index(c) for c in r["chosen"]] + [2]
                lp = model(torch.tensor([ids])).logits[0, :-1].double().log_softmax(-1)
                out.append(float(lp[torch.arange(len(head) - 1, len(ids) - 1),
                                    torch.tensor(ids[len(head):])].sum()))
        return out

    cb = DeclineCallback(pairs=rows, pair_format="raw", top=3)
    trainer = DPOTrainer(model=copy.deepcopy(base), ref_model=copy.deepcopy(base),
                         args=_args(tmp_path, "sigmoid"), train_dataset=_pairs(),
                         processing_class=_tokenizer(), callbacks=[cb])
    trainer.train()
    want = [b - a for a, b in zip(direct(base), direct(trainer.model), strict=True)]
    assert max(abs(w) for w in want) > 1e-2  # the policy moved
    assert cb.chosen_change.tolist() == pytest.approx(want, abs=1e-4)
    order = sorted(range(len(want)), key=lambda i: want[i])[:3]
    assert [r["index"] for r in cb.displaced] == order
    assert trainer.state.log_history[-1]["displaced/pairs"] == order


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_accelerate_launch_two_processes(tmp_path):
    """The documented multi-GPU command, on CPU: accelerate launch --multi_gpu --num_processes 2
    (DDP over gloo) runs mi_bounds.integrations.trl_dpo on a local tiny model and dataset."""
    import os
    import signal
    import subprocess
    import sys

    _model().save_pretrained(tmp_path / "model")
    _tokenizer().save_pretrained(tmp_path / "model")
    (tmp_path / "data").mkdir()
    rows = [{"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)}
            for a in range(10) for b in range(10)]
    for split, part in (("train", rows[:80]), ("test", rows[80:])):
        (tmp_path / "data" / f"{split}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in part))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "mi_bounds.integrations.trl_dpo",
           "--model_name_or_path", str(tmp_path / "model"),
           "--dataset_name", str(tmp_path / "data"), "--loss_type", "mio", "--beta", "0.1",
           "--learning_rate", "1e-3", "--per_device_train_batch_size", "4", "--max_steps", "4",
           "--logging_steps", "1", "--eval_strategy", "steps", "--eval_steps", "2",
           "--output_dir", str(out), "--report_to", "none", "--bf16", "False",
           "--use_cpu", "True", "--save_strategy", "no", "--disable_tqdm", "True"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    # its own session, so that on a time-out the launcher *and* its workers are ended
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"accelerate launch did not finish in 240 s: {stdout[-2000:]}"
                    f"{stderr[-4000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    assert "on 2 process(es)" in stdout
    state = json.loads((out / "trainer_state.json").read_text())
    assert sum("logps/chosen" in e for e in state["log_history"]) == 4
    assert diagnose_main([str(out), "--json", "--min-points", "3"]) == 0


def test_no_extra_forward_passes(tmp_path):
    """MIDPOTrainer("mio") makes as many policy and reference forwards as TRL's own DPOTrainer
    with the same formula ("nca_pair"): one of each per batch, no second reference pass."""
    from trl import DPOTrainer

    counts = {}
    for name, cls, kind in (("ours", MIDPOTrainer, "mio"), ("trl", DPOTrainer, "nca_pair")):
        base = _model()
        policy, ref = copy.deepcopy(base), copy.deepcopy(base)
        n = {"policy": 0, "ref": 0}
        policy.model.register_forward_hook(lambda *a, n=n: n.__setitem__("policy", n["policy"] + 1))
        ref.model.register_forward_hook(lambda *a, n=n: n.__setitem__("ref", n["ref"] + 1))
        trainer = cls(model=policy, ref_model=ref, args=_args(tmp_path / name, kind),
                      train_dataset=_pairs(), processing_class=_tokenizer())
        trainer.train()
        counts[name] = (n, trainer.state.log_history[-2]["loss"])
    assert counts["ours"][0] == counts["trl"][0] == {"policy": 3, "ref": 3}
    assert counts["ours"][1] == pytest.approx(counts["trl"][1], rel=1e-6)  # same loss, too


@pytest.mark.slow
def test_readme_trl_example_runs_and_diagnose_says_what_the_readme_shows(tmp_path, capsys):
    """docs/TRL.md's worked example, run as written (output under tmp_path), then `mi-bounds
    diagnose`: the verdict line is the document's, the drop within 10 % of the document's."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "TRL.md").read_text()
    section = text[text.index("## A worked example: TRL"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"```console\n\$ mi-bounds diagnose runs/trl-tiny\n(.*?)```", section,
                      re.S).group(1).splitlines()
    out = str(tmp_path / "trl-tiny")
    exec(compile(code.replace('"runs/trl-tiny"', repr(out)), "docs/TRL.md", "exec"), {})
    capsys.readouterr()
    assert diagnose_main([out]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == shown[1]  # "logps/chosen (eval_logps/chosen, 12 points, …): <shape>"
    got = float(re.search(r"drop from peak ([\d.]+)", lines[3]).group(1))
    want = float(re.search(r"drop from peak ([\d.]+)", shown[3]).group(1))
    assert got == pytest.approx(want, rel=0.1)


def test_a_registered_loss_runs_as_loss_type(tmp_path):
    """A loss of register_loss, and the same function as FILE.py:FUNCTION, is TRL's loss_type:
    at each step TRL's loss under MIDPOTrainer = preference_loss of that registered loss."""
    from pathlib import Path

    from mi_bounds.preference import load_loss, unregister_loss

    name = load_loss(str(Path(__file__).resolve().parents[1] / "examples" / "dpop.py") + ":dpop")
    try:
        assert split_loss_types([name, "sft"]) == ([(name, 1.0)], [("sft", 1.0)])
        _, seen = _run(tmp_path, name)
        _assert_matches(seen, 3)
    finally:
        unregister_loss(name)
