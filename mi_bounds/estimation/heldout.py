"""Neural MI estimation on a finite sample: held-out rows, a validation-chosen checkpoint.

A critic trained on a finite sample ``(X, Y)`` fits the rows it sees: scored on those rows, an
estimator reports the overfitting, not the MI (on 500 independent rows a DV critic scored on its
own training rows reports ~5 nats). This module implements the protocol of docs/THEORY.md §4, the
same as bmi's (Czyż et al., "Beyond Normal: On the Evaluation of Mutual Information
Estimators", NeurIPS 2023), except that bmi reports the *best test value* over training (its
early stopping reads the test rows) whereas here nothing but the final report reads them:

1. **Split** the rows by a seeded permutation (:func:`~mi_bounds.estimation.tasks.split_rows`)
   into a test part (``test_fraction``, default ½), and train rows, which are split again into a
   validation part (``validation_fraction`` of them, default 0.2) and the fit part.
2. **Standardise** every feature of X and Y with the mean and standard deviation of the train
   rows, and map heavy-tailed features (standardised train values beyond ±10) by ``asinh`` of
   a median/IQR standardisation instead (:class:`~mi_bounds.estimation.tasks.Standardizer`;
   ``standardize=False`` turns it all off). These maps are invertible, so they leave I(X; Y)
   unchanged.
3. **Train** the critic on mini-batches of the fit rows
   (:func:`~mi_bounds.estimation.training.fit_critic`).
4. **Cap** (``cap_scores``, on by default): a checkpoint's critic ``T`` is evaluated as
   ``min(T, b)``, with ``b`` the largest value ``T`` gives a positive pair of the fit rows
   (:func:`score_cap`). ``min(T, b)`` is a function of ``(x, y)`` like any critic, so DV, NWJ
   and InfoNCE of it are still lower bounds on I(X; Y); what it removes is extrapolation: a
   pair scored above every joint pair the critic was fitted on lies where the joint sample
   put no mass, and on ``n²`` test pairs a handful of such pairs would decide the
   log-mean-exp of DV (and NWJ's mean of ``e^(T-1)``). Only the upper side is capped: raising
   the low values of product pairs would raise ``E_Q[e^T]`` and cost real nats at high MI.
5. **Select** the checkpoint: the capped critic is scored on the validation rows (the value of
   the trained estimator on their whole score matrix) before the first step, every
   ``eval_every`` steps and after the last; training stops after ``patience`` scores in a row
   without a new best, and the best-scoring checkpoint is kept. The choice is recorded (step
   and history).
6. **Report** every estimator of the run on the test rows: the value of the capped critic on
   the score matrix of all test rows (``n`` positive pairs on the diagonal, ``n(n-1)``
   negative pairs off it; in blocks of at most ``max_rows`` rows, averaged, when there are
   more), with a delete-a-group jackknife standard error (:func:`rows_value`), or, with
   ``interval="bootstrap"``, a bootstrap standard error and percentile interval
   (:func:`~mi_bounds.estimation.intervals.rows_bootstrap`). The same values
   on the fit rows (without a standard error) are reported beside them so that the
   overfitting gap is visible. An estimate whose standard error exceeds
   :data:`UNSTABLE_STDERR` is flagged ``reliable: false`` (with a warning).

A critic value that is not finite or beyond ``max_abs_score`` stops the run with
:class:`~mi_bounds.estimation.training.DivergenceError` (during training and on the held-out rows).

Why one module: the six steps share one prepared sample, one cap and one selection record, and
:func:`estimate_mi_on_samples` is their only composition; the module is long because each step
documents the rule it applies and records it in the result.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats
import torch
from torch import nn

from mi_bounds.estimation.critics import make_critic, score_matrix
from mi_bounds.estimation.degenerate import check_dependence, duplicate_rows
from mi_bounds.estimation.intervals import (
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    block_edges,
    rows_bootstrap,
    score_blocks,
)
from mi_bounds.estimation.marginals import RankGaussian
from mi_bounds.estimation.tasks import ArrayTask, RowSplit, Standardizer, check_samples, split_rows
from mi_bounds.estimation.training import (
    DivergenceError,
    EstimateConfig,
    EstimationResult,
    estimator_value,
    fit_critic,
    torch_device,
)

__all__ = [
    "AUTO_CRITICS",
    "JACKKNIFE_GROUPS",
    "JACKKNIFE_LEVEL",
    "SAMPLE_CRITIC",
    "SAMPLE_DEFAULTS",
    "SELECTION_RULE",
    "UNSTABLE_STDERR",
    "PreparedSample",
    "StandardizedCritic",
    "estimate_mi_on_samples",
    "interval_covers",
    "jackknife_df",
    "jackknife_quantile",
    "prepare_samples",
    "rows_value",
    "sample_config",
    "score_cap",
]

#: Training settings for a finite sample when the caller gives none (``estimate_mi_on_samples``
#: without a config, ``mi-bounds estimate --data``); the batch size is at most the number of fit
#: rows (``min(128, n_fit)``, so that 300 rows still run with the defaults). The sampler
#: defaults of :class:`~mi_bounds.estimation.training.EstimateConfig` are the published staircase
#: settings (batch 64, lr 5e-4, 4000 steps); on a finite sample ``steps`` is only a ceiling
#: (early stopping on the validation rows), a larger batch gives more negatives per step and
#: lr 1e-3 converges in fewer steps. Chosen on our own synthetic Gaussian and Student-t samples
#: (docs/RESULTS.md), not on the bmi benchmark's.
SAMPLE_DEFAULTS: dict[str, object] = {"batch_size": 128, "lr": 1e-3}

#: Critic sizes for a finite sample when the caller gives none: a separable critic smaller than
#: the staircase's (256 hidden units, 3 hidden layers, 32-d embeddings), which overfits a few
#: thousand rows no less and costs ~4x more per step.
SAMPLE_CRITIC: dict[str, int] = {"hidden_dim": 64, "embed_dim": 16, "layers": 1}


#: Groups of the delete-a-group jackknife (:func:`rows_value`), and the level of its interval
#: ``estimate ± t·se`` (:func:`jackknife_quantile`).
JACKKNIFE_GROUPS = 10
JACKKNIFE_LEVEL = 0.95


def jackknife_df(n: int, groups: int = JACKKNIFE_GROUPS, max_rows: int = 4096) -> int:
    """Degrees of freedom of :func:`rows_value`'s standard error on ``n`` rows:
    ``ν = Σ_b (G_b − 1)`` over its score blocks ``b`` (``G_b = min(groups, m_b // 2)`` groups of
    the ``m_b`` rows of block ``b``; blocks of near-equal size, so the pooled variance is taken
    to have the sum of the blocks' degrees of freedom). 0 where a block has fewer than 2 groups
    (no standard error: NaN)."""
    g = [min(groups, (hi - lo) // 2) for lo, hi in itertools.pairwise(block_edges(n, max_rows))]
    return 0 if min(g) < 2 else sum(k - 1 for k in g)


def jackknife_quantile(n: int, level: float = JACKKNIFE_LEVEL,
                       groups: int = JACKKNIFE_GROUPS, max_rows: int = 4096) -> float:
    r"""The multiplier ``t`` of the jackknife interval ``estimate ± t·se`` on ``n`` test rows:
    Student's t quantile :math:`t_{\nu, (1 + level)/2}` with ``ν`` = :func:`jackknife_df`.

    A delete-a-group jackknife variance from ``G`` groups has about ``G − 1`` degrees of
    freedom, so ``(estimate − value) / se`` is close to ``t_{G−1}``, not normal (Kott, "The
    delete-a-group jackknife", J. Official Statistics 17, 2001; Wolter, "Introduction to
    Variance Estimation", 2nd ed., 2007, Ch. 2 and 4). With ``G = 10`` the normal quantile
    1.96 would cover ``P(|t_9| ≤ 1.96) = 91.8 %``, which the coverage study measured on
    Gaussian rows (docs/RESULTS.md §4.9); ``t_{9, 0.975} = 2.262``. NaN where ``ν = 0``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    df = jackknife_df(int(n), groups, max_rows)
    return float(scipy.stats.t.ppf((1.0 + level) / 2.0, df)) if df > 0 else math.nan


def interval_covers(name: str) -> str:
    """What a held-out interval of estimator ``name`` is an interval for, as the JSON and the
    CLI say it. The coverage study of docs/RESULTS.md §4.9 measured it: at the trained critic
    ``T`` the interval covers the bound's population value ``name(T)`` (for a lower bound,
    a value below I), and covers I itself far less often than its level, so it is not named an
    interval for I."""
    return (f"the {name} value of this trained critic under the law of the rows, not I "
            "(docs/RESULTS.md §4.9)")


def sample_config(**overrides: object) -> EstimateConfig:
    """An :class:`~mi_bounds.estimation.training.EstimateConfig` with :data:`SAMPLE_DEFAULTS` under
    ``overrides``."""
    return EstimateConfig(**{**SAMPLE_DEFAULTS, **overrides})  # type: ignore[arg-type]

#: A held-out estimate whose jackknife standard error exceeds this (nats) is flagged
#: unreliable (``reliable: false`` in the JSON, ``UNRELIABLE`` on the command line, and a
#: warning): its ±2 standard-error interval spans more than a nat, typically because a few test
#: pairs with large critic values dominate log E_Q[e^T] (DV, NWJ). The number is kept, with its
#: standard error, for inspection; it is not an estimate to use.
UNSTABLE_STDERR = 0.25

#: The model-selection rule, as recorded in every result.
SELECTION_RULE = (
    "checkpoint with the highest value of the trained estimator on the validation rows "
    "(scored before step 1, every eval_every steps and after the last; stop after patience "
    "scores without a new best); the test rows are read only for the final report"
)

#: The bootstrap interval, as recorded in a result that uses it (``interval="bootstrap"``).
BOOTSTRAP_RULE = (
    f"standard error and {BOOTSTRAP_LEVEL:.0%} percentile interval of {BOOTSTRAP_RESAMPLES} "
    "bootstrap resamples of the test rows (rows drawn with replacement; a negative pair of two "
    "copies of one row is replaced by a pair with another row), seeded by the config's seed"
)

#: The cap, as recorded in every result that uses it.
CAP_RULE = (
    "every checkpoint's critic T is evaluated as min(T, b), b = max of T over the positive "
    "pairs of the fit rows (validation, test and fit-row values alike; training is unchanged)"
)


@torch.no_grad()
def score_cap(critic: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """``b = max_i T(x_i, y_i)``: the largest critic value on the positive pairs ``(x_i, y_i)``
    (the fit rows), computed with the critic's ``forward`` on aligned pairs.

    The capped critic ``min(T, b)`` is what :func:`estimate_mi_on_samples` evaluates (module
    docstring, step 4).
    """
    was_training = critic.training
    critic.eval()
    try:
        return float(critic(x, y).max())
    finally:
        critic.train(was_training)


@torch.no_grad()
def rows_value(
    critic: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    names: Sequence[str],
    *,
    clip: float | None = None,
    groups: int = JACKKNIFE_GROUPS,
    max_rows: int = 4096,
    max_abs_score: float | None = None,
    cap: float | None = None,
    where: str = "on the held-out rows",
) -> dict[str, tuple[float, float]]:
    r"""Each estimator's value on the score matrix of a set of rows, with a jackknife error.

    The rows ``x [n, d_x]``, ``y [n, d_y]`` (in random order) are cut into
    ``B = ceil(n / max_rows)`` contiguous blocks of near-equal size; in each block the critic's
    score matrix ``S[i, j] = T(x_i, y_j)`` (float64; ``min(T, cap)`` with a ``cap``, after the
    divergence guard has read the raw values) is valued by
    :func:`~mi_bounds.estimation.training.estimator_value` and the estimate is the mean over blocks.

    Standard error: delete-a-group jackknife (Efron & Tibshirani, "An Introduction to the
    Bootstrap", 1993, Sec. 11.5). Row ``i`` of a block goes to group ``i mod G``
    (``G = min(groups, m // 2)``); ``θ_(g)`` is the value with the rows *and columns* of group
    ``g`` removed, and

    .. math:: \widehat{se}^2 = \frac{G-1}{G} \sum_{g=1}^{G} (\theta_{(g)} - \bar\theta)^2 ,

    with :math:`\bar\theta` the mean of the :math:`\theta_{(g)}`.

    Removing whole rows and columns keeps the dependence between the off-diagonal pairs that
    share a row, which a standard error over independent batches would miss. Across blocks,
    ``se = sqrt(Σ se_b²) / B``. ``groups = 0`` skips the jackknife (standard error NaN).

    Returns:
        ``name -> (estimate, standard error)``.

    Raises:
        ValueError: fewer than 2 rows.
        DivergenceError: a score is non-finite or beyond ``max_abs_score``.
    """
    est: dict[str, list[float]] = {k: [] for k in names}
    var: dict[str, list[float]] = {k: [] for k in names}
    for s in score_blocks(critic, x, y, max_rows=max_rows, max_abs_score=max_abs_score, cap=cap,
                          where=where):
        m = int(s.shape[0])
        for k in names:
            est[k].append(float(estimator_value(k, s, clip=clip)))
        g_count = min(groups, m // 2)
        if g_count < 2:
            for k in names:
                var[k].append(math.nan)
            continue
        label = torch.arange(m, device=s.device) % g_count
        theta = {k: np.empty(g_count) for k in names}
        for g in range(g_count):
            keep = label != g
            sub = s[keep][:, keep]
            for k in names:
                theta[k][g] = float(estimator_value(k, sub, clip=clip))
        for k in names:
            t = theta[k]
            var[k].append((g_count - 1) / g_count * float(np.sum((t - t.mean()) ** 2)))
    n_blocks = len(est[names[0]]) if names else 1
    return {
        k: (float(np.mean(est[k])), math.sqrt(float(np.sum(var[k]))) / n_blocks) for k in names
    }


#: The candidates of ``critic="auto"``, in the order they are trained (ties go to the first).
AUTO_CRITICS = ("separable", "concat")

#: The critic-choice rule of ``critic="auto"``, as recorded in its result.
AUTO_RULE = (
    "train each candidate critic (same seed, same batches, same checkpoint rule) and keep the "
    "one whose chosen checkpoint scored highest on the validation rows (ties: the first); the "
    "test rows are read only for the kept critic"
)


def _choose_critic(
    train_one: Callable[[str], tuple[nn.Module, tuple]],
) -> tuple[nn.Module, tuple]:
    """``critic="auto"``: :data:`AUTO_RULE` over :data:`AUTO_CRITICS`. A candidate that
    diverges is dropped (recorded); if every candidate diverges the last error is raised."""
    runs: dict[str, tuple[nn.Module, tuple]] = {}
    diverged: dict[str, str] = {}
    seconds = 0.0
    error: DivergenceError | None = None
    for name in AUTO_CRITICS:
        try:
            runs[name] = train_one(name)
        except DivergenceError as err:
            diverged[name], error = str(err), err
            continue
        seconds += runs[name][1][2]
        if "interrupted_at" in runs[name][1][3]:  # Ctrl-C: the other candidates are skipped
            break
    if not runs:
        assert error is not None
        raise error
    best = {name: max(v for _, v in run[1][3]["validation"]) for name, run in runs.items()}
    chosen = max(best, key=lambda k: (best[k], -AUTO_CRITICS.index(k)))
    net, (per_step, true_mi, _, selection) = runs[chosen]
    selection = {**selection, "critic": {"rule": AUTO_RULE, "chosen": chosen,
                                         "validation_best": best, "diverged": diverged}}
    return net, (per_step, true_mi, seconds, selection)


class StandardizedCritic(nn.Module):
    """A critic trained on mapped inputs (:class:`~mi_bounds.estimation.tasks.Standardizer`),
    applied to raw ones and capped: ``scores(x, y) = min(critic.scores(*standardizer(x, y)), cap)``,
    likewise ``cross_scores`` and ``forward`` (``cap=None``: no cap).
    :func:`estimate_mi_on_samples` returns its critic wrapped in this, so the returned critic
    reads the data as the caller has it and gives the values the estimate was computed from.
    """

    def __init__(self, critic: nn.Module, standardizer: Standardizer | RankGaussian,
                 cap: float | None = None) -> None:
        super().__init__()
        self.critic = critic
        self.standardizer = standardizer
        self.cap = cap

    def _capped(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.cap is None else t.clamp(max=self.cap)

    def scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._capped(self.critic.scores(*self.standardizer.map_torch(x, y)))

    def cross_scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._capped(score_matrix(self.critic, *self.standardizer.map_torch(x, y)))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._capped(self.critic(*self.standardizer.map_torch(x, y)))


class PreparedSample:
    """A validated, split and standardised sample, ready for :func:`estimate_mi_on_samples`.

    Attributes:
        split: the row indices (:class:`~mi_bounds.estimation.tasks.RowSplit`).
        standardizer: the map fitted on the train rows (the identity with
            ``standardize=False``).
        x, y: all rows after standardisation, float32 tensors ``[n, d]`` on the config's device.
    """

    def __init__(self, x: object, y: object, config: EstimateConfig) -> None:
        xs, ys = check_samples(x, y)
        #: reasons (sentences) that every estimate of this sample is flagged with
        self.flags: list[str] = []
        dup = duplicate_rows(xs, ys)
        n_dup, n_all = int(dup.sum()), int(xs.shape[0])
        if n_dup and config.duplicates == "refuse":
            raise ValueError(
                f"{n_dup} duplicate rows among {n_all} (rows whose X and Y repeat an earlier "
                "row): a held-out test row that copies a fit row is not held out. Use "
                "--duplicates drop (duplicates='drop') to remove them, or --duplicates keep if "
                "the repeats are real draws (discrete data)")
        if n_dup and config.duplicates == "drop":
            xs, ys = xs[~dup], ys[~dup]
            self.flags.append(f"removed {n_dup} duplicate rows (of {n_all}) before the split")
        elif n_dup:
            self.flags.append(f"{n_dup} duplicate rows kept (of {n_all}): test rows may copy "
                              "fit rows")
        if xs.shape[0] < 2:
            raise ValueError(f"X and Y need at least 2 distinct rows, got {xs.shape[0]}")
        n = xs.shape[0]
        self.split: RowSplit = split_rows(
            n, test_fraction=config.test_fraction,
            validation_fraction=config.validation_fraction, seed=config.seed,
        )
        n_fit = self.split.fit.size
        if config.batch_size > n_fit:
            sizes = self.split.sizes()
            raise ValueError(
                f"batch_size ({config.batch_size}) is larger than the fit part ({n_fit} rows: "
                f"{n} rows = {sizes['test']} test + {sizes['validation']} validation + {n_fit} "
                "fit); use a smaller batch size, more rows, or a smaller test/validation fraction"
            )
        train = self.split.train
        self.dependence = check_dependence(xs, ys, train)
        self.dependence.raise_if_unbounded(int(train.size))
        marginal_map = RankGaussian if config.marginals == "rank" else Standardizer
        self.standardizer = (marginal_map.fit(xs[train], ys[train]) if config.standardize
                             else Standardizer.identity(xs.shape[1], ys.shape[1]))
        xz, yz = self.standardizer(xs, ys)
        xz32, yz32 = xz.astype(np.float32), yz.astype(np.float32)
        for name, a64, a32 in (("X", xs, xz32), ("Y", ys, yz32)):
            const64 = np.ptp(a64[train], axis=0) == 0
            const32 = np.ptp(a32[train], axis=0) == 0
            if const32.all():
                reason = ("I(X; Y) = 0 exactly, nothing to estimate" if const64.all() else
                          "it varies in float64 but not in float32, the critic's precision: "
                          "rescale it" + ("" if config.standardize
                                          else " or drop --no-standardize"))
                raise ValueError(f"every column of {name} is constant on the train rows "
                                 f"({reason})")
            self.flags += [f"{name}[:, {j}] is constant on the train rows (it carries no "
                           "information)" for j in np.flatnonzero(const64)]
            self.flags += [f"{name}[:, {j}] varies on the train rows but is constant in "
                           "float32 (the critic's precision): rescale it"
                           + (" or drop --no-standardize" if not config.standardize else "")
                           for j in np.flatnonzero(const32 & ~const64)]
        device = torch_device(config.device)
        self.x = torch.from_numpy(xz32).to(device)
        self.y = torch.from_numpy(yz32).to(device)

    def rows(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of one part: ``"fit"``, ``"validation"`` or ``"test"``."""
        idx = torch.from_numpy(getattr(self.split, part)).to(self.x.device)
        return self.x[idx], self.y[idx]


def prepare_samples(x: object, y: object, config: EstimateConfig) -> PreparedSample:
    """Validate, split and standardise a sample (every check that needs no training).

    Raises:
        TypeError, ValueError: bad arrays (:func:`~mi_bounds.estimation.tasks.check_samples`),
            a split that leaves too few rows, or a batch size larger than the fit part.
    """
    if not isinstance(config, EstimateConfig):
        raise TypeError(f"config must be an EstimateConfig, got {type(config).__name__}")
    return PreparedSample(x, y, config)


def estimate_mi_on_samples(
    x: object,
    y: object,
    config: EstimateConfig | None = None,
    *,
    true_mi: float | None = None,
    critic: str = "separable",
    prepared: PreparedSample | None = None,
    **critic_kwargs: object,
) -> tuple[EstimationResult, nn.Module]:
    """Estimate I(X; Y) from a finite sample by the held-out protocol (module docstring).

    Args:
        x, y: arrays ``[n, d_x]``, ``[n, d_y]`` (numpy or torch) of paired samples.
        config: run settings; ``test_fraction``, ``validation_fraction``, ``standardize``,
            ``eval_every``, ``patience`` and ``max_abs_score`` govern the protocol, ``steps``
            is the most training steps (default: :func:`sample_config` with the batch size
            ``min(128, fit rows)``).
        true_mi: the known MI, if any (reported beside the estimate).
        critic: ``"separable"``, ``"concat"``, or ``"auto"``: train both and keep the one with
            the higher validation score (:data:`AUTO_RULE`; about the cost of both, the concat
            critic's dominating); ``critic_kwargs`` are the sizes (missing ones from
            :data:`SAMPLE_CRITIC`; ``embed_dim`` only for the separable critic).
        prepared: the result of :func:`prepare_samples` for these arrays and config, if the
            caller already has it (the CLI validates before it trains).

    Returns:
        ``(result, critic)``: ``result.final`` holds ``name -> (estimate, standard error)`` on
        the test rows, ``result.final_train`` the same on the fit rows, ``result.selection``
        the chosen step and the validation history (with ``critic="auto"`` also
        ``selection["critic"]``: the kept critic and each candidate's best validation score);
        ``result.flags`` the reasons an estimate is not to be trusted; ``critic`` applies the
        standardisation and the cap itself (:class:`StandardizedCritic`).

    Raises:
        TypeError, ValueError: bad input (before any training).
        DivergenceError: the critic diverged (no estimate is reported).
    """
    if config is None:
        n_fit = split_rows(check_samples(x, y)[0].shape[0]).fit.size
        config = sample_config(batch_size=min(int(SAMPLE_DEFAULTS["batch_size"]), n_fit))
    critic_kwargs = {**SAMPLE_CRITIC, **critic_kwargs}
    data = prepare_samples(x, y, config) if prepared is None else prepared
    sizes = data.split.sizes()
    x_fit, y_fit = data.rows("fit")
    fit_task = ArrayTask(x_fit.cpu(), y_fit.cpu(), true_mi=true_mi)
    if critic == "auto" and sizes["validation"] < 2:
        raise ValueError("critic='auto' chooses the critic on the validation rows: use "
                         "validation_fraction > 0 (or name the critic)")

    def cap_of(c: nn.Module) -> float | None:
        return score_cap(c, x_fit, y_fit) if config.cap_scores else None

    validate = None
    if sizes["validation"] >= 2:
        x_val, y_val = data.rows("validation")

        def validate(c: nn.Module) -> float:
            return rows_value(c, x_val, y_val, (config.bound,), clip=config.clip, groups=0,
                              max_abs_score=config.max_abs_score, cap=cap_of(c),
                              where="on the validation rows")[config.bound][0]

    def train_one(name: str) -> tuple[nn.Module, tuple]:
        torch.manual_seed(config.seed)
        net = make_critic(name, fit_task.x_dim, fit_task.y_dim, **critic_kwargs)
        net = net.to(x_fit.device)
        return net, fit_critic(net, fit_task, config, validate)

    if critic == "auto":
        net, (per_step, true_mi_arr, seconds, selection) = _choose_critic(train_one)
    else:
        net, (per_step, true_mi_arr, seconds, selection) = train_one(critic)
    if validate is None:
        steps = len(per_step[config.bound])
        selection = {"step": steps, "validation": [], "stopped_at": steps,
                     "rule": "no validation rows (validation_fraction = 0): the last step"}
    else:
        selection["rule"] = SELECTION_RULE
    x_test, y_test = data.rows("test")
    cap = cap_of(net)
    intervals: dict[str, tuple[float, float]] = {}
    if config.interval == "bootstrap":
        boot = rows_bootstrap(net, x_test, y_test, config.names, clip=config.clip, cap=cap,
                              seed=config.seed, max_abs_score=config.max_abs_score,
                              where="on the test rows")
        final = {k: (b.estimate, b.stderr) for k, b in boot.items()}
        intervals = {k: (b.low, b.high) for k, b in boot.items()}
    else:
        final = rows_value(net, x_test, y_test, config.names, clip=config.clip, cap=cap,
                           max_abs_score=config.max_abs_score, where="on the test rows")
        n_test = int(x_test.shape[0])
        t_quantile = jackknife_quantile(n_test)
        intervals = {k: (m - t_quantile * se, m + t_quantile * se) for k, (m, se) in final.items()}
    final_train = rows_value(net, x_fit, y_fit, config.names, clip=config.clip, groups=0,
                             cap=cap, max_abs_score=config.max_abs_score,
                             where="on the fit rows")
    reasons = list(data.flags)
    if "interrupted_at" in selection:
        reasons.append(
            f"training interrupted (Ctrl-C) after {selection['interrupted_at']} of "
            f"{config.steps} steps: the best checkpoint so far (step {selection['step']}) is "
            "reported; run the same command again for the full run")
    flags: dict[str, list[str]] = {k: list(reasons) for k in final}
    warnings = [f"every estimate is flagged: {reason}" for reason in reasons]
    for k, (_, se) in final.items():
        if se > UNSTABLE_STDERR:
            flags[k].append(f"stderr > {UNSTABLE_STDERR:g}")
            warnings.append(
                f"{k}: UNRELIABLE: the held-out standard error ({se:.3g} nats) exceeds "
                f"{UNSTABLE_STDERR:g}: a few test pairs dominate the estimate; InfoNCE or "
                "SMILE (--bound smile --clip 5) are steadier")
    extra: dict[str, object] = {
        "warnings": warnings,
        "score_cap": {"b": cap, "rule": CAP_RULE} if cap is not None else None,
        "split": {**sizes, "n": int(data.x.shape[0]), "seed": config.seed,
                  "test_fraction": config.test_fraction,
                  "validation_fraction": config.validation_fraction},
        "standardize": config.standardize,
        "marginals": config.marginals,
        "standardizer": data.standardizer.describe(),
        "degenerate": data.dependence.describe(),
        "evaluation": "value on the score matrix of all test rows (blocks of <= 4096 rows); "
                      + (BOOTSTRAP_RULE if config.interval == "bootstrap" else
                         f"standard error: delete-a-group jackknife over {JACKKNIFE_GROUPS} "
                         "groups of rows"),
    }
    covers = {k: interval_covers(k) for k in final}
    if config.interval == "bootstrap":
        extra["interval"] = {"method": "bootstrap", "kind": "percentile",
                             "level": BOOTSTRAP_LEVEL, "resamples": BOOTSTRAP_RESAMPLES,
                             "seed": config.seed, "covers": covers}
    else:
        extra["interval"] = {"method": "jackknife", "kind": "estimate ± t·se",
                             "level": JACKKNIFE_LEVEL, "groups": JACKKNIFE_GROUPS,
                             "df": jackknife_df(n_test),
                             "quantile": None if math.isnan(t_quantile) else t_quantile,
                             "covers": covers}
    result = EstimationResult(per_step, true_mi_arr, final, seconds, config, extra,
                              final_train=final_train, selection=selection, flags=flags,
                              intervals=intervals)
    return result, StandardizedCritic(net, data.standardizer, cap)
