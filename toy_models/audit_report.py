"""The report of ``mi-bounds audit``: Markdown, figures and JSON of :func:`toy_models.audit.audit`.

Every sentence is built from a number of the audit result and printed beside it; nothing here
computes a finding (docs/THEORY.md, "Auditing a loss").
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["markdown", "plot_dynamics", "plot_gradient_fields", "slim", "write_report"]


def slim(result: Mapping[str, Any]) -> dict[str, Any]:
    """The result without the gradient grids and the per-step curves (drawn in the figures):
    what ``--json`` prints and ``audit.json`` stores."""
    out = json.loads(json.dumps(result))
    for a in out["audits"].values():
        a["gradient_fields"] = {"at_origin": a["gradient_fields"]["at_origin"]}
    if "dynamics" in out:
        out["dynamics"].pop("curves", None)
    return out


def _g(x: float, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.{digits}g}"


def _invariance_lines(name: str, a: Mapping[str, Any]) -> list[str]:
    inv = a["invariances"]
    n = inv["points"]
    lines = []
    if inv["depends_on_margin_only"]:
        lines.append(
            f"- **Margin only: yes.** Shifting T_w and T_l together changes `{name}` by at most "
            f"{_g(inv['margin_deviation'], 2)} (relative, {n} random points): it sees T_w − T_l "
            f"alone, so nothing in it resists both likelihoods falling together.")
    else:
        lines.append(
            f"- **Margin only: no.** Shifting T_w and T_l together changes `{name}` by up to "
            f"{_g(inv['margin_deviation'], 3)} (relative, {n} random points).")
    if inv["depends_on_critic_only"]:
        lines.append(
            f"- **Implicit critic only: yes.** Moving policy and reference log-probabilities "
            f"together changes it by at most {_g(inv['critic_deviation'], 2)}.")
    else:
        lines.append(
            f"- **Implicit critic only: no.** Moving policy and reference log-probabilities "
            f"together (T unchanged) changes it by up to {_g(inv['critic_deviation'], 3)}: it "
            f"reads the log-probabilities themselves, not only T_w and T_l.")
    sep = []
    if not inv["depends_on_T_w"]:
        sep.append(f"∂L/∂T_w is 0 everywhere (max |∂L/∂T_w| = {_g(inv['max_abs_dL_dTw'], 2)})")
    if not inv["depends_on_T_l"]:
        sep.append(f"∂L/∂T_l is 0 everywhere (max |∂L/∂T_l| = {_g(inv['max_abs_dL_dTl'], 2)})")
    if sep:
        lines.append("- " + "; ".join(sep) + ".")
    jf = inv["joint_fall"]
    vals = ", ".join(f"{_g(v, 3)} at t = {t:g}" for t, v in zip(jf["t"], jf["dL_ds"], strict=True))
    verdict = ("it resists a joint fall where this is positive" if
               inv["resists_joint_fall_somewhere"] else "it never resists a joint fall there")
    lines.append(f"- **Joint fall** (derivative of L as T_w = T_l = t both decrease): {vals}; "
                 f"{verdict}.")
    fp = inv["chosen_fixed_point"]
    if fp is not None:
        kind = "attracting" if fp["attracting"] else "repelling"
        lines.append(
            f"- **Chosen fixed point:** ∂L/∂T_w = 0 at T_w = {fp['t_w']:.6f} (e^T_w = "
            f"{math.exp(fp['t_w']):.6f}) for every T_l in {{-2, …, 2}}, {kind}: the chosen "
            f"log-ratio has its own target β·z_w = {fp['t_w']:.4f}.")
    else:
        counts = {t: len(r) for t, r in inv["chosen_roots"].items()}
        found = ["T_l = {:g}: {}".format(float(t), ", ".join(f"{x['t_w']:.4f}" for x in r))
                 for t, r in inv["chosen_roots"].items() if r]
        lines.append(
            "- **Chosen fixed point: none common to every T_l.** Roots of ∂L/∂T_w in "
            "T_w ∈ [−12, 12]: " + ("; ".join(found) if found else
                                  f"none for any T_l (counts {counts})") + ".")
    return lines


def _reading_lines(name: str, a: Mapping[str, Any]) -> list[str]:
    r = a["mi_reading"]
    lines = ["| bound B | P | Q | scale s | constant a | max residual | fits |",
             "|---|---|---|---|---|---|---|"]
    for c in r["candidates"]:
        lines.append(f"| {c['bound']} | {c['P']} | {c['Q']} | {_g(c['scale'], 6)} | "
                     f"{_g(c['constant'], 6)} | {_g(c['max_residual'], 2)} | "
                     f"{'yes' if c['fits'] else 'no'} |")
    lines.append("")
    if r["readings"]:
        for c in r["readings"]:
            s = "" if abs(c["scale"] - 1) < 1e-6 else f"{c['scale']:.6g}·"
            lines.append(f"- **Reading:** `{name}` = {c['constant']:.6g} − {s}{c['bound']}(T; "
                         f"P = {c['P']}, Q = {c['Q']}) on {r['points']} random critic points "
                         f"(residual ≤ {_g(r['tolerance'], 2)}).")
    elif not r["critic_only"]:
        lines.append(f"- **No reading:** `{name}` is not a function of the implicit critic alone, "
                     f"so no bound of the family, a function of T, can equal it.")
    else:
        best = min(r["candidates"], key=lambda c: c["max_residual"])
        lines.append(f"- **No reading of the family fits:** the closest, {best['bound']} with "
                     f"Q = {best['Q']}, leaves a residual of {_g(best['max_residual'], 3)} "
                     f"(tolerance {_g(r['tolerance'], 2)}).")
    return lines


def _optimum_lines(name: str, a: Mapping[str, Any]) -> list[str]:
    po = a["population_optimum"]
    lines = ["| world seed | KL(π ‖ π*) | converged | min directional derivative | on the boundary "
             "| KL(π* ‖ π_ref) | KL(π ‖ π_ref) | zero-mass dL/dε per prompt |",
             "|---|---|---|---|---|---|---|---|"]
    for w in po["worlds"]:
        dz = ", ".join(_g(d, 3) for d in w["zero_mass_dL_deps"])
        slope = w["min_directional_derivative"]
        lines.append(f"| {w['seed']} | {_g(w['kl_to_pi_star'], 4)} | {w['converged']} | "
                     f"{'—' if slope is None else _g(slope, 3)} | {w['at_boundary']} | "
                     f"{_g(w['pi_star_kl_to_reference'], 4)} | "
                     f"{_g(w['kl_to_reference'], 4)} | {dz} |")
    lines.append("")
    mean = po["mean_kl_to_pi_star"]
    is_star = mean < 1e-8
    lines.append(
        f"- **Population optimum:** mean E_x KL(π ‖ π*) = {_g(mean, 4)} over {len(po['worlds'])} "
        f"random worlds ({po['n_prompts']} prompts × {po['n_responses']} responses, β = "
        f"{po['beta']:g}, Bradley–Terry pairs): "
        + ("the optimum is π* (to the optimiser's tolerance)." if is_star else
           "the optimum is not π*.")
        + ("" if po["all_converged"] else
           " Where L-BFGS-B stopped with a gradient above tolerance (a kink), the minimisation "
           f"was continued past it ({sum(w['kink_escapes'] for w in po['worlds'])} escapes in "
           "all) and the smallest one-sided directional derivative over ± every logit and 32 "
           "random directions at its end is "
           + ("≥ −1e-6 in every such world: no tested direction descends (a minimum on a kink)."
              if po["all_minima"] else
              "below −1e-6 in some world: no minimum was certified there (see the table).")))
    stay = max(w["kl_to_reference"] for w in po["worlds"])
    if stay < 1e-10 and po["all_minima"]:
        lines.append(f"- **The optimum is π_ref itself** in every world (KL(π ‖ π_ref) ≤ "
                     f"{_g(stay, 2)}): the loss does not move the policy at the population level.")
    lo, hi = po["zero_mass_dL_deps_range"]
    lines.append(f"- **Zeros of π_ref:** dL/dε ∈ [{_g(lo, 3)}, {_g(hi, 3)}] over all prompts: "
                 f"{po['zeros_of_pi_ref']}.")
    return lines


def _dynamics_lines(result: Mapping[str, Any]) -> list[str]:
    d = result["dynamics"]
    w = d["world"]
    lines = [f"Shared-feature world (`displacement_world(overlap={w['overlap']}, seed={w['seed']})`"
             f": {w['n_prompts']} prompts, {w['n_responses']} responses, d = {w['dim']}, "
             f"β = {w['beta']}), full-batch gradient descent, lr {d['lr']:g}, {d['steps']} steps; "
             f"`dpo_half` is DPO at half the rate.", "",
             "| loss | decline shape | chosen: initial → peak → final | drop from peak | "
             "final margin | final KL | held-out shape |", "|---|---|---|---|---|---|---|"]
    for name, s in d["summary"].items():
        lines.append(f"| {name} | {s['shape']} | {_g(s['chosen_initial'], 4)} → "
                     f"{_g(s['chosen_peak'], 4)} → {_g(s['chosen_final'], 4)} | "
                     f"{_g(s['drop'], 3)} | "
                     f"{_g(s['margin_final'], 3)} | {_g(s['kl_to_reference_final'], 3)} | "
                     f"{s.get('heldout_shape', '—')} |")
    lines += ["", f"Chosen log-likelihood change where each run first reaches `{d['reference']}`'s "
              "final value (— : never reached):", "",
              "| loss | at equal steps | " + " | ".join(
                  f"matched {k} ({_g(v['level'], 3)})" for k, v in d["matched"].items()
                  if k != "fixed_budget") + " |",
              "|---|---|" + "---|" * (len(d["matched"]) - 1)]
    for name in d["summary"]:
        cells = [_g(d["matched"]["fixed_budget"][name], 3)]
        cells += [_g(v["chosen_change"][name], 3) for k, v in d["matched"].items()
                  if k != "fixed_budget"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown(result: Mapping[str, Any], figures: Mapping[str, str] | None = None) -> str:
    """The report as Markdown (``figures``: figure name → relative path, if drawn)."""
    name = result["loss"]
    main = result["audits"][name]
    source = "" if main["source"] == result["reference"] else f" ({main['source']})"
    if result.get("params"):
        source += " with " + ", ".join(f"{k} = {v:g}" for k, v in result["params"].items())
    out = [f"# Audit of `{name}`", "",
           f"Loss: `{result['reference']}` — {main['formula']}{source}; β = "
           f"{main['beta']:g}, reference log-probabilities −10 nats, T = β(log π − log π_ref)."
           f" Comparators: {', '.join(result['against']) or 'none'}. Computed by `mi-bounds "
           f"audit` in {result['seconds']:.1f} s.", "", "## Summary", "",
           "| loss | margin only | critic only | chosen fixed point | MI reading | "
           "mean KL(π_opt ‖ π*) | zeros of π_ref | decline shape |",
           "|---|---|---|---|---|---|---|---|"]
    for k, a in result["audits"].items():
        inv = a["invariances"]
        fp = inv["chosen_fixed_point"]
        reads = "; ".join(f"{c['bound']}, Q = {c['Q'].split(' (')[0]}"
                          for c in a["mi_reading"]["readings"]) or "none"
        shape = result.get("dynamics", {}).get("summary", {}).get(k, {}).get("shape", "—")
        fixed = "—" if fp is None else f"{fp['t_w']:.4f}"
        out.append(f"| {k} | {'yes' if inv['depends_on_margin_only'] else 'no'} | "
                   f"{'yes' if inv['depends_on_critic_only'] else 'no'} | "
                   f"{fixed} | {reads} | "
                   f"{_g(a['population_optimum']['mean_kl_to_pi_star'], 3)} | "
                   f"{a['population_optimum']['zeros_of_pi_ref'].split(':')[0]} | {shape} |")
    for k, a in result["audits"].items():
        out += ["", f"## `{k}`", "", "### Invariances", "", *_invariance_lines(k, a)]
        go = a["gradient_fields"]["at_origin"]
        out += ["", "### Gradient weights", "",
                f"At T_w = T_l = 0: ∂L/∂T_w = {_g(go['dL_dTw'], 4)}, ∂L/∂T_l = "
                f"{_g(go['dL_dTl'], 4)}."]
        if figures and "gradient_fields" in figures:
            out.append(f"Fields over [−4, 4]²: ![gradient fields]({figures['gradient_fields']})")
        out += ["", "### MI reading", "", *_reading_lines(k, a)]
        out += ["", "### Population optimum", "", *_optimum_lines(k, a)]
    if "dynamics" in result:
        out += ["", "## Exact dynamics", "", *_dynamics_lines(result)]
        if figures and "dynamics" in figures:
            out += ["", f"![dynamics]({figures['dynamics']})"]
    if "lm" in result:
        out += ["", "## Small LM (cpu-tiny)", "",
                f"Run directory `{result['lm']['dir']}` (its tables: `report/lm_table.md`, "
                "`report/lm_matched.md`). The decline verdict of each run's log:", ""]
        for k, runs in result["lm"]["verdicts"].items():
            for r in runs:
                drop = r.get("drop_from_peak")
                out.append(f"- {k} {r['run']}: {r.get('split')} {r.get('metric')} has shape "
                           f"{r.get('shape', '—')}, drop from peak "
                           f"{'—' if drop is None else _g(drop, 3)} nats (peak step "
                           f"{r.get('peak_step')})")
    return "\n".join(out) + "\n"


def plot_gradient_fields(result: Mapping[str, Any], path: Path) -> Path:
    """∂L/∂T_w and ∂L/∂T_l of every audited loss over the grid, zero contour drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    audits = result["audits"]
    fig, axes = plt.subplots(len(audits), 2, figsize=(7.5, 3.0 * len(audits)), squeeze=False)
    for row, (k, a) in enumerate(audits.items()):
        gf = a["gradient_fields"]
        ax_v = np.asarray(gf["axis"])
        for col, key in enumerate(("dL_dTw", "dL_dTl")):
            z = np.asarray(gf[key])
            lim = float(np.abs(z).max()) or 1.0
            ax = axes[row, col]
            im = ax.imshow(z, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim,
                           extent=(ax_v[0], ax_v[-1], ax_v[0], ax_v[-1]))
            if z.min() < 0 < z.max():
                ax.contour(ax_v, ax_v, z, levels=[0.0], colors="k", linewidths=0.8)
            ax.set_title(f"{k}: ∂L/∂T_{'w' if col == 0 else 'l'}")
            ax.set_xlabel("T_w")
            ax.set_ylabel("T_l")
            ax.grid(False)
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_dynamics(result: Mapping[str, Any], path: Path) -> Path:
    """Chosen log-likelihood against step, reward margin and KL(π‖π_ref), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result["dynamics"]["curves"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    for name, c in curves.items():
        chosen = np.asarray(c["chosen_logps"])
        axes[0].plot(np.arange(len(chosen)), chosen, label=name)
        axes[1].plot(c["margin"], chosen, label=name)
        axes[2].plot(c["kl_to_reference"], chosen, label=name)
    for ax, xl in zip(axes, ("step", "reward margin", "KL(π ‖ π_ref)"), strict=True):
        ax.set_xlabel(xl)
        ax.set_ylabel("mean chosen log π")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(result: Mapping[str, Any], out: str | Path) -> Path:
    """Write ``report.md``, ``audit.json`` and the figures into ``out``; return report.md."""
    from mi_bounds._json import rounded

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = {"gradient_fields": "gradient_fields.png"}
    plot_gradient_fields(result, out / figures["gradient_fields"])
    if "dynamics" in result:
        figures["dynamics"] = "dynamics.png"
        plot_dynamics(result, out / figures["dynamics"])
    (out / "audit.json").write_text(json.dumps(rounded(slim(result), 12), indent=1,
                                               ensure_ascii=False) + "\n")
    path = out / "report.md"
    path.write_text(markdown(result, figures))
    return path
