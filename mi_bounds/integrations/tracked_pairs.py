"""Preference pairs tracked through a training run: which of them lost chosen likelihood.

TRL logs the chosen log-likelihood per batch (``logps/chosen``), not per pair. For N pairs
(xᵢ, y⁺ᵢ, y⁻ᵢ) chosen by the user — TRL rows with string fields ``prompt``, ``chosen`` and
``rejected``, typically a sample of the train set — :class:`TrackedPairs` scores each chosen
response under the model at the start of training and again later, and gives each pair's change

    Δᵢ = log π_T(y⁺ᵢ|xᵢ) − log π_0(y⁺ᵢ|xᵢ)        (negative: the pair's chosen response was
                                                   displaced),

with the pairs of most negative Δᵢ, each with its CHES and CHES rank when a ``mi-bounds ches``
scores file of the same pairs is given (Razin et al., "Unintentional Unalignment: Likelihood
Displacement in Direct Preference Optimization", ICLR 2025, arXiv 2410.08847: a high CHES
predicts a displaced chosen response; docs/THEORY.md §9). The ranking is
:func:`mi_bounds.decline.displacement.displaced_pairs_report`, as ``mi-bounds diagnose --ches``
prints it for a run with per-pair logs.

Encoding: as ``mi-bounds ches`` encodes a pairs file (:func:`mi_bounds.decline.ches_cli.
encode_pair` with :func:`mi_bounds.lm.task_format.task_format`): the tokenizer's chat template
when it has one (``pair_format="auto"``; ``"chat"`` requires it), else ``[BOS] prompt response
EOS`` (``"raw"``); the scored tokens are the response and the EOS token. TRL itself applies a
chat template only to conversational rows: for plain-string rows ``"raw"`` is the closer
encoding (``[BOS] prompt`` as TRL, the response encoded on its own, then EOS). A scores line's
``pair_sha`` (a hash of the pair's token ids) must match the encoding here, so scores written
for other pairs, another tokenizer, format or system message are refused.

Scoring: :func:`mi_bounds.lm.logps.sequence_logps` (the summed response log-probability of the
small-LM path), no gradients, every module in eval mode (no dropout) and put back in its own mode
afterwards, on the model's device in its own dtype (no autocast), ``batch_size`` sequences per
forward pass. Each scoring costs N forward passes of one sequence; nothing changes training.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from mi_bounds.decline.ches_cli import encode_pair, pair_sha
from mi_bounds.decline.displacement import (
    displaced_pairs_report,
    format_displaced_pairs,
    read_ches_scores,
)
from mi_bounds.lm.data import PAIR_FIELDS, check_pair_row
from mi_bounds.lm.logps import sequence_logps
from mi_bounds.lm.task_format import FORMATS, task_format
from mi_bounds.lm.tokenizer import HFTokenizer

__all__ = ["TrackedPairs", "sharded_weights"]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_rows(pairs: Any) -> list[dict[str, str]]:
    if isinstance(pairs, (str, bytes, Mapping)) or not isinstance(pairs, Iterable):
        raise ValueError("pairs must be a sequence of TRL rows (mappings with string fields "
                         f"{', '.join(PAIR_FIELDS)}), got {type(pairs).__name__}")
    rows = []
    for i, row in enumerate(pairs):
        check_pair_row(row, f"pairs[{i}]")
        rows.append({k: row[k] for k in PAIR_FIELDS})
    if not rows:
        raise ValueError("pairs must hold at least one row, got none")
    return rows


def _check_scores(ches: Any, n: int) -> list[dict[str, Any]]:
    """The score rows of ``ches`` (a scores file's path, or its rows), one per tracked pair."""
    if isinstance(ches, (str, os.PathLike)):
        try:
            scores = read_ches_scores(ches)
        except ValueError as err:
            raise ValueError(f"ches: {err}") from None
    elif isinstance(ches, (bytes, Mapping)) or not isinstance(ches, Iterable):
        raise ValueError("ches must be the path of a `mi-bounds ches` scores file or its rows, "
                         f"got {type(ches).__name__}")
    else:
        scores = list(ches)
    if len(scores) != n:
        raise ValueError(f"ches holds {len(scores)} score rows but pairs holds {n} rows: give "
                         "the scores of exactly the tracked pairs, in their order (`mi-bounds "
                         "ches --pairs` on a file of those rows)")
    for i, row in enumerate(scores):
        if not isinstance(row, Mapping):
            raise ValueError(f"ches[{i}] must be a mapping (a scores line), got "
                             f"{type(row).__name__}")
        value = row.get("ches")
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ValueError(f"ches[{i}] needs a finite number 'ches', got {value!r}")
        if "index" in row and row["index"] != i:
            raise ValueError(f"ches[{i}] has index {row['index']!r}, expected {i}: give the "
                             "scores of exactly the tracked pairs, in their order")
    return [dict(row) for row in scores]


def sharded_weights(model: torch.nn.Module) -> bool:
    """Whether the model's weights are split across processes (DeepSpeed ZeRO-3, FSDP), so that
    a forward pass on one process alone would hang or fail."""
    names = {type(m).__name__ for m in model.modules()}  # FSDP1 wrappers, FSDP2 FSDP<class>
    if any(n == "FullyShardedDataParallel" or n.startswith("FSDP") for n in names):
        return True
    first = next(model.parameters(), None)
    return first is not None and (hasattr(first, "ds_id") or type(first).__name__ == "DTensor")


def _text_tokenizer(tokenizer: Any) -> Any:
    """The :mod:`mi_bounds.lm.tokenizer` interface for ``tokenizer``: a mi-bounds tokenizer as
    it is, a transformers tokenizer (or a processor's) through :class:`HFTokenizer`."""
    if hasattr(tokenizer, "eos_id") and hasattr(tokenizer, "pad_id"):
        return tokenizer
    if not hasattr(tokenizer, "encode") and hasattr(tokenizer, "tokenizer"):
        tokenizer = tokenizer.tokenizer  # a multimodal processor: its text tokenizer
    return HFTokenizer.from_tokenizer(tokenizer)


class TrackedPairs:
    """The chosen log-likelihood of N tracked pairs: at the start, and its change Δᵢ since then
    (see the module docstring).

    Args:
        pairs: TRL rows (mappings with non-empty string fields ``prompt``, ``chosen``,
            ``rejected``; other fields are ignored), e.g. ``train_dataset.select(range(200))``.
        ches: optional CHES of exactly these pairs, in order: the path of a ``mi-bounds ches``
            scores file, or its rows (:func:`~mi_bounds.decline.displacement.read_ches_scores`).
        top: how many of the most-displaced pairs to report.
        pair_format: ``"auto"``, ``"raw"`` or ``"chat"``, as ``mi-bounds ches --format``.
        system: the chat format's system message (``None``: the template's own).
        batch_size: sequences per forward pass.

    Raises:
        ValueError: naming the argument: no rows, a row without one of the three string fields,
            ``ches`` of another length or without a finite ``ches`` per row, ``top`` or
            ``batch_size`` < 1, an unknown ``pair_format``.

    Attributes:
        start_logps: (N,) float64, log π_0(y⁺ᵢ|xᵢ) (after :meth:`start`), and ``start_step``.
        chosen_change: (N,) float64, the latest Δᵢ (after :meth:`measure`), and ``step``.
        displaced: the latest report: the ``top`` pairs of most negative Δᵢ, each a dict with
            ``index`` (position in ``pairs``), ``chosen_change`` and, with ``ches``, ``ches``
            and ``ches_rank`` (1 = the highest CHES of the tracked pairs).
    """

    def __init__(self, pairs: Sequence[Mapping[str, Any]], ches: Any = None, *, top: int = 10,
                 pair_format: str = "auto", system: str | None = None,
                 batch_size: int = 8) -> None:
        self.rows = _check_rows(pairs)
        self.scores = None if ches is None else _check_scores(ches, len(self.rows))
        self.top = _positive_int(top, "top")
        self.batch_size = _positive_int(batch_size, "batch_size")
        if pair_format not in FORMATS:
            raise ValueError(f"pair_format must be one of {', '.join(FORMATS)}, got "
                             f"{pair_format!r}")
        if system is not None and not isinstance(system, str):
            raise ValueError(f"system must be a string or None, got {type(system).__name__}")
        self.pair_format, self.system = pair_format, system
        self._chosen: list[tuple[list[int], int]] | None = None
        self._pad_id = 0
        self.start_logps: NDArray[np.float64] | None = None
        self.start_step: int | None = None
        self.chosen_change: NDArray[np.float64] | None = None
        self.step: int | None = None
        self.displaced: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def started(self) -> bool:
        return self.start_logps is not None

    def encode(self, tokenizer: Any, context: int = sys.maxsize) -> None:
        """Encode the pairs as ``mi-bounds ches`` does; ``ValueError`` naming ``pairs[i]`` for a
        pair that does not encode or fit ``context``, and naming ``ches[i]`` for a scores line
        whose ``pair_sha`` is not this pair's encoding."""
        tok = _text_tokenizer(tokenizer)
        fmt = task_format(tok, self.pair_format, self.system)
        chosen = []
        for i, row in enumerate(self.rows):
            c, r = encode_pair(row, fmt.encode, context, f"pairs[{i}]")
            sha = None if self.scores is None else self.scores[i].get("pair_sha")
            if sha is not None and sha != pair_sha(c, r):
                raise ValueError(
                    f"ches[{i}] (pair_sha {sha}) was not written for pairs[{i}] encoded with "
                    f"this tokenizer and format {fmt.kind!r}: score the tracked pairs with the "
                    "model's tokenizer and the same --format/--system (pair_format, system)")
            chosen.append(c)
        self._chosen, self._pad_id = chosen, fmt.pad_id

    @torch.no_grad()
    def chosen_logps(self, model: torch.nn.Module) -> NDArray[np.float64]:
        """log π(y⁺ᵢ|xᵢ) of every tracked pair under ``model`` now, (N,) float64."""
        if self._chosen is None:
            raise RuntimeError("encode the pairs first (TrackedPairs.encode)")
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            lp = sequence_logps(model, self._chosen, self._pad_id, batch_size=self.batch_size)
        finally:
            for m, training in modes:
                m.training = training
        return lp.double().numpy()

    def start(self, model: torch.nn.Module, tokenizer: Any, step: int = 0) -> None:
        """Encode the pairs (context: the model's ``max_position_embeddings``) and record
        log π_0(y⁺ᵢ|xᵢ) at ``step``."""
        config = getattr(model, "config", None)
        context = int(getattr(config, "max_position_embeddings", 0) or sys.maxsize)
        self.encode(tokenizer, context)
        self.start_logps, self.start_step = self.chosen_logps(model), int(step)
        self.chosen_change = self.displaced = self.step = None

    def measure(self, model: torch.nn.Module, step: int) -> list[dict[str, Any]]:
        """Score the pairs again: Δᵢ since :meth:`start`, and the ``top`` most-displaced pairs
        (stored in ``chosen_change`` and ``displaced``, and returned)."""
        if self.start_logps is None:
            raise RuntimeError("no starting log-likelihoods: call TrackedPairs.start first")
        self.chosen_change = self.chosen_logps(model) - self.start_logps
        self.step = int(step)
        self.displaced = displaced_pairs_report(self.chosen_change, self.scores,
                                                k=min(self.top, len(self)))
        return self.displaced

    def report(self) -> str:
        """The latest :meth:`measure` as text, one line per pair (as ``mi-bounds diagnose``)."""
        if self.displaced is None:
            return "tracked pairs: not measured yet"
        ranks = (f"; CHES rank 1 = highest of the {len(self)}" if self.scores is not None
                 else "")
        return format_displaced_pairs(
            self.displaced, f"tracked pairs whose chosen log-likelihood fell most (step "
            f"{self.step} - step {self.start_step}, {len(self.displaced)} of {len(self)}"
            f"{ranks}):")

    def summary(self) -> dict[str, list[Any]]:
        """The latest report in three lists, for a log entry: ``displaced/pairs`` (indices),
        ``displaced/chosen_change`` and, with CHES, ``displaced/ches_rank``."""
        if self.displaced is None:
            return {}
        out: dict[str, list[Any]] = {
            "displaced/pairs": [r["index"] for r in self.displaced],
            "displaced/chosen_change": [round(r["chosen_change"], 6) for r in self.displaced]}
        if self.scores is not None:
            out["displaced/ches_rank"] = [r["ches_rank"] for r in self.displaced]
        return out
