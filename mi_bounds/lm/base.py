"""Stage 1, base: train a small Llama on the arithmetic task, or take a pretrained model.

A pretrained model (``--model``: ``smollm2``, a ``.gguf`` file or a checkpoint directory; or the
config's ``model.pretrained``) is not trained further: its checkpoint (model and tokenizer, in
float32) is copied into the run, so the run directory holds its own base model.

The loop in :func:`run_base` reads top to bottom: a fresh batch of task prompts (held-out
prompts excluded), forward, cross-entropy on the answer tokens, backward, clip, AdamW step, log,
checkpoint. Output: ``DIR/base/model/`` and ``DIR/base/result.json`` (see
:mod:`mi_bounds.lm.run_dir`).
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mi_bounds.lm import _io, arithmetic
from mi_bounds.lm.logps import pad_sequences
from mi_bounds.lm.model import autocast, build_model, load_model_dir, n_params, save_model_dir
from mi_bounds.lm.optim import lr_factor, mfu, set_lr
from mi_bounds.lm.run_dir import (
    Run,
    StageInterrupted,
    base_model_dir,
    prompt_sets,
    require_stage,
    run_format,
)
from mi_bounds.lm.task_format import ArithmeticFormat
from mi_bounds.lm.tokenizer import CharTokenizer

__all__ = ["copy_base", "run_base"]


def run_base(run: Run, *, stop_after: int | None = None) -> dict[str, Any]:
    """Train the base model on the task (answer tokens only), or copy ``--model PATH``.

    The base model should be right on some problems and wrong on others: the preset's step
    count is chosen for that. ``stop_after=k`` stops (like a kill) after step k.
    """
    out = run.dir / "base"
    done = out / "result.json"
    if done.is_file():
        run.log(f"base: done ({done})")
        return _io.read_json(done)
    if run.model_path is not None:
        model, tokenizer = load_model_dir(run.model_path)
        save_model_dir(model, tokenizer, base_model_dir(run))
        result = {"source": str(run.model_path), "trained": False,
                  "n_params": n_params(model, non_embedding=False),
                  "format": run_format(run, tokenizer).kind}
        _io.write_json(done, result)
        run.log(f"base: copied {run.model_path} ({result['n_params']:,} parameters, "
                f"{result['format']} format)")
        return result

    cfg, bc, tc = run.config, run.config.base, run.config.task
    tokenizer = CharTokenizer()
    fmt = ArithmeticFormat(tokenizer)
    model = build_model(cfg.model, tokenizer, seed=cfg.seed).to(run.device)
    opt = torch.optim.AdamW(model.parameters(), lr=bc.lr, betas=(0.9, 0.95),
                            weight_decay=bc.weight_decay)
    heldout, _ = prompt_sets(cfg)
    excluded = set(heldout)
    ckpt_path = out / "ckpt.pt"
    start, history, seconds, tokens = 0, [], 0.0, 0
    if ckpt_path.is_file():
        ckpt = _io.torch_load(ckpt_path)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        start, history, seconds, tokens = (ckpt["step"], ckpt["history"], ckpt["seconds"],
                                           ckpt["tokens"])
        run.log(f"base: resuming at step {start}")
    model.train()
    n = n_params(model, non_embedding=False)
    window: list[float] = []
    for step in range(start, bc.steps):
        t0 = time.perf_counter()
        rng = random.Random(cfg.seed * 1_000_003 + step)
        prompts: list[str] = []
        while len(prompts) < bc.batch_size:  # a fresh batch per step, held-out prompts excluded
            p = arithmetic.sample_prompts(rng, 1, tc.levels, tc.level_weights, tc.ops,
                                          unique=False)[0]
            if p not in excluded:
                prompts.append(p)
        batch = pad_sequences([fmt.encode(p, fmt.gold(p)) for p in prompts],
                              fmt.pad_id).to(run.device)
        set_lr(opt, bc.lr * lr_factor(step, bc.warmup, bc.steps, cosine=True))
        with autocast(run.device):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        targets = batch.input_ids[:, 1:].masked_fill(~batch.response_mask[:, 1:], -100)
        loss = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets,
                               ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seconds += time.perf_counter() - t0
        tokens += batch.n_tokens
        window.append(float(loss.detach()))
        if (step + 1) % max(1, bc.steps // 20) == 0 or step + 1 == bc.steps:
            history.append({"step": step + 1, "loss": sum(window) / len(window)})
            window = []
        if (step + 1) % bc.ckpt_every == 0 and step + 1 < bc.steps:
            _io.torch_save(ckpt_path, {"model": model.state_dict(), "opt": opt.state_dict(),
                                       "step": step + 1, "history": history,
                                       "seconds": seconds, "tokens": tokens})
        if stop_after is not None and step + 1 >= stop_after:
            raise StageInterrupted(f"base stopped after step {step + 1}")
    save_model_dir(model, tokenizer, base_model_dir(run))
    result = {
        "source": "trained", "trained": True, "steps": bc.steps, "history": history,
        "n_params": n, "seconds": seconds, "tokens": tokens,
        "tokens_per_s": tokens / max(seconds, 1e-9),
        "mfu": mfu(tokens, seconds, n, run.peak_flops), "peak_flops": run.peak_flops,
        "device": str(run.device),
    }
    _io.write_json(done, result)
    ckpt_path.unlink(missing_ok=True)
    run.log(f"base: trained {bc.steps} steps in {seconds:.1f} s "
            f"({result['tokens_per_s']:.0f} tok/s, MFU {result['mfu']:.2%}), final loss "
            f"{history[-1]['loss']:.3f}"
            if history else "base: 0 steps")
    return result



def copy_base(run: Run, dest: str | Path) -> Path:
    """Copy the base checkpoint directory (model and tokenizer) to ``dest``."""
    require_stage(run, run.dir / "base" / "result.json", "base")
    return Path(shutil.copytree(base_model_dir(run), dest))

