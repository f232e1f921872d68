"""C2: the base model caps what RLHF can reach.

Left: the reward gap needed for ``pi*(y) ≥ ½`` against ``pi_ref(y) = p`` (exact bisection,
markers; ``beta log((1-p)/p)``, lines). Middle: sampled on-policy REINFORCE with the KL term on
a world whose right answer has ``pi_ref = p``: the step at which it is first sampled (crosses:
never sampled within the run) against ``1/(1-(1-p)^batch)``. Right: where the policy ends
(``pi(right)``) against the exact optimum ``pi*(right)``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from experiments.claims import claim_c2
from figures._style import save


def make(out_dir: Path, *, quick: bool = False) -> list[Path]:
    kwargs = {}
    if quick:
        kwargs = dict(n_support_worlds=5, p_grid=(1e-2, 1e-6), rl_p=(1e-2, 1e-6),
                      rl_steps=100, rl_seeds=(0,), betas=(0.5,))
    res = claim_c2(**kwargs)
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(12, 3.5))
    curve = res["gap_curve"]
    p = np.array(curve["p"])
    for i, beta in enumerate(curve["betas"]):
        label = f"β = {beta:g}: β log((1−p)/p)"
        (line,) = a.plot(p, curve["gap_closed_form"][i], lw=1, label=label)
        a.plot(p, curve["gap_numeric"][i], "o", ms=3, color=line.get_color())
    a.set_xscale("log")
    a.set_xlabel("π_ref(right answer) = p")
    a.set_ylabel("reward gap for π*(right) ≥ ½")
    a.set_title("Gap needed grows like β log(1/p)")
    a.legend(fontsize=7)

    rl = res["reinforce"]
    budget = rl["steps"]
    for row in rl["results"]:
        x = row["p_right"]
        b.plot([x], [row["expected_first_hit"]], "k_", ms=14)
        for run in row["runs"]:
            if run["first_hit"] is None:
                b.plot([x], [budget], "rx")
            else:
                b.plot([x], [run["first_hit"]], "o", color="C0", ms=4, alpha=0.7)
        c.plot([x], [row["pi_star_right"]], "k_", ms=14)
        for run in row["runs"]:
            c.plot([x], [run["final_pi_right"]], "o", color="C1", ms=4, alpha=0.7)
    b.axhline(budget, color="r", lw=0.8, ls=":")
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel("π_ref(right answer)")
    b.set_ylabel("step of first sample")
    b.set_title(f"REINFORCE, batch {rl['batch']}: first sample\n"
                f"(— expected; × never in {budget} steps)", fontsize=8)
    c.set_xscale("log")
    c.set_yscale("log")
    c.set_xlabel("π_ref(right answer)")
    c.set_ylabel("π(right answer) at the end")
    c.set_title(f"… and where the policy ends (— exact π*, β = {rl['beta']:g})", fontsize=8)
    fig.tight_layout()
    return save(fig, out_dir, "c2_base_cap", data=res)
