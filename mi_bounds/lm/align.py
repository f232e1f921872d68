"""Stage 3, align: one run per (loss, seed), all from the same base model and pairs.

The reference log-probabilities of every pair are computed once by the base model
(``DIR/align/reference.pt``), and so is the step-0 evaluation, which is the same for every
(loss, seed) run of the directory (``DIR/align/step0.json``: at step 0 the policy is the base
model). Other run directories with the same base model and pairs (the other settings of a grid,
:mod:`mi_bounds.lm.grid`, which passes their ``align/`` folders as ``shared``) share both.
Log-probabilities are sums over the response tokens only, with logits computed only where a
response token is scored (:func:`mi_bounds.lm.logps.response_logps`). The task is seen
through the run's :class:`~mi_bounds.lm.task_format.TaskFormat` (raw, or a chat template).
The loop in :func:`align_one` reads top to bottom: the epoch's batch, one forward pass over
chosen and rejected sequences stacked, the preference loss of
:func:`mi_bounds.preference.preference_loss`, backward, clip, AdamW step, evaluate (train and
held-out pair metrics, a sampled KL(π‖π_ref), greedy accuracy), checkpoint. Output:
``DIR/align/<loss>-seed<s>/result.json``: the metric history, throughput, and the decline shape
(:mod:`mi_bounds.decline.shape`) of the train and held-out chosen log-likelihood curves.

Evaluation records, per step: TRL's pair metrics (``logps/chosen``, ``rewards/margins``,
``rewards/accuracies``, ...) on the first ``n_eval_pairs`` train pairs (0: all) and on all
held-out pairs, with ``align.per_pair`` also every pair's chosen and rejected log-probability and
reward margin (``"logps/chosen/per_pair"``, ...: the input of the two-level bootstrap of
:mod:`mi_bounds.decline.compare`);
``kl``, a sampled estimate of E_x KL(π(·|x) ‖ π_ref(·|x)) on the first ``kl_prompts`` held-out
prompts (:func:`_sampled_kl`: ``kl_samples`` responses per prompt drawn from π); and the greedy
accuracy on the held-out prompts, the hard ones, and per level (every ``acc_every`` steps, if
set: generation is the dearest part of an evaluation for a real model), with
``align.per_prompt_accuracy`` also each prompt's 0/1 correctness (``acc_heldout_per_prompt``).

``align.freeze_embeddings`` trains everything but the token embedding (tied to the LM head in
SmolLM2 and the character Llama, so the head is frozen with it).

Why one module: the training loop, its evaluation and the shared step-0 and reference passes
read the same run state (pairs, reference log-probabilities, evaluation settings); split, each
part would import the others' private helpers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mi_bounds.decline.shape import decline_shape
from mi_bounds.lm import _io, arithmetic
from mi_bounds.lm.logps import pad_sequences, response_logps, sequence_logps
from mi_bounds.lm.model import autocast, generate, load_model_dir, n_params, save_model_dir
from mi_bounds.lm.optim import lr_factor, mfu, set_lr
from mi_bounds.lm.run_dir import (
    Run,
    StageInterrupted,
    base_model_dir,
    max_new_tokens,
    require_stage,
    run_format,
)
from mi_bounds.lm.task_format import TaskFormat
from mi_bounds.lm.tokenizer import load_tokenizer
from mi_bounds.preference import get_loss, preference_loss, preference_metrics

__all__ = ["PairSet", "align_one", "curve_shapes", "load_reference", "run_align"]


@dataclass
class PairSet:
    """Tokenised pairs with their reference log-probabilities (computed once)."""

    chosen: list[tuple[list[int], int]]
    rejected: list[tuple[list[int], int]]
    ref_chosen: torch.Tensor  # (n,) summed log-probs under the base model
    ref_rejected: torch.Tensor  # (n,)

    def __len__(self) -> int:
        return len(self.chosen)

    def lengths(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Completion token counts (response + EOS) of the chosen and rejected sequences."""
        c = torch.tensor([len(self.chosen[i][0]) - self.chosen[i][1] for i in idx],
                         dtype=torch.float32)
        r = torch.tensor([len(self.rejected[i][0]) - self.rejected[i][1] for i in idx],
                         dtype=torch.float32)
        return c, r


def _tokenise(fmt: TaskFormat, pairs: list[dict]) -> tuple[list, list]:
    """(chosen, rejected) ``(ids, n_prompt)`` sequences of the pairs: a chat pair's sampled ids
    where the sample stage kept them (``chosen_ids``, ``rejected_ids``), else its text."""
    return ([fmt.encode(p["prompt"], p["chosen_ids"] if "chosen_ids" in p else p["chosen"])
             for p in pairs],
            [fmt.encode(p["prompt"], p["rejected_ids"] if "rejected_ids" in p else p["rejected"])
             for p in pairs])


def _scoring_batch(model) -> int:
    """Sequences per no-grad scoring pass: 512 for a small vocabulary, fewer for a large one
    (the logits of the scored tokens are held in memory: about 2^20 / V sequences on CPU,
    2^24 / V on a GPU; 21 and 341 for SmolLM2's V = 49,152)."""
    vocab = int(model.get_output_embeddings().weight.shape[0])
    budget = 2**24 if next(model.parameters()).device.type == "cuda" else 2**20
    return max(8, min(512, budget // vocab))


def _pair_logps(model, chosen, rejected, pad_id, device, batch_size=None):
    """Summed log-probs of chosen and rejected sequences; each batch stacks both (one pass)."""
    batch_size = batch_size or max(1, _scoring_batch(model) // 2)
    pc, pr = [], []
    for s in range(0, len(chosen), batch_size):
        c, r = chosen[s : s + batch_size], rejected[s : s + batch_size]
        lp = _sequence_logps(model, c + r, pad_id, device, batch_size=len(c) + len(r))
        pc.append(lp[: len(c)])
        pr.append(lp[len(c) :])
    empty = torch.zeros(0)
    return (torch.cat(pc) if pc else empty), (torch.cat(pr) if pr else empty)


def _train_key(run: Run) -> str:
    """The train pair set of this run's ``align.chosen``: ``train`` or ``train_gold``."""
    return "train_gold" if run.config.align.chosen == "gold" else "train"


def load_reference(run: Run, data: dict, *,
                   shared: Sequence[Path] = ()) -> dict[str, PairSet]:
    """Reference log-probabilities of the train and held-out pairs, computed once and stored.

    Returns ``{"train": ..., "heldout": ...}``; ``train`` holds the on-policy pairs, or the
    off-policy gold pairs with ``align.chosen = "gold"`` (held-out pairs are the on-policy
    held-out pairs in both cases, so every variant is measured on the same held-out set).
    ``shared``: ``align/`` folders of run directories with the same base model and pairs (a
    grid's other settings); a pair set whose reference pass one of them stored is not recomputed.
    """
    key = _train_key(run)
    field = {"train": "train_pairs", "train_gold": "train_pairs_gold"}[key]
    if field not in data:
        raise ValueError(f"{run.dir}: the sample stage wrote no {field!r} (a run sampled "
                         "before gold pairs existed); use a new --out")
    if not data[field]:
        raise ValueError(f"{run.dir}: empty pair set {field!r}"
                         + (" (a --pairs file has no gold pairs)" if key == "train_gold" else ""))
    path = run.dir / "align" / "reference.pt"
    tokenizer = load_tokenizer(base_model_dir(run))
    fmt = run_format(run, tokenizer)
    tok = {key: _tokenise(fmt, data[field]), "heldout": _tokenise(fmt, data["heldout_pairs"])}
    ref = _io.torch_load(path) if path.is_file() else {}
    for other in _existing(shared, "reference.pt"):  # the same base model and pairs
        if any(name not in ref for name in tok):
            ref = {**_io.torch_load(other), **ref}
    missing = [name for name in tok if name not in ref]
    if missing or not path.is_file():
        base, _ = load_model_dir(base_model_dir(run))
        base.to(run.device)
        ref.update({name: _pair_logps(base, *tok[name], fmt.pad_id, run.device)
                    for name in missing})
        _io.torch_save(path, ref)
    return {"train": PairSet(*tok[key], *ref[key]),
            "heldout": PairSet(*tok["heldout"], *ref["heldout"])}


def _existing(shared: Sequence[Path], name: str) -> list[Path]:
    """The files ``<folder>/<name>`` of the ``shared`` align folders that exist, in order."""
    return [Path(d) / name for d in shared if (Path(d) / name).is_file()]


def _epoch_batches(n: int, batch_size: int, seed: int, epoch: int,
                   lengths: Sequence[int]) -> list[list[int]]:
    """The batches of one epoch: shuffle, sort by length within chunks of 8 batches (little
    padding), then shuffle the batch order. A pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 7919 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    chunk = batch_size * 8
    batches = []
    for s in range(0, n, chunk):
        part = sorted(perm[s : s + chunk], key=lambda i: lengths[i])
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


def _loss_kwargs(kind: str, pairs: PairSet, idx: Sequence[int], device: torch.device,
                 rpo_alpha: float) -> dict:
    """The loss's own parameters, on ``device``: completion lengths (TRL's ipo, sigmoid_norm,
    and the token mean of the chosen NLL in rpo/sft) and rpo's α. The policy's chosen log-probs
    (rpo, sft: ``chosen_logps``) come from the forward pass and are added by the caller."""
    params = get_loss(kind).params
    out: dict[str, Any] = {}
    if "chosen_lengths" in params:
        c, r = pairs.lengths(idx)
        out["chosen_lengths"] = c.to(device)
        if "rejected_lengths" in params:
            out["rejected_lengths"] = r.to(device)
    if "rpo_alpha" in params:
        out["rpo_alpha"] = rpo_alpha
    return out


#: decimals of the per-pair values (``align.per_pair``): 1e-4 nats, far below the noise
PER_PAIR_DECIMALS = 4


def _pair_metrics(model, pairs: PairSet, n: int | None, beta: float, pad_id, device, *,
                  per_pair: bool = False) -> dict:
    """TRL's pair metrics on the first ``n`` pairs (``None`` or 0: all); with ``per_pair``
    also each pair's chosen and rejected log-probability and reward margin
    ``β((log π_c − log π_ref,c) − (log π_r − log π_ref,r))``, in pair order, rounded to
    :data:`PER_PAIR_DECIMALS` decimals (``"<key>/per_pair"``)."""
    idx = list(range(len(pairs) if not n else min(n, len(pairs))))
    if not idx:
        return {}
    pc, pr = _pair_logps(model, [pairs.chosen[i] for i in idx], [pairs.rejected[i] for i in idx],
                         pad_id, device)
    rc, rr = pairs.ref_chosen[idx], pairs.ref_rejected[idx]
    m = preference_metrics(pc, pr, rc, rr, beta=beta)
    out = {k: float(v) for k, v in m.items()}
    if per_pair:
        margins = beta * ((pc.double() - rc.double()) - (pr.double() - rr.double()))
        for key, v in (("logps/chosen", pc), ("logps/rejected", pr),
                       ("rewards/margins", margins)):
            out[key + "/per_pair"] = [round(float(x), PER_PAIR_DECIMALS) for x in v]
    return out


def _greedy_correct(model, fmt: TaskFormat, prompts: Sequence[str], max_new: int,
                    device) -> list[bool]:
    """Whether the greedy response to each task prompt is right (finished and verified)."""
    if not prompts:
        return []
    outs = generate(model, fmt, prompts, max_new_tokens=max_new, greedy=True, device=device)
    return [bool(o[0].finished and fmt.verify(p, o[0].text))
            for p, o in zip(prompts, outs, strict=True)]


def _by_level(prompts: Sequence[str], correct: Sequence[bool]) -> dict[str, float]:
    levels: dict[str, list[bool]] = {}
    for p, ok in zip(prompts, correct, strict=True):
        levels.setdefault(str(arithmetic.level_of(p)), []).append(ok)
    return {lv: sum(v) / len(v) for lv, v in sorted(levels.items())}


def _sampled_sequences(model, fmt: TaskFormat, prompts: Sequence[str], k: int, max_new: int,
                       seed: int, device) -> list[tuple[list[int], int]]:
    """``k`` exact samples of π (T = 1) per prompt as ``(ids, n_prompt)``: prompt, response and
    EOS when EOS came, else prompt and the ``max_new`` tokens (the event "the response starts
    with these tokens"). Ids as sampled (no decode/encode round trip); prompt by prompt."""
    rows = generate(model, fmt, prompts, max_new_tokens=max_new, num_samples=k, seed=seed,
                    device=device)
    out = []
    for prompt, row in zip(prompts, rows, strict=True):
        head = fmt.prompt_ids(prompt)
        out += [(head + r.ids + ([fmt.eos_id] if r.finished else []), len(head)) for r in row]
    return out


@torch.no_grad()
def _sampled_kl(model, reference, fmt: TaskFormat, prompts: Sequence[str], k: int, max_new: int,
                seed: int, device) -> dict[str, float]:
    """Sampled estimate of E_x KL(π(·|x) ‖ π_ref(·|x)) over ``prompts``.

    ``k`` responses per prompt are drawn from π (temperature 1, no truncation; a response
    without EOS within ``max_new`` tokens counts as the event "it starts with these tokens",
    scored the same way under both models), and ``d = log π(y|x) - log π_ref(y|x)`` is computed
    for each. ``k1`` = mean d (unbiased), ``k1_se`` its standard error over all samples,
    ``k3`` = mean(e^{-d} - 1 + d) (also unbiased, and ≥ 0 sample by sample; Schulman 2020,
    "Approximating KL divergence"). At π = π_ref both are exactly 0.
    """
    seqs = _sampled_sequences(model, fmt, prompts, k, max_new, seed, device)
    lp = _sequence_logps(model, seqs, fmt.pad_id, device)
    lr = _sequence_logps(reference, seqs, fmt.pad_id, device)
    d = (lp - lr).double()
    se = float(d.std(unbiased=True) / math.sqrt(d.numel())) if d.numel() > 1 else float("nan")
    return {"k1": float(d.mean()), "k1_se": se, "k3": float((torch.expm1(-d) + d).mean()),
            "n": int(d.numel())}


def _sequence_logps(model, seqs, pad_id, device, batch_size=None) -> torch.Tensor:
    """Summed response log-probs of ``(ids, n_prompt)`` sequences, ``batch_size`` per pass
    (:func:`~mi_bounds.lm.logps.sequence_logps` in eval mode, under the run's autocast)."""
    model.eval()
    with autocast(device):
        return sequence_logps(model, seqs, pad_id, device=device,
                              batch_size=batch_size or _scoring_batch(model))


def _accuracy_due(ac, step: int) -> bool:
    """Whether the evaluation at ``step`` measures the greedy accuracy (``acc_every``)."""
    return ac.acc_every == 0 or step in (0, ac.steps) or step % ac.acc_every == 0


@dataclass(frozen=True)
class _EvalInputs:
    """What every evaluation of one (loss, seed) run reads besides the policy and the step."""

    run: Run
    fmt: TaskFormat
    #: ``{"train": ..., "heldout": ...}`` of :func:`load_reference`
    sets: dict[str, PairSet]
    #: the sample stage's ``data.json`` (held-out and hard prompts)
    data: dict
    #: a frozen copy of the base model for the sampled KL (None: no KL)
    reference: torch.nn.Module | None
    #: the run's seed (the KL's sampling seed is derived from it and the step)
    seed: int


def _evaluate(ev: _EvalInputs, model, step: int, train_loss: float | None) -> dict[str, Any]:
    """The record of one evaluation (module docstring): pair metrics, sampled KL, accuracy."""
    run, fmt, sets, data = ev.run, ev.fmt, ev.sets, ev.data
    ac = run.config.align
    max_new = max_new_tokens(run.config, fmt)
    rec = {"step": step, "train_loss": train_loss,
           "train": _pair_metrics(model, sets["train"], ac.n_eval_pairs, ac.beta,
                                  fmt.pad_id, run.device, per_pair=ac.per_pair),
           "heldout": _pair_metrics(model, sets["heldout"], None, ac.beta, fmt.pad_id,
                                    run.device, per_pair=ac.per_pair)}
    held = data["heldout_prompts"]
    if ev.reference is not None and held:
        rec["kl"] = _sampled_kl(model, ev.reference, fmt, held[: ac.kl_prompts],
                                ac.kl_samples, max_new, ev.seed * 1_000_003 + step + 17,
                                run.device)
    if _accuracy_due(ac, step):
        correct = _greedy_correct(model, fmt, held, max_new, run.device)
        hard = set(data["hard_prompts"])
        rec["acc_heldout"] = sum(correct) / len(correct) if correct else None
        rec["acc_hard"] = (sum(ok for p, ok in zip(held, correct, strict=True) if p in hard)
                           / len(hard)) if hard else None
        rec["acc_heldout_by_level"] = _by_level(held, correct)
        if ac.per_prompt_accuracy:
            rec["acc_heldout_per_prompt"] = [int(ok) for ok in correct]
    else:
        rec["acc_heldout"] = rec["acc_hard"] = rec["acc_heldout_by_level"] = None
    model.train()
    return rec


def _step0_key(run: Run) -> dict[str, Any]:
    """What the step-0 evaluation depends on besides the base model and the pairs."""
    ac = run.config.align
    key = {"chosen": ac.chosen, "n_eval_pairs": ac.n_eval_pairs, "beta": ac.beta,
           "kl_prompts": ac.kl_prompts, "kl_samples": ac.kl_samples,
           "max_new_tokens": run.config.sample.max_new_tokens}
    for name in ("per_pair", "per_prompt_accuracy"):  # only where set: older keys stay valid
        if getattr(ac, name):
            key[name] = True
    return key


def _step0(ev: _EvalInputs, model, shared: Sequence[Path]) -> dict[str, Any]:
    """The step-0 evaluation, computed by the first run of the directory and reused by the
    others (and by the ``shared`` align folders' runs, where their key agrees): at step 0 every
    run's policy is the base model, so its pair metrics, greedy accuracy and KL (exactly 0: the
    sampled responses differ with the seed, but log π - log π_ref is 0 on each) are the same
    for every loss and seed."""
    path = ev.run.dir / "align" / "step0.json"
    key = _step0_key(ev.run)
    for p in [path, *_existing(shared, "step0.json")]:
        if p.is_file():
            stored = _io.read_json(p)
            if stored.get("key") == key:
                if p != path:
                    _io.write_json(path, stored)
                return stored["record"]
    rec = _evaluate(ev, model, 0, None)
    _io.write_json(path, {"key": key, "record": rec})
    return rec


def curve_shapes(history: Sequence[dict]) -> dict[str, dict[str, Any]]:
    """The decline shape (:func:`mi_bounds.decline.decline_shape`, its default noise estimate
    for one curve) of the mean chosen log-likelihood of the train and of the held-out pairs."""
    steps = [h["step"] for h in history]
    out = {}
    for section in ("train", "heldout"):
        values = [h[section].get("logps/chosen") for h in history]
        if values and all(v is not None for v in values):
            out[section] = decline_shape(values, steps).to_dict()
    return out


def align_one(run: Run, loss_kind: str, seed: int, sets: dict[str, PairSet], data: dict,
              *, stop_after: int | None = None, shared: Sequence[Path] = ()) -> dict[str, Any]:
    """Align a copy of the base model with one loss and seed; resumable from its checkpoint.

    ``shared``: align folders whose step-0 evaluation is this run's too (:func:`load_reference`).
    """
    ac = run.config.align
    out = run.dir / "align" / f"{loss_kind}-seed{seed}"
    done = out / "result.json"
    if done.is_file():
        run.log(f"align {loss_kind} seed {seed}: done")
        return _io.read_json(done)
    model, tokenizer = load_model_dir(base_model_dir(run))
    model.to(run.device).train()
    fmt = run_format(run, tokenizer)
    reference = None
    if ac.kl_prompts > 0:  # a frozen copy of the base model, for the sampled KL estimate
        reference = load_model_dir(base_model_dir(run))[0].to(run.device).eval()
        reference.requires_grad_(False)
    ev = _EvalInputs(run, fmt, sets, data, reference, seed)
    if ac.freeze_embeddings:  # tied: the LM head is frozen with it
        model.get_input_embeddings().weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=ac.lr, betas=(0.9, 0.95), weight_decay=0.0)
    train = sets["train"]
    lengths = [len(c[0]) + len(r[0]) for c, r in zip(train.chosen, train.rejected, strict=True)]
    batch_size = min(ac.batch_size, len(train))
    per_epoch = math.ceil(len(train) / batch_size)
    ckpt_path = out / "ckpt.pt"
    start, history, seconds, tokens, slots, losses = 0, [], 0.0, 0, 0, []
    if ckpt_path.is_file():
        ck = _io.torch_load(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start, history, seconds, tokens, slots, losses = (
            ck["step"], ck["history"], ck["seconds"], ck["tokens"], ck["slots"], ck["losses"])
        run.log(f"align {loss_kind} seed {seed}: resuming at step {start}")
    else:
        history.append(_step0(ev, model, shared))
    warmup = max(1, ac.steps // 10)
    epoch_cache: dict[int, list[list[int]]] = {}
    for step in range(start, ac.steps):
        epoch = step // per_epoch
        if epoch not in epoch_cache:
            epoch_cache = {epoch: _epoch_batches(len(train), batch_size, seed, epoch, lengths)}
        idx = epoch_cache[epoch][step % per_epoch]
        t0 = time.perf_counter()
        # Every input of the step goes to the device before the forward pass: a host-to-device
        # copy waits for the kernels queued before it (after the forward: all of them).
        # Chosen and rejected stacked: one forward pass per step (B chosen then B rejected).
        host = pad_sequences([train.chosen[i] for i in idx] + [train.rejected[i] for i in idx],
                             fmt.pad_id)
        batch = host.to(run.device)
        ref_c = train.ref_chosen[idx].to(run.device)
        ref_r = train.ref_rejected[idx].to(run.device)
        kwargs = _loss_kwargs(loss_kind, train, idx, run.device, ac.rpo_alpha)
        set_lr(opt, ac.lr * lr_factor(step, warmup, ac.steps, cosine=False))
        with autocast(run.device):
            logps = response_logps(model, batch).float()  # (2B,) response tokens only
        pc, pr = logps[: len(idx)], logps[len(idx) :]
        if "chosen_logps" in get_loss(loss_kind).params:
            kwargs["chosen_logps"] = pc
        # inputs from the model and the stored reference: no checks that read values (each a
        # host-device sync); the loss read below catches a non-finite step
        loss = preference_loss(loss_kind, pc, pr, ref_c, ref_r, beta=ac.beta, reduction="mean",
                               validate=False, **kwargs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, ac.max_grad_norm)
        opt.step()
        if run.device.type == "cuda":  # the step's time: wait for its queued kernels
            torch.cuda.synchronize(run.device)
        seconds += time.perf_counter() - t0
        tokens += host.n_tokens
        slots += host.n_slots
        losses.append(float(loss.detach()))  # the step's one value read (already computed)
        s = step + 1
        if not math.isfinite(losses[-1]):
            raise ValueError(f"align {loss_kind} seed {seed}: the loss is {losses[-1]} at step "
                             f"{s} (lr {ac.lr:g}, beta {ac.beta:g}); no result is written")
        if s % ac.eval_every == 0 or s == ac.steps:
            window = losses[-(s - history[-1]["step"]):]
            history.append(_evaluate(ev, model, s, sum(window) / len(window)))
        if s % ac.ckpt_every == 0 and s < ac.steps:
            _io.torch_save(ckpt_path, {"model": model.state_dict(), "opt": opt.state_dict(),
                                       "step": s, "history": history, "seconds": seconds,
                                       "tokens": tokens, "slots": slots, "losses": losses})
        if stop_after is not None and s >= stop_after and s < ac.steps:
            raise StageInterrupted(f"align {loss_kind} seed {seed} stopped after step {s}")
    n = n_params(model, non_embedding=False)
    result = {
        "loss": loss_kind, "seed": seed, "beta": ac.beta, "lr": ac.lr, "chosen": ac.chosen,
        "steps": ac.steps, "batch_size": batch_size, "n_train_pairs": len(train),
        "epochs": ac.steps * batch_size / len(train),
        "history": history, "final": history[-1], "shape": curve_shapes(history),
        "throughput": {
            "device": str(run.device), "seconds": seconds, "tokens": tokens,
            "tokens_per_s": tokens / max(seconds, 1e-9),
            "padding_fraction": 1 - tokens / max(slots, 1), "n_params": n,
            "trainable_params": sum(p.numel() for p in params),
            "peak_flops": run.peak_flops, "mfu": mfu(tokens, seconds, n, run.peak_flops),
        },
    }
    if ac.save_models:
        save_model_dir(model, tokenizer, out / "model")
    _io.write_json(done, result)
    ckpt_path.unlink(missing_ok=True)
    f = history[-1]
    run.log(f"align {loss_kind} seed {seed}: {ac.steps} steps, {seconds:.1f} s, "
            f"{result['throughput']['tokens_per_s']:.0f} tok/s, MFU "
            f"{result['throughput']['mfu']:.2%} of {run.peak_flops:.3g} FLOP/s; chosen logp "
            f"{history[0]['train'].get('logps/chosen', float('nan')):.3f} -> "
            f"{f['train'].get('logps/chosen', float('nan')):.3f} "
            f"({result['shape'].get('train', {}).get('shape', 'n/a')}), held-out acc "
            f"{f['acc_heldout']}")
    return result


def run_align(run: Run, *, stop_after: int | None = None,
              shared: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """Align with every requested loss and seed from the same base model and pairs; ``shared``:
    align folders whose reference passes and step-0 evaluation are reused
    (:func:`load_reference`; a grid passes its other settings')."""
    require_stage(run, run.dir / "sample" / "data.json", "sample")
    data = _io.read_json(run.dir / "sample" / "data.json")
    sets = load_reference(run, data, shared=shared)
    results = []
    for loss_kind in run.config.align.losses:
        for seed in run.config.align.seeds:
            results.append(align_one(run, loss_kind, seed, sets, data, stop_after=stop_after,
                                     shared=shared))
    return results

