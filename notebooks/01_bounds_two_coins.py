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
# # 1. Variational bounds on a two-coin world
#
# A *variational bound* turns a divergence we cannot compute into an optimisation we can do.
# The Donsker–Varadhan (DV) representation says that, for distributions $P \ll Q$,
#
# $$\mathrm{KL}(P\,\|\,Q) = \sup_T \; \mathbb{E}_P[T] - \log \mathbb{E}_Q[e^{T}],$$
#
# where the supremum runs over real functions $T$, the **critic**. Every critic gives a
# *lower bound*; the best critic is the log density ratio $\log dP/dQ$ (plus any constant).
# MINE, NWJ, TUBA, the Jensen–Shannon (JS) bound, InfoNCE and SMILE are all variations on
# this theme: they differ in *which* function of the critic they use, which makes them
# differ in bias, variance, and what the best critic is.
#
# In this notebook everything is **exact**: the world is two coins, so an expectation is a
# sum of two terms. We pass the critic's values on the two outcomes as `pos` and `neg` and the
# probabilities as `pos_weight` / `neg_weight`; the library's bounds then compute the exact
# expectations (no sampling). Notebook 2 does the same with samples.
#
# You will:
# 1. evaluate every bound as a function of the critic and see where each one is tight;
# 2. check the facts of the design contract (DV ≥ NWJ, shift invariance, …) on a grid;
# 3. meet InfoNCE and its $\log K$ ceiling on a two-coin *mutual-information* world;
# 4. do four short exercises whose answers are checked against the library.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from mi_bounds.bounds import (
    BOUNDS,
    dv_bound,
    infonce_bound,
    js_bound,
    nwj_bound,
    smile_bound,
    tuba_bound,
)
from toy_models.oracle import jsd, kl, mutual_information

torch.set_default_dtype(torch.float64)
plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# ## The world: a fair coin P and a biased coin Q
#
# Outcomes are ordered (heads, tails). $P$ is a fair coin, $Q$ lands heads 90% of the time.
# The oracle in `toy_models.oracle` computes KL and JSD with scipy, independently of the
# bound library: it is what we check the bounds against.

# %%
p = torch.tensor([0.5, 0.5])  # P: fair coin
q = torch.tensor([0.9, 0.1])  # Q: biased coin
log_r = (p / q).log()  # the log density ratio log dP/dQ, one value per outcome

KL = float(kl(p.numpy(), q.numpy()))
JSD = float(jsd(p.numpy(), q.numpy()))
print(f"log dP/dQ = {log_r.numpy().round(4)}")
print(f"KL(P||Q) = {KL:.4f} nats,  JSD(P,Q) = {JSD:.4f} nats,  2 JSD - 2 log 2 = "
      f"{2 * JSD - 2 * math.log(2):.4f}")


def exact(bound, t, **kw):
    """A two-sample bound at critic values t [..., 2], as an exact expectation over the coins."""
    return bound(t, t, pos_weight=p, neg_weight=q, **kw)


# %% [markdown]
# ## Every bound along one line of critics
#
# A critic here is just two numbers, $(T_H, T_T)$. Take the critics
# $T_c = \log dP/dQ + c$: the log ratio shifted by a constant $c$. Along this line
#
# * **DV** is *flat*: $\mathbb{E}_P[T + c] - \log \mathbb{E}_Q[e^{T+c}] = \mathbb{E}_P[T] -
#   \log \mathbb{E}_Q[e^T]$, so DV only sees the critic up to a constant;
# * **NWJ** $= \mathbb{E}_P[T] - e^{-1}\mathbb{E}_Q[e^T]$ peaks at $c = 1$;
# * **TUBA** with baseline $a$ peaks at $c = \log a$ (NWJ is TUBA with $a = e$);
# * **JS** $= \mathbb{E}_P[\log\sigma(T)] + \mathbb{E}_Q[\log(1-\sigma(T))]$ peaks at $c = 0$,
#   but it bounds a different quantity, $2\,\mathrm{JSD} - 2\log 2$, not KL.
#
# Each is computed by the library in one batched call: a `[G, 2]` tensor of critics gives
# `[G]` values.

# %%
shifts = torch.linspace(-3, 3, 121)
critics = log_r + shifts[:, None]  # [G, 2]
curves = {
    "DV": exact(dv_bound, critics),
    "NWJ": exact(nwj_bound, critics),
    "TUBA (log a = -1)": exact(tuba_bound, critics, log_baseline=-1.0),
    "JS": exact(js_bound, critics),
}
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, values in curves.items():
    ax.plot(shifts, values, label=name)
ax.axhline(KL, color="k", ls="--", lw=1, label="KL(P‖Q)")
ax.axhline(2 * JSD - 2 * math.log(2), color="gray", ls=":", lw=1, label="2 JSD − 2 log 2")
ax.set(xlabel="shift c of the critic log dP/dQ + c", ylabel="bound (nats)", ylim=(-2, 1))
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# The plot shows the three KL bounds touching the dashed KL line, each at its own shift, and
# the JS bound touching its own target at $c = 0$. Let us check the touching points exactly,
# using the **registry**: every entry of `BOUNDS` knows what it bounds and maps the log ratio
# to its optimal critic.

# %%
targets = {"KL": KL, "2JSD-2log2": 2 * JSD - 2 * math.log(2)}
for name, spec in BOUNDS.items():
    if spec.form != "two-sample" or spec.optimal_critic is None:
        continue
    t_star = torch.as_tensor(spec.optimal_critic(log_r, **spec.params))
    value = float(exact(spec.fn, t_star, **spec.params))
    print(f"{name:5s} bounds {spec.target:10s}  value at optimal critic {value:+.12f}  "
          f"target {targets[spec.target]:+.12f}")
    assert math.isclose(value, targets[spec.target], abs_tol=1e-12)

# %% [markdown]
# ## The whole critic plane
#
# Away from the line, the picture is a landscape over $(T_H, T_T)$. DV's maximum is a whole
# *line* of critics (direction $(1, 1)$), NWJ's is the single point $1 + \log dP/dQ$ and
# JS's the single point $\log dP/dQ$.

# %%
grid = torch.linspace(-3, 4, 81)
th, tt = torch.meshgrid(grid, grid, indexing="xy")
plane = torch.stack([th, tt], dim=-1)  # [81, 81, 2]
surfaces = {"DV": exact(dv_bound, plane), "NWJ": exact(nwj_bound, plane),
            "JS": exact(js_bound, plane)}
best = {"DV": log_r, "NWJ": log_r + 1, "JS": log_r}
fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), sharey=True)
for ax, (name, z) in zip(axes, surfaces.items(), strict=True):
    cs = ax.contourf(th, tt, z.clamp(min=-3), levels=20)
    fig.colorbar(cs, ax=ax)
    ax.plot(*best[name], "r*", ms=10)
    if name == "DV":
        ax.plot(grid, grid + float(log_r[1] - log_r[0]), "r--", lw=1)
    ax.set(title=name, xlabel="T(heads)", xlim=(-3, 4), ylim=(-3, 4))
axes[0].set_ylabel("T(tails)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The facts, checked on the whole plane
#
# The design contract lists facts that hold for *every* critic. On our 81 × 81 grid:
#
# 1. DV, NWJ, TUBA ≤ KL and JS ≤ 2 JSD − 2 log 2;
# 2. NWJ ≤ DV and TUBA ≤ DV, because $\log u \le u/a + \log a - 1$;
# 3. DV is shift-invariant, NWJ and JS are not.

# %%
dv_plane = surfaces["DV"]
nwj_plane = surfaces["NWJ"]
tuba_plane = exact(tuba_bound, plane, log_baseline=0.7)
assert (dv_plane <= KL + 1e-12).all() and (nwj_plane <= KL + 1e-12).all()
assert (tuba_plane <= KL + 1e-12).all()
assert (surfaces["JS"] <= 2 * JSD - 2 * math.log(2) + 1e-12).all()
assert (nwj_plane <= dv_plane + 1e-12).all() and (tuba_plane <= dv_plane + 1e-12).all()
shifted = plane + 2.5
assert torch.allclose(exact(dv_bound, shifted), dv_plane, atol=1e-12)
assert not torch.allclose(exact(nwj_bound, shifted), nwj_plane)
assert not torch.allclose(exact(js_bound, shifted), surfaces["JS"])
print("facts 1-3 hold on", plane.shape[0] * plane.shape[1], "critics")

# %% [markdown]
# ## SMILE: clipping trades bias for variance
#
# SMILE is DV with the density ratio $e^T$ clipped to $[e^{-\tau}, e^{\tau}]$ inside the
# $Q$-expectation. With $\tau = \infty$ (`clip=None`) it is DV exactly; with a small $\tau$ it
# is **not a bound**: at the optimal critic $T = \log dP/dQ$, whose heads value is
# $\log 5 \approx 1.61$, any $\tau < 1.61$ changes the value — here it *overshoots* KL.
# Its benefit (lower variance) only shows with samples, in notebook 2.

# %%
for tau in (None, 3.0, 1.0, 0.5):
    v = float(exact(smile_bound, log_r, clip=tau))
    print(f"SMILE(tau={tau}) at log dP/dQ: {v:+.4f}   (KL = {KL:.4f})")
assert math.isclose(float(exact(smile_bound, log_r, clip=None)), KL, abs_tol=1e-12)
assert float(exact(smile_bound, log_r, clip=1.0)) > KL  # clipped: not a lower bound

# %% [markdown]
# ## InfoNCE on a two-coin mutual-information world
#
# Mutual information is a KL divergence too: $I(X;Y) = \mathrm{KL}(p(x,y)\,\|\,p(x)p(y))$.
# Let $X$ pick one of two coins with probability ½ each — a fair one and one that lands heads
# 90% of the time — and let $Y$ be the flip. InfoNCE draws $K$ joint samples
# $(x_i, y_i)$, scores every pairing $S_{ij} = T(x_i, y_j)$, and uses the diagonal as
# positives and each row as a $K$-way classification problem:
#
# $$I_{NCE} = \mathbb{E}\Big[\frac1K \sum_i S_{ii} - \log\frac1K\sum_j e^{S_{ij}}\Big]
# \le I(X;Y), \qquad \text{and every batch value is} \le \log K.$$
#
# With two coins and small $K$ we can enumerate all $4^K$ batches and compute the expectation
# exactly (`infonce_bound` takes a `[..., K, K]` stack of score matrices).

# %%
joint = np.array([[0.5 * 0.5, 0.5 * 0.5],    # x = fair coin: heads, tails
                  [0.5 * 0.9, 0.5 * 0.1]])   # x = biased coin
I_XY = mutual_information(joint)
# the optimal critic log p(y|x)/p(y) = log p(x,y) / (p(x) p(y))
critic = np.log(joint / joint.sum(0, keepdims=True) / joint.sum(1, keepdims=True))


def infonce_expectation(joint, critic, K):
    """Exact E[InfoNCE_K]: average over all K-tuples of joint samples (4**K of them)."""
    cells = np.array([(x, y) for x in range(2) for y in range(2)])  # the 4 joint outcomes
    idx = np.array(np.meshgrid(*[range(4)] * K, indexing="ij")).reshape(K, -1).T  # [4**K, K]
    xs, ys = cells[idx, 0], cells[idx, 1]  # [M, K] each
    scores = torch.as_tensor(critic[xs[:, :, None], ys[:, None, :]])  # S_ij = T(x_i, y_j)
    prob = joint[xs, ys].prod(1)
    return float(torch.as_tensor(prob) @ infonce_bound(scores))


print(f"I(X;Y) = {I_XY:.4f} nats = JSD(P, Q) = {JSD:.4f}")
assert math.isclose(I_XY, JSD, abs_tol=1e-12)  # X uniform over two coins: I(X;Y) = JSD(P, Q)
for K in (2, 3, 4, 6):
    v = infonce_expectation(joint, critic, K)
    print(f"K = {K}: E[InfoNCE] = {v:.4f}   log K = {math.log(K):.4f}")
    assert v <= min(I_XY, math.log(K)) + 1e-12

# %% [markdown]
# (The mutual information equals $\mathrm{JSD}(P, Q)$ of the two coins above: with $X$
# uniform over two distributions, $I(X;Y)$ *is* their Jensen–Shannon divergence.)
#
# The estimate grows with $K$ toward $I(X;Y)$ but stays below it: InfoNCE is a biased-low
# bound whose bias shrinks as $K$ grows. Here $I(X;Y) \approx 0.1$ is far below $\log 2$, so
# the ceiling $\log K$ never binds; notebook 2 shows what happens when $I \gg \log K$.
#
# ---
# ## Exercises
#
# Each exercise has an answer cell (leave the value `None` to see the solution) and a check
# cell that compares your answer — or the solution — with the library.
#
# **Exercise 1.** Compute *by hand* (with `math`) the DV bound at the critic
# $T = (T_H, T_T) = (1, 0)$ for our coins $P = (½, ½)$, $Q = (0.9, 0.1)$.

# %%
answer_1 = None  # a float

# %%
solution_1 = 0.5 * 1 + 0.5 * 0 - math.log(0.9 * math.e + 0.1 * 1)
answer_1 = solution_1 if answer_1 is None else answer_1
library_1 = float(exact(dv_bound, torch.tensor([1.0, 0.0])))
assert math.isclose(answer_1, library_1, abs_tol=1e-12), (answer_1, library_1)
print(f"DV(1, 0) = {library_1:.6f} <= KL = {KL:.6f}")

# %% [markdown]
# **Exercise 2.** Give the critic (a tensor of two values) at which **NWJ** equals
# $\mathrm{KL}(P\|Q)$.

# %%
answer_2 = None  # a torch tensor of shape [2]

# %%
solution_2 = 1 + log_r
answer_2 = solution_2 if answer_2 is None else torch.as_tensor(answer_2)
assert math.isclose(float(exact(nwj_bound, answer_2)), KL, abs_tol=1e-12)
assert torch.allclose(answer_2, torch.as_tensor(BOUNDS["nwj"].optimal_critic(log_r)))
print("NWJ is tight at 1 + log dP/dQ =", answer_2.numpy().round(4))

# %% [markdown]
# **Exercise 3.** TUBA with baseline $\log a = 2$: which *shift* $c$ makes the critic
# $\log dP/dQ + c$ optimal? Then check that TUBA at $c = 0$ is strictly below KL.

# %%
answer_3 = None  # a float

# %%
solution_3 = 2.0
answer_3 = solution_3 if answer_3 is None else answer_3
at = float(exact(tuba_bound, log_r + answer_3, log_baseline=2.0))
assert math.isclose(at, KL, abs_tol=1e-12)
assert float(exact(tuba_bound, log_r, log_baseline=2.0)) < KL - 1e-3
print(f"TUBA(log a = 2) at log r + {answer_3}: {at:.6f} = KL")

# %% [markdown]
# **Exercise 4.** Without computing anything: what is the largest value InfoNCE with $K = 2$
# can take on *any* batch, whatever the critic and the world? Then confirm with a critic that
# separates the pairs perfectly: $S_{ii} = 50$, $S_{ij} = -50$ for $i \ne j$.

# %%
answer_4 = None  # a float

# %%
solution_4 = math.log(2)
answer_4 = solution_4 if answer_4 is None else answer_4
perfect = torch.tensor([[50.0, -50.0], [-50.0, 50.0]])
assert math.isclose(float(infonce_bound(perfect)), answer_4, abs_tol=1e-12)
random_scores = torch.randn(1000, 2, 2, generator=torch.Generator().manual_seed(0)) * 10
assert (infonce_bound(random_scores) <= answer_4 + 1e-12).all()
print(f"InfoNCE_2 <= log 2 = {answer_4:.4f} on every batch")

# %% [markdown]
# ## What to take away
#
# * Every critic gives a lower bound; the bounds differ in *where* they are tight
#   (DV: $\log r + c$ for any $c$; NWJ: $1 + \log r$; TUBA: $\log r + \log a$; JS: $\log r$,
#   for a different target).
# * NWJ and TUBA are DV with $\log u$ replaced by a linear upper bound, so they are never
#   above DV.
# * InfoNCE bounds mutual information from below and can never exceed $\log K$.
#
# Next: notebook 2 replaces the exact sums by samples, where bias and variance appear.

# %%
print("all checks passed")
