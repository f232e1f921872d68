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
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import TrainerCallback

from mi_bounds.decline.diagnose import SPLIT_PREFIXES
from mi_bounds.decline.shape import DeclineShape, decline_shape

__all__ = ["DEFAULT_METRICS", "DeclineCallback"]

logger = logging.getLogger(__name__)

#: the TRL metrics watched by default (each in train and eval)
DEFAULT_METRICS: tuple[str, ...] = ("logps/chosen", "rewards/chosen", "rewards/margins")
_DECLINES = ("rise-then-fall", "fall-from-start")


class DeclineCallback(TrainerCallback):
    """Apply the decline shape (docs/THEORY.md §6) online to TRL's logged metrics; log the verdicts.

    Args:
        metrics: TRL metric names to watch (each under every prefix of
            :data:`~mi_bounds.decline.diagnose.SPLIT_PREFIXES`, and TRL's
            ``eval_<name>_<metric>`` for named eval sets).
        noise: per-point noise σ (e.g. from seeds); ``None`` estimates it from each curve.
        min_points: fewer logged steps give ``too-short``.
        alpha: the rule's level, passed to :func:`~mi_bounds.decline.decline_shape`.

    Attributes:
        verdicts: ``{logged key: DeclineShape}``, the latest verdict per curve.
        curves: ``{logged key: (steps, values)}``, the points read so far.
    """

    def __init__(self, metrics: Sequence[str] = DEFAULT_METRICS, *, noise: float | None = None,
                 min_points: int = 3, alpha: float = 0.05) -> None:
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

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.verdicts:
            logger.info("decline verdicts at the end of training: %s", "; ".join(
                f"{k} {v.shape} (peak at step {v.peak_step:g}, drop {v.drop_from_peak:.4g})"
                for k, v in self.verdicts.items()))

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
