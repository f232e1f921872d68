"""A categorical world: prompts, responses, a base policy, a reward, and everything exact.

A :class:`CategoricalWorld` holds prompt weights ``D [X]``, a reference (base) policy
``pi_ref [X, Y]``, a reward ``r [X, Y]`` and the KL weight ``beta``. Every quantity is exact,
float64 and computed in the log domain (docs/THEORY.md §2–6):

* the optimal (Gibbs) policy ``pi*(y|x) = pi_ref(y|x) exp(r(x,y)/beta) / Z(x)``, exactly zero
  where ``pi_ref`` is zero;
* the RLHF objective ``J(pi) = E_x[E_{y~pi} r - beta KL(pi(.|x) ‖ pi_ref(.|x))]``, the KL to the
  reference, the mutual information ``I(X; Y)`` of the joint ``D(x) pi(y|x)``;
* the implicit critic ``beta (log pi - log pi_ref)`` of a policy and the value of every bound of
  :data:`mi_bounds.bounds.BOUNDS` at any critic table (``P = pi*``, ``Q = pi_ref``, per prompt);
* the distribution of preference pairs ``(x, chosen w, rejected l)``.

Example:
    >>> w = CategoricalWorld.random(0, n_prompts=3, n_responses=5, beta=0.5)
    >>> import numpy as np
    >>> bool(np.isclose(w.rlhf_objective(w.optimal_policy()),
    ...                 w.beta * w.prompt_weights @ w.log_partition()))
    True
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit, logsumexp, xlogy

from mi_bounds._validation import check_positive, sum_tolerance
from mi_bounds.bounds import get_bound, infonce_bound_from_negatives
from toy_models.oracle import as_distribution, kl_log, safe_log
from toy_models.oracle import mutual_information as _oracle_mi

__all__ = ["PAIR_KINDS", "CategoricalWorld"]

Table = NDArray[np.float64]

#: The preference-pair distributions of :meth:`CategoricalWorld.pair_distribution`.
PAIR_KINDS = ("bradley_terry", "base_labelled")

#: Largest number of K-tuples per prompt that the exact InfoNCE expectation enumerates.
_MAX_INFONCE_TUPLES = 2_000_000


def _frozen_array(x: ArrayLike, name: str, *, distribution: bool = False) -> Table:
    """A read-only float64 copy of ``x``; with ``distribution=True`` it is validated as
    probability vectors at the tolerance of ``x``'s own dtype and, if ``x`` had less than float64
    precision (e.g. normalised in float32), renormalised in float64."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    low_precision = arr.dtype.kind == "f" and arr.dtype.itemsize < 8
    if distribution and arr.ndim >= 1:
        as_distribution(arr, name)
    arr = np.array(arr, dtype=np.float64)  # a private copy: the caller's array is not shared
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    if distribution and low_precision:
        arr /= arr.sum(-1, keepdims=True)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class CategoricalWorld:
    """Prompts ``X``, responses ``Y``, base policy, reward and KL weight, all exact.

    Attributes:
        prompt_weights: ``D [X]``, a probability vector over prompts.
        pi_ref: ``[X, Y]``, the reference (base) policy; each row a probability vector (zeros
            allowed: responses the base model never produces).
        reward: ``[X, Y]``, the true reward ``r(x, y)`` (finite).
        beta: the KL weight ``beta > 0``.

    All arrays are stored as read-only float64 copies (distributions given in a lower precision
    are validated at that precision's tolerance and renormalised in float64). Raises
    ``ValueError``/``TypeError`` naming the field on bad input.
    """

    prompt_weights: Table
    pi_ref: Table
    reward: Table
    beta: float

    def __post_init__(self) -> None:
        d = _frozen_array(self.prompt_weights, "prompt_weights", distribution=True)
        pi_ref = _frozen_array(self.pi_ref, "pi_ref", distribution=True)
        reward = _frozen_array(self.reward, "reward")
        if d.ndim != 1:
            raise ValueError(f"prompt_weights must have shape [X], got {d.shape}")
        if pi_ref.ndim != 2 or pi_ref.shape[0] != d.shape[0]:
            raise ValueError(
                f"pi_ref must have shape [X, Y] with X = len(prompt_weights) = {d.shape[0]}, "
                f"got {pi_ref.shape}"
            )
        if reward.shape != pi_ref.shape:
            raise ValueError(
                f"reward must have the shape of pi_ref {pi_ref.shape}, got {reward.shape}"
            )
        object.__setattr__(self, "prompt_weights", d)
        object.__setattr__(self, "pi_ref", pi_ref)
        object.__setattr__(self, "reward", reward)
        object.__setattr__(self, "beta", check_positive(self.beta, "beta"))

    # ----------------------------------------------------------------------------------------
    # Constructors.
    # ----------------------------------------------------------------------------------------

    @classmethod
    def random(
        cls,
        seed: int,
        n_prompts: int,
        n_responses: int,
        beta: float,
        *,
        reward_scale: float = 1.0,
        concentration: float = 1.0,
        zero_fraction: float = 0.0,
        uniform_prompts: bool = False,
    ) -> CategoricalWorld:
        """A random world (numpy ``default_rng(seed)``; the same seed gives the same world).

        ``pi_ref(.|x) ~ Dirichlet(concentration)``; ``r(x, y) ~ N(0, reward_scale²)``;
        ``D ~ Dirichlet(1)`` (uniform if ``uniform_prompts``). With ``zero_fraction > 0``,
        each cell of ``pi_ref`` is set to zero with that probability (keeping at least one
        response per prompt) and the rows renormalised: responses the base model never makes.
        """
        for name, n in (("n_prompts", n_prompts), ("n_responses", n_responses)):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
        check_positive(concentration, "concentration")
        if not 0.0 <= zero_fraction < 1.0:
            raise ValueError(f"zero_fraction must lie in [0, 1), got {zero_fraction}")
        rng = np.random.default_rng(seed)
        pi_ref = rng.dirichlet(np.full(n_responses, float(concentration)), size=n_prompts)
        if zero_fraction > 0:
            zero = rng.random(pi_ref.shape) < zero_fraction
            keep = rng.integers(0, n_responses, size=n_prompts)
            zero[np.arange(n_prompts), keep] = False
            pi_ref = np.where(zero, 0.0, pi_ref)
            pi_ref /= pi_ref.sum(1, keepdims=True)
        reward = float(reward_scale) * rng.standard_normal((n_prompts, n_responses))
        d = (np.full(n_prompts, 1.0 / n_prompts) if uniform_prompts
             else rng.dirichlet(np.ones(n_prompts)))
        return cls(d, pi_ref, reward, beta)

    @property
    def n_prompts(self) -> int:
        return self.pi_ref.shape[0]

    @property
    def n_responses(self) -> int:
        return self.pi_ref.shape[1]

    # ----------------------------------------------------------------------------------------
    # The optimal policy.
    # ----------------------------------------------------------------------------------------

    def _log_pi_ref(self) -> Table:
        return safe_log(self.pi_ref)

    def log_partition(self) -> Table:
        """``log Z(x) = log Σ_y pi_ref(y|x) exp(r(x,y)/beta)``, shape ``[X]`` (by logsumexp)."""
        return logsumexp(self._log_pi_ref() + self.reward / self.beta, axis=1)

    def log_optimal_policy(self) -> Table:
        """``log pi*(y|x) = log pi_ref + r/beta - log Z``; ``-inf`` where ``pi_ref = 0``."""
        return self._log_pi_ref() + self.reward / self.beta - self.log_partition()[:, None]

    def optimal_policy(self) -> Table:
        """The Gibbs policy ``pi* = pi_ref exp(r/beta) / Z`` ``[X, Y]``; exactly 0 where pi_ref = 0.

        It maximises :meth:`rlhf_objective`, with ``J(pi*) = beta E_x log Z(x)``
        (docs/THEORY.md §2; Rafailov et al. 2023, Eq. 4). At small beta its entries underflow to 0
        where ``log pi*`` is below -745: pass :meth:`log_optimal_policy` with ``log=True`` to
        :meth:`kl_to_optimal`-like methods to keep them exact (:meth:`kl_to_optimal` and
        :meth:`implicit_critic` of ``pi*`` do).
        """
        return np.exp(self.log_optimal_policy())

    # ----------------------------------------------------------------------------------------
    # Quantities of any policy.
    # ----------------------------------------------------------------------------------------

    def _policy(self, pi: ArrayLike, name: str = "pi") -> Table:
        arr = as_distribution(pi, name)
        if arr.shape != self.pi_ref.shape:
            raise ValueError(
                f"{name} must have shape {self.pi_ref.shape} (= pi_ref), got {arr.shape}"
            )
        return arr

    def _log_policy(self, pi: ArrayLike, log: bool, name: str = "pi") -> Table:
        """``log pi`` ``[X, Y]`` of a policy given as probabilities or (``log=True``) as
        log-probabilities (``-inf`` for 0; each row's log-sum-exp within the dtype's sum
        tolerance of 0). The world's own ``optimal_policy()``, passed as probabilities, is
        recognised (exact equality) and its exact ``log_optimal_policy()`` used."""
        if not log:
            arr = self._policy(pi, name)
            if np.array_equal(arr, self.optimal_policy()):  # the world's own pi*: exact logs,
                return self.log_optimal_policy()  # also where pi* underflowed to 0
            return safe_log(arr)
        arr = np.asarray(pi)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
        itemsize = arr.dtype.itemsize if arr.dtype.kind == "f" else 8
        arr = arr.astype(np.float64)
        if arr.shape != self.pi_ref.shape:
            raise ValueError(
                f"{name} must have shape {self.pi_ref.shape} (= pi_ref), got {arr.shape}"
            )
        if np.any(np.isnan(arr)) or np.any(arr > 0):
            raise ValueError(f"log {name} must hold log-probabilities (<= 0 or -inf)")
        err = float(np.max(np.abs(logsumexp(arr, axis=1))))
        tol = sum_tolerance(itemsize, arr.shape[1])
        if not err <= tol:
            raise ValueError(f"log {name} must be normalised: each row's log-sum-exp within "
                             f"{tol:g} of 0, largest {err:.3g}")
        return arr

    def kl_to_reference(self, pi: ArrayLike, *, log: bool = False) -> float:
        """``E_x KL(pi(.|x) ‖ pi_ref(.|x))``; ``+inf`` if pi puts mass where pi_ref has none.

        ``log=True``: ``pi`` holds log-probabilities (as :meth:`log_optimal_policy` returns).
        """
        return float(self.prompt_weights @ kl_log(self._log_policy(pi, log), self._log_pi_ref()))

    def kl_to_optimal(self, pi: ArrayLike, *, log: bool = False) -> float:
        """``E_x KL(pi(.|x) ‖ pi*(.|x))``; ``J(pi*) - J(pi) = beta · kl_to_optimal(pi)``.

        Computed against ``log pi*`` (:meth:`log_optimal_policy`), never ``log`` of an
        underflowed ``pi*``: e.g. beta = 0.01, r = [10, 0, 0], pi_ref = [.5, .3, .2] gives
        ``kl_to_optimal(pi_ref) = 499.31``, not ``inf``. ``log=True``: ``pi`` holds
        log-probabilities.
        """
        return float(self.prompt_weights @ kl_log(self._log_policy(pi, log),
                                                  self.log_optimal_policy()))

    def expected_reward(self, pi: ArrayLike) -> float:
        """``E_x E_{y~pi(.|x)} r(x, y)``."""
        return float(self.prompt_weights @ (self._policy(pi) * self.reward).sum(1))

    def rlhf_objective(self, pi: ArrayLike) -> float:
        """``J(pi) = E_x[E_{y~pi} r(x,y) - beta KL(pi(.|x) ‖ pi_ref(.|x))]`` (``-inf`` if pi
        puts mass where pi_ref has none)."""
        kl = self.kl_to_reference(pi)
        if math.isinf(kl):
            return -math.inf
        return self.expected_reward(pi) - self.beta * kl

    def joint(self, pi: ArrayLike) -> Table:
        """The joint ``p(x, y) = D(x) pi(y|x)`` ``[X, Y]``."""
        return self.prompt_weights[:, None] * self._policy(pi)

    def mutual_information(self, pi: ArrayLike) -> float:
        """``I(X; Y)`` under the joint ``D(x) pi(y|x)`` (nats; by :mod:`toy_models.oracle`)."""
        return _oracle_mi(self.joint(pi))

    def implicit_critic(self, pi: ArrayLike, *, log: bool = False) -> Table:
        """``T(x, y) = beta (log pi(y|x) - log pi_ref(y|x))`` ``[X, Y]`` (DPO's implicit reward).

        Cells where ``pi_ref = 0`` are outside Q's support: they hold ``+inf`` if ``pi > 0``
        there and ``0`` (an arbitrary finite value, never used) if ``pi = 0``. Cells with
        ``pi = 0 < pi_ref`` hold ``-inf``. For ``pi*`` it is ``r(x,y) - beta log Z(x)``, finite
        also where ``pi*`` underflows to 0: ``implicit_critic(optimal_policy())`` is recognised
        and computed from ``log_optimal_policy()`` (as is ``log_optimal_policy()`` passed with
        ``log=True``).
        """
        log_pi = self._log_policy(pi, log)
        with np.errstate(invalid="ignore"):
            t = self.beta * (log_pi - self._log_pi_ref())
        outside = self.pi_ref == 0
        return np.where(outside, np.where(np.isneginf(log_pi), 0.0, np.inf), t)

    # ----------------------------------------------------------------------------------------
    # Bounds at a critic table.
    # ----------------------------------------------------------------------------------------

    def bound_at(self, name: str, critic: ArrayLike, **params: object) -> float:
        """``E_x[B(T(x, .); P = pi*(.|x), Q = pi_ref(.|x))]``: a bound of
        :data:`mi_bounds.bounds.BOUNDS` at the critic table ``T [X, Y]``, exactly.

        For each prompt, ``P = pi*(.|x)`` and ``Q = pi_ref(.|x)`` over the responses, and the
        per-prompt values are averaged with ``D``. So every KL bound (``dv``, ``nwj``, ``tuba``)
        is at most ``E_x KL(pi* ‖ pi_ref) = kl_to_reference(pi*)``, and ``js`` at most
        ``E_x[2 JSD(pi*, pi_ref) - 2 log 2]``. For ``infonce``, ``params`` takes ``K`` (default
        2): the exact expectation of ``T(y_1) - log (1/K) Σ_j e^{T(y_j)}`` with ``y_1 ~ pi*``
        and ``y_2..y_K ~ pi_ref`` iid (the multi-sample bound on KL(pi* ‖ pi_ref), ≤ log K),
        enumerated over ``Y^K``; each tuple is evaluated by
        :func:`mi_bounds.bounds.infonce_bound_from_negatives`.

        The critic must be finite where ``pi_ref > 0``; its values elsewhere are ignored.
        """
        spec = get_bound(name)
        t = np.asarray(critic, dtype=np.float64)
        if t.shape != self.pi_ref.shape:
            raise ValueError(f"critic must have shape {self.pi_ref.shape}, got {t.shape}")
        support = self.pi_ref > 0
        if not np.all(np.isfinite(t[support])):
            raise ValueError("critic must be finite wherever pi_ref > 0")
        t = np.where(support, t, 0.0)  # Q and P put no mass there: any finite value
        p, q = self.optimal_policy(), self.pi_ref
        if spec.form == "two-sample":
            tt = torch.tensor(t)
            per_prompt = spec.fn(tt, tt, pos_weight=torch.tensor(p), neg_weight=torch.tensor(q),
                                 **params)
            return float(self.prompt_weights @ per_prompt.double().numpy())
        if name == "infonce":
            return self._infonce_at(t, p, q, **params)
        raise ValueError(f"bound {name!r} has no exact evaluation in a CategoricalWorld")

    def _infonce_at(self, t: Table, p: Table, q: Table, K: int = 2) -> float:
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 2:
            raise ValueError(f"K must be an integer >= 2, got {K!r}")
        n_y = self.n_responses
        if n_y**K > _MAX_INFONCE_TUPLES:
            raise ValueError(f"K = {K} with {n_y} responses needs {n_y}**{K} tuples; too many")
        tuples = np.array(list(itertools.product(range(n_y), repeat=K)))  # (M, K)
        values = []
        for x in range(self.n_prompts):
            pos = torch.from_numpy(t[x, tuples[:, 0]]).unsqueeze(-1)  # (M, 1)
            neg = torch.from_numpy(t[x, tuples[:, 1:]]).unsqueeze(-2)  # (M, 1, K-1)
            per_tuple = infonce_bound_from_negatives(pos, neg).double().numpy()  # (M,)
            weight = p[x, tuples[:, 0]] * np.prod(q[x, tuples[:, 1:]], axis=1)
            values.append(float(weight @ per_tuple))
        return float(self.prompt_weights @ np.array(values))

    # ----------------------------------------------------------------------------------------
    # Preference pairs.
    # ----------------------------------------------------------------------------------------

    def pair_distribution(self, kind: str = "bradley_terry") -> Table:
        """Probability of ``(x, chosen w, rejected l)``, shape ``[X, Y, Y]``; sums to 1, zero on
        ``w == l``.

        Both kinds draw ``x ~ D`` and two responses ``y1, y2`` iid from ``pi_ref(.|x)``:

        * ``"bradley_terry"``: ``y1`` is chosen with probability ``σ(r(x,y1) - r(x,y2))``
          (Bradley–Terry with the true reward, not divided by beta), so
          ``P(w, l | x) ∝ 2 pi_ref(w) pi_ref(l) σ(r_w - r_l)`` for ``w ≠ l``;
        * ``"base_labelled"``: the response with the higher reward is chosen (the paper's
          verifier-labelled base samples), so ``P(w, l | x) ∝ 2 pi_ref(w) pi_ref(l)
          1[r_w > r_l]``.

        Ties are dropped: pairs with ``y1 = y2`` (and, for ``base_labelled``, ``r_w = r_l``)
        are redrawn, i.e. the pair distribution is renormalised within each prompt, so the
        prompt marginal stays ``D``. A prompt with no valid pair (a single supported response,
        or all rewards equal for ``base_labelled``) is dropped and ``D`` renormalised over the
        others; if no prompt has a valid pair, ``ValueError``.
        """
        if kind not in PAIR_KINDS:
            raise ValueError(
                f"unknown pair distribution {kind!r}; valid kinds: {', '.join(PAIR_KINDS)}"
            )
        q = self.pi_ref
        both = q[:, :, None] * q[:, None, :]  # (X, Y, Y): P(y1 = w, y2 = l)
        r = self.reward
        diff = r[:, :, None] - r[:, None, :]  # r_w - r_l
        if kind == "bradley_terry":
            label = expit(diff)
        else:
            label = (diff > 0).astype(np.float64)
        off = ~np.eye(self.n_responses, dtype=bool)
        table = np.where(off[None], 2.0 * both * label, 0.0)
        per_prompt = table.sum((1, 2))
        valid = per_prompt > 0
        if not valid.any():
            raise ValueError(f"no prompt of this world has a valid {kind} pair")
        norm = np.where(valid, per_prompt, 1.0)[:, None, None]
        cond = np.where(valid[:, None, None], table / norm, 0.0)
        d = np.where(valid, self.prompt_weights, 0.0)
        d = d / d.sum()
        return d[:, None, None] * cond

    # ----------------------------------------------------------------------------------------
    # Convenience.
    # ----------------------------------------------------------------------------------------

    def entropy_of(self, pi: ArrayLike) -> float:
        """``E_x H(pi(.|x))`` in nats."""
        return float(self.prompt_weights @ -xlogy(self._policy(pi), self._policy(pi)).sum(1))
