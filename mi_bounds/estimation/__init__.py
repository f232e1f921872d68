"""MI estimation on samples: critics, tasks with exact MI, training, the held-out protocol, KSG.

Modules, from the bottom up (each imports only those above it in this list):

- :mod:`~mi_bounds.estimation.tasks`: samplers with exact MI (Gaussian, Student-t, staircase)
  and finite samples (:class:`ArrayTask`), row splits, standardisation;
- :mod:`~mi_bounds.estimation.critics`: separable and concatenation critics, score matrices;
- :mod:`~mi_bounds.estimation.training`: the estimator registry and the training loop on fresh
  batches from a sampler;
- :mod:`~mi_bounds.estimation.intervals`: the score blocks of a set of rows and the bootstrap
  interval of an estimator's value on them;
- :mod:`~mi_bounds.estimation.heldout`: the held-out protocol for a finite sample
  (docs/THEORY.md, "Estimation on samples");
- :mod:`~mi_bounds.estimation.estimate`: :func:`estimate_mi`, the one entry point above both;
- :mod:`~mi_bounds.estimation.ksg`: the Kraskov–Stögbauer–Grassberger k-NN estimator;
- :mod:`~mi_bounds.estimation.staircase`: the bias/variance staircase;
- :mod:`~mi_bounds.estimation.cli`: ``mi-bounds estimate``.
"""

from mi_bounds.estimation.critics import CRITICS, ConcatCritic, SeparableCritic, make_critic
from mi_bounds.estimation.estimate import estimate_mi
from mi_bounds.estimation.heldout import estimate_mi_on_samples, prepare_samples, sample_config
from mi_bounds.estimation.ksg import KSGEstimate, ksg_mi
from mi_bounds.estimation.tasks import (
    ArrayTask,
    GaussianTask,
    StaircaseTask,
    StudentTask,
    Task,
    load_npz,
)
from mi_bounds.estimation.training import (
    ESTIMATORS,
    DivergenceError,
    EstimateConfig,
    EstimationResult,
)

__all__ = [
    "CRITICS",
    "ESTIMATORS",
    "ArrayTask",
    "ConcatCritic",
    "DivergenceError",
    "EstimateConfig",
    "EstimationResult",
    "GaussianTask",
    "KSGEstimate",
    "SeparableCritic",
    "StaircaseTask",
    "StudentTask",
    "Task",
    "estimate_mi",
    "estimate_mi_on_samples",
    "ksg_mi",
    "load_npz",
    "make_critic",
    "prepare_samples",
    "sample_config",
]
