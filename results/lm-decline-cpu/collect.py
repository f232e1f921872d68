"""Copy what is worth keeping of a `cpu-decline` run directory into this folder.

    python results/lm-decline-cpu/collect.py runs/cpu-decline-final results/lm-decline-cpu

Writes: config.json; base_result.json; sample_summary.json (pair counts, base accuracy, hard
prompts); report/ (the side-by-side grid report: tables, figure, JSON); and per setting
<setting>/ with its report (tables, figures, lm_report.json) and align_runs/<loss>-seed<s>.json,
every run's full metric history as compact JSON (floats rounded to 6 significant digits;
:func:`mi_bounds.lm.collect.compact_json`).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from mi_bounds.lm.collect import compact_json


def main(run: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "config.json", out / "config.json")
    shutil.copy(run / "base" / "result.json", out / "base_result.json")
    data = json.loads((run / "sample" / "data.json").read_text())
    (out / "sample_summary.json").write_text(json.dumps(
        {k: data[k] for k in ("counts", "base_accuracy", "hard_prompts")}, indent=1,
        sort_keys=True) + "\n")
    report = out / "report"
    report.mkdir(exist_ok=True)
    for f in sorted((run / "report").glob("grid_*")):
        if f.suffix == ".json":
            compact_json(f, report / f.name)
        else:
            shutil.copy(f, report / f.name)
    for setting in sorted((run / "grid").iterdir()):
        dst = out / setting.name
        (dst / "align_runs").mkdir(parents=True, exist_ok=True)
        for f in sorted((setting / "report").iterdir()):
            if f.suffix in (".md", ".png"):
                shutil.copy(f, dst / f.name)
            elif f.suffix == ".json":
                compact_json(f, dst / f.name)
        for r in sorted((setting / "align").glob("*/result.json")):
            compact_json(r, dst / "align_runs" / f"{r.parent.name}.json")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
