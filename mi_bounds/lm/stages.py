"""The four stages of a small-LM run: base, sample, align, report.

Every stage reads and writes one run directory::

    DIR/config.json             the RunConfig (a re-run must agree with it)
    DIR/inputs.json             --model / --pairs given at the first invocation
    DIR/base/model/             the base model and its tokenizer (save_pretrained)
    DIR/base/result.json        base training log; its presence marks the stage done
    DIR/sample/data.json        prompts, labelled samples, pairs, base accuracy, hard subset
    DIR/sample/pairs_*.jsonl    the (prompt, chosen, rejected) pairs, for reading
    DIR/align/reference.pt      reference log-probabilities of every pair (computed once)
    DIR/align/<loss>-seed<s>/result.json   metric history and throughput of one run
    DIR/report/                 figures (PNG, PDF) and tables (JSON, Markdown)

Resumption: every file is written atomically (temporary name, then rename); training stages write
a checkpoint (model, optimiser, step, history) every ``ckpt_every`` steps and a re-run continues
from it. Data order is a pure function of (seed, step), and training uses no dropout, so a resumed
run follows the same trajectory as an uninterrupted one. A finished unit of work (a stage, one
(loss, seed) alignment run) is never redone.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mi_bounds.lm import _io
from mi_bounds.lm import task as arith
from mi_bounds.lm.config import RunConfig
from mi_bounds.lm.data import check_fits, read_pairs_jsonl
from mi_bounds.lm.model import (
    autocast,
    build_model,
    encode_pair_sequences,
    generate,
    load_model_dir,
    make_batch,
    n_params,
    save_model_dir,
    sequence_logps,
)
from mi_bounds.lm.tokenizer import CharTokenizer, load_tokenizer
from mi_bounds.preference import get_loss, preference_loss, preference_metrics

__all__ = [
    "STAGES",
    "Run",
    "StageInterrupted",
    "align_one",
    "copy_base",
    "open_run",
    "run_align",
    "run_all",
    "run_base",
    "run_report",
    "run_sample",
]


class StageInterrupted(RuntimeError):
    """Raised by a stage stopped on purpose (``stop_after``), as a kill would stop it."""


@dataclass
class Run:
    """An open run directory: its config, inputs, device and logger."""

    dir: Path
    config: RunConfig
    model_path: Path | None = None
    pairs_path: Path | None = None
    user_pairs: list[dict[str, Any]] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    log: Callable[[str], None] = print

    @property
    def peak_flops(self) -> float:
        c = self.config
        return c.cuda_peak_flops if self.device.type == "cuda" else c.cpu_peak_flops


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


_SELECTION = ("losses", "seeds")


def _compare_configs(old: RunConfig, new: RunConfig) -> list[str]:
    a, b = old.to_dict(), new.to_dict()
    for name in _SELECTION:
        a["align"].pop(name)
        b["align"].pop(name)
    diffs = []
    for section in a:
        if isinstance(a[section], dict):
            diffs += [f"{section}.{k}: {a[section][k]!r} -> {b[section][k]!r}"
                      for k in a[section] if a[section][k] != b[section][k]]
        elif a[section] != b[section]:
            diffs.append(f"{section}: {a[section]!r} -> {b[section]!r}")
    return diffs


def open_run(
    out: str | Path,
    config: RunConfig | None = None,
    *,
    model_path: str | Path | None = None,
    pairs_path: str | Path | None = None,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> Run:
    """Validate everything, then create (or re-open) the run directory.

    All checks happen before anything is written: unknown loss names, a model path without a
    tokenizer, a malformed or empty pairs file, sequences longer than the context, or a config
    that differs from the one already in ``out`` raise ``ValueError`` and leave ``out`` as it was.
    With ``config=None`` an existing run's config is used (``cpu-tiny`` for a new run).
    """
    out = Path(out)
    stored = out / "config.json"
    if config is None:
        from mi_bounds.lm.config import get_preset

        config = (RunConfig.from_dict(_io.read_json(stored)) if stored.is_file()
                  else get_preset("cpu-tiny"))
    for loss in config.align.losses:
        get_loss(loss)  # unknown names raise ValueError listing the valid ones
    dev = _resolve_device(device)
    mp = None if model_path is None else Path(model_path).resolve()
    pp = None if pairs_path is None else Path(pairs_path).resolve()
    old_inputs = _io.read_json(out / "inputs.json") if stored.is_file() else None
    if old_inputs is not None:  # an omitted --model / --pairs means "as before"
        if mp is None and old_inputs.get("model"):
            mp = Path(old_inputs["model"])
        if pp is None and old_inputs.get("pairs"):
            pp = Path(old_inputs["pairs"])
    inputs = {"model": None if mp is None else str(mp), "pairs": None if pp is None else str(pp)}
    if old_inputs is not None and old_inputs != inputs:
        raise ValueError(f"{out} was started with inputs {old_inputs}, now {inputs}; "
                         "use a new --out directory")
    if mp is not None:
        if not mp.is_dir():
            raise ValueError(f"model path {str(mp)!r} is not a directory")
        if not (mp / "config.json").is_file():
            raise ValueError(f"model path {str(mp)!r} has no config.json")
        tokenizer = load_tokenizer(mp)  # ValueError if there is none
        context = int(_io.read_json(mp / "config.json").get("max_position_embeddings", 0))
        if context <= 0:
            raise ValueError(f"{mp}/config.json has no max_position_embeddings")
    else:
        tokenizer, context = CharTokenizer(), config.model.context
        longest = max(config.task.levels)
        for op in config.task.ops:  # the longest prompt and answer of the task must fit
            big = 10**longest - 1
            prompt = arith.make_prompt(big, op, big)
            check_fits(tokenizer, prompt, "-" + arith.answer(prompt), context,
                       f"task level {longest} with op {op!r}")
    sample_done = (out / "sample" / "data.json").is_file()
    user_pairs = None if pp is None or sample_done else read_pairs_jsonl(pp, tokenizer, context)
    if stored.is_file():
        old = RunConfig.from_dict(_io.read_json(stored))
        diffs = _compare_configs(old, config)
        started = any((out / "align").glob("*/*.json")) or any((out / "align").glob("*/*.pt"))
        if diffs and all(d.startswith("align.") for d in diffs) and not started:
            _io.write_text(stored, config.to_json())  # nothing aligned yet: align may change
            diffs = []
        if diffs:
            raise ValueError(f"{out} holds a run with a different config ({'; '.join(diffs)}); "
                             "use a new --out directory or the same options")
    else:
        out.mkdir(parents=True, exist_ok=True)
        _io.write_json(out / "inputs.json", inputs)
        _io.write_text(stored, config.to_json())
    return Run(out, config, mp, pp, user_pairs, dev, log)


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------


def _prompt_sets(config: RunConfig) -> tuple[list[str], list[str]]:
    """(held-out prompts, train prompts): disjoint, a pure function of the config's seed."""
    t, s = config.task, config.sample
    heldout = arith.sample_prompts(random.Random(f"heldout-{config.seed}"), s.n_heldout_prompts,
                                   t.levels, t.level_weights, t.ops)
    train = arith.sample_prompts(random.Random(f"train-{config.seed}"), s.n_train_prompts,
                                 t.levels, t.level_weights, t.ops, exclude=heldout)
    return heldout, train


def _lr_factor(step: int, warmup: int, total: int, *, cosine: bool) -> float:
    if step < warmup:
        return (step + 1) / warmup
    if not cosine:
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def _base_dir(run: Run) -> Path:
    return run.dir / "base" / "model"


def _require(path: Path, stage: str, run: Run) -> None:
    if not path.exists():
        raise ValueError(f"{run.dir}: the {stage} stage has not finished; run "
                         f"`mi-bounds lm {stage} --out {run.dir}` (or `lm run`) first")


def _max_new_tokens(config: RunConfig) -> int:
    longest = max(config.task.levels)
    big = 10**longest - 1
    return max(len(arith.answer(arith.make_prompt(big, op, big))) for op in config.task.ops) + 2


def _mfu(tokens: int, seconds: float, n: int, peak: float) -> float:
    """Model FLOP utilisation: 6 N tokens / time / peak (forward + backward, Kaplan et al.)."""
    return 6.0 * n * tokens / max(seconds, 1e-9) / peak


# ----------------------------------------------------------------------------------------------
# Stage 1: base
# ----------------------------------------------------------------------------------------------


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
        save_model_dir(model, tokenizer, _base_dir(run))
        result = {"source": str(run.model_path), "trained": False,
                  "n_params": n_params(model, non_embedding=False)}
        _io.write_json(done, result)
        run.log(f"base: copied {run.model_path}")
        return result

    cfg, bc, tc = run.config, run.config.base, run.config.task
    tokenizer = CharTokenizer()
    model = build_model(cfg.model, tokenizer, seed=cfg.seed).to(run.device)
    opt = torch.optim.AdamW(model.parameters(), lr=bc.lr, betas=(0.9, 0.95),
                            weight_decay=bc.weight_decay)
    heldout, _ = _prompt_sets(cfg)
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
            p = arith.sample_prompts(rng, 1, tc.levels, tc.level_weights, tc.ops, unique=False)[0]
            if p not in excluded:
                prompts.append(p)
        batch = make_batch([encode_pair_sequences(tokenizer, p, arith.answer(p))
                            for p in prompts], tokenizer.pad_id).to(run.device)
        _set_lr(opt, bc.lr * _lr_factor(step, bc.warmup, bc.steps, cosine=True))
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
    save_model_dir(model, tokenizer, _base_dir(run))
    result = {
        "source": "trained", "trained": True, "steps": bc.steps, "history": history,
        "n_params": n, "seconds": seconds, "tokens": tokens,
        "tokens_per_s": tokens / max(seconds, 1e-9),
        "mfu": _mfu(tokens, seconds, n, run.peak_flops), "peak_flops": run.peak_flops,
        "device": str(run.device),
    }
    _io.write_json(done, result)
    ckpt_path.unlink(missing_ok=True)
    run.log(f"base: trained {bc.steps} steps in {seconds:.1f} s "
            f"({result['tokens_per_s']:.0f} tok/s, MFU {result['mfu']:.2%}), final loss "
            f"{history[-1]['loss']:.3f}"
            if history else "base: 0 steps")
    return result


# ----------------------------------------------------------------------------------------------
# Stage 2: sample
# ----------------------------------------------------------------------------------------------


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _make_pairs(prompt: str, samples: list[tuple[str, bool]], n_max: int) -> list[dict]:
    """Pair distinct correct (chosen) with distinct incorrect (rejected) responses of one prompt.

    Only finished responses (EOS within the budget) are used, so every pair is scored as a whole.
    """
    correct = _unique([t for t, fin in samples if fin and arith.verify(prompt, t)])
    wrong = _unique([t for t, fin in samples if fin and t and not arith.verify(prompt, t)])
    if not correct or not wrong:
        return []
    n = min(n_max, max(len(correct), len(wrong)))
    return [{"prompt": prompt, "chosen": correct[i % len(correct)],
             "rejected": wrong[i % len(wrong)]} for i in range(n)]


def _accuracy(prompts: Sequence[str], samples: list[list[tuple[str, bool]]]) -> list[float]:
    return [sum(fin and arith.verify(p, t) for t, fin in s) / len(s)
            for p, s in zip(prompts, samples, strict=True)]


def run_sample(run: Run) -> dict[str, Any]:
    """Sample k responses per prompt from the base model, label, pair, find the hard subset.

    With ``--pairs FILE`` the user's pairs are split into train and held-out pairs instead; the
    held-out prompts that are task prompts are still sampled to measure the base accuracy.
    Raises ``ValueError`` (writing nothing) if there are no training pairs.
    """
    out = run.dir / "sample"
    done = out / "data.json"
    if done.is_file():
        run.log(f"sample: done ({done})")
        return _io.read_json(done)
    _require(run.dir / "base" / "result.json", "base", run)
    cfg, sc = run.config, run.config.sample
    model, tokenizer = load_model_dir(_base_dir(run))
    model.to(run.device)
    max_new = _max_new_tokens(cfg)
    t0 = time.perf_counter()
    if run.pairs_path is None:
        heldout, train = _prompt_sets(cfg)
        train_samples = generate(model, tokenizer, train, max_new_tokens=max_new,
                                 num_samples=sc.k, temperature=sc.temperature,
                                 seed=cfg.seed + 1, device=run.device)
        train_pairs = [pr for p, s in zip(train, train_samples, strict=True)
                       for pr in _make_pairs(p, s, sc.pairs_per_prompt)]
        train_acc = _accuracy(train, train_samples)
    else:
        if run.user_pairs is None:
            raise ValueError(f"pairs file {run.pairs_path} was not read")
        rows = list(run.user_pairs)
        random.Random(f"split-{cfg.seed}").shuffle(rows)
        n_held = round(sc.heldout_fraction * len(rows))
        train_pairs, user_heldout = rows[n_held:], rows[:n_held]
        heldout = _unique([r["prompt"] for r in user_heldout
                           if arith.parse_prompt(r["prompt"]) is not None])
        train, train_acc = [], []
    heldout_samples = generate(model, tokenizer, heldout, max_new_tokens=max_new,
                               num_samples=sc.k, temperature=sc.temperature,
                               seed=cfg.seed + 2, device=run.device) if heldout else []
    if run.pairs_path is None:
        heldout_pairs = [pr for p, s in zip(heldout, heldout_samples, strict=True)
                         for pr in _make_pairs(p, s, sc.pairs_per_prompt)]
    else:
        heldout_pairs = user_heldout
    if not train_pairs:
        raise ValueError(
            "empty pair set: no training prompt had both a correct and an incorrect sampled "
            "response (the base model is right on all or on none); change the preset's base "
            "steps, k or prompts" if run.pairs_path is None else
            "empty pair set: no training pairs left after the held-out split")
    greedy = generate(model, tokenizer, heldout, max_new_tokens=max_new, greedy=True,
                      device=run.device) if heldout else []
    heldout_acc = _accuracy(heldout, heldout_samples)
    greedy_ok = [bool(g[0][1] and arith.verify(p, g[0][0])) for p, g in zip(heldout, greedy,
                                                                            strict=True)]
    hard = [p for p, a in zip(heldout, heldout_acc, strict=True) if a <= sc.hard_threshold]
    by_level: dict[str, dict[str, float]] = {}
    for lv in sorted({arith.level_of(p) for p in heldout}):
        idx = [i for i, p in enumerate(heldout) if arith.level_of(p) == lv]
        by_level[str(lv)] = {"n": len(idx),
                             "greedy": sum(greedy_ok[i] for i in idx) / len(idx),
                             "sampled": sum(heldout_acc[i] for i in idx) / len(idx)}

    def mean(xs: Sequence[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    data = {
        "train_prompts": train,
        "heldout_prompts": heldout,
        "hard_prompts": hard,
        "train_pairs": train_pairs,
        "heldout_pairs": heldout_pairs,
        "heldout_samples": {p: s for p, s in zip(heldout, heldout_samples, strict=True)},
        "base_accuracy": {
            "train_sampled": mean(train_acc),
            "heldout_sampled": mean(heldout_acc),
            "heldout_greedy": mean([float(x) for x in greedy_ok]),
            "hard_greedy": mean([float(ok) for p, ok in zip(heldout, greedy_ok, strict=True)
                                 if p in set(hard)]),
            "by_level": by_level,
        },
        "counts": {"train_prompts": len(train), "heldout_prompts": len(heldout),
                   "hard_prompts": len(hard), "train_pairs": len(train_pairs),
                   "heldout_pairs": len(heldout_pairs)},
        "seconds": time.perf_counter() - t0,
    }
    _io.write_jsonl(out / "pairs_train.jsonl", train_pairs)
    _io.write_jsonl(out / "pairs_heldout.jsonl", heldout_pairs)
    _io.write_json(done, data)
    acc = data["base_accuracy"]
    run.log(f"sample: {len(train_pairs)} train pairs, {len(heldout_pairs)} held-out pairs, "
            f"{len(hard)} hard prompts; base greedy held-out accuracy "
            f"{acc['heldout_greedy'] if heldout else float('nan'):.3f}")
    return data


# ----------------------------------------------------------------------------------------------
# Stage 3: align
# ----------------------------------------------------------------------------------------------


@dataclass
class _PairSet:
    """Tokenised pairs with their reference log-probabilities (computed once)."""

    chosen: list[tuple[list[int], int]]
    rejected: list[tuple[list[int], int]]
    ref_chosen: torch.Tensor  # (n,) summed log-probs under the base model
    ref_rejected: torch.Tensor  # (n,)

    def __len__(self) -> int:
        return len(self.chosen)

    def lengths(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Completion token counts (response + EOS) of the chosen and rejected sequences."""
        c = torch.tensor([len(self.chosen[i][0]) - self.chosen[i][1] for i in idx],
                         dtype=torch.float32)
        r = torch.tensor([len(self.rejected[i][0]) - self.rejected[i][1] for i in idx],
                         dtype=torch.float32)
        return c, r


def _tokenise(tokenizer, pairs: list[dict]) -> tuple[list, list]:
    return ([encode_pair_sequences(tokenizer, p["prompt"], p["chosen"]) for p in pairs],
            [encode_pair_sequences(tokenizer, p["prompt"], p["rejected"]) for p in pairs])


@torch.no_grad()
def _pair_logps(model, chosen, rejected, pad_id, device, batch_size=256):
    """Summed log-probs of chosen and rejected sequences; each batch stacks both (one pass)."""
    model.eval()
    pc, pr = [], []
    for s in range(0, len(chosen), batch_size):
        c, r = chosen[s : s + batch_size], rejected[s : s + batch_size]
        batch = make_batch(c + r, pad_id).to(device)
        with autocast(device):
            lp = sequence_logps(model, batch).float().cpu()
        pc.append(lp[: len(c)])
        pr.append(lp[len(c) :])
    empty = torch.zeros(0)
    return (torch.cat(pc) if pc else empty), (torch.cat(pr) if pr else empty)


def _reference(run: Run, data: dict) -> dict[str, _PairSet]:
    """Reference log-probabilities of every train and held-out pair, computed once and stored."""
    path = run.dir / "align" / "reference.pt"
    sets = {}
    tokenizer = load_tokenizer(_base_dir(run))
    tok = {name: _tokenise(tokenizer, data[f"{name}_pairs"]) for name in ("train", "heldout")}
    if path.is_file():
        ref = _io.torch_load(path)
    else:
        base, _ = load_model_dir(_base_dir(run))
        base.to(run.device)
        ref = {name: _pair_logps(base, *tok[name], tokenizer.pad_id, run.device)
               for name in tok}
        _io.torch_save(path, ref)
    for name in tok:
        sets[name] = _PairSet(*tok[name], *ref[name])
    return sets


def _epoch_batches(n: int, batch_size: int, seed: int, epoch: int,
                   lengths: Sequence[int]) -> list[list[int]]:
    """The batches of one epoch: shuffle, sort by length within chunks of 8 batches (little
    padding), then shuffle the batch order. A pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 7919 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    chunk = batch_size * 8
    batches = []
    for s in range(0, n, chunk):
        part = sorted(perm[s : s + chunk], key=lambda i: lengths[i])
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


def _loss_kwargs(kind: str, pairs: _PairSet, idx: Sequence[int], device) -> dict:
    """Completion lengths for the losses that normalise by them (TRL's ipo, sigmoid_norm)."""
    if "chosen_lengths" in get_loss(kind).params:
        c, r = pairs.lengths(idx)
        return {"chosen_lengths": c.to(device), "rejected_lengths": r.to(device)}
    return {}


def _pair_metrics(model, pairs: _PairSet, n: int | None, beta: float, pad_id, device) -> dict:
    idx = list(range(len(pairs) if n is None else min(n, len(pairs))))
    if not idx:
        return {}
    pc, pr = _pair_logps(model, [pairs.chosen[i] for i in idx], [pairs.rejected[i] for i in idx],
                         pad_id, device)
    m = preference_metrics(pc, pr, pairs.ref_chosen[idx], pairs.ref_rejected[idx], beta=beta)
    return {k: float(v) for k, v in m.items()}


def _greedy_correct(model, tokenizer, prompts: Sequence[str], max_new: int,
                    device) -> list[bool]:
    """Whether the greedy response to each task prompt is right (finished and verified)."""
    if not prompts:
        return []
    outs = generate(model, tokenizer, prompts, max_new_tokens=max_new, greedy=True, device=device)
    return [bool(o[0][1] and arith.verify(p, o[0][0])) for p, o in zip(prompts, outs, strict=True)]


def _by_level(prompts: Sequence[str], correct: Sequence[bool]) -> dict[str, float]:
    levels: dict[str, list[bool]] = {}
    for p, ok in zip(prompts, correct, strict=True):
        levels.setdefault(str(arith.level_of(p)), []).append(ok)
    return {lv: sum(v) / len(v) for lv, v in sorted(levels.items())}


def _evaluate(run, model, tokenizer, sets, data, step, train_loss) -> dict[str, Any]:
    ac = run.config.align
    max_new = _max_new_tokens(run.config)
    rec = {"step": step, "train_loss": train_loss,
           "train": _pair_metrics(model, sets["train"], ac.n_eval_pairs, ac.beta,
                                  tokenizer.pad_id, run.device),
           "heldout": _pair_metrics(model, sets["heldout"], None, ac.beta, tokenizer.pad_id,
                                    run.device)}
    held = data["heldout_prompts"]
    correct = _greedy_correct(model, tokenizer, held, max_new, run.device)
    hard = set(data["hard_prompts"])
    rec["acc_heldout"] = sum(correct) / len(correct) if correct else None
    rec["acc_hard"] = (sum(ok for p, ok in zip(held, correct, strict=True) if p in hard)
                       / len(hard)) if hard else None
    rec["acc_heldout_by_level"] = _by_level(held, correct)
    model.train()
    return rec


def align_one(run: Run, loss_kind: str, seed: int, sets: dict[str, _PairSet], data: dict,
              *, stop_after: int | None = None) -> dict[str, Any]:
    """Align a copy of the base model with one loss and seed; resumable from its checkpoint."""
    ac = run.config.align
    out = run.dir / "align" / f"{loss_kind}-seed{seed}"
    done = out / "result.json"
    if done.is_file():
        run.log(f"align {loss_kind} seed {seed}: done")
        return _io.read_json(done)
    model, tokenizer = load_model_dir(_base_dir(run))
    model.to(run.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=ac.lr, betas=(0.9, 0.95), weight_decay=0.0)
    train = sets["train"]
    lengths = [len(c[0]) + len(r[0]) for c, r in zip(train.chosen, train.rejected, strict=True)]
    batch_size = min(ac.batch_size, len(train))
    per_epoch = math.ceil(len(train) / batch_size)
    ckpt_path = out / "ckpt.pt"
    start, history, seconds, tokens, slots, losses = 0, [], 0.0, 0, 0, []
    if ckpt_path.is_file():
        ck = _io.torch_load(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start, history, seconds, tokens, slots, losses = (
            ck["step"], ck["history"], ck["seconds"], ck["tokens"], ck["slots"], ck["losses"])
        run.log(f"align {loss_kind} seed {seed}: resuming at step {start}")
    else:
        history.append(_evaluate(run, model, tokenizer, sets, data, 0, None))
    warmup = max(1, ac.steps // 10)
    epoch_cache: dict[int, list[list[int]]] = {}
    for step in range(start, ac.steps):
        epoch = step // per_epoch
        if epoch not in epoch_cache:
            epoch_cache = {epoch: _epoch_batches(len(train), batch_size, seed, epoch, lengths)}
        idx = epoch_cache[epoch][step % per_epoch]
        t0 = time.perf_counter()
        # chosen and rejected stacked: one forward pass per step (B chosen then B rejected)
        batch = make_batch([train.chosen[i] for i in idx] + [train.rejected[i] for i in idx],
                           tokenizer.pad_id).to(run.device)
        _set_lr(opt, ac.lr * _lr_factor(step, warmup, ac.steps, cosine=False))
        with autocast(run.device):
            logps = sequence_logps(model, batch).float()  # (2B,)
        pc, pr = logps[: len(idx)], logps[len(idx) :]
        loss = preference_loss(loss_kind, pc, pr, train.ref_chosen[idx].to(run.device),
                               train.ref_rejected[idx].to(run.device), beta=ac.beta,
                               reduction="mean", **_loss_kwargs(loss_kind, train, idx,
                                                                run.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), ac.max_grad_norm)
        opt.step()
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
        seconds += time.perf_counter() - t0
        tokens += batch.n_tokens
        slots += batch.n_slots
        losses.append(float(loss.detach()))
        s = step + 1
        if s % ac.eval_every == 0 or s == ac.steps:
            window = losses[-(s - history[-1]["step"]):]
            history.append(_evaluate(run, model, tokenizer, sets, data, s,
                                     sum(window) / len(window)))
        if s % ac.ckpt_every == 0 and s < ac.steps:
            _io.torch_save(ckpt_path, {"model": model.state_dict(), "opt": opt.state_dict(),
                                       "step": s, "history": history, "seconds": seconds,
                                       "tokens": tokens, "slots": slots, "losses": losses})
        if stop_after is not None and s >= stop_after and s < ac.steps:
            raise StageInterrupted(f"align {loss_kind} seed {seed} stopped after step {s}")
    n = n_params(model, non_embedding=False)
    result = {
        "loss": loss_kind, "seed": seed, "beta": ac.beta, "steps": ac.steps,
        "history": history, "final": history[-1],
        "throughput": {
            "device": str(run.device), "seconds": seconds, "tokens": tokens,
            "tokens_per_s": tokens / max(seconds, 1e-9),
            "padding_fraction": 1 - tokens / max(slots, 1), "n_params": n,
            "peak_flops": run.peak_flops, "mfu": _mfu(tokens, seconds, n, run.peak_flops),
        },
    }
    if ac.save_models:
        save_model_dir(model, tokenizer, out / "model")
    _io.write_json(done, result)
    ckpt_path.unlink(missing_ok=True)
    f = history[-1]
    run.log(f"align {loss_kind} seed {seed}: {ac.steps} steps, {seconds:.1f} s, "
            f"{result['throughput']['tokens_per_s']:.0f} tok/s, MFU "
            f"{result['throughput']['mfu']:.2%} of {run.peak_flops:.3g} FLOP/s; chosen logp "
            f"{history[0]['train'].get('logps/chosen', float('nan')):.3f} -> "
            f"{f['train'].get('logps/chosen', float('nan')):.3f}, held-out acc "
            f"{f['acc_heldout']}")
    return result


def run_align(run: Run, *, stop_after: int | None = None) -> list[dict[str, Any]]:
    """Align with every requested loss and seed from the same base model and pairs."""
    _require(run.dir / "sample" / "data.json", "sample", run)
    data = _io.read_json(run.dir / "sample" / "data.json")
    sets = _reference(run, data)
    results = []
    for loss_kind in run.config.align.losses:
        for seed in run.config.align.seeds:
            results.append(align_one(run, loss_kind, seed, sets, data, stop_after=stop_after))
    return results


# ----------------------------------------------------------------------------------------------
# Stage 4: report
# ----------------------------------------------------------------------------------------------


def run_report(run: Run, out_dir: Path | None = None) -> list[Path]:
    """Figures and tables from every finished alignment run in the directory."""
    from mi_bounds.lm.report import write_report

    _require(run.dir / "sample" / "data.json", "sample", run)
    results = [_io.read_json(p) for p in sorted((run.dir / "align").glob("*/result.json"))]
    if not results:
        raise ValueError(f"{run.dir}: no finished alignment runs to report")
    sample = _io.read_json(run.dir / "sample" / "data.json")
    paths = write_report(results, sample, run.config, out_dir or run.dir / "report")
    run.log(f"report: {', '.join(str(p) for p in paths)}")
    return paths


STAGES: dict[str, Callable[..., Any]] = {
    "base": run_base, "sample": run_sample, "align": run_align, "report": run_report,
}


def run_all(run: Run) -> list[Path]:
    """base, sample, align, report in order; finished work is skipped."""
    run_base(run)
    run_sample(run)
    run_align(run)
    return run_report(run)


def copy_base(run: Run, dest: str | Path) -> Path:
    """Copy the base checkpoint directory (model and tokenizer) to ``dest``."""
    _require(run.dir / "base" / "result.json", "base", run)
    return Path(shutil.copytree(_base_dir(run), dest))

