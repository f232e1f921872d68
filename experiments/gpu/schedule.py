"""The steps of the GPU validation in order, each guarded, and the salvage after a kill.

Each step's JSON (``WORK/results/<step>.json``) says ``running`` while it runs and then ``ok``,
``partial``, ``skipped`` or ``failed`` (with the traceback); a failed step is recorded and the
next one runs, and everything is packed again after every step (:func:`experiments.gpu.pack.pack`),
so a kill leaves what finished.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from experiments.gpu.context import Context, write_json
from experiments.gpu.lm_steps import collect, step_decline, step_smollm2, step_trl
from experiments.gpu.measure import step_bounds, step_env, step_staircase
from experiments.gpu.pack import pack

STEP_FUNCTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "env": step_env, "decline": step_decline, "trl": step_trl, "bounds": step_bounds,
    "staircase": step_staircase, "smollm2": step_smollm2,
}


def run_steps(ctx: Context, steps: Sequence[str],
              functions: dict[str, Callable[[Context], dict[str, Any]]] = STEP_FUNCTIONS) -> None:
    """Run each step guarded: its JSON (``results/<step>.json``) says ``running`` while it runs
    and then ``ok``, ``partial``, ``skipped`` or ``failed`` (with the traceback); the archive
    is packed again after every step."""
    for name in steps:
        path = ctx.results / f"{name}.json"
        started = time.perf_counter()
        base = {"step": name, "started_at_s": started - ctx.t0, "budget_left_s": ctx.left()}
        write_json(path, {**base, "status": "running"})
        ctx.log(f"step {name}: start ({ctx.left():.0f} s of the budget left)")
        try:
            result = functions[name](ctx)
            status = result.pop("status", "ok")
            rec = {**base, "status": status, "result": result}
        except Exception:  # a failed step is recorded; the next one runs
            rec = {**base, "status": "failed", "error": traceback.format_exc()}
            ctx.log(f"step {name}: FAILED\n{rec['error']}")
        rec["seconds"] = time.perf_counter() - started
        write_json(path, rec)
        ctx.log(f"step {name}: {rec['status']} in {rec['seconds']:.1f} s")
        pack(ctx)


def salvage(ctx: Context) -> list[str]:
    """After a kill: the report of whatever alignment runs finished in a step that was cut off
    (``decline``, ``smollm2``), collected into the archive; returns what was salvaged."""
    done = []
    for name, run_name in (("decline", "decline"), ("smollm2", "smollm2")):
        path, run_dir = ctx.results / f"{name}.json", ctx.work / run_name
        if not path.is_file() or not (run_dir / "config.json").is_file():
            continue
        rec = json.loads(path.read_text())
        if rec.get("status") != "running":
            continue
        try:
            from mi_bounds.lm import stages

            stages.run_report(stages.open_run(run_dir, device="cpu", log=ctx.log))
        except Exception:  # a run with nothing finished has no report: keep what there is
            rec["salvage_report_error"] = traceback.format_exc()
        rec["salvaged"] = collect(run_dir, ctx.collected / run_name)
        write_json(path, rec)
        done.append(name)
    return done
