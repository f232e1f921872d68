"""C3 trajectories: chosen and rejected log-likelihood, margin and reward per step, per loss.

One world, fixed before any C3 result was looked at: ``displacement_world()`` (8 prompts, 8
responses, d = 8, overlap 0.9, beta = 0.1, seed 0; one chosen/rejected pair per prompt), exact
full-batch gradient descent, lr = 10, 2000 steps (``quick``: 200 steps). Numbers from
:func:`toy_models.claims_c3.canonical_trajectories`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from figures._style import COLORS, plt, save
from toy_models.claims_c3 import C3_LOSSES, canonical_trajectories, summarise_decline

NAME = "c3_trajectories"
LR = 10.0
STEPS = 2000


def make(out_dir: Path, *, quick: bool = False) -> list[Path]:
    """Compute the canonical runs and write ``c3_trajectories.{png,pdf,json}``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest
    try:
        runs = canonical_trajectories(losses=C3_LOSSES, lr=LR, steps=200 if quick else STEPS)
    finally:
        torch.set_num_threads(before)

    panels = [
        ("chosen_logps", "mean log π(chosen | x)"),
        ("rejected_logps", "mean log π(rejected | x)"),
        ("margin", "margin E[T_w − T_l]"),
        ("expected_reward", "P(right answer) = E r"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(12, 2.9))
    styles = {"dpo": "-", "mio": "-", "ipo": "-", "nca_pair": ":"}
    for ax, (metric, label) in zip(axes, panels, strict=True):
        for kind, traj in runs.items():
            ax.plot(traj.step, getattr(traj, metric), styles.get(kind, "-"),
                    color=COLORS.get(kind), label=kind, lw=1.6 if kind != "nca_pair" else 2.2)
        ax.set_xscale("symlog", linthresh=10.0)
        ax.set_xlabel("gradient step (linear to 10, then log)")
        ax.set_title(label)
    axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle("C3 in the canonical shared-feature world (overlap 0.9, 8 responses, β = 0.1, "
                 f"lr = {LR:g}); nca_pair ≡ mio", fontsize=9)
    fig.tight_layout()

    every = max(1, len(next(iter(runs.values())).step) // 200)
    data = {
        "world": {"n_prompts": 8, "n_responses": 8, "dim": 8, "overlap": 0.9, "beta": 0.1,
                  "seed": 0},
        "lr": LR,
        "steps": int(next(iter(runs.values())).step[-1]),
        "summary": {kind: summarise_decline(traj) for kind, traj in runs.items()},
        "trajectories": {
            kind: {"step": traj.step[::every].tolist(),
                   **{m: np.round(getattr(traj, m)[::every], 10).tolist()
                      for m in ("chosen_logps", "rejected_logps", "margin", "expected_reward",
                                "kl_to_reference")}}
            for kind, traj in runs.items()
        },
    }
    return save(fig, out_dir, NAME, data=data)
