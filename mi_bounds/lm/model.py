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

from mi_bounds.lm.config import ModelConfig
from mi_bounds.lm.tokenizer import CharTokenizer, HFTokenizer, Tokenizer, load_tokenizer

__all__ = [
    "Batch",
    "autocast",
    "build_model",
    "context_length",
    "encode_pair_sequences",
    "generate",
    "generate_ids",
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
    """Pad ``(ids, n_prompt)`` sequences on the right to the longest one in the batch only
    (:func:`mi_bounds.lm.logps.pad_sequences` with ``side="right"``)."""
    from mi_bounds.lm.logps import pad_sequences

    return pad_sequences(seqs, pad_id, side="right")


def sequence_logps(
    model: torch.nn.Module, batch: Batch, *, average: bool = False
) -> torch.Tensor:
    """log pi(response | prompt) per sequence, summed over response tokens (``average``: mean).

    The name the stages used before :func:`mi_bounds.lm.logps.response_logps` existed; it is that
    function (logits only where a response token is scored). Shape: (B, T) -> (B,).
    """
    from mi_bounds.lm.logps import response_logps

    return response_logps(model, batch, average=average)


def _exact_sampler(max_new_tokens: int, greedy: bool, temperature: float, pad_id: int,
                   eos_id: int):
    """The generation settings of :func:`generate_ids`: greedy argmax, or pure sampling at
    ``temperature`` (top_k=0, top_p=1: no truncation), and nothing else."""
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=not greedy, pad_token_id=pad_id,
        eos_token_id=eos_id,
        **({} if greedy else {"temperature": temperature, "top_k": 0, "top_p": 1.0}),
    )


@torch.no_grad()
def generate_ids(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    *,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    num_samples: int = 1,
    greedy: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 512,
    device: torch.device | None = None,
) -> list[list[tuple[list[int], bool]]]:
    """``out[i][j] = (new token ids, finished)``: response j to the token sequence
    ``prompt_ids[i]``; the ids stop before EOS (``finished``) or hold all ``max_new_tokens``.

    Greedy decoding, or exact samples of π at ``temperature``: no top-k, top-p or any other
    logits processor. transformers fills every generation setting left unset from the model's
    ``generation_config`` (a checkpoint's ``generation_config.json``: repetition penalty,
    suppressed tokens, top-k, ...) and then from its global defaults (top_k=50); so the model's
    own config is set aside for the call and the sampler's settings are all given. Prompts are
    grouped by length (no padding); ``batch_size`` counts sequences (prompts x samples).
    Reproducible for a given ``seed`` (the global RNG is forked, not consumed).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    from transformers import GenerationConfig

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    settings = _exact_sampler(max_new_tokens, greedy, temperature, pad_id, eos_id)
    own_config = model.generation_config
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(prompt_ids):
        groups.setdefault(len(ids), []).append(i)
    out: list[list[tuple[list[int], bool]]] = [[] for _ in prompt_ids]
    per_call = max(1, batch_size // num_samples)
    try:
        model.generation_config = GenerationConfig()  # nothing inherited from the checkpoint
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for length in sorted(groups):
                idx = groups[length]
                for start in range(0, len(idx), per_call):
                    chunk = idx[start : start + per_call]
                    ids = torch.tensor([list(prompt_ids[i]) for i in chunk], device=device)
                    ids = ids.repeat_interleave(num_samples, dim=0)  # (n * k, L)
                    with autocast(device):
                        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                             generation_config=settings)
                    for r, row in enumerate(gen[:, length:].tolist()):
                        finished = eos_id in row
                        if finished:
                            row = row[: row.index(eos_id)]
                        out[chunk[r // num_samples]].append((row, finished))
    finally:
        model.generation_config = own_config
        model.train(was_training)
    return out


def _raw_prompt_ids(tokenizer: Tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    return [([tokenizer.bos_id] if tokenizer.bos_id is not None else []) + tokenizer.encode(p)
            for p in prompts]


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
    out = generate_ids(model, _raw_prompt_ids(tokenizer, prompts), eos_id=tokenizer.eos_id,
                       pad_id=tokenizer.pad_id, max_new_tokens=max_new_tokens,
                       num_samples=num_samples, greedy=greedy, temperature=temperature, seed=seed,
                       batch_size=batch_size, device=device)
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
    encoded = _raw_prompt_ids(tokenizer, prompts)
    out = generate_ids(model, encoded, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
                       max_new_tokens=max_new_tokens, num_samples=num_samples, seed=seed,
                       batch_size=batch_size, device=device)
    return [(head + ids + ([tokenizer.eos_id] if fin else []), len(head))
            for head, row in zip(encoded, out, strict=True) for ids, fin in row]
