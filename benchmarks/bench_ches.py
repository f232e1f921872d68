"""CHES over a preference data set with SmolLM2-135M-Instruct on CPU: pairs per second.

    python benchmarks/bench_ches.py --threads 2 --out benchmarks/results/ches_cpu.json

Builds ``--n-pairs`` synthetic pairs in TRL's format (an arithmetic question as the prompt, two
replies of ``--words`` random words from a fixed list; through SmolLM2's chat template each
sequence is about 61 tokens, 39 of them the prompt with the template's system message), then
runs ``mi-bounds ches`` on them end to end (:func:`mi_bounds.decline.ches_cli.main`: read and
encode, load the model, score, write the scores JSONL) and times it; the model load is timed on
its own beforehand (the checkpoint is read from the cache that ``resolve_model("smollm2")``
fills on first use).
Timings depend on the machine's load: the load average is recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

WORDS = ("the answer is simply found by adding both numbers together and checking each digit "
         "carefully so that no carry is lost when we write down the final result here").split()


def make_pairs(n: int, words: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        reply = [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(2)]
        out.append({"prompt": f"What is {a}+{b}?", "chosen": f"{reply[0]} {a + b}.",
                    "rejected": f"{reply[1]} {a + b + rng.choice((-10, -1, 1, 10))}."})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-pairs", type=int, default=1000)
    p.add_argument("--words", type=int, default=14, help="words per reply (14: ~61 tokens "
                   "per sequence, 39 of them the chat prompt)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from mi_bounds.decline.ches_cli import main as ches_main
    from mi_bounds.decline.displacement import read_ches_scores
    from mi_bounds.lm.model import load_model_dir
    from mi_bounds.lm.pretrained import resolve_model
    from mi_bounds.lm.task_format import task_format

    t0 = time.perf_counter()
    ckpt = resolve_model("smollm2")
    resolve_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, tok = load_model_dir(ckpt)
    load_s = time.perf_counter() - t0
    fmt = task_format(tok, "auto")
    pairs = make_pairs(args.n_pairs, args.words)
    lengths = [len(fmt.encode(q["prompt"], q[k])[0]) for q in pairs for k in ("chosen",
                                                                               "rejected")]
    with tempfile.TemporaryDirectory() as d:
        src, out = Path(d) / "pairs.jsonl", Path(d) / "scores.jsonl"
        src.write_text("".join(json.dumps(q) + "\n" for q in pairs))
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        c0 = time.process_time()
        code = ches_main(["--model", "smollm2", "--pairs", str(src), "--out", str(out),
                          "--threads", str(args.threads), "--batch-size",
                          str(args.batch_size), "--no-progress"])
        total = time.perf_counter() - t0
        cpu = time.process_time() - c0
        load_after = os.getloadavg()
        if code != 0:
            raise SystemExit(f"mi-bounds ches failed with exit code {code}")
        rows = read_ches_scores(out)
    ches = [r["ches"] for r in rows]
    result = {
        "command": f"python benchmarks/bench_ches.py --threads {args.threads} --n-pairs "
                   f"{args.n_pairs} --words {args.words} --batch-size {args.batch_size}"
                   + (f" --out {args.out}" if args.out else ""),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {args.threads} torch "
                   "threads",
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "torch": torch.__version__,
        "model": "smollm2 (SmolLM2-135M-Instruct, float32)",
        "format": fmt.kind,
        "n_pairs": args.n_pairs,
        "tokens_per_sequence": {"mean": round(statistics.mean(lengths), 1),
                                "min": min(lengths), "max": max(lengths)},
        "resolve_model_s": round(resolve_s, 2),
        "load_model_s": round(load_s, 2),
        "total_s": round(total, 1),
        "process_cpu_s": round(cpu, 1),
        "pairs_per_s": round(args.n_pairs / total, 2),
        "tokens_per_s": round(sum(lengths) / total, 1),
        "target": "1,000 pairs in <= 180 s",
        "ches_summary": {"median": statistics.median(ches), "min": min(ches),
                         "max": max(ches)},
    }
    text = json.dumps(result, indent=1)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
