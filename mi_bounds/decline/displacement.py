"""Does CHES predict which pairs displace? Rank correlations and the pairs most responsible.

Inputs: a CHES scores file written by ``mi-bounds ches`` (one JSON line per pair with
``index``, ``ches``, ``ches_normalized``, ``n_chosen``, ``n_rejected``, ``edit_distance``;
:func:`read_ches_scores`) and, from a training run with per-pair logs, each train pair's change
of the chosen log-likelihood Δᵢ = log π_T(y⁺ᵢ|xᵢ) − log π_0(y⁺ᵢ|xᵢ) (negative: displaced).

* :func:`spearman` / :func:`spearman_interval`: Spearman's ρ (Pearson correlation of the ranks,
  ties given their mean rank) with a percentile bootstrap interval over pairs;
  :func:`spearman_replicates`: the same for several predictors and arms of several seeds, with
  two-level (pairs × seeds) replicates shared across them, so that differences are paired.
* :func:`displacement_predictors`: ρ between each predictor and the chosen *drop* −Δᵢ — CHES
  and its normalised variant (Razin et al., ICLR 2025, arXiv 2410.08847: high CHES, large
  drop, so ρ > 0 if the prediction holds) against the baselines response length (|y⁺|, |y⁻|),
  token edit distance between y⁺ and y⁻, and the step-0 margin log π_0(y⁺|x) − log π_0(y⁻|x)
  when given.
* :func:`top_displaced_pairs`: the pairs with the largest chosen drop, with their CHES and its
  rank: what ``mi-bounds diagnose`` prints for a run that logs per-pair values, and
  :class:`~mi_bounds.integrations.decline_callback.DeclineCallback` for the pairs it tracks
  (:func:`format_displaced_pairs`: the lines both print).

See docs/THEORY.md, "Which pairs displace: CHES".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "PREDICTORS",
    "displaced_pairs_report",
    "displacement_predictors",
    "format_displaced_pairs",
    "per_pair_chosen_change",
    "rankdata",
    "read_ches_scores",
    "spearman",
    "spearman_interval",
    "spearman_replicates",
    "token_edit_distance",
    "top_displaced_pairs",
]

#: predictors read from a scores file (plus "margin0" when step-0 margins are given)
PREDICTORS = ("ches", "ches_normalized", "n_chosen", "n_rejected", "edit_distance")
_REQUIRED = ("index", "ches", "ches_normalized")


def token_edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance between two token sequences (insert, delete, substitute: cost 1).

    Row by row: with E_j = min(D_{i−1,j} + 1, D_{i−1,j−1} + [a_i ≠ b_j]), the insertion chain
    D_{i,j} = min_{k ≤ j}(E_k + j − k) is a running minimum of E_k − k (vectorised per row).
    """
    x, y = np.asarray(list(a), dtype=np.int64), np.asarray(list(b), dtype=np.int64)
    if x.size < y.size:
        x, y = y, x
    if y.size == 0:
        return int(x.size)
    j = np.arange(y.size + 1)
    prev = j.copy()  # D_{0, j} = j
    for i, token in enumerate(x, start=1):
        e = np.empty_like(prev)
        e[0] = i
        e[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (y != token))
        prev = np.minimum.accumulate(e - j) + j
    return int(prev[-1])


def rankdata(x: ArrayLike) -> NDArray[np.float64]:
    """Ranks 1..n of a 1-d array, ties given the mean of their ranks (``scipy.stats.rankdata``
    with ``method="average"``)."""
    v = np.asarray(x, dtype=np.float64)
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    end = np.cumsum(counts)  # the distinct values hold ranks end - count + 1 .. end
    return ((2 * end - counts + 1) / 2.0)[inverse.reshape(-1)]


def _check_xy(x: ArrayLike, y: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"x and y must be 1-d of one length, got shapes {a.shape} and {b.shape}")
    if a.size < 3:
        raise ValueError(f"a rank correlation needs at least 3 pairs, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("x and y must be finite")
    return a, b


def _pearson_rows(rx: NDArray[np.float64], ry: NDArray[np.float64]) -> NDArray[np.float64]:
    """Pearson correlation along the last axis; NaN where a row is constant."""
    cx = rx - rx.mean(-1, keepdims=True)
    cy = ry - ry.mean(-1, keepdims=True)
    den = np.sqrt((cx * cx).sum(-1) * (cy * cy).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (cx * cy).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's ρ = Pearson correlation of the (average) ranks; NaN if x or y is constant."""
    a, b = _check_xy(x, y)
    return float(_pearson_rows(rankdata(a), rankdata(b)))


def spearman_interval(x: ArrayLike, y: ArrayLike, *, n_boot: int = 2000, level: float = 0.95,
                      seed: int = 0) -> dict[str, float]:
    """ρ with a percentile bootstrap interval: pairs (xᵢ, yᵢ) resampled with replacement
    ``n_boot`` times, ranks recomputed in each resample; resamples with a constant side are
    dropped. Returns ``{"rho", "low", "high", "n", "n_boot"}``."""
    a, b = _check_xy(x, y)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    rhos = []
    for start in range(0, n_boot, 256):  # (chunk, n) index blocks keep memory bounded
        idx = rng.integers(0, a.size, size=(min(256, n_boot - start), a.size))
        rx = np.stack([rankdata(row) for row in a[idx]])
        ry = np.stack([rankdata(row) for row in b[idx]])
        rhos.append(_pearson_rows(rx, ry))
    boot = np.concatenate(rhos)
    boot = boot[np.isfinite(boot)]
    alpha = (1 - level) / 2
    low, high = (np.quantile(boot, [alpha, 1 - alpha]) if boot.size else (math.nan, math.nan))
    return {"rho": spearman(a, b), "low": float(low), "high": float(high), "n": int(a.size),
            "n_boot": int(boot.size)}


def spearman_replicates(
    predictors: ArrayLike, drops: Sequence[ArrayLike], *, n_boot: int = 2000, seed: int = 0,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Spearman ρ of each predictor against each arm's seed-mean drop, with two-level bootstrap
    replicates (pairs × seeds) shared across predictors and arms.

    Each replicate draws the P pairs with replacement once (the same draw for every predictor
    and every arm, so that differences of two ρ's are paired) and, for each arm independently,
    its S seeds with replacement; the arm's drop of pair i is the mean over the drawn seeds, and
    ρ is recomputed on the drawn pairs (ranks of the resample, ties at their mean rank). A
    percentile interval of any combination of the ρ's is read off the replicates.

    Args:
        predictors: ``[K, P]`` (or ``[P]``): K predictors of the P pairs.
        drops: one ``[S_a, P]`` array per arm: each seed's drop −Δᵢ of every pair.
        n_boot, seed: replicates and generator seed.

    Returns:
        ``(rho, reps)``: ``rho[K, A]`` on the seed means of all the data, and ``reps[n_boot, K,
        A]`` (NaN in a replicate whose drawn predictor or drop is constant).
    """
    x = np.atleast_2d(np.asarray(predictors, dtype=np.float64))
    ys = [np.atleast_2d(np.asarray(d, dtype=np.float64)) for d in drops]
    if x.ndim != 2 or not ys:
        raise ValueError(f"predictors must be [K, P] and drops non-empty, got {x.shape}, "
                         f"{len(ys)} arm(s)")
    n_pairs = x.shape[1]
    if n_pairs < 3:
        raise ValueError(f"a rank correlation needs at least 3 pairs, got {n_pairs}")
    if any(y.ndim != 2 or y.shape[1] != n_pairs or y.shape[0] < 1 for y in ys):
        raise ValueError(f"every drops array must be [seeds, {n_pairs}], got "
                         f"{[y.shape for y in ys]}")
    if not (np.isfinite(x).all() and all(np.isfinite(y).all() for y in ys)):
        raise ValueError("predictors and drops must be finite")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rx_all = np.stack([rankdata(row) for row in x])
    rho = np.stack([_pearson_rows(rx_all, rankdata(y.mean(0))[None, :]) for y in ys], axis=1)
    rng = np.random.default_rng(seed)
    reps = np.empty((n_boot, x.shape[0], len(ys)))
    for b in range(n_boot):
        idx = rng.integers(0, n_pairs, size=n_pairs)
        rx = np.stack([rankdata(row) for row in x[:, idx]])
        for a, y in enumerate(ys):
            s = rng.integers(0, y.shape[0], size=y.shape[0])
            ry = rankdata(y[s][:, idx].mean(0))
            reps[b, :, a] = _pearson_rows(rx, ry[None, :])
    return rho, reps


def read_ches_scores(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a complete ``mi-bounds ches`` scores file, in order (``index`` 0..N−1).

    ``ValueError`` naming the line if a line is not JSON, lacks ``index``/``ches``/
    ``ches_normalized``, or the indices are not 0, 1, 2, ... (a truncated or mixed file).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"scores file {str(p)!r} does not exist")
    rows: list[dict[str, Any]] = []
    with open(p, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{p}:{lineno}: not valid JSON ({err.msg})") from None
            missing = [k for k in _REQUIRED if not isinstance(row, dict) or k not in row]
            if missing:
                raise ValueError(f"{p}:{lineno}: missing field(s) {', '.join(missing)}")
            if row["index"] != len(rows):
                raise ValueError(f"{p}:{lineno}: index {row['index']}, expected {len(rows)}")
            rows.append(row)
    if not rows:
        raise ValueError(f"scores file {str(p)!r} holds no scores")
    return rows


def _changes(chosen_change: Sequence[float] | Mapping[int, float] | NDArray[Any],
             n: int) -> NDArray[np.float64]:
    """Δ per pair index 0..n−1 from a sequence (index = position) or a {index: Δ} mapping."""
    if isinstance(chosen_change, Mapping):
        missing = [i for i in range(n) if i not in chosen_change]
        if missing:
            raise ValueError(f"chosen_change has no value for pair(s) {missing[:5]} "
                             f"({len(missing)} of {n})")
        return np.array([float(chosen_change[i]) for i in range(n)])
    values = np.asarray(chosen_change, dtype=np.float64)
    if values.shape != (n,):
        raise ValueError(f"chosen_change must have one value per scored pair ({n}), got shape "
                         f"{values.shape}")
    return values


def displacement_predictors(
    scores: Sequence[Mapping[str, Any]],
    chosen_change: Sequence[float] | Mapping[int, float] | NDArray[Any],
    *,
    margin0: Sequence[float] | NDArray[Any] | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Spearman ρ (with a bootstrap interval) between each predictor and the chosen drop −Δᵢ.

    Args:
        scores: the rows of a scores file (:func:`read_ches_scores`), pair i at position i.
        chosen_change: Δᵢ = log π_T(y⁺ᵢ|xᵢ) − log π_0(y⁺ᵢ|xᵢ) per pair, as a sequence in
            pair order or a ``{index: Δ}`` mapping (a run may log a subset; then pass only the
            scores of that subset, re-indexed).
        margin0: optional step-0 margins log π_0(y⁺ᵢ|xᵢ) − log π_0(y⁻ᵢ|xᵢ), one per pair.
        n_boot, level, seed: the bootstrap (:func:`spearman_interval`).

    Returns:
        ``{predictor: {"rho", "low", "high", "n", "n_boot"}}`` for each of :data:`PREDICTORS`
        present in every row (``edit_distance`` and the lengths are written by
        ``mi-bounds ches``), and ``margin0`` when given. ρ > 0: a larger predictor goes with a
        larger drop of the chosen log-likelihood.
    """
    n = len(scores)
    drop = -_changes(chosen_change, n)
    out: dict[str, dict[str, float]] = {}
    for name in PREDICTORS:
        if all(name in row for row in scores):
            x = np.array([float(row[name]) for row in scores])
            out[name] = spearman_interval(x, drop, n_boot=n_boot, level=level, seed=seed)
    if margin0 is not None:
        m = np.asarray(margin0, dtype=np.float64)
        if m.shape != (n,):
            raise ValueError(f"margin0 must have one value per scored pair ({n}), got shape "
                             f"{m.shape}")
        out["margin0"] = spearman_interval(m, drop, n_boot=n_boot, level=level, seed=seed)
    return out


def top_displaced_pairs(
    chosen_change: Sequence[float] | Mapping[int, float] | NDArray[Any],
    scores: Sequence[Mapping[str, Any]],
    *,
    k: int = 10,
    key: str = "ches",
) -> list[dict[str, Any]]:
    """The ``k`` pairs whose chosen log-likelihood fell most (Δᵢ most negative; ties by index),
    each with ``index``, ``chosen_change``, its CHES (``key``) and the CHES rank (1 = highest
    CHES of the data set, ties by index) — the pairs most responsible for a decline, and
    whether CHES flagged them before training."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = len(scores)
    delta = _changes(chosen_change, n)
    if not all(key in row for row in scores):
        raise ValueError(f"every score row needs the field {key!r}")
    values = np.array([float(row[key]) for row in scores])
    by_score = sorted(range(n), key=lambda i: (-values[i], i))
    rank = np.empty(n, dtype=np.int64)
    rank[by_score] = np.arange(1, n + 1)
    worst = sorted(range(n), key=lambda i: (delta[i], i))[:k]
    return [{"index": int(scores[i].get("index", i)), "chosen_change": float(delta[i]),
             key: float(values[i]), f"{key}_rank": int(rank[i])} for i in worst]


def per_pair_chosen_change(history: Sequence[Mapping[str, Any]], split: str = "train",
                           ) -> NDArray[np.float64] | None:
    """Each evaluation pair's chosen log-likelihood change, last evaluation minus first, from an
    align ``result.json`` history that logs pairs one by one (``history[t][split]
    ["logps/chosen/per_pair"]``, as ``align.per_pair`` writes it), or ``None`` if it does not.

    Raises:
        ValueError: the per-pair lists differ in length between evaluations.
    """
    rows = [h.get(split, {}).get("logps/chosen/per_pair") for h in history
            if isinstance(h, Mapping)]
    rows = [r for r in rows if isinstance(r, list)]
    if len(rows) < 2:
        return None
    first, last = rows[0], rows[-1]
    if len(first) != len(last):
        raise ValueError(f"{split} per-pair lists change length ({len(first)} -> {len(last)})")
    a = np.array([np.nan if v is None else float(v) for v in first])
    b = np.array([np.nan if v is None else float(v) for v in last])
    return b - a


def displaced_pairs_report(change: NDArray[np.float64],
                           scores: Sequence[Mapping[str, Any]] | None = None, *, k: int = 10,
                           ) -> list[dict[str, Any]]:
    """The ``k`` pairs whose chosen log-likelihood fell most (:func:`top_displaced_pairs`), each
    with its CHES and CHES rank when a scores file for the same pairs is given; without scores,
    only ``index`` and ``chosen_change``."""
    if scores is not None:
        if len(scores) != change.size:
            raise ValueError(f"the CHES scores file has {len(scores)} pairs, the log "
                             f"{change.size}: score the run's own train pairs file")
        return top_displaced_pairs(change, scores, k=k)
    order = sorted(range(change.size), key=lambda i: (change[i], i))[:k]
    return [{"index": int(i), "chosen_change": float(change[i])} for i in order]



def format_displaced_pairs(rows: Sequence[Mapping[str, Any]], heading: str) -> str:
    """``heading`` then one line per pair of :func:`displaced_pairs_report`:
    ``pair I: ±Δ nats`` and, where scores were given, ``; CHES c, rank r``."""
    lines = [heading]
    for r in rows:
        ches = (f"; CHES {r['ches']:.4g}, rank {r['ches_rank']}" if "ches_rank" in r else "")
        lines.append(f"  pair {r['index']}: {r['chosen_change']:+.3f} nats{ches}")
    return "\n".join(lines)
