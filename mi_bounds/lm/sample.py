"""Stage 2, sample: k responses per prompt from the base model, labelled by the verifier and
paired correct (chosen) with incorrect (rejected); or a user's ``--pairs`` file split into train
and held-out pairs. Output: ``DIR/sample/data.json`` and ``DIR/sample/pairs_*.jsonl``.

Besides the on-policy train pairs (a correct and an incorrect *sample*), the stage also writes
the off-policy "gold" train pairs (``train_pairs_gold``: the verified answer as the chosen
response, paired with each prompt's incorrect samples, also where no sample was correct); the
align stage trains on them with ``align.chosen = "gold"``.

The task is seen through the run's :class:`~mi_bounds.lm.task_format.TaskFormat`: raw
``a+b=`` and exact answers for the character model, the chat template and the final-integer
verifier for a chat model (whose gold reply is ``"a + b = c"``). A chat model's pairs also keep
the sampled token ids (``chosen_ids``, ``rejected_ids``), so the align stage scores exactly the
sequences the model sampled (decoding and re-encoding a reply need not give the same tokens).
Only finished responses (EOS within ``max_new_tokens``) are paired; unfinished ones count as
incorrect in the accuracies.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

from mi_bounds.lm import _io, arithmetic
from mi_bounds.lm.model import Reply, generate, load_model_dir
from mi_bounds.lm.run_dir import (
    Run,
    base_model_dir,
    max_new_tokens,
    prompt_sets,
    require_stage,
    run_format,
)
from mi_bounds.lm.task_format import TaskFormat

__all__ = ["run_sample"]


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _make_pairs(fmt: TaskFormat, prompt: str, samples: list[Reply], n_max: int, *,
                gold: bool = False) -> list[dict]:
    """Pair distinct correct (chosen) with distinct incorrect (rejected) responses of one prompt.

    Only finished responses (EOS within the budget) are used, so every pair is scored as a whole.
    With ``gold=True`` the chosen response is the verified answer (:meth:`TaskFormat.gold`)
    whether or not the base model sampled it (the off-policy variant): every prompt with an
    incorrect sample gives pairs. Chat pairs carry the sampled ids (``chosen_ids``,
    ``rejected_ids``; a gold chosen response has none).
    """
    def distinct(replies: list[Reply]) -> list[Reply]:  # first of each text, in order
        firsts: dict[str, Reply] = {}
        for r in replies:
            firsts.setdefault(r.text, r)
        return list(firsts.values())

    correct = ([Reply(fmt.gold(prompt), [], True)] if gold else
               distinct([r for r in samples if r.finished and fmt.verify(prompt, r.text)]))
    wrong = distinct([r for r in samples
                      if r.finished and r.text and not fmt.verify(prompt, r.text)])
    if not correct or not wrong:
        return []
    n = min(n_max, max(len(correct), len(wrong)))
    pairs = []
    for i in range(n):
        c, w = correct[i % len(correct)], wrong[i % len(wrong)]
        pair = {"prompt": prompt, "chosen": c.text, "rejected": w.text}
        if fmt.keeps_sampled_ids:
            if not gold:
                pair["chosen_ids"] = c.ids
            pair["rejected_ids"] = w.ids
        pairs.append(pair)
    return pairs


def _accuracy(fmt: TaskFormat, prompts: Sequence[str],
              samples: list[list[Reply]]) -> list[float]:
    return [sum(r.finished and fmt.verify(p, r.text) for r in s) / len(s)
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
    require_stage(run, run.dir / "base" / "result.json", "base")
    cfg, sc = run.config, run.config.sample
    model, tokenizer = load_model_dir(base_model_dir(run))
    model.to(run.device)
    fmt = run_format(run, tokenizer)
    max_new = max_new_tokens(cfg, fmt)
    t0 = time.perf_counter()
    if run.pairs_path is None:
        heldout, train = prompt_sets(cfg)
        run.log(f"sample: {sc.k} responses to each of {len(train)} train and {len(heldout)} "
                f"held-out prompts ({fmt.kind} format, at most {max_new} new tokens)")
        train_samples = generate(model, fmt, train, max_new_tokens=max_new, num_samples=sc.k,
                                 temperature=sc.temperature, seed=cfg.seed + 1,
                                 device=run.device)
        train_pairs, train_gold = (
            [pr for p, s in zip(train, train_samples, strict=True)
             for pr in _make_pairs(fmt, p, s, sc.pairs_per_prompt, gold=gold)]
            for gold in (False, True))
        train_acc = _accuracy(fmt, train, train_samples)
    else:
        if run.user_pairs is None:
            raise ValueError(f"pairs file {run.pairs_path} was not read")
        rows = list(run.user_pairs)
        random.Random(f"split-{cfg.seed}").shuffle(rows)
        n_held = round(sc.heldout_fraction * len(rows))
        train_pairs, user_heldout = rows[n_held:], rows[:n_held]
        heldout = _unique([r["prompt"] for r in user_heldout
                           if arithmetic.parse_prompt(r["prompt"]) is not None])
        train, train_acc, train_gold = [], [], []
    heldout_samples = generate(model, fmt, heldout, max_new_tokens=max_new, num_samples=sc.k,
                               temperature=sc.temperature, seed=cfg.seed + 2,
                               device=run.device) if heldout else []
    if run.pairs_path is None:
        heldout_pairs = [pr for p, s in zip(heldout, heldout_samples, strict=True)
                         for pr in _make_pairs(fmt, p, s, sc.pairs_per_prompt)]
    else:
        heldout_pairs = user_heldout
    if not train_pairs:
        raise ValueError(
            "empty pair set: no training prompt had both a correct and an incorrect sampled "
            "response (the base model is right on all or on none); change the preset's base "
            "steps, k or prompts" if run.pairs_path is None else
            "empty pair set: no training pairs left after the held-out split")
    greedy = generate(model, fmt, heldout, max_new_tokens=max_new, greedy=True,
                      device=run.device) if heldout else []
    heldout_acc = _accuracy(fmt, heldout, heldout_samples)
    greedy_ok = [bool(g[0].finished and fmt.verify(p, g[0].text))
                 for p, g in zip(heldout, greedy, strict=True)]
    hard = [p for p, a in zip(heldout, heldout_acc, strict=True) if a <= sc.hard_threshold]
    by_level: dict[str, dict[str, float]] = {}
    for lv in sorted({arithmetic.level_of(p) for p in heldout}):
        idx = [i for i, p in enumerate(heldout) if arithmetic.level_of(p) == lv]
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
        "train_pairs_gold": train_gold,
        "heldout_samples": {p: [(r.text, r.finished) for r in s]
                            for p, s in zip(heldout, heldout_samples, strict=True)},
        "format": fmt.kind,
        "max_new_tokens": max_new,
        "base_accuracy": {
            "train_sampled": mean(train_acc),
            "heldout_sampled": mean(heldout_acc),
            "heldout_greedy": mean([float(x) for x in greedy_ok]),
            "hard_greedy": mean([float(ok) for p, ok in zip(heldout, greedy_ok, strict=True)
                                 if p in set(hard)]),
            "by_level": by_level,
        },
        "unfinished": {"train": sum(not r.finished for s in train_samples for r in s)
                       if run.pairs_path is None else None,
                       "heldout": sum(not r.finished for s in heldout_samples for r in s),
                       "heldout_greedy": sum(not g[0].finished for g in greedy)},
        "counts": {"train_prompts": len(train), "heldout_prompts": len(heldout),
                   "hard_prompts": len(hard), "train_pairs": len(train_pairs),
                   "heldout_pairs": len(heldout_pairs), "train_pairs_gold": len(train_gold)},
        "seconds": time.perf_counter() - t0,
    }
    _io.write_jsonl(out / "pairs_train.jsonl", train_pairs)
    _io.write_jsonl(out / "pairs_heldout.jsonl", heldout_pairs)
    if train_gold:
        _io.write_jsonl(out / "pairs_train_gold.jsonl", train_gold)
    _io.write_json(done, data)
    acc = data["base_accuracy"]
    run.log(f"sample: {len(train_pairs)} train pairs ({len(train_gold)} with gold chosen), "
            f"{len(heldout_pairs)} held-out pairs, "
            f"{len(hard)} hard prompts; base greedy held-out accuracy "
            f"{acc['heldout_greedy'] if heldout else float('nan'):.3f}")
    return data

