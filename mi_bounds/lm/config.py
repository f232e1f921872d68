"""Configuration of a small-LM run: validated dataclasses and named presets.

A run is described by one :class:`RunConfig` (model size, task, and the settings of the base,
sample and align stages). It is written to ``<run dir>/config.json`` by the first stage and every
later invocation on the same directory must agree with it (except for the loss and seed
selection, which may grow between invocations), so a re-run with the same command resumes.

Presets (see :data:`PRESETS`):

* ``cpu-tiny``: seconds on a 2-core CPU; used by the tests.
* ``cpu-small``: a few minutes on one CPU core; the old design of docs/RESULTS.md §5.2 (193
  pairs, 17–25 epochs: it cannot show a late-stage shape).
* ``cpu-decline``: the decline study on CPU (docs/RESULTS.md §5.1; 29 min on one shared core):
  2,220 on-policy pairs, 3 epochs, β = 0.1, lr 3e-5 and 1e-5, six losses (dpo, mio, ipo, rpo,
  sft, bco_pair) × 3 seeds, and dpo/mio on the off-policy gold pairs: a ``grid`` of 3 settings.
* ``gpu-small``: the same design at full size for one H100 (10.6 M parameters; β ∈ {0.01, 0.1,
  0.5} × lr ∈ {1e-4, 3e-5, 1e-5, 3e-6}, gold pairs at lr 1e-5 for each β; 270 runs). Estimate
  (docs/RESULTS.md §5.4): ≈ 1.9e16 FLOP, 6–10 min at 3–5 % MFU; with per-step overhead about
  one hour. Not yet run.
* ``chat-tiny``: a tiny chat model (a GGUF file given with ``--model``; the tests' one) end to
  end in seconds.
* ``smollm2-cpu``: SmolLM2-135M-Instruct (``model.pretrained = "smollm2"``) through the chat
  template, levels 1-2, on one CPU core in about an hour (docs/RESULTS.md §5.5).
* ``smollm2-gpu``: the same at GPU size for one H100 (docs/LM.md: FLOP estimate; not run).
* ``smollm2-study``: the pre-registered decline study on CPU (results/smollm2-study/
  PREREGISTRATION.md): dpo/mio at lr 1e-5, mio at 3e-5, ipo/rpo at 1e-5 (a grid), every pair
  logged; ``smollm2-study-gpu`` its GPU size (β and rate sweep, 5 seeds; not run).

Why one module: the sections, their validation and the presets built from them are one
schema; a preset is read next to the fields it sets.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from mi_bounds._validation import as_real, check_int

__all__ = [
    "PRESETS",
    "AlignConfig",
    "BaseConfig",
    "ModelConfig",
    "RunConfig",
    "SampleConfig",
    "TaskConfig",
    "get_preset",
]


def _check_int(value: object, name: str, *, minimum: int = 1) -> None:
    check_int(value, name, minimum=minimum)


def _check_float(value: object, name: str, *, low: float = 0.0, inclusive: bool = False) -> None:
    v = as_real(value, name, finite=False)
    if not (v >= low if inclusive else v > low) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number {'>=' if inclusive else '>'} {low}, "
                         f"got {v}")


def _as_tuple(value: object, name: str, scalar: type | tuple[type, ...]) -> tuple:
    """A list field as a tuple: a list or tuple as it is, one scalar of type ``scalar`` as a
    one-element tuple (``--set align.seeds=0``, ``--set align.losses=dpo``); anything else is a
    ``TypeError`` naming the field. A string is never split into characters."""
    if isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(value, scalar) and not isinstance(value, bool):
        return (value,)
    names = scalar.__name__ if isinstance(scalar, type) else " or ".join(s.__name__ for s in scalar)
    raise TypeError(f"{name} must be a list of {names} (or one {names}), "
                    f"got {type(value).__name__} {value!r}")


@dataclass
class ModelConfig:
    """The base model: a pretrained one (``pretrained``, or ``--model``, which wins), else a
    Llama-style causal LM of this size built and trained by the base stage."""

    #: a named real model (``smollm2``), a ``.gguf`` file or a checkpoint directory to start
    #: from (:func:`mi_bounds.lm.pretrained.resolve_model`); None: build and train one
    pretrained: str | None = None
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    #: context length in tokens (prompt + response + BOS/EOS must fit)
    context: int = 24

    def __post_init__(self) -> None:
        if self.pretrained is not None and (not isinstance(self.pretrained, str)
                                            or not self.pretrained):
            raise TypeError(f"model.pretrained must be a non-empty string or null, got "
                            f"{self.pretrained!r}")
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "context"):
            _check_int(getattr(self, name), f"model.{name}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"model.hidden_size ({self.hidden_size}) must be divisible by "
                             f"model.num_heads ({self.num_heads})")
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError("model.hidden_size / model.num_heads must be even (rotary embeddings)")


@dataclass
class TaskConfig:
    """The arithmetic task: ``a<op>b=`` with ``level``-digit operands; the answer is the result."""

    #: difficulty levels (operand digit counts) used for base training and prompts
    levels: tuple[int, ...] = (1, 2)
    #: relative frequency of each level in base training and in the prompt sets
    level_weights: tuple[float, ...] = (1.0, 1.0)
    #: operators drawn uniformly: any of "+", "-", "*"
    ops: str = "+"
    #: how the model sees the task (mi_bounds.lm.task_format): "raw" (``a+b=``, the answer
    #: exactly), "chat" (the tokenizer's chat template, the reply's last integer), or "auto":
    #: chat iff the model's tokenizer has a chat template
    format: str = "auto"
    #: chat format: the system message (None: the chat template's default one)
    system: str | None = None

    def __post_init__(self) -> None:
        if self.format not in ("auto", "raw", "chat"):
            raise ValueError(f"task.format must be one of auto, raw, chat, got {self.format!r}")
        if self.system is not None and not isinstance(self.system, str):
            raise TypeError(f"task.system must be a string or null, got {self.system!r}")
        self.levels = _as_tuple(self.levels, "task.levels", int)
        weights = _as_tuple(self.level_weights, "task.level_weights", (int, float))
        for w in weights:
            _check_float(w, "task.level_weights[i]")
        self.level_weights = tuple(float(w) for w in weights)
        if not self.levels:
            raise ValueError("task.levels must not be empty")
        for lv in self.levels:
            _check_int(lv, "task.levels[i]")
            if lv > 9:
                raise ValueError(f"task.levels entries must be <= 9 digits, got {lv}")
        if len(self.level_weights) != len(self.levels):
            raise ValueError(f"task.level_weights must have one entry per level "
                             f"({len(self.levels)}), got {len(self.level_weights)}")
        if not self.ops or any(op not in "+-*" for op in self.ops):
            raise ValueError(
                f"task.ops must be a non-empty string of '+', '-', '*', got {self.ops!r}")


@dataclass
class BaseConfig:
    """Base stage: supervised training of the fresh model on the task (answer tokens only)."""

    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 20
    weight_decay: float = 0.0
    #: write a resumable checkpoint every this many steps
    ckpt_every: int = 100

    def __post_init__(self) -> None:
        _check_int(self.steps, "base.steps", minimum=0)
        _check_int(self.batch_size, "base.batch_size")
        _check_float(self.lr, "base.lr")
        _check_int(self.warmup, "base.warmup", minimum=0)
        _check_float(self.weight_decay, "base.weight_decay", inclusive=True)
        _check_int(self.ckpt_every, "base.ckpt_every")


@dataclass
class SampleConfig:
    """Sample stage: k responses per prompt from the base model, labelled by the verifier."""

    n_train_prompts: int = 128
    n_heldout_prompts: int = 64
    #: responses sampled per prompt
    k: int = 8
    temperature: float = 1.0
    #: at most this many (chosen, rejected) pairs per prompt
    pairs_per_prompt: int = 2
    #: a held-out prompt is "hard" when the base model's sampled accuracy on it is <= this
    hard_threshold: float = 0.0
    #: with --pairs FILE: fraction of the user's pairs kept out of training (held-out pairs)
    heldout_fraction: float = 0.1
    #: token budget of a response (sampling, greedy accuracy, the sampled KL); a response
    #: without EOS within it counts as incorrect and is never paired. 0: the raw format's
    #: longest answer + 2, or 64 for the chat format
    max_new_tokens: int = 0

    def __post_init__(self) -> None:
        _check_int(self.max_new_tokens, "sample.max_new_tokens", minimum=0)
        _check_int(self.n_train_prompts, "sample.n_train_prompts")
        _check_int(self.n_heldout_prompts, "sample.n_heldout_prompts")
        _check_int(self.k, "sample.k", minimum=2)
        _check_float(self.temperature, "sample.temperature")
        _check_int(self.pairs_per_prompt, "sample.pairs_per_prompt")
        _check_float(self.hard_threshold, "sample.hard_threshold", inclusive=True)
        _check_float(self.heldout_fraction, "sample.heldout_fraction", inclusive=True)
        if self.heldout_fraction >= 1:
            raise ValueError(f"sample.heldout_fraction must be < 1, got {self.heldout_fraction}")


#: the chosen-response sources of the align stage (see ``AlignConfig.chosen``)
CHOSEN = ("sampled", "gold")


@dataclass
class AlignConfig:
    """Align stage: one run per (loss, seed), all from the same base model and pairs."""

    losses: tuple[str, ...] = ("dpo", "mio", "ipo")
    seeds: tuple[int, ...] = (0,)
    beta: float = 0.1
    lr: float = 1e-3
    steps: int = 30
    #: pairs per step (each step runs 2 * batch_size sequences in one forward pass)
    batch_size: int = 16
    #: record metrics every this many steps (and at step 0 and the last step)
    eval_every: int = 10
    #: write a resumable checkpoint every this many steps
    ckpt_every: int = 10
    #: train pairs used for the recorded train metrics (the first n of the train pairs; 0: all)
    n_eval_pairs: int = 64
    max_grad_norm: float = 1.0
    #: save each aligned model (save_pretrained) next to its metrics
    save_models: bool = False
    #: which chosen responses to train on: "sampled" (the base model's own correct samples,
    #: on-policy) or "gold" (the verified answer of every prompt with an incorrect sample, paired
    #: with that sample: off-policy where the base model never answered correctly)
    chosen: str = "sampled"
    #: weight α of the chosen NLL in the "rpo" loss (TRL's rpo_alpha)
    rpo_alpha: float = 1.0
    #: held-out prompts for the sampled estimate of KL(π‖π_ref) at each evaluation (0: none)
    kl_prompts: int = 32
    #: responses sampled from π per prompt for that estimate
    kl_samples: int = 4
    #: greedy held-out accuracy every this many steps (and at step 0 and the last step), on the
    #: evaluation steps only; 0: at every evaluation. (Generation is the dearest part of an
    #: evaluation for a real model.)
    acc_every: int = 0
    #: train the model without its token embedding (tied to the LM head in SmolLM2 and the
    #: character Llama, so the head is frozen too): fewer parameters for AdamW to update
    freeze_embeddings: bool = False
    #: also record, at every evaluation, each evaluated pair's chosen and rejected
    #: log-probability and reward margin (``"logps/chosen/per_pair"``,
    #: ``"logps/rejected/per_pair"``, ``"rewards/margins/per_pair"``: lists in pair order,
    #: rounded to 4 decimals) for the train and the held-out pairs: what the two-level
    #: bootstrap over seeds and pairs reads
    per_pair: bool = False
    #: also record, wherever the greedy accuracy is measured, each held-out prompt's 0/1
    #: correctness (``acc_heldout_per_prompt``, in the order of the held-out prompts), so that
    #: two runs can be compared prompt by prompt
    per_prompt_accuracy: bool = False

    def __post_init__(self) -> None:
        self.losses = _as_tuple(self.losses, "align.losses", str)
        self.seeds = _as_tuple(self.seeds, "align.seeds", int)
        if not self.losses:
            raise ValueError("align.losses must not be empty")
        for loss in self.losses:
            if not isinstance(loss, str):
                raise TypeError(f"align.losses entries must be str, got {type(loss).__name__} "
                                f"{loss!r}")
        if any(":" in loss for loss in self.losses):  # a loss of your own, FILE.py:FUNCTION
            from mi_bounds.preference import load_loss  # registers it; the run keeps its name

            self.losses = tuple(load_loss(x) if ":" in x else x for x in self.losses)
        if len(set(self.losses)) != len(self.losses):
            raise ValueError(f"align.losses has duplicates: {self.losses}")
        if not self.seeds:
            raise ValueError("align.seeds must not be empty")
        for s in self.seeds:
            _check_int(s, "align.seeds[i]", minimum=0)
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"align.seeds has duplicates: {self.seeds}")
        _check_float(self.beta, "align.beta")
        _check_float(self.lr, "align.lr")
        _check_int(self.steps, "align.steps")
        _check_int(self.batch_size, "align.batch_size")
        _check_int(self.eval_every, "align.eval_every")
        _check_int(self.ckpt_every, "align.ckpt_every")
        _check_int(self.n_eval_pairs, "align.n_eval_pairs", minimum=0)
        _check_float(self.max_grad_norm, "align.max_grad_norm")
        if self.chosen not in CHOSEN:
            raise ValueError(f"align.chosen must be one of {', '.join(CHOSEN)}, "
                             f"got {self.chosen!r}")
        _check_float(self.rpo_alpha, "align.rpo_alpha", inclusive=True)
        _check_int(self.kl_prompts, "align.kl_prompts", minimum=0)
        _check_int(self.kl_samples, "align.kl_samples")
        _check_int(self.acc_every, "align.acc_every", minimum=0)
        for name in ("freeze_embeddings", "per_pair", "per_prompt_accuracy"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"align.{name} must be true or false, got "
                                f"{getattr(self, name)!r}")


@dataclass
class RunConfig:
    """Everything a run needs; written to ``<run dir>/config.json``."""

    preset: str = "cpu-tiny"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    #: peak FLOP/s used for the MFU estimate on CPU (a nominal figure; pass --peak-tflops)
    cpu_peak_flops: float = 1e11
    #: peak FLOP/s used for the MFU estimate on CUDA (H100 SXM dense bf16: 989 TFLOP/s)
    cuda_peak_flops: float = 989e12
    #: align settings run side by side from the same base and samples (``mi-bounds lm run``
    #: runs each as its own run directory ``DIR/grid/<name>``): each entry overrides fields of
    #: ``align``, e.g. ``{"beta": 0.1, "lr": 5e-5, "chosen": "gold", "losses": ["dpo"]}``
    grid: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        _check_int(self.seed, "seed", minimum=0)
        for name, cls in (("model", ModelConfig), ("task", TaskConfig), ("base", BaseConfig),
                          ("sample", SampleConfig), ("align", AlignConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, _from_dict(cls, value, name))
            elif not isinstance(value, cls):
                raise TypeError(f"{name} must be a {cls.__name__} or dict")
        _check_float(self.cpu_peak_flops, "cpu_peak_flops")
        _check_float(self.cuda_peak_flops, "cuda_peak_flops")
        self.grid = tuple(
            {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
            if isinstance(entry, dict) else entry
            for entry in _as_tuple(self.grid, "grid", dict))
        names = [self.variant_name(i) for i in range(len(self.grid))]  # validates each entry
        if len(set(names)) != len(names):
            raise ValueError(f"grid has repeated settings: {names}")

    def variant(self, i: int) -> RunConfig:
        """The single-setting config of grid entry ``i``: ``align`` overridden, no grid."""
        entry = self.grid[i]
        if not isinstance(entry, dict):
            raise TypeError(f"grid[{i}] must be a JSON object of align fields")
        entry = {k: v for k, v in entry.items() if k != "tag"}
        data = self.to_dict()
        unknown = set(entry) - set(data["align"])
        if unknown:
            raise ValueError(f"grid[{i}]: unknown align field(s) {sorted(unknown)}; valid: "
                             f"{sorted(data['align'])}")
        data["align"].update(entry)
        data["grid"] = ()
        return RunConfig.from_dict(data)

    def variant_name(self, i: int) -> str:
        """Directory name of grid entry ``i``: ``beta<β>-lr<lr>[-gold]`` plus any other
        overridden field as ``-<field><value>`` (losses and seeds are not part of it), plus
        ``-<tag>`` where the entry has a ``"tag"`` (a name, not an align field: it tells apart
        two entries that differ only in their losses or seeds)."""
        a = self.variant(i).align
        name = f"beta{a.beta:g}-lr{a.lr:g}" + ("-gold" if a.chosen == "gold" else "")
        for key in sorted(self.grid[i]):
            if key not in ("beta", "lr", "chosen", "losses", "seeds", "tag"):
                name += f"-{key}{self.grid[i][key]}"
        tag = self.grid[i].get("tag")
        if tag is not None:
            if not isinstance(tag, str) or not re.fullmatch(r"[A-Za-z0-9_.]+", tag):
                raise ValueError(f"grid[{i}].tag must be a non-empty string of letters, digits, "
                                 f"'_' and '.', got {tag!r}")
            name += f"-{tag}"
        return name.replace("/", "_").replace(" ", "")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return _from_dict(cls, data, "config")

    def replace(self, **sections: dict[str, Any]) -> RunConfig:
        """A copy with fields of sections replaced, e.g. ``replace(align={"seeds": (0, 1)})``."""
        data = self.to_dict()
        for section, updates in sections.items():
            if section not in data:
                raise ValueError(f"unknown config section {section!r}")
            if isinstance(updates, dict):
                data[section].update(updates)
            else:
                data[section] = updates
        return RunConfig.from_dict(data)


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"{where} must be a JSON object")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown field(s) in {where}: {sorted(unknown)}; valid: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


#: The losses of the decline study : the two the claim is about, IPO, DPO with an NLL
#: term on the chosen response (RPO), chosen-only SFT, and the rejected-only JS bound (bco_pair).
_DECLINE_LOSSES = ("dpo", "mio", "ipo", "rpo", "sft", "bco_pair")

#: Named presets. ``cpu-tiny`` is what the tests run; ``cpu-decline`` the CPU decline study;
#: ``gpu-small`` its full grid for one GPU.
PRESETS: dict[str, RunConfig] = {
    "cpu-tiny": RunConfig(
        preset="cpu-tiny",
        model=ModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                          context=16),
        task=TaskConfig(levels=(1, 2), level_weights=(1.0, 3.0), ops="+"),
        base=BaseConfig(steps=200, batch_size=32, lr=3e-3, warmup=20, ckpt_every=50),
        sample=SampleConfig(n_train_prompts=64, n_heldout_prompts=32, k=8, pairs_per_prompt=2),
        align=AlignConfig(losses=("dpo", "mio", "ipo"), seeds=(0,), beta=0.1, lr=1e-3, steps=24,
                          batch_size=8, eval_every=8, ckpt_every=8, n_eval_pairs=32),
    ),
    "cpu-small": RunConfig(
        preset="cpu-small",
        model=ModelConfig(hidden_size=96, num_layers=3, num_heads=4, intermediate_size=256,
                          context=20),
        task=TaskConfig(levels=(1, 2, 3), level_weights=(1.0, 3.0, 3.0), ops="+"),
        base=BaseConfig(steps=1200, batch_size=64, lr=3e-3, warmup=50, ckpt_every=200),
        sample=SampleConfig(n_train_prompts=384, n_heldout_prompts=128, k=8, pairs_per_prompt=2),
        align=AlignConfig(losses=("dpo", "mio", "ipo"), seeds=(0, 1, 2), beta=0.1, lr=5e-4,
                          steps=200, batch_size=16, eval_every=20, ckpt_every=50,
                          n_eval_pairs=128),
    ),
    "cpu-decline": RunConfig(
        preset="cpu-decline",
        model=ModelConfig(hidden_size=96, num_layers=3, num_heads=4, intermediate_size=256,
                          context=20),
        task=TaskConfig(levels=(1, 2, 3), level_weights=(1.0, 2.0, 6.0), ops="+"),
        base=BaseConfig(steps=1200, batch_size=64, lr=3e-3, warmup=50, ckpt_every=200),
        sample=SampleConfig(n_train_prompts=3600, n_heldout_prompts=256, k=8,
                            pairs_per_prompt=4),
        align=AlignConfig(losses=_DECLINE_LOSSES, seeds=(0, 1, 2), beta=0.1, lr=1e-5,
                          steps=210, batch_size=32, eval_every=10, ckpt_every=30,
                          n_eval_pairs=256, kl_prompts=32, kl_samples=4),
        grid=({"lr": 3e-5}, {"lr": 1e-5}, {"lr": 1e-5, "chosen": "gold", "losses": ("dpo", "mio")}),
    ),
    "gpu-small": RunConfig(
        preset="gpu-small",
        model=ModelConfig(hidden_size=384, num_layers=6, num_heads=6, intermediate_size=1024,
                          context=32),
        task=TaskConfig(levels=(2, 3, 4), level_weights=(1.0, 2.0, 4.0), ops="+"),
        base=BaseConfig(steps=3000, batch_size=256, lr=1e-3, warmup=100, ckpt_every=500),
        sample=SampleConfig(n_train_prompts=8192, n_heldout_prompts=512, k=16,
                            pairs_per_prompt=4),
        align=AlignConfig(losses=_DECLINE_LOSSES, seeds=(0, 1, 2), beta=0.1, lr=1e-5,
                          steps=300, batch_size=64, eval_every=15, ckpt_every=60,
                          n_eval_pairs=512, kl_prompts=64, kl_samples=8),
        grid=tuple({"beta": b, "lr": lr} for b in (0.01, 0.1, 0.5)
                   for lr in (1e-4, 3e-5, 1e-5, 3e-6))
        + tuple({"beta": b, "lr": 1e-5, "chosen": "gold"} for b in (0.01, 0.1, 0.5)),
    ),
}


#: SmolLM2-135M-Instruct (``--model smollm2``): the settings shared by its presets. The task is
#: level 1 and 2 addition through the chat template with its default system message; replies are
#: sampled at T = 0.7 with a 48-token budget (docs/LM.md, "Choosing the sampling settings").
_SMOLLM2_TASK = TaskConfig(levels=(1, 2), level_weights=(1.0, 1.0), ops="+", format="chat",
                           system=None)

PRESETS.update({
    # A tiny chat model (the tests' GGUF Llama, tests/tiny_gguf.py) end to end in seconds:
    # level 1 only, a short system message, 6-token replies.
    "chat-tiny": RunConfig(
        preset="chat-tiny",
        task=TaskConfig(levels=(1,), level_weights=(1.0,), ops="+", format="chat", system=""),
        sample=SampleConfig(n_train_prompts=32, n_heldout_prompts=16, k=8, temperature=1.0,
                            pairs_per_prompt=2, max_new_tokens=6),
        align=AlignConfig(losses=("dpo", "mio"), seeds=(0,), beta=0.1, lr=1e-3, steps=6,
                          batch_size=4, eval_every=2, ckpt_every=2, n_eval_pairs=8,
                          kl_prompts=4, kl_samples=2, acc_every=4),
    ),
    # One hour on one shared CPU core (docs/RESULTS.md §5.5): 160 train prompts x 8 replies
    # -> ~120 on-policy pairs; 30 steps of 4 pairs = 1 epoch at lr 1e-5 (chosen after a
    # one-seed probe of dpo and mio at 1e-6, 3e-6, 1e-5); six losses x 2 seeds; evaluation
    # every 6 steps, greedy accuracy at the last step only (step 0 is the shared base one).
    "smollm2-cpu": RunConfig(
        preset="smollm2-cpu",
        model=ModelConfig(pretrained="smollm2"),
        task=_SMOLLM2_TASK,
        sample=SampleConfig(n_train_prompts=160, n_heldout_prompts=24, k=8, temperature=0.7,
                            pairs_per_prompt=2, max_new_tokens=48),
        align=AlignConfig(losses=_DECLINE_LOSSES, seeds=(0, 1), beta=0.1, lr=1e-5, steps=30,
                          batch_size=4, eval_every=6, ckpt_every=6, n_eval_pairs=16,
                          kl_prompts=8, kl_samples=2, acc_every=30),
    ),
    # The same design at GPU size (docs/LM.md, "smollm2-gpu": estimate ~15-30 min on one H100,
    # not run): ~4,000 train prompts x 16 replies, 300 steps of 32 pairs, six losses x 3 seeds.
    "smollm2-gpu": RunConfig(
        preset="smollm2-gpu",
        model=ModelConfig(pretrained="smollm2"),
        task=TaskConfig(levels=(1, 2), level_weights=(1.0, 4.0), ops="+", format="chat",
                        system=None),
        sample=SampleConfig(n_train_prompts=4096, n_heldout_prompts=256, k=16, temperature=0.7,
                            pairs_per_prompt=4, max_new_tokens=64),
        align=AlignConfig(losses=_DECLINE_LOSSES, seeds=(0, 1, 2), beta=0.1, lr=3e-6,
                          steps=300, batch_size=32, eval_every=25, ckpt_every=50,
                          n_eval_pairs=256, kl_prompts=64, kl_samples=4, acc_every=50),
    ),
    # The pre-registered decline study (results/smollm2-study/PREREGISTRATION.md; docs/LM.md):
    # the smollm2-cpu sample with 96 held-out prompts; 90 steps of 4 pairs (3 epochs of the
    # ~120 train pairs) at beta 0.1; every train and held-out pair logged at every evaluation
    # (every 10 steps), the sampled KL from 32 held-out prompts x 2 replies, greedy accuracy on
    # the 96 held-out prompts at the last step, prompt by prompt. Arms: dpo and mio at lr 1e-5
    # (seeds 0-3), mio at lr 3e-5 (seeds 0-2: the KL-matched control), then ipo and rpo at 1e-5
    # (seeds 0-2; secondary, last so that a cut budget drops them first).
    "smollm2-study": RunConfig(
        preset="smollm2-study",
        model=ModelConfig(pretrained="smollm2"),
        task=_SMOLLM2_TASK,
        sample=SampleConfig(n_train_prompts=160, n_heldout_prompts=96, k=8, temperature=0.7,
                            pairs_per_prompt=2, max_new_tokens=48),
        align=AlignConfig(losses=("dpo", "mio"), seeds=(0, 1, 2, 3), beta=0.1, lr=1e-5,
                          steps=90, batch_size=4, eval_every=10, ckpt_every=10, n_eval_pairs=0,
                          kl_prompts=32, kl_samples=2, acc_every=90, per_pair=True,
                          per_prompt_accuracy=True),
        grid=({"lr": 1e-5, "losses": ("dpo", "mio"), "seeds": (0, 1, 2, 3)},
              {"lr": 3e-5, "losses": ("mio",), "seeds": (0, 1, 2)},
              {"lr": 1e-5, "losses": ("ipo", "rpo"), "seeds": (0, 1, 2), "tag": "secondary"}),
    ),
    # The same design at GPU size (docs/LM.md, "smollm2-study-gpu": estimate, not run): the
    # smollm2-gpu sample (4,096 train prompts x 16 replies, 512 held-out prompts), 300 steps of
    # 32 pairs, 512 train pairs and every held-out pair logged per pair, dpo and mio over
    # beta in {0.05, 0.1, 0.5} x lr in {3e-6, 1e-5, 3e-5}, 5 seeds; ipo and rpo at beta 0.1,
    # lr 1e-5 (secondary).
    "smollm2-study-gpu": RunConfig(
        preset="smollm2-study-gpu",
        model=ModelConfig(pretrained="smollm2"),
        task=TaskConfig(levels=(1, 2), level_weights=(1.0, 4.0), ops="+", format="chat",
                        system=None),
        sample=SampleConfig(n_train_prompts=4096, n_heldout_prompts=512, k=16, temperature=0.7,
                            pairs_per_prompt=4, max_new_tokens=64),
        align=AlignConfig(losses=("dpo", "mio"), seeds=(0, 1, 2, 3, 4), beta=0.1, lr=1e-5,
                          steps=300, batch_size=32, eval_every=25, ckpt_every=50,
                          n_eval_pairs=512, kl_prompts=128, kl_samples=4, acc_every=100,
                          per_pair=True, per_prompt_accuracy=True),
        grid=(*({"beta": b, "lr": lr} for b in (0.05, 0.1, 0.5) for lr in (3e-6, 1e-5, 3e-5)),
              {"beta": 0.1, "lr": 1e-5, "losses": ("ipo", "rpo"), "tag": "secondary"}),
    ),
})


def get_preset(name: str) -> RunConfig:
    """A fresh copy of the named preset; an unknown name raises ``ValueError`` listing them."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return RunConfig.from_dict(PRESETS[name].to_dict())
