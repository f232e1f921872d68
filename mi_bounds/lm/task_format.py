"""How the arithmetic task meets a model: raw ``a+b=`` strings, or a chat model's template.

Every stage sees the task through one :class:`TaskFormat`, chosen by :func:`task_format` from
the config's ``task.format`` and the model's tokenizer:

* ``raw`` (the character-level Llama): the prompt is ``[BOS] a+b=``, the response the answer's
  characters then EOS, and a response is correct iff it *is* the answer
  (:func:`mi_bounds.lm.task.verify`); the gold response is the answer string.
* ``chat`` (an instruction-tuned model such as SmolLM2): the prompt is the user message
  ``What is a+b?`` rendered by the tokenizer's own chat template with the generation prompt
  (:mod:`mi_bounds.lm.chat`; ``task.system`` sets a system message, ``None`` keeps the
  template's default), the response a free-text reply then the tokenizer's EOS token, and a
  reply is correct iff its *last integer* is the answer (:func:`mi_bounds.lm.chat.verify_reply`);
  the gold reply is ``"a + b = c"``.

``task.format = "auto"`` (the default) picks ``chat`` exactly when the tokenizer has a chat
template (``tokenizer.chat_template`` is set: SmolLM2 and other instruction-tuned checkpoints)
and ``raw`` otherwise (the character tokenizer, a base model's tokenizer). In both formats a
reply that does not end with EOS within the token budget (``sample.max_new_tokens``) counts as
incorrect and is never used in a pair; padding uses the tokenizer's pad token (its EOS if it has
none); a pair is scored on the response tokens and the EOS token only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mi_bounds.lm import chat
from mi_bounds.lm import task as arith
from mi_bounds.lm.chat import Reply
from mi_bounds.lm.model import encode_pair_sequences, generate_ids

__all__ = ["FORMATS", "Reply", "TaskFormat", "has_chat_template", "task_format"]

#: the values of ``task.format``
FORMATS = ("auto", "raw", "chat")

#: the token budget of a chat reply when ``sample.max_new_tokens`` is 0
CHAT_MAX_NEW_TOKENS = 64


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer (a :mod:`mi_bounds.lm.tokenizer` adapter or a transformers
    tokenizer) has a chat template: the test ``task.format = "auto"`` uses."""
    tok = getattr(tokenizer, "tok", tokenizer)
    return bool(getattr(tok, "chat_template", None)) and hasattr(tok, "apply_chat_template")


@dataclass
class TaskFormat:
    """The task in one model's terms: encode, generate, verify (see the module docstring)."""

    #: "raw" or "chat"
    kind: str
    tokenizer: Any
    #: chat only: the system message (None: the template's default)
    system: str | None = None

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_id)

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_id)

    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of the prompt as the model sees it (BOS or chat template included)."""
        if self.kind == "chat":
            return chat.encode_chat_prompt(self.tokenizer, prompt, system=self.system)
        t = self.tokenizer
        return ([t.bos_id] if t.bos_id is not None else []) + t.encode(prompt)

    def encode(self, prompt: str, response: str | Sequence[int]) -> tuple[list[int], int]:
        """``(ids, n_prompt)``: prompt, response and EOS; score ``ids[n_prompt:]``.

        ``response`` is text (encoded on its own, so the boundary is exact) or token ids as
        generated (kept as they are; a trailing EOS is not doubled).
        """
        if self.kind == "chat":
            return chat.encode_chat_pair(self.tokenizer, prompt, response, system=self.system)
        if isinstance(response, str):
            return encode_pair_sequences(self.tokenizer, prompt, response)
        head = self.prompt_ids(prompt)
        body = [int(t) for t in response]
        if not body or body[-1] != self.eos_id:
            body.append(self.eos_id)
        return head + body, len(head)

    def verify(self, prompt: str, response: str) -> bool:
        """Whether a (finished) response to the task prompt is correct."""
        if self.kind == "chat":
            return chat.verify_reply(prompt, response)
        return arith.verify(prompt, response)

    def gold(self, prompt: str) -> str:
        """The verified response to a task prompt (the chosen response of a gold pair)."""
        return chat.gold_reply(prompt) if self.kind == "chat" else arith.answer(prompt)

    def replies(self, model: torch.nn.Module, prompts: Sequence[str], *, max_new_tokens: int,
                num_samples: int = 1, greedy: bool = False, temperature: float = 1.0,
                seed: int = 0, device: torch.device | None = None,
                batch_size: int | None = None) -> list[list[Reply]]:
        """``out[i][j]``: response j to prompt i (:func:`mi_bounds.lm.model.generate_ids`:
        greedy, or exact samples at ``temperature``), with its text, ids and ``finished``."""
        rows = generate_ids(model, [self.prompt_ids(p) for p in prompts], eos_id=self.eos_id,
                            pad_id=self.pad_id, max_new_tokens=max_new_tokens,
                            num_samples=num_samples, greedy=greedy, temperature=temperature,
                            seed=seed, device=device,
                            batch_size=batch_size or self._generation_batch(model, device))
        return [[Reply(self.decode(ids), ids, fin) for ids, fin in row] for row in rows]

    def _generation_batch(self, model: torch.nn.Module, device: torch.device | None) -> int:
        """Sequences per ``generate`` call: 512 (raw) or 64 (chat, longer prompts and a
        large vocabulary) on CPU; 1024 on a GPU, where generation is launch-bound."""
        dev = device or next(model.parameters()).device
        if torch.device(dev).type == "cuda":
            return 1024
        return 64 if self.kind == "chat" else 512

    def decode(self, ids: Sequence[int]) -> str:
        """Text of response ids (special tokens skipped)."""
        if self.kind == "chat":
            return chat.hf_tokenizer(self.tokenizer).decode(list(ids), skip_special_tokens=True)
        return self.tokenizer.decode(ids)

    def sample_sequences(self, model: torch.nn.Module, prompts: Sequence[str], *,
                         max_new_tokens: int, num_samples: int, seed: int,
                         device: torch.device | None = None) -> list[tuple[list[int], int]]:
        """``num_samples`` exact samples of π (T = 1) per prompt as ``(ids, n_prompt)``:
        prompt, response and EOS when EOS came, else prompt and the ``max_new_tokens`` tokens
        (the event "the response starts with these tokens"). Ids as sampled (no round trip)."""
        heads = [self.prompt_ids(p) for p in prompts]
        rows = generate_ids(model, heads, eos_id=self.eos_id, pad_id=self.pad_id,
                            max_new_tokens=max_new_tokens, num_samples=num_samples, seed=seed,
                            device=device, batch_size=self._generation_batch(model, device))
        return [(head + ids + ([self.eos_id] if fin else []), len(head))
                for head, row in zip(heads, rows, strict=True) for ids, fin in row]


def task_format(tokenizer: Any, fmt: str = "auto", system: str | None = None) -> TaskFormat:
    """The :class:`TaskFormat` of ``task.format`` = ``fmt`` for this tokenizer.

    ``"auto"``: chat iff :func:`has_chat_template`. ``"chat"`` with a tokenizer that has no chat
    template is a ``ValueError``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"task.format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    chat_ok = has_chat_template(tokenizer)
    if fmt == "chat" and not chat_ok:
        raise ValueError("task.format is 'chat' but the model's tokenizer has no chat template")
    kind = "chat" if (fmt == "chat" or (fmt == "auto" and chat_ok)) else "raw"
    return TaskFormat(kind, tokenizer, system if kind == "chat" else None)
