"""Estimator variance against Song & Ermon's lower bound, on exact categorical worlds.

World (exact, no neural network): ``x`` uniform on ``n`` symbols and ``y = x`` with probability
``1 - ε``, otherwise ``y`` uniform; so ``p(y)`` is uniform and the density ratio takes two
values, ``r = n(1-ε) + ε`` on the diagonal ``y = x`` and ``r = ε`` off it. ``I(X;Y) = E_P[log r]``
is set to each target by solving for ``ε``.

Every estimator gets the *optimal* critic (``T = log r``; ``1 + log r`` for NWJ) and ``m``
samples of ``P`` and ``m`` of ``Q = p(x)p(y)`` (InfoNCE: a ``K = m`` score matrix of joint
samples); what remains is sampling noise. The mean and variance of DV, NWJ and SMILE are exact
(a sum over the binomial counts of diagonal samples, :func:`exact_moments`); InfoNCE's are
Monte Carlo over ``repeats`` draws. Sample variances cannot show the floor at high MI: the
variance comes from events of probability ~ m/n that a few thousand draws never see.
Song & Ermon (ICLR 2020, Theorem 2): ``Var[mean_Q r] ≥ (e^{KL} - 1)/m`` and
``lim_{m→∞} m·Var[log mean_Q r] ≥ e^{KL} - 1``: the variance of NWJ (and, for m ≫ e^I, of DV)
grows exponentially with the true MI. The exact variance of NWJ at the optimal critic is
``(Var_P[log r] + Var_Q[r]) / m`` with ``Var_Q[r] = E_P[r] - 1 ≥ e^I - 1`` (Jensen). At
m = 64 ≪ e^I, DV's variance falls below the asymptotic floor and it is biased (upwards, at the
optimal critic) instead; SMILE and InfoNCE stay far below it and pay in bias.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.optimize import brentq

from figures._style import COLORS, save
from mi_bounds.bounds import dv_bound, infonce_bound, nwj_bound, smile_bound

N_SYMBOLS = 1 << 16  # log n = 11.09 nats, above every target level


def world(n: int, eps: float) -> dict[str, float]:
    """Exact quantities of the noisy-identity world with ``n`` symbols and noise ``eps``."""
    p_same = (1 - eps) + eps / n  # P(y = x) under the joint
    r_same, r_diff = n * (1 - eps) + eps, eps
    mi = p_same * math.log(r_same) + (1 - p_same) * (math.log(r_diff) if eps > 0 else 0.0)
    e_p_r = p_same * r_same + (1 - p_same) * r_diff  # E_P[r] = E_Q[r²]
    e_p_log2 = p_same * math.log(r_same) ** 2 + (1 - p_same) * math.log(r_diff) ** 2
    return {
        "n": n, "eps": eps, "p_same": p_same, "log_r_same": math.log(r_same),
        "log_r_diff": math.log(r_diff), "mi": mi, "var_q_r": e_p_r - 1.0,
        "var_p_log_r": e_p_log2 - mi**2,
    }


def world_at(mi: float, n: int = N_SYMBOLS) -> dict[str, float]:
    """The world whose MI is ``mi`` nats (``0 < mi < log n``), solving for ``eps``."""
    if not 0 < mi < math.log(n):
        raise ValueError(f"mi must be in (0, log n = {math.log(n):.3f}), got {mi}")
    eps = brentq(lambda e: world(n, e)["mi"] - mi, 1e-15, 1.0 - 1e-12, xtol=1e-15)
    return world(n, eps)


def exact_moments(w: dict[str, float], m: int) -> dict[str, tuple[float, float]]:
    """Exact mean and variance of DV, NWJ and SMILE (τ = 5, 1) with the optimal critic.

    With ``m`` samples of P and ``m`` of Q, each estimate depends only on the counts
    ``K_P ~ Bin(m, P(y = x))`` and ``K_Q ~ Bin(m, 1/n)`` of diagonal samples: the bounds of
    :mod:`mi_bounds.bounds` are evaluated on every pair of counts (``[m+1, m+1]`` values) and
    averaged with the binomial probabilities.
    """
    from scipy.stats import binom

    ls, ld = (torch.tensor(w[k], dtype=torch.float64) for k in ("log_r_same", "log_r_diff"))
    idx = torch.arange(m)
    counts = torch.arange(m + 1)
    rows = torch.where(idx.unsqueeze(0) < counts.unsqueeze(1), ls, ld)  # (m+1, m), float64
    t_pos, t_neg = rows.unsqueeze(1), rows.unsqueeze(0)  # (m+1, 1, m), (1, m+1, m)
    pmf = np.outer(binom.pmf(np.arange(m + 1), m, w["p_same"]),
                   binom.pmf(np.arange(m + 1), m, 1.0 / w["n"]))  # (K_P, K_Q)
    values = {
        "dv": dv_bound(t_pos, t_neg),
        "nwj": nwj_bound(t_pos + 1.0, t_neg + 1.0),
        "smile_5": smile_bound(t_pos, t_neg, clip=5.0),
        "smile_1": smile_bound(t_pos, t_neg, clip=1.0),
    }
    out = {}
    for name, v in values.items():
        v = v.numpy()  # (m+1, m+1)
        mean = float((pmf * v).sum())
        out[name] = (mean, float((pmf * (v - mean) ** 2).sum()))
    return out


def sample_estimates(w: dict[str, float], m: int, repeats: int, seed: int) -> dict[str, np.ndarray]:
    """``repeats`` Monte Carlo estimates with the optimal critic: DV (two-sample, ``m`` + ``m``
    samples) and InfoNCE (a ``K = m`` score matrix ``S_ij = log r(x_i, y_j)``)."""
    g = torch.Generator().manual_seed(seed)
    ls, ld = (torch.tensor(w[k], dtype=torch.float64) for k in ("log_r_same", "log_r_diff"))
    pos_same = torch.rand(repeats, m, generator=g, dtype=torch.float64) < w["p_same"]
    neg_same = torch.rand(repeats, m, generator=g, dtype=torch.float64) < 1.0 / w["n"]
    t_pos = torch.where(pos_same, ls, ld)  # (R, m): log r on samples of P
    t_neg = torch.where(neg_same, ls, ld)  # (R, m): log r on samples of Q
    out = {"dv": dv_bound(t_pos, t_neg)}
    n = int(w["n"])
    x = torch.randint(n, (repeats, m), generator=g)
    noise = torch.rand(repeats, m, generator=g, dtype=torch.float64) < w["eps"]
    y = torch.where(noise, torch.randint(n, (repeats, m), generator=g), x)
    same = x.unsqueeze(-1) == y.unsqueeze(-2)  # (R, K, K)
    out["infonce"] = infonce_bound(torch.where(same, ls, ld))
    return {k: v.numpy() for k, v in out.items()}


LABELS = {"dv": "DV", "nwj": "NWJ", "smile_5": "SMILE τ=5", "smile_1": "SMILE τ=1",
          "infonce": "InfoNCE (K = m)"}
_COLOR = {"dv": COLORS["dv"], "nwj": COLORS["nwj"], "smile_5": COLORS["smile"],
          "smile_1": "#c5b0d5", "infonce": COLORS["infonce"]}


def compute(levels: list[float], m: int, repeats: int, seed: int = 0) -> dict[str, object]:
    """Per level: exact mean/variance (DV, NWJ, SMILE), Monte Carlo (InfoNCE; DV as a check),
    the floor ``e^I - 1`` and NWJ's closed-form ``m·Var``."""
    rows = []
    for k, mi in enumerate(levels):
        w = world_at(mi)
        exact = exact_moments(w, m)
        mc = sample_estimates(w, m, repeats, seed + k)
        mean = {n: mv[0] for n, mv in exact.items()}
        m_var = {n: m * mv[1] for n, mv in exact.items()}
        mean["infonce"] = float(mc["infonce"].mean())
        m_var["infonce"] = float(m * mc["infonce"].var(ddof=1))
        rows.append({
            "mi": w["mi"], "eps": w["eps"],
            "floor_m_var": math.expm1(w["mi"]),  # Song & Ermon Thm 2: m·Var ≥ e^I - 1
            "exact_nwj_m_var": w["var_p_log_r"] + w["var_q_r"],
            "mean": mean, "m_var": m_var,
            "mc_dv_mean": float(mc["dv"].mean()), "mc_dv_m_var": float(m * mc["dv"].var(ddof=1)),
        })
    return {"m": m, "repeats": repeats, "n_symbols": N_SYMBOLS, "rows": rows}


def make(out_dir: Path, *, quick: bool = False) -> list[Path]:
    """m·Var of each estimator against e^I - 1, and their bias, on exact categorical worlds."""
    levels = [1.0, 3.0, 5.0] if quick else [0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    data = compute(levels, m=64, repeats=200 if quick else 2000)
    rows = data["rows"]
    mi = np.array([r["mi"] for r in rows])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    grid = np.linspace(mi.min(), mi.max(), 100)
    ax1.plot(grid, np.expm1(grid), color="black", lw=1.5,
             label="floor e^I − 1 (Song & Ermon Thm 2, m → ∞)")
    ax1.plot(mi, [r["exact_nwj_m_var"] for r in rows], color=COLORS["nwj"], ls=":", lw=1.2,
             label="NWJ exact: Var_P[log r] + Var_Q[r]")
    for name, label in LABELS.items():
        how = "Monte Carlo" if name == "infonce" else "exact"
        ax1.plot(mi, [r["m_var"][name] for r in rows], marker="o", ms=3, color=_COLOR[name],
                 label=f"{label} ({how})")
        ax2.plot(mi, [r["mean"][name] - r["mi"] for r in rows], marker="o", ms=3,
                 color=_COLOR[name], label=label)
    ax1.plot(mi, [r["mc_dv_m_var"] for r in rows], "x", color=COLORS["dv"], ms=5,
             label=f"DV (Monte Carlo, {data['repeats']} draws)")
    ax2.axhline(0, color="black", lw=0.8)
    ax1.set_yscale("log")
    ax1.set_xlabel("true MI (nats)")
    ax1.set_ylabel(f"m × variance  (m = {data['m']})")
    ax1.set_title("variance with the optimal critic")
    ax1.legend(fontsize=6)
    ax2.set_xlabel("true MI (nats)")
    ax2.set_ylabel("bias (nats)")
    ax2.set_title(f"bias (log m = {math.log(data['m']):.2f})")
    ax2.legend(fontsize=6)
    fig.tight_layout()
    return save(fig, out_dir, "variance_floor", data=data)
