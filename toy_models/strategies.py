"""Hypothesis strategies for valid toy objects, so users can property-test their own code.

Requires ``hypothesis`` (the ``dev`` extra). Distributions are float64 numpy vectors that sum to
one; they include sparse ones (exact zeros) and near-degenerate ones (one cell within 1e-9 of
all the mass), which is where numerically careless code breaks.

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

__all__ = ["categorical_worlds", "critics", "distribution_pairs", "distributions", "joint_tables"]

if TYPE_CHECKING:
    from toy_models.world import CategoricalWorld

Vec = NDArray[np.float64]

_KINDS = ("dense", "sparse", "near_degenerate")


@st.composite
def distributions(
    draw: st.DrawFn,
    size: int | None = None,
    *,
    min_size: int = 2,
    max_size: int = 8,
    kinds: tuple[str, ...] = _KINDS,
) -> Vec:
    """A probability vector of ``size`` cells (or a drawn size in [min_size, max_size]).

    ``kinds``: "dense" (all cells > 0), "sparse" (some exact zeros, at least one cell > 0) and
    "near_degenerate" (one cell holds all but ~1e-9 of the mass).
    """
    n = size if size is not None else draw(st.integers(min_size, max_size))
    kind = draw(st.sampled_from(kinds))
    weights = np.array(draw(st.lists(st.floats(1e-3, 1.0), min_size=n, max_size=n)))
    if kind == "sparse" and n > 1:
        zero = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        if zero.all():
            zero[draw(st.integers(0, n - 1))] = False
        weights = np.where(zero, 0.0, weights)
    elif kind == "near_degenerate":
        big = draw(st.integers(0, n - 1))
        eps = draw(st.sampled_from([1e-9, 1e-6, 1e-3]))
        weights = weights / weights.sum() * eps
        weights[big] = 1.0 - (weights.sum() - weights[big])
    return weights / weights.sum()


@st.composite
def distribution_pairs(
    draw: st.DrawFn,
    size: int | None = None,
    *,
    min_size: int = 2,
    max_size: int = 8,
    absolutely_continuous: bool = True,
) -> tuple[Vec, Vec]:
    """A pair ``(p, q)`` over the same support.

    With ``absolutely_continuous=True`` (the default), P ≪ Q: ``p`` is zero wherever ``q`` is,
    so KL(P ‖ Q) is finite. With ``False``, ``p`` puts mass on at least one cell where ``q`` has
    none (KL = +inf).
    """
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


def critics(size: int, *, low: float = -50.0, high: float = 50.0) -> st.SearchStrategy[Vec]:
    """Critic tables: ``size`` finite float64 values in ``[low, high]``."""
    return st.lists(
        st.floats(low, high, allow_nan=False, allow_infinity=False), min_size=size, max_size=size
    ).map(lambda xs: np.array(xs, dtype=np.float64))


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
