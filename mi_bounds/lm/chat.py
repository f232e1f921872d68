"""The arithmetic task for chat (instruction-tuned) models: questions through the tokenizer's
chat template, free-text replies verified on their final integer.

A task prompt stays the canonical ``a<op>b=`` string of :mod:`mi_bounds.lm.arithmetic` (levels,
answers, sampling and held-out sets are unchanged); a chat model sees it as the user message
``"What is a<op>b?"`` rendered by its own chat template with the generation prompt (for
SmolLM2: ChatML with its default system message), and its reply ends at the tokenizer's own EOS
token (SmolLM2: ``<|im_end|>``). Padding uses the tokenizer's pad token, else its EOS token.

Verifier rule (:func:`final_integer`, :func:`verify_reply`): the reply's answer is the *last*
integer written in it, and the reply is correct iff that integer equals the exact result.

* An integer is a run of ASCII digits, optionally with thousands separators written as ``,``
  between groups of exactly three digits (``1,234`` is 1234; ``12,34`` is two integers, 12 and
  34). A sentence-final full stop is not a decimal point (``"= 12."`` gives 12).
* A ``-`` (or the Unicode minus ``−``) directly before the digits is a sign unless it directly
  follows a digit, a letter or a closing bracket, where it is subtraction: ``"-3"``,
  ``"= -3"`` and ``"is -3"`` give -3; ``"10-7"`` and ``"(3)-2"`` give 7 and 2; in ``"10 - 7"``
  the minus is not next to the digits, so the answer is 7.
* A number with a fractional part (``12.5``, ``12.0``) is not an integer answer: if the last
  number is one, the reply has no answer. Digits inside a word (``x2``, ``2nd``) are not numbers.
* No number at all (``"twelve"``, ``""``) means no answer, which is incorrect.

So ``"7 + 5 = 12."``, ``"The answer is 12"`` and ``"12"`` are correct for ``7+5=``;
``"12 is 7+5"`` is not (its last integer is 5). Replies cut off at ``max_new_tokens`` are
verified the same way; :class:`mi_bounds.lm.model.Reply` records whether the EOS token came.
The format that uses these functions is :class:`mi_bounds.lm.task_format.ChatFormat`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mi_bounds.lm import arithmetic

__all__ = [
    "QUESTION",
    "chat_text",
    "encode_chat_pair",
    "encode_chat_prompt",
    "final_integer",
    "gold_reply",
    "hf_tokenizer",
    "question",
    "special_ids",
    "user_message",
    "verify_reply",
]

#: the user message for a task prompt ``a<op>b=``
QUESTION = "What is {a}{op}{b}?"

# A number: optional sign, digits (with ,-grouped thousands), optional fraction. Not preceded by
# a letter, digit, underscore or '.', nor followed by a letter, digit or underscore (digits
# inside words and version strings are skipped).
_NUMBER_RE = re.compile(
    r"(?<![\w.])(?P<sign>[-\u2212])?(?P<int>[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)"
    r"(?P<frac>\.[0-9]+)?(?!\w)"
)


def final_integer(text: str) -> int | None:
    """The last integer written in ``text``, or ``None`` (rules in the module docstring)."""
    last = None
    for m in _NUMBER_RE.finditer(text):
        last = m
    if last is None or last.group("frac"):
        return None
    value = int(last.group("int").replace(",", ""))
    # "(3)-2": a minus right after a closing bracket is subtraction (right after a letter or
    # digit, "10-7", the pattern already leaves it out of the number)
    if last.group("sign") and not (last.start() > 0 and text[last.start() - 1] in ")]"):
        value = -value
    return value


def verify_reply(prompt: str, reply: str) -> bool:
    """True iff the final integer of ``reply`` is the exact answer of the task ``prompt``."""
    got = final_integer(reply)
    return got is not None and got == int(arithmetic.answer(prompt))


def question(prompt: str) -> str:
    """The user message for a task prompt: ``question("12+34=") == "What is 12+34?"``."""
    parsed = arithmetic.parse_prompt(prompt)
    if parsed is None:
        raise ValueError(f"not an arithmetic task prompt: {prompt!r} (expected e.g. '12+34=')")
    a, op, b = parsed
    return QUESTION.format(a=a, op=op, b=b)


def user_message(prompt: str) -> str:
    """:func:`question` for a task prompt; any other text (a ``--pairs`` file's prompt) is the
    user message as it is."""
    return question(prompt) if arithmetic.parse_prompt(prompt) is not None else prompt


#: the off-policy "gold" reply to a task prompt ``a<op>b=``
GOLD = "{a} {op} {b} = {c}"


def gold_reply(prompt: str) -> str:
    """The verified reply written as SmolLM2 writes its correct ones: ``"7 + 5 = 12"``."""
    parsed = arithmetic.parse_prompt(prompt)
    if parsed is None:
        raise ValueError(f"not an arithmetic task prompt: {prompt!r} (expected e.g. '12+34=')")
    a, op, b = parsed
    return GOLD.format(a=a, op=op, b=b, c=arithmetic.answer(prompt))


# ----------------------------------------------------------------------------------------------
# Tokenizer side
# ----------------------------------------------------------------------------------------------


def hf_tokenizer(tokenizer: Any) -> Any:
    """The transformers tokenizer behind ``tokenizer`` (a :class:`mi_bounds.lm.tokenizer.
    HFTokenizer` adapter or a transformers tokenizer); ``ValueError`` if it has no chat
    template (e.g. the character tokenizer)."""
    tok = getattr(tokenizer, "tok", tokenizer)
    if not hasattr(tok, "apply_chat_template") or not getattr(tok, "chat_template", None):
        raise ValueError(f"tokenizer {type(tok).__name__} has no chat template: the chat task "
                         "needs a chat model's own tokenizer")
    return tok


def special_ids(tokenizer: Any) -> tuple[int, int]:
    """``(pad_id, eos_id)``: the tokenizer's own pad token (its EOS token if it has none)
    and EOS token; ``ValueError`` if it has no EOS token."""
    tok = getattr(tokenizer, "tok", tokenizer)
    if tok.eos_token_id is None:
        raise ValueError(f"tokenizer {type(tok).__name__} has no EOS token")
    eos = int(tok.eos_token_id)
    return (eos if tok.pad_token_id is None else int(tok.pad_token_id)), eos


def chat_text(tokenizer: Any, prompt: str, *, system: str | None = None) -> str:
    """The chat template rendered for the task prompt, ending with the generation prompt.

    ``system`` adds a system message; ``None`` keeps the template's default (if any).
    """
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": user_message(prompt)})
    return hf_tokenizer(tokenizer).apply_chat_template(messages, tokenize=False,
                                                       add_generation_prompt=True)


def encode_chat_prompt(tokenizer: Any, prompt: str, *, system: str | None = None) -> list[int]:
    """Token ids of :func:`chat_text` (the template writes its own special tokens, so none are
    added: no second BOS)."""
    tok = hf_tokenizer(tokenizer)
    return list(tok.encode(chat_text(tok, prompt, system=system), add_special_tokens=False))


def encode_chat_pair(
    tokenizer: Any, prompt: str, response: str | Sequence[int], *, system: str | None = None
) -> tuple[list[int], int]:
    """``(ids, n_prompt)``: chat prompt ids + response ids + EOS, and the prompt's length.

    ``response`` is the reply's text (encoded on its own, so the boundary is exact) or its
    token ids as generated (kept as they are: re-encoding decoded text need not give the same
    tokens); a trailing EOS is not doubled. Score tokens ``ids[n_prompt:]`` (the EOS included).
    """
    head = encode_chat_prompt(tokenizer, prompt, system=system)
    _, eos = special_ids(tokenizer)
    if isinstance(response, str):
        body = list(hf_tokenizer(tokenizer).encode(response, add_special_tokens=False))
    else:
        body = [int(t) for t in response]
    if not body or body[-1] != eos:
        body.append(eos)
    return head + body, len(head)
