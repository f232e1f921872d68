"""Which pairs displace: the centered hidden embedding similarity (CHES) of a preference pair.

Razin et al., "Unintentional Unalignment: Likelihood Displacement in Direct Preference
Optimization" (ICLR 2025, arXiv 2410.08847), the CHES score and its length-normalised variant.
For a prompt x and responses y⁺ (chosen) and y⁻ (rejected), with h(x, y_<k) ∈ R^H the model's
last hidden state (the input of the LM head) at the position that predicts response token k,

    H(x, y) = Σ_{k=1}^{|y|} h(x, y_<k)                         (sum over the |y| positions)
    CHES(x, y⁺, y⁻)      = ⟨H(x, y⁺), H(x, y⁻)⟩ − ‖H(x, y⁺)‖²  = −⟨H⁺, H⁺ − H⁻⟩
    CHES_norm(x, y⁺, y⁻) = ⟨H⁺/|y⁺|, H⁻/|y⁻|⟩ − ‖H⁺/|y⁺|‖²     (means instead of sums)

The positions are the last prompt token through the second-to-last response token, and the
response is exactly what the small-LM path scores (:mod:`mi_bounds.lm.logps`): the response
tokens and the EOS token, so |y| counts the EOS. A high CHES predicts that DPO lowers log π(y⁺|x)
(docs/THEORY.md, "Which pairs displace: CHES"). y⁺ = y⁻ gives CHES = 0 exactly (one forward
pass serves both, and the score is computed as −⟨H⁺, H⁺ − H⁻⟩).

Computation: no gradients; pairs grouped by length to limit padding. By default the prompt of a
pair goes through the decoder once and both responses continue from its KV cache (the prompt of
a chat model is often most of the sequence); otherwise chosen and rejected sequences go in one
padded forward pass (either padding side: position ids counted over real tokens), identical
sequences computed once. Hidden states are summed in float32, the inner products in float64.
The hidden state is ``model.get_decoder()(...).last_hidden_state``; a model without
``get_decoder`` falls back to ``output_hidden_states=True`` (its last entry).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import NamedTuple

import torch

# everything this module takes from the small-LM path, in one place
from mi_bounds.lm.logps import Batch, pad_sequences, position_ids

__all__ = [
    "ChesScores",
    "ches_from_sums",
    "ches_scores",
    "last_hidden_states",
    "predicting_positions",
    "response_hidden_sums",
]

#: one encoded sequence: (token ids of prompt + response + EOS, number of prompt tokens)
Sequence_ = tuple[Sequence[int], int]


class ChesScores(NamedTuple):
    """Per-pair results of :func:`ches_scores`, each of shape (N,)."""

    #: ⟨H⁺, H⁻⟩ − ‖H⁺‖² (float64)
    ches: torch.Tensor
    #: the same with H/|y| (float64)
    ches_normalized: torch.Tensor
    #: |y⁺|, |y⁻|: scored response tokens, EOS included (long)
    n_chosen: torch.Tensor
    n_rejected: torch.Tensor


def last_hidden_states(model: torch.nn.Module, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden state, the LM head's input: (B, T) ids -> (B, T, H).

    Position ids are counted over real tokens (:func:`mi_bounds.lm.logps.position_ids`), so
    left and right padding give the same states on real tokens.
    """
    pos = position_ids(attention_mask)
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    if decoder is not None:
        return decoder(input_ids=input_ids, attention_mask=attention_mask,
                       position_ids=pos).last_hidden_state
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos,
                output_hidden_states=True)
    return out.hidden_states[-1]


def predicting_positions(batch: Batch) -> torch.Tensor:
    """(B, T) bool: True at position t iff token t + 1 is a scored response token.

    These are the last prompt token through the second-to-last response token (the EOS token
    is the last response token, so its own position is never used).
    """
    scored_next = batch.response_mask[:, 1:] & batch.attention_mask[:, 1:].bool()  # (B, T-1)
    return torch.nn.functional.pad(scored_next, (0, 1), value=False)  # (B, T)


@torch.no_grad()
def response_hidden_sums(model: torch.nn.Module,
                         batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H, n)``: H[b] = Σ_t h_t over the predicting positions of sequence b, (B, H) float32,
    and n[b] their number (= scored response tokens), (B,) long."""
    hidden = last_hidden_states(model, batch.input_ids, batch.attention_mask)  # (B, T, H)
    mask = predicting_positions(batch)  # (B, T)
    sums = (hidden.float() * mask.unsqueeze(-1)).sum(1)  # (B, H), float32 accumulation
    return sums, mask.sum(-1)


def ches_from_sums(sum_chosen: torch.Tensor, n_chosen: torch.Tensor, sum_rejected: torch.Tensor,
                   n_rejected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(CHES, CHES_norm)`` (N,) float64 from the hidden-state sums (N, H) and counts (N,).

    CHES = −⟨H⁺, H⁺ − H⁻⟩ (= ⟨H⁺, H⁻⟩ − ‖H⁺‖², exactly 0 when H⁺ = H⁻);
    CHES_norm = the same with H⁺/n⁺ and H⁻/n⁻.
    """
    if sum_chosen.shape != sum_rejected.shape or sum_chosen.dim() != 2:
        raise ValueError(f"sum_chosen and sum_rejected must both be (N, H), got "
                         f"{tuple(sum_chosen.shape)} and {tuple(sum_rejected.shape)}")
    if (n_chosen < 1).any() or (n_rejected < 1).any():
        raise ValueError("every response needs at least one scored token (n >= 1)")
    hp, hm = sum_chosen.double(), sum_rejected.double()
    ches = -(hp * (hp - hm)).sum(-1)
    mp = hp / n_chosen.double().unsqueeze(-1)
    mm = hm / n_rejected.double().unsqueeze(-1)
    ches_norm = -(mp * (mp - mm)).sum(-1)
    return ches, ches_norm


def _check_sequence(seq: Sequence_, where: str) -> tuple[tuple[int, ...], int]:
    ids, n_prompt = seq
    ids = tuple(int(t) for t in ids)
    if not 1 <= int(n_prompt) < len(ids):
        raise ValueError(f"{where}: n_prompt must be in [1, len(ids)) = [1, {len(ids)}) (a "
                         f"non-empty prompt and at least one response token), got {n_prompt}")
    return ids, int(n_prompt)


@torch.no_grad()
def _shared_prompt_sums(model: torch.nn.Module, prompts: Sequence[tuple[int, ...]],
                        responses: Sequence[Sequence[tuple[int, ...]]],
                        pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden-state sums of R responses per prompt with the prompt computed once.

    The P prompts go left-padded through the decoder with a KV cache; the hidden state of the
    last prompt token (column −1) predicts every response's first token. The cache is repeated
    R times, and the R·P responses without their last token (right-padded, positions counted on
    from each prompt's length) continue from it. Returns sums (P·R, H) float32 and counts
    (P·R,), row p·R + r for response r of prompt p.
    """
    dev = next(model.parameters()).device
    n_resp = len(responses[0])
    width_p = max(len(ids) for ids in prompts)
    p_ids = torch.full((len(prompts), width_p), int(pad_id), dtype=torch.long)
    p_mask = torch.zeros((len(prompts), width_p), dtype=torch.long)
    for i, ids in enumerate(prompts):  # left-padded: every prompt ends at column -1
        p_ids[i, width_p - len(ids) :] = torch.as_tensor(ids, dtype=torch.long)
        p_mask[i, width_p - len(ids) :] = 1
    p_ids, p_mask = p_ids.to(dev), p_mask.to(dev)  # (P, Tp)
    from transformers import DynamicCache

    decoder = model.get_decoder()
    cache = DynamicCache()
    # the cache argument is `cache` in recent transformers, `past_key_values` before
    key = "cache" if "cache" in inspect.signature(decoder.forward).parameters else \
        "past_key_values"
    out = decoder(input_ids=p_ids, attention_mask=p_mask, position_ids=position_ids(p_mask),
                  use_cache=True, **{key: cache})
    last = out.last_hidden_state[:, -1].float().repeat_interleave(n_resp, 0)  # (P·R, H)
    bodies = [r[:-1] for rs in responses for r in rs]  # inputs after the last prompt token
    counts = torch.tensor([len(r) for rs in responses for r in rs], dtype=torch.long)
    width = max(len(b) for b in bodies)
    if width == 0:
        return last, counts
    r_ids = torch.full((len(bodies), width), int(pad_id), dtype=torch.long)
    r_mask = torch.zeros((len(bodies), width), dtype=torch.long)
    for i, b in enumerate(bodies):
        r_ids[i, : len(b)] = torch.as_tensor(b, dtype=torch.long)
        r_mask[i, : len(b)] = 1
    r_ids, r_mask = r_ids.to(dev), r_mask.to(dev)
    cache.batch_repeat_interleave(n_resp)
    full_mask = torch.cat([p_mask.repeat_interleave(n_resp, 0), r_mask], dim=1)
    pos = p_mask.sum(-1).repeat_interleave(n_resp, 0).unsqueeze(-1) + torch.arange(
        width, device=dev)  # (P·R, Tr): positions continue after each prompt
    hidden = decoder(input_ids=r_ids, attention_mask=full_mask, position_ids=pos,
                     use_cache=True, **{key: cache}).last_hidden_state  # (P·R, Tr, H)
    sums = last + (hidden.float() * r_mask.unsqueeze(-1)).sum(1)  # float32 accumulation
    return sums, counts


@torch.no_grad()
def ches_scores(model: torch.nn.Module, pairs: Sequence[tuple[Sequence_, Sequence_]],
                pad_id: int, *, batch_size: int = 16, side: str = "right",
                share_prompt: bool = True,
                device: torch.device | str | None = None) -> ChesScores:
    """CHES and length-normalised CHES of each pair (see the module docstring).

    Args:
        model: a transformers causal LM (``get_decoder()`` or ``output_hidden_states``).
        pairs: ``((chosen_ids, n_prompt), (rejected_ids, n_prompt))`` per pair, the ids being
            prompt + response + EOS as :meth:`mi_bounds.lm.task_format.TaskFormat.encode`
            returns them (the tokens ``ids[n_prompt:]`` are the response).
        pad_id: the padding token id (masked out; any id works).
        batch_size: pairs per forward pass (2 x batch_size sequences at most).
        side: padding side, "right" or "left" (same scores to float round-off).
        share_prompt: compute the prompt once per pair and continue both responses from its
            KV cache (same scores to float round-off; a chat prompt is often most of the
            sequence). Used when every pair's two sequences share their prompt tokens and the
            model has ``get_decoder``; otherwise each sequence is a full forward pass (and
            ``side`` is the padding side).
        device: where the forward passes run (default: the model's device).

    Returns:
        :class:`ChesScores` with fields of shape (N,), in the order of ``pairs``.

    Raises:
        ValueError: no pairs, ``batch_size < 1``, a bad ``side``, or a sequence without a
            prompt token or a response token (the message names the pair).
    """
    if not pairs:
        raise ValueError("pairs must not be empty")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    checked = [(_check_sequence(c, f"pair {i} (chosen)"), _check_sequence(r, f"pair {i} "
                                                                          "(rejected)"))
               for i, (c, r) in enumerate(pairs)]
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    n = len(checked)
    shared = share_prompt and callable(getattr(model, "get_decoder", None)) and all(
        c[1] == r[1] and c[0][: c[1]] == r[0][: r[1]] for c, r in checked)
    hidden = None
    sums = [torch.empty(0)] * 2
    counts = torch.zeros(2, n, dtype=torch.long)
    # longest pairs first, so that a batch holds sequences of similar length
    order = sorted(range(n), key=lambda i: -max(len(checked[i][0][0]), len(checked[i][1][0])))
    for start in range(0, n, batch_size):
        chunk = order[start : start + batch_size]
        if shared:
            h, c = _shared_prompt_sums(
                model, [checked[i][0][0][: checked[i][0][1]] for i in chunk],
                [[seq[0][seq[1]:] for seq in checked[i]] for i in chunk], pad_id)
            rows = [list(range(j, 2 * len(chunk), 2)) for j in (0, 1)]
            for k, i in enumerate(chunk):  # y⁺ = y⁻: one row for both, so CHES = 0 exactly
                if checked[i][0] == checked[i][1]:
                    rows[1][k] = rows[0][k]
        else:
            unique: dict[tuple[tuple[int, ...], int], int] = {}  # sequence -> its row
            rows = [[unique.setdefault(checked[i][j], len(unique)) for i in chunk]
                    for j in (0, 1)]
            batch = pad_sequences(list(unique), pad_id, side=side).to(dev)
            h, c = response_hidden_sums(model, batch)  # (U, H), (U,)
        if hidden is None:
            hidden = h.shape[-1]
            sums = [torch.zeros(n, hidden, dtype=torch.float32) for _ in (0, 1)]
        idx = torch.tensor(chunk)
        for j in (0, 1):
            sums[j][idx] = h[rows[j]].cpu()
            counts[j, idx] = c[rows[j]].cpu()
    ches, ches_norm = ches_from_sums(sums[0], counts[0], sums[1], counts[1])
    return ChesScores(ches, ches_norm, counts[0], counts[1])
