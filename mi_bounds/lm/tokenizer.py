"""Tokenizers of the small-LM path: a character-level one built locally, or a checkpoint's own.

The character tokenizer is saved with the model as ``char_tokenizer.json``; a Hugging Face
checkpoint directory (``--model PATH``) brings its own tokenizer files, loaded with
``AutoTokenizer.from_pretrained(PATH, local_files_only=True)``. Both expose the same small
interface (:class:`CharTokenizer` is the reference): ``encode``, ``decode``, ``pad_id``,
``bos_id`` (may be ``None``), ``eos_id``, ``save``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "CHAR_TOKENIZER_FILE",
    "CharTokenizer",
    "HFTokenizer",
    "Tokenizer",
    "has_tokenizer",
    "load_tokenizer",
]

CHAR_TOKENIZER_FILE = "char_tokenizer.json"
_HF_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
#: characters of the default vocabulary: the task alphabet plus a few for users' own text
DEFAULT_CHARS = "0123456789+-*=., ?abcdefghijklmnopqrstuvwxyz"
SPECIALS = ("<pad>", "<bos>", "<eos>")


class Tokenizer(Protocol):
    pad_id: int
    bos_id: int | None
    eos_id: int

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def save(self, directory: str | Path) -> None: ...


class CharTokenizer:
    """One token per character, plus ``<pad>`` (0), ``<bos>`` (1) and ``<eos>`` (2).

    ``encode`` raises ``ValueError`` naming the first character not in the vocabulary.
    """

    def __init__(self, chars: str = DEFAULT_CHARS) -> None:
        if len(set(chars)) != len(chars):
            raise ValueError("chars must not repeat")
        self.chars = chars
        self.itos = list(SPECIALS) + list(chars)
        self.stoi = {c: i + len(SPECIALS) for i, c in enumerate(chars)}
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} is not in the tokenizer's vocabulary "
                             f"({self.chars!r})") from None

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.itos[i] for i in ids if i >= len(SPECIALS))

    def save(self, directory: str | Path) -> None:
        data = {"type": "char", "chars": self.chars, "specials": list(SPECIALS)}
        (Path(directory) / CHAR_TOKENIZER_FILE).write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> CharTokenizer:
        path = Path(directory) / CHAR_TOKENIZER_FILE
        data = json.loads(path.read_text())
        if data.get("type") != "char" or list(data.get("specials", [])) != list(SPECIALS):
            raise ValueError(f"{path} is not a mi-bounds character tokenizer")
        return cls(data["chars"])


class HFTokenizer:
    """Adapter for a Hugging Face tokenizer stored in a local checkpoint directory (or one
    already loaded: :meth:`from_tokenizer`)."""

    def __init__(self, directory: str | Path) -> None:
        from transformers import AutoTokenizer

        self._adopt(AutoTokenizer.from_pretrained(str(directory), local_files_only=True),
                    f"the tokenizer in {directory}")

    @classmethod
    def from_tokenizer(cls, tok: Any) -> HFTokenizer:
        """The adapter around a loaded transformers tokenizer (e.g. a trainer's
        ``processing_class``); ``ValueError`` if it has no EOS token."""
        adapter = cls.__new__(cls)
        adapter._adopt(tok, f"tokenizer {type(tok).__name__}")
        return adapter

    def _adopt(self, tok: Any, what: str) -> None:
        self.tok = tok
        if self.tok.eos_token_id is None:
            raise ValueError(f"{what} has no EOS token")
        self.eos_id = int(self.tok.eos_token_id)
        self.bos_id = None if self.tok.bos_token_id is None else int(self.tok.bos_token_id)
        self.pad_id = int(self.tok.pad_token_id if self.tok.pad_token_id is not None
                          else self.eos_id)

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def save(self, directory: str | Path) -> None:
        self.tok.save_pretrained(str(directory))


def has_tokenizer(directory: str | Path) -> bool:
    """Whether ``directory`` holds a tokenizer this package can load."""
    d = Path(directory)
    return (d / CHAR_TOKENIZER_FILE).is_file() or any((d / f).is_file() for f in _HF_FILES)


def load_tokenizer(directory: str | Path) -> CharTokenizer | HFTokenizer:
    """Load the tokenizer saved in a model directory; ``ValueError`` if there is none."""
    d = Path(directory)
    if (d / CHAR_TOKENIZER_FILE).is_file():
        return CharTokenizer.load(d)
    if any((d / f).is_file() for f in _HF_FILES):
        return HFTokenizer(d)
    raise ValueError(
        f"model directory {str(d)!r} has no tokenizer: expected {CHAR_TOKENIZER_FILE} (mi-bounds) "
        f"or Hugging Face tokenizer files ({', '.join(_HF_FILES)})"
    )
