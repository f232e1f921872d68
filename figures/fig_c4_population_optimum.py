"""C4: the population optimum of each preference loss, exactly, over the simplex.

Left: ``E_x KL(pi_loss ‖ pi*)`` against beta under Bradley–Terry pairs, where ``pi_loss``
minimises the exact expected loss (tabular policy, L-BFGS) and ``pi*`` is the Gibbs policy at
the same beta: DPO recovers ``pi*`` (round-off floor), MIO does not. Middle: the same with
base-model pairs labelled by the reward (deterministic labels). Right: the policies on the first
prompt at beta = 0.1 under Bradley–Terry pairs.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from experiments.claims import C4_LOSSES, claim_c4
from figures._style import COLORS, save

FLOOR = 1e-17


def _plot_kl(ax, res, losses, title):
    betas = [r["beta"] for r in res["results"]]
    for i, kind in enumerate(losses):
        kl = [max(r["losses"][kind]["kl_to_optimal"], FLOOR) for r in res["results"]]
        style = "-" if kind in ("dpo", "mio", "bco_pair", "nwj") else ":"
        lw = 2.0 if kind in ("dpo", "mio") else 1.0
        ax.plot(betas, kl, style, marker="o", ms=3, lw=lw, label=kind,
                color=COLORS.get(kind, f"C{i % 10}"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(FLOOR / 2, 100)
    ax.set_xlabel("β")
    ax.set_ylabel("E_x KL(π_loss ‖ π*)")
    ax.set_title(title, fontsize=9)


def make(out_dir: Path, *, quick: bool = False) -> list[Path]:
    betas = (0.1,) if quick else (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
    losses = ["dpo", "mio"] if quick else list(C4_LOSSES)
    bt = claim_c4(betas=betas, losses=losses)
    base_losses = ["dpo", "mio"] if quick else ["dpo", "mio", "bco_pair", "nwj"]
    base = claim_c4(betas=betas, losses=base_losses, pairs=("base_labelled",))

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.8))
    _plot_kl(a, bt, losses, "Bradley–Terry pairs: DPO → π*, MIO does not")
    a.legend(fontsize=6, ncol=2)
    _plot_kl(b, base, base_losses, "base samples labelled by the reward")
    b.legend(fontsize=7)

    row = next(r for r in bt["results"] if abs(r["beta"] - 0.1) < 1e-12)
    from toy_models.world import CategoricalWorld

    w = CategoricalWorld.random(bt["seed"], bt["n_prompts"], bt["n_responses"], 0.1)
    y = np.arange(w.n_responses)
    bars = [("π_ref", w.pi_ref[0], "0.6"), ("π*", w.optimal_policy()[0], "k"),
            ("dpo", np.array(row["losses"]["dpo"]["policy"])[0], COLORS["dpo"]),
            ("mio", np.array(row["losses"]["mio"]["policy"])[0], COLORS["mio"])]
    width = 0.2
    for i, (label, probs, color) in enumerate(bars):
        c.bar(y + (i - 1.5) * width, probs, width=width, color=color, label=label)
    c.set_xticks(y, [f"y{k}\nr={w.reward[0, k]:.2f}" for k in y], fontsize=7)
    c.set_ylabel("probability")
    c.set_title("prompt 0, β = 0.1 (Bradley–Terry pairs)", fontsize=9)
    c.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out_dir, "c4_population_optimum",
                data={"bradley_terry": bt, "base_labelled": base})
