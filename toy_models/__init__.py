"""Exact categorical worlds: finite distributions, policies, and their information quantities.

Everything here is exact (float64 tables, no sampling). :mod:`toy_models.oracle` computes KL,
JSD, entropy and mutual information with scipy, independently of :mod:`mi_bounds`;
:mod:`toy_models.strategies` holds hypothesis strategies for valid toy objects;
:mod:`toy_models.facts` checks docs/THEORY.md §1's facts and :mod:`toy_models.report` is
``mi-bounds report``.
"""

from toy_models.oracle import (
    as_distribution,
    entropy,
    jsd,
    kl,
    kl_log,
    log_ratio,
    mutual_information,
)

__all__ = ["as_distribution", "entropy", "jsd", "kl", "kl_log", "log_ratio", "mutual_information"]

# :mod:`toy_models.world`: the categorical world (prompts, responses, pi_ref, reward, beta).
from toy_models.world import PAIR_KINDS, CategoricalWorld

__all__ += ["PAIR_KINDS", "CategoricalWorld"]
