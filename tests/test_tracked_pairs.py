"""DeclineCallback's tracked pairs (mi_bounds.integrations.tracked_pairs): the chosen change of
each pair equals a direct computation before and after a weight change, the report is
top_displaced_pairs with the CHES of a real `mi-bounds ches` scores file, bad arguments are
ValueErrors naming the argument, and without pairs the callback does nothing new.

A tiny Llama from a config and a character tokenizer (``tokenizers`` WordLevel), on the CPU;
training is simulated by perturbing the weights between on_train_begin and on_train_end."""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from mi_bounds.decline.ches_cli import main as ches_main
from mi_bounds.decline.displacement import read_ches_scores, top_displaced_pairs
from mi_bounds.integrations.decline_callback import DeclineCallback
from mi_bounds.integrations.tracked_pairs import TrackedPairs

ITOS = ["<pad>", "<bos>", "<eos>", *"0123456789+=? abcdefghijklmnopqrstuvwxyzW<>|"]
STOI = {s: i for i, s in enumerate(ITOS)}
ROWS = [{"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1),
         "other": "ignored"} for a, b in ((1, 2), (7, 5), (12, 34), (9, 9), (0, 0), (55, 55),
                                          (3, 40))]
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
LOGGER = "mi_bounds.integrations.decline_callback"


def _tokenizer(chat: bool = False) -> PreTrainedTokenizerFast:
    tk = Tokenizer(models.WordLevel(dict(STOI), unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                                  pad_token="<pad>")
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def _model(seed: int = 0) -> LlamaForCausalLM:
    """Dropout on, so that scoring outside eval mode would not match the direct computation."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(ITOS), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        attention_dropout=0.5, initializer_range=0.3, pad_token_id=0, bos_token_id=1,
        eos_token_id=2))


def _train(model: torch.nn.Module, seed: int = 1) -> None:
    """Stands in for training: every weight moves."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))


def _direct(model: torch.nn.Module, rows) -> np.ndarray:
    """log π(chosen | prompt) per row, ``[BOS] prompt chosen EOS`` built by hand, one unpadded
    forward each in eval mode, log-softmax in float64, summed over chosen + EOS."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    out = []
    with torch.no_grad():
        for r in rows:
            head = [STOI["<bos>"], *(STOI[c] for c in r["prompt"])]
            ids = head + [STOI[c] for c in r["chosen"]] + [STOI["<eos>"]]
            logits = model(torch.tensor([ids])).logits[0].double()
            lp = logits[:-1].log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
            out.append(float(lp[len(head) - 1 :].sum()))
    for m, training in modes:
        m.training = training
    return np.array(out)


def _events(tmp_path):
    return (TrainingArguments(output_dir=str(tmp_path), report_to=[]), TrainerState(),
            TrainerControl())


def test_chosen_change_equals_the_direct_computation(tmp_path, caplog):
    """Δᵢ = after − before (1e-4 nats) over two padded batches; the report lists the pairs of
    most negative Δᵢ in order; every module's train/eval mode is put back."""
    model, tok = _model(), _tokenizer()
    model.train()
    model.model.layers[1].eval()  # mixed modes must survive the scoring
    cb = DeclineCallback(pairs=ROWS, top=3, batch_size=4)
    args, state, control = _events(tmp_path)
    before = _direct(model, ROWS)
    state.global_step = 0
    cb.on_train_begin(args, state, control, model=model, processing_class=tok)
    np.testing.assert_allclose(cb.tracked.start_logps, before, rtol=0, atol=1e-4)
    _train(model)
    after = _direct(model, ROWS)
    state.global_step = 7
    state.log_history.append({"loss": 1.0, "step": 7})
    with caplog.at_level("INFO", logger=LOGGER):
        cb.on_train_end(args, state, control, model=model, processing_class=tok)
    want = after - before
    assert np.abs(want).min() > 1e-2 and np.diff(np.sort(want)).min() > 1e-3  # a clear order
    np.testing.assert_allclose(cb.chosen_change, want, rtol=0, atol=1e-4)
    order = [int(i) for i in np.argsort(want)[:3]]
    assert [r["index"] for r in cb.displaced] == order
    assert [set(r) for r in cb.displaced] == [{"index", "chosen_change"}] * 3
    assert [m.training for m in model.modules()] == [
        not name.startswith("model.layers.1") for name, _ in model.named_modules()]
    msg = next(r.getMessage() for r in caplog.records if "tracked pairs" in r.getMessage()
               and "fell most" in r.getMessage())
    assert "(step 7 - step 0, 3 of 7)" in msg
    assert f"  pair {order[0]}: {want[order[0]]:+.3f} nats" in msg
    assert state.log_history[-1]["displaced/pairs"] == order
    assert "displaced/ches_rank" not in state.log_history[-1]


@pytest.fixture()
def scored(tmp_path):
    """A model and tokenizer saved to a folder, the rows as a pairs file, and the CHES of each
    pair written by `mi-bounds ches` on that folder."""
    model, tok = _model(), _tokenizer()
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "ches.jsonl"
    assert ches_main(["--model", str(tmp_path / "model"), "--pairs", str(pairs), "--out",
                      str(out), "--no-progress"]) == 0
    return model, tok, out


def test_report_is_top_displaced_pairs_with_the_ches_of_the_scores_file(tmp_path, scored,
                                                                        caplog):
    """With ches=PATH: the report equals top_displaced_pairs(Δ, scores), the order is the
    direct Δ's and each CHES rank is the pair's place by CHES (1 = highest); the end message
    is at WARNING when the chosen curve declined."""
    model, tok, path = scored
    scores = read_ches_scores(path)
    cb = DeclineCallback(pairs=ROWS, ches=path, top=4, noise=0.01)
    args, state, control = _events(tmp_path)
    before = _direct(model, ROWS)
    cb.on_train_begin(args, state, control, model=model, processing_class=tok)
    _train(model)
    want = _direct(model, ROWS) - before
    for step, value in enumerate((-1.0, -1.5, -2.0, -2.5), start=1):  # a chosen fall
        state.global_step = step
        state.log_history.append({"logps/chosen": value, "step": step})
        cb.on_log(args, state, control, logs={"logps/chosen": value})  # no model: no scoring
    assert cb.verdicts["logps/chosen"].shape == "fall-from-start" and cb.displaced is None
    with caplog.at_level("INFO", logger=LOGGER):
        cb.on_train_end(args, state, control, model=model, processing_class=tok)
    assert cb.displaced == top_displaced_pairs(cb.chosen_change, scores, k=4)
    assert [r["index"] for r in cb.displaced] == [int(i) for i in np.argsort(want)[:4]]
    by_ches = sorted(range(len(ROWS)), key=lambda i: -scores[i]["ches"])
    for r in cb.displaced:
        assert r["ches"] == scores[r["index"]]["ches"]
        assert r["ches_rank"] == by_ches.index(r["index"]) + 1
    end = [r for r in caplog.records if "at the end of training" in r.getMessage()
           and "fell most" in r.getMessage()]
    assert len(end) == 1 and end[0].levelname == "WARNING"
    r0 = cb.displaced[0]
    assert f"pair {r0['index']}: {r0['chosen_change']:+.3f} nats; CHES {r0['ches']:.4g}, " \
           f"rank {r0['ches_rank']}" in end[0].getMessage()
    assert state.log_history[-1]["displaced/ches_rank"] == [r["ches_rank"] for r in cb.displaced]


def test_scores_of_other_pairs_or_another_format_are_refused(tmp_path, scored):
    """pair_sha ties each scores line to the pair's token ids: rows in another order, or the
    same rows encoded in the chat format, are a ValueError naming ches[i]."""
    model, tok, path = scored
    args, state, control = _events(tmp_path)
    swapped = [ROWS[1], ROWS[0], *ROWS[2:]]
    cb = DeclineCallback(pairs=swapped, ches=path)
    with pytest.raises(ValueError, match=r"ches\[0\] \(pair_sha"):
        cb.on_train_begin(args, state, control, model=model, processing_class=tok)
    chat = _tokenizer(chat=True)
    cb = DeclineCallback(pairs=ROWS, ches=path)  # auto: the chat template of this tokenizer
    with pytest.raises(ValueError, match=r"ches\[0\].*format 'chat'"):
        cb.on_train_begin(args, state, control, model=model, processing_class=chat)
    cb = DeclineCallback(pairs=ROWS, ches=path, pair_format="raw")
    cb.on_train_begin(args, state, control, model=model, processing_class=chat)
    assert cb.tracked.started


def test_chat_encoding_is_the_one_mi_bounds_ches_uses(tmp_path):
    """With a chat template, the callback encodes as `mi-bounds ches --format auto` does (its
    pair_sha is accepted) and differs from the raw format's."""
    model, tok = _model(), _tokenizer(chat=True)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    for fmt in ("auto", "raw"):
        assert ches_main(["--model", str(tmp_path / "model"), "--pairs", str(pairs), "--out",
                          str(tmp_path / f"{fmt}.jsonl"), "--format", fmt,
                          "--no-progress"]) == 0
    args, state, control = _events(tmp_path)
    cb = DeclineCallback(pairs=ROWS, ches=tmp_path / "auto.jsonl")
    cb.on_train_begin(args, state, control, model=model, processing_class=tok)
    head = [STOI[c] for c in "<user>What is 1+2?<assistant>"]
    assert cb.tracked._chosen[0] == ([*head, STOI["3"], STOI["<eos>"]], len(head))
    with pytest.raises(ValueError, match="ches"):
        DeclineCallback(pairs=ROWS, ches=tmp_path / "raw.jsonl").on_train_begin(
            args, state, control, model=model, processing_class=tok)


def test_pairs_are_scored_when_a_chosen_curve_becomes_a_decline(tmp_path, caplog):
    """pairs_at_decline: the log at which logps/chosen becomes a decline scores the pairs (step
    of that log); a margin's decline does not; pairs_at_decline=False waits for the end."""
    model, tok = _model(), _tokenizer()
    values = (-1.0, -1.5, -2.0, -2.5)
    for at_decline in (True, False):
        m = copy.deepcopy(model)
        cb = DeclineCallback(pairs=ROWS, noise=0.01, pairs_at_decline=at_decline)
        args, state, control = _events(tmp_path)
        cb.on_train_begin(args, state, control, model=m, processing_class=tok)
        before = _direct(m, ROWS)
        _train(m)
        caplog.clear()
        with caplog.at_level("INFO", logger=LOGGER):
            for step, value in enumerate(values, start=1):
                state.global_step = step
                logs = {"logps/chosen": value, "rewards/margins": value}
                state.log_history.append({**logs, "step": step})
                cb.on_log(args, state, control, logs=logs, model=m, processing_class=tok)
                if cb.verdicts["logps/chosen"].shape == "fall-from-start":
                    break
        if not at_decline:
            assert cb.displaced is None
            continue
        assert cb.tracked.step == step
        np.testing.assert_allclose(cb.chosen_change, _direct(m, ROWS) - before, atol=1e-4)
        msgs = [r.getMessage() for r in caplog.records if "became a decline" in r.getMessage()]
        assert len(msgs) == 1 and msgs[0].startswith(f"step {step}: logps/chosen became")


def test_bad_arguments_name_the_argument(tmp_path):
    rows = [dict(r) for r in ROWS[:3]]
    scores = [{"index": i, "ches": 1.0, "ches_normalized": 0.5} for i in range(3)]
    with pytest.raises(ValueError, match="ches holds 2 score rows but pairs holds 3"):
        DeclineCallback(pairs=rows, ches=scores[:2])
    with pytest.raises(ValueError, match=r"ches\[1\] has index 2"):
        DeclineCallback(pairs=rows, ches=[scores[0], scores[2], scores[1]])
    with pytest.raises(ValueError, match=r"ches\[0\] needs a finite number 'ches'"):
        DeclineCallback(pairs=rows, ches=[{"ches": float("nan")}] * 3)
    with pytest.raises(ValueError, match=r"^ches: scores file"):
        DeclineCallback(pairs=rows, ches=tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="give pairs too"):
        DeclineCallback(ches=scores)
    bad = [rows[0], {"prompt": "1+1=", "rejected": "3"}]
    with pytest.raises(ValueError, match=r"pairs\[1\]: missing field 'chosen'"):
        DeclineCallback(pairs=bad)
    with pytest.raises(ValueError, match=r"pairs\[0\]: field 'chosen' must be a non-empty str"):
        DeclineCallback(pairs=[{"prompt": "1+1=", "chosen": [{"role": "assistant"}],
                                "rejected": "3"}])
    with pytest.raises(ValueError, match="pairs must be a sequence of TRL rows"):
        DeclineCallback(pairs="1+1=")
    with pytest.raises(ValueError, match="pairs must hold at least one row"):
        DeclineCallback(pairs=[])
    for top in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"^top must be an integer >= 1"):
            DeclineCallback(pairs=rows, top=top)
    with pytest.raises(ValueError, match=r"^top must be"):
        DeclineCallback(top=0)
    with pytest.raises(ValueError, match=r"^batch_size must be"):
        DeclineCallback(pairs=rows, batch_size=0)
    with pytest.raises(ValueError, match=r"^pair_format must be one of"):
        DeclineCallback(pairs=rows, pair_format="plain")
    cb = DeclineCallback(pairs=[{"prompt": "x" * 62, "chosen": "1", "rejected": "2"}])
    args, state, control = _events(tmp_path)
    with pytest.raises(ValueError, match=r"pairs\[0\] \(chosen\): prompt \+ response is 65 "
                                         "tokens, longer than the model's context of 64"):
        cb.on_train_begin(args, state, control, model=_model(), processing_class=_tokenizer())
    with pytest.raises(ValueError, match="pairs: the trainer passed no processing_class"):
        DeclineCallback(pairs=rows).on_train_begin(args, state, control, model=_model())


class _NoForward(torch.nn.Module):
    def forward(self, *args, **kwargs):  # pragma: no cover - must not run
        raise AssertionError("the model was called")


def test_without_pairs_nothing_is_scored_or_added(tmp_path):
    """No pairs: train begin/end never touch the model, the log entry is unchanged, and the
    new attributes are None; sharded weights: a WARNING, and nothing scored."""
    cb = DeclineCallback()
    args, state, control = _events(tmp_path)
    state.log_history.append({"loss": 1.0, "step": 1})
    cb.on_train_begin(args, state, control, model=_NoForward(), processing_class=_tokenizer())
    cb.on_train_end(args, state, control, model=_NoForward(), processing_class=_tokenizer())
    assert state.log_history == [{"loss": 1.0, "step": 1}]
    assert cb.tracked is None and cb.displaced is None and cb.chosen_change is None
    model = _model()
    next(model.parameters()).ds_id = 0  # what DeepSpeed ZeRO-3 sets on its partitioned weights
    cb = DeclineCallback(pairs=ROWS)
    cb.on_train_begin(args, state, control, model=model, processing_class=_tokenizer())
    cb.on_train_end(args, state, control, model=model, processing_class=_tokenizer())
    assert not cb.tracked.started and cb.displaced is None
    assert state.log_history == [{"loss": 1.0, "step": 1}]


def test_tracked_pairs_on_its_own_matches_the_callback(tmp_path):
    """TrackedPairs used directly (start, measure, report) gives what the callback stores."""
    model, tok = _model(), _tokenizer()
    tp = TrackedPairs(ROWS, top=2)
    tp.start(copy.deepcopy(model), tok, step=0)
    cb = DeclineCallback(pairs=ROWS, top=2)
    args, state, control = _events(tmp_path)
    cb.on_train_begin(args, state, control, model=model, processing_class=tok)
    _train(model)
    state.global_step = 3
    cb.on_train_end(args, state, control, model=model, processing_class=tok)
    assert tp.measure(model, step=3) == cb.displaced
    assert tp.report() == cb.tracked.report()
    assert len(tp) == 7 and tp.summary()["displaced/pairs"] == [r["index"] for r in tp.displaced]
    assert logging.getLogger(LOGGER).name == LOGGER
