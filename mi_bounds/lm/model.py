"""Causal LMs for the small-LM path: build from a config, load/save a checkpoint directory,
sequence log-probabilities (chosen and rejected in one forward pass) and generation.

A checkpoint directory holds the transformers model (``config.json`` + safetensors weights) and
its tokenizer (``char_tokenizer.json`` or Hugging Face tokenizer files). Nothing is downloaded:
loading uses ``local_files_only=True``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from mi_bounds.lm.config import ModelConfig
from mi_bounds.lm.tokenizer import CharTokenizer, HFTokenizer, Tokenizer, load_tokenizer

__all__ = [
    "Batch",
    "autocast",
    "build_model",
    "context_length",
    "encode_pair_sequences",
    "generate",
    "load_model_dir",
    "make_batch",
    "n_params",
    "sample_sequences",
    "save_model_dir",
    "sequence_logps",
]


def _quiet_transformers() -> None:
    """No progress bars or info logs from transformers (the stages log what matters)."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def build_model(cfg: ModelConfig, tokenizer: Tokenizer, *, seed: int = 0) -> torch.nn.Module:
    """A fresh Llama-style causal LM (``LlamaForCausalLM``) sized by ``cfg``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _quiet_transformers()
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.context,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_id,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


def load_model_dir(path: str | Path) -> tuple[torch.nn.Module, CharTokenizer | HFTokenizer]:
    """Load ``(model, tokenizer)`` from a local checkpoint directory.

    Raises ``ValueError`` (before loading any weights) if the directory does not exist, holds no
    ``config.json``, or holds no tokenizer.
    """
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    d = Path(path)
    if not d.is_dir():
        raise ValueError(f"model path {str(d)!r} is not a directory")
    if not (d / "config.json").is_file():
        raise ValueError(f"model path {str(d)!r} has no config.json (not a transformers "
                         "checkpoint)")
    tokenizer = load_tokenizer(d)  # raises a clear ValueError if missing
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    # float32 master weights whatever the checkpoint's dtype (bf16 autocast is applied on CUDA);
    # transformers renamed `torch_dtype` to `dtype` in 4.56
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    model = AutoModelForCausalLM.from_pretrained(str(d), local_files_only=True,
                                                 **{key: torch.float32})
    return model, tokenizer


def save_model_dir(model: torch.nn.Module, tokenizer: Tokenizer, path: str | Path) -> Path:
    """Save model and tokenizer to ``path`` atomically (a temporary folder, then a rename)."""
    d = Path(path)
    tmp = d.with_name(d.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp))
    tokenizer.save(tmp)
    if d.exists():
        shutil.rmtree(d)
    os.replace(tmp, d)
    return d


def context_length(model: torch.nn.Module) -> int:
    """The longest sequence (tokens) the model accepts."""
    return int(model.config.max_position_embeddings)


def n_params(model: torch.nn.Module, *, non_embedding: bool = True) -> int:
    """Parameter count; without the (tied) token embedding by default, as used for MFU."""
    total = sum(p.numel() for p in model.parameters())
    if non_embedding:
        total -= model.get_input_embeddings().weight.numel()
    return total


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op elsewhere (CPU runs stay in float32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------
# Sequences and batches
# ----------------------------------------------------------------------------------------------


def encode_pair_sequences(
    tokenizer: Tokenizer, prompt: str, response: str
) -> tuple[list[int], int]:
    """Token ids of ``[BOS] prompt response EOS`` and the number of prompt tokens (incl. BOS).

    Prompt and response are encoded separately (as TRL does), so the boundary is exact.
    """
    head = ([tokenizer.bos_id] if tokenizer.bos_id is not None else []) + tokenizer.encode(prompt)
    return head + tokenizer.encode(response) + [tokenizer.eos_id], len(head)


class Batch:
    """Right-padded token ids with a mask of the response tokens whose log-prob is scored."""

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


def make_batch(seqs: Sequence[tuple[list[int], int]], pad_id: int) -> Batch:
    """Pad ``(ids, n_prompt)`` sequences on the right to the longest one in the batch only."""
    width = max(len(ids) for ids, _ in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    response = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (ids, n_prompt) in enumerate(seqs):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        response[i, n_prompt : len(ids)] = True
    return Batch(input_ids, attention, response)


def sequence_logps(
    model: torch.nn.Module, batch: Batch, *, average: bool = False
) -> torch.Tensor:
    """log pi(response | prompt) per sequence, summed over response tokens (``average``: mean).

    Shape: ``batch.input_ids`` (B, T) -> (B,). Token t is scored by the logits at t - 1; prompt
    and padding positions are masked. For a preference step the chosen and rejected sequences
    are stacked into one batch, so both go through a single forward pass.
    """
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logits = logits[:, :-1].float()  # (B, T-1, V)
    targets = batch.input_ids[:, 1:]  # (B, T-1)
    mask = batch.response_mask[:, 1:]
    token_logps = -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T-1)
    token_logps = token_logps.masked_fill(~mask, 0.0)
    total = token_logps.sum(-1)
    if average:
        return total / mask.sum(-1).clamp(min=1)
    return total


@torch.no_grad()
def _generate_ids(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    num_samples: int,
    greedy: bool,
    temperature: float,
    seed: int,
    batch_size: int,
    device: torch.device | None,
) -> tuple[list[list[int]], list[list[tuple[list[int], bool]]]]:
    """(prompt ids per prompt, ``[(new token ids, finished), ...]`` per prompt); the new ids
    stop before EOS (``finished``) or hold all ``max_new_tokens`` tokens."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    encoded = [([tokenizer.bos_id] if tokenizer.bos_id is not None else [])
               + tokenizer.encode(p) for p in prompts]
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        groups.setdefault(len(ids), []).append(i)
    out: list[list[tuple[list[int], bool]]] = [[] for _ in prompts]
    per_call = max(1, batch_size // num_samples)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for length in sorted(groups):
            idx = groups[length]
            for start in range(0, len(idx), per_call):
                chunk = idx[start : start + per_call]
                ids = torch.tensor([encoded[i] for i in chunk], device=device)
                ids = ids.repeat_interleave(num_samples, dim=0)  # (n * k, L)
                with autocast(device):
                    gen = model.generate(
                        input_ids=ids,
                        attention_mask=torch.ones_like(ids),
                        max_new_tokens=max_new_tokens,
                        do_sample=not greedy,
                        temperature=None if greedy else temperature,
                        top_k=None,
                        top_p=None,
                        pad_token_id=tokenizer.pad_id,
                        eos_token_id=tokenizer.eos_id,
                    )
                new = gen[:, length:].tolist()
                for r, row in enumerate(new):
                    finished = tokenizer.eos_id in row
                    if finished:
                        row = row[: row.index(tokenizer.eos_id)]
                    out[chunk[r // num_samples]].append((row, finished))
    model.train(was_training)
    return encoded, out


def generate(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    num_samples: int = 1,
    greedy: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 512,
    device: torch.device | None = None,
) -> list[list[tuple[str, bool]]]:
    """Responses per prompt: ``out[i][j] = (text, finished)``; ``finished`` is False if no EOS
    came within ``max_new_tokens``.

    Prompts are grouped by token length, so batches need no padding. Sampling is reproducible
    for a given ``seed`` (the global RNG is forked, not consumed).
    """
    _, out = _generate_ids(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                           num_samples=num_samples, greedy=greedy, temperature=temperature,
                           seed=seed, batch_size=batch_size, device=device)
    return [[(tokenizer.decode(ids), fin) for ids, fin in row] for row in out]


def sample_sequences(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    num_samples: int,
    seed: int,
    batch_size: int = 512,
    device: torch.device | None = None,
) -> list[tuple[list[int], int]]:
    """``num_samples`` responses per prompt sampled from the model at temperature 1 (no top-k or
    top-p: exact samples of π), as ``(ids, n_prompt)`` sequences for :func:`make_batch` /
    :func:`sequence_logps`: ``[BOS] prompt response EOS`` when EOS came within
    ``max_new_tokens``, else ``[BOS] prompt`` and the ``max_new_tokens`` sampled tokens (the
    event "the response starts with these tokens"). Token ids are kept as sampled (no
    decode/encode round trip). Order: prompt by prompt, samples within a prompt."""
    encoded, out = _generate_ids(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                 num_samples=num_samples, greedy=False, temperature=1.0,
                                 seed=seed, batch_size=batch_size, device=device)
    return [(head + ids + ([tokenizer.eos_id] if fin else []), len(head))
            for head, row in zip(encoded, out, strict=True) for ids, fin in row]
