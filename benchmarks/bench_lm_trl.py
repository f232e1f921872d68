"""Throughput of the align stage against TRL's DPOTrainer on the same model, pairs and device.

    python benchmarks/bench_lm_trl.py --run runs/tiny --steps 40 [--batch-size 16] [--device cpu]

``--run`` is a run directory whose base and sample stages have finished (e.g. after
``mi-bounds lm run --preset cpu-tiny --out runs/tiny``). Both trainers start from the run's base
model, train with the DPO loss (TRL ``loss_type="sigmoid"``) on the run's training pairs with the
same batch size, learning rate and beta for ``--steps`` optimiser steps, and the script reports
training pairs per second and the ratio: ours over the optimiser steps (our periodic evaluation
excluded), TRL's over its ``train_runtime`` (the training loop as TRL reports it). TRL is run twice:
with its default (reference model forward each step) and with ``precompute_ref_log_probs=True``;
our stage always uses the stored reference log-probabilities. The reference pass itself (once per
run for us) is timed separately. Needs ``trl`` and ``datasets`` (not needed by the package).
Nothing is downloaded: the tokenizer is the run's character tokenizer wrapped as a
``PreTrainedTokenizerFast``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch


def _hf_char_tokenizer(char_tok):
    """The run's character tokenizer as a transformers fast tokenizer (same ids)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(char_tok.itos)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>")


def bench_ours(run_dir: Path, steps: int, batch_size: int, lr: float, beta: float,
               device: str) -> dict:
    from mi_bounds.lm import stages
    from mi_bounds.lm.align import load_reference
    from mi_bounds.lm.config import RunConfig
    from mi_bounds.lm.model import load_model_dir

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "run"
        d.mkdir()
        for name in ("config.json", "inputs.json"):
            shutil.copy(run_dir / name, d / name)
        shutil.copytree(run_dir / "base", d / "base")
        shutil.copytree(run_dir / "sample", d / "sample")
        base_cfg = RunConfig.from_dict(json.loads((d / "config.json").read_text()))
        cfg = base_cfg.replace(align={"losses": ("dpo",), "seeds": (0,), "steps": steps,
                                      "batch_size": batch_size, "lr": lr, "beta": beta,
                                      "eval_every": steps, "ckpt_every": steps})
        run = stages.open_run(d, cfg, device=device, log=lambda m: None)
        data = json.loads((d / "sample" / "data.json").read_text())
        load_model_dir(d / "base" / "model")  # warm-up: imports and first load not timed
        t0 = time.perf_counter()
        sets = load_reference(run, data)
        ref_seconds = time.perf_counter() - t0
        res = stages.align_one(run, "dpo", 0, sets, data)
    tp = res["throughput"]
    return {"seconds": tp["seconds"], "pairs_per_s": steps * batch_size / tp["seconds"],
            "pairs_per_s_incl_reference": steps * batch_size / (tp["seconds"] + ref_seconds),
            "tokens_per_s": tp["tokens_per_s"], "reference_seconds_once": ref_seconds,
            "padding_fraction": tp["padding_fraction"]}


def bench_trl(run_dir: Path, steps: int, batch_size: int, lr: float, beta: float, device: str,
              precompute: bool) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from mi_bounds.lm.tokenizer import CharTokenizer

    model_dir = run_dir / "base" / "model"
    tok = _hf_char_tokenizer(CharTokenizer.load(model_dir))
    pairs = json.loads((run_dir / "sample" / "data.json").read_text())["train_pairs"]
    ds = Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"],
                             "rejected": p["rejected"]} for p in pairs])
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True)
    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(output_dir=tmp, per_device_train_batch_size=batch_size, max_steps=steps,
                         learning_rate=lr, beta=beta, loss_type=["sigmoid"],
                         lr_scheduler_type="constant", warmup_steps=0,
                         use_cpu=device == "cpu", bf16=device != "cpu", report_to=[],
                         logging_steps=steps, save_strategy="no", disable_tqdm=True,
                         precompute_ref_log_probs=precompute, dataloader_num_workers=0,
                         max_grad_norm=1.0, seed=0,
                         # TRL >= 1.0 checkpoints activations by default (recomputing the
                         # forward pass in backward); the align stage does not: same settings
                         # (benchmarks/trl_checkpointing.py measures what it costs TRL)
                         gradient_checkpointing=False)
        trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        t0 = time.perf_counter()
        out = trainer.train()
        total = time.perf_counter() - t0
    runtime = float(out.metrics["train_runtime"])  # the training loop, as TRL reports it
    return {"seconds_train_call": total, "train_runtime": runtime,
            "pairs_per_s": steps * batch_size / runtime, "precompute_ref": precompute}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="write the numbers as JSON here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    ours = bench_ours(a.run, a.steps, a.batch_size, a.lr, a.beta, a.device)
    trl_default = bench_trl(a.run, a.steps, a.batch_size, a.lr, a.beta, a.device, False)
    trl_pre = bench_trl(a.run, a.steps, a.batch_size, a.lr, a.beta, a.device, True)
    result = {
        "device": a.device, "threads": a.threads, "steps": a.steps, "batch_size": a.batch_size,
        "ours": ours, "trl": trl_default, "trl_precompute_ref": trl_pre,
        "ratio_vs_trl": ours["pairs_per_s"] / trl_default["pairs_per_s"],
        "ratio_vs_trl_precompute_ref": ours["pairs_per_s"] / trl_pre["pairs_per_s"],
        "ratio_incl_reference_vs_trl_precompute_ref":
            ours["pairs_per_s_incl_reference"] / trl_pre["pairs_per_s"],
        "note": "TRL's train_runtime includes its per-step data collation and, with "
                "precompute_ref_log_probs, its reference pass; ours excludes the one-off "
                "reference pass (reported separately, and included in the _incl_reference "
                "ratio).",
    }
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
