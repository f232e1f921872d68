r"""The Kraskov–Stögbauer–Grassberger (KSG) k-nearest-neighbour estimator of I(X; Y).

Estimator 1 of Kraskov, Stögbauer & Grassberger, "Estimating mutual information", Phys. Rev. E
69, 066138 (2004), Eq. (8):

.. math::
    \hat I(X; Y) = \psi(k) + \psi(N) - \frac1N \sum_{i=1}^N
        \big[\psi(n_x(i) + 1) + \psi(n_y(i) + 1)\big],

where, with the max-norm ``‖(x, y)‖ = max(‖x‖_∞, ‖y‖_∞)`` in the joint space, ``ε(i)`` is the
distance from point ``i`` to its ``k``-th nearest neighbour and ``n_x(i)`` (``n_y(i)``) counts
the points ``j ≠ i`` with ``‖x_j − x_i‖_∞ < ε(i)`` (strictly; likewise in Y). ψ is the digamma
function. Neighbours are found with :class:`scipy.spatial.cKDTree` (``p = ∞``), so the cost is
that of ``N`` k-NN queries and ``2N`` range counts rather than ``N²`` distances.

It is a non-neural baseline: nothing is trained, so nothing is held out, and it uses every row.
It is not a bound: it can be slightly negative on independent data (it is not clipped at 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma

from mi_bounds.estimation.degenerate import check_dependence
from mi_bounds.estimation.marginals import DEFAULT_MARGINALS, MARGINALS, RankGaussian
from mi_bounds.estimation.tasks import Standardizer, check_samples

__all__ = ["KSG_MAX_K_FRACTION", "KSGEstimate", "ksg_mi", "ksg_pointwise"]

#: a KSG estimate with k above this fraction of the rows is flagged (Kraskov et al. use k from
#: 1 to 10 on thousands of points)
KSG_MAX_K_FRACTION = 0.1


def ksg_pointwise(x: object, y: object, *, k: int = 3, standardize: bool = True,
                  marginals: str = DEFAULT_MARGINALS) -> np.ndarray:
    """Per-point KSG terms ``ψ(k) + ψ(N) − ψ(n_x(i) + 1) − ψ(n_y(i) + 1)``, shape ``[N]``.

    Their mean is the KSG estimate (:func:`ksg_mi`).

    Args:
        x, y: paired samples ``[N, d_x]``, ``[N, d_y]`` (checked by
            :func:`~mi_bounds.estimation.tasks.check_samples`).
        k: the neighbour order, an int in ``[1, N - 1]``.
        standardize: scale every feature to mean 0 and standard deviation 1 first (the max-norm
            compares coordinates, so their scales matter; MI does not change).
        marginals: with ``standardize``, ``"rank"`` (the default: normal scores of the ranks,
            fitted on all N rows, :class:`~mi_bounds.estimation.marginals.RankGaussian`; the
            estimate is then the same for every increasing re-measurement of a feature) or
            ``"standard"`` (z-scores; asinh for heavy tails).

    Raises:
        ValueError: bad arrays, a bad ``k``, or repeated points (a ``k``-th neighbour at
            distance 0: the estimator assumes continuous data; add small noise or raise ``k``).
    """
    xs, ys = check_samples(x, y)
    n = xs.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n - 1:
        raise ValueError(f"k must be an int in [1, N - 1] = [1, {n - 1}], got {k!r}")
    if not isinstance(standardize, bool):
        raise TypeError(f"standardize must be a bool, got {type(standardize).__name__}")
    if marginals not in MARGINALS:
        raise ValueError(f"marginals must be one of {', '.join(MARGINALS)}, got {marginals!r}")
    report = check_dependence(xs, ys)
    if report.duplicate_rows:
        raise ValueError(
            f"{report.duplicate_rows} duplicate rows among {n} (repeated rows: X and Y repeat an "
            "earlier row): KSG needs continuous data (remove them, or add small noise)")
    report.raise_if_unbounded(n)
    if standardize:
        xs, ys = (RankGaussian if marginals == "rank" else Standardizer).fit(xs, ys)(xs, ys)
    joint = np.hstack([xs, ys])
    # k + 1 neighbours: the point itself (distance 0) comes first.
    dist, _ = cKDTree(joint).query(joint, k=int(k) + 1, p=np.inf)
    eps = dist[:, -1]
    if np.any(eps == 0):
        raise ValueError(
            f"{int(np.sum(eps == 0))} point(s) have their k-th neighbour (k={k}) at distance 0: "
            "X, Y hold repeated rows; KSG needs continuous data (add small noise or raise k)"
        )
    radius = np.nextafter(eps, 0)  # counts with distance < eps (query_ball_point counts <=)
    n_x = cKDTree(xs).query_ball_point(xs, radius, p=np.inf, return_length=True) - 1
    n_y = cKDTree(ys).query_ball_point(ys, radius, p=np.inf, return_length=True) - 1
    return digamma(k) + digamma(n) - digamma(n_x + 1) - digamma(n_y + 1)


@dataclass(frozen=True)
class KSGEstimate:
    """A KSG estimate with its approximate standard error.

    Attributes:
        estimate: the KSG estimate in nats (mean of :func:`ksg_pointwise`).
        stderr: ``std(terms) / sqrt(N)`` of the per-point terms. Approximate: the terms share
            neighbours, so they are not independent; read it as the order of the error.
        n: number of points.
        k: neighbour order.
        flags: reasons not to trust the estimate (empty: none): ``k > n / 10``
            (:data:`KSG_MAX_K_FRACTION`), where every neighbourhood spans a sizeable part of the
            sample and the estimate is pulled toward 0 whatever the dependence.
    """

    estimate: float
    stderr: float
    n: int
    k: int
    flags: tuple[str, ...] = ()

    @property
    def reliable(self) -> bool:
        return not self.flags


def ksg_mi(x: object, y: object, *, k: int = 3, standardize: bool = True,
           marginals: str = DEFAULT_MARGINALS) -> KSGEstimate:
    """KSG estimator 1 of I(X; Y) in nats (module docstring; arguments of
    :func:`ksg_pointwise`). Kraskov et al. (2004) use k between 1 and 10 (small ``k``: less
    bias, more variance); the default is 3.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(2000, 1))
        >>> y = 0.9 * x + np.sqrt(1 - 0.81) * rng.normal(size=(2000, 1))
        >>> round(ksg_mi(x, y).estimate, 1)  # exact: -0.5 log(1 - 0.81) = 0.830
        0.8
    """
    terms = ksg_pointwise(x, y, k=k, standardize=standardize, marginals=marginals)
    n = terms.size
    flags = ((f"k = {k} exceeds n / 10 (n = {n}): the neighbourhoods span a sizeable part of "
              "the sample and pull the estimate toward 0; use k <= 10 and n >= 10 k",)
             if k > KSG_MAX_K_FRACTION * n else ())
    return KSGEstimate(float(terms.mean()), float(terms.std(ddof=1) / math.sqrt(n)), n, int(k),
                       flags)
