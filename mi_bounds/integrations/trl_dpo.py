"""TRL's ``trl dpo`` training script with :class:`~mi_bounds.integrations.trl.MIDPOTrainer`.

The same arguments as TRL 1.16's ``trl/scripts/dpo.py`` (``ScriptArguments``, ``DPOConfig``,
``ModelConfig``, ``DatasetMixtureConfig``, parsed by TRL's own ``TrlParser``, ``--config
file.yaml`` included); ``--loss_type`` may also name any loss of :mod:`mi_bounds.preference`,
and :class:`~mi_bounds.integrations.decline_callback.DeclineCallback` is attached. One GPU::

    python -m mi_bounds.integrations.trl_dpo --model_name_or_path Qwen/Qwen2-0.5B-Instruct \\
        --dataset_name trl-lib/ultrafeedback_binarized --loss_type mio --beta 0.1 \\
        --learning_rate 5e-7 --per_device_train_batch_size 2 --gradient_accumulation_steps 8 \\
        --eval_strategy steps --eval_steps 50 --output_dir Qwen2-0.5B-MIO

Several GPUs or nodes: the same arguments after ``accelerate launch`` with one of TRL's
configurations (``multi_gpu.yaml``, ``zero1/2/3.yaml`` for DeepSpeed, ``fsdp1/2.yaml``), e.g.::

    accelerate launch --config_file "$(python -c 'import trl, os; print(os.path.join(
        os.path.dirname(trl.__file__), "accelerate_configs", "zero3.yaml"))')" \\
        --num_processes 8 -m mi_bounds.integrations.trl_dpo <the arguments above>

docs/TRL.md says which of these were run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "train"]


def train(argv: Sequence[str] | None = None) -> Any:
    """Parse TRL's DPO arguments, train with MIDPOTrainer, save the model and the state.

    Returns the trainer (after ``trainer.end()``: the process group is closed)."""
    from datasets import load_dataset
    from trl import get_dataset, get_peft_config, get_quantization_config
    from trl.scripts.dpo import make_parser

    from mi_bounds.integrations.trl import DeclineCallback, MIDPOTrainer

    parser = make_parser(prog="python -m mi_bounds.integrations.trl_dpo")
    script_args, training_args, model_args, dataset_args = parser.parse_args_and_config(
        args=list(sys.argv[1:] if argv is None else argv), fail_with_unknown_args=True)
    model_init_kwargs = dict(
        revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation, dtype=model_args.dtype)
    training_args.model_init_kwargs = {**model_init_kwargs,
                                       **(training_args.model_init_kwargs or {})}
    if dataset_args.datasets:
        dataset = get_dataset(dataset_args)
    elif script_args.dataset_name:
        dataset = load_dataset(script_args.dataset_name, name=script_args.dataset_config,
                               streaming=script_args.dataset_streaming)
    else:
        parser.error("give --dataset_name (or datasets in a --config file)")
    trainer = MIDPOTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=dataset[script_args.dataset_train_split],
        eval_dataset=(dataset[script_args.dataset_test_split]
                      if training_args.eval_strategy != "no" else None),
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
        callbacks=[DeclineCallback()],
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    trainer.accelerator.print(
        f"mi-bounds: trained with {training_args.loss_type} on "
        f"{trainer.accelerator.num_processes} process(es); model and trainer_state.json in "
        f"{training_args.output_dir}; `mi-bounds diagnose {training_args.output_dir}`")
    if hasattr(trainer, "end"):  # transformers >= 5.18: finish trackers, destroy the group
        trainer.end()
    return trainer


def main(argv: Sequence[str] | None = None) -> int:
    """Train (see :func:`train`) and return the exit code 0."""
    train(argv)
    return 0


if __name__ == "__main__":
    # Keep the trainer alive and leave without running destructors. With gloo (CPU), freeing the
    # DDP reducer sometimes deadlocks inside torch 2.13: ProcessGroupGloo's destructor joins its
    # worker thread while holding the GIL, and that thread waits for the GIL to free a gathered
    # tensor (2 of the first 13 two-process runs here; docs/TRL.md). Everything is saved and the
    # process group closed (trainer.end()) by the time train() returns.
    _trainer = train()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
