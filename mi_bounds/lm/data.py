"""Preference pairs: reading and validating a user's JSONL file, and length checks.

A pairs file has one JSON object per line with string fields ``prompt``, ``chosen`` and
``rejected`` (other fields are kept but ignored); blank lines are skipped. Every error names the
file and the 1-based line number, and the whole file is validated before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mi_bounds.lm.tokenizer import Tokenizer

__all__ = ["PAIR_FIELDS", "check_fits", "check_pair_row", "iter_pair_rows", "read_pairs_jsonl",
           "sequence_length"]

#: the fields every line of a pairs file has (TRL's plain preference format)
PAIR_FIELDS = ("prompt", "chosen", "rejected")
_FIELDS = PAIR_FIELDS


def iter_pair_rows(path: Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``(line number, line, row)`` for every non-blank line of a pairs JSONL file whose row is
    an object with the three :data:`PAIR_FIELDS` as non-empty strings (the checks every reader
    of pairs makes); ``ValueError`` naming ``FILE:LINE`` otherwise. The caller checks that the
    file exists and adds its own checks (tokenizer, context, identical responses)."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
            check_pair_row(row, where, "a JSON object")
            yield lineno, line, row


def check_pair_row(row: Any, where: str, kind: str = "a mapping") -> None:
    """``ValueError`` naming ``where`` unless ``row`` is a mapping whose three
    :data:`PAIR_FIELDS` are non-empty strings (``kind`` says what was expected in the message).
    """
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected {kind} with fields "
                         f"{', '.join(PAIR_FIELDS)}, got {type(row).__name__}")
    for name in PAIR_FIELDS:
        if name not in row:
            raise ValueError(f"{where}: missing field {name!r}")
        if not isinstance(row[name], str):
            raise ValueError(f"{where}: field {name!r} must be a non-empty string "
                             f"(TRL's conversational format is not read), got "
                             f"{type(row[name]).__name__}")
        if not row[name]:
            raise ValueError(f"{where}: field {name!r} is empty ({name!r} must be a "
                             "non-empty string)")


def sequence_length(tokenizer: Tokenizer, prompt: str, response: str) -> int:
    """Tokens of ``[BOS] prompt response EOS``."""
    bos = 1 if tokenizer.bos_id is not None else 0
    return bos + len(tokenizer.encode(prompt)) + len(tokenizer.encode(response)) + 1


def check_fits(tokenizer: Tokenizer, prompt: str, response: str, context: int, where: str) -> None:
    """``ValueError`` naming ``where`` if the sequence does not fit the model's context."""
    n = sequence_length(tokenizer, prompt, response)
    if n > context:
        raise ValueError(f"{where}: prompt + response is {n} tokens, longer than the model's "
                         f"context of {context} tokens")


def read_pairs_jsonl(path: str | Path, tokenizer: Tokenizer, context: int, *,
                     encode: Callable[[str, str], tuple[list[int], int]] | None = None,
                     ) -> list[dict[str, Any]]:
    """Read and validate a pairs file; returns ``[{"prompt", "chosen", "rejected"}, ...]``.

    ``encode(prompt, response) -> (ids, n_prompt)`` is how the run will tokenise a pair (a chat
    model's template, :meth:`mi_bounds.lm.task_format.TaskFormat.encode`); the default is
    ``[BOS] prompt response EOS``.

    Raises:
        ValueError: the file is missing or empty (no pairs), a line is not a JSON object, a field
            is missing or not a non-empty string, chosen equals rejected, a character is not in
            the tokenizer's vocabulary, or a sequence is longer than ``context``. The message
            names the line number.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pairs file {str(path)!r} does not exist")
    pairs: list[dict[str, Any]] = []
    for lineno, _, row in iter_pair_rows(path):
        where = f"{path}:{lineno}"
        if row["chosen"] == row["rejected"]:
            raise ValueError(f"{where}: chosen and rejected are identical")
        for name in _FIELDS:
            try:
                tokenizer.encode(row[name])
            except ValueError as err:
                raise ValueError(f"{where}: field {name!r}: {err}") from None
        for name in ("chosen", "rejected"):
            if encode is None:
                check_fits(tokenizer, row["prompt"], row[name], context, f"{where} ({name})")
            elif len(encode(row["prompt"], row[name])[0]) > context:
                raise ValueError(f"{where} ({name}): prompt + response is longer than the "
                                 f"model's context of {context} tokens")
        pairs.append({k: row[k] for k in _FIELDS})
    if not pairs:
        raise ValueError(f"pairs file {str(path)!r} holds no pairs (empty pair set)")
    return pairs
