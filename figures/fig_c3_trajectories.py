"""C3 trajectories: chosen and rejected log-likelihood, margin and reward per step, per loss.

Row 1, the world fixed before any C3 result was looked at: ``displacement_world()`` (8 prompts,
8 responses, d = 8, overlap 0.9, beta = 0.1, seed 0; one chosen/rejected pair per prompt),
exact full-batch gradient descent, lr = 10, 2000 steps. Row 2, a world picked from the grid
afterwards to show the rise-then-fall shape (see ``WORLDS``). ``quick``: 100 steps each.
Numbers from :func:`toy_models.claims_c3.canonical_trajectories`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from figures._style import COLORS, plt, save
from toy_models.claims_c3 import (
    C3_LOSSES,
    canonical_trajectories,
    displacement_world,
    summarise_decline,
)

NAME = "c3_trajectories"

#: Row 1: the canonical world (fixed before any result). Row 2: a world picked *after* the grid
#: was run, as the clearest case in it where DPO's chosen likelihood first rises and then falls
#: (peak after step 50 and a drop > 2 nats: 4 of the grid's 432 DPO runs).
WORLDS = (
    ("canonical (fixed in advance)",
     dict(n_prompts=8, n_responses=8, dim=8, overlap=0.9, beta=0.1, seed=0), 10.0, 2000),
    ("rise-then-fall (picked later)",
     dict(n_prompts=8, n_responses=16, dim=8, overlap=0.5, beta=0.5, seed=2), 1.0, 1000),
)


def make(out_dir: Path, *, quick: bool = False) -> list[Path]:
    """Compute the runs and write ``c3_trajectories.{png,pdf,json}``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest
    try:
        rows = [
            (title, spec, lr, canonical_trajectories(displacement_world(**spec), losses=C3_LOSSES,
                                                      lr=lr, steps=100 if quick else steps))
            for title, spec, lr, steps in WORLDS
        ]
    finally:
        torch.set_num_threads(before)

    panels = [
        ("chosen_logps", "mean log π(chosen | x)"),
        ("rejected_logps", "mean log π(rejected | x)"),
        ("margin", "margin E[T_w − T_l]"),
        ("expected_reward", "P(right answer) = E r"),
    ]
    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 2.7 * len(rows)), squeeze=False)
    styles = {"dpo": "-", "mio": "-", "ipo": "-", "nca_pair": ":"}
    for r, (title, spec, lr, runs) in enumerate(rows):
        for ax, (metric, label) in zip(axes[r], panels, strict=True):
            for kind, traj in runs.items():
                ax.plot(traj.step, getattr(traj, metric), styles.get(kind, "-"),
                        color=COLORS.get(kind), label=kind,
                        lw=1.6 if kind != "nca_pair" else 2.2)
            ax.set_xscale("symlog", linthresh=10.0)
            ax.set_title(label, fontsize=9)
            if r == len(rows) - 1:
                ax.set_xlabel("gradient step (linear to 10, then log)")
        axes[r, 0].set_ylabel(f"{title}\nρ = {spec['overlap']:g}, Y = {spec['n_responses']}, "
                              f"β = {spec['beta']:g}, lr = {lr:g}", fontsize=8)
    axes[0, 0].legend(frameon=False, fontsize=8)
    fig.suptitle("C3: exact full-batch gradient descent of a shared-feature policy "
                 "(nca_pair ≡ mio)", fontsize=9)
    fig.tight_layout()

    data: dict = {"rows": []}
    for title, spec, lr, runs in rows:
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
