"""Sampling tasks for neural MI estimation, each with its exact mutual information where known.

* :class:`GaussianTask`: the correlated-Gaussian benchmark of Poole et al. (ICML 2019, Sec. 6)
  and Song & Ermon (ICLR 2020, Sec. 6.1): ``x ~ N(0, I_d)``, ``ε ~ N(0, I_d)``,
  ``y = ρ x + sqrt(1 - ρ²) ε``, so that ``I(X; Y) = -(d/2) log(1 - ρ²)``; with ``cubic=True``
  the samples are ``(x, y³)``, which leaves the MI unchanged (``y ↦ y³`` is invertible) but
  makes the optimal critic harder to represent.
* :class:`StudentTask`: the multivariate Student-t with ``ν`` degrees of freedom and the same
  correlation between X and Y (Czyż et al., NeurIPS 2023, and their package ``bmi``): heavy
  tails, and an MI that is the Gaussian one plus :func:`student_t_mi_correction` (> 0 even at
  zero correlation).
* :func:`staircase` and :class:`StaircaseTask`: the same task with the true MI stepping through
  levels (2, 4, 6, 8, 10 nats by default), a fixed number of training steps per level.
* :class:`ArrayTask` and :func:`load_npz`: external samples ``X [n, d_x]``, ``Y [n, d_y]`` (and
  an optional ``true_mi``) from an ``.npz`` file, served as random mini-batches.
* :func:`split_rows` and :class:`Standardizer`: the seeded train/validation/test split of a finite
  sample and the per-feature standardisation with train-row statistics that
  :mod:`mi_bounds.estimation.heldout` estimates with (docs/THEORY.md §4).

A task is a callable ``task(step, batch_size, generator) -> (x [K, d_x], y [K, d_y])`` with a
method ``true_mi(step) -> float | None`` and attributes ``x_dim``, ``y_dim``: the interface the
trainer of :mod:`mi_bounds.estimation.training` uses (:class:`Task`).

Why one module: every sampler and the finite sample implement the one :class:`Task` interface,
and the split and standardisation are what turn a finite sample into such a task; the module is
long because each task documents its exact MI and validates its arguments.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from scipy.special import digamma, gammaln

from mi_bounds._validation import check_positive

__all__ = [
    "HEAVY_TAIL_Z",
    "MAX_MI_PER_DIM",
    "ArrayTask",
    "GaussianTask",
    "RowSplit",
    "StaircaseTask",
    "Standardizer",
    "StudentTask",
    "Task",
    "check_samples",
    "load_npz",
    "mi_from_rho",
    "rho_from_mi",
    "split_rows",
    "staircase",
    "student_t_mi_correction",
]

#: Largest MI per coordinate (nats) that the Gaussian tasks sample. Beyond it the noise standard
#: deviation ``σ = exp(-mi/dim)`` (``1 - ρ² = σ²``) falls below ``e^-9 ≈ 1.2e-4`` and float32
#: rounding of ``y`` starts to eat the dependence: at ``mi/dim = 20`` (``mi=20, dim=1``) ``σ =
#: 2e-9`` is below float32's spacing near 1 (6e-8), so ``y`` rounds to ``ρx`` and the samples
#: carry far less than the stated MI. At the limit the rounding error (≤ 2^-24·|y|) adds a noise
#: variance at most ``2^-48 / σ² ≈ 2e-7`` of the true one, so the MI of the float32 samples is
#: the stated MI to ~1e-7 nats per coordinate.
MAX_MI_PER_DIM = 9.0


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


def _check_gaussian_mi(mi: float, dim: int, name: str = "mi") -> float:
    """Validate a target MI of the Gaussian task; return ``ρ`` (see :data:`MAX_MI_PER_DIM`)."""
    rho = rho_from_mi(mi, dim)  # validates mi >= 0 finite and dim >= 1
    if mi / dim > MAX_MI_PER_DIM:
        raise ValueError(
            f"{name} / dim must be at most {MAX_MI_PER_DIM:g} nats per coordinate, got "
            f"{name}={mi:g}, dim={dim} ({mi / dim:.3g} per coordinate): the noise std "
            f"exp(-{name}/dim) = {math.exp(-mi / dim):.2g} is lost to float32 rounding, so the "
            f"samples would not carry the stated MI; use dim >= {math.ceil(mi / MAX_MI_PER_DIM)}"
        )
    return rho


def _sample_gaussian(
    dim: int, mi: float, cubic: bool, batch_size: int, generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    device = generator.device
    rho = rho_from_mi(mi, dim)
    sigma = math.exp(-mi / dim)  # sqrt(1 - rho²), exactly: 1 - rho² = exp(-2 mi / dim)
    x = torch.randn(batch_size, dim, generator=generator, device=device, dtype=dtype)
    eps = torch.randn(batch_size, dim, generator=generator, device=device, dtype=dtype)
    y = rho * x + sigma * eps  # (K, d)
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
        mi: the true mutual information in nats (ρ follows from :func:`rho_from_mi`); at most
            :data:`MAX_MI_PER_DIM` ``· dim`` (beyond it float32 samples lose the dependence, and
            a ``ValueError`` says so).
        dim: the dimension ``d`` of x and y (20 in the staircase experiment).
        cubic: report ``y³`` instead of ``y`` (same MI; Poole et al. 2019, Fig. 2 right).
    """

    mi: float = 2.0
    dim: int = 20
    cubic: bool = False

    def __post_init__(self) -> None:
        _check_gaussian_mi(self.mi, self.dim)
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
        return _sample_gaussian(self.dim, float(self.mi), self.cubic, batch_size, generator)


def student_t_mi_correction(df: float, x_dim: int, y_dim: int) -> float:
    r"""The MI of a multivariate Student-t beyond the Gaussian MI of its scale matrix, in nats.

    ``(X, Y)`` is ``t_ν(0, Σ)`` in ``d = d_x + d_y`` dimensions; its marginals are ``t_ν`` with
    the diagonal blocks ``Σ_x``, ``Σ_y`` (same ``ν``). The entropy of a ``k``-dimensional
    ``t_ν(0, Σ)`` is

    .. math:: h_k = \tfrac12 \log\det Σ + \log\frac{Γ(ν/2)\,(νπ)^{k/2}}{Γ((ν+k)/2)}
              + \frac{ν+k}{2}\Big[ψ\Big(\frac{ν+k}{2}\Big) - ψ\Big(\frac{ν}{2}\Big)\Big],

    so ``I = h_{d_x} + h_{d_y} - h_d = I_Gauss(Σ) + c``, ``I_Gauss(Σ) = ½ log(det Σ_x det Σ_y /
    det Σ)`` (the MI of ``N(0, Σ)``), and, the ``(νπ)^{k/2}`` factors cancelling and the
    ``ψ(ν/2)`` terms summing to ``-(ν/2) ψ(ν/2)``,

    .. math:: c(ν, d_x, d_y) = \log Γ\Big(\frac ν2\Big) + \log Γ\Big(\frac{ν+d}{2}\Big)
              - \log Γ\Big(\frac{ν+d_x}{2}\Big) - \log Γ\Big(\frac{ν+d_y}{2}\Big)
              - \frac ν2 ψ\Big(\frac ν2\Big) + \frac{ν+d_x}{2} ψ\Big(\frac{ν+d_x}{2}\Big)
              + \frac{ν+d_y}{2} ψ\Big(\frac{ν+d_y}{2}\Big) - \frac{ν+d}{2} ψ\Big(\frac{ν+d}{2}\Big)

    (the entropy: Arellano-Valle, Contreras-Reyes & Genton, "Shannon Entropy and Mutual
    Information for Multivariate Skew-Elliptical Distributions", Scand. J. Stat. 40, 2013,
    Eq. 7; the decomposition and the tasks: Czyż et al., "Beyond Normal: On the Evaluation of
    Mutual Information Estimators", NeurIPS 2023, and their package ``bmi``,
    ``SplitStudentT.mi_correction_function``).
    ``c > 0`` for every finite ``ν`` (X and Y share the one chi-square scale, so they are
    dependent even when ``Σ`` is block-diagonal) and ``c → 0`` as ``ν → ∞`` (the Gaussian limit):
    ``c(1, 1, 1) = 0.2242``, ``c(5, 3, 3) = 0.0890``.

    Raises:
        ValueError: ``df`` not a finite number > 0, or a dimension not an int >= 1.
    """
    nu = check_positive(df, "df")
    for name, k in (("x_dim", x_dim), ("y_dim", y_dim)):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"{name} must be an int >= 1, got {k!r}")

    def term(k: int) -> float:  # log Γ((ν+k)/2) - ((ν+k)/2) ψ((ν+k)/2)
        a = (nu + k) / 2
        return float(gammaln(a) - a * digamma(a))

    return term(0) + term(x_dim + y_dim) - term(x_dim) - term(y_dim)


@dataclass(frozen=True)
class StudentTask:
    """Multivariate Student-t at a target MI: ``(x, y) = (x₀, y₀) · sqrt(ν / W)``.

    ``(x₀, y₀)`` is a sample of the Gaussian task (``x₀ ~ N(0, I_d)``, ``y₀ = ρ x₀ +
    sqrt(1-ρ²) ε``) and ``W ~ χ²_ν`` one draw per row, shared by ``x`` and ``y`` (drawn as
    ``2·Gamma(ν/2)``); so ``(x, y) ~ t_ν(0, Σ)``, ``Σ = [[I, ρI], [ρI, I]]``, the
    ``student-identity`` tasks of Czyż et al. (NeurIPS 2023). Its MI is
    ``-(d/2) log(1-ρ²) + c(ν, d, d)`` (:func:`student_t_mi_correction`); ``ρ`` is chosen so
    that this is ``mi``.

    Args:
        mi: the true mutual information in nats; at least ``c(ν, d, d)``, the MI at ``ρ = 0``
            (a ``ValueError`` says so), and the Gaussian part ``mi - c`` at most
            :data:`MAX_MI_PER_DIM` ``· dim``.
        dim: the dimension ``d`` of x and y.
        df: the degrees of freedom ``ν > 0`` (heavier tails for smaller ``ν``; no variance for
            ``ν ≤ 2``; the Gaussian task as ``ν → ∞``).
    """

    mi: float = 2.0
    dim: int = 20
    df: float = 5.0

    def __post_init__(self) -> None:
        floor = student_t_mi_correction(self.df, self.dim, self.dim)  # validates df and dim
        if isinstance(self.mi, bool) or not isinstance(self.mi, (int, float)) or not (
            math.isfinite(self.mi) and self.mi >= floor
        ):
            raise ValueError(
                f"mi must be a finite number >= {floor:.6g} nats, the MI of the Student-t "
                f"with df={self.df:g} and dim={self.dim} at zero correlation, got {self.mi!r}")
        _check_gaussian_mi(self.gaussian_mi, self.dim, "mi - correction")

    @property
    def x_dim(self) -> int:
        return self.dim

    @property
    def y_dim(self) -> int:
        return self.dim

    @property
    def correction(self) -> float:
        """``c(ν, d, d)``: the MI at zero correlation (:func:`student_t_mi_correction`)."""
        return student_t_mi_correction(self.df, self.dim, self.dim)

    @property
    def gaussian_mi(self) -> float:
        """``mi - c``: the MI of the Gaussian with the same correlation, ``-(d/2) log(1-ρ²)``."""
        return max(0.0, float(self.mi) - self.correction)

    @property
    def rho(self) -> float:
        """The per-coordinate correlation ρ of the scale matrix."""
        return rho_from_mi(self.gaussian_mi, self.dim)

    def true_mi(self, step: int = 0) -> float:
        """The exact MI (the same at every step)."""
        return float(self.mi)

    def __call__(
        self, step: int, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh batch of ``batch_size`` joint samples on ``generator``'s device."""
        _check_batch(batch_size)
        x, y = _sample_gaussian(self.dim, self.gaussian_mi, False, batch_size, generator)
        shape = torch.full((batch_size, 1), float(self.df) / 2, dtype=torch.float64,
                           device=x.device)
        half_w = torch._standard_gamma(shape, generator=generator)  # W / 2, W ~ chi²_ν
        scale = torch.sqrt(float(self.df) / (2.0 * half_w)).to(x.dtype)
        return x * scale, y * scale


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
            _check_gaussian_mi(float(mi), self.dim, "levels")
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
        return _sample_gaussian(self.dim, self.true_mi(step), self.cubic, batch_size, generator)


class ArrayTask:
    """Joint samples from arrays ``X [n, d_x]``, ``Y [n, d_y]``, served as random mini-batches.

    Each batch is a uniformly random subset of rows (without replacement within the batch), drawn
    with the trainer's generator, so runs are reproducible from the seed. The rows are validated
    by :func:`check_samples` and stored as float32.

    A finite sample is *not* a source of fresh batches: a critic trained on these rows must be
    scored on other rows. :func:`mi_bounds.estimation.estimate_mi` therefore estimates on an
    ``ArrayTask`` by the held-out protocol of :mod:`mi_bounds.estimation.heldout` (split,
    standardise, select on validation rows, report on test rows), and
    :func:`mi_bounds.estimation.training.train` refuses one.

    Args:
        x, y: float arrays (numpy or torch) of shape ``[n, d]`` with the same number of rows
            ``n ≥ 2`` (see :func:`check_samples`).
        true_mi: the known MI in nats, if any (used for reporting bias only).
    """

    def __init__(self, x: object, y: object, true_mi: float | None = None) -> None:
        #: the validated rows as float64 arrays (what the held-out protocol splits and
        #: standardises before anything is rounded to float32)
        self.x_array, self.y_array = check_samples(x, y)
        self.x = torch.from_numpy(self.x_array.astype(np.float32))
        self.y = torch.from_numpy(self.y_array.astype(np.float32))
        if true_mi is not None:
            real = isinstance(true_mi, (int, float, np.number)) and not isinstance(true_mi, bool)
            if not (real and math.isfinite(true_mi) and true_mi >= 0):
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


_F32_MAX = float(np.finfo(np.float32).max)


def _as_samples(a: object, name: str) -> np.ndarray:
    """``a`` as a float64 ``[n, d]`` array, or a ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(a, torch.Tensor):
        if a.is_floating_point() and a.dtype not in (torch.float16, torch.float32, torch.float64):
            a = a.detach().float()  # bfloat16 and float8 have no numpy dtype: upcast, exactly
        a = a.detach().cpu().numpy()
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(a).__name__}")
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be numeric (float or int), got dtype {a.dtype}")
    if a.ndim != 2:
        hint = f"; for one feature per sample pass {name}[:, None]" if a.ndim == 1 else ""
        raise ValueError(f"{name} must be a 2-D array [n, d], got shape {a.shape}{hint}")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    a = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(a)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"{name} must be finite: {rows.size} row(s) hold NaN or inf (first: row {rows[0]}); "
            "drop or impute them"
        )
    big = float(np.abs(a).max())
    if big > _F32_MAX:
        raise ValueError(
            f"{name} holds values beyond the float32 range (max |{name}| = {big:.3g} > "
            f"{_F32_MAX:.3g}); the critic computes in float32: rescale {name} first"
        )
    return a


def check_samples(x: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    """Validate a paired sample and return it as float64 arrays ``X [n, d_x]``, ``Y [n, d_y]``.

    Raises:
        TypeError: an array is not a numpy array / torch tensor of a numeric dtype.
        ValueError: an array is not 2-D (a 1-D array is ambiguous: ``n`` samples of one feature
            or one sample of ``n`` features), is empty, holds NaN or inf, holds values beyond the
            float32 range, or ``X`` and ``Y`` have different numbers of rows or fewer than 2.
    """
    xs, ys = _as_samples(x, "X"), _as_samples(y, "Y")
    if xs.shape[0] != ys.shape[0]:
        raise ValueError(
            f"X and Y must have the same number of rows, got {xs.shape[0]} and {ys.shape[0]}"
        )
    if xs.shape[0] < 2:
        raise ValueError(f"X and Y need at least 2 rows (samples), got {xs.shape[0]}")
    return xs, ys


def load_npz(path: str | Path) -> ArrayTask:
    """Load samples from an ``.npz`` file with arrays ``X``, ``Y`` and optional scalar ``true_mi``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable ``.npz`` archive (a ``.npy`` array, a truncated
            or corrupt file), a required array is missing, the arrays fail
            :func:`check_samples`, or ``true_mi`` is not a non-negative scalar.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such .npz file: {path}")
    unreadable = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic == b"\x93NUMPY":
        raise ValueError(
            f"{path} holds a single array (.npy), not an .npz archive with arrays X and Y: "
            "save with numpy.savez(path, X=x, Y=y)"
        )
    if not magic.startswith(b"PK"):
        raise ValueError(f"{path} is not an .npz file (no zip header; empty or another format)")
    try:
        data = np.load(path, allow_pickle=False)
    except unreadable as err:
        raise ValueError(f"{path} is not a readable .npz file: {err}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):  # pragma: no cover (magic checked above)
        raise ValueError(f"{path} is not an .npz archive with arrays X and Y")
    with data:
        missing = [k for k in ("X", "Y") if k not in data.files]
        if missing:
            raise ValueError(
                f"{path} must hold arrays 'X' and 'Y' (missing: {', '.join(missing)}; "
                f"found: {', '.join(data.files) or 'nothing'})"
            )
        try:  # members are read lazily: a truncated or corrupt member fails here
            x, y = data["X"], data["Y"]
            t = np.asarray(data["true_mi"]) if "true_mi" in data.files else None
        except unreadable as err:
            raise ValueError(f"{path} is not a readable .npz file: {err}") from None
    true_mi = None
    if t is not None:
        if t.size != 1 or t.dtype.kind not in "fiu":
            raise ValueError(f"true_mi in {path} must be a numeric scalar, got shape {t.shape}")
        true_mi = float(t.reshape(()))
    return ArrayTask(x, y, true_mi=true_mi)


@dataclass(frozen=True)
class RowSplit:
    """Row indices of a finite sample: ``fit`` (critic training), ``validation`` (model
    selection) and ``test`` (the reported estimate); disjoint, together all rows."""

    fit: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    @property
    def train(self) -> np.ndarray:
        """The train part: fit and validation rows (the rows standardisation may see)."""
        return np.concatenate([self.fit, self.validation])

    def sizes(self) -> dict[str, int]:
        return {"fit": int(self.fit.size), "validation": int(self.validation.size),
                "test": int(self.test.size)}


def _check_fraction(value: object, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    lo_ok = v >= 0 if allow_zero else v > 0
    if not (math.isfinite(v) and lo_ok and v < 1):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return v


def split_rows(
    n: int, *, test_fraction: float = 0.5, validation_fraction: float = 0.2, seed: int = 0
) -> RowSplit:
    """Split ``n`` rows by a seeded permutation into fit, validation and test parts.

    The permutation is ``numpy.random.default_rng(seed).permutation(n)``; its first
    ``n_test = round(test_fraction · n)`` rows are the test part, the next
    ``n_val = round(validation_fraction · (n - n_test))`` the validation part, the rest the fit
    part. Test and validation parts get at least 2 rows each (``n_val = 0`` when
    ``validation_fraction == 0``), and the fit part at least 2.

    Raises:
        ValueError: a fraction is outside its interval (``test_fraction`` in (0, 1),
            ``validation_fraction`` in [0, 1)), or ``n`` is too small for the parts.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    tf = _check_fraction(test_fraction, "test_fraction")
    vf = _check_fraction(validation_fraction, "validation_fraction", allow_zero=True)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    n = int(n)
    n_test = max(2, round(tf * n))
    n_val = 0 if vf == 0 else max(2, round(vf * (n - n_test)))
    if n - n_test - n_val < 2:
        raise ValueError(
            f"{n} rows are too few to split into test ({n_test}), validation ({n_val}) and fit "
            "(>= 2) rows: use more rows or smaller test_fraction / validation_fraction"
        )
    perm = np.random.default_rng(int(seed)).permutation(n)
    return RowSplit(
        fit=np.sort(perm[n_test + n_val:]), validation=np.sort(perm[n_test:n_test + n_val]),
        test=np.sort(perm[:n_test]),
    )


#: A standardised feature whose train rows reach ``|z| >`` this is treated as heavy-tailed by
#: :class:`Standardizer` (a Gaussian sample of 10^20 rows stays below it: P(|z| > 10) ≈ 1.5e-23).
HEAVY_TAIL_Z = 10.0


def _std(a: np.ndarray) -> np.ndarray:
    """Per-column population standard deviation, without under/overflow: a column whose
    magnitude is below 1e-100 or above 1e100 (where the squares leave float64's range: data
    scaled by 1e-170 has variance 1e-340 = 0) is divided by its largest |value| first."""
    big = np.abs(a).max(axis=0)
    out = a.std(axis=0)
    odd = (big > 0) & ((big < 1e-100) | (big > 1e100))
    if odd.any():
        out[odd] = (a[:, odd] / big[odd]).std(axis=0) * big[odd]
    return out


@dataclass(frozen=True)
class Standardizer:
    """Per-feature invertible map fitted on train rows only: ``z = (x - center) / scale``, and
    ``asinh(z)`` for heavy-tailed features.

    For every feature, ``center`` is the mean and ``scale`` the population standard deviation
    (ddof = 0, as scikit-learn's ``StandardScaler``; 1 for a constant feature). A feature whose
    standardised train values reach ``|z| > HEAVY_TAIL_Z`` (10) is *heavy-tailed*: the standard
    deviation is set by a few extreme rows and squeezes the bulk of the data into a tiny
    interval, which a critic can only resolve with huge weights that then explode on the
    extreme rows (Cauchy-like data: critic values of 1e4 and more). Such a feature is mapped
    instead by ``z = asinh((x - median) / s)``, ``s = IQR / 1.349`` (the standard deviation for
    a Gaussian; the standard deviation if the IQR is 0): the bulk keeps unit scale and the tails
    grow like ``log |x|``. Every map is strictly increasing in each feature, hence invertible, so
    ``I(X; Y)`` is unchanged (MI is invariant under invertible maps of X and of Y).

    Attributes:
        x_center, x_scale, y_center, y_scale: per-feature ``center`` and ``scale``.
        x_asinh, y_asinh: per-feature flags: ``asinh`` applied (heavy-tailed features).
    """

    x_center: np.ndarray
    x_scale: np.ndarray
    y_center: np.ndarray
    y_scale: np.ndarray
    x_asinh: np.ndarray
    y_asinh: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> Standardizer:
        """Fit on train rows ``x [n, d_x]``, ``y [n, d_y]`` (float64)."""

        def stats(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            a = np.asarray(a, dtype=np.float64)
            mean, std = a.mean(axis=0), _std(a)
            std = np.where(std > 0, std, 1.0)
            heavy = np.abs((a - mean) / std).max(axis=0) > HEAVY_TAIL_Z
            q25, median, q75 = np.percentile(a, [25, 50, 75], axis=0)
            robust = (q75 - q25) / 1.349
            robust = np.where(robust > 0, robust, std)
            return (np.where(heavy, median, mean), np.where(heavy, robust, std), heavy)

        (xc, xs, xh), (yc, ys, yh) = stats(x), stats(y)
        return cls(xc, xs, yc, ys, xh, yh)

    @classmethod
    def identity(cls, x_dim: int, y_dim: int) -> Standardizer:
        """The map that changes nothing (``--no-standardize``)."""
        return cls(np.zeros(x_dim), np.ones(x_dim), np.zeros(y_dim), np.ones(y_dim),
                   np.zeros(x_dim, bool), np.zeros(y_dim, bool))

    @staticmethod
    def _map(a: np.ndarray, center: np.ndarray, scale: np.ndarray, heavy: np.ndarray) -> np.ndarray:
        z = (np.asarray(a, np.float64) - center) / scale
        return np.where(heavy, np.arcsinh(z), z)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mapped copies of ``x`` and ``y`` (float64)."""
        return (self._map(x, self.x_center, self.x_scale, self.x_asinh),
                self._map(y, self.y_center, self.y_scale, self.y_asinh))

    def map_torch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same map on tensors (in their dtype and device)."""
        def one(a: torch.Tensor, c: np.ndarray, s: np.ndarray, h: np.ndarray) -> torch.Tensor:
            c_t, s_t, h_t = (torch.as_tensor(v, device=a.device) for v in (c, s, h))
            z = (a - c_t.to(a.dtype)) / s_t.to(a.dtype)
            return torch.where(h_t, torch.asinh(z), z)

        return (one(x, self.x_center, self.x_scale, self.x_asinh),
                one(y, self.y_center, self.y_scale, self.y_asinh))

    def describe(self) -> dict[str, object]:
        """JSON-ready summary: which features were treated as heavy-tailed."""
        return {"x_asinh_features": np.flatnonzero(self.x_asinh).tolist(),
                "y_asinh_features": np.flatnonzero(self.y_asinh).tolist()}


def check_mi_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """Validate a sequence of MI levels (finite, > 0) and return it as a tuple of floats."""
    out = tuple(check_positive(v, "levels") for v in levels)
    if not out:
        raise ValueError("levels must not be empty")
    return out
