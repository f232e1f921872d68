"""C3 phase diagram: the peak-to-final drop of the mean chosen log-likelihood, per loss.

Grid (:class:`experiments.claims_c3.C3Grid`): beta ∈ {0.05, 0.1, 0.5} × learning rate ∈ {1, 10}
× responses per prompt ∈ {2, 4, 8, 16} × chosen/rejected feature overlap ∈ {0, 0.5, 0.8, 0.9,
0.95, 0.99} × 3 seeds, 8 prompts, d = 8, 1000 exact full-batch steps, losses dpo, mio and ipo
(nca_pair is mio term for term; see ``fig_c3_trajectories``). Each cell shows the drop
``max_t c_t - c_T`` (nats) averaged over the seeds; hatched cells: some seed diverged (the rate
is too large for plain gradient descent on that loss). ``quick``: a 2 × 2 grid, 150 steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.colors import SymLogNorm

from experiments.claims_c3 import C3Grid, decline_grid
from figures._style import plt, save

NAME = "c3_decline"
LOSSES = ("dpo", "mio", "ipo")


def grid(quick: bool = False) -> C3Grid:
    """The grid the figure uses."""
    if quick:
        return C3Grid(**{**C3Grid.quick().__dict__, "losses": LOSSES})
    return C3Grid(losses=LOSSES)


def plot(data: dict[str, Any]) -> plt.Figure:
    """Draw the phase diagram from :func:`experiments.claims_c3.decline_grid`'s output."""
    g = data["grid"]
    losses = [k for k in LOSSES if k in data["drop"]]
    combos = [(i, j) for i in range(len(g["beta"])) for j in range(len(g["lr"]))]
    fig, axes = plt.subplots(len(losses), len(combos), squeeze=False,
                             figsize=(1.9 * len(combos) + 1.2, 1.75 * len(losses) + 0.8))
    norm = SymLogNorm(linthresh=0.01, vmin=0.0, vmax=100.0, base=10)
    image = None
    for r, kind in enumerate(losses):
        drop = np.array(data["drop"][kind], dtype=float)  # [beta, lr, n_resp, overlap, seed]
        for c, (i, j) in enumerate(combos):
            ax = axes[r, c]
            cell = drop[i, j]  # [n_resp, overlap, seed]
            diverged = np.isnan(cell).any(-1)
            mean = np.where(diverged, np.nan, np.nanmean(np.where(np.isnan(cell), 0, cell), -1))
            image = ax.imshow(mean, origin="lower", cmap="magma_r", norm=norm, aspect="auto")
            for (a, b), v in np.ndenumerate(mean):
                if diverged[a, b]:
                    ax.add_patch(plt.Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False,
                                               hatch="////", lw=0, color="0.5"))
                    continue
                txt = f"{v:.2f}" if v < 10 else f"{v:.0f}"
                ax.text(b, a, txt, ha="center", va="center", fontsize=5,
                        color="white" if v > 3 else "black")
            ticks = [f"{o:g}".removeprefix("0") or "0" for o in g["overlap"]]  # .5, .99
            ax.set_xticks(range(len(g["overlap"])), ticks, fontsize=6)
            ax.set_yticks(range(len(g["n_responses"])), [str(n) for n in g["n_responses"]],
                          fontsize=6)
            ax.grid(False)
            if r == 0:
                ax.set_title(f"β = {g['beta'][i]:g}, lr = {g['lr'][j]:g}", fontsize=8)
            if r == len(losses) - 1:
                ax.set_xlabel("overlap ρ", fontsize=7)
            if c == 0:
                ax.set_ylabel(f"{kind}\nresponses / prompt", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="peak-to-final drop of mean log π(chosen) "
                 "(nats)")
    fig.suptitle(f"C3 phase diagram: {g['steps']} exact gradient steps, {g['n_prompts']} "
                 f"prompts, d = {g['dim']}, mean of {len(g['seed'])} seed(s); hatched = diverged",
                 fontsize=9)
    return fig


def make(out_dir: Path, *, quick: bool = False) -> list[Path]:
    """Run the grid and write ``c3_decline.{png,pdf,json}``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest
    try:
        data = decline_grid(grid(quick))
    finally:
        torch.set_num_threads(before)
    return save(plot(data), out_dir, NAME, data=data)
