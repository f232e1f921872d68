"""The MI staircase (Poole et al. 2019, Fig. 2; Song & Ermon 2020, Figs. 1 and 3).

Writes ``staircase`` (per-step estimates of every estimator against the true MI, separable
critic on the Gaussian task at the published settings), ``staircase_bias_variance`` (bias,
variance and MSE per MI level, every finished run) and ``staircase_table.md`` (the same numbers
as a table). The numbers come from the committed runs under ``results/staircase/`` (made by
``mi-bounds estimate staircase``); ``quick=True`` instead trains a reduced-step staircase into a
temporary folder (seconds), so the tests exercise the whole path.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from figures._style import COLORS, save
from mi_bounds.estimation.staircase import LABELS, bias_variance_table, load_runs, plan, run_grid

RESULTS = Path(__file__).resolve().parents[1] / "results" / "staircase"

#: Panel order of the staircase figure.
ORDER = ["dv", "mine", "nwj", "js_dv", "js_nwj", "smile_5", "smile_1", "infonce"]
_COLOR = {
    "dv": COLORS["dv"], "mine": "#17becf", "nwj": COLORS["nwj"], "js_dv": COLORS["js"],
    "js_nwj": "#98df8a", "smile_5": COLORS["smile"], "smile_1": "#c5b0d5",
    "infonce": COLORS["infonce"],
}


def _ema(values: np.ndarray, alpha: float) -> np.ndarray:
    """Exponential moving average (the smoothed line of Poole et al.'s plots)."""
    out = np.empty_like(values)
    acc = values[0]
    for i, v in enumerate(values):
        acc = alpha * v + (1 - alpha) * acc
        out[i] = acc
    return out


def _series(runs: list[dict]) -> dict[str, tuple[dict, np.ndarray]]:
    """estimator name -> (run, thinned per-step estimates) for one (task, critic, steps) group."""
    out = {}
    for run in runs:
        for name, curve in run["curves"].items():
            if name in LABELS:
                out[name] = (run, np.asarray(curve, dtype=float))
    return out


def _staircase_figure(runs: list[dict], title: str) -> plt.Figure:
    series = _series(runs)
    names = [n for n in ORDER if n in series]
    ncol = 4
    nrow = max(1, math.ceil(len(names) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(11, 2.6 * nrow), sharex=True, sharey=True,
                             squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        run, curve = series[name]
        spec = run["spec"]
        spl, levels, thin = spec["steps_per_level"], spec["levels"], run["thin"]
        steps = np.arange(curve.size) * thin
        truth = np.repeat(levels, spl)[::thin]
        ax.plot(steps, curve, color=_COLOR[name], alpha=0.25, lw=0.6)
        ax.plot(steps, _ema(curve, 0.05), color=_COLOR[name], lw=1.4)
        ax.plot(steps, truth, color="black", lw=1.0, label="true MI")
        if name == "infonce":
            ax.axhline(math.log(spec["batch_size"]), color="grey", ls="--", lw=0.8,
                       label=f"log {spec['batch_size']}")
            ax.legend(loc="upper left", fontsize=7)
        ax.set_title(LABELS[name])
        ax.set_ylim(-1, max(levels) + 4)
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    for ax in axes[:, 0]:
        ax.set_ylabel("MI estimate (nats)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _bias_variance_figure(runs: list[dict]) -> plt.Figure:
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    styles = {}
    for run in sorted(runs, key=lambda r: r["run_id"]):
        spec = run["spec"]
        group = (spec["task"], spec["critic"], spec["steps_per_level"], spec["seed"])
        ls = styles.setdefault(group, ["-", "--", ":", "-."][len(styles) % 4])
        for name, stats in run["stats"].items():
            if name not in LABELS:
                continue
            mi = [s["true_mi"] for s in stats]
            seed = f", seed {group[3]}" if group[3] else ""
            label = f"{LABELS[name]} ({group[0]}, {group[1]}, {group[2]}/level{seed})"
            for ax, key in zip(axes, ("bias", "variance", "mse"), strict=True):
                ax.plot(mi, [s[key] for s in stats], ls=ls, marker="o", ms=3,
                        color=_COLOR[name], label=label if key == "bias" else None)
    axes[0].axhline(0, color="black", lw=0.8)
    for ax, title in zip(axes, ("bias (nats)", "variance (nats²)", "MSE (nats²)"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("true MI (nats)")
    axes[0].set_yscale("symlog", linthresh=1.0)  # JS→NWJ reaches -1e4; the others are O(1)
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=6)
    fig.tight_layout()
    return fig


def make(out_dir: Path, *, quick: bool = False) -> list[Path]:
    """Staircase figure, bias/variance figure and table (see the module docstring)."""
    out_dir = Path(out_dir)
    if quick:
        with tempfile.TemporaryDirectory() as tmp:
            run_grid(plan("quick", steps_per_level=10), Path(tmp), log=False)
            runs = load_runs(Path(tmp))
    else:
        runs = load_runs(RESULTS)
        if not runs:
            raise FileNotFoundError(
                f"no staircase runs under {RESULTS}; run `mi-bounds estimate staircase` first"
            )
    main_runs = [r for r in runs if (r["spec"]["task"], r["spec"]["critic"], r["spec"]["seed"])
                 == ("gaussian", "separable", 0)]
    if not main_runs:
        main_runs = runs
    spl = max(r["spec"]["steps_per_level"] for r in main_runs)
    main_runs = [r for r in main_runs if r["spec"]["steps_per_level"] == spl]
    title = (f"MI staircase: Gaussian, d = 20, separable critic, batch 64, {spl} steps per level"
             + (" (quick)" if quick else ""))
    paths = save(_staircase_figure(main_runs, title), out_dir, "staircase", data={
        "runs": [r["run_id"] for r in main_runs],
    })
    table = bias_variance_table(runs)
    stats = {r["run_id"]: r["stats"] for r in runs}
    paths += save(_bias_variance_figure(runs), out_dir, "staircase_bias_variance",
                  data={"stats": stats, "window": "last half of each level"})
    md = out_dir / "staircase_table.md"
    md.write_text(
        "Bias / variance of the per-step estimates over the last half of each MI level "
        "(generated by figures/fig_staircase.py from results/staircase/).\n\n" + table + "\n"
    )
    return [*paths, md]
