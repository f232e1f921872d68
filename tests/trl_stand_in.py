"""TRL 1.16's own ``DPOTrainer._compute_loss`` run on given sequence log-probabilities (for the
tests against TRL; importing this module does not import trl).

Building a DPOTrainer needs a model, a tokenizer and a dataset; instead the method is called
unbound with a minimal stand-in for ``self`` and a stand-in model whose per-token
log-probabilities sum to the given sequence log-probabilities, with precomputed reference
log-probabilities.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from types import SimpleNamespace

import torch


def trl_compute_loss(loss_types: Sequence[str], loss_weights: Sequence[float],
                     pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor,
                     n_w: torch.Tensor, n_l: torch.Tensor, beta: float, *,
                     label_smoothing: float = 0.0, discopop_tau: float = 0.05,
                     spread: bool = False) -> tuple[torch.Tensor, dict[str, list]]:
    """(TRL's loss, TRL's logged metrics) for policy log-probs ``pc``/``pr``, reference
    ``rc``/``rr`` and completion lengths ``n_w``/``n_l`` (all ``[B]``).

    Each sequence's log-probability sits on its first completion token (``spread=False``) or is
    spread evenly over its completion tokens (``spread=True``, so per-token means differ from
    per-sequence ones, as ``sft`` needs).
    """
    from trl.trainer.dpo_trainer import DPOTrainer

    b = pc.shape[0]
    length = int(max(n_w.max(), n_l.max())) + 2
    n = torch.cat([n_w, n_l]).long().tolist()
    completion_mask = torch.zeros(2 * b, length, dtype=torch.long)
    log_probs = torch.zeros(2 * b, length - 1, dtype=torch.float64)
    for i, k in enumerate(n):
        completion_mask[i, 1:1 + k] = 1  # shift_completion_mask = completion_mask[:, 1:]
    if spread:
        for i, (k, lp) in enumerate(zip(n, torch.cat([pc, pr]).tolist(), strict=True)):
            log_probs[i, :k] = lp / k
    else:
        log_probs[:, 0] = torch.cat([pc, pr])

    def model(**kwargs):
        return SimpleNamespace(log_probs=log_probs, entropy=torch.zeros_like(log_probs),
                               mean_logits=torch.zeros_like(log_probs),
                               is_top1=torch.zeros_like(log_probs, dtype=torch.bool))

    ident = lambda x: x  # noqa: E731
    fake = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather=ident,
                                    gather_for_metrics=ident),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
        f_divergence_type="reverse_kl", loss_types=list(loss_types),
        loss_weights=list(loss_weights), beta=beta, label_smoothing=label_smoothing,
        args=SimpleNamespace(discopop_tau=discopop_tau), use_weighting=False,
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )
    inputs = {"input_ids": torch.zeros(2 * b, length, dtype=torch.long),
              "attention_mask": torch.ones(2 * b, length, dtype=torch.long),
              "completion_mask": completion_mask, "ref_chosen_logps": rc,
              "ref_rejected_logps": rr}
    loss = DPOTrainer._compute_loss(fake, model, inputs, False)
    return loss, fake._metrics["train"]
