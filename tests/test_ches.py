"""CHES (mi_bounds.decline.ches) against a direct unbatched computation, its positions token by
token, the `mi-bounds ches` command end to end, and the displacement statistics
(mi_bounds.decline.displacement) on synthetic data with a known rank correlation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers")

from mi_bounds.decline.ches import (
    ches_from_sums,
    ches_scores,
    last_hidden_states,
    predicting_positions,
)
from mi_bounds.decline.ches_cli import main as ches_main
from mi_bounds.decline.ches_cli import select_top
from mi_bounds.decline.displacement import (
    displacement_predictors,
    rankdata,
    read_ches_scores,
    spearman,
    spearman_interval,
    spearman_replicates,
    token_edit_distance,
    top_displaced_pairs,
)
from mi_bounds.lm.config import ModelConfig
from mi_bounds.lm.logps import pad_sequences
from mi_bounds.lm.model import build_model, save_model_dir
from mi_bounds.lm.task_format import task_format
from mi_bounds.lm.tokenizer import CharTokenizer, HFTokenizer

PAIRS = [  # (prompt, chosen, rejected): different lengths, one shared response, one identical
    ("12+34=", "46", "45"),
    ("7+5=", "12", "121"),
    ("what is 3*4?", "twelve", "12"),
    ("1+1=", "2", "2"),  # y+ = y-: CHES = 0 exactly
    ("99-9=", "90", "9"),
    ("a", "b c", "d e f g"),
]


def _perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Larger random weights than the default init, so hidden states differ across positions."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def raw():
    tok = CharTokenizer()
    cfg = ModelConfig(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                      context=64)
    return _perturb(build_model(cfg, tok, seed=0), 1), tok


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    """A tiny Llama and its byte-level BPE tokenizer with a ChatML chat template (a GGUF file
    read by transformers, as in tests/test_lm_chat.py), the tokenizer behind the adapter the
    command uses."""
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    from tiny_gguf import write_tiny_llama_gguf

    from mi_bounds.lm.pretrained import load_gguf

    d = tmp_path_factory.mktemp("chat")
    path, _ = write_tiny_llama_gguf(d / "tiny.gguf", seed=0)
    model, hf = load_gguf(path)
    hf.save_pretrained(str(d / "tok"))
    return model.eval(), HFTokenizer(d / "tok"), path


def _encoded(tokenizer, kind: str):
    fmt = task_format(tokenizer, kind)
    return fmt, [(fmt.encode(p, c), fmt.encode(p, r)) for p, c, r in PAIRS]


def _reference(model, pairs) -> tuple[np.ndarray, np.ndarray]:
    """CHES from an unpadded forward pass per sequence with output_hidden_states, float64."""
    ches, norm = [], []
    for seqs in pairs:
        sums = []
        for ids, n_prompt in seqs:
            with torch.no_grad():
                out = model(torch.tensor([ids]), output_hidden_states=True)
            h = out.hidden_states[-1][0].double()  # (T, H)
            used = h[n_prompt - 1 : len(ids) - 1]  # last prompt token .. second-to-last token
            sums.append((used.sum(0), len(ids) - n_prompt))
        (hp, n_p), (hm, n_m) = sums
        ches.append(float(hm @ hp - hp @ hp))
        mp, mm = hp / n_p, hm / n_m
        norm.append(float(mm @ mp - mp @ mp))
    return np.array(ches), np.array(norm)


# ------------------------------------------------------------------------------------------
# The function
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["raw", "chat"])
def test_lm_head_of_the_hidden_state_reproduces_the_logits(raw, chat, kind):
    """h is the LM head's input: lm_head(h) equals the model's logits (1e-5), on a padded
    batch, through get_decoder and through the output_hidden_states fallback."""
    model, tok = (raw[0], raw[1]) if kind == "raw" else (chat[0], chat[1])
    _, pairs = _encoded(tok, kind)
    batch = pad_sequences([s for pair in pairs for s in pair], tok.pad_id, side="left")
    with torch.no_grad():
        h = last_hidden_states(model, batch.input_ids, batch.attention_mask)
        h_fallback = last_hidden_states(_NoDecoder(model), batch.input_ids,
                                        batch.attention_mask)
        from mi_bounds.lm.logps import position_ids

        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=position_ids(batch.attention_mask)).logits
        real = batch.attention_mask.bool()
        torch.testing.assert_close(model.get_output_embeddings()(h)[real], logits[real],
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(h_fallback, h, atol=1e-6, rtol=0)


class _NoDecoder(torch.nn.Module):
    """A causal LM seen without get_decoder: only forward(..., output_hidden_states=True)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, **kwargs):
        return self.inner(**kwargs)


@pytest.mark.parametrize("kind", ["raw", "chat"])
@pytest.mark.parametrize("side", ["right", "left", "shared-prompt"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_ches_equals_the_unbatched_reference(raw, chat, kind, side, batch_size):
    """Both variants equal the direct per-sequence computation from output_hidden_states
    (relative 1e-5 of the scale ‖H⁺‖²), for either padding side (each sequence in full) and
    with the prompt computed once (its KV cache shared by both responses), for either batch
    size; the output_hidden_states fallback gives the same values."""
    model, tok = (raw[0], raw[1]) if kind == "raw" else (chat[0], chat[1])
    _, pairs = _encoded(tok, kind)
    ches, norm = _reference(model, pairs)
    shared = side == "shared-prompt"
    got = ches_scores(model, pairs, tok.pad_id, batch_size=batch_size,
                      side="right" if shared else side, share_prompt=shared)
    fallback = ches_scores(_NoDecoder(model), pairs, tok.pad_id, batch_size=batch_size,
                           side="left" if shared else side)
    assert got.ches.dtype == torch.float64 and got.ches.shape == (len(PAIRS),)
    scale = np.abs(ches).max()
    np.testing.assert_allclose(got.ches.numpy(), ches, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(got.ches_normalized.numpy(), norm, rtol=0,
                               atol=1e-5 * np.abs(norm).max())
    np.testing.assert_allclose(fallback.ches.numpy(), got.ches.numpy(), rtol=0,
                               atol=1e-5 * scale)
    assert got.n_chosen.tolist() == [len(c[0]) - c[1] for c, _ in pairs]
    assert got.n_rejected.tolist() == [len(r[0]) - r[1] for _, r in pairs]
    assert (got.ches[[0, 1, 2, 4, 5]] != 0).all()  # not trivially zero


@pytest.mark.parametrize("kind", ["raw", "chat"])
def test_positions_token_by_token(raw, chat, kind):
    """The positions used are the last prompt token through the second-to-last response
    token, and the tokens they predict are exactly the response's tokens and EOS, whatever
    the padding side."""
    tok = raw[1] if kind == "raw" else chat[1]
    fmt, pairs = _encoded(tok, kind)
    prompt, chosen, _ = PAIRS[2]
    ids, n_prompt = pairs[2][0]
    if kind == "raw":
        assert ids[:n_prompt] == [tok.bos_id, *tok.encode(prompt)]
    else:
        assert ids[:n_prompt] == fmt.prompt_ids(prompt)
        assert tok.tok.decode(ids[:n_prompt]).endswith("<|im_start|>assistant\n")
    assert ids[n_prompt:] == [*tok.encode(chosen), tok.eos_id]
    seqs = [s for pair in pairs for s in pair]
    for side in ("right", "left"):
        batch = pad_sequences(seqs, tok.pad_id, side=side)
        mask = predicting_positions(batch)
        for row, (s_ids, s_prompt) in enumerate(seqs):
            offset = 0 if side == "right" else batch.input_ids.shape[1] - len(s_ids)
            used = (mask[row].nonzero().flatten() - offset).tolist()
            assert used == list(range(s_prompt - 1, len(s_ids) - 1)), (side, row)
            predicted = batch.input_ids[row, mask[row].nonzero().flatten() + 1].tolist()
            assert predicted == list(s_ids[s_prompt:]) and predicted[-1] == tok.eos_id


@pytest.mark.parametrize("side", ["right", "left", "shared-prompt"])
def test_identical_responses_give_exactly_zero(raw, side):
    """y⁺ = y⁻ gives CHES = CHES_norm = 0.0 exactly, alone or in a batch with other pairs."""
    model, tok = raw
    _, pairs = _encoded(tok, "raw")
    assert pairs[3][0] == pairs[3][1]
    shared = side == "shared-prompt"
    for batch in (pairs, [pairs[3]]):
        got = ches_scores(model, batch, tok.pad_id, batch_size=3, share_prompt=shared,
                          side="right" if shared else side)
        i = 3 if len(batch) > 1 else 0
        assert got.ches[i].item() == 0.0 and got.ches_normalized[i].item() == 0.0


def test_ches_from_sums_formula_and_errors():
    """⟨H⁺,H⁻⟩ − ‖H⁺‖² and the mean variant on hand-made sums; bad shapes and counts raise."""
    hp = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    hm = torch.tensor([[2.0, 0.0], [3.0, 0.0]])
    n_p, n_m = torch.tensor([2, 1]), torch.tensor([4, 3])
    ches, norm = ches_from_sums(hp, n_p, hm, n_m)
    assert ches.tolist() == [2.0 - 5.0, 9.0 - 9.0]
    assert norm.tolist() == [pytest.approx(0.5 * 0.5 + 0 - 1.25), pytest.approx(3.0 - 9.0)]
    with pytest.raises(ValueError, match="sum_chosen"):
        ches_from_sums(hp, n_p, hm[:1], n_m)
    with pytest.raises(ValueError, match="n >= 1"):
        ches_from_sums(hp, torch.tensor([0, 1]), hm, n_m)


def test_ches_scores_validates(raw):
    model, tok = raw
    good = ([1, 5, 6, 2], 2)
    with pytest.raises(ValueError, match="pairs must not be empty"):
        ches_scores(model, [], tok.pad_id)
    with pytest.raises(ValueError, match="batch_size"):
        ches_scores(model, [(good, good)], tok.pad_id, batch_size=0)
    with pytest.raises(ValueError, match="side"):
        ches_scores(model, [(good, good)], tok.pad_id, side="middle")
    with pytest.raises(ValueError, match=r"pair 1 \(rejected\)"):
        ches_scores(model, [(good, good), (good, ([1, 5], 2))], tok.pad_id)


# ------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(raw, tmp_path_factory):
    return save_model_dir(raw[0], raw[1], tmp_path_factory.mktemp("m") / "model")


def _write_pairs(path: Path, pairs=PAIRS, extra: bool = True) -> Path:
    lines = []
    for i, (p, c, r) in enumerate(pairs):
        row = {"prompt": p, "chosen": c, "rejected": r}
        if extra:
            row["id"] = f"pair-{i}"
        lines.append(json.dumps(row))
    lines.insert(2, "")  # a blank line is skipped
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(capsys, *argv) -> tuple[int, str]:
    code = ches_main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_cli_scores_every_pair_in_order(raw, model_dir, tmp_path, capsys):
    """One line per pair, in order, with the scores of ches_scores on the loaded model, the
    token counts and the token edit distance of the two responses."""
    model, tok = raw
    pairs = _write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "scores.jsonl"
    code, err = _run(capsys, "--model", model_dir, "--pairs", pairs, "--out", out,
                     "--batch-size", 2, "--threads", 1, "--no-progress")
    assert code == 0, err
    unshared = tmp_path / "unshared.jsonl"
    assert _run(capsys, "--model", model_dir, "--pairs", pairs, "--out", unshared,
                "--no-share-prompt", "--padding", "left", "--no-progress")[0] == 0
    np.testing.assert_allclose([r["ches"] for r in read_ches_scores(unshared)],
                               [r["ches"] for r in read_ches_scores(out)], rtol=1e-5)
    assert "6 pairs scored" in err and "format raw" in err
    rows = read_ches_scores(out)
    assert [r["index"] for r in rows] == list(range(len(PAIRS)))
    assert [r["line"] for r in rows] == [1, 2, 4, 5, 6, 7]  # the blank line 3 skipped
    _, enc = _encoded(tok, "raw")
    expected = ches_scores(model, enc, tok.pad_id)
    np.testing.assert_allclose([r["ches"] for r in rows], expected.ches.numpy(), rtol=1e-5)
    np.testing.assert_allclose([r["ches_normalized"] for r in rows],
                               expected.ches_normalized.numpy(), rtol=1e-5)
    assert [r["n_chosen"] for r in rows] == [len(c) + 1 for _, c, _ in PAIRS]
    assert [r["n_rejected"] for r in rows] == [len(r) + 1 for _, _, r in PAIRS]
    assert rows[3]["ches"] == 0.0 and rows[3]["edit_distance"] == 0
    assert [r["edit_distance"] for r in rows][:2] == [1, 1]  # "46"/"45"; "12"/"121"


def test_cli_resumes_after_a_truncated_output(model_dir, tmp_path, capsys):
    """A rerun keeps the checked lines, re-scores from a truncated last line on, and ends with
    the same file; an output written for other pairs is refused (exit 2)."""
    pairs = _write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "scores.jsonl"
    assert _run(capsys, "--model", model_dir, "--pairs", pairs, "--out", out, "--batch-size",
                1, "--no-progress")[0] == 0
    full = out.read_text().splitlines(keepends=True)
    out.write_text("".join(full[:3]) + full[3][: len(full[3]) // 2])  # cut mid-line
    code, err = _run(capsys, "--model", model_dir, "--pairs", pairs, "--out", out,
                     "--batch-size", 1, "--no-progress")
    assert code == 0, err
    assert "(3 already in" in err
    again = out.read_text().splitlines(keepends=True)
    assert again[:3] == full[:3] and len(again) == len(full)
    for a, b in zip(again, full, strict=True):
        ra, rb = json.loads(a), json.loads(b)
        assert ra["index"] == rb["index"] and ra["pair_sha"] == rb["pair_sha"]
        assert ra["ches"] == pytest.approx(rb["ches"], rel=1e-5, abs=1e-9)
    # a finished file: nothing to do
    code, err = _run(capsys, "--model", model_dir, "--pairs", pairs, "--out", out,
                     "--no-progress")
    assert code == 0 and "(6 already in" in err
    # the same scores file against other pairs
    other = _write_pairs(tmp_path / "other.jsonl", [("5+5=", "10", "11"), *PAIRS[1:]])
    code, err = _run(capsys, "--model", model_dir, "--pairs", other, "--out", out)
    assert code == 2 and "line 1 does not match pair 0" in err and "Traceback" not in err


def test_cli_drop_top_writes_the_rest_in_order(model_dir, tmp_path, capsys):
    """--drop-top F removes the round(F·N) highest-CHES pairs and keeps the others' lines
    verbatim (extra fields included), in order."""
    pairs = _write_pairs(tmp_path / "pairs.jsonl")
    out, kept = tmp_path / "scores.jsonl", tmp_path / "kept.jsonl"
    code, err = _run(capsys, "--model", model_dir, "--pairs", pairs, "--out", out,
                     "--drop-top", 0.3, "--filtered", kept, "--no-progress")
    assert code == 0, err
    rows = read_ches_scores(out)
    top = sorted(range(len(rows)), key=lambda i: -rows[i]["ches"])[:2]  # round(0.3 * 6) = 2
    assert "removed 2 of 6 pairs" in err
    source = [line for line in pairs.read_text().splitlines() if line]
    assert kept.read_text().splitlines() == [s for i, s in enumerate(source) if i not in top]
    code, err = _run(capsys, "--model", model_dir, "--pairs", pairs, "--out", out,
                     "--drop-top", 0.5, "--filtered", kept, "--rank-by", "ches_normalized",
                     "--no-progress")
    assert code == 0 and "removed 3 of 6" in err and len(kept.read_text().splitlines()) == 3


def test_select_top_breaks_ties_by_index():
    assert select_top([1.0, 3.0, 3.0, 2.0, 3.0], 0.4) == [1, 2]
    assert select_top([1.0, 3.0, 3.0, 2.0, 3.0], 0.0) == []
    assert select_top([5.0, 1.0], 0.5) == [0]


@pytest.mark.parametrize("case, message", [
    ("missing", r"pairs.jsonl:2: missing field 'rejected'"),
    ("empty", r"pairs.jsonl:1: field 'chosen' is empty"),
    ("not_json", r"pairs.jsonl:2: not valid JSON"),
    ("list_field", r"pairs.jsonl:1: field 'prompt' must be a non-empty string"),
    ("too_long", r"pairs.jsonl:2 \(chosen\): prompt \+ response is 7\d tokens, longer than "
                 r"the model's context of 64"),
    ("bad_char", r"pairs.jsonl:1 \(chosen\)"),
    ("out_folder", r"--out .* cannot be written: folder .* does not exist"),
    ("out_is_dir", r"--out .* is a directory"),
    ("drop_alone", r"--drop-top and --filtered go together"),
    ("drop_range", r"--drop-top must be a fraction in \[0, 1\)"),
    ("no_pairs_file", r"--pairs .* is not a file"),
    ("bad_model", r"--model"),
    ("chat_without_template", r"no chat template"),
])
def test_cli_bad_input_exit_2_before_the_model_loads(model_dir, tmp_path, capsys,
                                                     monkeypatch, case, message):
    """Each bad input: one line naming the line/argument, exit code 2, no traceback, and the
    model's weights never loaded."""
    import mi_bounds.lm.model

    def refuse(*_a, **_k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(mi_bounds.lm.model, "load_model_dir", refuse)
    good = {"prompt": "1+2=", "chosen": "3", "rejected": "4"}
    rows = {
        "missing": [good, {"prompt": "1+2=", "chosen": "3"}],
        "empty": [{**good, "chosen": ""}],
        "not_json": [good, "{oops"],
        "list_field": [{**good, "prompt": [{"role": "user", "content": "hi"}]}],
        "too_long": [good, {**good, "prompt": "1" * 70}],
        "bad_char": [{**good, "chosen": "Z"}],
    }.get(case, [good])
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "scores.jsonl"
    args = ["--model", model_dir, "--pairs", pairs, "--out", out, "--no-progress"]
    if case == "out_folder":
        args[5] = tmp_path / "nowhere" / "scores.jsonl"
    elif case == "out_is_dir":
        args[5] = tmp_path
    elif case == "drop_alone":
        args += ["--drop-top", "0.1"]
    elif case == "drop_range":
        args += ["--drop-top", "1.5", "--filtered", tmp_path / "f.jsonl"]
    elif case == "no_pairs_file":
        args[3] = tmp_path / "absent.jsonl"
    elif case == "bad_model":
        args[1] = tmp_path / "no-such-model"
    elif case == "chat_without_template":
        args += ["--format", "chat"]
    code, err = _run(capsys, *args)
    assert code == 2
    assert err.startswith("mi-bounds ches: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err
    import re

    assert re.search(message, err), err


def test_cli_on_a_gguf_file_uses_the_chat_template(chat, tmp_path, capsys, monkeypatch):
    """--model FILE.gguf: converted into the cache, scored through the chat template; the
    scores equal ches_scores on the chat-encoded pairs."""
    model, tok, gguf_path = chat
    monkeypatch.setenv("MI_BOUNDS_CACHE", str(tmp_path / "cache"))
    pairs = _write_pairs(tmp_path / "pairs.jsonl", extra=False)
    out = tmp_path / "scores.jsonl"
    code, err = _run(capsys, "--model", gguf_path, "--pairs", pairs, "--out", out,
                     "--padding", "left", "--no-progress")
    assert code == 0, err
    assert "format chat" in err
    _, enc = _encoded(tok, "chat")
    expected = ches_scores(model, enc, tok.pad_id)
    rows = read_ches_scores(out)
    np.testing.assert_allclose([r["ches"] for r in rows], expected.ches.numpy(), rtol=1e-4,
                               atol=1e-6 * float(expected.ches.abs().max()))


def test_registered_as_a_subcommand(capsys):
    from mi_bounds.cli import SUBCOMMANDS
    from mi_bounds.cli import main as cli_main

    assert SUBCOMMANDS["ches"][0] == "mi_bounds.decline.ches_cli:main"
    # mi_bounds.cli.main returns argparse's exit code in-process (0 for --help)
    assert cli_main(["ches", "--help"]) == 0
    assert "--drop-top" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------
# Displacement statistics
# ------------------------------------------------------------------------------------------


def _levenshtein(a, b) -> int:
    """The textbook O(nm) table."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1,
                          d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1][-1]


@settings(max_examples=100)
@given(a=st.lists(st.integers(0, 3), max_size=12), b=st.lists(st.integers(0, 3), max_size=12))
def test_token_edit_distance_equals_the_textbook_table(a, b):
    assert token_edit_distance(a, b) == _levenshtein(a, b)


def test_token_edit_distance_known_values():
    assert token_edit_distance([ord(c) for c in "kitten"], [ord(c) for c in "sitting"]) == 3
    assert token_edit_distance([], [1, 2]) == 2 and token_edit_distance([1, 2], [1, 2]) == 0


def test_rankdata_averages_ties():
    assert rankdata([10.0, 20.0, 10.0, 30.0, 20.0, 20.0]).tolist() == [1.5, 4.0, 1.5, 6.0, 4.0,
                                                                        4.0]


def test_spearman_on_data_with_a_known_rank_correlation():
    """Exact cases: a monotone map gives ρ = 1, a decreasing one −1. A Gaussian pair with
    correlation r has Spearman ρ = (6/π) arcsin(r/2) (Pearson 1907): with r = 0.6 and 4000
    pairs, ρ̂ is within 0.04 of 0.5852 and the 95 % bootstrap interval covers it; with r = 0
    the interval covers 0."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    assert spearman(x, np.exp(3 * x)) == pytest.approx(1.0)
    assert spearman(x, -x**3) == pytest.approx(-1.0)
    n, r = 4000, 0.6
    z = rng.normal(size=(2, n))
    y = r * z[0] + math.sqrt(1 - r**2) * z[1]
    truth = 6 / math.pi * math.asin(r / 2)
    got = spearman_interval(z[0], np.tanh(y), n_boot=400, seed=1)  # ranks ignore the tanh
    assert abs(got["rho"] - truth) < 0.04
    assert got["low"] < truth < got["high"] and got["high"] - got["low"] < 0.08
    assert got["n"] == n and got["n_boot"] == 400
    null = spearman_interval(z[0], z[1], n_boot=400, seed=2)
    assert null["low"] < 0 < null["high"]
    with pytest.raises(ValueError, match="at least 3"):
        spearman([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="one length"):
        spearman([1.0, 2.0, 3.0], [1.0, 2.0])


def test_spearman_replicates_two_level_and_paired():
    """Point values equal :func:`spearman` on the seed means; with one seed and no seed
    variation the replicates' spread matches the pair bootstrap of :func:`spearman_interval`;
    seed noise widens the interval; a planted correlation of one arm and none in the other is
    found, and the paired difference of the two arms is decided the right way."""
    rng = np.random.default_rng(5)
    n, r = 600, 0.6
    z = rng.normal(size=(2, n))
    signal = r * z[0] + math.sqrt(1 - r**2) * z[1]
    x = np.stack([z[0], rng.normal(size=n)])  # a predictor and an unrelated baseline
    arm_a = signal[None, :] + 0.3 * rng.normal(size=(4, n))  # 4 seeds around the signal
    arm_b = rng.normal(size=(3, n))  # 3 seeds, no relation
    rho, reps = spearman_replicates(x, [arm_a, arm_b], n_boot=400, seed=1)
    assert rho.shape == (2, 2) and reps.shape == (400, 2, 2)
    assert rho[0, 0] == pytest.approx(spearman(x[0], arm_a.mean(0)))
    assert rho[1, 1] == pytest.approx(spearman(x[1], arm_b.mean(0)))
    lo, hi = np.quantile(reps[:, 0, 0], [0.025, 0.975])
    assert lo > 0.35 and lo < rho[0, 0] < hi
    lo, hi = np.quantile(reps[:, 0, 1], [0.025, 0.975])
    assert lo < 0 < hi
    d = reps[:, 0, 0] - reps[:, 0, 1]  # paired: the same pairs drawn for both arms
    assert np.quantile(d, 0.025) > 0
    one_seed = signal[None, :]
    _, r1 = spearman_replicates(x[:1], [one_seed], n_boot=400, seed=2)
    ref = spearman_interval(x[0], signal, n_boot=400, seed=2)
    width = np.quantile(r1[:, 0, 0], 0.975) - np.quantile(r1[:, 0, 0], 0.025)
    assert width == pytest.approx(ref["high"] - ref["low"], rel=0.25)
    noisy = signal[None, :] + 2.0 * rng.normal(size=(3, n))
    _, r3 = spearman_replicates(x[:1], [noisy], n_boot=400, seed=2)
    assert r3[:, 0, 0].std() > 1.2 * r1[:, 0, 0].std()
    with pytest.raises(ValueError, match="seeds, 600"):
        spearman_replicates(x, [arm_a[:, :-1]])
    with pytest.raises(ValueError, match="finite"):
        spearman_replicates(x, [np.full((2, n), np.nan)])


def _synthetic_scores(n: int, rng) -> tuple[list[dict], np.ndarray]:
    ches = rng.normal(size=n)
    rows = [{"index": i, "ches": float(c), "ches_normalized": float(c / 3),
             "n_chosen": int(rng.integers(2, 40)), "n_rejected": int(rng.integers(2, 40)),
             "edit_distance": int(rng.integers(0, 30))} for i, c in enumerate(ches)]
    return rows, ches


def test_displacement_predictors_recover_the_planted_correlation():
    """Δ = −(CHES + noise) with a Gaussian pair of correlation 0.8: CHES's ρ with the drop is
    within its interval of (6/π) arcsin(0.4), the unrelated baselines' intervals cover 0, and
    a step-0 margin equal to −Δ gives ρ = 1."""
    rng = np.random.default_rng(3)
    rows, ches = _synthetic_scores(3000, rng)
    noise = rng.normal(size=ches.size) * math.sqrt(1 / 0.8**2 - 1)
    change = -(ches + noise)
    res = displacement_predictors(rows, change, margin0=-change, n_boot=300)
    truth = 6 / math.pi * math.asin(0.4)
    assert res["ches"]["low"] < truth < res["ches"]["high"]
    assert res["ches_normalized"]["rho"] == pytest.approx(res["ches"]["rho"])
    for name in ("n_chosen", "n_rejected", "edit_distance"):
        assert res[name]["low"] < 0 < res[name]["high"], name
    assert res["margin0"]["rho"] == pytest.approx(1.0)
    by_index = {i: float(v) for i, v in enumerate(change)}
    assert displacement_predictors(rows, by_index, n_boot=50)["ches"]["rho"] == res["ches"]["rho"]
    with pytest.raises(ValueError, match="one value per scored pair"):
        displacement_predictors(rows, change[:-1])
    with pytest.raises(ValueError, match="no value for pair"):
        displacement_predictors(rows, {0: 1.0})


def test_top_displaced_pairs_with_their_ches_rank(tmp_path):
    rows = [{"index": i, "ches": c, "ches_normalized": c} for i, c in
            enumerate([0.5, 3.0, -1.0, 3.0, 2.0])]
    change = [-0.1, -2.0, 0.3, -2.0, -0.5]
    top = top_displaced_pairs(change, rows, k=3)
    assert [t["index"] for t in top] == [1, 3, 4]  # ties in the drop: lower index first
    assert [t["ches_rank"] for t in top] == [1, 2, 3]
    assert top[0]["chosen_change"] == -2.0 and top[2]["ches"] == 2.0
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_ches_scores(path) == rows
    path.write_text(json.dumps(rows[1]) + "\n")
    with pytest.raises(ValueError, match="index 1, expected 0"):
        read_ches_scores(path)
    with pytest.raises(ValueError, match="k must be"):
        top_displaced_pairs(change, rows, k=0)


# ------------------------------------------------------------------------------------------
# diagnose points to the pairs most responsible (per-pair align logs)
# ------------------------------------------------------------------------------------------


def _per_pair_result(path, changes):
    """An align result.json with per-pair chosen log-probs over 12 evaluations: pair i moves
    linearly from -10 to -10 + changes[i]."""
    import json

    history = []
    for t in range(12):
        per = [-10.0 + c * t / 11 for c in changes]
        history.append({"step": 10 * t, "train": {"logps/chosen": sum(per) / len(per),
                                                 "logps/chosen/per_pair": per}})
    path.write_text(json.dumps({"loss": "dpo", "seed": 0, "history": history}))
    return path


def test_diagnose_lists_the_most_displaced_pairs_with_their_ches_rank(tmp_path, capsys):
    import json

    from mi_bounds.cli import main as cli_main

    changes = [0.5, -3.0, 1.0, -0.2, -7.0, 0.0]
    res = _per_pair_result(tmp_path / "result.json", changes)
    scores = tmp_path / "ches.jsonl"
    ches = [0.1, 5.0, -1.0, 0.3, 9.0, 0.0]
    scores.write_text("".join(json.dumps({"index": i, "ches": c, "ches_normalized": c / 10})
                              + "\n" for i, c in enumerate(ches)))
    assert cli_main(["diagnose", str(res), "--ches", str(scores), "--top", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    got = [(r["index"], round(r["chosen_change"], 9), r["ches_rank"])
           for r in out["displaced_pairs"]]
    assert got == [(4, -7.0, 1), (1, -3.0, 2)]  # the largest falls; CHES ranked them 1st, 2nd
    assert cli_main(["diagnose", str(res), "--top", "1"]) == 0  # no scores: indices and changes
    text = capsys.readouterr().out
    assert "pair 4: -7.000 nats" in text and "CHES" not in text.split("fell most")[1]


def test_diagnose_ches_needs_a_per_pair_log_and_matching_scores(tmp_path, capsys):
    import json

    from mi_bounds.cli import main as cli_main

    res = _per_pair_result(tmp_path / "result.json", [0.0, -1.0, 1.0])
    scores = tmp_path / "ches.jsonl"
    scores.write_text("".join(json.dumps({"index": i, "ches": 0.0, "ches_normalized": 0.0})
                              + "\n" for i in range(4)))
    assert cli_main(["diagnose", str(res), "--ches", str(scores)]) == 2
    assert "4 pairs, the log 3" in capsys.readouterr().err
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"history": [{"step": s, "train": {"logps/chosen": -s / 10}}
                                             for s in range(12)]}))
    assert cli_main(["diagnose", str(plain), "--ches", str(scores)]) == 2
    assert "no per-pair log" in capsys.readouterr().err
