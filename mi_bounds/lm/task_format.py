"""How the arithmetic task meets a model: raw ``a+b=`` strings, or a chat model's template.

Every stage sees the task through one :class:`TaskFormat`, chosen once by :func:`task_format`
from the config's ``task.format`` and the model's tokenizer. Two formats implement it:

* :class:`ArithmeticFormat` (``kind = "raw"``, the character-level Llama): the prompt is
  ``[BOS] a+b=``, the response the answer's characters then EOS, and a response is correct iff it
  *is* the answer (:func:`mi_bounds.lm.arithmetic.verify`); the gold response is the answer
  string.
* :class:`ChatFormat` (``kind = "chat"``, an instruction-tuned model such as SmolLM2): the prompt
  is the user message ``What is a+b?`` rendered by the tokenizer's own chat template with the
  generation prompt (:mod:`mi_bounds.lm.chat`; ``task.system`` sets a system message, ``None``
  keeps the template's default), the response a free-text reply then the tokenizer's EOS token,
  and a reply is correct iff its *last integer* is the answer
  (:func:`mi_bounds.lm.chat.verify_reply`); the gold reply is ``"a + b = c"``.

``task.format = "auto"`` (the default) picks ``chat`` exactly when the tokenizer has a chat
template (``tokenizer.chat_template`` is set: SmolLM2 and other instruction-tuned checkpoints)
and ``raw`` otherwise (the character tokenizer, a base model's tokenizer). In both formats a
reply that does not end with EOS within the token budget (``sample.max_new_tokens``) counts as
incorrect and is never used in a pair; padding uses the tokenizer's pad token (its EOS if it has
none); a pair is scored on the response tokens and the EOS token only. Generation goes through
:func:`mi_bounds.lm.model.generate`, which takes a format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from mi_bounds.lm import arithmetic, chat
from mi_bounds.lm.config import TaskConfig

__all__ = ["FORMATS", "ArithmeticFormat", "ChatFormat", "TaskFormat", "has_chat_template",
           "task_format"]

#: the values of ``task.format``
FORMATS = ("auto", "raw", "chat")

#: the token budget of a chat reply when ``sample.max_new_tokens`` is 0
CHAT_MAX_NEW_TOKENS = 64


class TaskFormat(Protocol):
    """The task in one model's terms: encode, verify, decode (see the module docstring)."""

    #: the name stored in the run directory ("raw" or "chat")
    kind: ClassVar[str]
    #: whether a pair keeps its sampled token ids (``chosen_ids``, ``rejected_ids``) so that the
    #: align stage scores the sequences as sampled (a decode/encode round trip may differ)
    keeps_sampled_ids: ClassVar[bool]
    #: sequences per ``generate`` call on a CPU (:func:`mi_bounds.lm.model.generate`)
    cpu_generation_batch: ClassVar[int]
    tokenizer: Any

    @property
    def pad_id(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of the prompt as the model sees it (BOS or chat template included)."""
        ...

    def encode(self, prompt: str, response: str | Sequence[int]) -> tuple[list[int], int]:
        """``(ids, n_prompt)``: prompt, response and EOS; score ``ids[n_prompt:]``.

        ``response`` is text (encoded on its own, so the boundary is exact) or token ids as
        generated (kept as they are; a trailing EOS is not doubled).
        """
        ...

    def verify(self, prompt: str, response: str) -> bool:
        """Whether a (finished) response to the task prompt is correct."""
        ...

    def gold(self, prompt: str) -> str:
        """The verified response to a task prompt (the chosen response of a gold pair)."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of response ids (special tokens skipped)."""
        ...

    def default_max_new_tokens(self, task: TaskConfig) -> int:
        """The generation budget when ``sample.max_new_tokens`` is 0."""
        ...


def _with_eos(head: list[int], body: Sequence[int], eos: int) -> tuple[list[int], int]:
    """``(head + body + [eos], len(head))``; a body that already ends with EOS keeps one."""
    ids = [int(t) for t in body]
    if not ids or ids[-1] != eos:
        ids.append(eos)
    return head + ids, len(head)


@dataclass(frozen=True)
class ArithmeticFormat:
    """The raw format: ``[BOS] a+b=`` then the exact answer and EOS (module docstring)."""

    kind: ClassVar[str] = "raw"
    keeps_sampled_ids: ClassVar[bool] = False
    cpu_generation_batch: ClassVar[int] = 512
    tokenizer: Any

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_id)

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_id)

    def prompt_ids(self, prompt: str) -> list[int]:
        t = self.tokenizer
        return ([t.bos_id] if t.bos_id is not None else []) + t.encode(prompt)

    def encode(self, prompt: str, response: str | Sequence[int]) -> tuple[list[int], int]:
        """``[BOS] prompt response EOS`` and the prompt's length (BOS included); text is encoded
        on its own (as TRL does), so the boundary is exact."""
        head = self.prompt_ids(prompt)
        if isinstance(response, str):
            return head + self.tokenizer.encode(response) + [self.tokenizer.eos_id], len(head)
        return _with_eos(head, response, self.eos_id)

    def verify(self, prompt: str, response: str) -> bool:
        return arithmetic.verify(prompt, response)

    def gold(self, prompt: str) -> str:
        return arithmetic.answer(prompt)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def default_max_new_tokens(self, task: TaskConfig) -> int:
        """The longest answer of the task plus EOS and one spare token."""
        big = 10 ** max(task.levels) - 1
        return max(len(arithmetic.answer(arithmetic.make_prompt(big, op, big)))
                   for op in task.ops) + 2


@dataclass(frozen=True)
class ChatFormat:
    """The chat format: the question through the chat template, a free-text reply verified on
    its final integer (module docstring; the functions are :mod:`mi_bounds.lm.chat`'s)."""

    kind: ClassVar[str] = "chat"
    keeps_sampled_ids: ClassVar[bool] = True
    #: fewer than the raw format's: longer prompts and a larger vocabulary
    cpu_generation_batch: ClassVar[int] = 64
    tokenizer: Any
    #: the system message (None: the template's default)
    system: str | None = None

    @property
    def pad_id(self) -> int:
        return chat.special_ids(self.tokenizer)[0]

    @property
    def eos_id(self) -> int:
        return chat.special_ids(self.tokenizer)[1]

    def prompt_ids(self, prompt: str) -> list[int]:
        return chat.encode_chat_prompt(self.tokenizer, prompt, system=self.system)

    def encode(self, prompt: str, response: str | Sequence[int]) -> tuple[list[int], int]:
        return chat.encode_chat_pair(self.tokenizer, prompt, response, system=self.system)

    def verify(self, prompt: str, response: str) -> bool:
        return chat.verify_reply(prompt, response)

    def gold(self, prompt: str) -> str:
        return chat.gold_reply(prompt)

    def decode(self, ids: Sequence[int]) -> str:
        return chat.hf_tokenizer(self.tokenizer).decode(list(ids), skip_special_tokens=True)

    def default_max_new_tokens(self, task: TaskConfig) -> int:
        return CHAT_MAX_NEW_TOKENS


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer (a :mod:`mi_bounds.lm.tokenizer` adapter or a transformers
    tokenizer) has a chat template: the test ``task.format = "auto"`` uses."""
    tok = getattr(tokenizer, "tok", tokenizer)
    return bool(getattr(tok, "chat_template", None)) and hasattr(tok, "apply_chat_template")


def task_format(tokenizer: Any, fmt: str = "auto", system: str | None = None) -> TaskFormat:
    """The format of ``task.format`` = ``fmt`` for this tokenizer: :class:`ChatFormat` or
    :class:`ArithmeticFormat`, chosen here once.

    ``"auto"``: chat iff :func:`has_chat_template`. ``"chat"`` with a tokenizer that has no chat
    template is a ``ValueError``; ``system`` is used by the chat format only.
    """
    if fmt not in FORMATS:
        raise ValueError(f"task.format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    chat_ok = has_chat_template(tokenizer)
    if fmt == "chat" and not chat_ok:
        raise ValueError("task.format is 'chat' but the model's tokenizer has no chat template")
    if fmt == "chat" or (fmt == "auto" and chat_ok):
        return ChatFormat(tokenizer, system)
    return ArithmeticFormat(tokenizer)
