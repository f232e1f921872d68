"""C3 compared like with like: the chosen log-likelihood at matched margin, KL and steps.

Row 1, the canonical world (``displacement_world()``: 8 prompts, 8 responses, d = 8, overlap
0.9, β = 0.1, seed 0; lr = 10, 2000 exact full-batch steps;
:func:`experiments.claims_c3.matched_comparison`): the change of the mean chosen log-likelihood
against the reward margin, against KL(π‖π_ref) and against the step, for dpo, mio, ipo and the
matched-initial-gradient control ``dpo_half`` (DPO at lr = 5: at T = 0 MIO's gradient is exactly
half of DPO's). Dotted lines: MIO's final margin and KL, where the other losses are read.

Row 2, 108 worlds (:func:`experiments.claims_c3.matched_grid`: β ∈ {0.05, 0.1, 0.5} × lr ∈
{1, 10} × Y ∈ {4, 8, 16} × ρ ∈ {0.5, 0.9} × seeds 0–2, 1000 steps): one point per world, MIO's
chosen change at the end (x) against DPO's where DPO first reaches MIO's final margin (left) or
KL (middle), and DPO's and ``dpo_half``'s at the end (right). Points below the diagonal: DPO's
chosen likelihood fell more. ``quick``: 100 steps and one world.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from experiments.claims_c3 import C3Grid, matched_comparison, matched_grid
from figures._style import COLORS, plt, save

NAME = "c3_matched"
RUNS = ("dpo", "mio", "ipo", "dpo_half")


def _style(name: str) -> dict:
    if name == "dpo_half":
        return {"color": COLORS["dpo"], "ls": "--", "label": "dpo, lr / 2"}
    return {"color": COLORS.get(name), "ls": "-", "label": name}


def make(out_dir: Path, *, quick: bool = False) -> list[Path]:
    """Compute the runs and write ``c3_matched.{png,pdf,json}``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest
    try:
        canon = matched_comparison(steps=100 if quick else 2000)
        grid = matched_grid(C3Grid(betas=(0.1,), lrs=(10.0,), n_responses=(4,), overlaps=(0.9,),
                                   seeds=(0,), steps=100, losses=("dpo", "mio"))
                            if quick else None)
    finally:
        torch.set_num_threads(before)

    fig, axes = plt.subplots(2, 3, figsize=(12, 7.2))
    curves, matched = canon["curves"], canon["matched"]
    for ax, (key, label) in zip(axes[0], [("margin", "reward margin E[T_w − T_l]"),
                                          ("kl_to_reference", "E_x KL(π ‖ π_ref)"),
                                          (None, "gradient step")], strict=True):
        for name in RUNS:
            c = curves[name]
            y = np.asarray(c["chosen_logps"]) - c["chosen_logps"][0]
            x = np.arange(len(y)) if key is None else np.asarray(c[key])
            ax.plot(x, y, lw=1.5, **_style(name))
        if key is not None:
            level = matched["margin" if key == "margin" else "kl"]["level"]
            ax.axvline(level, color=COLORS["mio"], ls=":", lw=1)
        ax.set_xscale("symlog", linthresh=0.01 if key is not None else 10.0)
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_xlabel(label)
    axes[0, 0].set_ylabel("canonical world\nchosen log-lik. change (nats)")
    axes[0, 0].legend(frameon=False, fontsize=7)
    axes[0, 0].set_title("against the margin", fontsize=9)
    axes[0, 1].set_title("against KL to π_ref", fontsize=9)
    axes[0, 2].set_title("against the step (fixed budget)", fontsize=9)

    rows = [r for r in grid["rows"] if not r.get("diverged")]
    mio_end = np.array([r["fixed_budget"]["mio"] for r in rows])
    panels = [("margin", "at MIO's final margin"), ("kl", "at MIO's final KL"),
              ("fixed_budget", "at the last step")]
    for ax, (key, title) in zip(axes[1], panels, strict=True):
        names = ("dpo",) if key != "fixed_budget" else ("dpo", "dpo_half")
        for name in names:
            y = np.array([r[key][name] if key == "fixed_budget" else r[key]["chosen_change"][name]
                          for r in rows])
            st = _style(name)
            ax.scatter(mio_end, y, s=9, color=st["color"], alpha=0.7,
                       marker="o" if name == "dpo" else "x", label=st["label"])
        lo = min(-0.01, float(np.nanmin(mio_end))) if rows else -1.0
        hi = max(0.01, float(np.nanmax(mio_end))) if rows else 0.0
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, label="y = x")
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_xlabel("MIO chosen change at its last step")
        ax.set_title(f"DPO {title}", fontsize=9)
    axes[1, 0].set_ylabel(f"{len(rows)} worlds\nchosen log-lik. change (nats)")
    axes[1, 2].legend(frameon=False, fontsize=7)
    fig.suptitle("C3 compared like with like: DPO, MIO, IPO and DPO at half the rate "
                 "(exact full-batch dynamics)", fontsize=9)
    fig.tight_layout()

    every = max(1, len(curves["dpo"]["chosen_logps"]) // 400)
    canon["curves"] = {k: {m: np.round(np.asarray(v)[::every], 10).tolist() for m, v in c.items()}
                       for k, c in curves.items()}
    canon["curves_every"] = every
    return save(fig, out_dir, NAME, data={"canonical": canon, "grid": grid})
