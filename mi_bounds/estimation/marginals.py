"""A rank-based marginal transform: the estimate does not depend on how each feature is measured.

Mutual information is invariant to a strictly increasing map of each feature of X and of Y
(``I(f(X); g(Y)) = I(X; Y)`` for invertible ``f``, ``g``; Cover & Thomas, Sec. 2.8 and 8.6). An
estimator sees the numbers, not the law, so a critic trained on ``x`` and one trained on
``exp(2x)`` or ``x³`` reach different values in finite samples: the z-score / asinh map of
:class:`~mi_bounds.estimation.tasks.Standardizer` is affine in the bulk, so it passes the change
of units on. The *empirical copula* removes it: each feature is replaced by the normal quantile
of its rank among the train rows,

    z = Φ⁻¹(F̂(x)),   F̂(u_j) = r_j / (n + 1)   at the sorted distinct train values u_j,

where ``r_j`` is the mid-rank of ``u_j`` (tied train values share the mean of their ranks) and
``n`` the number of train rows. ``F̂`` depends on the train values only through their order, so
every strictly increasing re-measurement of a feature gives the same ``z`` on the train rows,
exactly (Genest, Ghoudi & Rivest 1995, Biometrika 82(3): the normal-scores, or "van der Waerden",
transform of a pseudo-observation). Rows that were not used to fit the map (validation and test
rows) are mapped by linear interpolation of ``z`` between the two train values around them — the
same ``z`` as a train row with the same value, so a test row that copies a train row maps alike —
and beyond the train range to ``Φ⁻¹((n + ½)/(n + 1))`` and its negative (the rank half a step
beyond the extreme train row). Interpolation between knots is linear in the feature's own units, so
a re-measurement that is not affine between two adjacent train values can move a test row within
that interval of ranks: the map is invariant *up to one rank step* on test rows (and exactly on
train rows). With a few thousand train rows that is ≈ 1/n in probability, well inside the
estimators' noise (docs/RESULTS.md §4.8 measures it).

The map is strictly increasing on the train range and constant outside it, so it is not
invertible beyond the extreme train rows: ``I`` computed after it is the information of the
clipped features, which differs from ``I(X; Y)`` only through the ≈ 2/n of rows outside the range.
A constant feature (one distinct train value) maps to 0.

Used by the held-out protocol (:mod:`mi_bounds.estimation.heldout`, ``marginals="rank"``) and by
KSG (:func:`mi_bounds.estimation.ksg.ksg_mi`, ``marginals="rank"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtri

__all__ = ["DEFAULT_MARGINALS", "MARGINALS", "RankGaussian", "rank_gaussian_knots"]

#: the values of ``marginals``: "standard" (z-score, asinh for heavy tails:
#: :class:`~mi_bounds.estimation.tasks.Standardizer`) or "rank" (:class:`RankGaussian`)
MARGINALS = ("standard", "rank")
#: the default since 2026-12-07: on bmi's 40 tasks (seed 0) "rank" was within bmi's error + 0.05
#: nats as often as "standard" or more for every estimator kind, at no larger median error
#: (docs/RESULTS.md §4.7), and it is invariant by construction (§4.8)
DEFAULT_MARGINALS = "rank"


def rank_gaussian_knots(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Knots of the normal-scores map of one feature: ``(u, z, z_tail)``.

    Args:
        a: the feature's train values ``[n]`` (finite).

    Returns:
        ``u [m]``: the sorted distinct values; ``z [m]``: ``Φ⁻¹(r_j / (n + 1))`` with ``r_j``
        the mid-rank of ``u_j``; ``z_tail``: ``Φ⁻¹((n + ½) / (n + 1))``, the value beyond the
        largest train value (its negative below the smallest).
    """
    a = np.asarray(a, dtype=np.float64)
    n = a.size
    u, counts = np.unique(a, return_counts=True)  # sorted distinct values
    last_rank = np.cumsum(counts)  # rank of the last copy of u_j
    mid_rank = last_rank - (counts - 1) / 2.0  # mean of the ranks of the copies
    z = ndtri(mid_rank / (n + 1.0))
    if u.size == 1:  # a constant feature
        z = np.zeros(1)
    z_tail = float(ndtri((n + 0.5) / (n + 1.0)))
    return u, z, z_tail


def _interp_numpy(a: np.ndarray, u: np.ndarray, z: np.ndarray, tail: float) -> np.ndarray:
    if u.size == 1:
        return np.zeros_like(a)
    out = np.interp(a, u, z)
    return np.where(a > u[-1], tail, np.where(a < u[0], -tail, out))


def _interp_torch(a: torch.Tensor, u: np.ndarray, z: np.ndarray, tail: float) -> torch.Tensor:
    if u.size == 1:
        return torch.zeros_like(a)
    ut = torch.as_tensor(u, dtype=torch.float64, device=a.device)
    zt = torch.as_tensor(z, dtype=torch.float64, device=a.device)
    v = a.to(torch.float64)
    hi = torch.searchsorted(ut, v.contiguous()).clamp(1, u.size - 1)  # u[hi-1] < v <= u[hi]
    u0, u1, z0, z1 = ut[hi - 1], ut[hi], zt[hi - 1], zt[hi]
    w = ((v - u0) / (u1 - u0)).clamp(0.0, 1.0)
    out = z0 + w * (z1 - z0)
    out = torch.where(v > ut[-1], torch.full_like(out, tail), out)
    out = torch.where(v < ut[0], torch.full_like(out, -tail), out)
    return out.to(a.dtype)


@dataclass(frozen=True, eq=False)
class RankGaussian:
    """Per-feature normal scores of the train-row ranks (module docstring), for X and Y.

    The same interface as :class:`~mi_bounds.estimation.tasks.Standardizer`: :meth:`fit` on
    train rows, ``map(x, y)`` on numpy arrays, :meth:`map_torch` on tensors, :meth:`describe`.

    Attributes:
        x_knots, y_knots: per feature, ``(u, z, z_tail)`` of :func:`rank_gaussian_knots`.
        n_fit: the number of train rows the map was fitted on.
    """

    x_knots: tuple[tuple[np.ndarray, np.ndarray, float], ...]
    y_knots: tuple[tuple[np.ndarray, np.ndarray, float], ...]
    n_fit: int

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> RankGaussian:
        """Fit on train rows ``x [n, d_x]``, ``y [n, d_y]`` (finite; float64 is used)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
            raise ValueError(f"x and y must be [n, d] arrays with the same n >= 2, got shapes "
                             f"{x.shape} and {y.shape}")
        return cls(tuple(rank_gaussian_knots(x[:, j]) for j in range(x.shape[1])),
                   tuple(rank_gaussian_knots(y[:, j]) for j in range(y.shape[1])), x.shape[0])

    @staticmethod
    def _map(a: np.ndarray, knots: tuple[tuple[np.ndarray, np.ndarray, float], ...]) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != len(knots):
            raise ValueError(f"expected an [n, {len(knots)}] array, got shape {a.shape}")
        return np.stack([_interp_numpy(a[:, j], *k) for j, k in enumerate(knots)], axis=1)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mapped copies of ``x`` and ``y`` (float64)."""
        return self._map(x, self.x_knots), self._map(y, self.y_knots)

    def map_torch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same map on tensors ``[..., d]`` (computed in float64, returned in their dtype)."""
        def one(a: torch.Tensor, knots: tuple) -> torch.Tensor:
            if a.shape[-1] != len(knots):
                raise ValueError(f"expected [..., {len(knots)}] inputs, got shape "
                                 f"{tuple(a.shape)}")
            return torch.stack([_interp_torch(a[..., j], *k) for j, k in enumerate(knots)],
                               dim=-1)

        return one(x, self.x_knots), one(y, self.y_knots)

    def describe(self) -> dict[str, object]:
        """JSON-ready summary: the transform, the rows it was fitted on, tied train values."""
        def ties(knots: tuple) -> list[int]:
            return [int(self.n_fit - k[0].size) for k in knots]

        return {"marginals": "rank", "n_fit": self.n_fit,
                "x_tied_rows": ties(self.x_knots), "y_tied_rows": ties(self.y_knots)}
