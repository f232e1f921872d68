"""Stage 4, report: chosen log-likelihood per loss against step and at matched margin, KL and
held-out reward accuracy; decline shapes and accuracy tables.

Outputs (PNG and PDF written deterministically, numbers as JSON, tables also as Markdown):

* ``lm_chosen_logp``: mean chosen log-likelihood of the train and held-out pairs against the
  alignment step, one colour per loss, mean over seeds with a ±1 std band; also the rejected
  log-likelihood and the greedy accuracy on held-out and hard prompts.
* ``lm_matched``: the change of the train chosen log-likelihood against the reward margin,
  the sampled KL(π‖π_ref) and the held-out reward accuracy, one line per seed
  (:mod:`mi_bounds.decline.compare`).
* ``lm_table``: per loss, final greedy accuracy on held-out and hard prompts (mean ± std over
  seeds), held-out reward accuracy, the chosen log-likelihood's change and drop from its peak
  (``max c - c(T) ≥ 0``, :mod:`mi_bounds.decline.shape`), the seed-mean curve's rise and drop
  with their 95 % intervals, and how many seeds have each decline shape.
* ``lm_matched.md``: the chosen log-likelihood change at matched margin, KL and held-out reward
  accuracy, per loss and level, with its 95 % interval over seeds (and over evaluation pairs
  too where they are logged per pair).
* ``lm_accuracy.md``: greedy held-out accuracy per task level, the base model (greedy and
  sampled) against each loss's final model.

``lm_report.json`` also holds, per loss, ``step0_max_abs_reward``: the largest |implicit
reward| at step 0 over its runs (0 up to float32 round-off: the policy is the reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mi_bounds.decline.compare import MATCH_ON, by_loss, compare, series, shape_counts
from mi_bounds.lm import _io
from mi_bounds.lm.config import RunConfig
from mi_bounds.lm.run_dir import Run, require_stage

__all__ = ["accuracy_markdown", "effect_label", "matched_markdown", "run_report", "save_figure",
           "shape_label", "summarise", "write_report"]

_COLORS = {"dpo": "#1f77b4", "mio": "#2ca02c", "nca_pair": "#bcbd22", "ipo": "#7f7f7f",
           "bco_pair": "#17becf", "infonce": "#d62728", "nwj": "#ff7f0e", "rpo": "#9467bd",
           "sft": "#8c564b"}
#: abbreviations of the decline shapes in tables
SHAPE_ABBREV = {"rise-then-fall": "rf", "fall-from-start": "fs", "no-decline": "nd",
                "too-short": "ts", "inconclusive": "inc"}


def _color(loss: str, i: int) -> str:
    return _COLORS.get(loss, f"C{i % 10}")


def save_figure(fig: plt.Figure, out_dir: Path, name: str) -> list[Path]:
    """PNG and PDF without run-dependent metadata (same numbers -> same bytes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    with plt.rc_context({"svg.hashsalt": "mi-bounds"}):
        fig.savefig(png, metadata={"Software": None}, bbox_inches="tight", dpi=150)
        fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None, "Producer": None,
                                   "Creator": None}, bbox_inches="tight")
    plt.close(fig)
    return [png, pdf]


def _series(results: Sequence[dict], section: str,
            key: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values [n_seeds, n_points]) of a recorded metric; NaN where it is missing."""
    curves = [series(r, section, key) for r in results]
    steps = curves[0][0]
    if any(not np.array_equal(s, steps) for s, _ in curves):
        raise ValueError(f"runs of loss {results[0]['loss']!r} have different evaluation steps")
    return steps.astype(int), np.array([v for _, v in curves], dtype=float)


def _mean_std(x: np.ndarray) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0


def shape_label(shapes: dict[str, Any]) -> str:
    """``"RF (rf 2 · fs 1)"``: the loss's verdict (the seed-mean curve judged against the
    seeds' paired spread, :func:`mi_bounds.decline.shapes_over_seeds`) in capitals, then how
    many seeds have each shape by their own noise (shapes with 0 seeds left out)."""
    counts = shapes.get("counts", {})
    per_seed = " · ".join(f"{SHAPE_ABBREV[k]} {v}" for k, v in counts.items() if v)
    mean = shapes.get("mean", {}).get("shape")
    if not per_seed:
        return "-"
    return f"{SHAPE_ABBREV[mean].upper()} ({per_seed})" if mean else per_seed


def summarise(results: Sequence[dict]) -> dict[str, Any]:
    """Per-loss numbers over seeds (mean, std with ddof=1, and the per-seed values).

    For the mean train chosen log-prob ``c``: ``chosen_change`` = c(T) - c(0);
    ``chosen_drop_from_peak`` = max c - c(T) ≥ 0 and ``chosen_peak_step`` its step, both from
    :func:`mi_bounds.decline.decline_shape` (the toolkit's one "drop");
    ``chosen_change_second_half`` = c(T) - c at the evaluation nearest the middle of the run.
    ``shapes``: :func:`mi_bounds.decline.compare.shape_counts` (decline shape of every seed with its
    own noise, and of the seed mean against the seeds' paired spread) for the train and
    held-out chosen curves.
    """
    out: dict[str, Any] = {}
    for loss, runs in by_loss(results).items():
        steps, chosen = _series(runs, "train", "logps/chosen")
        _, rejected = _series(runs, "train", "logps/rejected")
        _, h_chosen = _series(runs, "heldout", "logps/chosen")
        _, rew_acc = _series(runs, "heldout", "rewards/accuracies")
        _, margin = _series(runs, "train", "rewards/margins")
        _, kl = _series(runs, "kl", "k1")
        _, acc_h = _series(runs, "acc_heldout", None)
        _, acc_hard = _series(runs, "acc_hard", None)
        shapes = shape_counts(runs)
        per_shape = shapes.get("train", {}).get("per_seed", [])
        mid = int(np.argmin(np.abs(steps - steps[-1] / 2)))
        per_seed = {
            "acc_heldout": acc_h[:, -1],
            "acc_hard": acc_hard[:, -1],
            "heldout_reward_accuracy": rew_acc[:, -1],
            "margin_final": margin[:, -1],
            "kl_final": kl[:, -1],
            "chosen_initial": chosen[:, 0],
            "chosen_peak": np.array([s["peak"] for s in per_shape], dtype=float),
            "chosen_peak_step": np.array([s["peak_step"] for s in per_shape], dtype=float),
            "chosen_final": chosen[:, -1],
            "chosen_change": chosen[:, -1] - chosen[:, 0],
            "chosen_drop_from_peak": np.array([s["drop_from_peak"] for s in per_shape],
                                              dtype=float),
            "chosen_change_second_half": chosen[:, -1] - chosen[:, mid],
            "rejected_change": rejected[:, -1] - rejected[:, 0],
            "heldout_chosen_change": h_chosen[:, -1] - h_chosen[:, 0],
        }
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in runs], "steps": int(steps[-1])}
        for key, vals in per_seed.items():
            m, s = _mean_std(vals)
            entry[key] = {"mean": m, "std": s, "per_seed": [float(v) for v in vals]}
        entry["shapes"] = shapes
        levels = sorted({lv for r in runs for lv in r["final"].get("acc_heldout_by_level", {})})
        entry["acc_heldout_by_level"] = {
            lv: _mean_std(np.array([r["final"]["acc_heldout_by_level"].get(lv, np.nan)
                                    for r in runs], dtype=float))
            for lv in levels}
        # at step 0 the policy is the reference: implicit rewards 0 up to float32 round-off
        entry["step0_max_abs_reward"] = max(
            abs(float(r["history"][0][sec].get(k, 0.0)))
            for r in runs for sec in ("train", "heldout") if r["history"][0].get(sec)
            for k in ("rewards/chosen", "rewards/rejected"))
        tp = [r["throughput"] for r in runs]
        entry["tokens_per_s"] = _mean_std(np.array([t["tokens_per_s"] for t in tp]))[0]
        entry["mfu"] = _mean_std(np.array([t["mfu"] for t in tp]))[0]
        entry["padding_fraction"] = _mean_std(np.array([t["padding_fraction"] for t in tp]))[0]
        if "epochs" in runs[0]:
            entry["epochs"] = float(runs[0]["epochs"])
        out[loss] = entry
    return out


def _fmt(d: dict[str, float], digits: int = 3) -> str:
    if not np.isfinite(d["mean"]):
        return "n/a"
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


def _column_mean_std(vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (ddof=1; 0 for one value) over seeds of each column, ignoring NaN; NaN
    where a column has no value (e.g. accuracy measured only every ``acc_every`` steps)."""
    finite = np.isfinite(vals)
    n = finite.sum(0)
    filled = np.where(finite, vals, 0.0)
    mean = np.where(n > 0, filled.sum(0) / np.maximum(n, 1), np.nan)
    sq = np.where(finite, (vals - mean) ** 2, 0.0).sum(0)
    std = np.where(n > 1, np.sqrt(sq / np.maximum(n - 1, 1)), np.where(n == 1, 0.0, np.nan))
    return mean, std


def _plot_curves(groups: dict[str, list[dict]], out_dir: Path) -> tuple[list[Path], dict]:
    panels = [("train", "logps/chosen", "chosen log-lik. (train pairs)"),
              ("heldout", "logps/chosen", "chosen log-lik. (held-out pairs)"),
              ("train", "logps/rejected", "rejected log-lik. (train pairs)"),
              ("acc_heldout", None, "greedy accuracy (held-out; dashed: hard)")]
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.2), sharex=True)
    data: dict[str, Any] = {}
    for i, (loss, runs) in enumerate(groups.items()):
        c = _color(loss, i)
        data[loss] = {}
        for ax, (section, key, title) in zip(axes.flat, panels, strict=True):
            steps, vals = _series(runs, section, key)
            name = f"{section}/{key}" if key else section
            m, s = _column_mean_std(vals)
            data[loss][name] = {"steps": steps.tolist(), "mean": m.tolist(), "std": s.tolist()}
            ok = np.isfinite(m)  # steps where the metric was measured
            if not ok.any():
                continue
            ax.plot(steps[ok], m[ok], color=c, label=f"{loss} (n={len(runs)})",
                    marker="." if not ok.all() else None)
            ax.fill_between(steps[ok], (m - s)[ok], (m + s)[ok], color=c, alpha=0.2, lw=0)
            ax.set_title(title)
            if section == "acc_heldout":
                st, hv = _series(runs, "acc_hard", None)
                hm, _ = _column_mean_std(hv)
                if np.isfinite(hm).any():
                    data[loss]["acc_hard"] = {"steps": st.tolist(), "mean": hm.tolist()}
                    ax.plot(st[np.isfinite(hm)], hm[np.isfinite(hm)], color=c, ls="--")
    for ax in axes[1]:
        ax.set_xlabel("alignment step")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Alignment from one base model: mean over seeds, band = ±1 std")
    fig.tight_layout()
    return save_figure(fig, out_dir, "lm_chosen_logp"), data


def _fmt_value(x: float | None, digits: int = 3) -> str:
    """A number to ``digits`` decimals; ``n/a`` for a missing (``None``) or non-finite one.
    (0.0 is a number: it prints as ``0.000``.)"""
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:.{digits}f}"


def effect_label(shapes: dict[str, Any], name: str = "drop", digits: int = 2) -> str:
    """``"1.23 [0.45, 2.01]"``: the seed-mean curve's ``rise`` / ``drop`` / ``change`` with its
    interval (:func:`mi_bounds.decline.shapes_over_seeds`); ``-`` if there is none."""
    mean = shapes.get("mean")
    if not mean:
        return "-"
    value = mean["drop_from_peak" if name == "drop" else name]
    lo, hi = mean.get(f"{name}_ci") or (None, None)
    if value is None or not np.isfinite(value):
        return "-"
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _table_rows(summary: dict, base_acc: dict) -> tuple[list[str], list[list[str]]]:
    header = ["loss", "seeds", "acc held-out", "acc hard", "reward acc (held-out)",
              "chosen Δ (final-start)", "chosen drop (peak-final)",
              "rise, seed mean [95 % CI]", "drop, seed mean [95 % CI]", "shape train",
              "shape held-out"]
    rows = [["base", "-", _fmt_value(base_acc.get("heldout_greedy")),
             _fmt_value(base_acc.get("hard_greedy")), "-", "-", "-", "-", "-", "-", "-"]]
    for loss, e in summary.items():
        sh = e.get("shapes", {})
        rows.append([loss, str(len(e["seeds"])), _fmt(e["acc_heldout"]), _fmt(e["acc_hard"]),
                     _fmt(e["heldout_reward_accuracy"]), _fmt(e["chosen_change"]),
                     _fmt(e["chosen_drop_from_peak"]),
                     effect_label(sh.get("train", {}), "rise"),
                     effect_label(sh.get("train", {}), "drop"),
                     shape_label(sh.get("train", {})), shape_label(sh.get("heldout", {}))])
    return header, rows


def matched_markdown(comparison: dict, section: str = "train") -> str:
    """The matched tables of :func:`mi_bounds.decline.compare.compare` as Markdown: per quantity,
    the chosen log-likelihood change (``section`` pairs) at each level, ``mean ± std [lo, hi]
    (k/n)`` with the ``1 − alpha`` interval over seeds (the two-level one, seeds and pairs,
    where pairs are logged one by one) and k of n seeds reaching the level."""

    def interval(r: dict[str, Any]) -> str:
        ci = (r.get("two_level") or {}).get("ci") or r.get("ci")
        if not ci or ci[0] is None or not (np.isfinite(ci[0]) and np.isfinite(ci[1])):
            return ""
        return f" [{ci[0]:.3f}, {ci[1]:.3f}]"

    lines = []
    titles = {"margin": "reward margin (train pairs)", "kl": "KL(π‖π_ref) (sampled, held-out "
              "prompts)", "heldout_reward_accuracy": "held-out reward accuracy"}
    for quantity, m in comparison["matched"].items():
        lines.append(f"Chosen log-likelihood change ({section} pairs) at matched "
                     f"{titles[quantity]}:\n")
        if not m["levels"]:
            lines.append("(no common level reached)\n")
            continue
        lines.append("| loss | " + " | ".join(f"{quantity} = {lv:.3g}" for lv in m["levels"])
                     + " |")
        lines.append("|---|" + "---|" * len(m["levels"]))
        for loss, rows in m[section].items():
            cells = [(f"{r['mean']:.3f} ± {r['std']:.3f}{interval(r)}" if r["n_reached"]
                      else "n/a") + f" ({r['n_reached']}/{r['n_seeds']})" for r in rows]
            lines.append(f"| {loss} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def accuracy_markdown(summary: dict, base_acc: dict) -> str:
    """Greedy held-out accuracy per task level: the base model (greedy, and its sampled
    accuracy) against each loss's final model (mean ± std over seeds)."""
    by_level = base_acc.get("by_level", {})
    levels = sorted(set(by_level) | {lv for e in summary.values()
                                      for lv in e.get("acc_heldout_by_level", {})}, key=int)
    head = ["model"] + [f"level {lv} (n={by_level.get(lv, {}).get('n', '?')})" for lv in levels]
    head.append("all")
    rows = [["base (greedy)"] + [_fmt_value(by_level.get(lv, {}).get("greedy"))
                                 for lv in levels] + [_fmt_value(base_acc.get("heldout_greedy"))],
            ["base (sampled)"] + [_fmt_value(by_level.get(lv, {}).get("sampled"))
                                  for lv in levels]
            + [_fmt_value(base_acc.get("heldout_sampled"))]]
    for loss, e in summary.items():
        cells = []
        for lv in levels:
            m, sd = e.get("acc_heldout_by_level", {}).get(lv, (float("nan"), float("nan")))
            cells.append(_fmt({"mean": m, "std": sd}))
        rows.append([loss, *cells, _fmt(e["acc_heldout"])])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _plot_matched(groups: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    titles = {"margin": "reward margin β(z_w − z_l) (train)", "kl": "KL(π‖π_ref), sampled",
              "heldout_reward_accuracy": "reward accuracy (held-out pairs)"}
    fig, axes = plt.subplots(1, len(MATCH_ON), figsize=(12, 3.8), sharey=True)
    for i, (loss, runs) in enumerate(groups.items()):
        c = _color(loss, i)
        for ax, (quantity, (section, key)) in zip(axes, MATCH_ON.items(), strict=True):
            for j, r in enumerate(runs):
                _, x = series(r, section, key)
                _, y = series(r, "train", "logps/chosen")
                ok = np.isfinite(x) & np.isfinite(y)
                if ok.sum() < 2:
                    continue
                ax.plot(x[ok], y[ok] - y[0], color=c, lw=1, marker=".", ms=3, alpha=0.8,
                        label=f"{loss} (n={len(runs)})" if j == 0 else None)
            ax.set_xlabel(titles[quantity])
    axes[0].set_ylabel("chosen log-lik. change (train pairs)")
    for ax in axes:
        ax.axhline(0, color="0.6", lw=0.6)
    axes[0].legend(fontsize=7)
    fig.suptitle("Chosen log-likelihood at matched margin, KL and held-out reward accuracy "
                 "(one line per seed)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_dir, "lm_matched")


def write_report(results: Sequence[dict], sample: dict, config: RunConfig,
                 out_dir: str | Path) -> list[Path]:
    """Write the figure, the table (PNG, PDF, JSON, Markdown) and return their paths."""
    out_dir = Path(out_dir)
    groups = by_loss(results)
    paths, curves = _plot_curves(groups, out_dir)
    paths += _plot_matched(groups, out_dir)
    summary = summarise(results)
    comparison = compare(results)
    base_acc = sample.get("base_accuracy", {})
    header, rows = _table_rows(summary, base_acc)
    fig, ax = plt.subplots(figsize=(11, 0.45 * (len(rows) + 1) + 0.3))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.3)
    ax.set_title("Final greedy accuracy and chosen log-likelihood change (mean ± std over seeds);"
                 " shapes: rf rise-then-fall, fs fall-from-start, nd no-decline, inc "
                 "inconclusive; CAPITALS = seed mean (alpha 0.05)", fontsize=9)
    paths += save_figure(fig, out_dir, "lm_table")
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    paths.append(_io.write_text(out_dir / "lm_table.md", "\n".join(md) + "\n"))
    paths.append(_io.write_text(out_dir / "lm_matched.md", matched_markdown(comparison)))
    paths.append(_io.write_text(out_dir / "lm_accuracy.md", accuracy_markdown(summary, base_acc)))
    payload = {"preset": config.preset, "config": config.to_dict(), "summary": summary,
               "comparison": comparison, "base_accuracy": base_acc,
               "counts": sample.get("counts", {}), "curves": curves}
    paths.append(_io.write_json(out_dir / "lm_report.json", payload))
    return paths


def run_report(run: Run, out_dir: Path | None = None) -> list[Path]:
    """Figures and tables from every finished alignment run in the directory."""
    require_stage(run, run.dir / "sample" / "data.json", "sample")
    results = [_io.read_json(p) for p in sorted((run.dir / "align").glob("*/result.json"))]
    if not results:
        raise ValueError(f"{run.dir}: no finished alignment runs to report")
    sample = _io.read_json(run.dir / "sample" / "data.json")
    paths = write_report(results, sample, run.config, out_dir or run.dir / "report")
    run.log(f"report: {', '.join(str(p) for p in paths)}")
    return paths

