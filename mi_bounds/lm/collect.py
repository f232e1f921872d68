"""What is worth keeping of a finished run directory, for committing under ``results/``.

:func:`collect_run` writes: ``config.json``; ``inputs.json`` (the model as given, without the
local cache path); ``base_result.json``; ``sample_summary.json`` (format, token budget, pair
counts, unfinished replies, base accuracy per level, hard prompts); ``pairs_train.jsonl`` and
``pairs_heldout.jsonl`` (prompt, chosen and rejected text); ``step0.json`` (the shared step-0
evaluation); ``report/`` (tables, figures, JSON); ``align_runs/<loss>-seed<s>.json``, every
run's full metric history. A run with a grid gets, per setting, ``<setting>/`` with its report
and ``align_runs/``, and the side-by-side report in ``report/``. Every JSON is compact, its
floats rounded to 6 significant digits (:func:`compact_json`). Models, checkpoints and
reference log-probabilities are left behind.

    python -m mi_bounds.lm.collect RUN_DIR OUT_DIR
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from mi_bounds._json import rounded

__all__ = ["collect_run", "compact_json"]

_SUMMARY_KEYS = ("format", "max_new_tokens", "counts", "unfinished", "base_accuracy",
                 "hard_prompts", "seconds")


def compact_json(src: Path, dst: Path) -> None:
    """Copy the JSON file ``src`` to ``dst`` with sorted keys, no spaces, floats to 6 digits."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = rounded(json.loads(src.read_text()), 6)
    dst.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n")


def _report(src: Path, dst: Path, prefix: str = "") -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob(f"{prefix}*")):
        if f.suffix in (".md", ".png"):
            shutil.copy(f, dst / f.name)
        elif f.suffix == ".json":
            compact_json(f, dst / f.name)


def _align(run: Path, dst: Path) -> None:
    for r in sorted((run / "align").glob("*/result.json")):
        compact_json(r, dst / "align_runs" / f"{r.parent.name}.json")
    if (run / "align" / "step0.json").is_file():
        compact_json(run / "align" / "step0.json", dst / "step0.json")


def collect_run(run: Path, out: Path) -> None:
    """Copy what is worth keeping of the run directory ``run`` into ``out`` (module docstring)."""
    run, out = Path(run), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "config.json", out / "config.json")
    inputs = json.loads((run / "inputs.json").read_text())
    (out / "inputs.json").write_text(json.dumps(
        {"model": inputs.get("model_spec"), "pairs": inputs.get("pairs")}, indent=1) + "\n")
    shutil.copy(run / "base" / "result.json", out / "base_result.json")
    data = json.loads((run / "sample" / "data.json").read_text())
    (out / "sample_summary.json").write_text(json.dumps(
        {k: data.get(k) for k in _SUMMARY_KEYS}, indent=1, sort_keys=True) + "\n")
    for name in ("train_pairs", "heldout_pairs"):
        rows = [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in data[name]]
        (out / f"pairs_{name.split('_')[0]}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    if (run / "grid").is_dir():
        _report(run / "report", out / "report", prefix="grid_")
        for setting in sorted((run / "grid").iterdir()):
            _report(setting / "report", out / setting.name)
            _align(setting, out / setting.name)
    else:
        _report(run / "report", out / "report")
        _align(run, out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m mi_bounds.lm.collect RUN_DIR OUT_DIR")
    collect_run(Path(sys.argv[1]), Path(sys.argv[2]))
