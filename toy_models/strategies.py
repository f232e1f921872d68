"""Hypothesis strategies for valid toy objects, so users can property-test their own code.

Requires ``hypothesis`` (the ``dev`` extra). They reach the numerical edges, which is where
numerically careless code breaks: distributions (float64 vectors that sum to one) include
supports of one cell, sparse ones (exact zeros), near-degenerate ones (one cell within 1e-300 to
1e-3 of all the mass) and ones whose masses span 300 orders of magnitude (down to ~1e-300);
critics span ±1e3 (past float32's exp overflow at 88.7; ``dtype=np.float32`` draws float32
values); :func:`log_probs` span [-1e3, 0] and :func:`betas` [1e-3, 10].

Example::

    from hypothesis import given
    from toy_models.strategies import distribution_pairs, critics

    @given(distribution_pairs(), critics(8))
    def test_mine(pq, t): ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from hypothesis import strategies as st
from numpy.typing import NDArray

__all__ = ["betas", "categorical_worlds", "critics", "distribution_pairs", "distributions",
           "joint_tables", "log_probs"]

if TYPE_CHECKING:
    from toy_models.world import CategoricalWorld

Vec = NDArray[np.float64]

_KINDS = ("dense", "sparse", "near_degenerate", "spread")


@st.composite
def distributions(
    draw: st.DrawFn,
    size: int | None = None,
    *,
    min_size: int = 1,
    max_size: int = 8,
    kinds: tuple[str, ...] = _KINDS,
) -> Vec:
    """A probability vector of ``size`` cells (or a drawn size in [min_size, max_size]).

    ``kinds``: "dense" (all cells > 0), "sparse" (some exact zeros, at least one cell > 0),
    "near_degenerate" (one cell holds all but 1e-300 to 1e-3 of the mass) and "spread"
    (masses scaled by 10^-e, e in {0, 10, 100, 300}: cells down to ~1e-300).
    """
    n = size if size is not None else draw(st.integers(min_size, max_size))
    kind = draw(st.sampled_from(kinds))
    weights = np.array(draw(st.lists(st.floats(1e-3, 1.0), min_size=n, max_size=n)))
    if kind == "sparse" and n > 1:
        zero = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        if zero.all():
            zero[draw(st.integers(0, n - 1))] = False
        weights = np.where(zero, 0.0, weights)
    elif kind == "near_degenerate" and n > 1:
        big = draw(st.integers(0, n - 1))
        eps = draw(st.sampled_from([1e-300, 1e-100, 1e-9, 1e-6, 1e-3]))
        weights = weights / weights.sum() * eps
        weights[big] = 1.0 - (weights.sum() - weights[big])
    elif kind == "spread" and n > 1:
        exps = np.array(draw(st.lists(st.sampled_from([0, 10, 100, 300]), min_size=n,
                                      max_size=n)))
        exps[draw(st.integers(0, n - 1))] = 0
        weights = weights * 10.0 ** -exps.astype(np.float64)
    return weights / weights.sum()


@st.composite
def distribution_pairs(
    draw: st.DrawFn,
    size: int | None = None,
    *,
    min_size: int = 1,
    max_size: int = 8,
    absolutely_continuous: bool = True,
) -> tuple[Vec, Vec]:
    """A pair ``(p, q)`` over the same support.

    With ``absolutely_continuous=True`` (the default), P ≪ Q: ``p`` is zero wherever ``q`` is,
    so KL(P ‖ Q) is finite. With ``False``, ``p`` puts mass on at least one cell where ``q`` has
    none (KL = +inf); the size is then at least 2.
    """
    if not absolutely_continuous:
        min_size = max(min_size, 2)
    n = size if size is not None else draw(st.integers(min_size, max_size))
    q = draw(distributions(n))
    p = draw(distributions(n))
    if absolutely_continuous:
        p = np.where(q > 0, p, 0.0)
        if p.sum() == 0:
            p = q.copy()
        p = p / p.sum()
    else:
        if n < 2:
            raise ValueError("absolutely_continuous=False needs size >= 2")
        hole = draw(st.integers(0, n - 1))
        q = q.copy()
        q[hole] = 0.0
        if q.sum() == 0:
            q[(hole + 1) % n] = 1.0
        q = q / q.sum()
        p = p.copy()
        p[hole] = max(p[hole], 0.1)
        p = p / p.sum()
    return p, q


def critics(
    size: int, *, low: float = -1e3, high: float = 1e3, dtype: type = np.float64
) -> st.SearchStrategy[Vec]:
    """Critic tables: ``size`` finite values in ``[low, high]`` of ``dtype`` (float64, or
    float32: values drawn in float32, e.g. past its exp overflow at 88.7)."""
    width = 32 if np.dtype(dtype) == np.float32 else 64
    return st.lists(
        st.floats(low, high, allow_nan=False, allow_infinity=False, width=width),
        min_size=size, max_size=size,
    ).map(lambda xs: np.array(xs, dtype=dtype))


def log_probs(*, low: float = -1e3) -> st.SearchStrategy[float]:
    """A sequence log-probability in ``[low, 0]`` (default [-1e3, 0])."""
    return st.floats(low, 0.0, allow_nan=False, allow_infinity=False)


def betas(*, low: float = 1e-3, high: float = 10.0) -> st.SearchStrategy[float]:
    """A KL weight beta in ``[low, high]`` (default [1e-3, 10])."""
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


@st.composite
def joint_tables(
    draw: st.DrawFn, nx: int | None = None, ny: int | None = None, *, max_size: int = 4
) -> NDArray[np.float64]:
    """A joint probability table ``[x, y]`` (zeros allowed), for mutual-information tests."""
    nx = nx if nx is not None else draw(st.integers(1, max_size))
    ny = ny if ny is not None else draw(st.integers(1, max_size))
    flat = draw(distributions(nx * ny, kinds=("dense", "sparse")))
    return flat.reshape(nx, ny)


@st.composite
def categorical_worlds(
    draw: st.DrawFn,
    *,
    max_prompts: int = 4,
    max_responses: int = 6,
    x_independent: bool | None = None,
) -> CategoricalWorld:
    """A :class:`toy_models.world.CategoricalWorld` with zeros and near-degenerate rows.

    Prompt weights and every row of ``pi_ref`` come from :func:`distributions` (dense, sparse
    with exact zeros, or near-degenerate); rewards lie in [-5, 5] and beta in [0.05, 5].
    ``x_independent=True`` gives every prompt the same ``pi_ref`` row, ``False`` independent
    rows (which may still coincide), ``None`` either.
    """
    from toy_models.world import CategoricalWorld  # imports torch: only when used

    nx = draw(st.integers(1, max_prompts))
    ny = draw(st.integers(2, max_responses))
    same = draw(st.booleans()) if x_independent is None else x_independent
    d = draw(distributions(nx))
    rows = [draw(distributions(ny))] * nx if same else [draw(distributions(ny))
                                                        for _ in range(nx)]
    reward = np.array(draw(st.lists(st.floats(-5.0, 5.0), min_size=nx * ny, max_size=nx * ny)))
    beta = draw(st.floats(0.05, 5.0))
    return CategoricalWorld(d, np.array(rows), reward.reshape(nx, ny), beta)
