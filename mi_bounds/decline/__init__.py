"""The decline of the chosen log-likelihood: its shape, reading training logs, diagnosis.

Modules, from the bottom up (each imports only those above it in this list):

- :mod:`~mi_bounds.decline.stats`: its statistics (AR(1) noise, calibrated levels, Student-t
  levels over seeds, the two-level seeds × pairs bootstrap);
- :mod:`~mi_bounds.decline.shape`: the shape rule (docs/THEORY.md §6) for one curve or seeds;
- :mod:`~mi_bounds.decline.compare`: losses compared at matched margin, KL and accuracy;
- :mod:`~mi_bounds.decline.training_log`: reading TRL / JSONL / CSV / align logs;
- :mod:`~mi_bounds.decline.diagnose`: the verdict, report and plot of ``mi-bounds diagnose``;
- :mod:`~mi_bounds.decline.cli`: ``mi-bounds diagnose``;
- :mod:`~mi_bounds.decline.ches`: CHES of a preference pair, before training (needs the ``lm``
  extra; imports the small-LM path's padding and position ids);
- :mod:`~mi_bounds.decline.displacement`: does CHES predict the per-pair chosen change (rank
  correlations against baselines; the pairs most responsible);
- :mod:`~mi_bounds.decline.ches_cli`: ``mi-bounds ches``.
"""

from mi_bounds.decline.shape import (
    SHAPES,
    DeclineShape,
    decline_shape,
    seed_thresholds,
    shapes_over_seeds,
    value_at_first_crossing,
)

__all__ = [
    "SHAPES",
    "DeclineShape",
    "decline_shape",
    "seed_thresholds",
    "shapes_over_seeds",
    "value_at_first_crossing",
]
