"""Copy what is worth keeping of a SmolLM2 run directory (`smollm2-cpu`, or the learning-rate
probe with a grid) into this folder.

    python results/lm-smollm2-cpu/collect.py runs/smollm2-cpu results/lm-smollm2-cpu
    python results/lm-smollm2-cpu/collect.py runs/smollm2-probe results/lm-smollm2-cpu/probe

Writes: config.json; inputs.json (the model as given, without the local cache path);
base_result.json; sample_summary.json (format, token budget, pair counts, unfinished replies,
base accuracy per level, hard prompts); pairs_train.jsonl and pairs_heldout.jsonl (prompt,
chosen and rejected text); step0.json (the shared step-0 evaluation); report/ (tables,
figures, JSON); align_runs/<loss>-seed<s>.json, every run's full metric history as compact
JSON (floats rounded to 6 significant digits). A run with a grid gets, per setting,
<setting>/ with its report and align_runs/, and the side-by-side report in report/.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def _round(x):
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return x


def _compact(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = _round(json.loads(src.read_text()))
    dst.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n")


def _report(src: Path, dst: Path, prefix: str = "") -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob(f"{prefix}*")):
        if f.suffix in (".md", ".png"):
            shutil.copy(f, dst / f.name)
        elif f.suffix == ".json":
            _compact(f, dst / f.name)


def _align(run: Path, dst: Path) -> None:
    for r in sorted((run / "align").glob("*/result.json")):
        _compact(r, dst / "align_runs" / f"{r.parent.name}.json")
    if (run / "align" / "step0.json").is_file():
        _compact(run / "align" / "step0.json", dst / "step0.json")


def main(run: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "config.json", out / "config.json")
    inputs = json.loads((run / "inputs.json").read_text())
    (out / "inputs.json").write_text(json.dumps(
        {"model": inputs.get("model_spec"), "pairs": inputs.get("pairs")}, indent=1) + "\n")
    shutil.copy(run / "base" / "result.json", out / "base_result.json")
    data = json.loads((run / "sample" / "data.json").read_text())
    keys = ("format", "max_new_tokens", "counts", "unfinished", "base_accuracy",
            "hard_prompts", "seconds")
    (out / "sample_summary.json").write_text(json.dumps(
        {k: data.get(k) for k in keys}, indent=1, sort_keys=True) + "\n")
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
    main(Path(sys.argv[1]), Path(sys.argv[2]))
