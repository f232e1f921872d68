"""The training stages' learning-rate schedule (mi_bounds.lm.optim)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from mi_bounds.lm.optim import lr_factor  # noqa: E402


def test_lr_factor_warmup_then_constant_or_cosine_to_a_tenth():
    assert lr_factor(0, 4, 100, cosine=False) == pytest.approx(0.25)
    assert lr_factor(3, 4, 100, cosine=True) == pytest.approx(1.0)
    assert lr_factor(50, 4, 100, cosine=False) == 1.0
    assert lr_factor(100, 4, 100, cosine=True) == pytest.approx(0.1)
    mid = 4 + (100 - 4) // 2
    assert lr_factor(mid, 4, 100, cosine=True) == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-12)
    assert math.isclose(lr_factor(1000, 4, 100, cosine=True), 0.1)
