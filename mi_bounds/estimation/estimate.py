"""The one entry point of neural MI estimation: a sampler is trained, a finite sample is held out.

:func:`estimate_mi` sits above :mod:`mi_bounds.estimation.training` (fresh batches from a
sampler) and :mod:`mi_bounds.estimation.heldout` (the held-out protocol for a finite sample,
docs/THEORY.md "Estimation on samples"), so neither of those imports the other's caller.
"""

from __future__ import annotations

import torch
from torch import nn

from mi_bounds.estimation.critics import make_critic
from mi_bounds.estimation.heldout import estimate_mi_on_samples
from mi_bounds.estimation.tasks import ArrayTask, Task
from mi_bounds.estimation.training import EstimateConfig, EstimationResult, train

__all__ = ["estimate_mi"]


def estimate_mi(
    task: Task,
    config: EstimateConfig | None = None,
    *,
    critic: str = "separable",
    **critic_kwargs: object,
) -> tuple[EstimationResult, nn.Module]:
    """Build a critic (seeded with ``config.seed``) for ``task`` and :func:`train` it.

    A finite sample (:class:`~mi_bounds.estimation.tasks.ArrayTask`) is estimated by the held-out
    protocol instead: :func:`mi_bounds.estimation.heldout.estimate_mi_on_samples` (split,
    standardise, choose the checkpoint on validation rows, report on test rows).

    Args:
        task: a :class:`~mi_bounds.estimation.tasks.Task` (Gaussian, staircase, or arrays).
        config: run settings (default :class:`EstimateConfig`; for arrays,
            :func:`mi_bounds.estimation.heldout.sample_config`).
        critic: ``"separable"`` or ``"concat"``.
        **critic_kwargs: sizes passed to the critic (``hidden_dim``, ``embed_dim``, ``layers``,
            ``activation``).

    Returns:
        ``(result, trained critic)``.
    """
    if isinstance(task, ArrayTask):
        return estimate_mi_on_samples(
            task.x_array, task.y_array, config, true_mi=task.true_mi(), critic=critic,
            **critic_kwargs,
        )
    config = EstimateConfig() if config is None else config
    torch.manual_seed(config.seed)
    net = make_critic(critic, task.x_dim, task.y_dim, **critic_kwargs)
    return train(net, task, config), net
