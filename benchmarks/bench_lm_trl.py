"""Throughput of the align stage against TRL's DPOTrainer on the same model, pairs and device.

    python benchmarks/bench_lm_trl.py --run runs/tiny --steps 40 [--batch-size 16] [--device cpu]
    python benchmarks/bench_lm_trl.py --model smollm2 --run runs/smollm2-cpu --steps 8 \\
        --batch-size 4 --threads 1 --out benchmarks/results/bench_trl_smollm2_cpu.json

``--run`` is a run directory whose base and sample stages have finished (e.g. after
``mi-bounds lm run --preset cpu-tiny --out runs/tiny``). With ``--model NAME`` (``smollm2``, a
``.gguf`` file or a checkpoint directory) a run directory without a finished sample stage is made
first: ``mi-bounds lm base`` and ``sample`` with that model and ``--preset`` (default
``smollm2-cpu``); one that exists must have been made from the same model.

Both trainers start from the run's base model, train with the DPO loss (TRL
``loss_type="sigmoid"``) on the run's training pairs with the same batch size, learning rate and
beta for ``--steps`` optimiser steps, and the script reports training pairs per second and the
ratio. Time is counted per optimiser step on both sides (batch to optimiser step; our periodic
evaluation and TRL's data loading excluded): ours as the stage records it, TRL's by a callback
between ``on_step_begin`` and ``on_step_end``; the first ``--warmup`` steps of each are left out
when there are enough. TRL is run twice: with its default (the reference model runs a forward
pass every step) and with ``precompute_ref_log_probs=True`` (one pass over the data set before
training, inside ``DPOTrainer.__init__``: its extra init time; like our reference pass it is
reported, and both are included in the ``_incl_reference`` ratio). ``tokens_per_s`` is pairs/s
times the mean number of tokens (prompt and response, chosen and rejected) of a train pair, the
same factor for both sides.

For a chat model TRL receives each prompt as the text its chat template renders (with the run's
system message) and the replies as text; TRL appends the EOS token and tokenises
prompt+response itself (with its fused LM head, TRL also computes logits only on completion
positions). Needs ``trl`` and ``datasets`` (not needed by the package). Nothing is downloaded
(``HF_HUB_OFFLINE=1``): the char tokenizer is wrapped as a ``PreTrainedTokenizerFast``, a
pretrained model's tokenizer is read from the run's base model directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

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


def _steady(times: list[float], warmup: int) -> list[float]:
    """Step times without the first ``warmup`` ones (kept if fewer than 3 would remain)."""
    return times[warmup:] if len(times) - warmup >= 3 else times


def ensure_run(run_dir: Path, model: str | None, preset: str, threads: int) -> None:
    """Make the run's base and sample stages with ``--model`` if they are not there."""
    data = run_dir / "sample" / "data.json"
    if model is not None and (run_dir / "inputs.json").is_file():
        spec = json.loads((run_dir / "inputs.json").read_text()).get("model_spec")
        if spec is not None and spec != model:
            raise SystemExit(f"{run_dir} was made with --model {spec}, not {model}")
    if data.is_file():
        return
    if model is None:
        raise SystemExit(f"{run_dir} has no finished sample stage; pass --model to make one")
    exe = [sys.executable, "-m", "mi_bounds.cli", "lm"]
    for stage in ("base", "sample"):
        subprocess.run([*exe, stage, "--model", model, "--preset", preset, "--out",
                        str(run_dir), "--threads", str(threads)], check=True)


def _pair_lengths(run_dir: Path) -> tuple[float, str]:
    """Mean tokens of a train pair (both sequences) as our align stage encodes them; format."""
    from mi_bounds.lm.align import _tokenise
    from mi_bounds.lm.config import RunConfig
    from mi_bounds.lm.task_format import task_format
    from mi_bounds.lm.tokenizer import load_tokenizer

    cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    fmt = task_format(load_tokenizer(run_dir / "base" / "model"), cfg.task.format,
                      cfg.task.system)
    pairs = json.loads((run_dir / "sample" / "data.json").read_text())["train_pairs"]
    chosen, rejected = _tokenise(fmt, pairs)
    total = sum(len(c[0]) + len(r[0]) for c, r in zip(chosen, rejected, strict=True))
    return total / len(pairs), fmt.kind


def bench_ours(run_dir: Path, steps: int, batch_size: int, lr: float, beta: float,
               device: str, warmup: int) -> dict:
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
                                      "eval_every": steps, "ckpt_every": steps,
                                      "kl_prompts": 0, "freeze_embeddings": False})
        cfg = RunConfig.from_dict({**cfg.to_dict(), "grid": ()})  # one setting, no grid
        (d / "config.json").write_text(cfg.to_json())
        run = stages.open_run(d, cfg, device=device, log=lambda m: None)
        data = json.loads((d / "sample" / "data.json").read_text())
        data["heldout_prompts"], data["hard_prompts"] = [], []  # no generation in evaluations
        load_model_dir(d / "base" / "model")  # warm-up: imports and first load not timed
        t0 = time.perf_counter()
        sets = load_reference(run, data)
        ref_seconds = time.perf_counter() - t0
        times: list[float] = []
        _record_align_steps(times)
        try:
            res = stages.align_one(run, "dpo", 0, sets, data)
        finally:
            _record_align_steps(None)
    tp = res["throughput"]
    steady = _steady(times, warmup)
    per_step = sum(steady) / len(steady)
    return {"seconds": tp["seconds"], "step_seconds": [round(t, 3) for t in times],
            "steps_timed": len(steady), "mean_step_seconds": per_step,
            "median_step_seconds": statistics.median(steady),
            "pairs_per_s": batch_size / per_step,
            "pairs_per_s_incl_reference": steps * batch_size / (tp["seconds"] + ref_seconds),
            "tokens_per_s_recorded": tp["tokens_per_s"], "reference_seconds_once": ref_seconds,
            "padding_fraction": tp["padding_fraction"]}


def _record_align_steps(times: list[float] | None) -> None:
    """Time each optimiser step of our align stage: wrap AdamW.step (called once per step,
    after the forward and backward passes) and clock from one step's end to the next (the
    first step is not timed; with evaluation only at the last step nothing else falls in
    between). ``None`` removes the wrapper."""
    cls = torch.optim.AdamW
    if times is None:
        if hasattr(cls, "_bench_step"):
            cls.step = cls._bench_step
            del cls._bench_step
        return
    original = cls.step
    cls._bench_step = original
    state = {"t": None}

    def step(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        now = time.perf_counter()
        if state["t"] is not None:
            times.append(now - state["t"])
        state["t"] = now
        return out

    cls.step = step


def bench_trl(run_dir: Path, steps: int, batch_size: int, lr: float, beta: float, device: str,
              precompute: bool, warmup: int) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from mi_bounds.lm import chat
    from mi_bounds.lm.config import RunConfig
    from mi_bounds.lm.tokenizer import CHAR_TOKENIZER_FILE, CharTokenizer

    model_dir = run_dir / "base" / "model"
    cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    pairs = json.loads((run_dir / "sample" / "data.json").read_text())["train_pairs"]
    if (model_dir / CHAR_TOKENIZER_FILE).is_file():
        tok = _hf_char_tokenizer(CharTokenizer.load(model_dir))
        rows = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
                for p in pairs]
    else:
        tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        rows = [{"prompt": chat.chat_text(tok, p["prompt"], system=cfg.task.system),
                 "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
    ds = Dataset.from_list(rows)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True,
                                                 dtype=torch.float32)
    times: list[float] = []

    def sync() -> None:  # a step's time includes its queued kernels (as in the align stage)
        if device == "cuda":
            torch.cuda.synchronize()

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            times.append(time.perf_counter() - self.t0)

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
        t0 = time.perf_counter()  # tokenisation, and the reference pass with precompute
        trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                             callbacks=[StepClock()])
        init = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = trainer.train()
        total = time.perf_counter() - t0
    runtime = float(out.metrics["train_runtime"])  # the training loop, as TRL reports it
    steady = _steady(times, warmup)
    per_step = sum(steady) / len(steady)
    return {"init_seconds": init, "seconds_train_call": total, "train_runtime": runtime,
            "seconds_all_steps": sum(times),
            "step_seconds": [round(t, 3) for t in times], "steps_timed": len(steady),
            "mean_step_seconds": per_step, "median_step_seconds": statistics.median(steady),
            "pairs_per_s": batch_size / per_step,
            "pairs_per_s_train_runtime": steps * batch_size / runtime,
            "precompute_ref": precompute}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--model", help="smollm2 | PATH.gguf | checkpoint dir: make --run's base "
                   "and sample stages with this model if they are not there")
    p.add_argument("--preset", default="smollm2-cpu", help="preset for a new --run")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=1, help="first steps not timed")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="write the numbers as JSON here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    ensure_run(a.run, a.model, a.preset, a.threads)
    tokens_per_pair, kind = _pair_lengths(a.run)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    ours = bench_ours(a.run, a.steps, a.batch_size, a.lr, a.beta, a.device, a.warmup)
    trl_default = bench_trl(a.run, a.steps, a.batch_size, a.lr, a.beta, a.device, False,
                            a.warmup)
    trl_pre = bench_trl(a.run, a.steps, a.batch_size, a.lr, a.beta, a.device, True, a.warmup)
    for r in (ours, trl_default, trl_pre):
        r["tokens_per_s"] = r["pairs_per_s"] * tokens_per_pair
    # TRL's reference pass (precompute) runs in DPOTrainer.__init__: its extra init time
    trl_pre["reference_pass_seconds"] = trl_pre["init_seconds"] - trl_default["init_seconds"]
    ours_incl = a.steps * a.batch_size / (ours["seconds"] + ours["reference_seconds_once"])
    trl_incl = a.steps * a.batch_size / (trl_pre["seconds_all_steps"]
                                         + max(0.0, trl_pre["reference_pass_seconds"]))
    result = {
        "command": "python benchmarks/bench_lm_trl.py " + " ".join(
            arg if " " not in arg else repr(arg) for arg in (argv or sys.argv[1:])),
        "date": started,
        "machine": f"{platform.machine()} CPU ({os.cpu_count()} cores), {a.threads} torch "
                   f"thread(s)" if a.device == "cpu" else a.device,
        "torch": torch.__version__, "trl_version": __import__("trl").__version__,
        "transformers": __import__("transformers").__version__,
        "device": a.device, "threads": a.threads, "steps": a.steps, "batch_size": a.batch_size,
        "format": kind, "mean_tokens_per_pair": tokens_per_pair,
        "ours": ours, "trl": trl_default, "trl_precompute_ref": trl_pre,
        "ratio_vs_trl": ours["pairs_per_s"] / trl_default["pairs_per_s"],
        "ratio_vs_trl_precompute_ref": ours["pairs_per_s"] / trl_pre["pairs_per_s"],
        "ratio_incl_reference_vs_trl_precompute_ref": ours_incl / trl_incl,
        "note": "pairs_per_s: per optimiser step (batch to optimiser step), the first --warmup "
                "steps left out; TRL's data loading and our evaluation are not counted. "
                "The _incl_reference ratio counts every step (first included) and the one-off "
                "reference pass on both sides (TRL's: its init time with precompute minus "
                "without).",
    }
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
