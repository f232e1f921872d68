"""The chat-model task (mi_bounds.lm.chat): the final-integer verifier, prompts through the
chat template of a tokenizer read from a GGUF file, pair encoding, and generation (greedy =
step-by-step argmax; sampling is pure: no top-k truncation)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mi_bounds.lm import arithmetic, chat
from mi_bounds.lm.chat import final_integer, verify_reply
from mi_bounds.lm.model import generate
from mi_bounds.lm.task_format import ChatFormat


@pytest.mark.parametrize(("reply", "value"), [
    ("7 + 5 = 12.", 12),
    ("The answer is 12", 12),
    ("12", 12),
    ("-3", -3),
    ("7 - 10 = -3.", -3),
    ("The answer is -3", -3),
    ("The answer is \u22123", -3),  # Unicode minus
    ("10 - 13 = -3", -3),
    ("10 - 7", 7),
    ("10-7", 7),  # subtraction, not a sign
    ("(3)-2", 2),
    ("1,234", 1234),
    ("The sum is 1,234.", 1234),
    ("12,34", 34),  # not a thousands grouping: two integers
    ("Answer: **12**", 12),
    ("12 is 7+5", 5),  # the last integer counts
    ("12.5", None),  # a fraction is not an integer answer
    ("1,234.5", None),
    ("12.0", None),
    ("no number", None),
    ("twelve", None),
    ("", None),
    ("x2", None),  # digits inside words are not numbers
    ("2nd", None),
    ("v1.2.3", None),
])
def test_final_integer_rule(reply, value):
    assert final_integer(reply) == value


_words = st.text(alphabet="abcxyz =:+*?!\n", max_size=20)


@given(n=st.integers(-10**9, 10**9), head=_words, tail=st.sampled_from(["", ".", "!", " .", "\n"]),
       grouped=st.booleans())
def test_final_integer_recovers_an_integer_written_last(n, head, tail, grouped):
    """For any text without digits, then a space, then n (plain or with , thousands), then
    punctuation: final_integer gives back n."""
    written = f"{n:,}" if grouped else str(n)
    assert final_integer(f"{head} {written}{tail}") == n


@given(a=st.integers(1, 999), b=st.integers(1, 999), op=st.sampled_from("+-*"))
def test_verify_reply_accepts_exactly_the_true_result(a, b, op):
    prompt = arithmetic.make_prompt(a, op, b)
    truth = int(arithmetic.answer(prompt))
    assert verify_reply(prompt, f"{a} {op} {b} = {truth}.")
    assert verify_reply(prompt, f"The answer is {truth}")
    assert not verify_reply(prompt, f"The answer is {truth + 1}")
    # the last integer is b: correct only when b happens to be the result
    assert verify_reply(prompt, f"{truth} is the result of {a}{op}{b}") == (b == truth)
    assert not verify_reply(prompt, "I do not know.")


def test_question():
    assert chat.question("12+34=") == "What is 12+34?"
    assert chat.question("7*8=") == "What is 7*8?"
    with pytest.raises(ValueError, match="not an arithmetic task prompt"):
        chat.question("What is 1+2?")


# ------------------------------------------------------------------------------------------
# With a tokenizer and a model read from a GGUF file
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    from tiny_gguf import write_tiny_llama_gguf

    from mi_bounds.lm.pretrained import load_gguf

    path, _ = write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", seed=0)
    return load_gguf(path)


def test_chat_prompt_through_the_template(tiny):
    """The rendered prompt is the template with the question and the generation prompt; its
    ids are apply_chat_template's own (no extra BOS); a system message replaces the default."""
    _, tok = tiny
    text = chat.chat_text(tok, "12+34=")
    assert text == ("<|im_start|>system\nYou are a tiny test model.<|im_end|>\n"
                    "<|im_start|>user\nWhat is 12+34?<|im_end|>\n<|im_start|>assistant\n")
    messages = [{"role": "user", "content": "What is 12+34?"}]
    reference = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                        return_dict=False)
    assert chat.encode_chat_prompt(tok, "12+34=") == list(reference)
    short = chat.chat_text(tok, "1+2=", system="Answer with a number.")
    assert short.startswith("<|im_start|>system\nAnswer with a number.<|im_end|>")
    assert chat.special_ids(tok) == (2, 2)


def test_encode_chat_pair(tiny):
    _, tok = tiny
    head = chat.encode_chat_prompt(tok, "7+5=")
    ids, n = chat.encode_chat_pair(tok, "7+5=", "7 + 5 = 12.")
    assert n == len(head) and ids[:n] == head
    assert ids[n:] == [*tok.encode("7 + 5 = 12.", add_special_tokens=False), 2]
    assert tok.decode(ids[n:], skip_special_tokens=True) == "7 + 5 = 12."
    gen = [100, 101, 102]  # token ids as generated are kept as they are; EOS not doubled
    assert chat.encode_chat_pair(tok, "7+5=", gen)[0][n:] == [*gen, 2]
    assert chat.encode_chat_pair(tok, "7+5=", [*gen, 2])[0][n:] == [*gen, 2]


def test_character_tokenizer_is_refused():
    from mi_bounds.lm.tokenizer import CharTokenizer

    with pytest.raises(ValueError, match="chat template"):
        chat.chat_text(CharTokenizer(), "1+2=")


def test_greedy_replies_are_the_step_by_step_argmax(tiny):
    """generate(greedy) in the chat format = argmax decoding by hand (to EOS or max_new_tokens),
    for prompts of two token lengths in one call; text is the decoded ids; finished iff EOS
    came."""
    model, tok = tiny
    prompts = ["1+2=", "12+34=", "5+6="]
    got = generate(model, ChatFormat(tok), prompts, max_new_tokens=6, greedy=True)
    for prompt, replies in zip(prompts, got, strict=True):
        assert len(replies) == 1
        ids = chat.encode_chat_prompt(tok, prompt)
        out: list[int] = []
        with torch.no_grad():
            for _ in range(6):
                nxt = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
                if nxt == 2:
                    break
                out.append(nxt)
        reply = replies[0]
        assert reply.ids == out
        assert reply.finished == (len(out) < 6)
        assert reply.text == tok.decode(out, skip_special_tokens=True)


def test_sampling_is_pure_and_reproducible(tiny):
    """T = 1 samples of the first reply token follow the model's full softmax: tokens outside
    its top 50 come at their probability (transformers' default top_k = 50 would give 0), and
    the same seed gives the same samples."""
    model, tok = tiny
    n = 1000
    replies = generate(model, ChatFormat(tok), ["12+34="], max_new_tokens=1, num_samples=n,
                       batch_size=n, seed=1)[0]
    first = torch.tensor([r.ids[0] if r.ids else 2 for r in replies])
    with torch.no_grad():
        ids = torch.tensor([chat.encode_chat_prompt(tok, "12+34=")])
        p = torch.softmax(model(ids).logits[0, -1].double(), -1)
    outside = torch.ones_like(p, dtype=torch.bool)
    outside[p.topk(50).indices] = False
    mass = float(p[outside].sum())
    freq = float(outside[first].double().mean())
    assert mass > 0.1  # the check has power
    assert abs(freq - mass) < 5 * (mass * (1 - mass) / n) ** 0.5
    again = generate(model, ChatFormat(tok), ["12+34="], max_new_tokens=1, num_samples=n,
                     batch_size=n, seed=1)[0]
    assert [r.ids for r in again] == [r.ids for r in replies]


def test_generate_validates(tiny):
    model, tok = tiny
    for kwargs, name in (({"max_new_tokens": 0}, "max_new_tokens"),
                         ({"max_new_tokens": 2, "num_samples": 0}, "num_samples"),
                         ({"max_new_tokens": 2, "temperature": 0.0}, "temperature")):
        with pytest.raises(ValueError, match=name):
            generate(model, ChatFormat(tok), ["1+2="], **kwargs)
