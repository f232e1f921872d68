"""Sampling tasks for neural MI estimation, each with its exact mutual information where known.

* :class:`GaussianTask`: the correlated-Gaussian benchmark of Poole et al. (ICML 2019, Sec. 6)
  and Song & Ermon (ICLR 2020, Sec. 6.1): ``x ~ N(0, I_d)``, ``ε ~ N(0, I_d)``,
  ``y = ρ x + sqrt(1 - ρ²) ε``, so that ``I(X; Y) = -(d/2) log(1 - ρ²)``; with ``cubic=True``
  the samples are ``(x, y³)``, which leaves the MI unchanged (``y ↦ y³`` is invertible) but
  makes the optimal critic harder to represent.
* :func:`staircase` and :class:`StaircaseTask`: the same task with the true MI stepping through
  levels (2, 4, 6, 8, 10 nats by default), a fixed number of training steps per level.
* :class:`ArrayTask` and :func:`load_npz`: external samples ``X [n, d_x]``, ``Y [n, d_y]`` (and
  an optional ``true_mi``) from an ``.npz`` file, served as random mini-batches.

A task is a callable ``task(step, batch_size, generator) -> (x [K, d_x], y [K, d_y])`` with a
method ``true_mi(step) -> float | None`` and attributes ``x_dim``, ``y_dim``: the interface the
trainer of :mod:`mi_bounds.estimate` uses (:class:`Task`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from mi_bounds._validation import check_positive

__all__ = [
    "ArrayTask",
    "GaussianTask",
    "StaircaseTask",
    "Task",
    "load_npz",
    "mi_from_rho",
    "rho_from_mi",
    "staircase",
]


@runtime_checkable
class Task(Protocol):
    """What the trainer needs from a source of joint samples."""

    x_dim: int
    y_dim: int

    def __call__(
        self, step: int, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:  # (K, x_dim), (K, y_dim)
        ...

    def true_mi(self, step: int) -> float | None: ...


def rho_from_mi(mi: float, dim: int) -> float:
    r"""Correlation ρ of the d-dimensional Gaussian task with mutual information ``mi`` nats.

    Inverts :math:`I = -\frac{d}{2}\log(1-\rho^2)`: :math:`\rho = \sqrt{1 - e^{-2I/d}}`
    (computed as ``sqrt(-expm1(-2 I / d))``).
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an int >= 1, got {dim!r}")
    if isinstance(mi, bool) or not isinstance(mi, (int, float)) or not math.isfinite(mi) or mi < 0:
        raise ValueError(f"mi must be a finite number >= 0, got {mi!r}")
    return math.sqrt(-math.expm1(-2.0 * float(mi) / dim))


def mi_from_rho(rho: float, dim: int) -> float:
    r"""Mutual information (nats) of the Gaussian task: :math:`I = -\frac{d}{2}\log(1-\rho^2)`."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an int >= 1, got {dim!r}")
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not -1.0 < rho < 1.0:
        raise ValueError(f"rho must be a number in (-1, 1), got {rho!r}")
    return -0.5 * dim * math.log1p(-float(rho) ** 2)


def _sample_gaussian(
    dim: int, rho: float, cubic: bool, batch_size: int, generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    device = generator.device
    x = torch.randn(batch_size, dim, generator=generator, device=device, dtype=dtype)
    eps = torch.randn(batch_size, dim, generator=generator, device=device, dtype=dtype)
    y = rho * x + math.sqrt(1.0 - rho * rho) * eps  # (K, d)
    if cubic:
        y = y**3
    return x, y


def _check_batch(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"batch_size must be an int >= 2, got {batch_size!r}")


@dataclass(frozen=True)
class GaussianTask:
    """Correlated Gaussians at a target MI: ``x ~ N(0, I_d)``, ``y = ρx + sqrt(1-ρ²)ε``.

    Args:
        mi: the true mutual information in nats (ρ follows from :func:`rho_from_mi`).
        dim: the dimension ``d`` of x and y (20 in the staircase experiment).
        cubic: report ``y³`` instead of ``y`` (same MI; Poole et al. 2019, Fig. 2 right).
    """

    mi: float = 2.0
    dim: int = 20
    cubic: bool = False

    def __post_init__(self) -> None:
        rho_from_mi(self.mi, self.dim)  # validates mi and dim
        if not isinstance(self.cubic, bool):
            raise TypeError(f"cubic must be a bool, got {type(self.cubic).__name__}")

    @property
    def x_dim(self) -> int:
        return self.dim

    @property
    def y_dim(self) -> int:
        return self.dim

    @property
    def rho(self) -> float:
        """The per-coordinate correlation ρ."""
        return rho_from_mi(self.mi, self.dim)

    def true_mi(self, step: int = 0) -> float:
        """The exact MI, ``-(d/2) log(1 - ρ²)`` (the same at every step)."""
        return float(self.mi)

    def __call__(
        self, step: int, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh batch of ``batch_size`` joint samples on ``generator``'s device."""
        _check_batch(batch_size)
        return _sample_gaussian(self.dim, self.rho, self.cubic, batch_size, generator)


def staircase(
    levels: Sequence[float] = (2.0, 4.0, 6.0, 8.0, 10.0), steps_per_level: int = 4000
) -> np.ndarray:
    """The MI schedule of the staircase experiment: ``levels[k]`` for ``steps_per_level`` steps.

    Returns:
        float64 array of length ``len(levels) * steps_per_level``.
    """
    if (
        isinstance(steps_per_level, bool)
        or not isinstance(steps_per_level, int)
        or steps_per_level < 1
    ):
        raise ValueError(f"steps_per_level must be an int >= 1, got {steps_per_level!r}")
    lv = np.asarray(levels, dtype=np.float64)
    if lv.ndim != 1 or lv.size == 0 or not np.all(np.isfinite(lv)) or np.any(lv < 0):
        raise ValueError(
            f"levels must be a non-empty sequence of finite numbers >= 0, got {levels!r}"
        )
    return np.repeat(lv, steps_per_level)


@dataclass(frozen=True)
class StaircaseTask:
    """The Gaussian task whose true MI follows :func:`staircase`: one level per block of steps.

    Steps past the end of the schedule stay on the last level. A fresh batch is drawn at every
    step (Poole et al. 2019; Song & Ermon 2020: "4,000 steps per level").
    """

    levels: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0, 10.0)
    steps_per_level: int = 4000
    dim: int = 20
    cubic: bool = False

    def __post_init__(self) -> None:
        staircase(self.levels, self.steps_per_level)
        for mi in self.levels:
            rho_from_mi(float(mi), self.dim)
        object.__setattr__(self, "levels", tuple(float(v) for v in self.levels))

    @property
    def x_dim(self) -> int:
        return self.dim

    @property
    def y_dim(self) -> int:
        return self.dim

    @property
    def total_steps(self) -> int:
        return len(self.levels) * self.steps_per_level

    def level(self, step: int) -> int:
        """Index of the level that ``step`` (0-based) belongs to."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        return min(int(step) // self.steps_per_level, len(self.levels) - 1)

    def true_mi(self, step: int) -> float:
        return self.levels[self.level(step)]

    def __call__(
        self, step: int, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(batch_size)
        rho = rho_from_mi(self.true_mi(step), self.dim)
        return _sample_gaussian(self.dim, rho, self.cubic, batch_size, generator)


class ArrayTask:
    """Joint samples from arrays ``X [n, d_x]``, ``Y [n, d_y]``, served as random mini-batches.

    Each batch is a uniformly random subset of rows (without replacement within the batch), drawn
    with the trainer's generator, so runs are reproducible from the seed.

    Args:
        x, y: float arrays (numpy or torch) with the same number of rows ``n ≥ 2``; 1-D arrays
            are read as one feature per sample.
        true_mi: the known MI in nats, if any (used for reporting bias only).
    """

    def __init__(self, x: object, y: object, true_mi: float | None = None) -> None:
        self.x = _as_samples(x, "X")
        self.y = _as_samples(y, "Y")
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                "X and Y must have the same number of rows, got "
                f"{self.x.shape[0]} and {self.y.shape[0]}"
            )
        if self.x.shape[0] < 2:
            raise ValueError(f"X and Y need at least 2 samples, got {self.x.shape[0]}")
        if true_mi is not None:
            if isinstance(true_mi, bool) or not isinstance(true_mi, (int, float)) or not (
                math.isfinite(true_mi) and true_mi >= 0
            ):
                raise ValueError(f"true_mi must be a finite number >= 0 or None, got {true_mi!r}")
            true_mi = float(true_mi)
        self._true_mi = true_mi
        self._device_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def x_dim(self) -> int:
        return int(self.x.shape[1])

    @property
    def y_dim(self) -> int:
        return int(self.y.shape[1])

    def true_mi(self, step: int = 0) -> float | None:
        return self._true_mi

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._device_cache:
            self._device_cache[device] = (self.x.to(device), self.y.to(device))
        return self._device_cache[device]

    def __call__(
        self, step: int, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(batch_size)
        if batch_size > self.n:
            raise ValueError(f"batch_size ({batch_size}) exceeds the number of samples ({self.n})")
        device = generator.device
        idx = torch.randperm(self.n, generator=generator, device=device)[:batch_size]
        x, y = self._on(device)
        return x[idx], y[idx]


def _as_samples(a: object, name: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(a).__name__}")
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be numeric, got dtype {a.dtype}")
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape [n, d] (or [n]), got {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite (it holds NaN or inf)")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def load_npz(path: str | Path) -> ArrayTask:
    """Load samples from an ``.npz`` file with arrays ``X``, ``Y`` and optional scalar ``true_mi``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a required array is missing, shapes disagree, values are not finite, or
            ``true_mi`` is not a non-negative scalar.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such .npz file: {path}")
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in ("X", "Y") if k not in data.files]
        if missing:
            raise ValueError(
                f"{path} must hold arrays 'X' and 'Y' (missing: {', '.join(missing)}; "
                f"found: {', '.join(data.files) or 'nothing'})"
            )
        true_mi = None
        if "true_mi" in data.files:
            t = np.asarray(data["true_mi"])
            if t.size != 1 or t.dtype.kind not in "fiu":
                raise ValueError(f"true_mi in {path} must be a numeric scalar, got shape {t.shape}")
            true_mi = float(t.reshape(()))
        return ArrayTask(data["X"], data["Y"], true_mi=true_mi)


def check_mi_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """Validate a sequence of MI levels (finite, > 0) and return it as a tuple of floats."""
    out = tuple(check_positive(v, "levels") for v in levels)
    if not out:
        raise ValueError("levels must not be empty")
    return out
