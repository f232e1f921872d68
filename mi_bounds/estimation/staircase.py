"""The MI staircase experiment (Poole et al., ICML 2019, Fig. 2; Song & Ermon, ICLR 2020, Fig. 1).

A critic is trained on the 20-dimensional correlated-Gaussian task while the true MI steps
through 2, 4, 6, 8 and 10 nats, 4,000 steps per level, a fresh batch of 64 at each step, Adam
with learning rate 5e-4; the per-step estimates of each bound are compared with the true MI.

One *run* is a (task, critic, objective) triple. Runs whose objective is ``js`` record every
JS-trained estimator on the same score matrices: ``js_dv`` (= SMILE with τ = ∞), ``js_nwj``
(NWJ of the critic shifted by +1), ``smile_1``, ``smile_5`` and the JS value itself. The
reported value of these estimators does not feed back into training (the gradient is always
the JS gradient), so reading them off one run gives each the same distribution as a separate
run; they are correlated with one another, which the comparison does not use.

The runner is resumable: every finished run is written to its own JSON file under the output
folder (default ``results/staircase/``) and a re-run skips the files that exist. The file name
(:attr:`RunSpec.run_id`) encodes every setting that changes the result (task, critic, objective,
steps per level, and, where they differ from the published settings, the sizes, learning rate,
batch size, dimension, levels, seed and device), and the file stores the full spec: a file whose
stored settings differ from the requested ones is never silently reused (:func:`run_one` raises).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mi_bounds._json import dumps
from mi_bounds.estimation.estimate import estimate_mi
from mi_bounds.estimation.tasks import StaircaseTask
from mi_bounds.estimation.training import EstimateConfig

__all__ = [
    "DEFAULT_OUT",
    "OBJECTIVES",
    "PLANS",
    "RunSpec",
    "bias_variance_table",
    "level_stats",
    "load_runs",
    "plan",
    "run_grid",
    "run_one",
]

DEFAULT_OUT = Path("results/staircase")

#: Training objective of a run -> estimators recorded per step (the first one is trained).
#: (Ordered by priority: a plan runs them in this order.)
OBJECTIVES: dict[str, tuple[str, ...]] = {
    "js": ("js_dv", "js_nwj", "smile_1", "smile_5", "js"),
    "infonce": ("infonce",),
    "dv": ("dv",),
    "nwj": ("nwj",),
    "mine": ("mine",),
}

#: Tasks of the experiment: name -> cubic transform y -> y³ or not.
TASKS: dict[str, bool] = {"gaussian": False, "cubic": True}


@dataclass(frozen=True)
class RunSpec:
    """One staircase run: task, critic, objective and the published settings (defaults)."""

    task: str = "gaussian"
    critic: str = "separable"
    objective: str = "js"
    levels: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0, 10.0)
    steps_per_level: int = 4000
    batch_size: int = 64
    lr: float = 5e-4
    dim: int = 20
    hidden_dim: int = 256
    embed_dim: int = 32
    layers: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; valid names: {', '.join(TASKS)}")
        if self.critic not in ("separable", "concat"):
            raise ValueError(f"unknown critic {self.critic!r}; valid names: separable, concat")
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"unknown objective {self.objective!r}; valid names: {', '.join(OBJECTIVES)}"
            )
        object.__setattr__(self, "levels", tuple(float(v) for v in self.levels))

    @property
    def run_id(self) -> str:
        """File stem: ``<task>__<critic>__<objective>__<steps_per_level>`` and a tag for every
        other setting that differs from the published one: ``__h<hidden>e<embed>l<layers>``,
        ``__lr<lr>``, ``__b<batch>``, ``__d<dim>``, ``__L<level>-<level>...``, ``__s<seed>``.

        Runs at the published settings keep the short names of the committed results.
        """
        rid = f"{self.task}__{self.critic}__{self.objective}__{self.steps_per_level}"
        if (self.hidden_dim, self.embed_dim, self.layers) != (256, 32, 2):
            rid += f"__h{self.hidden_dim}e{self.embed_dim}l{self.layers}"
        if self.lr != 5e-4:
            rid += f"__lr{self.lr:g}"
        if self.batch_size != 64:
            rid += f"__b{self.batch_size}"
        if self.dim != 20:
            rid += f"__d{self.dim}"
        if self.levels != (2.0, 4.0, 6.0, 8.0, 10.0):
            rid += "__L" + "-".join(f"{v:g}" for v in self.levels)
        if self.seed:
            rid += f"__s{self.seed}"
        return rid

    def task_obj(self) -> StaircaseTask:
        return StaircaseTask(self.levels, self.steps_per_level, self.dim, TASKS[self.task])


def level_stats(
    estimates: np.ndarray, levels: Sequence[float], steps_per_level: int, window: float = 0.5
) -> list[dict[str, float]]:
    """Bias, variance and MSE of per-step estimates in each level's last ``window`` fraction.

    Returns one dict per level: ``true_mi``, ``mean``, ``bias`` (mean - true), ``variance``
    (of the per-step estimates, ddof=0) and ``mse`` (mean squared error = bias² + variance).
    """
    est = np.asarray(estimates, dtype=np.float64)
    if est.shape != (len(levels) * steps_per_level,):
        raise ValueError(
            f"estimates must have shape [{len(levels) * steps_per_level}], got {est.shape}"
        )
    if not 0 < window <= 1:
        raise ValueError(f"window must be in (0, 1], got {window}")
    start = steps_per_level - max(1, round(window * steps_per_level))
    out = []
    for k, mi in enumerate(levels):
        seg = est[k * steps_per_level + start : (k + 1) * steps_per_level]
        mean, var = float(seg.mean()), float(seg.var())
        out.append({
            "true_mi": float(mi), "mean": mean, "bias": mean - float(mi), "variance": var,
            "mse": float(np.mean((seg - mi) ** 2)),
        })
    return out


def run_one(
    spec: RunSpec, out_dir: Path = DEFAULT_OUT, *, progress: bool = False, thin: int = 10,
    device: str = "cpu", force: bool = False,
) -> Path:
    """Train one run and write ``out_dir/<run_id>.json``; skip it if that file exists.

    The JSON holds the spec, wall time, steps per second, per-level statistics of every
    recorded estimator (:func:`level_stats`) and the per-step estimates thinned to every
    ``thin``-th step (``curves``). On CUDA the file name gets a ``__<device>`` tag (its random
    streams differ from the CPU's).

    Raises:
        ValueError: the file exists but was made with other settings (its stored spec, device
            or ``thin`` differ from the requested ones); nothing is overwritten (``force=True``
            re-runs and overwrites).
    """
    out_dir = Path(out_dir)
    dev_tag = "" if torch.device(device).type == "cpu" else "__" + device.replace(":", "")
    path = out_dir / f"{spec.run_id}{dev_tag}.json"
    if path.exists() and not force:
        _check_stored(path, spec, device, thin)
        return path
    names = OBJECTIVES[spec.objective]
    task = spec.task_obj()
    config = EstimateConfig(
        bound=names[0], report=names[1:], steps=task.total_steps, batch_size=spec.batch_size,
        lr=spec.lr, seed=spec.seed, device=device, eval_batches=0, progress=progress,
    )
    result, _ = estimate_mi(
        task, config, critic=spec.critic, hidden_dim=spec.hidden_dim, embed_dim=spec.embed_dim,
        layers=spec.layers,
    )
    record = {
        "spec": asdict(spec),
        "run_id": spec.run_id,
        "seconds": round(result.seconds, 2),
        "steps_per_second": round(result.steps_per_second, 2),
        "threads": torch.get_num_threads(),
        "device": device,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "window": 0.5,
        "stats": {
            n: level_stats(v, spec.levels, spec.steps_per_level)
            for n, v in result.estimates.items()
        },
        "thin": thin,
        "curves": {n: [round(float(x), 4) for x in v[::thin]] for n, v in result.estimates.items()},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(dumps(record, indent=1) + "\n")  # strict JSON: NaN as null
    tmp.replace(path)  # atomic: an interrupted run leaves no half-written result
    return path


def _check_stored(path: Path, spec: RunSpec, device: str, thin: int) -> None:
    """Refuse to reuse a result file made with other settings than ``spec``/``device``/``thin``."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} exists but is not a readable run ({err}); remove it") from None
    want = {**asdict(spec), "levels": list(spec.levels)}
    have = stored.get("spec", {})
    diff = [f"{k}: stored {have.get(k)!r}, requested {v!r}" for k, v in want.items()
            if have.get(k) != v]
    dev = torch.device(stored.get("device", "cpu")).type, torch.device(device).type
    if dev[0] != dev[1]:
        diff.append(f"device: stored {stored.get('device')!r}, requested {device!r}")
    if stored.get("thin", thin) != thin:
        diff.append(f"thin: stored {stored.get('thin')!r}, requested {thin!r}")
    if diff:
        raise ValueError(
            f"{path} was made with other settings ({'; '.join(diff)}); it is not reused: move it "
            "away, choose another --out-dir, or re-run with force=True"
        )


#: Named plans. ``default`` is what a 2-core CPU shared by several jobs afforded in about 90
#: minutes (docs/RESULTS.md §4): the published settings (4000 steps/level) for the separable
#: critic on the Gaussian task with every objective, then on the cubic task with the JS
#: (→ DV, NWJ, SMILE τ = 1, 5) and InfoNCE objectives, the concat critic at 1/10 of the
#: steps, the cubic task with the remaining objectives, and a JS-trained concat critic at 1/4
#: of the steps. A block may restrict the objectives with an ``"objectives"`` entry; blocks
#: run in order.
PLANS: dict[str, list[dict[str, object]]] = {
    "default": [
        {"task": "gaussian", "critic": "separable"},
        {"task": "cubic", "critic": "separable", "objectives": ("js", "infonce")},
        {"task": "gaussian", "critic": "concat", "steps_per_level": 400,
         "objectives": ("js", "infonce")},
        {"task": "cubic", "critic": "separable", "objectives": ("dv", "nwj", "mine")},
        {"task": "gaussian", "critic": "concat", "steps_per_level": 1000, "objectives": ("js",)},
    ],
    "full": [
        {"task": t, "critic": c} for t in ("gaussian", "cubic") for c in ("separable", "concat")
    ],
    "quick": [
        {"task": "gaussian", "critic": "separable", "steps_per_level": 40, "hidden_dim": 32,
         "embed_dim": 8, "layers": 1},
    ],
}


def plan(
    name: str, objectives: Iterable[str] = tuple(OBJECTIVES), **overrides: object
) -> list[RunSpec]:
    """The run specs of a named plan (:data:`PLANS`), one per objective; overrides apply to all."""
    if name not in PLANS:
        raise ValueError(f"unknown plan {name!r}; valid names: {', '.join(PLANS)}")
    wanted = tuple(objectives)
    specs = []
    for block in PLANS[name]:
        fields = {k: v for k, v in block.items() if k != "objectives"}
        allowed = block.get("objectives", tuple(OBJECTIVES))
        for obj in wanted:
            if obj in allowed:  # type: ignore[operator]
                specs.append(RunSpec(**{**fields, "objective": obj, **overrides}))  # type: ignore[arg-type]
    return specs


def run_grid(
    specs: Sequence[RunSpec], out_dir: Path = DEFAULT_OUT, *, progress: bool = False,
    device: str = "cpu", log: bool = True,
) -> list[Path]:
    """Run every spec in order (skipping finished ones) and return the result paths."""
    paths = []
    dev_tag = "" if torch.device(device).type == "cpu" else "__" + device.replace(":", "")
    for i, spec in enumerate(specs):
        done = (Path(out_dir) / f"{spec.run_id}{dev_tag}.json").exists()
        t0 = time.perf_counter()
        paths.append(run_one(spec, out_dir, progress=progress, device=device))
        if log:
            status = "skipped (done)" if done else f"{time.perf_counter() - t0:.0f} s"
            print(f"[{i + 1}/{len(specs)}] {spec.run_id}: {status}", flush=True)
    return paths


def load_runs(out_dir: Path = DEFAULT_OUT) -> list[dict]:
    """Every finished run under ``out_dir`` (sorted by file name)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    runs = []
    for p in sorted(out_dir.glob("*.json")):
        run = json.loads(p.read_text())
        for key in ("stats", "curves"):  # strict JSON wrote NaN as null, ±inf as strings
            if key in run:
                run[key] = _floats(run[key])
        runs.append(run)
    return runs


def _floats(obj: object) -> object:
    """Undo :func:`mi_bounds._json.strict` on numbers: None -> NaN, "inf"/"-inf" -> ±inf."""
    if isinstance(obj, dict):
        return {k: _floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_floats(v) for v in obj]
    if obj is None:
        return math.nan
    if obj in ("inf", "-inf"):
        return float(obj)
    return obj


#: Display order and labels of the estimators.
LABELS: dict[str, str] = {
    "dv": "DV", "mine": "MINE", "nwj": "NWJ", "js_dv": "JS→DV (SMILE τ=∞)", "js_nwj": "JS→NWJ",
    "smile_1": "SMILE τ=1", "smile_5": "SMILE τ=5", "infonce": "InfoNCE",
}


def _num(x: float, sign: bool = False) -> str:
    """Two decimals for moderate values, three significant digits for huge ones."""
    if abs(x) < 100:
        return f"{x:+.2f}" if sign else f"{x:.2f}"
    return f"{x:+.3g}" if sign else f"{x:.3g}"


def bias_variance_table(runs: Sequence[dict]) -> str:
    """Markdown table: one row per (task, critic, steps, estimator), bias/variance per level."""
    lines = []
    for run in sorted(runs, key=lambda r: r["run_id"]):
        spec = run["spec"]
        for name, stats in run["stats"].items():
            if name not in LABELS:
                continue
            cells = " | ".join(f"{_num(s['bias'], True)} / {_num(s['variance'])}" for s in stats)
            seed = f" (seed {spec['seed']})" if spec.get("seed", 0) else ""
            lines.append(
                f"| {spec['task']} | {spec['critic']} | {spec['steps_per_level']} | "
                f"{LABELS[name]}{seed} | {cells} |"
            )
    if not lines:
        return "(no finished runs)"
    levels = runs[0]["spec"]["levels"]
    head = " | ".join(f"I={v:g}: bias / var" for v in levels)
    sep = "|---" * (4 + len(levels)) + "|"
    return "\n".join([f"| task | critic | steps/level | estimator | {head} |", sep, *lines])
