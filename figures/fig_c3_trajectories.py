"""C3 trajectories: chosen and rejected log-likelihood, margin and reward per step, per loss.

Row 1, the world fixed before any C3 result was looked at: ``displacement_world()`` (8 prompts,
8 responses, d = 8, overlap 0.9, beta = 0.1, seed 0; one chosen/rejected pair per prompt),
exact full-batch gradient descent, lr = 10, 2000 steps. Row 2, a world picked from the grid
afterwards to show the rise-then-fall shape. Row 3: the second setting, many pairs per prompt
drawn from ``pi_ref`` and labelled by the reward, random features
(:func:`experiments.claims_c3.labelled_pairs_world`); the JSON also holds
:func:`experiments.claims_c3.labelled_pairs_check` (6 seeds, both pair kinds, d ∈ {4, 16}).
``quick``: 100 steps each.
Numbers from :func:`experiments.claims_c3.canonical_trajectories`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from experiments.claims_c3 import (
    C3_LOSSES,
    canonical_trajectories,
    displacement_world,
    labelled_pairs_check,
    labelled_pairs_world,
    summarise_decline,
)
from figures._style import COLORS, plt, save

NAME = "c3_trajectories"

#: Row 1: the canonical world (fixed before any result). Row 2: a world picked *after* the grid
#: was run, as the clearest case in it where DPO's chosen likelihood first rises and then falls
#: (peak after step 50 and a drop > 2 nats: 4 of the grid's 432 DPO runs). Row 3: the second
#: setting, many base-model pairs per prompt labelled by the reward (seed 0 of the check).
WORLDS = (
    ("canonical (fixed in advance)", "displacement",
     dict(n_prompts=8, n_responses=8, dim=8, overlap=0.9, beta=0.1, seed=0), 10.0, 2000),
    ("rise-then-fall (picked later)", "displacement",
     dict(n_prompts=8, n_responses=16, dim=8, overlap=0.5, beta=0.5, seed=2), 1.0, 1000),
    ("base-labelled pairs", "labelled",
     dict(pair_kind="base_labelled", n_prompts=8, n_responses=8, dim=16, beta=0.1, seed=0),
     10.0, 2000),
)


def _label(kind: str, spec: dict, lr: float) -> str:
    if kind == "displacement":
        return (f"ρ = {spec['overlap']:g}, Y = {spec['n_responses']}, β = {spec['beta']:g}, "
                f"lr = {lr:g}")
    return (f"random φ (d = {spec['dim']}), Y = {spec['n_responses']}, β = {spec['beta']:g}, "
            f"lr = {lr:g}")


def make(out_dir: Path, *, quick: bool = False) -> list[Path]:
    """Compute the runs and write ``c3_trajectories.{png,pdf,json}``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest
    try:
        rows = []
        for title, kind, spec, lr, steps in WORLDS:
            c3 = displacement_world(**spec) if kind == "displacement" else \
                labelled_pairs_world(**spec)
            runs = canonical_trajectories(c3, losses=C3_LOSSES, lr=lr,
                                          steps=100 if quick else steps)
            rows.append((title, kind, spec, lr, runs))
        check = (labelled_pairs_check(dims=(4,), seeds=(0,), steps=100) if quick
                 else labelled_pairs_check())
    finally:
        torch.set_num_threads(before)

    panels = [
        ("chosen_logps", "mean log π(chosen | x)"),
        ("rejected_logps", "mean log π(rejected | x)"),
        ("margin", "margin E[T_w − T_l]"),
        ("expected_reward", "expected reward E r"),
    ]
    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 2.7 * len(rows)), squeeze=False)
    styles = {"dpo": "-", "mio": "-", "ipo": "-", "nca_pair": ":"}
    for r, (title, kind_, spec, lr, runs) in enumerate(rows):
        for ax, (metric, label) in zip(axes[r], panels, strict=True):
            for kind, traj in runs.items():
                if traj.diverged_at is not None:  # plain GD blew up: say so, do not draw it
                    continue
                ax.plot(traj.step, getattr(traj, metric), styles.get(kind, "-"),
                        color=COLORS.get(kind), label=kind,
                        lw=1.6 if kind != "nca_pair" else 2.2)
            ax.set_xscale("symlog", linthresh=10.0)
            ax.set_title(label, fontsize=9)
            if r == len(rows) - 1:
                ax.set_xlabel("gradient step (linear to 10, then log)")
        axes[r, 0].set_ylabel(f"{title}\n{_label(kind_, spec, lr)}", fontsize=7)
        gone = [f"{k} diverged at step {t.diverged_at}" for k, t in runs.items()
                if t.diverged_at is not None]
        if gone:
            axes[r, 0].text(0.02, 0.02, "; ".join(gone), transform=axes[r, 0].transAxes,
                            fontsize=7, color=COLORS.get("ipo", "0.4"))
        axes[r, 0].legend(frameon=False, fontsize=7)
    fig.suptitle("C3: exact full-batch gradient descent of a shared-feature policy "
                 "(nca_pair ≡ mio; rows 1–2: E r = P(chosen response))", fontsize=9)
    fig.tight_layout()

    data: dict = {"rows": [], "labelled_pairs_check": check}
    for title, _, spec, lr, runs in rows:
        every = max(1, len(next(iter(runs.values())).step) // 200)
        data["rows"].append({
            "title": title, "world": spec, "lr": lr,
            "steps": int(next(iter(runs.values())).step[-1]),
            "summary": {kind: summarise_decline(traj) for kind, traj in runs.items()},
            "trajectories": {
                kind: {"step": traj.step[::every].tolist(),
                       **{m: np.round(getattr(traj, m)[::every], 10).tolist()
                          for m in ("chosen_logps", "rejected_logps", "margin",
                                    "expected_reward", "kl_to_reference")}}
                for kind, traj in runs.items()
            },
        })
    return save(fig, out_dir, NAME, data=data)
