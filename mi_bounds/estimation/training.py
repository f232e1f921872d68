"""Neural MI estimation: train a critic by maximising a bound on mini-batches.

Every estimator here reads a ``[K, K]`` score matrix ``S[i, j] = T(x_i, y_j)`` from a critic of
:mod:`mi_bounds.estimation.critics` and calls the score-matrix forms of :mod:`mi_bounds.bounds`
on it (``infonce_bound``, ``dv_bound_from_scores``, ``nwj_bound_from_scores``,
``js_bound_from_scores``, ``smile_bound_from_scores``: the negatives are read in place, never
copied); no bound is re-implemented. An estimator has a *value* (what is reported, per step)
and a *training gradient*; the two differ for MINE and for the JS-trained estimators, and
:func:`~mi_bounds.bounds.value_with_gradient_of` joins them.

=========  ==========================================  ===========================================
name       reported value                              training gradient
=========  ==========================================  ===========================================
dv         DV(S)                                       ∇ DV(S) (biased in mini-batches)
mine       DV(S)                                       ∇E_P[T] - ∇Ẑ / EMA(Ẑ),  Ẑ = E_Q[e^T] (MINE)
nwj        NWJ(S)                                      ∇ NWJ(S)
infonce    InfoNCE(S)                                  ∇ InfoNCE(S)
js         JS(S) (a bound on 2·JSD - 2 log 2, not MI)  ∇ JS(S)
js_dv      DV(S)                                       ∇ JS(S)  (Poole et al. 2019, Sec. 4)
js_nwj     NWJ(S + 1)                                  ∇ JS(S)  (the JS-optimal critic is log r;
                                                       NWJ's is 1 + log r)
smile      SMILE(S, τ) = E_P[T] - log E_Q[clip(e^T)]   ∇ JS(S)  (Song & Ermon 2020, Eq. 17)
=========  ==========================================  ===========================================

``smile_<τ>`` (e.g. ``smile_5``) and ``smile_inf`` name SMILE with that clip; ``smile_inf`` equals
``js_dv``. The MINE correction (Belghazi et al., ICML 2018, Sec. 3.2) replaces the mini-batch
denominator of the DV gradient, ``∇Ẑ/Ẑ``, by ``∇Ẑ/EMA(Ẑ)``, where the exponential moving average
``EMA_t = m·EMA_{t-1} + (1-m)·Ẑ_t`` (kept in the log domain with ``logaddexp``) reduces the bias of
the gradient; the reported value stays the plain DV estimate.

Two sources of samples (docs/THEORY.md §4): a *sampler*
(:class:`~mi_bounds.estimation.tasks.GaussianTask`, the staircase) gives a fresh batch at every
step, and the final estimate comes from fresh batches too; a *finite sample*
(:class:`~mi_bounds.estimation.tasks.ArrayTask`, arrays, ``--data``) is estimated by the
held-out protocol of :mod:`mi_bounds.estimation.heldout`;
:func:`mi_bounds.estimation.estimate_mi` (module :mod:`mi_bounds.estimation.estimate`, above
both) dispatches to one or the other. Either way a critic whose values stop being finite or
exceed ``max_abs_score`` stops the run with :class:`DivergenceError`.

Why one module: the estimator registry, the training loop and its evaluation share one
score-matrix contract and one divergence check; the held-out protocol and the public entry point
already live beside it (:mod:`~mi_bounds.estimation.heldout`,
:mod:`~mi_bounds.estimation.estimate`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from types import MappingProxyType

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mi_bounds._validation import check_int, skip_value_checks
from mi_bounds.bounds import (
    dv_bound_from_scores,
    infonce_bound,
    js_bound_from_scores,
    nwj_bound_from_scores,
    smile_bound_from_scores,
    split_scores,
    value_with_gradient_of,
)
from mi_bounds.estimation.marginals import DEFAULT_MARGINALS, MARGINALS
from mi_bounds.estimation.tasks import ArrayTask, Task

__all__ = [
    "ESTIMATORS",
    "INTERVALS",
    "DivergenceError",
    "EstimateConfig",
    "EstimationResult",
    "EstimatorSpec",
    "MineAverage",
    "check_scores",
    "estimator_value",
    "evaluate",
    "fit_critic",
    "parse_estimator",
    "torch_device",
    "train",
    "training_objective",
]

@dataclass(frozen=True)
class EstimatorSpec:
    """What an estimator is: how its value is read from a score matrix and how it is trained.

    Attributes:
        name: registry key (``--bound`` of ``mi-bounds estimate``).
        objective: the training gradient: ``"same"`` (the value's own), ``"js"`` (the JS
            bound's, :func:`~mi_bounds.bounds.value_with_gradient_of`) or ``"mine"`` (MINE's
            moving-average-corrected DV gradient).
        description: one line for the command's help.
        value: ``value(scores [..., K, K], clip) -> [...]``, the reported value.
    """

    name: str
    objective: str
    description: str
    value: Callable[[torch.Tensor, float | None], torch.Tensor]

    def __post_init__(self) -> None:
        if self.objective not in ("same", "js", "mine"):
            raise ValueError(f"objective must be 'same', 'js' or 'mine', got {self.objective!r}")


#: The estimators, by name: built here once, read-only (a ``MappingProxyType``). Every value is
#: a score-matrix form of :mod:`mi_bounds.bounds` that reads the negatives in place (no copy of
#: the ``K(K-1)`` off-diagonal entries; equal to the two-sample form of ``split_scores``).
ESTIMATORS: Mapping[str, EstimatorSpec] = MappingProxyType({
    spec.name: spec
    for spec in [
        EstimatorSpec("dv", "same", "Donsker-Varadhan, trained and reported",
                      lambda scores, clip: dv_bound_from_scores(scores)),
        EstimatorSpec("mine", "mine", "DV value, MINE's moving-average-corrected DV gradient",
                      lambda scores, clip: dv_bound_from_scores(scores)),
        EstimatorSpec("nwj", "same", "NWJ, trained and reported",
                      lambda scores, clip: nwj_bound_from_scores(scores)),
        EstimatorSpec("infonce", "same", "InfoNCE, trained and reported (at most log K)",
                      lambda scores, clip: infonce_bound(scores)),
        EstimatorSpec("js", "same", "JS bound value (2 JSD - 2 log 2, not MI), JS gradient",
                      lambda scores, clip: js_bound_from_scores(scores)),
        EstimatorSpec("js_dv", "js", "JS-trained critic, DV value (= SMILE with no clipping)",
                      lambda scores, clip: dv_bound_from_scores(scores)),
        EstimatorSpec("js_nwj", "js", "JS-trained critic, NWJ value of the critic shifted by +1",
                      lambda scores, clip: nwj_bound_from_scores(scores, shift=1.0)),
        EstimatorSpec("smile", "js", "JS-trained critic, SMILE value with clip tau",
                      lambda scores, clip: smile_bound_from_scores(scores, clip=clip)),
    ]
})


def parse_estimator(name: str, clip: float | None = None) -> tuple[str, float | None]:
    """Resolve an estimator name to ``(base name, clip)``.

    ``"smile_5"`` → ``("smile", 5.0)``, ``"smile_inf"`` → ``("smile", None)``; ``"smile"`` takes
    ``clip`` from the argument; every other name of :data:`ESTIMATORS` is returned as it is
    (with ``clip=None``). Unknown names raise ``ValueError`` listing the valid ones.
    """
    if not isinstance(name, str):
        raise TypeError(f"estimator name must be a str, got {type(name).__name__}")
    if name.startswith("smile_"):
        suffix = name[len("smile_"):]
        if suffix in ("inf", "none"):
            return "smile", None
        try:
            tau = float(suffix)
        except ValueError:
            tau = float("nan")
        if not (math.isfinite(tau) and tau > 0):
            raise ValueError(
                f"bad SMILE clip in {name!r}: use smile_<tau> with tau > 0, or smile_inf"
            )
        return "smile", tau
    if name not in ESTIMATORS:
        raise ValueError(
            f"unknown estimator {name!r}; valid names: {', '.join(ESTIMATORS)}, "
            "smile_<tau>, smile_inf"
        )
    if name == "smile":
        if clip is not None and not (
            isinstance(clip, (int, float)) and not isinstance(clip, bool) and clip > 0
            and math.isfinite(clip)
        ):
            raise ValueError(f"clip must be a number > 0 or None, got {clip!r}")
        return "smile", None if clip is None else float(clip)
    return name, None


def estimator_value(name: str, scores: torch.Tensor, *, clip: float | None = None) -> torch.Tensor:
    """The reported value of estimator ``name`` on a ``[..., K, K]`` score matrix.

    Gradients flow through the value's own formula; use :func:`training_objective` for the
    training gradient.
    """
    base, tau = parse_estimator(name, clip)
    return ESTIMATORS[base].value(scores, tau)


class MineAverage:
    """MINE's exponential moving average of ``Ẑ = E_Q[e^T]``, kept as ``log EMA``.

    ``update(log_z)`` folds in one batch, ``EMA ← m·EMA + (1-m)·Ẑ`` (the first batch
    initialises it), and returns the new ``log EMA`` (detached).
    """

    def __init__(self, momentum: float = 0.99) -> None:
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not (
            0 <= momentum < 1
        ):
            raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.log_ema: torch.Tensor | None = None

    def update(self, log_z: torch.Tensor) -> torch.Tensor:
        log_z = log_z.detach()
        if self.log_ema is None or self.momentum == 0.0:
            self.log_ema = log_z
        else:
            self.log_ema = torch.logaddexp(
                self.log_ema + math.log(self.momentum), log_z + math.log1p(-self.momentum)
            )
        return self.log_ema


def training_objective(
    name: str,
    scores: torch.Tensor,
    *,
    clip: float | None = None,
    mine: MineAverage | None = None,
) -> torch.Tensor:
    """A tensor whose value is the estimate of ``name`` and whose gradient trains the critic.

    Args:
        name: a key of :data:`ESTIMATORS` (or ``smile_<τ>``).
        scores: ``[K, K]`` score matrix with autograd.
        clip: SMILE's τ for ``name == "smile"``.
        mine: the moving average for ``name == "mine"`` (updated in place).

    Returns:
        Scalar tensor to *maximise*.
    """
    base, tau = parse_estimator(name, clip)
    value = estimator_value(name, scores, clip=tau)
    objective = ESTIMATORS[base].objective
    if objective == "js":
        return value_with_gradient_of(value, js_bound_from_scores(scores))
    if objective == "mine":
        if mine is None:
            raise ValueError("estimator 'mine' needs its moving average: pass mine=MineAverage()")
        pos, neg = split_scores(scores)
        log_z = torch.logsumexp(neg, -1) - math.log(neg.shape[-1])  # log Ẑ, Ẑ = mean_Q e^T
        log_ema = mine.update(log_z)
        # ∇(E_P[T] - Ẑ/EMA) = ∇E_P[T] - ∇Ẑ/EMA: the corrected DV gradient (MINE, Sec. 3.2).
        surrogate = pos.mean(-1) - torch.exp(log_z - log_ema)
        return value_with_gradient_of(value, surrogate)
    return value


def _check_int(value: object, name: str, minimum: int) -> None:
    check_int(value, name, minimum=minimum)


def _check_real(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or (
        not math.isfinite(value)
    ):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


class DivergenceError(ValueError):
    """The critic's values stopped being finite or exceeded ``max_abs_score``.

    Raised instead of reporting a number: a critic value of 1e12 nats is a diverged network, not
    an estimate. The message says where it happened and what to change.
    """


def check_scores(
    scores: torch.Tensor, max_abs_score: float | None, where: str
) -> None:
    """The divergence guard: raise :class:`DivergenceError` if ``scores`` holds a non-finite
    value or one with ``|T| > max_abs_score`` (``None``: only non-finite values)."""
    lo, hi = torch.aminmax(scores.detach())
    lo, hi = float(lo), float(hi)
    finite = math.isfinite(lo) and math.isfinite(hi)
    big = finite and max_abs_score is not None and max(-lo, hi) > max_abs_score
    if finite and not big:
        return
    what = ("non-finite critic values" if not finite else
            f"critic values up to |T| = {max(-lo, hi):.3g} > max_abs_score = {max_abs_score:g}")
    raise DivergenceError(
        f"the critic diverged ({what}) {where}. No estimate is reported. Try a smaller learning "
        "rate (--lr), a clipped estimator (--bound smile --clip 5) or one with a bounded value "
        "(infonce), keep standardisation on (no --no-standardize), or, if such values are "
        "expected, raise --max-abs-score"
    )


#: The intervals of a held-out estimate (``EstimateConfig.interval``): the delete-a-group
#: jackknife of :func:`~mi_bounds.estimation.heldout.rows_value` and the bootstrap of
#: :func:`~mi_bounds.estimation.intervals.rows_bootstrap`.
INTERVALS = ("jackknife", "bootstrap")


@dataclass
class EstimateConfig:
    """Settings of one neural MI estimation run (the CLI's options carry the same help).

    Attributes:
        bound: estimator to train and report (see :data:`ESTIMATORS`; also ``smile_<τ>``).
        clip: SMILE's τ when ``bound == "smile"`` (``None``: no clipping).
        steps: training steps (one fresh batch each).
        batch_size: K, the number of joint samples per batch (K² critic evaluations).
        lr: Adam learning rate.
        mine_momentum: momentum m of MINE's moving average (``bound == "mine"``).
        seed: seeds the critic's initialisation, the training batches, the evaluation batches
            and, for a finite sample, the permutation that splits the rows.
        device: torch device for the critic and the samples ("cpu", "cuda", "cuda:1", ...).
        report: further estimators evaluated (value only) on every training batch's scores.
        eval_batches: fresh batches scored by the trained critic for the final estimate and its
            standard error (0: no final evaluation). Sampler tasks only: on a finite sample the
            estimate comes from the test rows.
        progress: show a tqdm progress bar.
        test_fraction: finite samples: fraction of the rows held out as the test part, in
            (0, 1); the critic never sees them and the reported estimate and its standard error
            come from them only.
        validation_fraction: finite samples: fraction of the train rows held out as the
            validation part, in [0, 1), on which the checkpoint is chosen (0: no validation,
            the last step's critic is reported).
        standardize: finite samples: map every feature of X and Y with a monotone map fitted
            on the train rows (``marginals``); False: use the features as they are.
        marginals: finite samples, with ``standardize``: ``"rank"`` (the default: normal
            scores of the train-row ranks, so the estimate is invariant to any increasing
            re-measurement of a feature, :class:`~mi_bounds.estimation.marginals.RankGaussian`)
            or ``"standard"`` (mean and standard deviation of the train rows; asinh of a
            median/IQR scaling for heavy-tailed features:
            :class:`~mi_bounds.estimation.tasks.Standardizer`; the default before 2026-12-07).
        eval_every: finite samples: score the critic on the validation rows every this many
            steps (and before the first step and after the last).
        patience: finite samples: stop after this many validation scores in a row without a
            new best (0: never stop early); the best-scoring checkpoint is reported.
        max_abs_score: divergence guard: a critic value |T| above this (or a non-finite one)
            stops the run with an error (None: no bound, non-finite values still stop it).
        cap_scores: finite samples: evaluate the capped critic min(T, b), b = the largest
            value T gives a positive pair of the fit rows, on the validation, test and fit
            rows (a critic like any other: DV, NWJ and InfoNCE of it are still bounds on I;
            it keeps pairs the critic extrapolates to from dominating log E_Q[e^T]).
        duplicates: finite samples: rows whose X and Y repeat an earlier row: "refuse" (an
            error with their count), "drop" (removed before the split, counted in the flags) or
            "keep" (repeats that are real draws, e.g. discrete data; flagged).
        interval: finite samples: the standard error of the held-out estimate: "jackknife"
            (delete-a-group over 10 groups of test rows; interval estimate ± t_{9,0.975} se) or
            "bootstrap" (200 resamples of the test rows, seeded by seed; standard error = their
            standard deviation, and their 95 % percentile interval). Either is an interval for
            the bound's value at the trained critic, not for I. With the t quantile the
            jackknife covered that value at least as often as the bootstrap at 500 rows
            (docs/RESULTS.md §4.9); the bootstrap is cheap there, but at thousands of rows it
            costs several times the estimate itself.
    """

    bound: str = "smile"
    clip: float | None = 5.0
    steps: int = 4000
    batch_size: int = 64
    lr: float = 5e-4
    mine_momentum: float = 0.99
    seed: int = 0
    device: str = "cpu"
    report: tuple[str, ...] = ()
    eval_batches: int = 64
    progress: bool = False
    test_fraction: float = 0.5
    validation_fraction: float = 0.2
    standardize: bool = True
    marginals: str = DEFAULT_MARGINALS
    eval_every: int = 100
    patience: int = 5
    max_abs_score: float | None = 1e4
    cap_scores: bool = True
    duplicates: str = "refuse"
    interval: str = "jackknife"

    def __post_init__(self) -> None:
        parse_estimator(self.bound, self.clip)
        self.report = tuple(self.report)
        for name in self.report:
            parse_estimator(name, self.clip)
        _check_int(self.steps, "steps", 1)
        _check_int(self.batch_size, "batch_size", 2)
        _check_int(self.seed, "seed", 0)
        _check_int(self.eval_batches, "eval_batches", 0)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (
            math.isfinite(self.lr) and self.lr > 0
        ):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        MineAverage(self.mine_momentum)  # validates
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device must name a torch device, got {self.device!r}") from err
        for name in ("progress", "standardize", "cap_scores"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        if self.marginals not in MARGINALS:
            raise ValueError(f"marginals must be one of {', '.join(MARGINALS)}, got "
                             f"{self.marginals!r}")
        _check_real(self.test_fraction, "test_fraction")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}")
        _check_real(self.validation_fraction, "validation_fraction")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}"
            )
        if self.duplicates not in ("refuse", "drop", "keep"):
            raise ValueError(
                f"duplicates must be 'refuse', 'drop' or 'keep', got {self.duplicates!r}")
        if self.interval not in INTERVALS:
            raise ValueError(
                f"interval must be one of {', '.join(INTERVALS)}, got {self.interval!r}")
        _check_int(self.eval_every, "eval_every", 1)
        _check_int(self.patience, "patience", 0)
        if self.max_abs_score is not None:
            _check_real(self.max_abs_score, "max_abs_score")
            if not self.max_abs_score > 0:
                raise ValueError(
                    f"max_abs_score must be a number > 0 or None, got {self.max_abs_score!r}"
                )

    @property
    def names(self) -> tuple[str, ...]:
        """Every estimator recorded per step: ``bound`` first, then ``report`` (deduplicated)."""
        return tuple(dict.fromkeys((self.bound, *self.report)))


@dataclass
class EstimationResult:
    """Per-step estimates of one run and the trained critic's final estimate.

    Attributes:
        estimates: estimator name -> per-step values on the training batches, ``[steps]``.
        true_mi: the task's true MI per step, ``[steps]`` (NaN where unknown).
        final: estimator name -> (estimate, standard error) of the reported critic: over
            ``eval_batches`` fresh batches for a sampler (empty if ``eval_batches == 0``); on
            the held-out test rows for a finite sample (:mod:`mi_bounds.estimation.heldout`).
        seconds: wall time of the training loop.
        config: the run's settings.
        final_train: finite samples: the same estimators on the rows the critic was fitted
            on, ``name -> (value, NaN)`` (the gap to ``final`` is the overfitting; no standard
            error is computed for it); empty for a sampler.
        selection: finite samples: the model-selection record (rule, chosen step, validation
            history, step where training stopped); empty for a sampler.
        extra: further JSON fields (the split sizes, standardisation).
        flags: finite samples: estimator name -> the reasons its held-out estimate is not to
            be trusted (empty list: none); ``to_dict`` writes ``reliable`` and ``flags`` beside
            the estimate. Empty for a sampler.
        intervals: finite samples: estimator name -> its 95 % interval ``(low, high)``, the
            bootstrap's percentile interval with ``config.interval == "bootstrap"``, else the
            jackknife's ``estimate ± t·stderr`` (``t``: ``heldout.jackknife_quantile``);
            ``to_dict`` writes it as ``interval`` beside the estimate (what it covers: the
            JSON's top-level ``interval``). Empty for a sampler.
    """

    estimates: dict[str, np.ndarray]
    true_mi: np.ndarray
    final: dict[str, tuple[float, float]]
    seconds: float
    config: EstimateConfig
    extra: dict[str, object] = field(default_factory=dict)
    final_train: dict[str, tuple[float, float]] = field(default_factory=dict)
    selection: dict[str, object] = field(default_factory=dict)
    flags: dict[str, list[str]] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def steps_run(self) -> int:
        """Training steps actually taken (fewer than ``config.steps`` after an early stop)."""
        return len(self.estimates[self.config.bound])

    @property
    def steps_per_second(self) -> float:
        return self.steps_run / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary (per-step arrays as lists).

        ``final[name]`` holds ``estimate`` and ``stderr`` (held-out test rows for a finite
        sample, fresh batches for a sampler) and, for a finite sample, ``train_estimate`` (the
        same estimator on the fit rows), ``reliable`` (False when the estimate is flagged),
        ``flags`` (the reasons) and ``interval`` ``[low, high]`` (:attr:`intervals`).
        """
        final: dict[str, dict[str, object]] = {}
        for k, (m, s) in self.final.items():
            final[k] = {"estimate": m, "stderr": s}
            if k in self.final_train:
                final[k]["train_estimate"] = self.final_train[k][0]
            if k in self.intervals:
                final[k]["interval"] = list(self.intervals[k])
            if k in self.flags:
                final[k].update(reliable=not self.flags[k], flags=list(self.flags[k]))
        out = {
            "config": asdict(self.config),
            "final": final,
            "true_mi": None if np.all(np.isnan(self.true_mi)) else float(self.true_mi[-1]),
            "seconds": self.seconds,
            "steps_per_second": self.steps_per_second,
            "steps_run": self.steps_run,
            "estimates": {k: v.tolist() for k, v in self.estimates.items()},
        }
        if self.selection:
            out["selection"] = self.selection
        return {**out, **self.extra}


def torch_device(name: str) -> torch.device:
    """``torch.device(name)``, refusing ``cuda`` where CUDA is not available."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


@torch.no_grad()
def evaluate(
    critic: nn.Module,
    task: Task,
    names: Sequence[str],
    *,
    batches: int,
    batch_size: int,
    generator: torch.Generator,
    step: int,
    clip: float | None = None,
    max_abs_score: float | None = None,
) -> dict[str, tuple[float, float]]:
    """Score ``batches`` fresh batches with a fixed critic; ``name -> (mean, standard error)``.

    The standard error is ``std / sqrt(batches)`` over independent batches (it measures the
    sampling noise of the estimate at this critic, not the spread over training runs).
    The scores pass the divergence guard :func:`check_scores` (``max_abs_score``).
    """
    _check_int(batches, "batches", 2)
    values: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(batches):
        x, y = task(step, batch_size, generator)
        scores = critic.scores(x, y)
        check_scores(scores, max_abs_score, "on the evaluation batches")
        for n in names:
            values[n].append(float(estimator_value(n, scores, clip=clip)))
    out = {}
    for n, v in values.items():
        arr = np.asarray(v)
        out[n] = (float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(len(arr))))
    return out


def train(critic: nn.Module, task: Task, config: EstimateConfig) -> EstimationResult:
    """Train ``critic`` to maximise ``config.bound`` on fresh batches from a sampler ``task``.

    At every step ``t`` a batch of ``K = batch_size`` joint samples is drawn with
    ``task(t, K, generator)``, the critic's score matrix is computed, every estimator of
    ``config.names`` is recorded (value on that batch, before the update), and one Adam step
    ascends the training objective of ``config.bound`` (:func:`training_objective`). The final
    estimate is the trained critic's value on ``eval_batches`` fresh batches.

    Deterministic given ``config.seed`` (on CPU): the batches come from a generator seeded with
    ``seed + 1`` and the final evaluation batches from one seeded with ``seed + 2``. The critic's
    initialisation is the caller's (:func:`estimate_mi` seeds it with ``seed``).

    Raises:
        TypeError: ``task`` is a finite sample
            (:class:`~mi_bounds.estimation.tasks.ArrayTask`): its rows are not fresh batches;
            use :func:`estimate_mi`, which holds out test rows.
        DivergenceError: a critic value is non-finite or beyond ``config.max_abs_score``.
    """
    if isinstance(task, ArrayTask):
        raise TypeError(
            "train() draws fresh batches from a sampler; a finite sample (ArrayTask) must be "
            "estimated on held-out rows: use estimate_mi(task, config) or "
            "mi_bounds.estimation.heldout.estimate_mi_on_samples(x, y, config)"
        )
    device = torch_device(config.device)
    per_step, true_mi, seconds, _ = fit_critic(critic, task, config)
    final: dict[str, tuple[float, float]] = {}
    if config.eval_batches >= 2:
        critic.eval()
        final = evaluate(
            critic, task, config.names, batches=config.eval_batches,
            batch_size=config.batch_size,
            generator=torch.Generator(device=device).manual_seed(config.seed + 2),
            step=config.steps - 1, clip=config.clip, max_abs_score=config.max_abs_score,
        )
        critic.train()
    return EstimationResult(per_step, true_mi, final, seconds, config)


def fit_critic(
    critic: nn.Module,
    task: Task,
    config: EstimateConfig,
    validate: Callable[[nn.Module], float] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, float, dict[str, object]]:
    """The training loop: batch, scores, guard, objective, backward, Adam step, record.

    With ``validate`` (a function of the critic returning a score to maximise, computed on
    rows the critic is not trained on) the critic is scored before the first step, every
    ``config.eval_every`` steps and after the last; training stops once ``config.patience``
    scores in a row bring no new best (``patience = 0``: never), and the critic is left with
    the parameters of the best-scoring checkpoint.

    Returns:
        ``(per-step values {name: [steps_run]}, true MI [steps_run], seconds, selection)``,
        where ``selection`` is empty without ``validate`` and otherwise holds ``step`` (the
        number of updates of the chosen checkpoint), ``validation`` (``[[step, score], ...]``)
        and ``stopped_at`` (updates made); a Ctrl-C (``KeyboardInterrupt``) during training
        with ``validate`` stops it there like an early stop, keeps the best checkpoint so far
        and records ``interrupted_at`` (without ``validate`` it propagates).
    """
    if not isinstance(config, EstimateConfig):
        raise TypeError(f"config must be an EstimateConfig, got {type(config).__name__}")
    if not hasattr(critic, "scores"):
        raise TypeError("critic must have a scores(x, y) -> [K, K] method "
                        "(see mi_bounds.estimation.critics)")
    device = torch_device(config.device)
    critic = critic.to(device)
    gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    opt = torch.optim.Adam(critic.parameters(), lr=config.lr, foreach=True)
    mine = MineAverage(config.mine_momentum) if parse_estimator(config.bound)[0] == "mine" else None
    names = config.names
    per_step = {n: np.empty(config.steps) for n in names}
    true_mi = np.full(config.steps, np.nan)
    history: list[list[float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    since_best = 0

    def check(step: int) -> bool:
        """Score the critic after ``step`` updates; True when training should stop."""
        nonlocal best, since_best
        score = float(validate(critic))  # type: ignore[misc]
        history.append([step, score])
        if best is None or score > best[0]:
            state = {k: v.detach().clone() for k, v in critic.state_dict().items()}
            best, since_best = (score, step, state), 0
            return False
        since_best += 1
        return config.patience > 0 and since_best >= config.patience

    if validate is not None:
        check(0)
    bar = tqdm(range(config.steps), disable=not config.progress, desc=config.bound, leave=False)
    done = 0
    t0 = time.perf_counter()
    interrupted = False
    try:
        for t in bar:
            x, y = task(t, config.batch_size, gen)
            scores = critic.scores(x, y)  # (K, K)
            check_scores(scores, config.max_abs_score, f"at training step {t}")
            # the scores were checked just above: the bounds need not read them again (each read
            # is a host-device sync on a GPU); an overflow shows as a non-finite value instead
            with skip_value_checks():
                objective = training_objective(config.bound, scores, clip=config.clip, mine=mine)
            value = float(objective.detach())
            if not math.isfinite(value):
                raise DivergenceError(
                    f"the {config.bound} objective is not finite at training step {t} (critic "
                    "values in [{:.3g}, {:.3g}]). No estimate is reported. Try a smaller "
                    "learning rate (--lr) or a clipped estimator (--bound smile --clip 5)".format(
                        float(scores.min()), float(scores.max()))
                )
            opt.zero_grad(set_to_none=True)
            (-objective).backward()
            opt.step()
            with torch.no_grad(), skip_value_checks():
                per_step[config.bound][t] = value
                for n in names[1:]:
                    per_step[n][t] = float(estimator_value(n, scores, clip=config.clip))
            mi = task.true_mi(t)
            if mi is not None:
                true_mi[t] = mi
            if config.progress and t % 100 == 0:
                bar.set_postfix(estimate=f"{per_step[config.bound][t]:.3f}")
            done = t + 1
            if validate is not None and (done % config.eval_every == 0 or done == config.steps):
                if check(done):
                    break
    except KeyboardInterrupt:
        if validate is None or best is None:
            raise
        interrupted = True  # finite sample: keep the best checkpoint so far (Ctrl-C)
    bar.close()
    seconds = time.perf_counter() - t0
    selection: dict[str, object] = {}
    if validate is not None:
        assert best is not None  # check(0) ran
        critic.load_state_dict(best[2])
        selection = {"step": best[1], "validation": history, "stopped_at": done}
        if interrupted:
            selection["interrupted_at"] = done
    per_step = {n: v[:done] for n, v in per_step.items()}
    return per_step, true_mi[:done], seconds, selection
