r"""How uncertain is an estimator's value on a fixed set of rows: the score blocks, and a bootstrap.

The held-out estimate of :mod:`mi_bounds.estimation.heldout` is an estimator's value on the score
matrix ``S[i, j] = T(x_i, y_j)`` of the test rows, at a fixed (trained, capped) critic ``T``.
Its sampling variability comes from the rows alone: every row enters ``n`` negatives of its
column and ``n`` of its line besides its positive pair, so the ``n(n-1)`` negatives are not
independent. Two ways to measure it, both resampling whole rows:

* the delete-a-group jackknife of :func:`~mi_bounds.estimation.heldout.rows_value` (the default;
  interval ``θ̂ ± t·se``, Student's t with the groups' degrees of freedom: ``jackknife_quantile``);
* the bootstrap here (:func:`rows_bootstrap`; Efron & Tibshirani, "An Introduction to the
  Bootstrap", 1993, Ch. 6 and 13): ``B`` resamples of the ``m`` rows drawn with replacement,
  each valued like the original (same estimator, same score-matrix function); the standard
  error is the standard deviation of the ``B`` values and the interval their percentile
  interval ``[q_{α/2}, q_{1-α/2}]`` (``α = 1 - level``; ``basic`` gives the reflected one,
  ``[2θ̂ - q_{1-α/2}, 2θ̂ - q_{α/2}]``, the basic bootstrap interval of Davison & Hinkley,
  "Bootstrap Methods and their Application", 1997, Sec. 5.2).

A resample draws rows ``a_1, …, a_m`` and its score matrix is ``S*[i, j] = S[a_i, a_j]``; where a
row is drawn twice, ``S*[i, j]`` with ``i ≠ j`` and ``a_i = a_j`` is a *positive* pair placed among
the negatives (about ``m`` of the ``m(m-1)`` entries). Left there it would shift every resample
(DV's ``log E_Q[e^T]`` up by about ``(E_P[e^T]/E_Q[e^T] - 1)/m``, which for the optimal critic
``log r`` of the Gaussian task is ``(e^{2I} - 1)/m``: 0.026 nats at I = 1 nat and ``m = 250``
test rows, against a standard error of about 0.09 there), so each such entry is
replaced by ``S[a_i, a_k]``, ``k`` drawn uniformly among the positions whose row is another one
(``a_k ≠ a_i``): every negative of a resample is a pair of two distinct test rows, as in the
original matrix. A resample whose rows are all one row has no such pair and is drawn again.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mi_bounds.estimation.critics import score_matrix
from mi_bounds.estimation.training import check_scores, estimator_value

__all__ = [
    "BOOTSTRAP_LEVEL",
    "BOOTSTRAP_RESAMPLES",
    "BootstrapInterval",
    "block_edges",
    "bootstrap_values",
    "resample_rows",
    "resampled_scores",
    "rows_bootstrap",
    "score_blocks",
]

#: Resamples of the test rows per bootstrap interval (``interval="bootstrap"``): the percentile
#: interval's end points are then order statistics 5 and 195 of 200, interpolated.
BOOTSTRAP_RESAMPLES = 200

#: Coverage level of the bootstrap interval.
BOOTSTRAP_LEVEL = 0.95

#: Entries of resampled score matrices valued at once (float64: 32 MiB; at m = 2,500 test rows
#: one resample at a time, at m = 250 sixty-seven).
_CHUNK_ELEMENTS = 1 << 22


def _check_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def block_edges(n: int, max_rows: int = 4096) -> list[int]:
    """Where :func:`score_blocks` cuts ``n`` rows: ``ceil(n / max_rows) + 1`` edges of contiguous
    blocks of near-equal size (``[0, …, n]``)."""
    _check_int(n, "n", 1)
    _check_int(max_rows, "max_rows", 2)
    return np.linspace(0, n, math.ceil(n / max_rows) + 1).round().astype(int).tolist()


@torch.no_grad()
def score_blocks(
    critic: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    max_rows: int = 4096,
    max_abs_score: float | None = None,
    cap: float | None = None,
    where: str = "on the held-out rows",
) -> Iterator[torch.Tensor]:
    """The rows cut into ``ceil(n / max_rows)`` contiguous blocks of near-equal size, and for
    each block its score matrix ``S[i, j] = T(x_i, y_j)`` in float64 (``min(T, cap)`` with a
    ``cap``, after the divergence guard has read the raw values). The critic is evaluated in
    eval mode (its mode is restored afterwards).

    Raises:
        ValueError: fewer than 2 rows, or ``x`` and ``y`` with different numbers of rows.
        DivergenceError: a score is non-finite or beyond ``max_abs_score``.
    """
    n = int(x.shape[0])
    if n < 2 or y.shape[0] != n:
        raise ValueError(f"x and y need the same number (>= 2) of rows, got {n} and "
                         f"{y.shape[0]}")
    edges = block_edges(n, max_rows)
    was_training = critic.training
    critic.eval()
    try:
        for lo, hi in itertools.pairwise(edges):
            s = score_matrix(critic, x[lo:hi], y[lo:hi])  # (m, m)
            check_scores(s, max_abs_score, where)
            s = s.double()
            yield s if cap is None else s.clamp(max=cap)
    finally:
        critic.train(was_training)


def resample_rows(m: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` bootstrap resamples of ``m`` rows: row indices ``[count, m]`` drawn uniformly
    with replacement (``torch.randint`` on ``generator``, a CPU generator); a resample whose
    rows are all one row is drawn again (module docstring)."""
    _check_int(m, "m", 2)
    idx = torch.randint(m, (count, m), generator=generator)
    while True:
        single = (idx == idx[:, :1]).all(1)
        if not single.any():
            return idx
        idx[single] = torch.randint(m, (int(single.sum()), m), generator=generator)


def resampled_scores(scores: torch.Tensor, idx: torch.Tensor,
                     generator: torch.Generator) -> torch.Tensor:
    """The score matrices ``[count, m, m]`` of the resamples ``idx [count, m]`` of the rows of
    ``scores [m, m]``: ``S*[i, j] = S[a_i, a_j]``, and where ``i ≠ j`` but ``a_i = a_j`` (a
    positive pair off the diagonal) ``S[a_i, a_k]`` with ``k`` drawn uniformly among the
    positions with ``a_k ≠ a_i`` (module docstring)."""
    count, m = idx.shape
    device = scores.device
    idx_d = idx.to(device)
    out = torch.gather(scores[idx_d], 2, idx_d[:, None, :].expand(count, m, m))
    same = idx[:, :, None] == idx[:, None, :]
    same.diagonal(dim1=1, dim2=2).fill_(False)
    b, i, j = same.nonzero(as_tuple=True)
    origin = idx[b, i]
    other = torch.empty_like(origin)
    todo = torch.arange(origin.numel())
    while todo.numel():  # rejection: the chance that k is another copy of a_i is w_{a_i} / m
        k = torch.randint(m, (todo.numel(),), generator=generator)
        candidate = idx[b[todo], k]
        ok = candidate != origin[todo]
        other[todo[ok]] = candidate[ok]
        todo = todo[~ok]
    out[b.to(device), i.to(device), j.to(device)] = scores[origin.to(device), other.to(device)]
    return out


def bootstrap_values(
    scores: torch.Tensor,
    names: Sequence[str],
    *,
    clip: float | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    generator: torch.Generator,
) -> dict[str, np.ndarray]:
    """Each estimator's value on ``resamples`` bootstrap resamples of the rows of one score
    matrix ``[m, m]`` (:func:`resample_rows`, :func:`resampled_scores`), valued by
    :func:`~mi_bounds.estimation.training.estimator_value` on batches of resampled matrices
    (at most ``2^22`` entries at once). Returns ``name -> values [resamples]``."""
    _check_int(resamples, "resamples", 2)
    m = int(scores.shape[-1])
    chunk = max(1, _CHUNK_ELEMENTS // (m * m))
    out = {k: np.empty(resamples) for k in names}
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        sub = resampled_scores(scores, resample_rows(m, count, generator), generator)
        for k in names:
            out[k][start:start + count] = estimator_value(k, sub, clip=clip).cpu().numpy()
    return out


@dataclass(frozen=True)
class BootstrapInterval:
    """A bootstrap interval for an estimator's value on a set of rows.

    Attributes:
        estimate: the value on all rows (the same number :func:`rows_value` gives).
        stderr: the standard deviation (ddof = 1) of the resampled values.
        low, high: the percentile interval, the ``(1 - level)/2`` and ``(1 + level)/2``
            quantiles of the resampled values (numpy's default, linear interpolation).
        level: the nominal coverage.
        values: the resampled values (mean over blocks where there are several).
    """

    estimate: float
    stderr: float
    low: float
    high: float
    level: float
    values: np.ndarray = field(repr=False, compare=False)

    @property
    def basic(self) -> tuple[float, float]:
        """The basic (reflected) interval ``[2θ̂ - high, 2θ̂ - low]``."""
        return (2 * self.estimate - self.high, 2 * self.estimate - self.low)


def rows_bootstrap(
    critic: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    names: Sequence[str],
    *,
    clip: float | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
    max_rows: int = 4096,
    max_abs_score: float | None = None,
    cap: float | None = None,
    where: str = "on the held-out rows",
) -> dict[str, BootstrapInterval]:
    """Each estimator's value on the score matrix of a set of rows, with a bootstrap interval.

    The blocks, the cap and the estimate are those of
    :func:`~mi_bounds.estimation.heldout.rows_value` (:func:`score_blocks`; the estimate is the
    mean of the blocks' values). Resample ``r`` draws the rows of every block with replacement
    (:func:`bootstrap_values`, one generator seeded ``seed`` for all blocks, in block order) and
    its value is the mean of the blocks' resampled values; the standard error is the standard
    deviation of the ``resamples`` values and the interval their percentile interval at
    ``level`` (module docstring; :attr:`BootstrapInterval.basic` the reflected one).

    Returns:
        ``name -> BootstrapInterval``.

    Raises:
        ValueError: ``resamples`` not an int >= 2, ``level`` not in (0, 1), ``seed`` not an int
            >= 0, ``max_rows`` not an int >= 2, an unknown estimator name, or fewer than 2 rows.
        DivergenceError: a score is non-finite or beyond ``max_abs_score``.
    """
    _check_int(resamples, "resamples", 2)
    _check_int(seed, "seed", 0)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    if not names:
        raise ValueError("names must name at least one estimator")
    generator = torch.Generator().manual_seed(int(seed))
    full: dict[str, list[float]] = {k: [] for k in names}
    boot: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for s in score_blocks(critic, x, y, max_rows=max_rows, max_abs_score=max_abs_score, cap=cap,
                          where=where):
        for k in names:  # the full value first: it validates the names
            full[k].append(float(estimator_value(k, s, clip=clip)))
        for k, v in bootstrap_values(s, names, clip=clip, resamples=resamples,
                                     generator=generator).items():
            boot[k].append(v)
    out = {}
    for k in names:
        values = np.mean(boot[k], axis=0)
        low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
        out[k] = BootstrapInterval(float(np.mean(full[k])), float(values.std(ddof=1)),
                                   float(low), float(high), float(level), values)
    return out
