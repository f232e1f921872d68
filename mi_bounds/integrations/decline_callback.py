"""A ``transformers`` callback that classifies TRL's chosen-likelihood curves as they are logged.

    from mi_bounds.integrations.decline_callback import DeclineCallback
    trainer = DPOTrainer(..., callbacks=[DeclineCallback()])   # or MIDPOTrainer, or any Trainer

At every log that carries a watched metric (default ``logps/chosen``, ``rewards/chosen`` and
``rewards/margins``, and their ``eval_`` variants —
:data:`mi_bounds.decline.diagnose.SPLIT_PREFIXES` lists the names recognised), the metric's curve so
far is classified with :func:`mi_bounds.decline.decline_shape` (docs/THEORY.md §6:
``rise-then-fall``, ``fall-from-start``, ``no-decline``, ``too-short``) and the verdict is logged
three ways:

* into the same log entry, under ``decline/<key>`` (the shape, a string) and
  ``decline/<key>/peak_step`` — so it is printed with the other metrics and saved in
  ``trainer_state.json``'s ``log_history``. (Reporting integrations —
  W&B, TensorBoard — run before user callbacks and do not see these keys.);
* a message on the ``mi_bounds.integrations.decline_callback`` logger (``logging``) each time a
  curve's shape changes: WARNING when it becomes a decline, INFO otherwise (main process only);
* :attr:`DeclineCallback.verdicts`, ``{key: DeclineShape}``, for the caller.

The callback only reads logs; it never changes training. Each log costs one ``decline_shape``
call (O(n) in the points so far) per watched key.

Which pairs fell. TRL logs the chosen log-likelihood per batch, not per pair. Given ``pairs``
(TRL rows with string ``prompt``, ``chosen``, ``rejected``: a few to a few hundred, e.g. a sample
of the train set) and optionally ``ches`` (a ``mi-bounds ches`` scores file of exactly those
pairs), the callback scores each tracked chosen response itself
(:class:`~mi_bounds.integrations.tracked_pairs.TrackedPairs`): at ``on_train_begin``, at
``on_train_end``, and when a chosen curve (``logps/chosen``, ``rewards/chosen``, train or eval)
newly becomes a decline (``pairs_at_decline``). It reports the ``top`` pairs of most negative
Δᵢ = log π_T(y⁺ᵢ|xᵢ) − log π_0(y⁺ᵢ|xᵢ) with their CHES and CHES rank (docs/THEORY.md §9), as
``mi-bounds diagnose --ches`` does for a run with per-pair logs::

    DeclineCallback(pairs=train_rows[:200], ches="ches.jsonl", top=10)

* a message on the same logger (WARNING when a chosen curve is a decline, else INFO);
* :attr:`DeclineCallback.displaced` (the top pairs: ``index``, ``chosen_change``, ``ches``,
  ``ches_rank``) and :attr:`DeclineCallback.chosen_change` (Δᵢ of every tracked pair);
* at the end, ``displaced/pairs``, ``displaced/chosen_change`` and ``displaced/ches_rank``
  (lists) in the last entry of ``log_history``.

The model and tokenizer are the ones the trainer passes to callbacks (``model``,
``processing_class``; ``tokenizer=`` overrides). Each scoring is N no-grad forward passes on the
main process, in eval mode (each module's mode restored afterwards); weights sharded across
processes (ZeRO-3, FSDP) are not supported: the pairs are then not scored (a WARNING says so).
Without ``pairs`` nothing is scored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import TrainerCallback

from mi_bounds.decline.diagnose import SPLIT_PREFIXES
from mi_bounds.decline.shape import DeclineShape, decline_shape
from mi_bounds.integrations.tracked_pairs import TrackedPairs, sharded_weights

__all__ = ["DEFAULT_METRICS", "DeclineCallback"]

logger = logging.getLogger(__name__)

#: the TRL metrics watched by default (each in train and eval)
DEFAULT_METRICS: tuple[str, ...] = ("logps/chosen", "rewards/chosen", "rewards/margins")
_DECLINES = ("rise-then-fall", "fall-from-start")
#: curves of the chosen response: their decline is what the tracked pairs explain
_CHOSEN = ("logps/chosen", "rewards/chosen")


def _is_chosen(key: str) -> bool:
    return key.endswith(_CHOSEN)


class DeclineCallback(TrainerCallback):
    """Apply the decline shape (docs/THEORY.md §6) online to TRL's logged metrics; log the verdicts.

    Args:
        metrics: TRL metric names to watch (each under every prefix of
            :data:`~mi_bounds.decline.diagnose.SPLIT_PREFIXES`, and TRL's
            ``eval_<name>_<metric>`` for named eval sets).
        noise: per-point noise σ (e.g. from seeds); ``None`` estimates it from each curve.
        min_points: fewer logged steps give ``too-short``.
        alpha: the rule's level, passed to :func:`~mi_bounds.decline.decline_shape`.
        pairs: TRL rows (string ``prompt``, ``chosen``, ``rejected``) whose chosen
            log-likelihood is tracked (module docstring); ``None``: none.
        ches: the CHES of exactly those pairs, in order: a ``mi-bounds ches`` scores file's
            path or its rows (with ``pair_sha``, checked against the pairs' encoding).
        top: how many of the most-displaced tracked pairs to report.
        pair_format, system: how the pairs are encoded, as ``mi-bounds ches --format/--system``
            (``"auto"``: the tokenizer's chat template if it has one; ``"raw"`` is closer to
            TRL's encoding of plain-string rows).
        tokenizer: the tokenizer for the pairs (default: the trainer's ``processing_class``).
        batch_size: sequences per no-grad forward pass when scoring the pairs.
        pairs_at_decline: also score the pairs when a chosen curve newly becomes a decline.

    Raises:
        ValueError: naming the argument (e.g. ``ches`` of another length than ``pairs``, a
            row without a string field, ``top < 1``).

    Attributes:
        verdicts: ``{logged key: DeclineShape}``, the latest verdict per curve.
        curves: ``{logged key: (steps, values)}``, the points read so far.
        tracked: the :class:`~mi_bounds.integrations.tracked_pairs.TrackedPairs`, or ``None``.
    """

    def __init__(self, metrics: Sequence[str] = DEFAULT_METRICS, *, noise: float | None = None,
                 min_points: int = 3, alpha: float = 0.05,
                 pairs: Sequence[Mapping[str, Any]] | None = None, ches: Any = None,
                 top: int = 10, pair_format: str = "auto", system: str | None = None,
                 tokenizer: Any = None, batch_size: int = 8,
                 pairs_at_decline: bool = True) -> None:
        if isinstance(metrics, str) or not metrics:
            raise ValueError(f"metrics must be a non-empty sequence of names, got {metrics!r}")
        if int(min_points) < 3:
            raise ValueError(f"min_points must be >= 3, got {min_points!r}")
        if noise is not None and not (math.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise must be a finite number >= 0 or None, got {noise!r}")
        self.metrics = tuple(metrics)
        if not 0.0 < alpha < 0.5:
            raise ValueError(f"alpha must lie in (0, 0.5), got {alpha!r}")
        self.noise, self.min_points, self.alpha = noise, int(min_points), float(alpha)
        self.verdicts: dict[str, DeclineShape] = {}
        self.curves: dict[str, tuple[list[float], list[float]]] = {}
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise ValueError(f"top must be an integer >= 1, got {top!r}")
        if pairs is None and ches is not None:
            raise ValueError("ches scores tracked pairs: give pairs too (the rows it scores)")
        self.tracked = None if pairs is None else TrackedPairs(
            pairs, ches, top=top, pair_format=pair_format, system=system, batch_size=batch_size)
        self.tokenizer, self.pairs_at_decline = tokenizer, bool(pairs_at_decline)

    @property
    def displaced(self) -> list[dict[str, Any]] | None:
        """The latest report on the tracked pairs: the ``top`` of most negative chosen change,
        each ``{"index", "chosen_change"}`` (+ ``"ches"``, ``"ches_rank"`` with ``ches``)."""
        return None if self.tracked is None else self.tracked.displaced

    @property
    def chosen_change(self) -> Any:
        """Δᵢ of every tracked pair at the latest report, (N,) float64 (or ``None``)."""
        return None if self.tracked is None else self.tracked.chosen_change

    def _watched(self, logs: Mapping[str, Any]) -> list[str]:
        keys = []
        for metric in self.metrics:
            for prefixes in SPLIT_PREFIXES.values():
                keys += [p + metric for p in prefixes if p + metric in logs]
            keys += [k for k in logs if k.startswith("eval_") and k.endswith("_" + metric)
                     and k != "eval_" + metric and k not in keys]
        return keys

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        step = float(state.global_step)
        entry = state.log_history[-1] if state.log_history else None
        same = entry is not None and entry.get("step") == state.global_step and all(
            entry.get(k) == v for k, v in logs.items() if not k.startswith("decline/"))
        fell: list[str] = []  # chosen curves that became a decline at this log
        for key in self._watched(logs):
            value = logs[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            steps, values = self.curves.setdefault(key, ([], []))
            steps.append(step)
            values.append(float(value))
            if not all(math.isfinite(v) for v in values):
                continue  # a NaN/inf was logged: no shape from here on (diagnose says where)
            verdict = decline_shape(values, steps, noise=self.noise, alpha=self.alpha,
                                    min_points=self.min_points)
            before = self.verdicts.get(key)
            self.verdicts[key] = verdict
            extra = {f"decline/{key}": verdict.shape,
                     f"decline/{key}/peak_step": verdict.peak_step}
            logs.update(extra)
            if same:
                entry.update(extra)
            if (before is None or before.shape != verdict.shape) and state.is_world_process_zero:
                self._announce(key, verdict, state.global_step)
                if verdict.shape in _DECLINES and _is_chosen(key):
                    fell.append(key)
        if fell and self.pairs_at_decline and self._tracking(kwargs.get("model")):
            self.tracked.measure(kwargs["model"], state.global_step)
            logger.warning("step %d: %s became a decline; %s", state.global_step,
                           ", ".join(fell), self.tracked.report())

    def on_train_begin(self, args, state, control, **kwargs):
        if self.tracked is None or not state.is_world_process_zero:
            return
        model = kwargs.get("model")
        if model is None:
            raise ValueError("pairs: the trainer passed no model to the callback")
        if sharded_weights(model):
            logger.warning("the %d tracked pairs are not scored: the model's weights are "
                           "sharded across processes (ZeRO-3, FSDP)", len(self.tracked))
            return
        tokenizer = next((t for t in (self.tokenizer, kwargs.get("processing_class"),
                                      kwargs.get("tokenizer")) if t is not None), None)
        if tokenizer is None:
            raise ValueError("pairs: the trainer passed no processing_class to the callback; "
                             "give DeclineCallback(tokenizer=...)")
        self.tracked.start(model, tokenizer, state.global_step)
        logger.info("step %d: chosen log-likelihood of %d tracked pairs recorded",
                    state.global_step, len(self.tracked))

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.verdicts:
            logger.info("decline verdicts at the end of training: %s", "; ".join(
                f"{k} {v.shape} (peak at step {v.peak_step:g}, drop {v.drop_from_peak:.4g})"
                for k, v in self.verdicts.items()))
        if self._tracking(kwargs.get("model")):
            self.tracked.measure(kwargs["model"], state.global_step)
            declined = any(_is_chosen(k) and v.shape in _DECLINES
                           for k, v in self.verdicts.items())
            logger.log(logging.WARNING if declined else logging.INFO, "at the end of training: "
                       "%s", self.tracked.report())
            if state.log_history:
                state.log_history[-1].update(self.tracked.summary())

    def _tracking(self, model: Any) -> bool:
        """Whether tracked pairs were recorded at the start (main process) and can be scored."""
        return self.tracked is not None and self.tracked.started and model is not None

    @staticmethod
    def _announce(key: str, v: DeclineShape, step: int) -> None:
        if v.shape == "too-short":
            return
        msg = (f"step {step}: {key} is {v.shape} (peak {v.peak:.4g} at step {v.peak_step:g}, "
               f"drop from peak {v.drop_from_peak:.4g}, noise level {v.noise:.3g})")
        if v.shape in _DECLINES:
            logger.warning("%s", msg)
        else:
            logger.info("%s", msg)
