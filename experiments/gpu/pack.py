"""The summary and the one archive a GPU validation call brings back.

``OUT/<name>.tar.gz`` holds every step's JSON (``results/``), everything collected
(``decline/``, ``trl/``, ``bounds/``, ``staircase/``, ``smollm2/``) and the log; it is kept
under the lent machine's limit (:data:`experiments.gpu_provision.ARCHIVE_LIMIT`) by leaving out
the largest optional files in the order of :data:`DROP_ORDER` (the summary says which).
``OUT/summary.json`` has per step its status, time and headline numbers, and the targets.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.gpu.context import OPTIONAL_STEPS, STEPS, TARGETS, Context, write_json
from experiments.gpu_provision import ARCHIVE_LIMIT

SUMMARY = "summary.json"
LOG = "log.txt"
#: files left out of the archive first when it is too large (glob patterns, in order)
DROP_ORDER = ("*/data.json", "*.pdf", "*/pairs_*.jsonl", "*.png")


def _device_tag(results: Path) -> str:
    env = results / "env.json"
    try:
        name = json.loads(env.read_text())["result"]["gpu"]["name"].lower()
    except (OSError, KeyError, TypeError, ValueError):
        return "cpu"
    for tag in ("h200", "h100", "a100", "l40s", "l4", "a10"):
        if tag in name:
            return tag
    return "".join(c if c.isalnum() else "-" for c in name).strip("-") or "gpu"


def summarise(ctx: Context, steps: Sequence[str]) -> dict[str, Any]:
    """The short summary: per step its status, time and headline numbers; the targets."""
    device = ctx.device
    try:  # the device the steps ran on (a --pack-only run only knows --device)
        device = json.loads((ctx.results / "env.json").read_text())["result"]["device"]
    except (OSError, KeyError, TypeError, ValueError):
        pass
    out: dict[str, Any] = {"steps": {}, "budget_s": ctx.budget_s, "smoke": ctx.smoke,
                           "device": device}
    for name in steps:
        path = ctx.results / f"{name}.json"
        if not path.is_file():
            out["steps"][name] = {"status": "not run"}
            continue
        rec = json.loads(path.read_text())
        status = rec.get("status")
        if status == "running":
            status = "cut off (the run was killed during this step)"
        entry = {"status": status, "seconds": rec.get("seconds")}
        result = rec.get("result") or {}
        if "headline" in result:
            entry["headline"] = result["headline"]
        for key in ("reason", "skipped"):
            if key in result:
                entry[key] = result[key]
        if "error" in rec:
            entry["error"] = rec["error"].strip().splitlines()[-1]
        if "salvaged" in rec:
            entry["salvaged_files"] = len(rec["salvaged"])
        out["steps"][name] = entry
    trl = out["steps"].get("trl", {}).get("headline", {})
    bounds = out["steps"].get("bounds", {}).get("headline", {})
    out["targets"] = {
        "align_vs_trl": {"target": TARGETS["align_vs_trl_pairs_per_s"],
                         "measured": trl.get("ratio_vs_trl"), "met": trl.get("target_met")},
        "infonce_K8192_fraction_of_copy_bandwidth": {
            "target": TARGETS["infonce_K8192_fraction_of_copy_bandwidth"],
            "measured": bounds.get("infonce_fraction_of_copy_bandwidth"),
            "met": bounds.get("target_met")},
    }
    tag = _device_tag(ctx.results)
    out["device_tag"] = tag
    out["unpack"] = (f"mkdir -p results/gpu-{tag} && tar -xzf {ctx.name}.tar.gz -C "
                     f"results/gpu-{tag}")
    return out


def _archive_members(ctx: Context) -> list[tuple[Path, str]]:
    members = []
    for root, prefix in ((ctx.results, "results"), (ctx.collected, "")):
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.is_file() and not p.name.endswith(".tmp"):
                    rel = p.relative_to(root).as_posix()
                    members.append((p, f"{prefix}/{rel}" if prefix else rel))
    log = ctx.work / LOG
    if log.is_file():
        members.append((log, f"logs/{ctx.name}.txt"))
    return members


def _write_archive(path: Path, members: Sequence[tuple[Path, str]]) -> int:
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for src, name in members:
            tar.add(src, arcname=name, recursive=False)
    size = tmp.stat().st_size
    os.replace(tmp, path)
    return size


def pack(ctx: Context, steps: Sequence[str] | None = None, limit: int = ARCHIVE_LIMIT) -> dict:
    """OUT/gpu-validation.tar.gz (at most ``limit`` bytes: optional files dropped in the order
    of :data:`DROP_ORDER`), OUT/summary.json and OUT/log.txt."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    if steps is None:
        found = {p.stem for p in ctx.results.glob("*.json")}
        steps = [s for s in (*STEPS, *OPTIONAL_STEPS) if s in found]
    summary = summarise(ctx, steps)
    summary_path = ctx.out / SUMMARY
    members = _archive_members(ctx)
    left_out: list[str] = []
    archive = ctx.out / f"{ctx.name}.tar.gz"
    size = _write_archive(archive, members)
    for pattern in DROP_ORDER:
        if size <= limit:
            break
        drop = [m for m in members if fnmatch.fnmatch(m[1], pattern)]
        members = [m for m in members if m not in drop]
        left_out += [name for _, name in drop]
        size = _write_archive(archive, members)
    summary["archive"] = {"name": archive.name, "bytes": size, "files": len(members),
                          "left_out_for_size": left_out, "fits": size <= limit}
    write_json(summary_path, summary)
    if (ctx.work / LOG).is_file():
        shutil.copy(ctx.work / LOG, ctx.out / LOG)
    return summary
