"""Preference losses as functions of sequence log-probabilities, each read as a (negated) bound.

Every loss here is a function of four sequence log-probabilities per example, with TRL's names
(``policy_chosen_logps``, ``policy_rejected_logps``, ``reference_chosen_logps``,
``reference_rejected_logps``) and its KL weight ``beta``. Write

* ``z_w = policy_chosen_logps - reference_chosen_logps`` (the chosen log-ratio),
* ``z_l = policy_rejected_logps - reference_rejected_logps`` (the rejected log-ratio),
* ``T_w = beta·z_w``, ``T_l = beta·z_l``: the *implicit critic* of the policy
  (docs/THEORY.md §2; TRL logs them as ``rewards/chosen`` and ``rewards/rejected``).

In the mutual-information reading (docs/THEORY.md §2) the positives ``P`` are the chosen
responses and the negatives ``Q`` the base model's responses: for one pair, ``Q = ½(δ_w + δ_l)``
or, in the "rejected-only" variant, ``Q = δ_l``. Then

==========  ===================================================  ===============================
kind        per-example loss                                      bound it negates (P, Q)
==========  ===================================================  ===============================
dpo         softplus(-(T_w - T_l))                                log 2 - DV (δ_w, ½(δ_w+δ_l));
                                                                  also log 2 - InfoNCE_2
mio         softplus(-T_w) + ½softplus(T_w) + ½softplus(T_l)      -JS (δ_w, ½(δ_w+δ_l))
bco_pair    softplus(-T_w) + softplus(T_l)                        -JS (δ_w, δ_l)
infonce     -T_w + logsumexp(T_w, T_l1..T_l(K-1)) - log K         -InfoNCE_K
nwj         -T_w + exp(T_l - 1)                                   -NWJ (δ_w, δ_l)
==========  ===================================================  ===============================

and, for comparison, TRL 1.16's ``ipo``, ``hinge``, ``robust``, ``nca_pair``, ``sppo_hard``,
``apo_zero``, ``apo_down``, ``exo_pair``, ``discopop`` and ``sigmoid_norm``, transcribed from
``trl/trainer/dpo_trainer.py`` (``DPOTrainer._compute_loss``, TRL 1.16.0, with the default
``f_divergence_type="reverse_kl"``). TRL's ``sigmoid`` is ``dpo`` here; TRL's ``nca_pair`` is,
term for term, the ``mio`` formula (one implementation serves both names).

All losses are values to *minimise*; the bounds in :mod:`mi_bounds.bounds` are values to
maximise. The losses that are bounds are computed by the bounds' own kernels
(:mod:`mi_bounds._kernels`: JS's two terms ``_js_pos``/``_js_neg``, ``_tuba``, ``_infonce``,
``_infonce_terms``; the per-example formulas are in :mod:`mi_bounds._losses`), applied to the
one-pair "samples" of the table, so no bound formula is written twice: ``mio``/``nca_pair`` and
``bco_pair`` are minus JS (the expectations over ``δ_w`` and ``½(δ_w + δ_l)`` written out as the
term at w and the mean of the terms at w and l), ``nwj`` is ``-_tuba`` with ``a = e``,
``infonce`` is ``-_infonce``, and ``dpo`` is minus one InfoNCE term, ``-log σ(T_w - T_l)`` (=
log 2 - InfoNCE_2 = log 2 - DV, computed without subtracting from log 2, so it stays exact where
the loss is tiny).

**Bring your own loss.** :func:`register_loss` adds a function of the four sequence
log-probabilities and ``beta`` (the signature of TRL's ``DPOTrainer`` losses) to a separate,
user registry; :func:`get_loss` and :func:`preference_loss` consult it after the built-ins
(which are read-only and cannot be shadowed), and resolve ``"FILE.py:FUNCTION"`` or
``"module:function"`` by loading and registering that function. A registered loss is then
usable wherever a built-in name is: the toy dynamics and population optimum, ``mi-bounds lm run
--losses``, ``MIDPOTrainer``'s ``loss_type`` and ``mi-bounds audit`` (docs/THEORY.md, "Auditing
a loss").

Why one module: the loss registry, its user extension and the entry points that dispatch
through it are one contract — every caller (the LM path, TRL, the toy worlds) reaches a loss
only through :func:`get_loss`/:func:`preference_loss` here, and the formulas themselves are
already apart, in :mod:`mi_bounds._losses`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch

from mi_bounds._losses import (
    _apo_down,
    _apo_zero,
    _bco_pair,
    _discopop,
    _dpo,
    _exo_pair,
    _hinge,
    _infonce_loss,
    _ipo,
    _mio,
    _nwj,
    _robust,
    _rpo,
    _sft,
    _sigmoid_norm,
    _sppo_hard,
)
from mi_bounds._validation import (
    ArrayLike,
    as_float_tensor,
    check_in_range,
    check_positive,
    check_reduction,
    promote,
    reduce,
    skip_value_checks,
    value_checks_enabled,
)

__all__ = [
    "LOSSES",
    "LOSS_ARGUMENTS",
    "LossSpec",
    "get_loss",
    "implicit_reward",
    "load_loss",
    "preference_loss",
    "preference_metrics",
    "register_loss",
    "registered_losses",
    "unregister_loss",
]


# --------------------------------------------------------------------------------------------
# Registry.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossSpec:
    """What a preference loss is: its per-example function and the bound it negates.

    Attributes:
        name: registry key (the ``kind`` of :func:`preference_loss`).
        fn: per-example loss ``fn(z_w, z_l, *, beta, **params) -> [...]`` of the log-ratios
            ``z = policy_logps - reference_logps``.
        bound: the bound whose negation (up to a constant) the loss is, or ``None``.
        P: the positive distribution in the MI reading.
        Q: the negative distribution in the MI reading.
        source: the paper (and, for TRL's losses, TRL's ``loss_type``).
        formula: the per-example loss in terms of ``T_w = β z_w``, ``T_l = β z_l``.
        params: the keyword parameters the loss accepts and their defaults (TRL's names;
            read-only).
        trl_name: TRL 1.16's ``loss_type`` for the same formula, or ``None``.
        inputs: what ``fn`` takes: ``"log-ratios"`` (the built-ins: ``fn(z_w, z_l, *, beta,
            **params)``) or ``"logps"`` (a registered loss: ``fn(policy_chosen_logps,
            policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta,
            **params)``, TRL's signature).
        multi_negative: the rejected arguments may be ``[B, K-1]`` (K-1 negatives per chosen).
        builtin: shipped with the toolkit (false for :func:`register_loss`'s losses).
    """

    name: str
    fn: Callable[..., torch.Tensor]
    bound: str | None
    P: str
    Q: str
    source: str
    formula: str
    params: Mapping[str, object] = field(default_factory=dict)
    trl_name: str | None = None
    inputs: str = "log-ratios"
    multi_negative: bool = False
    builtin: bool = True

    def __post_init__(self) -> None:
        if self.inputs not in _CALLS:
            raise ValueError(f"inputs must be one of {', '.join(_CALLS)}, got {self.inputs!r}")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def per_example(
        self, pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, *,
        beta: float, **params: object,
    ) -> torch.Tensor:
        """The per-example losses of validated log-probabilities, by :attr:`inputs`."""
        return _CALLS[self.inputs](self.fn, pc, pr, rc, rr, beta, params)


#: How a spec's function is called, by what it takes (:attr:`LossSpec.inputs`).
_CALLS: Mapping[str, Callable[..., torch.Tensor]] = MappingProxyType({
    "log-ratios": lambda fn, pc, pr, rc, rr, beta, params: fn(pc - rc, pr - rr, beta=beta,
                                                              **params),
    "logps": lambda fn, pc, pr, rc, rr, beta, params: fn(pc, pr, rc, rr, beta, **params),
})


_CHOSEN = "chosen δ_w"
_MIX = "½(δ_w + δ_l)"
_NA = "— (not a bound)"
_LENGTHS = {"chosen_lengths": None, "rejected_lengths": None}

_CHOSEN_NLL_PARAMS = {"chosen_logps": None, "chosen_lengths": None}

#: The built-in losses, by name: built here once, read-only (a ``MappingProxyType``); losses
#: of :func:`register_loss` live in a separate registry that cannot shadow these names.
LOSSES: Mapping[str, LossSpec] = MappingProxyType({
    spec.name: spec
    for spec in [
        LossSpec("dpo", _dpo, "log 2 - DV (also log 2 - InfoNCE_2)", _CHOSEN, _MIX,
                 "Rafailov et al. 2023 (DPO), Eq. 7", "softplus(-(T_w - T_l))",
                 trl_name="sigmoid"),
        LossSpec("mio", _mio, "-JS", _CHOSEN, _MIX,
                 "MIO (JS estimator with Q = ½(w + l)); = NCA, Chen et al. 2024",
                 "softplus(-T_w) + ½ softplus(T_w) + ½ softplus(T_l)", trl_name="nca_pair"),
        LossSpec("bco_pair", _bco_pair, "-JS", _CHOSEN, "rejected δ_l",
                 "Jung et al. 2024 (BCO), without the running-mean shift δ",
                 "softplus(-T_w) + softplus(T_l)", trl_name="bco_pair"),
        LossSpec("infonce", _infonce_loss, "-InfoNCE_K", _CHOSEN,
                 "the K-1 rejected responses (with the chosen one in the denominator)",
                 "van den Oord et al. 2018 (InfoNCE) with the implicit critic",
                 "-T_w + logsumexp(T_w, T_l1, ..., T_l(K-1)) - log K", multi_negative=True),
        LossSpec("nwj", _nwj, "-NWJ", _CHOSEN, "rejected δ_l",
                 "Nguyen, Wainwright & Jordan 2010 with the implicit critic",
                 "-T_w + exp(T_l - 1)"),
        LossSpec("ipo", _ipo, None, _NA, _NA,
                 "Azar et al. 2023 (IPO), Eq. 17; TRL loss_type='ipo'",
                 "((z_w/n_w - z_l/n_l) - 1/(2β))²", params=_LENGTHS, trl_name="ipo"),
        LossSpec("hinge", _hinge, None, _NA, _NA,
                 "Zhao et al. 2023 (SLiC); TRL loss_type='hinge'",
                 "relu(1 - (T_w - T_l))", trl_name="hinge"),
        LossSpec("robust", _robust, None, _NA, _NA,
                 "Chowdhury et al. 2024 (robust DPO); TRL loss_type='robust'",
                 "((1-ε) softplus(-(T_w-T_l)) - ε softplus(T_w-T_l)) / (1-2ε)",
                 params={"label_smoothing": 0.0}, trl_name="robust"),
        LossSpec("nca_pair", _mio, "-JS", _CHOSEN, _MIX,
                 "Chen et al. 2024 (NCA); TRL loss_type='nca_pair'",
                 "-log σ(T_w) - ½ log σ(-T_w) - ½ log σ(-T_l)", trl_name="nca_pair"),
        LossSpec("sppo_hard", _sppo_hard, None, _NA, _NA,
                 "Wu et al. 2024 (SPPO), Eq. 4.7, hard labels; TRL loss_type='sppo_hard'",
                 "(z_w - 1/(2β))² + (z_l + 1/(2β))²", trl_name="sppo_hard"),
        LossSpec("apo_zero", _apo_zero, None, _NA, _NA,
                 "D'Oosterlinck et al. 2024 (APO), Eq. 7; TRL loss_type='apo_zero'",
                 "1 - σ(T_w) + σ(T_l)", trl_name="apo_zero"),
        LossSpec("apo_down", _apo_down, None, _NA, _NA,
                 "D'Oosterlinck et al. 2024 (APO), Eq. 8; TRL loss_type='apo_down'",
                 "σ(T_w) + 1 - σ(T_w - T_l)", trl_name="apo_down"),
        LossSpec("exo_pair", _exo_pair, None, _NA, _NA,
                 "Ji et al. 2024 (EXO), Eq. 16, K = 2; TRL loss_type='exo_pair'",
                 "σ(d)(log σ(d) - log(1-ε)) + σ(-d)(log σ(-d) - log ε), d = T_w - T_l",
                 params={"label_smoothing": 0.0}, trl_name="exo_pair"),
        LossSpec("discopop", _discopop, None, _NA, _NA,
                 "Chris Lu et al. 2024 (DiscoPOP), Eq. 5; TRL loss_type='discopop'",
                 "softplus(-d)(1 - σ(d/τ)) + exp(-d) σ(d/τ), d = T_w - T_l",
                 params={"discopop_tau": 0.05}, trl_name="discopop"),
        LossSpec("sigmoid_norm", _sigmoid_norm, None, _NA, _NA,
                 "length-normalised DPO; TRL loss_type='sigmoid_norm'",
                 "softplus(-β(z_w/n_w - z_l/n_l))", params=_LENGTHS, trl_name="sigmoid_norm"),
        LossSpec("rpo", _rpo, None, _NA, _NA,
                 "Pang et al. 2024 (RPO), Eq. 1; TRL rpo_alpha (TRL 1.16: loss_type=['sigmoid', "
                 "'sft'], loss_weights=[1, α])",
                 "softplus(-(T_w - T_l)) - α log π(y_w|x) / n̄_w",
                 params={"rpo_alpha": 1.0, **_CHOSEN_NLL_PARAMS}),
        LossSpec("sft", _sft, None, _NA, _NA,
                 "supervised fine-tuning on the chosen responses only; TRL loss_type='sft'",
                 "-log π(y_w|x) / n̄_w", params=_CHOSEN_NLL_PARAMS, trl_name="sft"),
    ]
})


# --------------------------------------------------------------------------------------------
# Bring your own loss: a separate registry, consulted after the built-ins.
# --------------------------------------------------------------------------------------------

#: The arguments of a registered loss, in order (TRL's names): ``fn(*LOSS_ARGUMENTS)``.
LOSS_ARGUMENTS = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps",
                  "reference_rejected_logps", "beta")

_REGISTERED: dict[str, LossSpec] = {}  # the user registry (register_loss / unregister_loss)
_LOADED: dict[str, str] = {}  # "FILE.py:FUNCTION" / "module:function" -> registered name


def get_loss(kind: str) -> LossSpec:
    """Look up a loss: a built-in name, a :func:`register_loss` name, or ``"FILE.py:FUNCTION"``
    / ``"module:function"`` (loaded and registered by :func:`load_loss` on first use).

    Raises:
        ValueError: an unknown name (the message lists the valid ones), or a reference to a
            function that cannot be loaded or fails :func:`register_loss`'s checks.
    """
    if isinstance(kind, str):
        if kind in LOSSES:
            return LOSSES[kind]
        if kind in _REGISTERED:
            return _REGISTERED[kind]
        if ":" in kind:
            return _REGISTERED[load_loss(kind)]
    registered = f"; registered: {', '.join(_REGISTERED)}" if _REGISTERED else ""
    raise ValueError(f"unknown preference loss {kind!r}; valid kinds: {', '.join(LOSSES)}"
                     f"{registered} (or bring one: register_loss(name, fn), FILE.py:FUNCTION)")


def registered_losses() -> Mapping[str, LossSpec]:
    """The losses of :func:`register_loss`, by name (a read-only view)."""
    return MappingProxyType(_REGISTERED)


def _probe_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Ordinary inputs for the checks of :func:`register_loss`: four pairs of sequence
    log-probabilities between -30 and -2 nats (policy and reference apart by up to 2 nats)."""
    pc = torch.tensor([-12.0, -5.0, -20.5, -8.0], dtype=dtype)
    pr = torch.tensor([-14.0, -4.5, -22.0, -30.0], dtype=dtype)
    rc = torch.tensor([-12.5, -6.0, -20.0, -7.0], dtype=dtype)
    rr = torch.tensor([-13.0, -5.5, -21.0, -28.0], dtype=dtype)
    return pc, pr, rc, rr


def _check_user_loss(name: str, fn: Callable[..., torch.Tensor]) -> dict[str, object]:
    """Check the signature and the output of a loss to register; return its extra keyword
    parameters and their defaults."""
    if not callable(fn):
        raise TypeError(f"register_loss: fn must be callable, got {type(fn).__name__}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as err:
        raise TypeError(f"register_loss: cannot read the signature of {name!r}: {err}") from None
    want = ", ".join(LOSS_ARGUMENTS)
    extra = {}
    for i, (pname, param) in enumerate(sig.parameters.items()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if i >= len(LOSS_ARGUMENTS) or param.kind is param.KEYWORD_ONLY:
            if param.default is param.empty:
                raise TypeError(f"loss {name!r}: its parameter {pname!r} beyond ({want}) needs "
                                f"a default")
            extra[pname] = param.default
    try:
        sig.bind(*range(len(LOSS_ARGUMENTS)))
    except TypeError:
        raise TypeError(f"loss {name!r} has the signature {name}{sig}; a preference loss takes "
                        f"the five positional arguments ({want}) and returns the per-pair "
                        f"loss") from None
    for dtype in (torch.float64, torch.float32):
        inputs = [t.clone().requires_grad_(True) for t in _probe_inputs(dtype)]
        try:
            out = fn(*inputs, 0.1)
        except Exception as err:  # the user's code: report what it raised, with the inputs
            raise ValueError(f"loss {name!r} raised {type(err).__name__}: {err} on ordinary "
                             f"inputs (four pairs of {dtype} log-probabilities, beta=0.1)"
                             ) from err
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"loss {name!r} returned {type(out).__name__}; it must return a "
                            f"torch tensor of per-pair losses (torch operations only, so that "
                            f"autograd reaches the policy log-probabilities)")
        if tuple(out.shape) != (4,):
            raise ValueError(f"loss {name!r} returned shape {tuple(out.shape)} for 4 pairs; it "
                             f"must return the per-pair loss, shape [B] = (4,) (no mean or sum: "
                             f"preference_loss reduces)")
        if not bool(torch.isfinite(out).all()):
            raise ValueError(f"loss {name!r} returned {out.detach().tolist()} (not finite) on "
                             f"ordinary inputs ({dtype} log-probabilities between -30 and -2, "
                             f"beta=0.1)")
        if out.grad_fn is None:
            raise ValueError(f"loss {name!r} does not depend differentiably on the policy "
                             f"log-probabilities (its output has no autograd graph)")
    return extra


def register_loss(
    name: str,
    fn: Callable[..., torch.Tensor],
    *,
    formula: str | None = None,
    source: str | None = None,
    replace: bool = False,
) -> LossSpec:
    """Register a preference loss of your own under ``name``; return its :class:`LossSpec`.

    ``fn(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
    reference_rejected_logps, beta, **params) -> [B]``: tensors ``[B]`` of sequence
    log-probabilities and the KL weight β in, the per-pair loss (to minimise, torch operations
    only) out — the signature of TRL's ``DPOTrainer`` losses. Parameters after the five need
    defaults; they become the loss's keyword parameters (``preference_loss(name, ..., lam=5)``).
    It is then usable wherever a built-in name is (:func:`preference_loss`, the toy dynamics,
    the population optimum, ``mi-bounds lm run --losses``, ``MIDPOTrainer``, ``mi-bounds
    audit``). Example (DPOP, Pal et al. 2024)::

        def dpop(pc, pr, rc, rr, beta, lam=50.0):
            z_w, z_l = pc - rc, pr - rr
            return -F.logsigmoid(beta * (z_w - z_l - lam * torch.relu(-z_w)))
        register_loss("dpop", dpop)

    Args:
        name: the registry key: a non-empty string without ``:``, not a built-in name.
        fn: the loss.
        formula: the per-pair loss in words (default: the first line of ``fn``'s docstring).
        source: where the loss comes from (default: ``module.function``).
        replace: allow replacing a different function already registered under ``name``.

    Raises:
        ValueError: ``name`` is empty, contains ``:``, names a built-in loss, or is taken by
            another function (without ``replace``); ``fn`` raises, returns the wrong shape, a
            non-finite value or a value without an autograd graph on ordinary inputs (four
            pairs of float64 and float32 log-probabilities, β = 0.1).
        TypeError: ``fn`` is not callable or cannot take the five arguments.
    """
    if not isinstance(name, str) or not name.strip() or ":" in name:
        raise ValueError(f"register_loss: name must be a non-empty string without ':', got "
                         f"{name!r}")
    if name in LOSSES:
        raise ValueError(f"register_loss: {name!r} shadows the built-in loss {name!r} "
                         f"({LOSSES[name].source}); choose another name")
    old = _REGISTERED.get(name)
    if old is not None and old.fn is not fn and not replace:
        raise ValueError(f"register_loss: {name!r} is already registered ({old.source}); pass "
                         f"replace=True to replace it")
    params = _check_user_loss(name, fn)
    doc = (inspect.getdoc(fn) or "").strip().splitlines()
    spec = LossSpec(
        name, fn, None, _NA, _NA,
        source or f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', name)} "
                  f"(registered)",
        formula or (doc[0] if doc else f"{name}(policy_chosen_logps, policy_rejected_logps, "
                                        f"reference_chosen_logps, reference_rejected_logps, β)"),
        params=params, inputs="logps", builtin=False)
    _REGISTERED[name] = spec
    return spec


def unregister_loss(name: str) -> None:
    """Remove a loss of :func:`register_loss` (built-ins cannot be removed)."""
    if name in LOSSES:
        raise ValueError(f"unregister_loss: {name!r} is a built-in loss")
    if name not in _REGISTERED:
        raise ValueError(f"unregister_loss: no registered loss {name!r}")
    del _REGISTERED[name]
    for ref in [r for r, n in _LOADED.items() if n == name]:
        del _LOADED[ref]


def load_loss(reference: str, name: str | None = None) -> str:
    """Load ``"FILE.py:FUNCTION"`` or ``"module:function"``, register it (under ``name``,
    default the function's name) and return the registered name. Loading the same reference
    again returns the same name without re-running the file.

    Raises:
        ValueError: a malformed reference, a missing file, module or function, or a function
            that fails :func:`register_loss`'s checks.
    """
    if reference in _LOADED and _LOADED[reference] in _REGISTERED:
        return _LOADED[reference]
    where, sep, func = reference.rpartition(":")
    if not sep or not where or not func.isidentifier():
        raise ValueError(f"loss reference {reference!r}: use FILE.py:FUNCTION or "
                         f"module:function")
    if where.endswith(".py"):
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"loss reference {reference!r}: no file {where}")
        mod_name = f"_mi_bounds_user_loss_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"loss reference {reference!r}: cannot load {where}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[mod_name]
            raise ValueError(f"loss reference {reference!r}: running {where} raised "
                             f"{type(err).__name__}: {err}") from err
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as err:
            raise ValueError(f"loss reference {reference!r}: cannot import {where}: {err}"
                             ) from err
    fn = getattr(module, func, None)
    if fn is None:
        raise ValueError(f"loss reference {reference!r}: {where} has no {func!r}")
    key = func if name is None else name
    register_loss(key, fn, source=reference)
    _LOADED[reference] = key
    return key


# --------------------------------------------------------------------------------------------
# Public entry points.
# --------------------------------------------------------------------------------------------


def _logratios(
    policy_chosen_logps: ArrayLike,
    policy_rejected_logps: ArrayLike,
    reference_chosen_logps: ArrayLike,
    reference_rejected_logps: ArrayLike,
    *,
    multi_negative: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate the four log-probability arguments; return (pc, pr, rc, rr) in one dtype (the
    rejected ones ``[..., K-1]`` with ``multi_negative``)."""
    pc = as_float_tensor(policy_chosen_logps, "policy_chosen_logps", min_ndim=0)
    pr = as_float_tensor(policy_rejected_logps, "policy_rejected_logps", min_ndim=0, like=pc)
    rc = as_float_tensor(reference_chosen_logps, "reference_chosen_logps", min_ndim=0, like=pc)
    rr = as_float_tensor(reference_rejected_logps, "reference_rejected_logps", min_ndim=0, like=pc)
    pc, pr, rc, rr = promote(pc, pr, rc, rr)
    if rc.shape != pc.shape:
        raise ValueError(
            f"reference_chosen_logps must have the shape of policy_chosen_logps "
            f"{tuple(pc.shape)}, got {tuple(rc.shape)}"
        )
    if rr.shape != pr.shape:
        raise ValueError(
            f"reference_rejected_logps must have the shape of policy_rejected_logps "
            f"{tuple(pr.shape)}, got {tuple(rr.shape)}"
        )
    if multi_negative:
        if pr.shape == pc.shape:  # one negative per chosen: K = 2
            pr, rr = pr.unsqueeze(-1), rr.unsqueeze(-1)
        elif pr.shape[:-1] != pc.shape:
            raise ValueError(
                f"policy_rejected_logps must have shape [*policy_chosen_logps.shape, K-1] = "
                f"[{', '.join(map(str, pc.shape))}, K-1] (or the chosen shape for K = 2), "
                f"got {tuple(pr.shape)}"
            )
    elif pr.shape != pc.shape:
        raise ValueError(
            f"policy_rejected_logps must have the shape of policy_chosen_logps "
            f"{tuple(pc.shape)}, got {tuple(pr.shape)}"
        )
    return pc, pr, rc, rr


def _check_params(spec: LossSpec, params: dict[str, object], like: torch.Tensor) -> dict:
    """Validate the loss's own keyword parameters (TRL's names) and fill in defaults."""
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        accepted = ", ".join(spec.params) or "none"
        raise TypeError(
            f"preference loss {spec.name!r} got unexpected parameter(s) {', '.join(unknown)}; "
            f"it accepts: {accepted}"
        )
    out = {**spec.params, **params}
    if not spec.builtin:  # a registered loss checks its own parameters
        return out
    if "label_smoothing" in out:
        if spec.name == "exo_pair":
            out["label_smoothing"] = check_in_range(
                out["label_smoothing"], "label_smoothing", 0.0, 1.0, low_open=True,
                high_open=True, why=" for 'exo_pair' (the EXO paper recommends 1e-3)")
        else:
            out["label_smoothing"] = check_in_range(
                out["label_smoothing"], "label_smoothing", 0.0, 0.5, high_open=True,
                why=f" for {spec.name!r}")
    if "discopop_tau" in out:
        out["discopop_tau"] = check_positive(out["discopop_tau"], "discopop_tau")
    for name in ("chosen_lengths", "rejected_lengths"):
        if name in out and out[name] is not None:
            n = as_float_tensor(out[name], name, min_ndim=0, like=like).to(like.dtype)
            if value_checks_enabled() and bool((n < 0).any()):
                raise ValueError(f"{name} must be non-negative token counts")
            try:
                torch.broadcast_shapes(n.shape, like.shape)
            except RuntimeError as err:
                raise ValueError(
                    f"{name} must broadcast to the batch shape {tuple(like.shape)}, "
                    f"got {tuple(n.shape)}"
                ) from err
            out[name] = n
    return out


def preference_loss(
    kind: str,
    policy_chosen_logps: ArrayLike,
    policy_rejected_logps: ArrayLike,
    reference_chosen_logps: ArrayLike,
    reference_rejected_logps: ArrayLike,
    *,
    beta: float = 0.1,
    reduction: str = "mean",
    validate: bool = True,
    **params: object,
) -> torch.Tensor:
    r"""A preference loss (to minimise) of sequence log-probabilities; see :data:`LOSSES`.

    With ``z_w = policy_chosen_logps - reference_chosen_logps``,
    ``z_l = policy_rejected_logps - reference_rejected_logps`` and the implicit critic
    ``T = β z`` (docs/THEORY.md §2), e.g.

    .. math:: \mathcal{L}_{dpo} = \mathrm{softplus}(-(T_w - T_l)) = \log 2 - I_{DV}(T;
              P = \delta_w, Q = \tfrac12(\delta_w + \delta_l))

    .. math:: \mathcal{L}_{mio} = \mathrm{softplus}(-T_w) + \tfrac12\mathrm{softplus}(T_w)
              + \tfrac12\mathrm{softplus}(T_l) = -I_{JS}(T; \delta_w, \tfrac12(\delta_w+\delta_l))

    Args:
        kind: a key of :data:`LOSSES` (``dpo``, ``mio``, ``bco_pair``, ``infonce``, ``nwj``,
            ``ipo``, ``hinge``, ``robust``, ``nca_pair``, ``sppo_hard``, ``apo_zero``,
            ``apo_down``, ``exo_pair``, ``discopop``, ``sigmoid_norm``, ``rpo``, ``sft``), a
            name of :func:`register_loss`, or ``"FILE.py:FUNCTION"`` (see :func:`get_loss`).
        policy_chosen_logps, reference_chosen_logps: sequence log-probabilities of the chosen
            responses under the policy and the reference, shape ``[B]`` (any batch shape).
        policy_rejected_logps, reference_rejected_logps: the same for the rejected responses,
            shape ``[B]``; for ``kind="infonce"``, ``[B, K-1]`` (K-1 negatives per chosen;
            ``[B]`` means K = 2).
        beta: the KL weight β > 0 (TRL's ``beta``; for ``ipo`` it is the τ of the IPO paper).
        reduction: ``'none'`` (per-example losses ``[B]``), ``'mean'`` or ``'sum'``.
        **params: the loss's own parameters, with TRL's names: ``label_smoothing`` (``robust``,
            in [0, 0.5); ``exo_pair``, in (0, 1), required > 0 as in TRL), ``discopop_tau``
            (``discopop``, default 0.05), ``chosen_lengths``/``rejected_lengths`` (``ipo``,
            ``sigmoid_norm``: completion token counts, clamped to ≥ 1 as TRL does; default
            ``None`` = the log-probabilities are used as they are).
        validate: ``False`` skips the checks that read tensor values (NaN/inf in the
            log-probabilities, ``chosen_logps`` and lengths; non-negative lengths): on an
            accelerator each is a host-device synchronisation. For a training loop whose inputs
            come from its own model (the align stage); shapes and parameters are still checked,
            and a non-finite input gives a non-finite loss instead of a ``ValueError``.

    Returns:
        The reduced loss, in the inputs' common dtype (float32 at least), with autograd intact.

    Raises:
        ValueError: unknown ``kind`` (the message lists the valid ones), mismatched shapes,
            non-finite inputs, ``beta`` ≤ 0, a parameter out of range, unknown ``reduction``.
        TypeError: non-tensor input or an unexpected keyword parameter.

    Example:
        >>> import torch
        >>> pc, pr = torch.tensor([-5.0]), torch.tensor([-7.0])
        >>> rc, rr = torch.tensor([-6.0]), torch.tensor([-6.0])
        >>> preference_loss("dpo", pc, pr, rc, rr, beta=1.0)  # softplus(-(1 - (-1)))
        tensor(0.1269)
    """
    if not validate:  # the same call with the value checks off (no host-device syncs)
        with skip_value_checks():
            return preference_loss(kind, policy_chosen_logps, policy_rejected_logps,
                                   reference_chosen_logps, reference_rejected_logps, beta=beta,
                                   reduction=reduction, **params)
    spec = get_loss(kind)
    beta = check_positive(beta, "beta")
    check_reduction(reduction)
    pc, pr, rc, rr = _logratios(
        policy_chosen_logps,
        policy_rejected_logps,
        reference_chosen_logps,
        reference_rejected_logps,
        multi_negative=spec.multi_negative,
    )
    kwargs = _check_params(spec, dict(params), pc)
    per = spec.per_example(pc, pr, rc, rr, beta=beta, **kwargs)
    if not spec.builtin and (not isinstance(per, torch.Tensor) or per.shape != pc.shape):
        got = tuple(per.shape) if isinstance(per, torch.Tensor) else type(per).__name__
        raise ValueError(f"registered loss {spec.name!r} returned {got}; it must return the "
                         f"per-pair loss of shape {tuple(pc.shape)}")
    return reduce(per, reduction)


def implicit_reward(
    policy_logps: ArrayLike, reference_logps: ArrayLike, beta: float
) -> torch.Tensor:
    """The implicit critic / reward ``β (policy_logps - reference_logps)`` (TRL's ``rewards/*``).

    Shapes: any matching shapes; returns a tensor of that shape (autograd intact).
    """
    beta = check_positive(beta, "beta")
    p = as_float_tensor(policy_logps, "policy_logps", min_ndim=0)
    r = as_float_tensor(reference_logps, "reference_logps", min_ndim=0, like=p)
    p, r = promote(p, r)
    if p.shape != r.shape:
        raise ValueError(
            f"reference_logps must have the shape of policy_logps {tuple(p.shape)}, "
            f"got {tuple(r.shape)}"
        )
    return beta * (p - r)


def preference_metrics(
    policy_chosen_logps: ArrayLike,
    policy_rejected_logps: ArrayLike,
    reference_chosen_logps: ArrayLike,
    reference_rejected_logps: ArrayLike,
    *,
    beta: float,
) -> dict[str, torch.Tensor]:
    """TRL's logged metrics for a batch (detached scalars, means over the batch).

    Returns a dict with ``rewards/chosen`` (mean of ``T_w``), ``rewards/rejected`` (mean of
    ``T_l``), ``rewards/margins`` (mean of ``T_w - T_l``), ``rewards/accuracies`` (fraction with
    ``T_w > T_l``, strict as in TRL), ``logps/chosen`` and ``logps/rejected`` (means of the
    policy's log-probabilities). The rejected arguments may be ``[B]`` or ``[B, K-1]``; with
    K-1 negatives, margins and accuracies are over all (chosen, rejected) pairs.
    """
    beta = check_positive(beta, "beta")
    pc, pr, rc, rr = _logratios(
        policy_chosen_logps,
        policy_rejected_logps,
        reference_chosen_logps,
        reference_rejected_logps,
        multi_negative=True,
    )
    z_w, z_l = pc - rc, pr - rr
    with torch.no_grad():
        t_w, t_l = beta * z_w, beta * z_l  # (...), (..., K-1)
        diff = t_w.unsqueeze(-1) - t_l
        return {
            "rewards/chosen": t_w.mean(),
            "rewards/rejected": t_l.mean(),
            "rewards/margins": diff.mean(),
            "rewards/accuracies": (diff > 0).to(t_w.dtype).mean(),
            "logps/chosen": pc.mean(),
            "logps/rejected": pr.mean(),
        }
