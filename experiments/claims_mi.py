"""The MI-reading claim : which mutual information RLHF's optimum bounds, on toy worlds.

:func:`example_worlds` holds three worlds, one per case of the decomposition
``E_x KL(pi* ‖ pi_ref) = I_{pi*}(X; Y) + gap`` (:mod:`toy_models.mi_reading`, proof P12):

* ``"exact"``: pi_ref is the same uniform distribution for every prompt and each prompt has its
  own right answer, so by symmetry ``pi*_Y = pi_ref`` at every beta: gap = 0, the RLHF KL *is*
  the policy's MI, and the DV bound with critic ``r/beta`` on the MI reading is tight (P13);
* ``"independent"``: pi_ref(y|x) = rho(y) for every prompt, prompt-specific rewards: gap =
  KL(pi*_Y ‖ rho) > 0, the KL is an upper bound on the MI;
* ``"dependent"``: pi_ref has a prompt-specific habit and one answer, rare under pi_ref, is right
  for every prompt: the gap is positive at small beta (pi* collapses onto that answer, I -> 0)
  and negative at large beta (pi* -> pi_ref, gap -> -I_{pi_ref}).

:func:`claim_mi_reading` sweeps beta on each world (every term and every bound of
:func:`toy_models.mi_reading.reading_report`) and checks the identities on random worlds.
Deterministic; returns plain Python numbers (JSON-ready).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from toy_models.mi_reading import decompose, reading_report
from toy_models.oracle import kl
from toy_models.world import CategoricalWorld

__all__ = ["EXAMPLE_NAMES", "claim_mi_reading", "example_worlds"]

#: The example worlds, in the order the figure shows them.
EXAMPLE_NAMES = ("exact", "independent", "dependent")

#: beta grid of the sweep (log-spaced, 0.05 to 20).
DEFAULT_BETAS = tuple(float(b) for b in np.logspace(np.log10(0.05), np.log10(20.0), 25))


def example_worlds(beta: float = 1.0) -> dict[str, CategoricalWorld]:
    """The three example worlds at ``beta`` (see the module docstring)."""
    eye = np.eye(4)
    rho = np.array([0.4, 0.3, 0.2, 0.1])
    habit = np.array([[0.70, 0.15, 0.10, 0.05],
                      [0.10, 0.70, 0.15, 0.05],
                      [0.15, 0.10, 0.70, 0.05]])
    right = np.zeros((3, 4))
    right[:, 3] = 1.0
    own = np.zeros((3, 4))
    own[0, 0] = own[1, 1] = own[2, 3] = 1.0
    return {
        "exact": CategoricalWorld(np.full(4, 0.25), np.full((4, 4), 0.25), eye, beta),
        "independent": CategoricalWorld(np.full(3, 1 / 3), np.tile(rho, (3, 1)), own, beta),
        "dependent": CategoricalWorld(np.full(3, 1 / 3), habit, right, beta),
    }


def _flatten(report: dict) -> dict[str, float]:
    """One row of the sweep: the decomposition, I(pi_ref), targets and bounds, flat keys."""
    row = {k: float(v) for k, v in report["decomposition"].items()
           if k != "reference_depends_on_x"}
    row["mi_reference"] = report["mi_reference"]
    for reading, targets in report["targets"].items():
        for bound, value in targets.items():
            row[f"target/{bound}/{reading}"] = value
    for bound, by_reading in report["bounds"].items():
        for reading, by_critic in by_reading.items():
            for critic, by_form in by_critic.items():
                for form, value in by_form.items():
                    row[f"{bound}/{reading}/{critic}/{form}"] = value
    return row


def _random_tables(rng: np.random.Generator) -> CategoricalWorld:
    """A random world: 1-5 prompts, 2-6 responses, about 30 % zeros in pi_ref, a third with the
    same pi_ref row for every prompt, rewards N(0, 2^2), beta log-uniform on [0.05, 20]."""
    nx, ny = int(rng.integers(1, 6)), int(rng.integers(2, 7))
    beta = float(np.exp(rng.uniform(np.log(0.05), np.log(20.0))))
    w = CategoricalWorld.random(int(rng.integers(2**31)), nx, ny, beta, reward_scale=2.0,
                                zero_fraction=0.3)
    if rng.random() < 1 / 3:
        w = dataclasses.replace(w, pi_ref=np.tile(w.pi_ref[0], (nx, 1)))
    return w


def claim_mi_reading(
    *,
    betas: Sequence[float] = DEFAULT_BETAS,
    K: int = 4,
    n_worlds: int = 1000,
    seed: int = 0,
) -> dict:
    """The claim's numbers.

    Returns:
        dict with

        * ``curves[name]``: for each example world, ``beta`` and one list per quantity of
          :func:`toy_models.mi_reading.reading_report` at ``pi*`` (keys such as
          ``mutual_information``, ``gap``, ``dv/mi/implicit/per_prompt``);
        * ``sign_change``: for the ``"dependent"`` world, the betas of the grid between which
          the gap changes sign, with the decomposition on either side;
        * ``sweep``: over ``n_worlds`` random worlds (pi* and pi_ref as policies): the largest
          residuals of ``KL = I + gap``, ``gap = KL(pi_Y ‖ pibar_ref) - E[pmi_ref]`` and, for
          x-independent pi_ref, ``gap = KL(pi_Y ‖ rho)``; the smallest gap of the x-independent
          worlds; the fraction of x-dependent worlds with a negative gap at pi*; the extreme
          gaps with their worlds' sizes and beta.
    """
    curves = {}
    for name in EXAMPLE_NAMES:
        rows = [_flatten(reading_report(w, K=K))
                for w in (example_worlds(b)[name] for b in betas)]
        curves[name] = {"beta": [float(b) for b in betas],
                        **{k: [r[k] for r in rows] for k in rows[0]}}
    gaps = np.array(curves["dependent"]["gap"])
    flips = np.flatnonzero(np.diff(np.sign(gaps)) != 0)
    sign_change = []
    for k in flips:
        lo, hi = (example_worlds(betas[j])["dependent"] for j in (k, k + 1))
        sign_change.append({
            "beta_low": float(betas[k]), "beta_high": float(betas[k + 1]),
            "low": decompose(lo, lo.optimal_policy()).as_dict(),
            "high": decompose(hi, hi.optimal_policy()).as_dict(),
        })

    rng = np.random.default_rng(seed)
    worst = {"kl_minus_mi_minus_gap": 0.0, "gap_minus_split": 0.0, "gap_minus_kl_marginal": 0.0}
    min_gap_independent = np.inf
    n_dep = n_dep_negative = n_indep = 0
    extremes: dict[str, dict] = {}
    for _ in range(n_worlds):
        w = _random_tables(rng)
        for policy_name, pi in (("pi*", w.optimal_policy()), ("pi_ref", w.pi_ref)):
            dec = decompose(w, pi)
            worst["kl_minus_mi_minus_gap"] = max(
                worst["kl_minus_mi_minus_gap"],
                abs(dec.kl_to_reference - dec.mutual_information - dec.gap))
            worst["gap_minus_split"] = max(
                worst["gap_minus_split"], abs(dec.gap - dec.marginal_kl + dec.reference_pmi))
            if not dec.reference_depends_on_x:
                worst["gap_minus_kl_marginal"] = max(
                    worst["gap_minus_kl_marginal"],
                    abs(dec.gap - float(kl(w.prompt_weights @ pi, w.pi_ref[0]))))
                min_gap_independent = min(min_gap_independent, dec.gap)
            if policy_name != "pi*":
                continue
            if dec.reference_depends_on_x:
                n_dep += 1
                n_dep_negative += dec.gap < 0
                for key, better in (("most_negative", dec.gap < extremes.get(
                        "most_negative", {"gap": np.inf})["gap"]),
                                    ("most_positive", dec.gap > extremes.get(
                                        "most_positive", {"gap": -np.inf})["gap"])):
                    if better:
                        extremes[key] = {**dec.as_dict(), "n_prompts": w.n_prompts,
                                         "n_responses": w.n_responses, "beta": w.beta}
            else:
                n_indep += 1
    return {
        "K": K,
        "curves": curves,
        "sign_change": sign_change,
        "sweep": {
            "n_worlds": n_worlds, "seed": seed, "n_independent": n_indep,
            "n_dependent": n_dep, "max_residual": worst,
            "min_gap_independent": float(min_gap_independent),
            "fraction_dependent_negative_gap": n_dep_negative / max(n_dep, 1),
            "extremes": extremes,
        },
    }
