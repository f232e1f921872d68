"""DPO-Positive (DPOP): a loss from the literature that mi-bounds does not ship, written by a user.

Pal, Karkhanis, Dooley, Roberts, Naidu & White, "Smaug: Fixing Failure Modes of Preference
Optimisation with DPO-Positive", arXiv 2402.13228: DPO with a penalty inside the sigmoid
whenever the policy's chosen log-likelihood falls below the reference's,

    L = -log σ(β·(z_w - z_l - λ·max(0, log π_ref(y_w|x) - log π_θ(y_w|x)))),

z = log π_θ - log π_ref. Audit it with ``mi-bounds audit examples/dpop.py:dpop`` (docs/AUDIT.md).
"""

import torch
import torch.nn.functional as F


def dpop(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta, lam=50.0):
    """-log σ(β(z_w - z_l - λ·max(0, -z_w))), λ = 50 by default (illustrative; the paper tunes λ)"""
    z_w = policy_chosen_logps - reference_chosen_logps
    z_l = policy_rejected_logps - reference_rejected_logps
    return -F.logsigmoid(beta * (z_w - z_l - lam * torch.relu(-z_w)))
