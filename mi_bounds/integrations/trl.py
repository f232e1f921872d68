"""Every loss of :mod:`mi_bounds.preference` inside TRL 1.16's ``DPOTrainer`` (extra ``trl``).

    from trl import DPOConfig
    from mi_bounds.integrations.trl import MIDPOTrainer, DeclineCallback

    args = DPOConfig(output_dir="out", loss_type=["mio"], beta=0.1)        # or ["mio", "sft"], ...
    trainer = MIDPOTrainer(model=model, args=args, train_dataset=pairs, processing_class=tok,
                           callbacks=[DeclineCallback()])
    trainer.train()

``args.loss_type`` may name any key of :data:`mi_bounds.preference.LOSSES` (``dpo``, ``mio``,
``bco_pair``, ``infonce``, ``nwj``, ``ipo``, ``hinge``, ``robust``, ``nca_pair``, ``sppo_hard``,
``apo_zero``, ``apo_down``, ``exo_pair``, ``discopop``, ``sigmoid_norm``) next to TRL's own
``sigmoid``, ``aot``, ``aot_unpaired`` and ``sft``, or a loss of your own
(:func:`mi_bounds.preference.register_loss`'s name, or ``"FILE.py:FUNCTION"``, loaded and
registered); ``args.loss_weights`` weighs them as in TRL.
Names of ``LOSSES`` are computed by :func:`mi_bounds.preference.preference_loss` (one
implementation per formula; for the names TRL also has, the two agree to round-off —
tests/test_preference.py), the others by TRL.

**The hook.** TRL 1.16 computes its losses inline in ``DPOTrainer._compute_loss`` (a chain of
``if loss_type == ...``) and offers no hook for another loss, so :class:`MIDPOTrainer` overrides
only the public ``compute_loss`` and lets TRL's own ``_compute_loss`` do everything else:

1. the reference log-probabilities of the batch come from TRL's ``compute_ref_log_probs`` (the
   reference model, or the PEFT model with its adapter disabled, as TRL does it), unless they
   were precomputed (``precompute_ref_log_probs=True``), and are handed to TRL in the batch as if
   precomputed — so there is still one reference forward per batch;
2. TRL's ``_compute_loss`` runs unchanged with TRL's names only (``sigmoid`` at weight 0 if there
   are none): the policy forward, its metrics (``rewards/*``, ``logps/*``, ``logits/*``,
   entropy, token accuracy, gathered across processes), the MoE auxiliary loss. The ``model`` it
   calls is wrapped in a recorder that keeps the forward's per-token log-probabilities;
3. the sequence log-probabilities are their sum over the completion (TRL's own reduction), and
   each mi-bounds loss is added with its weight.

Backward, optimiser, gradient accumulation, mixed precision, accelerate (DDP, FSDP, DeepSpeed)
and PEFT are TRL's and ``transformers.Trainer``'s code paths, untouched. Not supported with an
mi-bounds name (a ``ValueError`` at construction): ``ld_alpha`` (TRL reweights tokens inside its
sequence log-probabilities), ``use_weighting`` (WPO weights) and an ``f_divergence_type`` other
than ``reverse_kl`` (the losses are functions of the log-ratio critic, docs/THEORY.md §2).

**Name and shape mapping.** ``beta`` → ``beta``; ``label_smoothing`` → ``robust``/``exo_pair``'s
ε; ``discopop_tau`` → ``discopop``'s τ; the completion-token counts (``completion_mask`` summed
per row) → ``chosen_lengths``/``rejected_lengths`` of ``ipo`` and ``sigmoid_norm``. TRL's batch
holds the B chosen sequences first and the B rejected ones after.

**InfoNCE with K−1 negatives.** Rows of a batch with the same prompt and chosen response (equal
token ids) are one InfoNCE example whose negatives are their K−1 rejected responses:
``-T_w + logsumexp(T_w, T_l1, …, T_l(K-1)) - log K``, averaged over those examples. With one
rejected response per prompt this is K = 2, i.e. ``dpo - log 2``. Write the data as one row per
(prompt, chosen, rejected) — :func:`expand_negatives` turns a ``rejected`` list into such rows —
and the training sampler keeps each group in one batch (groups shuffled, rows of a group
adjacent); ``per_device_train_batch_size`` must then be a multiple of the group size.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler
from trl import DPOTrainer

from mi_bounds.integrations.decline_callback import DeclineCallback
from mi_bounds.preference import LOSSES, get_loss, preference_loss, registered_losses

__all__ = ["TRL_ONLY_LOSSES", "DeclineCallback", "GroupShuffleSampler", "MIDPOTrainer",
           "expand_negatives", "split_loss_types"]

#: TRL 1.16 loss types that mi-bounds does not implement; they stay TRL's
TRL_ONLY_LOSSES: tuple[str, ...] = ("sigmoid", "aot", "aot_unpaired", "sft")


def split_loss_types(
    loss_types: Sequence[str], loss_weights: Sequence[float] | None = None
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Split TRL's ``loss_type``/``loss_weights`` into (mi-bounds losses, TRL-only losses).

    Raises:
        ValueError: a name that is neither a key of ``LOSSES`` nor in :data:`TRL_ONLY_LOSSES`,
            or weights of another length.
    """
    names = [loss_types] if isinstance(loss_types, str) else list(loss_types)
    weights = [1.0] * len(names) if loss_weights is None else [float(w) for w in loss_weights]
    if len(weights) != len(names):
        raise ValueError(f"loss_weights must have one weight per loss_type ({len(names)}), "
                         f"got {len(weights)}")
    ours, theirs = [], []
    for name, w in zip(names, weights, strict=True):
        if name in TRL_ONLY_LOSSES:  # TRL's own name wins (``sft`` is in both: TRL computes it)
            theirs.append((name, w))
        elif name in LOSSES or name in registered_losses() or ":" in name:
            ours.append((get_loss(name).name, w))  # FILE.py:FUNCTION is loaded and registered
        else:
            raise ValueError(f"unknown loss_type {name!r}; mi-bounds losses: {', '.join(LOSSES)}; "
                             f"TRL-only losses: {', '.join(TRL_ONLY_LOSSES)}")
    return ours, theirs


def expand_negatives(dataset: Any, column: str = "rejected") -> Any:
    """One row per rejected response: a ``datasets.Dataset`` whose ``column`` holds lists → rows.

    ``{"prompt": p, "chosen": c, "rejected": [r1, r2, r3]}`` becomes three rows ``(p, c, r_j)``,
    adjacent, which :class:`MIDPOTrainer` with ``loss_type=["infonce"]`` scores as one InfoNCE
    example with K − 1 = 3 negatives. One response is a string or, in TRL's conversational
    format, a list of message dicts; a row holding one response is kept as it is.
    """
    def one(x: Any) -> bool:
        return isinstance(x, str) or (isinstance(x, list) and bool(x) and isinstance(x[0], dict))

    def explode(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {k: [] for k in batch}
        for i, neg in enumerate(batch[column]):
            negs = [neg] if one(neg) else list(neg)
            if not negs:
                raise ValueError(f"row {i}: empty {column!r} list")
            for r in negs:
                for k in batch:
                    out[k].append(r if k == column else batch[k][i])
        return out

    return dataset.map(explode, batched=True, desc=f"one row per {column} response")


def _group_ids(chosen_rows: torch.Tensor) -> torch.Tensor:
    """Group index of each row: equal rows (same prompt and chosen tokens) share one. ``[B]``."""
    _, inverse = torch.unique(chosen_rows, dim=0, return_inverse=True)
    return inverse


class GroupShuffleSampler(Sampler[int]):
    """Shuffle groups of rows, keep each group's rows adjacent; a new order every epoch.

    Args:
        groups: one list of dataset indices per group.
        seed: the order of epoch ``e`` is a permutation drawn with seed ``seed + e`` (the same on
            every process, as accelerate needs).
    """

    def __init__(self, groups: Sequence[Sequence[int]], seed: int = 0) -> None:
        self.groups = [list(g) for g in groups]
        self.seed, self.epoch = int(seed), 0
        self._explicit_epoch = False

    def set_epoch(self, epoch: int) -> None:
        """Called by accelerate/transformers at each epoch."""
        self.epoch, self._explicit_epoch = int(epoch), True

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.groups), generator=g).tolist()
        if not self._explicit_epoch:
            self.epoch += 1
        for i in order:
            yield from self.groups[i]


class _ForwardRecorder:
    """Stands in for the model in TRL's ``_compute_loss``; keeps its fused-head forward output."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.output: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.model(*args, **kwargs)
        if kwargs.get("fused_lm_head") and self.output is None:
            self.output = out
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


class MIDPOTrainer(DPOTrainer):
    """TRL's ``DPOTrainer`` whose ``loss_type`` may name any loss of :mod:`mi_bounds.preference`.

    Takes exactly ``DPOTrainer``'s arguments (module docstring: what is and is not supported).
    With TRL-only names in ``loss_type`` it is ``DPOTrainer``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cfg = kwargs.get("args") if "args" in kwargs else (args[2] if len(args) > 2 else None)
        if cfg is not None:
            ours, _ = split_loss_types(cfg.loss_type, cfg.loss_weights)
            if ours:
                if cfg.ld_alpha is not None:
                    raise ValueError("ld_alpha is not supported with mi-bounds losses "
                                     f"({', '.join(n for n, _ in ours)}): TRL applies it inside "
                                     "its sequence log-probabilities")
                if cfg.use_weighting:
                    raise ValueError("use_weighting (WPO) is not supported with mi-bounds losses")
                if cfg.f_divergence_type != "reverse_kl":
                    raise ValueError(
                        f"f_divergence_type={cfg.f_divergence_type!r} is not supported with "
                        "mi-bounds losses: they are functions of the log-ratio critic "
                        "(reverse_kl)")
        super().__init__(*args, **kwargs)
        self._mi_losses, self._trl_losses = split_loss_types(self.loss_types, self.loss_weights)
        zero = torch.zeros(1)
        for name, _ in self._mi_losses:  # TRL's settings checked once, up front (label_smoothing…)
            preference_loss(name, zero, zero, zero, zero, beta=self.beta,
                            **self._params(name, torch.ones(2, 3, dtype=torch.long), zero))
        self._groups = self._train_groups()

    # -- data ------------------------------------------------------------------------------

    def _train_groups(self) -> list[list[int]] | None:
        """Index groups of rows sharing prompt and chosen (only for infonce; else None)."""
        if not any(n == "infonce" for n, _ in self._mi_losses):
            return None
        ds = self.train_dataset
        if ds is None or not hasattr(ds, "column_names") or not {
                "prompt_ids", "chosen_ids"} <= set(ds.column_names):
            return None
        index: dict[tuple, list[int]] = {}
        for i, (p, c) in enumerate(zip(ds["prompt_ids"], ds["chosen_ids"], strict=True)):
            index.setdefault((tuple(p), tuple(c)), []).append(i)
        groups = list(index.values())
        sizes = {len(g) for g in groups}
        if max(sizes) == 1:
            return None
        bs = self.args.per_device_train_batch_size
        if len(sizes) == 1:
            (k,) = sizes
            if bs % k:
                raise ValueError(
                    f"per_device_train_batch_size={bs} must be a multiple of the number of "
                    f"rejected responses per (prompt, chosen) group ({k}) for loss_type "
                    "'infonce', so that no group is split across batches")
        else:
            warnings.warn(
                f"infonce: groups of {sorted(sizes)} rejected responses; a group that straddles "
                "two batches is scored as two groups with fewer negatives", stacklevel=2)
        return groups

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        groups = getattr(self, "_groups", None)  # set after DPOTrainer.__init__
        if groups is not None and self.args.train_sampling_strategy == "random":
            return GroupShuffleSampler(groups, seed=self.args.seed)
        return super()._get_train_sampler(train_dataset)

    # -- loss ------------------------------------------------------------------------------

    def _params(
        self, name: str, completion_mask: torch.Tensor, pc: torch.Tensor
    ) -> dict[str, Any]:
        """TRL's settings under mi-bounds' parameter names for loss ``name`` (``pc``: the
        policy's chosen sequence log-probabilities, for the losses with an NLL term)."""
        accepted = get_loss(name).params
        out: dict[str, Any] = {}
        if "chosen_logps" in accepted:
            out["chosen_logps"] = pc
        if "label_smoothing" in accepted:
            out["label_smoothing"] = float(self.label_smoothing)
        if "discopop_tau" in accepted:
            out["discopop_tau"] = float(self.args.discopop_tau)
        if "chosen_lengths" in accepted:
            chosen_mask, rejected_mask = completion_mask.chunk(2, dim=0)
            out["chosen_lengths"] = chosen_mask.sum(dim=1).float()
            if "rejected_lengths" in accepted:
                out["rejected_lengths"] = rejected_mask.sum(dim=1).float()
        return out

    def _mi_loss(self, per_token_logps: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        """Σ weight · preference_loss over the mi-bounds names, from TRL's per-token log-probs."""
        completion_mask = inputs["completion_mask"]
        seq_len = completion_mask.size(1) - 1
        # TRL's reduction, line for line: the per-token log-probs are 0 outside the completion
        logps = per_token_logps[:, -seq_len:].sum(dim=1)  # (2B,)
        pc, pr = logps.chunk(2, dim=0)  # batch is [chosen, rejected]
        rc, rr = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        total: torch.Tensor | float = 0.0
        for name, weight in self._mi_losses:
            if name == "infonce":
                loss = self._infonce(pc, pr, rc, rr, inputs)
            else:
                loss = preference_loss(name, pc, pr, rc, rr, beta=self.beta,
                                       **self._params(name, completion_mask, pc))
            total = total + weight * loss
        return total  # type: ignore[return-value]

    def _infonce(self, pc, pr, rc, rr, inputs) -> torch.Tensor:
        """InfoNCE over the batch's groups (rows with equal prompt + chosen tokens), mean."""
        b = pc.shape[0]
        rows = torch.cat([inputs["input_ids"][:b], inputs["attention_mask"][:b]], dim=1)
        group = _group_ids(rows)  # (B,)
        sizes = torch.bincount(group)
        n_groups = sizes.numel()
        total: torch.Tensor | float = 0.0
        for k in sizes.unique().tolist():  # groups of k negatives, as one [G_k, k] call
            members = torch.stack([torch.nonzero(group == g).flatten()
                                   for g in torch.nonzero(sizes == k).flatten().tolist()])
            first = members[:, 0]
            total = total + preference_loss("infonce", pc[first], pr[members], rc[first],
                                            rr[members], beta=self.beta, reduction="sum")
        return total / n_groups  # type: ignore[return-value]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's loss (TRL-only names) + Σ weight · mi-bounds loss, on TRL's own forward."""
        if not self._mi_losses:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not self.precompute_ref_logps:
            ref_model = self.ref_model if self.ref_model is not None else self.model
            ref_chosen, ref_rejected = self.compute_ref_log_probs(ref_model, inputs)
            inputs = {**inputs, "ref_chosen_logps": ref_chosen, "ref_rejected_logps": ref_rejected}
        recorder = _ForwardRecorder(model)
        saved = self.loss_types, self.loss_weights, self.precompute_ref_logps
        self.loss_types = [n for n, _ in self._trl_losses] or ["sigmoid"]
        self.loss_weights = [w for _, w in self._trl_losses] or [0.0]
        self.precompute_ref_logps = True  # read the reference log-probs from the batch
        try:
            out = super().compute_loss(recorder, inputs, return_outputs, num_items_in_batch)
        finally:
            self.loss_types, self.loss_weights, self.precompute_ref_logps = saved
        if recorder.output is None:
            raise RuntimeError("TRL's _compute_loss made no fused-head forward call; this "
                               "adapter is written for TRL 1.16")
        loss, outputs = out if return_outputs else (out, None)
        loss = loss + self._mi_loss(recorder.output.log_probs, inputs)
        return (loss, outputs) if return_outputs else loss
