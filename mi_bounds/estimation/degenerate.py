r"""Degenerate samples, found before any estimator runs (docs/THEORY.md §4, "Misuse and edges").

Some samples have no finite MI to estimate, or none that ``n`` rows can resolve, and every
estimator would still print a finite number for them (on 1000 rows of a 2-d ``Y = X``, SMILE
printed 4.67 ± 0.04 nats and KSG 5.98 ± 0.00 before these checks, neither flagged).
:func:`check_dependence` looks for:

* **An exact function of a continuous variable.** If a column ``Y_j`` takes a distinct value on
  every (distinct) row and is a function of ``X``, then ``h(Y_j | X) = -\infty`` while
  ``h(Y_j)`` is finite, so ``I(X; Y) >= I(X; Y_j) = \infty`` (likewise with X and Y swapped).
  First, *affine in all of X*: the least-squares residual of ``Y_j`` on ``[X, 1]`` has variance
  below :data:`EXACT_RATIO` of ``Y_j``'s (``Y = X``, ``Y = aX + b``, a copied column):
  infinite. Below :data:`NEAR_RATIO` (``Y = X + 10^{-7}\varepsilon``) it is *near-exact*: the
  MI is finite but of the order of ``½ log(1/ratio)`` nats in that column alone (11.5 nats at
  ``10^{-10}``), beyond the ``log n`` that a bound on ``n`` rows can show. Then, *strictly
  monotone in one column* (on at least :data:`MONOTONE_MIN_ROWS` rows, the ranks of ``Y_j``
  equal those of some ``X_i`` or their reverse: ``Y = X^3``): infinite, or finite with noise
  below the gaps between neighbouring values, which no bound on these rows can resolve either.
  A column with repeated values is not tested: a function of a discrete variable has finite MI
  (``Y = X`` with binary X gives ``log 2``). Non-monotone non-affine functions (``Y = X²``) are
  not detected.
* **Duplicated rows** (a row whose X and Y repeat an earlier row): on the held-out protocol a
  test row that copies a fit row is not held out.
* **Constant columns** (on the rows tested): they carry no information.

The affine test needs more rows than columns (it is skipped with fewer than ``p + 10`` rows
for ``p`` regressors, where any ``Y_j`` is an affine function of the rows). Its cost is that of
one least-squares fit per direction, ``O(n p²)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "EXACT_RATIO",
    "MONOTONE_MIN_ROWS",
    "NEAR_RATIO",
    "DegenerateDependence",
    "DependenceReport",
    "check_dependence",
    "duplicate_rows",
]

#: residual variance / variance below which an affine relation counts as exact (float64
#: round-off of an exact relation is ~1e-30)
EXACT_RATIO = 1e-20
#: residual variance / variance below which an affine relation counts as near-exact
NEAR_RATIO = 1e-10
#: the rank test needs this many distinct rows (with fewer, strong but finite dependence
#: matches ranks by chance)
MONOTONE_MIN_ROWS = 50
#: the affine test is skipped for more regressors than this (its cost grows as p²)
_MAX_REGRESSORS = 2000


class DegenerateDependence(ValueError):
    """The MI of the sample is infinite, or too large for its rows to resolve (the message
    names the column and the relation). No estimate is computed."""


@dataclass
class DependenceReport:
    """What :func:`check_dependence` found.

    Attributes:
        n: rows checked for duplicates.
        duplicate_rows: rows whose X and Y repeat an earlier row.
        infinite: exact relations (each a sentence naming the columns): infinite MI.
        near_exact: near-exact affine relations: finite but unresolvable MI.
        monotone: a column with the ranks of another: infinite or unresolvable MI.
        constant: constant columns (``"X[:, 2]"``) on the rows tested.
    """

    n: int
    duplicate_rows: int = 0
    infinite: list[str] = field(default_factory=list)
    near_exact: list[str] = field(default_factory=list)
    monotone: list[str] = field(default_factory=list)
    constant: list[str] = field(default_factory=list)

    def raise_if_unbounded(self, rows: int) -> None:
        """:class:`DegenerateDependence` if an exact or near-exact relation was found."""
        if self.infinite:
            raise DegenerateDependence(
                f"I(X; Y) is infinite: {self.infinite[0]}"
                + (f" (and {len(self.infinite) - 1} more such relation(s))"
                   if len(self.infinite) > 1 else "")
                + "; a continuous variable determined by the other one has infinite mutual "
                "information, and no estimator gives a finite number for it. Remove the copied "
                "or derived column(s), or add the measurement noise the data really has")
        if self.near_exact:
            raise DegenerateDependence(
                f"I(X; Y) is beyond what {rows} rows can resolve: {self.near_exact[0]}; a bound "
                f"on n rows shows at most about log n = {math.log(max(rows, 2)):.1f} nats. "
                "Remove the near-copied column(s) or add the measurement noise the data has")
        if self.monotone:
            raise DegenerateDependence(
                f"I(X; Y) is infinite, or beyond what {rows} rows can resolve: "
                f"{self.monotone[0]}; a bound on n rows shows at most about log n = "
                f"{math.log(max(rows, 2)):.1f} nats. Remove the derived column(s) or add the "
                "measurement noise the data has")

    def describe(self) -> dict[str, object]:
        """JSON-ready summary."""
        return {"duplicate_rows": self.duplicate_rows, "infinite": list(self.infinite),
                "near_exact": list(self.near_exact),
                "monotone": list(self.monotone), "constant": list(self.constant)}


def duplicate_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask ``[n]``: row ``i`` repeats (X and Y equal) an earlier row."""
    joint = np.ascontiguousarray(np.hstack([x, y]))
    _, first = np.unique(joint, axis=0, return_index=True)
    mask = np.ones(joint.shape[0], dtype=bool)
    mask[first] = False
    return mask


def _ranks(a: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(a, axis=0, kind="stable"), axis=0, kind="stable")


def _relations(target: np.ndarray, source: np.ndarray, t: str, s: str,
               report: DependenceReport) -> None:
    """Exact / near-exact relations of the columns of ``target`` on ``source`` (module
    docstring); appends sentences to ``report``."""
    m = target.shape[0]
    varying = np.ptp(source, axis=0) > 0
    if not varying.any():
        return
    distinct_t = [np.unique(target[:, j]).size == m for j in range(target.shape[1])]
    distinct_s = [np.unique(source[:, i]).size == m for i in range(source.shape[1])]
    found: set[int] = set()
    cols = source[:, varying]
    p = cols.shape[1]
    todo = [j for j in range(target.shape[1]) if distinct_t[j]]
    if todo and p <= _MAX_REGRESSORS and m >= p + 10:
        z = (cols - cols.mean(axis=0)) / _std(cols)
        design = np.hstack([z, np.ones((m, 1))])
        tgt = target[:, todo]
        tz = (tgt - tgt.mean(axis=0)) / _std(tgt)
        coef, *_ = np.linalg.lstsq(design, tz, rcond=None)
        ratio = np.mean((tz - design @ coef) ** 2, axis=0)  # tz has variance 1
        for j, r in zip(todo, ratio.tolist(), strict=True):
            if r < EXACT_RATIO:
                report.infinite.append(
                    f"{t}[:, {j}] is an exact affine function of {s} (residual variance "
                    f"{r:.1e} of its variance on {m} distinct rows, each with its own value)")
                found.add(j)
            elif r < NEAR_RATIO:
                report.near_exact.append(
                    f"{t}[:, {j}] is a near-exact affine function of {s} (residual variance "
                    f"{r:.1e} of its variance: of the order of ½·log(1/{r:.0e}) = "
                    f"{0.5 * math.log(1 / r):.0f} nats in that column alone)")
                found.add(j)
    if m < MONOTONE_MIN_ROWS or target.shape[1] * source.shape[1] > 1_000_000:
        return
    rt, rs = _ranks(target), _ranks(source)
    for j in todo:
        if j in found:
            continue
        for i in range(source.shape[1]):
            if distinct_s[i] and (np.array_equal(rt[:, j], rs[:, i])
                                  or np.array_equal(rt[:, j], m - 1 - rs[:, i])):
                report.monotone.append(
                    f"{t}[:, {j}] is a strictly monotone function of {s}[:, {i}] on all {m} "
                    "distinct rows (exactly, or up to noise smaller than the gaps between "
                    "neighbouring values)")
                break


def _std(a: np.ndarray) -> np.ndarray:
    big = np.abs(a).max(axis=0)
    big = np.where(big > 0, big, 1.0)
    return (a / big).std(axis=0) * big


def check_dependence(x: np.ndarray, y: np.ndarray,
                     rows: np.ndarray | None = None) -> DependenceReport:
    """Duplicates on all rows; constant columns and exact or near-exact relations (module
    docstring) on ``rows`` (default: all), after removing repeated rows among them.

    Args:
        x, y: float64 arrays ``[n, d_x]``, ``[n, d_y]`` (already checked: finite, 2-D).
        rows: the row indices on which relations are tested (the train rows).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    dup = duplicate_rows(x, y)
    report = DependenceReport(n=int(x.shape[0]), duplicate_rows=int(dup.sum()))
    idx = np.arange(x.shape[0]) if rows is None else np.asarray(rows)
    idx = idx[~dup[idx]]
    a, b = x[idx], y[idx]
    for name, arr in (("X", a), ("Y", b)):
        report.constant += [f"{name}[:, {j}]" for j in np.flatnonzero(np.ptp(arr, axis=0) == 0)]
    if a.shape[0] >= 3:
        _relations(b, a, "Y", "X", report)
        _relations(a, b, "X", "Y", report)
    return report
