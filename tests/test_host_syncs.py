"""The training loops read no tensor value without need .

On an accelerator every read of a tensor's value on the host (``float(t)``, ``bool(t)``,
``t.item()``, ``int(t)``) is a host-device synchronisation: the host waits until every kernel
queued before it has finished. These reads all dispatch to ``aten._local_scalar_dense``, which
a ``TorchDispatchMode`` sees on any device, so they can be counted on the CPU:

* ``preference_loss(..., validate=False)`` reads no value at all (its finiteness and sign
  checks are skipped; shapes and parameters are still checked), and computes the same value;
* inside the align stage's training step, neither ``mi_bounds._validation`` nor
  ``mi_bounds.preference`` reads a value, and the step itself reads one (its loss, after the
  step's work is queued).
"""

from __future__ import annotations

import traceback
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mi_bounds._validation import skip_value_checks, value_checks_enabled
from mi_bounds.preference import LOSSES, preference_loss

_SCALAR_READS = {"_local_scalar_dense", "is_nonzero", "item"}


class ScalarReads(TorchDispatchMode):
    """Records where each host read of a tensor value comes from (file:line outside torch)."""

    def __init__(self) -> None:
        super().__init__()
        self.where: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in _SCALAR_READS:
            stack = traceback.extract_stack()[:-1]
            # torch.optim reads its per-parameter step counts, which it keeps on the host (a
            # CPU tensor also for CUDA parameters unless capturable/fused): never a device sync
            if not any("/torch/optim/" in f.filename.replace("\\", "/") for f in stack):
                frames = [f for f in stack
                          if "site-packages/torch/" not in f.filename.replace("\\", "/")]
                f = frames[-1]
                self.where[f"{f.filename}:{f.lineno}"] += 1
        return func(*args, **(kwargs or {}))

    def total(self, part: str = "") -> int:
        return sum(n for w, n in self.where.items() if part in w.replace("\\", "/"))


def _inputs(kind: str, b: int = 6, seed: int = 0) -> tuple[tuple, dict]:
    g = torch.Generator().manual_seed(seed)
    pc, pr, rc, rr = (-torch.rand(b, generator=g) * 20 for _ in range(4))
    if kind == "infonce":
        pr, rr = -torch.rand(b, 3, generator=g) * 20, -torch.rand(b, 3, generator=g) * 20
    params: dict = {}
    spec = LOSSES[kind].params
    if "chosen_lengths" in spec:
        params["chosen_lengths"] = torch.randint(1, 9, (b,), generator=g).float()
        if "rejected_lengths" in spec:
            params["rejected_lengths"] = torch.randint(1, 9, (b,), generator=g).float()
    if "chosen_logps" in spec:
        params["chosen_logps"] = pc
    if kind == "exo_pair":
        params["label_smoothing"] = 1e-3
    return (pc, pr, rc, rr), params


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_validate_false_reads_no_value_and_computes_the_same(kind):
    """Every loss: validate=True reads values (its checks), validate=False reads none, and the
    two return bit-identical values and gradients."""
    (pc, pr, rc, rr), params = _inputs(kind)
    pc = pc.clone().requires_grad_(True)
    if "chosen_logps" in params:
        params["chosen_logps"] = pc
    with ScalarReads() as checked:
        a = preference_loss(kind, pc, pr, rc, rr, beta=0.3, **params)
    (ga,) = torch.autograd.grad(a, pc)
    with ScalarReads() as fast:
        b = preference_loss(kind, pc, pr, rc, rr, beta=0.3, validate=False, **params)
    (gb,) = torch.autograd.grad(b, pc)
    assert checked.total() >= 4  # one finiteness check per log-probability argument at least
    assert fast.total() == 0, dict(fast.where)
    assert torch.equal(a, b) and torch.equal(ga, gb)


def test_validate_false_still_checks_shapes_and_parameters():
    pc = torch.zeros(3)
    with pytest.raises(ValueError, match="reference_chosen_logps"):
        preference_loss("dpo", pc, pc, torch.zeros(4), pc, validate=False)
    with pytest.raises(ValueError, match="beta"):
        preference_loss("dpo", pc, pc, pc, pc, beta=0.0, validate=False)
    with pytest.raises(TypeError, match="unexpected parameter"):
        preference_loss("dpo", pc, pc, pc, pc, validate=False, rpo_alpha=1.0)
    # ...and the value checks are back on after the call, also after an error
    assert value_checks_enabled()
    with pytest.raises(ValueError, match="finite"):
        preference_loss("dpo", torch.tensor([float("nan")] * 3), pc, pc, pc)


def test_validate_false_skips_only_the_value_checks():
    """A NaN input is the caller's promise broken: validate=False computes on it (NaN out)
    instead of raising; negative lengths likewise are not read."""
    nan = torch.tensor([float("nan"), 0.0])
    z = torch.zeros(2)
    assert torch.isnan(preference_loss("dpo", nan, z, z, z, validate=False))
    out = preference_loss("ipo", z, z, z, z, validate=False, chosen_lengths=-torch.ones(2),
                          rejected_lengths=torch.ones(2))
    assert torch.isfinite(out)
    with pytest.raises(ValueError, match="non-negative"):
        preference_loss("ipo", z, z, z, z, chosen_lengths=-torch.ones(2),
                        rejected_lengths=torch.ones(2))


def test_skip_value_checks_nests_and_restores():
    assert value_checks_enabled()
    with skip_value_checks():
        assert not value_checks_enabled()
        with skip_value_checks():
            assert not value_checks_enabled()
        assert not value_checks_enabled()
    assert value_checks_enabled()


@pytest.fixture(scope="module")
def sampled_run(tmp_path_factory):
    """A cpu-tiny run directory after its base and sample stages (a base trained just enough
    to be right on some prompts and wrong on others)."""
    pytest.importorskip("transformers")
    from mi_bounds.lm import stages
    from mi_bounds.lm.config import get_preset

    cfg = get_preset("cpu-tiny").replace(
        base={"steps": 150}, sample={"n_train_prompts": 48, "n_heldout_prompts": 8},
        align={"steps": 6, "batch_size": 4, "eval_every": 6, "ckpt_every": 6, "kl_prompts": 0})
    run = stages.open_run(tmp_path_factory.mktemp("syncs") / "run", cfg, device="cpu",
                          log=lambda m: None)
    stages.run_base(run)
    stages.run_sample(run)
    return run


@pytest.mark.parametrize("loss", ["dpo", "ipo", "rpo"])
def test_align_step_reads_one_value(sampled_run, monkeypatch, loss):
    """The align stage's training steps (evaluations stubbed out): no value read in the
    library's checks, and at most one read per step in the stage itself (the step's loss)."""
    from mi_bounds.lm import align as align_mod

    run = sampled_run
    data = align_mod._io.read_json(run.dir / "sample" / "data.json")
    sets = align_mod.load_reference(run, data)
    counter = ScalarReads()

    def fake_evaluate(ev, model, step, train_loss):
        # evaluations read values by design: only the steps between them are counted
        if step == 0:
            counter.__enter__()
        else:
            counter.__exit__(None, None, None)
        return {"step": step, "train_loss": train_loss, "train": {}, "heldout": {},
                "acc_heldout": None, "acc_hard": None, "acc_heldout_by_level": {}}

    def fake_step0(ev, model, shared):
        # the step-0 evaluation is cached per directory (step0.json): not read here, so that
        # every parametrised run starts the counter
        return fake_evaluate(ev, model, 0, None)

    monkeypatch.setattr(align_mod, "_evaluate", fake_evaluate)
    monkeypatch.setattr(align_mod, "_step0", fake_step0)
    align_mod.align_one(run, loss, 0, sets, data)
    steps = run.config.align.steps
    assert counter.total("mi_bounds/_validation.py") == 0, dict(counter.where)
    assert counter.total("mi_bounds/preference.py") == 0, dict(counter.where)
    assert counter.total("mi_bounds/bounds.py") == 0, dict(counter.where)
    assert counter.total("mi_bounds/lm/align.py") <= steps, dict(counter.where)


def test_estimation_step_reads_no_value_in_the_bounds():
    """The critic-training loop (staircase, `mi-bounds estimate`): the scores are checked once
    per step (the divergence guard); the bounds computed from them (the trained objective and
    every recorded estimator) read no value again. Per step: 2 reads in the guard, 1 for the
    objective, 1 per recorded estimator."""
    from mi_bounds.estimation.estimate import estimate_mi
    from mi_bounds.estimation.staircase import OBJECTIVES, RunSpec
    from mi_bounds.estimation.training import EstimateConfig

    names = OBJECTIVES["js"]  # js trained; js_dv, js_nwj, smile_1, smile_5 recorded
    task = RunSpec(steps_per_level=3, levels=(2.0,), dim=4).task_obj()
    config = EstimateConfig(bound=names[0], report=names[1:], steps=3, batch_size=16,
                            eval_batches=0)
    with ScalarReads() as reads:
        estimate_mi(task, config, critic="separable", hidden_dim=16, embed_dim=4, layers=1)
    assert reads.total("mi_bounds/_validation.py") == 0, dict(reads.where)
    assert reads.total("mi_bounds/bounds.py") == 0, dict(reads.where)
    assert reads.total("mi_bounds/estimate.py") <= 3 * (2 + 1 + len(names) - 1), \
        dict(reads.where)
