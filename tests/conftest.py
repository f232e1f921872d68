"""Test configuration: hypothesis profiles and shared fixtures.

Profiles: ``dev`` (default, 200 examples) and ``ci`` (200 examples, derandomized so CI is
reproducible); choose with HYPOTHESIS_PROFILE.
"""

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The tests use tiny tensors: one thread is faster than two (and much faster on a busy machine).
torch.set_num_threads(1)
