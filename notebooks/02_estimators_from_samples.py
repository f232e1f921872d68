# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Estimators from samples: bias, variance, and InfoNCE's log K ceiling
#
# In notebook 1 every expectation was an exact sum. In practice we only have **samples**:
# $N$ draws from $P$ (the positives) and $M$ draws from $Q$ (the negatives), and each bound
# becomes an *estimator* by replacing $\mathbb{E}_P$ and $\mathbb{E}_Q$ with sample means.
# The library's functions are the same — `dv_bound(pos, neg)` with critic values on samples
# instead of probability weights — but now each estimate is a random variable, with a
# **bias** and a **variance**.
#
# The three sections separate the two sources of error of neural MI estimation:
#
# 1. **the estimator itself**, with the critic held fixed at its optimum (two coins, then
#    correlated Gaussians whose optimal critic we know in closed form);
# 2. **the critic**, trained by gradient ascent on a bound (a few hundred steps of
#    `mi_bounds.estimation.training`).
#
# The Gaussian task is the benchmark of Poole et al. (ICML 2019) and Song & Ermon (ICLR 2020):
# $x \sim \mathcal{N}(0, I_d)$, $y = \rho x + \sqrt{1-\rho^2}\,\varepsilon$, with
# $I(X;Y) = -\tfrac d2 \log(1-\rho^2)$ exactly.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from mi_bounds.bounds import (
    dv_bound,
    infonce_bound,
    nwj_bound,
    smile_bound,
    split_scores,
)
from mi_bounds.estimation.estimate import estimate_mi
from mi_bounds.estimation.tasks import GaussianTask, mi_from_rho
from mi_bounds.estimation.training import EstimateConfig
from toy_models.oracle import kl

plt.rcParams["figure.dpi"] = 80
F64 = torch.float64

# %% [markdown]
# ## 1. Two coins, sampled, at the optimal critic
#
# Same coins as in notebook 1: $P = (½, ½)$, $Q = (0.9, 0.1)$, and we hold the critic at its
# optimum: $\log dP/dQ$ for DV and $1 + \log dP/dQ$ for NWJ. For each sample size we draw
# `R` independent data sets at once: `pos` has shape `[R, N]`, and every bound broadcasts over
# the leading dimension, returning `R` estimates in one call.

# %%
p, q = torch.tensor([0.5, 0.5], dtype=F64), torch.tensor([0.9, 0.1], dtype=F64)
log_r = (p / q).log()
KL = float(kl(p.numpy(), q.numpy()))
R = 4000
gen = torch.Generator().manual_seed(0)


def draw(probs, shape):
    """Indices of outcomes drawn iid from probs (0 = heads, 1 = tails)."""
    return torch.multinomial(probs, math.prod(shape), replacement=True, generator=gen).view(shape)


sizes = [4, 16, 64, 256]
stats = {"DV": [], "NWJ": []}
for n in sizes:
    pos_idx, neg_idx = draw(p, (R, n)), draw(q, (R, n))
    dv = dv_bound(log_r[pos_idx], log_r[neg_idx])  # [R] estimates
    nwj = nwj_bound(1 + log_r[pos_idx], 1 + log_r[neg_idx])
    for name, est in (("DV", dv), ("NWJ", nwj)):
        stats[name].append((float(est.mean() - KL), float(est.std()), float(est.std()) / R**0.5))
    print(f"N = M = {n:4d}:  DV bias {stats['DV'][-1][0]:+.4f} (std {stats['DV'][-1][1]:.3f})"
          f"   NWJ bias {stats['NWJ'][-1][0]:+.4f} (std {stats['NWJ'][-1][1]:.3f})")

# %% [markdown]
# Two things to notice:
#
# * **NWJ is unbiased at a fixed critic**: it is *linear* in the two expectations, so its
#   sample version has exactly the right mean (the bias column is within noise of 0).
# * **DV is biased** at a fixed critic: it takes the *log* of a sample mean, and by Jensen's
#   inequality $\mathbb{E}[-\log \hat Z] \ge -\log \mathbb{E}[\hat Z]$, so at the optimal
#   critic it *overestimates* KL on average; the bias shrinks like $1/M$. This is the same
#   log-of-a-mean that makes MINE's mini-batch *gradient* biased, which MINE corrects with a
#   moving average of $\mathbb{E}_Q[e^T]$ (`bound="mine"` in `mi_bounds.estimation.training`).
# * Both standard deviations shrink like $1/\sqrt{N}$.

# %% [markdown]
# ## 2. Correlated Gaussians at the optimal critic: the log K ceiling
#
# For the Gaussian task the optimal critic is the log density ratio
#
# $$T^*(x, y) = \log\frac{p(y\mid x)}{p(y)} = \sum_{k=1}^d \Big[-\tfrac12\log(1-\rho^2)
# - \frac{(y_k - \rho x_k)^2}{2(1-\rho^2)} + \frac{y_k^2}{2}\Big].$$
#
# A batch of $K$ joint samples gives a score matrix $S_{ij} = T^*(x_i, y_j)$ (positives on the
# diagonal, the $K(K-1)$ off-diagonal pairs are samples of $p(x)p(y)$). `infonce_bound(S)`
# reads it directly; the two-sample bounds read it through `split_scores(S)`. We evaluate
# every estimator at MI = 2, 4, …, 10 nats in $d = 20$ dimensions with $K = 64$.

# %%
def optimal_scores(x, y, rho):
    """S[..., i, j] = log p(y_j | x_i) / p(y_j) for the Gaussian task; x, y: [..., K, d]."""
    v = 1.0 - rho**2
    xi, yj = x[..., :, None, :], y[..., None, :, :]
    return (-0.5 * math.log(v) - (yj - rho * xi) ** 2 / (2 * v) + yj**2 / 2).sum(-1)


K, BATCHES, DIM = 64, 20, 20
levels = [2.0, 4.0, 6.0, 8.0, 10.0]
table = {name: [] for name in ("InfoNCE", "DV", "NWJ", "SMILE (τ=5)")}
for mi in levels:
    task = GaussianTask(mi=mi, dim=DIM)
    g = torch.Generator().manual_seed(1)
    batches = [task(0, K, g) for _ in range(BATCHES)]
    x = torch.stack([b[0] for b in batches]).to(F64)  # [BATCHES, K, d]
    y = torch.stack([b[1] for b in batches]).to(F64)
    scores = optimal_scores(x, y, task.rho)  # [BATCHES, K, K]
    pos, neg = split_scores(scores)
    estimates = {
        "InfoNCE": infonce_bound(scores),
        "DV": dv_bound(pos, neg),
        "NWJ": nwj_bound(pos + 1, neg + 1),  # NWJ's optimal critic is 1 + log r
        "SMILE (τ=5)": smile_bound(pos, neg, clip=5.0),
    }
    for name, est in estimates.items():
        table[name].append((float(est.mean()), float(est.std())))

print(f"{'true MI':>8s}" + "".join(f"{n:>20s}" for n in table))
for i, mi in enumerate(levels):
    print(f"{mi:8.1f}" + "".join(f"{table[n][i][0]:11.3f} ± {table[n][i][1]:5.3f}" for n in table))

fig, ax = plt.subplots(figsize=(6, 3.5))
for name, rows in table.items():
    m, s = np.array(rows).T
    ax.errorbar(levels, m, yerr=s, marker="o", capsize=3, label=name)
ax.plot(levels, levels, "k--", lw=1, label="true MI")
ax.axhline(math.log(K), color="gray", ls=":", label=f"log K = {math.log(K):.2f}")
ax.set(xlabel="true I(X;Y) (nats)", ylabel="estimate at the optimal critic", title=f"K = {K}")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# Read the table column by column:
#
# * **InfoNCE** has the smallest spread but is pinned below $\log K = \log 64 \approx 4.16$:
#   each row of the score matrix is a $K$-way classification and its value can never exceed
#   $\log K$, however large the true MI. At 10 nats it reports about 4.1.
# * **DV and NWJ** track the truth on average but their standard deviation grows quickly
#   with the MI: the $Q$-expectation of $e^T$ is dominated by rare pairs with huge density
#   ratio. (The DV mean sits *above* the truth here: the bias of the log of a sample mean,
#   as with the coins.)
# * **SMILE** clips $e^T$ to $[e^{-5}, e^5]$: less variance than DV, paid for with a bias.
#   Here the bias is upward: the large ratios that are clipped down dominate
#   $\mathbb{E}_Q[e^T]$, so clipping lowers the subtracted $\log \mathbb{E}_Q$.

# %% [markdown]
# ## 3. Training a critic
#
# With an unknown distribution there is no closed-form critic: we train a neural critic by
# ascending a bound on mini-batches. `estimate_mi` builds a *separable* critic
# $T(x, y) = g(x)^\top h(y)$ (all $K^2$ scores from $2K$ network evaluations) and records, at
# every step, the training bound and any other estimators on the same score matrix.
# We train two critics for 200 steps at MI = 4 nats in $d = 5$: one with InfoNCE,
# one with SMILE (JS-trained critic, clipped-DV value, Song & Ermon 2020). The full
# experiment — a staircase of MI levels with 4,000 steps each — is
# `mi-bounds estimate staircase` (see the README); it takes minutes, not seconds.

# %%
task = GaussianTask(mi=4.0, dim=5)
runs = {}
for bound in ("infonce", "smile_5"):
    config = EstimateConfig(bound=bound, steps=200, batch_size=64, lr=2e-3, eval_batches=8,
                            report=("infonce",) if bound != "infonce" else ())
    runs[bound], _ = estimate_mi(task, config, critic="separable", hidden_dim=64)

fig, ax = plt.subplots(figsize=(6, 3.2))
for bound, res in runs.items():
    ax.plot(res.estimates[bound], lw=0.8, label=f"{bound} (training value)")
ax.axhline(task.true_mi(), color="k", ls="--", lw=1, label="true MI")
ax.axhline(math.log(64), color="gray", ls=":", label="log K")
ax.set(xlabel="step", ylabel="nats", ylim=(-1, 5))
ax.legend(fontsize=7)
plt.show()
for bound, res in runs.items():
    print(bound, {k: f"{m:.3f} ± {s:.3f}" for k, (m, s) in res.final.items()})

# %% [markdown]
# Both curves rise as the critic learns. In this run, after 200 steps, both are still below
# the true 4 nats: now the error is dominated by the *critic* (under-trained), not by the
# estimator. Every InfoNCE value, at every step, stays below $\log 64$, whatever the critic.

# %%
for bound, res in runs.items():
    values = res.estimates[bound]
    assert values[-30:].mean() > values[:30].mean() + 0.5, f"{bound} did not learn"
assert (runs["infonce"].estimates["infonce"] <= math.log(64) + 1e-6).all()
assert (runs["smile_5"].estimates["infonce"] <= math.log(64) + 1e-6).all()

# %% [markdown]
# ---
# ## Exercises
#
# Leave an answer as `None` to see the solution; the check cell tests it against the data and
# the library.
#
# **Exercise 1.** At a *fixed* critic, which of the two estimators of section 1 is unbiased,
# `"dv"` or `"nwj"`?

# %%
answer_1 = None  # "dv" or "nwj"

# %%
solution_1 = "nwj"
answer_1 = solution_1 if answer_1 is None else answer_1
unbiased = {"dv": stats["DV"], "nwj": stats["NWJ"]}[answer_1]
biased = stats["DV"] if answer_1 == "nwj" else stats["NWJ"]
# unbiased: every bias within 4 standard errors of zero; the other: clearly biased at N = 4
assert all(abs(bias) < 4 * se for bias, _, se in unbiased), unbiased
assert abs(biased[0][0]) > 10 * biased[0][2], biased
print(f"{answer_1} is unbiased at a fixed critic")

# %% [markdown]
# **Exercise 2.** What is the largest value InfoNCE can report with $K = 64$? (A formula in
# `math` is fine.) The check compares it with every estimate of section 2 and with the
# estimate at 10 nats.

# %%
answer_2 = None  # a float

# %%
solution_2 = math.log(64)
answer_2 = solution_2 if answer_2 is None else answer_2
assert math.isclose(answer_2, math.log(K))
assert all(m <= answer_2 for m, _ in table["InfoNCE"])
assert answer_2 - table["InfoNCE"][-1][0] < 0.1  # saturated at MI = 10
print(f"ceiling log K = {answer_2:.4f}; InfoNCE at 10 nats: {table['InfoNCE'][-1][0]:.4f}")

# %% [markdown]
# **Exercise 3.** For large samples the standard deviation of the DV estimate falls like
# $1/\sqrt{N}$. By what factor does it fall from $N = 64$ to $N = 256$?

# %%
answer_3 = None  # a float

# %%
solution_3 = math.sqrt(256 / 64)
answer_3 = solution_3 if answer_3 is None else answer_3
measured = stats["DV"][2][1] / stats["DV"][3][1]
assert abs(measured / answer_3 - 1) < 0.1, (measured, answer_3)
print(f"std(N=64) / std(N=256) = {measured:.3f}, predicted {answer_3:.3f}")

# %% [markdown]
# **Exercise 4.** Which clip $\tau$ makes SMILE *identical* to DV on the same scores? Give the
# value to pass as `clip=` (the check runs both on the 10-nat scores of section 2).

# %%
answer_4 = "unset"  # the value of clip=

# %%
solution_4 = None  # no clipping (tau -> infinity)
answer_4 = solution_4 if answer_4 == "unset" else answer_4
assert torch.equal(smile_bound(pos, neg, clip=answer_4), dv_bound(pos, neg))
print("SMILE with clip=None is DV; the gap at tau = 5 on 10-nat scores is",
      f"{float((smile_bound(pos, neg, clip=5.0) - dv_bound(pos, neg)).mean()):+.3f} nats")
assert math.isclose(mi_from_rho(GaussianTask(mi=10.0, dim=DIM).rho, DIM), 10.0)

# %% [markdown]
# ## What to take away
#
# * A bound at a fixed critic is a *population* quantity; its sample version can be biased
#   (DV: log of a mean) or unbiased (NWJ: linear) and has a variance that, for DV and NWJ,
#   grows quickly with the MI.
# * InfoNCE is low-variance but can never report more than $\log K$: to measure 10 nats you
#   need $K > e^{10} \approx 22{,}000$ samples per batch.
# * In practice the critic, not the estimator, is often the main source of error.
#
# Next: notebook 3 reads RLHF and DPO as exactly these bounds.

# %%
print("all checks passed")
