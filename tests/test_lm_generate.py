"""Generation on the small-LM path samples π exactly: no top-k / top-p truncation, whatever
transformers' defaults or the checkpoint's generation_config.json say."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import torch

from mi_bounds.lm.config import ModelConfig
from mi_bounds.lm.model import build_model, generate
from mi_bounds.lm.task_format import ArithmeticFormat
from mi_bounds.lm.tokenizer import CharTokenizer


@pytest.fixture(scope="module")
def flat_model():
    """A Llama over 203 tokens whose next-token logits are small and distinct (token embedding
    of standard deviation 0.01, tied head: logits of size ~0.04), so every token has probability
    close to 1/203 and a top-k cut at any k < 203 would be visible. Its generation_config.json
    asks for truncation, a repetition penalty and suppressed tokens: none of it may reach the
    sampler (samples of π must be exact)."""
    tok = CharTokenizer("0123456789+=" + "".join(chr(0x100 + i) for i in range(188)))
    model = build_model(ModelConfig(hidden_size=16, num_layers=1, num_heads=2,
                                    intermediate_size=32, context=16), tok, seed=0)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 0.01, generator=torch.Generator()
                                                    .manual_seed(0))
    gc = model.generation_config  # what a checkpoint's generation_config.json may hold
    gc.top_k, gc.top_p, gc.repetition_penalty = 3, 0.5, 5.0
    gc.suppress_tokens = list(range(10, 203))
    gc.no_repeat_ngram_size = 1
    return model.eval(), tok


def test_sampling_ignores_truncation_and_the_checkpoint_generation_config(flat_model):
    """2,000 one-token samples from a near-uniform distribution over 203 tokens hit almost all
    of them (expected distinct count ≈ 203 (1 - (1 - 1/203)^2000) ≈ 203): no top-k cut (neither
    transformers' global default top_k=50 nor the checkpoint's top_k=3), no top-p, no suppressed
    tokens."""
    model, tok = flat_model
    fmt = ArithmeticFormat(tok)
    replies = generate(model, fmt, ["1+1="], max_new_tokens=1, num_samples=2000, seed=0)[0]
    first = {(r.ids or [tok.eos_id])[0] for r in replies}  # the sampled token, EOS included
    assert len(first) > 190
    texts = generate(model, fmt, ["1+1="], max_new_tokens=1, num_samples=2000, seed=1)[0]
    assert len({r.text for r in texts}) > 150  # EOS and the specials decode to ""


def test_sampling_is_reproducible_and_seeded(flat_model):
    model, tok = flat_model
    fmt = ArithmeticFormat(tok)
    a = generate(model, fmt, ["1+1=", "2+2="], max_new_tokens=3, num_samples=4, seed=7)
    b = generate(model, fmt, ["1+1=", "2+2="], max_new_tokens=3, num_samples=4, seed=7)
    c = generate(model, fmt, ["1+1=", "2+2="], max_new_tokens=3, num_samples=4, seed=8)
    assert a == b and a != c
