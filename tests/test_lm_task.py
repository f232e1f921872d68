"""The small-LM path's pieces that need no model: task verifier, prompt sampler, tokenizer,
config validation and the pairs-file reader (errors name the line; nothing is half-written)."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mi_bounds.lm import arithmetic
from mi_bounds.lm import config as lmconfig
from mi_bounds.lm.data import read_pairs_jsonl
from mi_bounds.lm.tokenizer import CharTokenizer, load_tokenizer

# ------------------------------------------------------------------------------------------
# Verifier
# ------------------------------------------------------------------------------------------

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


@given(a=st.integers(1, 10**9 - 1), b=st.integers(1, 10**9 - 1), op=st.sampled_from("+-*"))
def test_verifier_accepts_exactly_the_true_result(a, b, op):
    """verify(prompt, r) holds iff r is the integer result, computed here independently."""
    prompt = arithmetic.make_prompt(a, op, b)
    truth = _OPS[op](a, b)
    assert arithmetic.parse_prompt(prompt) == (a, op, b)
    assert arithmetic.verify(prompt, str(truth))
    assert arithmetic.verify(prompt, f" {truth}\n")  # surrounding whitespace is ignored
    assert not arithmetic.verify(prompt, str(truth + 1))
    assert not arithmetic.verify(prompt, str(truth) + "0")
    assert not arithmetic.verify(prompt, "")
    assert arithmetic.level_of(prompt) == max(len(str(a)), len(str(b)))


@pytest.mark.parametrize("bad", ["", "1+2", "01+2=", "1/2=", "a+b=", "1+2=3", "-1+2="])
def test_non_task_prompts_are_rejected(bad):
    assert arithmetic.parse_prompt(bad) is None
    with pytest.raises(ValueError, match="not an arithmetic task prompt"):
        arithmetic.answer(bad)


def test_make_prompt_validates():
    with pytest.raises(ValueError, match="op"):
        arithmetic.make_prompt(1, "/", 2)
    with pytest.raises(ValueError, match="positive"):
        arithmetic.make_prompt(0, "+", 2)


def test_sample_prompts_levels_uniqueness_and_exclusion():
    rng = random.Random(0)
    excl = arithmetic.sample_prompts(random.Random(1), 20, (1,), (1.0,), "+")
    got = arithmetic.sample_prompts(rng, 300, (1, 2), (1.0, 1.0), "+-", exclude=excl)
    assert len(set(got)) == len(got) == 300
    assert not set(got) & set(excl)
    assert {arithmetic.level_of(p) for p in got} == {1, 2}
    for p in got:
        a, op, b = arithmetic.parse_prompt(p)
        assert op in "+-" and len(str(a)) == len(str(b)) == arithmetic.level_of(p)
    # level 1 with one operator has exactly 81 distinct problems
    assert len(arithmetic.sample_prompts(random.Random(2), 81, (1,), (1.0,), "+")) == 81
    with pytest.raises(ValueError, match="distinct prompts"):
        arithmetic.sample_prompts(random.Random(2), 82, (1,), (1.0,), "+")


# ------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------


def test_char_tokenizer_round_trip_and_save(tmp_path):
    tok = CharTokenizer()
    text = "123+45=168"
    ids = tok.encode(text)
    assert len(ids) == len(text) and min(ids) >= 3
    assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id]) == text
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        tok.encode("1+2=€")
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert isinstance(again, CharTokenizer) and again.encode(text) == ids
    with pytest.raises(ValueError, match="has no tokenizer"):
        load_tokenizer(tmp_path / "nothing")


# ------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------


def test_presets_round_trip_and_unknown_name():
    for name in lmconfig.PRESETS:
        cfg = lmconfig.get_preset(name)
        assert lmconfig.RunConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ValueError, match="cpu-tiny"):
        lmconfig.get_preset("nope")


@pytest.mark.parametrize(
    ("section", "field", "value", "exc"),
    [
        ("model", "hidden_size", 63, ValueError),
        ("model", "num_layers", 0, ValueError),
        ("model", "context", 2.5, TypeError),
        ("task", "levels", (), ValueError),
        ("task", "ops", "+/", ValueError),
        ("task", "level_weights", (1.0,), ValueError),
        ("sample", "k", 1, ValueError),
        ("sample", "heldout_fraction", 1.0, ValueError),
        ("align", "beta", 0.0, ValueError),
        ("align", "losses", (), ValueError),
        ("align", "seeds", (0, 0), ValueError),
        ("align", "lr", float("nan"), ValueError),
    ],
)
def test_config_validation_names_the_field(section, field, value, exc):
    with pytest.raises(exc, match=f"{section}.{field}" if exc is ValueError else field):
        lmconfig.get_preset("cpu-tiny").replace(**{section: {field: value}})


@pytest.mark.parametrize(
    ("section", "field", "value", "want"),
    [
        ("align", "seeds", 0, (0,)),
        ("align", "losses", "dpo", ("dpo",)),
        ("task", "levels", 2, (2,)),
        ("task", "level_weights", 3, (3.0,)),
    ],
)
def test_config_scalar_for_a_list_field_is_one_element(section, field, value, want):
    """Regression : ``--set align.seeds=0`` gave "'int' object is not iterable" and
    ``--set align.losses=dpo`` "unknown loss 'd'" (the string was iterated character by
    character). A scalar given for a list field is a one-element list."""
    cfg = lmconfig.get_preset("cpu-tiny")
    extra = {"level_weights": (1.0,)} if (section, field) == ("task", "levels") else {}
    extra = {"levels": (1,)} if (section, field) == ("task", "level_weights") else extra
    got = cfg.replace(**{section: {field: value, **extra}})
    assert getattr(getattr(got, section), field) == want


@pytest.mark.parametrize(
    ("field", "value"),
    [("seeds", {"a": 1}), ("seeds", 1.5), ("losses", 3), ("losses", ["dpo", 1])],
)
def test_config_list_field_of_the_wrong_type_names_the_field(field, value):
    with pytest.raises(TypeError, match=f"align.{field}"):
        lmconfig.get_preset("cpu-tiny").replace(align={field: value})


@pytest.mark.parametrize(
    ("item", "field", "want"),
    [("align.seeds=0", "seeds", (0,)), ("align.losses=dpo", "losses", ("dpo",)),
     ('align.losses=["dpo","mio"]', "losses", ("dpo", "mio"))],
)
def test_cli_set_scalar_for_a_list_field(tmp_path, item, field, want):
    """The CLI parses ``--set`` into the validated config before any work is done."""
    from mi_bounds.lm import cli

    args = cli._parser().parse_args(["align", "--out", str(tmp_path / "r"), "--set", item])
    assert getattr(cli._config(args).align, field) == want
    assert not (tmp_path / "r").exists()


def test_cli_bad_list_field_exit_code_2_before_any_work(tmp_path, capsys):
    from mi_bounds.lm import cli

    out = tmp_path / "r"
    assert cli.main(["run", "--out", str(out), "--set", 'align.seeds={"a": 1}']) == 2
    assert "align.seeds" in capsys.readouterr().err
    assert not out.exists()


def test_config_rejects_unknown_fields():
    data = lmconfig.get_preset("cpu-tiny").to_dict()
    data["align"]["temperature"] = 1.0
    with pytest.raises(ValueError, match="unknown field"):
        lmconfig.RunConfig.from_dict(data)


# ------------------------------------------------------------------------------------------
# Pairs files
# ------------------------------------------------------------------------------------------

_GOOD = {"prompt": "12+34=", "chosen": "46", "rejected": "45"}


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_read_pairs_good_file_skips_blank_lines(tmp_path):
    p = _write(tmp_path / "p.jsonl", [json.dumps(_GOOD), "", json.dumps({**_GOOD, "x": 1})])
    pairs = read_pairs_jsonl(p, CharTokenizer(), 16)
    assert pairs == [_GOOD, _GOOD]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"prompt": "1+1=", "chosen": "2"}), "missing field 'rejected'"),
        (json.dumps({**_GOOD, "chosen": 46}), "'chosen' must be a non-empty string"),
        (json.dumps({**_GOOD, "rejected": ""}), "'rejected' must be a non-empty string"),
        (json.dumps({**_GOOD, "rejected": "46"}), "identical"),
        (json.dumps({**_GOOD, "prompt": "12€34="}), "not in the tokenizer's vocabulary"),
        (json.dumps({**_GOOD, "prompt": "1" * 20 + "+1="}), "longer than the model's context"),
    ],
)
def test_read_pairs_errors_name_the_line(tmp_path, line, match):
    p = _write(tmp_path / "p.jsonl", [json.dumps(_GOOD), "", line])
    with pytest.raises(ValueError, match=match) as err:
        read_pairs_jsonl(p, CharTokenizer(), 16)
    assert f"{p}:3" in str(err.value)


def test_read_pairs_empty_and_missing(tmp_path):
    with pytest.raises(ValueError, match="no pairs"):
        read_pairs_jsonl(_write(tmp_path / "e.jsonl", ["", "  "]), CharTokenizer(), 16)
    with pytest.raises(ValueError, match="does not exist"):
        read_pairs_jsonl(tmp_path / "missing.jsonl", CharTokenizer(), 16)


# ------------------------------------------------------------------------------------------
# Report table
# ------------------------------------------------------------------------------------------


def test_report_table_shows_an_accuracy_of_zero_as_zero():
    """Regression : the base row printed ``nan`` for an accuracy of exactly 0.0
    (``x or nan``); a missing accuracy (``None``) is ``n/a``."""
    pytest.importorskip("matplotlib")
    from mi_bounds.lm.report import _table_rows

    _, rows = _table_rows({}, {"heldout_greedy": 0.0, "hard_greedy": None})
    assert rows[0][:4] == ["base", "-", "0.000", "n/a"]
