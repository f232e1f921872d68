"""Time the parts of one `smollm2-study` evaluation on SmolLM2-135M-Instruct (CPU).

One DPO training step of 4 pairs (three times), scoring the 119 train pairs of
``results/lm-smollm2-cpu/long`` (chosen and rejected), the sampled KL from 32 prompts x 2 replies
(48-token budget) and greedy accuracy on 96 level-1/2 prompts, through the align stage's own
functions. Needs the converted model in ``~/.cache/mi-bounds/smollm2-135m-instruct`` (docs/LM.md).

    OMP_NUM_THREADS=1 python benchmarks/bench_smollm2_study_eval.py

Prints the seconds of each part (the estimate in results/smollm2-study/PREREGISTRATION.md).
"""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path

import torch

from mi_bounds.lm import align, arithmetic
from mi_bounds.lm.logps import pad_sequences, response_logps
from mi_bounds.lm.model import load_model_dir
from mi_bounds.lm.task_format import task_format
from mi_bounds.preference import preference_loss


def main() -> None:
    torch.set_num_threads(1)
    model, tok = load_model_dir(Path.home() / ".cache/mi-bounds/smollm2-135m-instruct")
    fmt = task_format(tok, "chat", system=None)
    src = Path("results/lm-smollm2-cpu/long/pairs_train.jsonl")
    pairs = [json.loads(line) for line in src.read_text().splitlines()]
    chosen, rejected = align._tokenise(fmt, pairs)
    dev = torch.device("cpu")
    ref = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95))
    model.train()
    steps = []
    for s in range(3):
        idx = list(range(4 * s, 4 * s + 4))
        t0 = time.perf_counter()
        b = pad_sequences([chosen[i] for i in idx] + [rejected[i] for i in idx], fmt.pad_id)
        lp = response_logps(model, b).float()
        loss = preference_loss("dpo", lp[:4], lp[4:], lp[:4].detach(), lp[4:].detach(),
                               beta=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps.append(time.perf_counter() - t0)
    print("train step (4 pairs), s:", [round(t, 2) for t in steps], flush=True)
    t0 = time.perf_counter()
    align._pair_logps(model, chosen, rejected, fmt.pad_id, dev)
    print(f"score {len(chosen)} train pairs: {time.perf_counter() - t0:.1f} s", flush=True)
    prompts = arithmetic.sample_prompts(random.Random(1), 96, [1, 2], [1.0, 1.0], "+",
                                        unique=True)
    t0 = time.perf_counter()
    kl = align._sampled_kl(model, ref, fmt, prompts[:32], 2, 48, 17, dev)
    print(f"sampled KL, 32 prompts x 2: {time.perf_counter() - t0:.1f} s ({kl})", flush=True)
    t0 = time.perf_counter()
    ok = align._greedy_correct(model, fmt, prompts, 48, dev)
    print(f"greedy accuracy, 96 prompts: {time.perf_counter() - t0:.1f} s "
          f"(accuracy {sum(ok) / len(ok):.2f})", flush=True)


if __name__ == "__main__":
    main()
