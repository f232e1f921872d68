"""Sequence log-probabilities of response tokens only, with logits computed only where needed.

For a sequence ``x_1..x_T`` whose tokens ``x_{s+1}..x_T`` are the response (``s`` prompt tokens,
the EOS token included in the response),

    log pi(y | x) = sum_{t = s}^{T-1} log softmax(W h_t)[x_{t+1}],

where ``h_t`` is the decoder's last hidden state at position ``t`` and ``W`` the LM head. Only
the rows ``h_t`` that score a response token go through the head: for a (B, T) batch with N
scored tokens the head costs N x V instead of B x T x V (V = 49,152 for SmolLM2, where the
full-logits head and its backward dominate a step). Prompt and padding positions are masked.

Padding may be on either side: position ids are counted over real tokens
(``cumsum(attention_mask) - 1``), so a left-padded, a right-padded and an unpadded sequence get
the same log-probability (to float round-off).

Used for the implicit critic ``T = beta (log pi_theta(y|x) - log pi_ref(y|x))`` of
:mod:`mi_bounds.preference` (docs/THEORY.md §2): chosen and rejected sequences go in one batch.

The batch itself lives here too (:class:`Batch`, :func:`pad_sequences`): every stage builds its
batches with :func:`pad_sequences` from ``(ids, n_prompt)`` sequences (a task format's
:meth:`~mi_bounds.lm.task_format.TaskFormat.encode`) and scores them with
:func:`response_logps` (:func:`sequence_logps`: a list of sequences, batch by batch, no
gradients); the base stage trains on the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["Batch", "pad_sequences", "position_ids", "response_logps", "sequence_logps"]

# config attributes of models whose logits are not just `lm_head(hidden)` (soft-capping,
# scaling): those take the full-logits path
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling",
                         "output_multiplier_scale", "mup_width_scale")


class Batch:
    """Padded token ids with a mask of the response tokens whose log-prob is scored."""

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 response_mask: torch.Tensor) -> None:
        self.input_ids = input_ids  # (B, T) long
        self.attention_mask = attention_mask  # (B, T) long, 1 on real tokens
        self.response_mask = response_mask  # (B, T) bool, True on scored response tokens

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device),
                     self.response_mask.to(device))

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def n_slots(self) -> int:
        return self.input_ids.numel()


def pad_sequences(seqs: Sequence[tuple[Sequence[int], int]], pad_id: int, *,
                  side: str = "right") -> Batch:
    """Pad ``(ids, n_prompt)`` sequences to the longest one, on the ``side`` ("right"|"left").

    ``response_mask`` is True on ``ids[n_prompt:]`` (the scored tokens) of each sequence.
    Right padding (the default) pads each batch only to its own longest sequence.
    """
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    if not seqs:
        raise ValueError("seqs must not be empty")
    width = max(len(ids) for ids, _ in seqs)
    input_ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    response = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (ids, n_prompt) in enumerate(seqs):
        if not 1 <= n_prompt < len(ids):
            raise ValueError(f"sequence {i}: n_prompt must be in [1, len(ids)) = [1, {len(ids)}), "
                             f"got {n_prompt}")
        start = 0 if side == "right" else width - len(ids)
        input_ids[i, start : start + len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
        attention[i, start : start + len(ids)] = 1
        response[i, start + n_prompt : start + len(ids)] = True
    return Batch(input_ids, attention, response)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens: (B, T) mask -> (B, T) long, 0 on leading padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _plain_head(model: torch.nn.Module) -> bool:
    config = getattr(model, "config", None)
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in _LOGIT_POSTPROCESSING):
        return False
    return hasattr(model, "get_decoder") and model.get_output_embeddings() is not None


def response_logps(model: torch.nn.Module, batch: Batch, *, average: bool = False,
                   full_logits: bool = False) -> torch.Tensor:
    """log pi(response | prompt) per sequence: (B, T) batch -> (B,) float32 (``average``: the
    mean over response tokens instead of the sum).

    ``batch`` holds ``input_ids``, ``attention_mask`` and ``response_mask`` (B, T), padded on
    either side (:func:`pad_sequences`). Logits are
    computed only at the positions that score a response token, unless ``full_logits`` (the
    naive path: logits everywhere, then masked) or the model post-processes its logits.
    """
    ids, attn = batch.input_ids, batch.attention_mask
    scored = batch.response_mask[:, 1:] & attn[:, 1:].bool()  # (B, T-1): target t+1 is scored
    targets = ids[:, 1:]  # (B, T-1)
    pos = position_ids(attn)
    if full_logits or not _plain_head(model):
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits
        vocab = logits.shape[-1]
        # flat (B*(T-1), V) rows: float32 cross-entropy over a transposed (B, V, T) layout is
        # ~30x less accurate on CPU (about 1e-4 nats per token at V = 49,152)
        token = -F.cross_entropy(logits[:, :-1].float().reshape(-1, vocab), targets.reshape(-1),
                                 reduction="none").view_as(targets)  # (B, T-1)
        total = token.masked_fill(~scored, 0.0).sum(-1)
    else:
        hidden = model.get_decoder()(input_ids=ids, attention_mask=attn,
                                     position_ids=pos).last_hidden_state  # (B, T, H)
        rows, cols = scored.nonzero(as_tuple=True)  # the N scored (sequence, position) pairs
        logits = model.get_output_embeddings()(hidden[rows, cols]).float()  # (N, V)
        token = -F.cross_entropy(logits, targets[rows, cols], reduction="none")  # (N,)
        total = torch.zeros(ids.shape[0], dtype=token.dtype, device=token.device)
        total = total.index_add(0, rows, token)
    if average:
        return total / scored.sum(-1).clamp(min=1)
    return total


@torch.no_grad()
def sequence_logps(model: torch.nn.Module, seqs: Sequence[tuple[Sequence[int], int]],
                   pad_id: int, *, batch_size: int,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """log pi(response | prompt) of each ``(ids, n_prompt)`` sequence, (N,) float32 on the CPU:
    :func:`response_logps` on right-padded batches of ``batch_size`` sequences, in order, without
    gradients, on ``device`` (default: the model's). The caller sets the model's mode (``eval``
    for no dropout) and any autocast."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not seqs:
        return torch.zeros(0)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    out = []
    for s in range(0, len(seqs), batch_size):
        batch = pad_sequences(seqs[s : s + batch_size], pad_id).to(dev)
        out.append(response_logps(model, batch).float().cpu())
    return torch.cat(out)
