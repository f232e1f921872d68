"""The GPU validation's parts (the entry point is experiments/gpu_validation.py).

``context``  what every step sees (folders, device, the budget's clock), the step names,
             the targets, JSON writing and timing
``measure``  the measurement steps: env (ceilings), bounds, staircase
``lm_steps`` the small-LM steps: decline (the align/grid entry points of mi_bounds.lm, under a
             deadline), trl, smollm2; collection through mi_bounds.lm.collect
``schedule`` the steps in order, each guarded, and the salvage after a kill
``pack``     the summary and the one archive that a call brings back

What a lent machine has and allows is experiments/gpu_provision.py.
"""
