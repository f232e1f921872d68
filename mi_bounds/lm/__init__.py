"""The small-LM path (optional extra ``lm``): DPO against MIO on real transformer LMs.

Stages (each resumable, all in one run directory :mod:`mi_bounds.lm.run_dir`; one module per
stage, run in order by :mod:`mi_bounds.lm.stages`):
``base`` (train a Llama-style causal LM on a verifiable arithmetic task, or load ``--model PATH``),
``sample`` (k responses per prompt, labelled by the verifier, paired correct/incorrect),
``align`` (one run per loss and seed from the same base and pairs, with
:func:`mi_bounds.preference.preference_loss`), ``report`` (figures and tables).

Command line: ``mi-bounds lm run --preset cpu-tiny --out DIR`` (see :mod:`mi_bounds.lm.cli`).
Importing this package does not import transformers; the stages do.
"""

from mi_bounds.lm.arithmetic import (
    answer,
    level_of,
    make_prompt,
    parse_prompt,
    sample_prompts,
    verify,
)
from mi_bounds.lm.config import (
    PRESETS,
    AlignConfig,
    BaseConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TaskConfig,
    get_preset,
)
from mi_bounds.lm.tokenizer import CharTokenizer, load_tokenizer

__all__ = [
    "PRESETS",
    "AlignConfig",
    "BaseConfig",
    "CharTokenizer",
    "ModelConfig",
    "RunConfig",
    "SampleConfig",
    "TaskConfig",
    "answer",
    "get_preset",
    "level_of",
    "load_tokenizer",
    "make_prompt",
    "parse_prompt",
    "sample_prompts",
    "verify",
]
