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
# # 3. RLHF is a DV bound; DPO against MIO; why the chosen likelihood falls
#
# This notebook reads LLM alignment as mutual-information maximisation, in a world small
# enough to compute everything exactly: a few prompts $x$, a few responses $y$, a base
# (reference) policy $\pi_{ref}(y\mid x)$ and a reward $r(x, y)$.
#
# 1. The RLHF objective $J(\pi) = \mathbb{E}_x\big[\mathbb{E}_{y\sim\pi} r -
#    \beta\,\mathrm{KL}(\pi(\cdot|x)\,\|\,\pi_{ref}(\cdot|x))\big]$ is maximised by the Gibbs
#    policy $\pi^* \propto \pi_{ref}\, e^{r/\beta}$, and at that optimum the **DV bound with
#    critic $r/\beta$ is tight**. Consequence: $\pi^*$ is zero wherever $\pi_{ref}$ is zero.
# 2. DPO's loss is $\log 2$ minus a DV bound and MIO's is minus a JS bound, both evaluated
#    with the policy's *implicit critic* $T = \beta(\log\pi - \log\pi_{ref})$.
# 3. The two losses push on the chosen response with very different **gradient weights**,
#    and exact gradient-descent trajectories show DPO's chosen likelihood falling while
#    MIO's stays anchored.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from experiments.claims_c3 import displacement_world, summarise_decline
from mi_bounds.bounds import dv_bound, js_bound
from mi_bounds.preference import preference_loss
from toy_models.dynamics import gradient_descent
from toy_models.world import CategoricalWorld

plt.rcParams["figure.dpi"] = 80
F64 = torch.float64

# %% [markdown]
# ## 1. The RLHF optimum and the DV bound
#
# `CategoricalWorld.random` draws prompt weights $D$, a base policy and a reward. Everything
# it returns is exact float64. The optimal policy and the optimal value are
#
# $$\pi^*(y\mid x) = \frac{\pi_{ref}(y\mid x)\,e^{r(x,y)/\beta}}{Z(x)}, \qquad
# J(\pi^*) = \beta\,\mathbb{E}_x \log Z(x).$$

# %%
world = CategoricalWorld.random(0, n_prompts=3, n_responses=5, beta=0.5)
pi_star = world.optimal_policy()
print("pi_ref:\n", world.pi_ref.round(3))
print("pi*:\n", pi_star.round(3))
print(f"J(pi*) = {world.rlhf_objective(pi_star):.6f}")

# No other policy does better: try many random ones.
rng = np.random.default_rng(0)
others = rng.dirichlet(np.ones(world.n_responses), size=(200, world.n_prompts))
assert all(world.rlhf_objective(pi) <= world.rlhf_objective(pi_star) + 1e-12 for pi in others)

# %% [markdown]
# **The DV reading.** Take $P = \pi^*(\cdot|x)$, $Q = \pi_{ref}(\cdot|x)$ and the critic
# $T = r/\beta$. Then $\log dP/dQ = r/\beta - \log Z(x)$ is the critic plus a constant per
# prompt, and DV is shift-invariant: the DV bound is **tight**,
# $\mathrm{DV}(r/\beta) = \mathrm{KL}(\pi^*\|\pi_{ref})$, and
# $J(\pi^*) = \beta\,\mathrm{DV}(r/\beta)$ — RLHF maximises a DV bound. `world.bound_at`
# evaluates any bound of the library exactly at a critic table (per prompt, averaged with
# $D$). NWJ is *not* shift-invariant, so $r/\beta$ is not its optimum.

# %%
critic = world.reward / world.beta
kl_star = world.kl_to_reference(pi_star)
dv_value = world.bound_at("dv", critic)
nwj_value = world.bound_at("nwj", critic)
print(f"KL(pi*||pi_ref) = {kl_star:.10f}")
print(f"DV(r/beta)      = {dv_value:.10f}   (tight)")
print(f"NWJ(r/beta)     = {nwj_value:.10f}   (not tight)")
assert math.isclose(dv_value, kl_star, abs_tol=1e-12)
assert nwj_value < kl_star - 1e-3
# the implicit critic of pi* is r - beta log Z: DV at it is tight too
assert math.isclose(world.bound_at("dv", world.implicit_critic(pi_star) / world.beta), kl_star,
                    abs_tol=1e-12)

# %% [markdown]
# **Which mutual information?** The DV reading is about a KL between two *policies*:
# $\mathbb{E}_x\mathrm{KL}(\pi^*\|\pi_{ref}) = \mathrm{KL}(D\pi^*\,\|\,D\pi_{ref})$, the joint
# $D(x)\pi^*(y|x)$ against $D(x)\pi_{ref}(y|x)$. The policy's mutual information between prompt
# and response, $I_\pi(X;Y)$, is the KL of the same joint against the product of its marginals,
# $D(x)\pi_Y(y)$ with $\pi_Y(y) = \sum_x D(x)\pi(y|x)$. Splitting
# $\log\frac{\pi}{\pi_{ref}} = \log\frac{\pi}{\pi_Y} + \log\frac{\pi_Y}{\pi_{ref}}$ cell by cell:
#
# $$\mathbb{E}_x\mathrm{KL}(\pi\|\pi_{ref}) = I_\pi(X;Y) +
# \mathbb{E}_{x\sim D,\,y\sim\pi}[\log\pi_Y(y) - \log\pi_{ref}(y|x)].$$
#
# If the reference ignores the prompt, $\pi_{ref}(y|x) = \rho(y)$, the last term is
# $\mathrm{KL}(\pi_Y\|\rho) \ge 0$ (the KL is an upper bound on the MI, equal iff
# $\pi_Y = \rho$); a base model that reads its prompt can make it negative. By hand, on two
# prompts and two responses (proof P12 in docs/PROOFS.md; `toy_models.mi_reading`):

# %%
from toy_models.mi_reading import decompose


def by_hand(d, ref, r, beta):
    """pi*, E_x KL(pi* || pi_ref), I(X;Y) and the gap, with plain loops."""
    xs, ys = range(len(d)), range(len(ref[0]))
    pi = [[ref[x][y] * math.exp(r[x][y] / beta) for y in ys] for x in xs]
    pi = [[v / sum(row) for v in row] for row in pi]
    pi_y = [sum(d[x] * pi[x][y] for x in xs) for y in ys]
    cells = [(x, y) for x in xs for y in ys if pi[x][y] > 0]
    kl_ = sum(d[x] * pi[x][y] * math.log(pi[x][y] / ref[x][y]) for x, y in cells)
    mi_ = sum(d[x] * pi[x][y] * math.log(pi[x][y] / pi_y[y]) for x, y in cells)
    gap_ = sum(d[x] * pi[x][y] * (math.log(pi_y[y]) - math.log(ref[x][y])) for x, y in cells)
    return pi, pi_y, kl_, mi_, gap_


d2, r2 = [0.5, 0.5], [[0.0, math.log(2)], [0.0, 0.0]]  # beta = 1: pi* = pi_ref * (1, 2) on x1
for name, ref2 in (("pi_ref depends on x", [[0.9, 0.1], [0.1, 0.9]]),
                   ("pi_ref = rho        ", [[0.5, 0.5], [0.5, 0.5]])):
    pi2, pi_y2, kl2, mi2, gap2 = by_hand(d2, ref2, r2, 1.0)
    print(f"{name}: E_x KL = {kl2:.4f} = I(X;Y) {mi2:.4f} + gap {gap2:+.4f}")
    assert math.isclose(kl2, mi2 + gap2, abs_tol=1e-12)
    dec = decompose(CategoricalWorld(d2, ref2, r2, 1.0), np.array(pi2))  # the library agrees
    assert math.isclose(dec.gap, gap2, abs_tol=1e-12)
    assert math.isclose(dec.mutual_information, mi2, abs_tol=1e-12)
    if ref2[0] == ref2[1]:  # x-independent: the gap is KL(pi_Y || rho) >= 0
        kl_y = sum(p * math.log(p / q) for p, q in zip(pi_y2, ref2[0], strict=True))
        assert math.isclose(gap2, kl_y, abs_tol=1e-12) and gap2 > 0
    else:  # the base model reads its prompt: here the KL is *below* the MI
        assert gap2 < 0 and kl2 < mi2

# %% [markdown]
# ## 2. The base model caps what RLHF can teach
#
# Because $\pi^* = \pi_{ref}\,e^{r/\beta}/Z$, a response the base model never produces
# ($\pi_{ref} = 0$) gets $\pi^* = 0$, whatever its reward. And a response the base model
# *rarely* produces needs a large reward gap to become likely: with two responses and
# $\pi_{ref}(y) = p$, $\pi^*(y) \ge ½$ needs $r(y) - r(\text{other}) \ge \beta\log\frac{1-p}{p}$,
# which grows like $\beta \log(1/p)$.

# %%
capped = CategoricalWorld.random(1, n_prompts=4, n_responses=6, beta=0.1, reward_scale=5.0,
                                 zero_fraction=0.4)
zero = capped.pi_ref == 0
print(f"{zero.sum()} (prompt, response) cells with pi_ref = 0; largest pi* there: "
      f"{capped.optimal_policy()[zero].max():.1f}")
assert (capped.optimal_policy()[zero] == 0).all()

p_grid = np.logspace(-8, -0.5, 50)
fig, ax = plt.subplots(figsize=(5, 3))
for beta in (0.05, 0.1, 0.5):
    ax.semilogx(p_grid, beta * np.log((1 - p_grid) / p_grid), label=f"beta = {beta}")
ax.set(xlabel="pi_ref(right answer)", ylabel="reward gap for pi* >= 1/2")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# ## 3. DPO is log 2 − DV; MIO is −JS
#
# For one preference pair $(x, y_w, y_l)$ write $T_w = \beta(\log\pi(y_w|x) -
# \log\pi_{ref}(y_w|x))$ and likewise $T_l$. Take the positives to be the chosen response,
# $P = \delta_w$, and the negatives the base model's two responses, $Q = ½(\delta_w +
# \delta_l)$. Then
#
# $$\mathcal{L}_{DPO} = \mathrm{softplus}(-(T_w - T_l)) = \log 2 - \mathrm{DV}(T; P, Q),$$
# $$\mathcal{L}_{MIO} = \mathrm{softplus}(-T_w) + ½\mathrm{softplus}(T_w) +
# ½\mathrm{softplus}(T_l) = -\mathrm{JS}(T; P, Q).$$
#
# (The MIO formula is the JS estimator with this $Q$; it coincides term for term with TRL's
# `nca_pair`, Noise Contrastive Alignment.) `preference_loss` takes TRL's four
# log-probabilities; the bounds take the critic values with weights. They agree:

# %%
g = torch.Generator().manual_seed(0)
beta = 0.1
ref_w, ref_l = -torch.rand(1000, generator=g, dtype=F64) * 20, -torch.rand(1000, generator=g,
                                                                           dtype=F64) * 20
pol_w = ref_w + torch.randn(1000, generator=g, dtype=F64) * 10
pol_l = ref_l + torch.randn(1000, generator=g, dtype=F64) * 10
t_w, t_l = beta * (pol_w - ref_w), beta * (pol_l - ref_l)

neg = torch.stack([t_w, t_l], -1)  # Q's support: the chosen and the rejected response
half = torch.tensor([0.5, 0.5], dtype=F64)
dv = dv_bound(t_w[:, None], neg, neg_weight=half)
js = js_bound(t_w[:, None], neg, neg_weight=half)
dpo = preference_loss("dpo", pol_w, pol_l, ref_w, ref_l, beta=beta, reduction="none")
mio = preference_loss("mio", pol_w, pol_l, ref_w, ref_l, beta=beta, reduction="none")
assert torch.allclose(dpo, math.log(2) - dv, atol=1e-12)
assert torch.allclose(mio, -js, atol=1e-12)
print("dpo = log 2 - DV and mio = -JS on 1000 random pairs")

# %% [markdown]
# ## 4. The gradient weights
#
# Differentiate each loss with respect to the two critic values:
#
# * **DPO**: $\partial\mathcal{L}/\partial T_w = -\sigma(T_l - T_w) = -\partial\mathcal{L}/
#   \partial T_l$. One shared weight that fades as the margin $T_w - T_l$ grows, and the
#   loss is unchanged if $T_w$ and $T_l$ fall *together*: nothing anchors the chosen
#   log-ratio itself.
# * **MIO**: $\partial\mathcal{L}/\partial T_w = 1.5\,\sigma(T_w) - 1$, zero at
#   $T_w = \log 2$ and negative below it (so descent pushes $T_w$ *up*),
#   whatever $T_l$; and $\partial\mathcal{L}/\partial T_l = ½\sigma(T_l)$, which fades as the
#   rejected response is pushed down. The chosen term has its own target.
#
# Autograd through `preference_loss` confirms both formulas:

# %%
tw = torch.linspace(-6, 6, 201, dtype=F64).requires_grad_(True)
tl = torch.full_like(tw, -1.0).requires_grad_(True)
zero_ref = torch.zeros_like(tw)
weights = {}
for kind in ("dpo", "mio"):
    loss = preference_loss(kind, tw / beta, tl / beta, zero_ref, zero_ref, beta=beta,
                           reduction="sum")
    gw, gl = torch.autograd.grad(loss, (tw, tl))
    weights[kind] = (gw.detach(), gl.detach())
tw_, tl_ = tw.detach(), tl.detach()
assert torch.allclose(weights["dpo"][0], -torch.sigmoid(tl_ - tw_), atol=1e-12)
assert torch.allclose(weights["dpo"][1], torch.sigmoid(tl_ - tw_), atol=1e-12)
assert torch.allclose(weights["mio"][0], 1.5 * torch.sigmoid(tw_) - 1, atol=1e-12)
assert torch.allclose(weights["mio"][1], 0.5 * torch.sigmoid(tl_), atol=1e-12)

fig, ax = plt.subplots(figsize=(5.5, 3))
ax.plot(tw_, -weights["dpo"][0], label="DPO: push on T_w  (= σ(T_l − T_w))")
ax.plot(tw_, -weights["mio"][0], label="MIO: push on T_w  (= 1 − 1.5σ(T_w))")
ax.axhline(0, color="k", lw=0.5)
ax.axvline(math.log(2), color="gray", ls=":", lw=1)
ax.set(xlabel="T_w  (T_l = −1)", ylabel="−∂L/∂T_w  (upward push)")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# ## 5. Exact training dynamics: the decline
#
# Gradient descent on these losses in `toy_models.dynamics` is exact: the loss is the
# expectation over the pair distribution, every metric is an exact expectation, float64.
# The world of claim C3 (`displacement_world`): 8 prompts, 8 responses each, a
# **log-linear policy with one parameter vector shared by all prompts**,
# $\pi_\theta(y|x) \propto \pi_{ref}(y|x)\,e^{\theta\cdot\phi(x,y)}$, one (chosen, rejected)
# pair per prompt, chosen and rejected features with cosine 0.9.
#
# Why the chosen likelihood can fall: a DPO step moves $\theta$ along $\phi_w - \phi_l$, and
# the chosen log-likelihood changes by $(\phi_w - \mathbb{E}_\pi\phi)\cdot(\phi_w - \phi_l)$.
# When chosen and rejected are similar, $\phi_w\cdot(\phi_w-\phi_l) = 1 - 0.9$ is small, and
# another response lying *further* along $\phi_w - \phi_l$ soaks up the probability mass. The
# margin keeps growing; DPO's shared weight never objects, since only $T_w - T_l$ matters.

# %%
c3 = displacement_world()  # the canonical C3 world (overlap 0.9, beta = 0.1, seed 0)
STEPS = 200
runs = {kind: gradient_descent(c3.world, kind, pairs=c3.pairs, features=c3.features, lr=10.0,
                               steps=STEPS)
        for kind in ("dpo", "mio")}
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for color, (kind, traj) in zip(("C0", "C2"), runs.items(), strict=True):
    axes[0].plot(traj.step, traj.chosen_logps, color=color, label=f"{kind}: chosen")
    axes[0].plot(traj.step, traj.rejected_logps, color=color, ls="--", label=f"{kind}: rejected")
    axes[1].plot(traj.step, traj.margin, color=color, label=kind)
axes[0].set(xlabel="step", ylabel="E log pi(y | x)")
axes[1].set(xlabel="step", ylabel="margin E[T_w − T_l]")
axes[0].legend(fontsize=7)
axes[1].legend(fontsize=7)
plt.show()
summary = {kind: summarise_decline(traj) for kind, traj in runs.items()}
for kind, s in summary.items():
    print(f"{kind}: chosen log-lik {s['chosen_initial']:.2f} -> {s['chosen_final']:.2f} "
          f"(drop from peak {s['drop']:.2f}), final margin {s['margin_final']:.3f}, "
          f"P(right answer) {s['expected_reward_final']:.3f}")

# %% [markdown]
# DPO's margin grows while its chosen likelihood collapses (and with it the probability of
# the right answer, the reward here); MIO's chosen likelihood moves far less (it still falls a
# little: the push on the rejected response drags shared directions, but its chosen term
# pulls $T_w$ back toward $\log 2$ and the rejected push fades). The **shared
# parameters** are essential: with a *tabular* policy (one free parameter per prompt and
# response) and one pair per prompt, a DPO step raises the chosen cell and lowers the
# rejected one only, so the chosen likelihood can only rise.

# %%
dpo, mio = summary["dpo"], summary["mio"]
assert dpo["chosen_final"] < dpo["chosen_initial"] - 1.0  # DPO's chosen likelihood falls
assert dpo["margin_final"] > 0 and runs["dpo"].margin[-1] > runs["dpo"].margin[STEPS // 2]
assert mio["drop"] < 0.25 * dpo["drop"]  # MIO's falls far less
tabular = gradient_descent(c3.world, "dpo", pairs=c3.pairs, lr=10.0, steps=STEPS)
assert np.all(np.diff(tabular.chosen_logps) >= -1e-12)  # tabular: never falls
print(f"tabular DPO: chosen log-lik {tabular.chosen_logps[0]:.2f} -> "
      f"{tabular.chosen_logps[-1]:.2f} (monotone)")

# %% [markdown]
# ---
# ## Exercises
#
# Leave an answer as `None` to see the solution; the check cell tests it against the library.
#
# **Exercise 1.** Compute $J(\pi^*)$ of `world` from its log-partition function
# (`world.log_partition()`, shape `[X]`), its prompt weights and its beta, without calling
# `rlhf_objective`.

# %%
answer_1 = None  # a float

# %%
solution_1 = world.beta * float(world.prompt_weights @ world.log_partition())
answer_1 = solution_1 if answer_1 is None else answer_1
assert math.isclose(answer_1, world.rlhf_objective(pi_star), abs_tol=1e-12)
print(f"J(pi*) = beta E_x log Z(x) = {answer_1:.6f}")

# %% [markdown]
# **Exercise 2.** Two responses; the base model gives the right one probability
# $p = 10^{-3}$; $\beta = 0.1$. What reward gap makes $\pi^*(\text{right}) = ½$ exactly?

# %%
answer_2 = None  # a float

# %%
solution_2 = 0.1 * math.log((1 - 1e-3) / 1e-3)
answer_2 = solution_2 if answer_2 is None else answer_2
two = CategoricalWorld(prompt_weights=[1.0], pi_ref=[[1 - 1e-3, 1e-3]],
                       reward=[[0.0, answer_2]], beta=0.1)
assert math.isclose(two.optimal_policy()[0, 1], 0.5, abs_tol=1e-9)
print(f"gap {answer_2:.4f} gives pi*(right) = {two.optimal_policy()[0, 1]:.6f}")

# %% [markdown]
# **Exercise 3.** At which chosen critic value $T_w$ does MIO stop pushing the chosen
# response (its gradient with respect to $T_w$ is zero)?

# %%
answer_3 = None  # a float

# %%
solution_3 = math.log(2)  # 1.5 sigma(T) = 1  <=>  e^T = 2
answer_3 = solution_3 if answer_3 is None else answer_3
t = torch.tensor([answer_3], dtype=F64, requires_grad=True)
loss = preference_loss("mio", t / beta, torch.tensor([-3.0], dtype=F64) / beta,
                       torch.zeros(1, dtype=F64), torch.zeros(1, dtype=F64), beta=beta)
(grad,) = torch.autograd.grad(loss, t)
assert abs(float(grad)) < 1e-12
print(f"MIO's chosen gradient vanishes at T_w = {answer_3:.4f} = log 2")

# %% [markdown]
# **Exercise 4.** Both log-ratios fall by 5 nats (the policy lowers the chosen *and* the
# rejected log-probability by 5). By how much does the DPO loss change? And the MIO loss —
# up or down (answer `"up"` or `"down"`)?

# %%
answer_4 = None  # a tuple: (change of the DPO loss, "up" or "down" for MIO)

# %%
solution_4 = (0.0, "up")
answer_4 = solution_4 if answer_4 is None else answer_4
before = {k: preference_loss(k, pol_w, pol_l, ref_w, ref_l, beta=beta) for k in ("dpo", "mio")}
after = {k: preference_loss(k, pol_w - 5, pol_l - 5, ref_w, ref_l, beta=beta)
         for k in ("dpo", "mio")}
assert math.isclose(float(after["dpo"] - before["dpo"]), answer_4[0], abs_tol=1e-12)
assert (after["mio"] > before["mio"]) == (answer_4[1] == "up")
print(f"DPO change {float(after['dpo'] - before['dpo']):+.2e}; "
      f"MIO change {float(after['mio'] - before['mio']):+.4f}")

# %% [markdown]
# ## Bring your own loss
#
# Any function of the four sequence log-probabilities and $\beta$ (TRL's signature, per-pair
# loss) can be registered and audited: does it see the margin alone, does its chosen term have a
# target, which bound is it, where is its population optimum (docs/AUDIT.md; on the command line
# `mi-bounds audit FILE.py:FUNCTION`). Here: DPO-Positive, DPO with a penalty when the chosen
# log-likelihood falls below the reference's.

# %%
from mi_bounds import register_loss
from toy_models.audit import audit


def dpop(pc, pr, rc, rr, beta, lam=50.0):
    """-log σ(β(z_w - z_l - λ·max(0, -z_w)))"""
    z_w, z_l = pc - rc, pr - rr
    return -torch.nn.functional.logsigmoid(beta * (z_w - z_l - lam * torch.relu(-z_w)))


register_loss("dpop", dpop, replace=True)  # replace=True: re-running the cell is fine
report = audit("dpop", against=["dpo", "mio"], worlds=2, run_dynamics=False)
for name, a in report["audits"].items():
    reading = [f"{r['bound']} (Q = {r['Q'].split(' (')[0]})" for r in a["mi_reading"]["readings"]]
    print(f"{name:5s} margin only: {a['depends_on_margin_only']!s:5s}  reading: "
          f"{reading or 'none'}  KL(optimum ‖ π*): "
          f"{a['population_optimum']['mean_kl_to_pi_star']:.3g}")
assert report["audits"]["dpo"]["depends_on_margin_only"] and not report["depends_on_margin_only"]

# %% [markdown]
# ## What to take away
#
# * RLHF's optimum is where the DV bound with critic $r/\beta$ is tight; it can only
#   reweight what the base model already produces. The KL it bounds is the policy's mutual
#   information $I(X;Y)$ plus $\mathbb{E}[\log\pi_Y - \log\pi_{ref}]$: exactly the MI only
#   when $\pi_{ref}(\cdot|x) = \pi_Y$ for every prompt.
# * DPO is $\log 2 - \mathrm{DV}$, MIO is $-\mathrm{JS}$, with the policy's implicit critic.
# * DPO's gradient sees only the margin, so with shared parameters the chosen likelihood can
#   fall as the margin grows; MIO's chosen term has its own target ($T_w = \log 2$).
#
# Next: notebook 4 runs the same comparison on a small transformer language model.

# %%
print("all checks passed")
