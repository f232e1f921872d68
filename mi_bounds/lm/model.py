"""Causal LMs for the small-LM path: build from a config, load/save a checkpoint directory, and
generate (:func:`generate`, the one way to sample or decode greedily; the prompts are encoded and
the replies decoded by a :class:`~mi_bounds.lm.task_format.TaskFormat`).

Sequence log-probabilities and the padded batch are :mod:`mi_bounds.lm.logps`'s.

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
from typing import NamedTuple

import torch

from mi_bounds.lm.config import ModelConfig
from mi_bounds.lm.task_format import TaskFormat
from mi_bounds.lm.tokenizer import CharTokenizer, HFTokenizer, Tokenizer, load_tokenizer

__all__ = [
    "Reply",
    "autocast",
    "build_model",
    "context_length",
    "generate",
    "load_model_dir",
    "n_params",
    "save_model_dir",
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
# Generation
# ----------------------------------------------------------------------------------------------


class Reply(NamedTuple):
    """One generated reply: decoded text (special tokens skipped), token ids without the EOS,
    and whether the EOS token came within ``max_new_tokens``."""

    text: str
    ids: list[int]
    finished: bool


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    fmt: TaskFormat,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    num_samples: int = 1,
    greedy: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int | None = None,
    device: torch.device | None = None,
) -> list[list[Reply]]:
    """Replies per task prompt: ``out[i][j]`` is response j to ``prompts[i]``, the prompt
    encoded by ``fmt`` (:meth:`TaskFormat.prompt_ids`: BOS, or the chat template) and the reply
    decoded by it; the ids stop before EOS (``finished``) or hold all ``max_new_tokens``.

    Greedy decoding, or exact samples of π at ``temperature``: no top-k, top-p or any other
    logits processor. transformers fills every generation setting left unset from the model's
    ``generation_config`` (a checkpoint's ``generation_config.json``: repetition penalty,
    suppressed tokens, top-k, ...) and then from its global defaults (top_k=50); so the model's
    own config is set aside for the call and the sampler's settings are all given. Prompts are
    grouped by token length (no padding); ``batch_size`` counts sequences (prompts x samples;
    default: the format's ``cpu_generation_batch`` on a CPU, 1024 on a GPU, where generation is
    launch-bound). Reproducible for a given ``seed`` (the global RNG is forked, not consumed).
    """
    encoded = [fmt.prompt_ids(p) for p in prompts]
    device = device or next(model.parameters()).device
    if batch_size is None:
        batch_size = 1024 if torch.device(device).type == "cuda" else fmt.cpu_generation_batch
    rows = _generate_ids(model, encoded, eos_id=fmt.eos_id, pad_id=fmt.pad_id,
                         max_new_tokens=max_new_tokens, num_samples=num_samples, greedy=greedy,
                         temperature=temperature, seed=seed, batch_size=batch_size, device=device)
    return [[Reply(fmt.decode(ids), ids, fin) for ids, fin in row] for row in rows]


def _exact_sampler(max_new_tokens: int, greedy: bool, temperature: float, pad_id: int,
                   eos_id: int):
    """The generation settings of :func:`generate`: greedy argmax, or pure sampling at
    ``temperature`` (top_k=0, top_p=1: no truncation), and nothing else."""
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=not greedy, pad_token_id=pad_id,
        eos_token_id=eos_id,
        **({} if greedy else {"temperature": temperature, "top_k": 0, "top_p": 1.0}),
    )


def _generate_ids(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    *,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    num_samples: int,
    greedy: bool,
    temperature: float,
    seed: int,
    batch_size: int,
    device: torch.device,
) -> list[list[tuple[list[int], bool]]]:
    """``out[i][j] = (new token ids, finished)`` for the token sequence ``prompt_ids[i]``
    (:func:`generate` without the format)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    from transformers import GenerationConfig

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
