"""Which mutual information RLHF and DPO bound: the two readings of a policy's joint, exactly.

A policy ``pi(y|x)`` in a :class:`~toy_models.world.CategoricalWorld` (prompt weights ``D``,
reference ``pi_ref``) defines the joint ``P(x, y) = D(x) pi(y|x)``. Two distributions can play
the negatives ``Q`` of a variational bound (docs/THEORY.md §3, "Which MI"; proofs P12–P14):

* reading ``"mi"``: ``Q(x, y) = D(x) pi_Y(y)``, the product of P's marginals, with
  ``pi_Y(y) = Σ_x D(x) pi(y|x)``; ``KL(P ‖ Q) = I_pi(X; Y)``, the mutual information between
  prompt and response under the policy;
* reading ``"rlhf"``: ``Q(x, y) = D(x) pi_ref(y|x)``; ``KL(P ‖ Q) = E_x KL(pi(.|x) ‖ pi_ref(.|x))``,
  the penalty of the RLHF objective. It is a product distribution only when ``pi_ref(y|x)``
  does not depend on ``x``.

The two are tied by the decomposition (P12)::

    E_x KL(pi ‖ pi_ref) = I_pi(X; Y) + E_{x~D, y~pi(.|x)}[log pi_Y(y) - log pi_ref(y|x)]

whose last term, the *gap*, equals ``KL(pi_Y ‖ pibar_ref) - E_P[log pi_ref(y|x) - log
pibar_ref(y)]`` with ``pibar_ref(y) = Σ_x D(x) pi_ref(y|x)``. When ``pi_ref(y|x) = rho(y)`` the
second term vanishes and the gap is ``KL(pi_Y ‖ rho) ≥ 0``; otherwise it can have either sign
(at ``pi = pi_ref`` it is ``-I_{pi_ref}(X; Y) ≤ 0``).

:func:`decompose` computes every term exactly (float64, ``0 log 0 = 0``, ``+inf`` where ``pi``
leaves the support of ``pi_ref``; each term by its own formula, so the identity is a test, not a
tautology). :func:`bound_value` evaluates the DV, JS and InfoNCE bounds of
:mod:`mi_bounds.bounds` on either reading, at the critic ``r/beta`` or at the implicit critic
``beta log(pi/pi_ref)``, per prompt or on the joint (see :data:`FORMS`).

Example:
    >>> from toy_models.world import CategoricalWorld
    >>> w = CategoricalWorld.random(0, n_prompts=3, n_responses=4, beta=0.5)
    >>> dec = decompose(w, w.optimal_policy())
    >>> abs(dec.kl_to_reference - (dec.mutual_information + dec.gap)) < 1e-12
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from mi_bounds.bounds import get_bound
from toy_models._threads import single_threaded
from toy_models.oracle import _log_sum, as_distribution, jsd, kl, kl_log, safe_log
from toy_models.world import CategoricalWorld

__all__ = [
    "BOUND_NAMES",
    "CRITICS",
    "FORMS",
    "READINGS",
    "Decomposition",
    "bound_target",
    "bound_value",
    "critic_table",
    "decompose",
    "decompose_tables",
    "policy_marginal",
    "reading_distributions",
    "reading_kl",
    "reading_report",
    "reference_marginal",
]

Table = NDArray[np.float64]

#: The two readings of the joint D(x) pi(y|x): name -> the negatives Q and what KL(P ‖ Q) is.
READINGS: dict[str, str] = {
    "mi": "Q = D(x) pi_Y(y) (product of marginals); KL(P ‖ Q) = I_pi(X; Y)",
    "rlhf": "Q = D(x) pi_ref(y|x); KL(P ‖ Q) = E_x KL(pi(.|x) ‖ pi_ref(.|x))",
}
#: The two critics: ``"reward"`` is T = r/beta (RLHF's); ``"implicit"`` is T = beta (log pi -
#: log pi_ref) (DPO's implicit reward).
CRITICS: dict[str, str] = {"reward": "r/beta", "implicit": "beta (log pi - log pi_ref)"}
#: The bounds this module evaluates on a reading (names of :data:`mi_bounds.bounds.BOUNDS`).
BOUND_NAMES = ("dv", "js", "infonce")
#: ``"per_prompt"``: ``E_x[B(T(x, .); P(.|x), Q(.|x))]`` (the bound of each prompt's
#: conditionals, averaged with D; how C1 and DPO's per-pair losses read it); ``"joint"``:
#: ``B(T; P, Q)`` on the (x, y) table (MINE's form). DV: joint ≤ per-prompt, equal iff
#: ``E_{Q(.|x)} e^T`` does not depend on x (P13); JS: the two are equal (P14). InfoNCE has only
#: the per-prompt form (its K - 1 negatives are drawn for the positive's own prompt).
FORMS = ("per_prompt", "joint")

#: Distance below the smallest finite critic value at which a cell with critic -inf is passed to
#: the bounds (which need finite input): e^{-2000} is exactly 0 in float64 next to any other
#: term, so every value is the exact T -> -inf limit.
_NEG_INF_MARGIN = 2000.0


# --------------------------------------------------------------------------------------------
# Marginals and the decomposition.
# --------------------------------------------------------------------------------------------


def _policy(world: CategoricalWorld, pi: ArrayLike) -> Table:
    arr = as_distribution(pi, "pi")
    if arr.shape != world.pi_ref.shape:
        raise ValueError(f"pi must have shape {world.pi_ref.shape} (= pi_ref), got {arr.shape}")
    return arr


def policy_marginal(world: CategoricalWorld, pi: ArrayLike) -> Table:
    """``pi_Y(y) = Σ_x D(x) pi(y|x)`` ``[Y]``: the response marginal of the joint."""
    return world.prompt_weights @ _policy(world, pi)


def reference_marginal(world: CategoricalWorld) -> Table:
    """``pibar_ref(y) = Σ_x D(x) pi_ref(y|x)`` ``[Y]``: the reference's response marginal."""
    return world.prompt_weights @ world.pi_ref


def _weighted_rows(d: Table, per_row: Table) -> Table:
    """``Σ_x d(x) v(x)`` over the last axis, with ``0 · inf = 0`` (prompts of weight 0 drop)."""
    with np.errstate(invalid="ignore"):  # 0 · inf on a dropped prompt: replaced by 0
        return np.where(d > 0, d * per_row, 0.0).sum(-1)


def decompose_tables(d: ArrayLike, pi: ArrayLike, pi_ref: ArrayLike) -> dict[str, Table]:
    r"""Every term of the decomposition, for a batch of worlds.

    .. math:: \mathbb{E}_x \mathrm{KL}(\pi\|\pi_{ref}) = I_\pi(X;Y)
              + \mathbb{E}_P[\log\pi_Y(y) - \log\pi_{ref}(y|x)],\qquad
              \text{gap} = \mathrm{KL}(\pi_Y\|\bar\pi_{ref})
              - \mathbb{E}_P\Big[\log\frac{\pi_{ref}(y|x)}{\bar\pi_{ref}(y)}\Big]

    Args:
        d: prompt weights ``[..., X]``.
        pi, pi_ref: policies ``[..., X, Y]`` (rows are probability vectors; zeros allowed).

    Returns:
        dict of arrays of the batch shape ``[...]``: ``kl_to_reference`` (E_x KL(pi ‖ pi_ref),
        by :func:`toy_models.oracle.kl` per prompt), ``mutual_information`` (I_pi(X; Y) =
        KL(P ‖ D ⊗ pi_Y), by the oracle), ``gap`` (E_P[log pi_Y - log pi_ref], summed over the
        cells with P > 0), ``marginal_kl`` (KL(pi_Y ‖ pibar_ref), by the oracle) and
        ``reference_pmi`` (E_P[log pi_ref(y|x) - log pibar_ref(y)]). Each term has its own
        formula. Where pi puts mass on a cell with pi_ref = 0, ``kl_to_reference`` and ``gap``
        are ``+inf`` and ``reference_pmi`` is ``-inf`` (the identities hold in the extended
        reals); nothing is NaN.
    """
    d_ = as_distribution(d, "d")
    pi_ = as_distribution(pi, "pi")
    ref = as_distribution(pi_ref, "pi_ref")
    if pi_.shape != ref.shape or pi_.ndim < 2 or pi_.shape[:-1] != d_.shape:
        raise ValueError(
            f"pi {pi_.shape} and pi_ref {ref.shape} must both have shape [..., X, Y] with "
            f"d of shape [..., X], got d {d_.shape}"
        )
    joint = d_[..., :, None] * pi_  # P(x, y)
    marg = joint.sum(-2)  # pi_Y(y)
    ref_marg = (d_[..., :, None] * ref).sum(-2)  # pibar_ref(y)
    # I_pi(X;Y) = Σ_x D(x) KL(pi(.|x) ‖ pi_Y), with log pi_Y summed in log space: the product
    # D(x) pi_Y(y) is never formed, so it cannot underflow (D = [1, 5e-301] gave inf)
    log_marg_exact = _log_sum(safe_log(d_)[..., :, None] + safe_log(pi_), -2)  # [..., Y]
    mi = _weighted_rows(d_, kl_log(safe_log(pi_), log_marg_exact[..., None, :]))
    kl_ref = _weighted_rows(d_, kl(pi_, ref))
    mass = joint > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_ref = np.log(ref)
        log_marg = np.log(marg)[..., None, :]
        log_ref_marg = np.log(ref_marg)[..., None, :]
        # cells with P > 0 have pi_Y > 0; pi_ref = 0 there makes the term +inf (never NaN)
        gap_cells = np.where(mass, joint * (log_marg - log_ref), 0.0)
        pmi_cells = np.where(mass, np.where(ref > 0, joint * (log_ref - log_ref_marg), -np.inf),
                             0.0)
    return {
        "kl_to_reference": np.asarray(kl_ref, dtype=np.float64),
        "mutual_information": np.asarray(mi, dtype=np.float64),
        "gap": gap_cells.sum((-2, -1)),
        "marginal_kl": np.asarray(kl(marg, ref_marg), dtype=np.float64),
        "reference_pmi": pmi_cells.sum((-2, -1)),
    }


@dataclass(frozen=True)
class Decomposition:
    """The terms of ``E_x KL(pi ‖ pi_ref) = I_pi(X; Y) + gap`` for one policy (nats).

    Attributes:
        kl_to_reference: ``E_x KL(pi(.|x) ‖ pi_ref(.|x))`` (RLHF's penalty; ``+inf`` if pi
            leaves the support of pi_ref).
        mutual_information: ``I_pi(X; Y)`` under the joint ``D(x) pi(y|x)``.
        gap: ``E_{x~D, y~pi}[log pi_Y(y) - log pi_ref(y|x)]``.
        marginal_kl: ``KL(pi_Y ‖ pibar_ref)``, ``pibar_ref = Σ_x D pi_ref`` (≥ 0).
        reference_pmi: ``E_{x~D, y~pi}[log pi_ref(y|x) - log pibar_ref(y)]``, the reference's
            pointwise MI averaged under the policy; ``gap = marginal_kl - reference_pmi``.
        reference_depends_on_x: false when every prompt of positive weight has the same
            ``pi_ref(.|x)``; then ``reference_pmi = 0`` and ``gap = KL(pi_Y ‖ pi_ref) ≥ 0``.
    """

    kl_to_reference: float
    mutual_information: float
    gap: float
    marginal_kl: float
    reference_pmi: float
    reference_depends_on_x: bool

    def as_dict(self) -> dict[str, float | bool]:
        return asdict(self)


def _depends_on_x(world: CategoricalWorld) -> bool:
    rows = world.pi_ref[world.prompt_weights > 0]
    return bool(np.any(rows != rows[0]))


def decompose(world: CategoricalWorld, pi: ArrayLike) -> Decomposition:
    """The decomposition's terms for policy ``pi [X, Y]`` in ``world`` (see
    :func:`decompose_tables`). Any policy is accepted; pi* is ``world.optimal_policy()``."""
    terms = decompose_tables(world.prompt_weights, _policy(world, pi), world.pi_ref)
    return Decomposition(**{k: float(v) for k, v in terms.items()},
                         reference_depends_on_x=_depends_on_x(world))


# --------------------------------------------------------------------------------------------
# The readings, the critics and the bounds.
# --------------------------------------------------------------------------------------------


def _check_reading(reading: str) -> None:
    if reading not in READINGS:
        raise ValueError(f"unknown reading {reading!r}; valid readings: {', '.join(READINGS)}")


def _conditional_negatives(world: CategoricalWorld, pi: Table, reading: str) -> Table:
    """``Q(y|x)`` ``[X, Y]``: pi_Y on every row (``"mi"``) or pi_ref (``"rlhf"``)."""
    _check_reading(reading)
    if reading == "mi":
        return np.broadcast_to(world.prompt_weights @ pi, pi.shape).copy()
    return np.array(world.pi_ref)


def reading_distributions(world: CategoricalWorld, pi: ArrayLike,
                          reading: str) -> tuple[Table, Table]:
    """The joint tables ``(P, Q)`` ``[X, Y]`` of a reading: ``P = D(x) pi(y|x)`` and
    ``Q = D(x) pi_Y(y)`` (``"mi"``) or ``Q = D(x) pi_ref(y|x)`` (``"rlhf"``)."""
    pi_ = _policy(world, pi)
    q = _conditional_negatives(world, pi_, reading)
    d = world.prompt_weights[:, None]
    return d * pi_, d * q


def reading_kl(world: CategoricalWorld, pi: ArrayLike, reading: str) -> float:
    """``KL(P ‖ Q)`` of a reading (by the oracle): ``I_pi(X; Y)`` for ``"mi"``,
    ``E_x KL(pi ‖ pi_ref)`` for ``"rlhf"``. What DV and InfoNCE lower-bound."""
    p, q = reading_distributions(world, pi, reading)
    return float(kl(p.ravel(), q.ravel()))


def bound_target(world: CategoricalWorld, pi: ArrayLike, bound: str, reading: str) -> float:
    """What ``bound`` lower-bounds on ``reading``: ``KL(P ‖ Q)`` for ``dv`` and ``infonce``,
    ``2 JSD(P, Q) - 2 log 2`` for ``js`` (JSD of the joints = E_x JSD of the conditionals)."""
    _check_bound(bound)
    if bound == "js":
        p, q = reading_distributions(world, pi, reading)
        return float(2.0 * jsd(p.ravel(), q.ravel()) - 2.0 * math.log(2.0))
    return reading_kl(world, pi, reading)


def critic_table(world: CategoricalWorld, pi: ArrayLike, critic: str) -> Table:
    """A named critic ``T [X, Y]`` (:data:`CRITICS`).

    * ``"reward"``: ``r/beta`` (finite everywhere). For ``pi = pi*`` it is
      ``log(pi*/pi_ref) + log Z(x)`` on the support of pi_ref.
    * ``"implicit"``: ``beta (log pi - log pi_ref)`` (:meth:`CategoricalWorld.implicit_critic`)
      where ``pi > 0``, and ``-inf`` where ``pi = 0`` (including cells where ``pi_ref = 0``
      too: there it is the value of the MI reading's optimal critic ``log pi/pi_Y``; the RLHF
      reading puts no mass on them). For ``pi = pi*`` it is ``r - beta log Z(x)`` on the
      support of pi_ref.

    Raises:
        ValueError: unknown name; ``"implicit"`` for a policy that puts mass where pi_ref has
            none (the critic would be ``+inf`` there).
    """
    if critic not in CRITICS:
        raise ValueError(f"unknown critic {critic!r}; valid critics: {', '.join(CRITICS)}")
    pi_ = _policy(world, pi)
    if critic == "reward":
        return world.reward / world.beta
    if np.any((pi_ > 0) & (world.pi_ref == 0)):
        raise ValueError("pi puts mass where pi_ref is zero: its implicit critic is +inf there")
    return np.where(pi_ > 0, world.implicit_critic(pi_), -np.inf)


def _finite_critic(t: ArrayLike, shape: tuple[int, ...]) -> Table:
    """The critic with ``-inf`` cells replaced by a value whose exponential is exactly 0
    next to every other term (the exact T -> -inf limit); ``+inf``/NaN raise."""
    arr = np.asarray(t, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"critic must have shape {shape}, got {arr.shape}")
    if np.any(np.isnan(arr)) or np.any(arr == np.inf):
        raise ValueError("critic must be finite or -inf (no NaN, no +inf)")
    finite = arr[np.isfinite(arr)]
    floor = min(float(finite.min()) if finite.size else 0.0, 0.0) - _NEG_INF_MARGIN
    return np.where(np.isfinite(arr), arr, floor)


def _check_bound(bound: str) -> None:
    if bound not in BOUND_NAMES:
        raise ValueError(f"unknown bound {bound!r}; valid bounds: {', '.join(BOUND_NAMES)}")


def bound_value(
    world: CategoricalWorld,
    pi: ArrayLike,
    bound: str,
    reading: str,
    critic: str | ArrayLike,
    *,
    form: str = "per_prompt",
    K: int = 2,
) -> float:
    r"""The value of ``bound`` on ``reading`` at ``critic``, exactly.

    With ``P(y|x) = pi(y|x)`` and ``Q(y|x)`` the reading's negatives (``pi_Y`` or ``pi_ref``):

    * ``form="per_prompt"``: ``Σ_x D(x) B(T(x, .); P(.|x), Q(.|x))``. For ``dv`` and ``js``
      the function of :mod:`mi_bounds.bounds` with weights; for ``infonce`` the exact
      expectation of ``T(x, y_1) - log (1/K) Σ_j e^{T(x, y_j)}`` with ``y_1 ~ pi(.|x)`` and
      ``y_2..y_K ~ Q(.|x)`` iid (:func:`mi_bounds.bounds.infonce_bound_from_negatives`,
      enumerated over ``Y^K``). On the ``"mi"`` reading this is exactly the score-matrix
      InfoNCE of K iid joint pairs (P14).
    * ``form="joint"`` (``dv``, ``js``): ``B(T; P, Q)`` on the flattened ``(x, y)`` table.

    DV and InfoNCE are ≤ :func:`reading_kl`, JS ≤ ``2 JSD - 2 log 2`` (:func:`bound_target`).

    Args:
        world, pi: the world and a policy ``[X, Y]``.
        bound: ``"dv"``, ``"js"`` or ``"infonce"``.
        reading: ``"mi"`` or ``"rlhf"`` (:data:`READINGS`).
        critic: a name of :data:`CRITICS` or a table ``[X, Y]`` (finite or ``-inf``).
        form: ``"per_prompt"`` or ``"joint"`` (:data:`FORMS`).
        K: InfoNCE's number of samples (≥ 2).
    """
    _check_bound(bound)
    _check_reading(reading)
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; valid forms: {', '.join(FORMS)}")
    pi_ = _policy(world, pi)
    raw = critic_table(world, pi_, critic) if isinstance(critic, str) else critic
    t = _finite_critic(raw, pi_.shape)
    q = _conditional_negatives(world, pi_, reading)
    if bound == "infonce" and form != "per_prompt":
        raise ValueError("infonce has only the per_prompt form: its negatives are drawn for "
                         "the positive's own prompt")
    # tiny tensors: intra-op threads only add synchronisation (see toy_models._threads)
    with single_threaded():
        return _evaluate(world, bound, form, t, pi_, q, K)


def _evaluate(world: CategoricalWorld, bound: str, form: str, t: Table, pi: Table, q: Table,
              K: int) -> float:
    d = world.prompt_weights
    if bound == "infonce":
        # the exact K-tuple enumeration of CategoricalWorld.bound_at, with these P and Q rows
        return world._infonce_at(t, pi, q, K=K)
    fn = get_bound(bound).fn
    if form == "per_prompt":
        tt = torch.from_numpy(t)
        per_prompt = fn(tt, tt, pos_weight=torch.from_numpy(pi), neg_weight=torch.from_numpy(q))
        return float(d @ per_prompt.double().numpy())
    tt = torch.from_numpy(t.ravel())
    p_joint, q_joint = d[:, None] * pi, d[:, None] * q
    return float(fn(tt, tt, pos_weight=torch.from_numpy(p_joint.ravel()),
                    neg_weight=torch.from_numpy(q_joint.ravel())))


def reading_report(world: CategoricalWorld, pi: ArrayLike | None = None, *,
                   K: int = 2) -> dict:
    """Everything about one policy (default ``pi*``), JSON-ready.

    Returns:
        dict with ``decomposition`` (:class:`Decomposition` as a dict),
        ``mi_reference`` (``I_{pi_ref}(X; Y)``), ``targets[reading][bound]``
        (:func:`bound_target`) and ``bounds[bound][reading][critic][form]``
        (:func:`bound_value`; InfoNCE per prompt only, with ``K``).
    """
    pi_ = world.optimal_policy() if pi is None else _policy(world, pi)
    bounds: dict = {}
    for b in BOUND_NAMES:
        forms = ("per_prompt",) if b == "infonce" else FORMS
        bounds[b] = {
            r: {c: {f: bound_value(world, pi_, b, r, c, form=f, K=K) for f in forms}
                for c in CRITICS}
            for r in READINGS
        }
    return {
        "decomposition": decompose(world, pi_).as_dict(),
        "mi_reference": float(world.mutual_information(world.pi_ref)),
        "targets": {r: {b: bound_target(world, pi_, b, r) for b in BOUND_NAMES}
                    for r in READINGS},
        "bounds": bounds,
        "K": K,
    }
