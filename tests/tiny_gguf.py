"""A tiny Llama written as a GGUF file with the ``gguf`` package's writer, for the tests of
:mod:`mi_bounds.lm.pretrained` and :mod:`mi_bounds.lm.chat` that must not need the 98 MB file.

The file is laid out as llama.cpp's ``convert_hf_to_gguf.py`` lays out a Llama: tensor names
``token_embd`` / ``blk.N.attn_q`` / ..., the rows of ``attn_q`` and ``attn_k`` permuted for
llama.cpp's rotary layout (transformers' loader undoes it), metadata keys ``llama.*``, and a
byte-level ("gpt2") BPE vocabulary with ChatML control tokens and a chat template, like
SmolLM2's. The token embedding is stored as Q8_0 (as in SmolLM2), everything else as F32; the
returned reference model holds exactly the weights the file decodes to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2 as in SmolLM2
MERGES = (("W", "h"), ("Wh", "a"), ("Wha", "t"), ("Ġ", "i"), ("Ġi", "s"), ("1", "2"))
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
DIMS = {"hidden": 32, "heads": 4, "kv_heads": 2, "ffn": 48, "layers": 2, "context": 128,
        "rope_theta": 50000.0, "eps": 1e-5}


def _byte_alphabet() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def vocabulary() -> list[str]:
    return [*SPECIALS, *_byte_alphabet(), *("".join(m) for m in MERGES)]


def reference_llama(seed: int = 0) -> torch.nn.Module:
    """The tiny LlamaForCausalLM (random weights, random norm scales, tied embeddings)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    d = DIMS
    config = LlamaConfig(
        vocab_size=len(vocabulary()), hidden_size=d["hidden"], intermediate_size=d["ffn"],
        num_hidden_layers=d["layers"], num_attention_heads=d["heads"],
        num_key_value_heads=d["kv_heads"], max_position_embeddings=d["context"],
        rope_theta=d["rope_theta"], rms_norm_eps=d["eps"], tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:  # not all ones: a norm mapped to the wrong layer shows
                    p.copy_(1 + 0.2 * torch.randn_like(p))
                else:
                    p.normal_(0.0, 0.3)
    return model.eval()


def _permute(w: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute`` (convert_hf_to_gguf.py) for q/k projections."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


_LAYER_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def write_tiny_llama_gguf(path: str | Path, seed: int = 0,
                          model: torch.nn.Module | None = None) -> tuple[Path, torch.nn.Module]:
    """Write the tiny Llama to ``path``; returns ``(path, reference model)`` where the
    reference's token embedding is replaced by its Q8_0 round trip (what the file holds).

    ``model``: write these weights instead of :func:`reference_llama`'s (a model of the same
    shape, e.g. one trained on the task; it is copied, not changed)."""
    import copy

    import gguf
    from gguf import GGMLQuantizationType as Q

    d = DIMS
    model = reference_llama(seed) if model is None else copy.deepcopy(model).eval()
    tokens = vocabulary()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny test llama")
    w.add_context_length(d["context"])
    w.add_embedding_length(d["hidden"])
    w.add_block_count(d["layers"])
    w.add_feed_forward_length(d["ffn"])
    w.add_head_count(d["heads"])
    w.add_head_count_kv(d["kv_heads"])
    w.add_rope_dimension_count(d["hidden"] // d["heads"])
    w.add_rope_freq_base(d["rope_theta"])
    w.add_layer_norm_rms_eps(d["eps"])
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL] * len(SPECIALS)
                      + [gguf.TokenType.NORMAL] * (len(tokens) - len(SPECIALS)))
    w.add_token_merges([f"{a} {b}" for a, b in MERGES])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    emb = sd["model.embed_tokens.weight"]
    q8 = gguf.quants.quantize(emb, Q.Q8_0)
    w.add_tensor("token_embd.weight", q8, raw_dtype=Q.Q8_0)
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    for i in range(d["layers"]):
        for hf, gg in _LAYER_NAMES.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                t = _permute(t, d["heads"], d["heads"])
            elif gg == "attn_k":
                t = _permute(t, d["heads"], d["kv_heads"])
            w.add_tensor(f"blk.{i}.{gg}.weight", np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with torch.no_grad():  # the reference holds what the file decodes to (tied head follows)
        deq = gguf.quants.dequantize(q8, Q.Q8_0).reshape(emb.shape)
        model.model.embed_tokens.weight.copy_(torch.from_numpy(np.ascontiguousarray(deq)))
    return Path(path), model
