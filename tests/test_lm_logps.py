"""Response-only sequence log-probabilities (mi_bounds.lm.logps): equal to a token-by-token
recomputation whatever the padding side, equal to the full-logits path in value and gradient."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers")

from tiny_gguf import reference_llama

from mi_bounds.lm.logps import pad_sequences, position_ids, response_logps, sequence_logps

PAD = 2


@pytest.fixture(scope="module")
def model():
    return reference_llama(seed=3)


def _token_by_token(model, ids: list[int], n_prompt: int) -> float:
    """sum_t log p(x_t | x_<t) over response positions, one unpadded forward per token."""
    total = 0.0
    with torch.no_grad():
        for t in range(n_prompt, len(ids)):
            logits = model(torch.tensor([ids[:t]])).logits[0, -1].double()
            total += torch.log_softmax(logits, -1)[ids[t]].item()
    return total


_seqs = st.lists(
    st.tuples(st.integers(2, 10), st.integers(1, 6)).map(lambda t: (t[0] + t[1], t[0])),
    min_size=1, max_size=4,
)


@settings(max_examples=12)
@given(shapes=_seqs, seed=st.integers(0, 2**16), side=st.sampled_from(["left", "right"]))
def test_response_logps_equal_token_by_token_recomputation(model, shapes, seed, side):
    """response_logps(padded batch)[i] = sum over response tokens of log p(x_t | x_<t) computed
    on sequence i alone, token by token (|diff| < 1e-4 nats), on both padding sides and with
    logits on response positions only or everywhere."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    seqs = [(torch.randint(3, vocab, (length,), generator=g).tolist(), n_prompt)
            for length, n_prompt in shapes]
    batch = pad_sequences(seqs, PAD, side=side)
    expected = torch.tensor([_token_by_token(model, ids, s) for ids, s in seqs],
                            dtype=torch.float64)
    with torch.no_grad():
        sliced = response_logps(model, batch)
        full = response_logps(model, batch, full_logits=True)
        mean = response_logps(model, batch, average=True)
    assert sliced.dtype == torch.float32 and sliced.shape == (len(seqs),)
    torch.testing.assert_close(sliced.double(), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(full.double(), expected, atol=1e-4, rtol=0)
    n_response = torch.tensor([len(ids) - s for ids, s in seqs], dtype=torch.float32)
    torch.testing.assert_close(mean, sliced / n_response)


def test_padding_side_and_the_existing_right_padded_path_agree(model):
    """Left- and right-padded batches give the same values (1e-5); the right-padded batch is
    the layout of the stages (pad_sequences' default)."""
    seqs = [([5, 9, 11, 40, 7, 8, 2], 3), ([30, 31, 2], 1), ([4] * 12, 10)]
    left, right = pad_sequences(seqs, PAD, side="left"), pad_sequences(seqs, PAD)
    assert left.input_ids[1, 0] == PAD and right.input_ids[1, -1] == PAD  # padding really differs
    with torch.no_grad():
        a, b = response_logps(model, left), response_logps(model, right)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_sequence_logps_in_batches_equals_token_by_token(model):
    """sequence_logps over N sequences, any batch size, in order = the token-by-token sums
    (1e-4 nats), float32 on the CPU, no gradient; an empty list gives (0,); batch_size >= 1."""
    seqs = [([5, 9, 11, 40, 7, 8, 2], 3), ([30, 31, 2], 1), ([4] * 12, 10), ([6, 7, 8, 9], 2),
            ([41, 3, 2], 2)]
    expected = torch.tensor([_token_by_token(model, ids, s) for ids, s in seqs])
    for batch_size in (1, 2, 5, 64):
        got = sequence_logps(model, seqs, PAD, batch_size=batch_size)
        assert got.dtype == torch.float32 and got.device.type == "cpu" and not got.requires_grad
        torch.testing.assert_close(got.double(), expected.double(), atol=1e-4, rtol=0)
    assert sequence_logps(model, [], PAD, batch_size=2).shape == (0,)
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match="batch_size"):
            sequence_logps(model, seqs, PAD, batch_size=bad)


def test_sliced_and_full_logits_paths_have_the_same_gradient(model):
    """d/dtheta of sum_i w_i log pi(y_i|x_i): sliced head == full logits (left padding, every
    gradient finite: padded query rows do not leak NaN into the backward pass)."""
    seqs = [([5, 9, 11, 40, 7, 8, 2], 3), ([30, 31, 2], 1), ([4, 6, 8, 10, 12], 2)]
    batch = pad_sequences(seqs, PAD, side="left")
    weights = torch.tensor([1.0, -0.5, 2.0])
    grads = []
    for full in (False, True):
        model.zero_grad()
        (weights * response_logps(model, batch, full_logits=full)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    model.zero_grad()
    for name, g in grads[0].items():
        assert torch.isfinite(g).all(), name
        torch.testing.assert_close(g, grads[1][name], atol=1e-5, rtol=1e-4)


def test_pad_sequences_layout_and_validation():
    b = pad_sequences([([1, 2, 3, 4], 2), ([7, 8], 1)], 0, side="left")
    assert b.input_ids.tolist() == [[1, 2, 3, 4], [0, 0, 7, 8]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert b.response_mask.tolist() == [[False, False, True, True], [False, False, False, True]]
    assert position_ids(b.attention_mask).tolist() == [[0, 1, 2, 3], [0, 0, 0, 1]]
    with pytest.raises(ValueError, match="side"):
        pad_sequences([([1, 2], 1)], 0, side="middle")
    with pytest.raises(ValueError, match="n_prompt"):
        pad_sequences([([1, 2], 2)], 0)
    with pytest.raises(ValueError, match="n_prompt"):
        pad_sequences([([1, 2], 0)], 0)


class _FixedLogits(torch.nn.Module):
    """A stand-in causal LM whose logits are given (so the full-logits path is taken)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.logits)


def test_full_logits_path_is_accurate_with_a_large_vocabulary():
    """With V = 49,152 (SmolLM2's vocabulary) and flat logits (std 3), each token's
    log-probability from the full-logits path is within 2e-5 nats of a float64 log-softmax
    (float32 cross-entropy over a transposed (B, V, T) layout is off by ~1e-4 on CPU)."""
    g = torch.Generator().manual_seed(0)
    batch_size, length, vocab = 16, 45, 49_152
    logits = 3.0 * torch.randn(batch_size, length, vocab, generator=g)
    # one scored token per sequence (the last), so each value is one token's log-probability
    seqs = [(torch.randint(0, vocab, (length,), generator=g).tolist(), length - 1)
            for _ in range(batch_size)]
    batch = pad_sequences(seqs, PAD)
    got = response_logps(_FixedLogits(logits), batch)
    last = torch.log_softmax(logits[:, -2].double(), -1)  # scores the last token
    expected = last.gather(-1, batch.input_ids[:, -1:])[:, 0]
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=0)
