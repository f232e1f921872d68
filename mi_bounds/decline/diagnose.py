"""Say what the chosen log-likelihood of a preference-training log did (docs/THEORY.md §6).

Logs are read by :mod:`mi_bounds.decline.training_log` (TRL's trainer_state.json, a CSV of TRL's
metric names, or this toolkit's align-run result.json).

:func:`diagnose` classifies the chosen curve (``logps/chosen``, else ``rewards/chosen``) with
:func:`mi_bounds.decline.decline_shape` — the one definition of the four shapes — and reads the
reward margin and the rejected curve beside it (their trend: ``rising``, ``falling`` or ``flat``
by the same noise rule: smoothed ``final - start`` beyond ``±σ``). Errors in the file (not JSON or
CSV, no such metric, fewer than 3 points, NaN) raise :class:`LogError`, which the
``mi-bounds diagnose`` command turns into a message and exit code 2.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mi_bounds.decline.shape import (
    SHAPES,
    DeclineShape,
    _as_curve,
    decline_shape,
    shapes_over_seeds,
)
from mi_bounds.decline.training_log import (
    CHOSEN_METRICS,
    FORMATS,
    METRICS,
    SPLIT_PREFIXES,
    SPLITS,
    STEP_KEYS,
    LogError,
    Series,
    TrainingLog,
    jsonable,
    log_from_entries,
    read_log,
)

__all__ = [
    "CHOSEN_METRICS",
    "METRICS",
    "SPLIT_PREFIXES",
    "STEP_KEYS",
    "LogError",
    "Series",
    "TrainingLog",
    "diagnose",
    "diagnose_seeds",
    "format_report",
    "log_from_entries",
    "plot_diagnosis",
    "read_log",
    "trend",
]


def trend(shape: DeclineShape) -> str | None:
    """``rising`` / ``falling`` / ``flat``: the smoothed ``final - start`` against ``±`` the
    fall's level (the one-sided test of ``-change`` at ``alpha``, and its mirror image);
    ``None`` for a ``too-short`` or ``inconclusive`` curve."""
    if shape.shape in ("too-short", "inconclusive"):
        return None
    level = shape.levels[2]
    if shape.change > level:
        return "rising"
    if -shape.change > level:
        return "falling"
    return "flat"


def _checked(s: Series, source: str, least: int = 3) -> Series:
    """The series, if it has ≥ ``least`` points and no NaN/inf (else :class:`LogError`)."""
    bad = ~np.isfinite(s.values) | ~np.isfinite(s.steps)
    if bad.any():
        where = ", ".join(f"{x:g}" for x in s.steps[bad][:5]) + (" …" if bad.sum() > 5 else "")
        raise LogError(f"{source}: {s.key} is NaN or infinite at step(s) {where} "
                       f"({int(bad.sum())} of {s.values.size} points; did training diverge?)")
    if np.unique(s.steps).size < least:
        raise LogError(f"{source}: {s.key} has {np.unique(s.steps).size} logged step(s); the "
                       f"shape needs at least {least} (start, peak, end)")
    return s


def _chosen_series(log: TrainingLog, split: str, metric: str | None) -> Series | None:
    if metric is not None:
        return log.series(metric, split)
    for m in CHOSEN_METRICS:
        s = log.series(m, split)
        if s is not None:
            return s
    return None


def _enough(s: Series | None) -> bool:
    """At least 3 logged steps (NaN counts: reading that series then reports it)."""
    return s is not None and np.unique(s.steps).size >= 3


def diagnose(
    log: TrainingLog,
    *,
    split: str | None = None,
    metric: str | None = None,
    noise: float | None = None,
    threshold: float | tuple[float, float, float] | None = None,
    min_points: int = 3,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The shape of a log's chosen curve and the trends beside it, as one JSON-ready dict.

    Args:
        log: from :func:`read_log` or :func:`log_from_entries`.
        split: ``"train"``, ``"eval"``, or ``None``: the eval series when the log has one with at
            least 3 points, else the train series.
        metric: the curve to classify: a TRL name (looked up in the split) or a key/column given
            verbatim (e.g. ``eval_test_logps/chosen``); default ``logps/chosen``, else
            ``rewards/chosen``.
        noise: per-point noise σ of the curve; default: estimated from it.
        threshold: the levels themselves, one or (rise, drop, fall); overrides ``noise``.
        min_points: fewer distinct steps (but at least 3) give ``too-short``.
        alpha: one-sided level of each test, and ``1 - alpha`` intervals
            (:func:`~mi_bounds.decline.decline_shape`).

    Returns:
        Every field of :class:`~mi_bounds.decline.DeclineShape` for the chosen curve (``shape``,
        ``peak_step``, ``drop_from_peak``, ``noise``, ``levels``, ``rise_ci``, ``drop_ci``,
        ``change_ci``, ``alpha``, …; NaN as ``None``), and ``source``,
        ``format``, ``split``, ``metric``, ``key``, ``step_source``, ``margin_trend`` and
        ``margin_change`` (of ``rewards/margins``; ``None`` if not logged), ``rejected_trend``
        and ``rejected_change`` (of ``logps/rejected``, or ``rewards/rejected`` when the chosen
        curve is ``rewards/chosen``), ``reading`` (one paragraph), and ``series``: every series
        read, ``{name: {"key", "steps", "values"}}``.

    Raises:
        LogError: no such metric in the split, fewer than 3 points, NaN or infinite values.
    """
    if split is not None and split not in SPLITS:
        raise LogError(f"series must be one of {', '.join(SPLITS)}, got {split!r}")
    if int(min_points) < 3:
        raise LogError(f"min_points must be >= 3, got {min_points}")
    src = log.source
    verbatim = metric is not None and metric not in METRICS and log.series_by_key(metric)
    if verbatim:
        chosen = verbatim
        used_split = split or next((sp for sp in ("eval", "train") if any(
            metric.startswith(p) for p in SPLIT_PREFIXES[sp] if p)), "train")
    else:
        if split is None:
            ev = _chosen_series(log, "eval", metric)
            used_split = "eval" if _enough(ev) else "train"
        else:
            used_split = split
        chosen = _chosen_series(log, used_split, metric)
        if chosen is None:
            wanted = metric or " or ".join(CHOSEN_METRICS)
            known = ", ".join(k for k in log.keys() if any(k.endswith(m) for m in METRICS))
            raise LogError(f"{src}: no {used_split} series of {wanted} "
                           f"(metric keys in the log: {known or 'none'})")
    chosen = _checked(chosen, src)
    result_shape = decline_shape(chosen.values, chosen.steps, noise=noise, threshold=threshold,
                                 alpha=alpha, min_points=min_points)
    series = {chosen.metric: chosen.to_dict()}
    out: dict[str, Any] = {
        "source": src, "format": log.format, "split": used_split, "metric": chosen.metric,
        "key": chosen.key, "step_source": log.step_key or "row index",
        **result_shape.to_dict(),
    }
    rejected_name = "rewards/rejected" if chosen.metric == "rewards/chosen" else "logps/rejected"
    for label, name in (("margin", "rewards/margins"), ("rejected", rejected_name)):
        s = log.series(name, used_split) if used_split in SPLITS else None
        out[f"{label}_trend"] = out[f"{label}_change"] = None
        if s is None or np.unique(s.steps).size < 3:  # not logged (enough): no trend
            continue
        s = _checked(s, src)
        sh = decline_shape(s.values, s.steps, alpha=alpha)
        if trend(sh) is not None:
            out[f"{label}_trend"], out[f"{label}_change"] = trend(sh), sh.change
        series[name] = s.to_dict()
    out["reading"] = _reading(out)
    out["series"] = series
    return jsonable(out)


def diagnose_seeds(
    logs: Sequence[TrainingLog],
    *,
    split: str | None = None,
    metric: str | None = None,
    min_points: int = 3,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Several runs that differ only in their seed: the rule of
    :func:`mi_bounds.decline.shapes_over_seeds`.

    Each seed is classified as one curve (its own noise), and the mean chosen curve must pass
    both its own one-curve level and the Student-t level over seeds
    (:func:`~mi_bounds.decline.seed_thresholds`); its intervals are the wider of the two. Margin
    and rejected curves are averaged across seeds and their trends read as one curve.

    Returns:
        :func:`diagnose`'s fields for the mean curve (``source`` lists the files), plus
        ``seeds`` (n), ``seed_thresholds`` ({rise, drop, fall} Student-t levels), ``counts``
        (``{shape: number of seeds}``) and ``per_seed`` (each seed's ``source``, ``shape``,
        ``peak_step``, ``drop_from_peak``, ``drop_ci``, ``noise``, ``margin_trend``,
        ``rejected_trend``).

    Raises:
        LogError: fewer than 2 logs, a log without the series, or seeds logged at other steps.
    """
    if len(logs) < 2:
        raise LogError(f"several seeds need at least 2 logs, got {len(logs)}")
    first = diagnose(logs[0], split=split, metric=metric, min_points=min_points, alpha=alpha)
    used_split, used_metric = first["split"], metric or first["metric"]
    grid: NDArray[np.float64] | None = None
    curves: dict[str, list[NDArray[np.float64]]] = {}
    keys: dict[str, str] = {}
    rejected = "rewards/rejected" if first["metric"] == "rewards/chosen" else "logps/rejected"
    verbatim = used_metric not in METRICS and logs[0].series_by_key(used_metric) is not None
    for log in logs:
        chosen = (log.series_by_key(used_metric) if verbatim
                  else _chosen_series(log, used_split, used_metric))
        if chosen is None:
            raise LogError(f"{log.source}: no {used_split} series of {used_metric}")
        steps, values = _as_curve(_checked(chosen, log.source).values, chosen.steps)
        if grid is None:
            grid = steps
        elif not np.array_equal(grid, steps):
            raise LogError(f"{log.source}: {chosen.key} is logged at other steps than in "
                           f"{logs[0].source}; the seeds' noise needs one step grid")
        curves.setdefault(first["metric"], []).append(values)
        keys[first["metric"]] = chosen.key
        for name in ("rewards/margins", rejected):
            side = log.series(name, used_split)
            if side is not None and np.isfinite(side.values).all():
                st, va = _as_curve(side.values, side.steps)
                if np.array_equal(st, steps):
                    curves.setdefault(name, []).append(va)
                    keys[name] = side.key
    assert grid is not None
    matrix = np.stack(curves[first["metric"]])  # (n_seeds, n_steps)
    verdict = shapes_over_seeds(matrix, grid, alpha=alpha, min_points=min_points,
                                per_seed=False)
    per_seed = [diagnose(log, split=used_split, metric=used_metric, min_points=min_points,
                         alpha=alpha) for log in logs]
    n = len(logs)
    mean_entries = [{"step": float(st)} for st in grid]
    for name, rows in curves.items():
        if len(rows) == n:  # a side series every seed logged on the same grid
            for entry, v in zip(mean_entries, np.mean(rows, axis=0), strict=True):
                entry[keys[name]] = float(v)
    sources = [log.source for log in logs]
    mean_log = TrainingLog(f"mean of {n} seeds", "seeds", tuple(mean_entries), "step")
    out = diagnose(mean_log, split=used_split, metric=keys[first["metric"]] if verbatim
                   else first["metric"],
                   min_points=min_points, alpha=alpha)
    out.update(jsonable(verdict["mean"]))  # the verdict of the seed rule, not of one curve
    out["reading"] = _reading(out)
    counts = {sh: sum(r["shape"] == sh for r in per_seed) for sh in SHAPES}
    levels = verdict["thresholds"]
    out.update(
        source=sources, seeds=n, counts=counts, seed_thresholds=levels,
        per_seed=[{k: r[k] for k in ("source", "shape", "peak_step", "drop_from_peak", "drop_ci",
                                     "noise", "margin_trend", "rejected_trend")}
                  for r in per_seed])
    out["reading"] = (
        f"Mean of {n} seeds, each comparison against both its own noise and the seeds' paired "
        f"spread (Student-t levels over seeds: rise {levels['rise']:.3g}, drop "
        f"{levels['drop']:.3g}, fall {levels['fall']:.3g}); per seed (own noise): "
        + ", ".join(f"{c} {sh}" for sh, c in counts.items() if c) + ". " + out["reading"])
    return jsonable(out)


def _what(metric: str) -> str:
    """The name of the curve read, for the explanation."""
    if metric.endswith("logps/chosen"):
        return f"chosen log-likelihood ({metric})"
    if metric.endswith("rewards/chosen"):
        return f"chosen implicit reward ({metric})"
    return f"metric {metric!r}"


def _reading(r: Mapping[str, Any]) -> str:
    """One paragraph on what the verdict means, from the shape and the margin's trend."""
    what = _what(r["metric"])
    if r["shape"] == "too-short":
        return (f"Too few logged steps ({r['n_points']}) for a verdict: the rule needs "
                "--min-points, and at least 4 when the noise level is estimated from the curve "
                "(pass --noise, e.g. the spread across seeds, to classify 3 points).")
    if r["shape"] == "inconclusive":
        return (f"Inconclusive: {r['n_points']} logged steps are too few to calibrate the "
                "curve's own noise (the rule needs 10, with one seed or several; docs/THEORY.md "
                "§6). Evaluate more often, or pass --noise (the sd of one logged point, if "
                "known).")
    if r["shape"] == "no-decline":
        return (f"The {what} did not fall beyond the level of a test at alpha = {r['alpha']:g} "
                "(which is not proof that it did not fall: see the intervals).")
    when = ("after rising to a peak" if r["shape"] == "rise-then-fall" else "from the start")
    text = f"The {what} fell {when}."
    if not what.startswith("chosen"):  # not the chosen response's curve: no margin reading
        return text
    margin, rejected = r.get("margin_trend"), r.get("rejected_trend")
    if margin == "rising":
        faster = ""
        if rejected == "falling" and r.get("rejected_change") is not None:
            if r["rejected_change"] < r["change"]:
                faster = ", the rejected one faster"
        text += (
            f" The reward margin rose all the same: the preference was learnt by pushing both "
            f"responses down{faster} (likelihood displacement). Under a loss of the margin alone "
            "(DPO = TRL 'sigmoid', IPO, hinge) nothing resists this; mio (= TRL 'nca_pair') and "
            "bco_pair have a chosen term with its own target, and TRL's 'sft' term adds the "
            "chosen NLL "
            "(docs/THEORY.md §2, gradients).")
    elif margin in ("flat", "falling"):
        text += (f" The reward margin is {margin} too, so the fall is not the price of a "
                 "growing margin: check the learning rate, β and the data.")
    else:
        text += " The log has no reward margin to compare with."
    return text


def format_report(r: Mapping[str, Any]) -> str:
    """The short text report of :func:`diagnose`'s result."""

    def num(x: Any, fmt: str = ".4g") -> str:
        return "n/a" if x is None else format(x, fmt)

    series = r["series"][r["metric"]]
    steps = [s for s in series["steps"] if s is not None]
    unit = " nats" if r["metric"].startswith("logps") else ""
    source = r["source"] if isinstance(r["source"], str) else f"mean of {len(r['source'])} seeds"
    lines = [
        f"{source}: {FORMATS.get(r['format'], r['format'])}, {r['split']} series",
        f"{r['metric']} ({r['key']}, {r['n_points']} points, steps {num(min(steps), 'g')}–"
        f"{num(max(steps), 'g')}): {r['shape']}",
    ]
    if r["shape"] != "too-short":
        frac = r.get("peak_fraction")
        lines.append(
            f"  start {num(r['start'])}, peak {num(r['peak'])} at step {num(r['peak_step'], 'g')}"
            f" ({num(None if frac is None else 100 * frac, '.0f')} % of training), "
            f"final {num(r['final'])}")
    if r["shape"] not in ("too-short", "inconclusive"):
        conf = f"{100 * (1 - r['alpha']):g} %"

        def ci(name: str) -> str:
            lo_hi = r.get(f"{name}_ci") or [None, None]
            if lo_hi[0] is None:
                return ""
            return f" [{num(lo_hi[0])}, {num(lo_hi[1])}]"

        levels = r.get("levels") or [None] * 3
        lines += [
            f"  rise {num(r['rise'])}{ci('rise')}, drop from peak {num(r['drop_from_peak'])}"
            f"{ci('drop')}, change {num(r['change'], '+.4g')}{ci('change')}{unit} "
            f"({conf} intervals)",
            f"  levels at alpha {r['alpha']:g}: rise {num(levels[0])}, drop {num(levels[1])}, "
            f"fall {num(levels[2])} ({r['noise_source']}; point noise {num(r.get('noise_point'))}"
            f", AR(1) rho <= {num(r.get('rho'), '.2f')}; smoothing window {r['window']})",
        ]
    side = [f"{name}: {r[f'{label}_trend']} ({num(r[f'{label}_change'], '+.4g')})"
            for label, name in (("margin", "rewards/margins"), ("rejected", "rejected"))
            if r.get(f"{label}_trend") is not None]
    if side:
        lines.append("  " + "; ".join(side))
    for p in r.get("per_seed", []):
        lines.append(f"  seed {p['source']}: {p['shape']}, peak at step {num(p['peak_step'], 'g')}"
                     f", drop {num(p['drop_from_peak'])}")
    lines.append(textwrap.fill(r["reading"], width=100))
    return "\n".join(lines)


def plot_diagnosis(r: Mapping[str, Any], path: str | Path) -> Path:
    """Draw the chosen curve (raw and smoothed, peak marked) and the margin, titled by the verdict.

    The file type follows the extension (``.png``, ``.pdf``, ``.svg``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mi_bounds.decline.shape import _as_curve, _smooth

    others = [n for n in ("rewards/margins", "logps/rejected", "rewards/rejected")
              if n in r["series"]]
    fig, axes = plt.subplots(1 + bool(others), 1, figsize=(6.4, 3.0 + 2.4 * bool(others)),
                             sharex=True, squeeze=False)
    ax = axes[0, 0]
    s = r["series"][r["metric"]]
    steps, values = _as_curve(s["values"], s["steps"])
    ax.plot(steps, values, ".", color="0.6", ms=3, label=f"{r['key']} (logged)")
    ax.plot(steps, _smooth(values, int(r["window"])), "-", color="C0",
            label=f"smoothed (window {r['window']})")
    if r.get("peak_step") is not None:
        ax.axvline(r["peak_step"], color="C3", ls=":", lw=1)
        ax.plot([r["peak_step"]], [r["peak"]], "o", color="C3", label="peak")
    ax.set_ylabel(r["metric"])
    title = f"{r['shape']}"
    if r["shape"] not in ("too-short", "inconclusive"):
        lo, hi = r.get("drop_ci") or (None, None)
        interval = "" if lo is None else f" [{lo:.3g}, {hi:.3g}]"
        title += (f": peak at step {r['peak_step']:g}, drop {r['drop_from_peak']:.3g}"
                  f"{interval} (alpha {r['alpha']:g})")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    if others:
        ax2 = axes[1, 0]
        for i, name in enumerate(others):
            o = r["series"][name]
            st, va = _as_curve(o["values"], o["steps"])
            how = r.get("margin_trend" if name == "rewards/margins" else "rejected_trend")
            ax2.plot(st, va, "-", color=f"C{i + 1}", label=f"{o['key']} ({how})")
        ax2.legend(fontsize=7, loc="best")
        ax2.set_xlabel("step")
    else:
        ax.set_xlabel("step")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
