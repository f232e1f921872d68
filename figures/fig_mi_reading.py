"""Which MI RLHF's optimum bounds: E_x KL(pi* ‖ pi_ref) = I_{pi*}(X;Y) + gap, across beta.

Columns: the three worlds of :func:`experiments.claims_mi.example_worlds` (pi_ref the same for
every prompt with pi*_Y = pi_ref: the reading is exact; pi_ref the same for every prompt: gap
= KL(pi*_Y ‖ pi_ref) ≥ 0; pi_ref depending on the prompt: the gap changes sign). Rows: the
information quantities; the gap and its two terms; the DV, JS and InfoNCE bounds at the implicit
critic beta log(pi*/pi_ref), per prompt, on the MI reading (solid) and the RLHF reading
(dashed); at beta = 1 (dotted line) that critic is log(pi*/pi_ref) and DV on the RLHF reading is
tight.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from experiments.claims_mi import EXAMPLE_NAMES, claim_mi_reading
from figures._style import COLORS, save

TITLES = {
    "exact": "π_ref(y|x) = ρ = π*_Y: gap = 0 (exact)",
    "independent": "π_ref(y|x) = ρ(y): gap = KL(π*_Y‖ρ) ≥ 0",
    "dependent": "π_ref depends on x: gap of either sign",
}


def make(out_dir: Path, *, quick: bool = False) -> list[Path]:
    betas = (0.05, 0.3, 1.0, 5.0, 20.0) if quick else None
    kwargs = {"n_worlds": 20 if quick else 1000}
    if betas is not None:
        kwargs["betas"] = betas
    res = claim_mi_reading(**kwargs)
    fig, axes = plt.subplots(3, 3, figsize=(13, 10), sharex=True)
    log2 = np.log(2.0)
    for col, name in enumerate(EXAMPLE_NAMES):
        c = res["curves"][name]
        b = np.array(c["beta"])
        a = axes[0, col]
        a.plot(b, c["mi_reference"], color="0.5", ls=":", label="I(X;Y) under π_ref")
        a.plot(b, c["mutual_information"], color="k", label="I(X;Y) under π*")
        a.plot(b, c["kl_to_reference"], color="k", ls="--", label="E_x KL(π*‖π_ref)")
        a.set_title(TITLES[name], fontsize=9)
        a.set_ylabel("nats")

        a = axes[1, col]
        gap = np.array(c["gap"])
        a.axhline(0.0, color="k", lw=0.6)
        a.plot(b, gap, color="#9467bd", lw=2, label="gap = E_x KL − I")
        a.plot(b, c["marginal_kl"], color="#9467bd", ls="--", lw=1,
               label="KL(π*_Y‖π̄_ref)")
        a.plot(b, -np.array(c["reference_pmi"]), color="#9467bd", ls=":", lw=1,
               label="−E_π*[log π_ref(y|x)/π̄_ref(y)]")
        a.fill_between(b, 0, gap, where=gap < 0, color="#9467bd", alpha=0.15, lw=0)
        a.set_ylabel("nats")
        if name == "exact":  # zero up to round-off: do not magnify the noise
            a.set_ylim(-0.1, 0.1)
            a.text(0.5, 0.6, f"|gap| ≤ {np.abs(gap).max():.0e} (round-off)",
                   transform=a.transAxes, ha="center", fontsize=8)

        a = axes[2, col]
        a.plot(b, c["mutual_information"], color="k", lw=0.8, label="I(X;Y) under π*")
        a.plot(b, c["kl_to_reference"], color="k", ls="--", lw=0.8, label="E_x KL(π*‖π_ref)")
        for bound, color, shift, label in (("dv", COLORS["dv"], 0.0, "DV"),
                                           ("infonce", COLORS["infonce"], 0.0,
                                            f"InfoNCE (K = {res['K']})"),
                                           ("js", COLORS["js"], 2 * log2, "JS + 2 log 2")):
            for reading, ls in (("mi", "-"), ("rlhf", "--")):
                vals = np.array(c[f"{bound}/{reading}/implicit/per_prompt"]) + shift
                a.plot(b, vals, color=color, ls=ls,
                       label=f"{label}, {'MI' if reading == 'mi' else 'RLHF'} reading")
        a.axvline(1.0, color="0.6", lw=0.6, ls=":")
        a.set_ylabel("bound at T = β log(π*/π_ref) (nats)")
        a.set_xlabel("β")
        a.set_ylim(bottom=max(a.get_ylim()[0], -1.5))
    for a in axes.flat:
        a.set_xscale("log")
    axes[0, 0].legend(fontsize=7)
    axes[1, 2].legend(fontsize=7)
    axes[2, 0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return save(fig, out_dir, "mi_reading", data=res)
