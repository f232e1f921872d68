"""Adapters between mi-bounds and other libraries (optional extras; imported on demand).

* :mod:`mi_bounds.integrations.trl` — every loss of :mod:`mi_bounds.preference` inside TRL's
  ``DPOTrainer`` (:class:`~mi_bounds.integrations.trl.MIDPOTrainer`), and
  :class:`~mi_bounds.integrations.decline_callback.DeclineCallback`, the decline shape of
  docs/THEORY.md §6 applied online to TRL's logged metrics. Needs the ``trl`` extra.
* :mod:`mi_bounds.integrations.tracked_pairs` — the chosen log-likelihood of preference pairs
  tracked by that callback, and the pairs whose chosen log-likelihood fell most, with their CHES
  (docs/THEORY.md §9).

Each adapter only maps names and shapes; the formulas stay in :mod:`mi_bounds`.
"""
