"""The machinery every proof module uses: the :class:`Proof` record and the checks it is built from.

A proof is a list of :class:`Step` objects, each one claim checked by sympy, plus a numeric spot
check on random values. The checks are written so that they can *fail*: an identity passes only
when a targeted rewrite of ``lhs - rhs`` reaches exactly 0, a stationary point only when
:func:`sympy.solve` returns it, a sign only when sympy's assumption system proves it. If no
symbolic route succeeds, :func:`equal` and :func:`sign` fall back to evaluating the claim at random
rational points; such a step is marked ``symbolic=False`` and the table printed by
``mi-bounds verify`` says "verified numerically, not symbolically" for that proof.

Symbols are declared with their domain (``positive=True`` for probabilities, ``beta``, exponentials;
``real=True`` for critics and rewards), so every logarithm the proofs take has a positive
argument; this is what makes ``expand_log`` and the ``exp(lhs - rhs) = 1`` test sound.
"""

from __future__ import annotations

import math
import random
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

__all__ = [
    "Proof",
    "ProofResult",
    "Step",
    "equal",
    "log_inequality",
    "log_sigmoid",
    "random_distribution",
    "second_derivative_sign",
    "sigmoid",
    "sign",
    "softplus",
    "solves",
    "stationary_point",
    "tex",
]

#: sympy versions of the scalar functions of docs/THEORY.md §1 (log domain, real argument).


def softplus(t: sp.Expr) -> sp.Expr:
    """softplus(t) = log(1 + e^t)."""
    return sp.log(1 + sp.exp(t))


def sigmoid(t: sp.Expr) -> sp.Expr:
    """sigma(t) = 1 / (1 + e^{-t})."""
    return 1 / (1 + sp.exp(-t))


def log_sigmoid(t: sp.Expr) -> sp.Expr:
    """log sigma(t) = -softplus(-t)."""
    return -softplus(-t)


# --------------------------------------------------------------------------------------------
# Records.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One checked claim of a derivation.

    Attributes:
        claim: the claim in prose (Markdown).
        latex: the claim as sympy renders it (``sympy.latex`` of the checked expressions).
        ok: whether the check succeeded.
        how: how it was checked (the rewrite that reached 0, the solver, the sign test).
        symbolic: false when only the numeric fallback (random rational points) succeeded.
    """

    claim: str
    latex: str
    ok: bool
    how: str
    symbolic: bool = True


@dataclass(frozen=True)
class Proof:
    """One result the toolkit relies on, as an executable check.

    Attributes:
        key: short identifier (``"p03"``); the table and the document are ordered by it.
        title: one-line name of the result.
        statement: the result in prose (Markdown; may contain inline ``$...$``).
        latex: the result's main formula(s), rendered by ``sympy.latex`` from the same
            expressions the derivation checks.
        derive: returns the checked steps; the proof is verified symbolically when every step is
            ``ok``.
        spot_check: given a seeded ``numpy.random.Generator``, evaluates the result on random
            values (with :mod:`mi_bounds` where the result is about its functions) and returns
            the largest error found.
        tolerance: the largest spot-check error accepted.
        spot_check_doc: one sentence saying what the spot check compares.
        source: where the result comes from.
        notes: optional; returns Markdown appended to the result's section of docs/PROOFS.md
            (e.g. a table computed from the proof's expressions). It must be deterministic.
    """

    key: str
    title: str
    statement: str
    latex: tuple[str, ...]
    derive: Callable[[], list[Step]]
    spot_check: Callable[[np.random.Generator], float]
    spot_check_doc: str
    source: str
    tolerance: float = 1e-9
    notes: Callable[[], str] | None = None

    def run(self, seed: int = 0) -> ProofResult:
        """Run the derivation and the spot check; exceptions become a failed result."""
        start = time.perf_counter()
        error: str | None = None
        try:
            steps = tuple(self.derive())
            if not steps:
                error = "derive() returned no steps"
        except Exception:  # a broken proof is reported as failed, never crashes the table
            steps = ()
            error = "derive() raised:\n" + traceback.format_exc(limit=3)
        try:
            spot = float(self.spot_check(np.random.default_rng(seed)))
            if not math.isfinite(spot):
                spot = math.inf
        except Exception:
            spot = math.inf
            error = (error or "") + "spot_check() raised:\n" + traceback.format_exc(limit=3)
        return ProofResult(self, steps, spot, error, time.perf_counter() - start)


@dataclass(frozen=True)
class ProofResult:
    """What running a :class:`Proof` found."""

    proof: Proof
    steps: tuple[Step, ...]
    spot_error: float
    error: str | None = None
    seconds: float = field(default=0.0, compare=False)

    @property
    def symbolic_ok(self) -> bool:
        """Every step checked out (symbolically or by the numeric fallback)."""
        return self.error is None and bool(self.steps) and all(s.ok for s in self.steps)

    @property
    def fully_symbolic(self) -> bool:
        """Every step checked out *symbolically* (no numeric fallback was needed)."""
        return self.symbolic_ok and all(s.symbolic for s in self.steps)

    @property
    def spot_ok(self) -> bool:
        return self.spot_error <= self.proof.tolerance

    @property
    def passed(self) -> bool:
        return self.symbolic_ok and self.spot_ok

    @property
    def verdict(self) -> str:
        """The "verified symbolically" column of the table."""
        if self.error is not None and not self.steps:
            return "ERROR"
        if not self.symbolic_ok:
            failed = sum(not s.ok for s in self.steps)
            return f"FAILED ({failed} of {len(self.steps)} steps)"
        if self.fully_symbolic:
            return "yes"
        return "numerically only (some steps not symbolic)"

    def failures(self) -> list[str]:
        """Human-readable reasons this result did not pass (empty when it passed)."""
        out = [f"step failed: {s.claim} [{s.how}]" for s in self.steps if not s.ok]
        if not self.spot_ok:
            out.append(
                f"spot check error {self.spot_error:.3g} > tolerance {self.proof.tolerance:.0e}"
            )
        if self.error:
            out.append(self.error.strip())
        return out


# --------------------------------------------------------------------------------------------
# Checks.
# --------------------------------------------------------------------------------------------


def _rewrites(diff: sp.Expr) -> Iterable[tuple[str, Callable[[], sp.Expr]]]:
    """Targeted rewrites of ``lhs - rhs``, cheapest first (simplify has false negatives).

    Each yields ``(description, thunk)``; the identity holds when the thunk returns exactly 0.
    """
    yield "expand(lhs - rhs) = 0", lambda: sp.expand(diff)
    yield "cancel(together(lhs - rhs)) = 0", lambda: sp.cancel(sp.together(diff))
    yield "simplify(lhs - rhs) = 0", lambda: sp.simplify(diff)
    yield "cancel(together(rewrite(exp))) = 0", lambda: sp.cancel(
        sp.together(sp.expand(diff.rewrite(sp.exp))))
    yield "simplify(expand_log(lhs - rhs)) = 0", lambda: sp.simplify(
        sp.expand_log(sp.expand(diff), force=True))
    yield "simplify(logcombine(lhs - rhs)) = 0", lambda: sp.simplify(
        sp.logcombine(diff, force=True))
    # exp is injective on the reals: exp(lhs - rhs) = 1 iff lhs = rhs (all our expressions are
    # real for the declared symbol domains).
    yield "simplify(exp(lhs - rhs)) = 1", lambda: sp.simplify(sp.exp(diff)) - 1
    yield "simplify(powsimp(exp(lhs - rhs))) = 1", lambda: sp.simplify(
        sp.powsimp(sp.expand(sp.exp(sp.expand_log(diff, force=True))), force=True)) - 1


def _concrete(expr: sp.Expr, n_concrete: int) -> sp.Expr:
    """Replace symbolic-length sums by concrete ones (for the numeric fallback)."""
    sums = list(expr.atoms(sp.Sum))
    if not sums:
        return expr
    upper = {lim[2] for s in sums for lim in s.limits if not lim[2].is_number}
    return expr.subs({u: n_concrete for u in upper}).doit()


def _variables(expr: sp.Expr) -> list[sp.Basic]:
    """The quantities to draw at random: indexed entries ``p[i]`` and plain symbols (not the
    labels and indices inside indexed entries)."""
    indexed = sorted(expr.atoms(sp.Indexed), key=str)
    inner = {x.base.label for x in indexed} | {j for x in indexed for j in x.indices}
    plain = sorted((s for s in expr.free_symbols
                    if s not in inner and not isinstance(s, sp.Indexed)), key=str)
    return [*indexed, *plain]


def _random_point(symbols: Iterable[sp.Basic], rng: random.Random) -> dict[sp.Basic, sp.Expr]:
    """A random rational value for each symbol, respecting positive/real declarations."""
    point: dict[sp.Basic, sp.Expr] = {}
    for s in symbols:
        positive = s.base.label.is_positive if isinstance(s, sp.Indexed) else s.is_positive
        if positive:
            point[s] = sp.Rational(rng.randint(1, 400), rng.randint(50, 400))
        else:
            point[s] = sp.Rational(rng.randint(-600, 600), rng.randint(50, 400))
    return point


def _evaluate(expr: sp.Expr, point: Mapping[sp.Basic, sp.Expr]) -> complex:
    return complex(sp.sympify(expr).xreplace(dict(point)).evalf(30))


def _numeric_equal(lhs: sp.Expr, rhs: sp.Expr, points: int = 30, seed: int = 0,
                   given: Mapping[sp.Basic, sp.Expr] | None = None) -> bool:
    """lhs = rhs at ``points`` random rational points (symbolic-length sums taken at n = 3).

    False if any point differs (relative 1e-12) or cannot be evaluated to a number.
    """
    return _numeric_compare(lhs, rhs, points, seed, given) is True


def _normalised_bases(given: Mapping[sp.Basic, sp.Expr] | None) -> list[sp.IndexedBase]:
    """Indexed bases ``w`` with a fact ``Sum(w[i], (i, 1, n)) = 1`` among ``given``."""
    return [k.function.base for k, v in (given or {}).items()
            if isinstance(k, sp.Sum) and isinstance(k.function, sp.Indexed) and v == 1]


def _numeric_compare(lhs: sp.Expr, rhs: sp.Expr, points: int, seed: int,
                     given: Mapping[sp.Basic, sp.Expr] | None = None) -> bool | None:
    """True: equal at every point; False: differs at some point; None: cannot evaluate.

    Facts ``Sum(w[i]) = 1`` in ``given`` are honoured by normalising the random ``w[1..3]``;
    other facts are substituted before evaluation.
    """
    try:
        lhs, rhs = sp.sympify(lhs), sp.sympify(rhs)
        if given:
            lhs, rhs = lhs.subs(given), rhs.subs(given)
        lhs, rhs = _concrete(lhs, 3), _concrete(rhs, 3)
        free = _variables(lhs - rhs)
        bases = _normalised_bases(given)
        rng = random.Random(seed)
        for _ in range(points):
            pt = _random_point(free, rng)
            for base in bases:
                entries = [k for k in pt if isinstance(k, sp.Indexed) and k.base == base
                           and all(j.is_number for j in k.indices)]  # w[1..3], not w[k]
                total = sum(pt[k] for k in entries)
                for k in entries:
                    pt[k] = pt[k] / total
            a, b = _evaluate(lhs, pt), _evaluate(rhs, pt)
            if not abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b)):
                return False
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return True


def equal(
    claim: str,
    lhs: sp.Expr,
    rhs: sp.Expr,
    *,
    definitions: Mapping[sp.Basic, sp.Expr] | None = None,
    given: Mapping[sp.Basic, sp.Expr] | None = None,
    display: str | None = None,
) -> Step:
    """Check ``lhs = rhs``: some rewrite of ``lhs - rhs`` must reach exactly 0.

    Args:
        claim: the claim in prose.
        lhs, rhs: sympy expressions; their LaTeX is what the document shows.
        definitions: substitutions applied before checking (e.g. a symbol ``Z`` shown in the
            document, replaced by its defining sum for the check).
        given: facts used after a rewrite, as substitutions (e.g. ``{Sum(p[i], (i, 1, n)): 1}``
            for a normalised distribution); the step's ``how`` names them.
        display: LaTeX shown instead of ``sympy.latex(Eq(lhs, rhs))`` when that is unreadably
            long (the check itself always uses ``lhs`` and ``rhs``).

    Falls back to 30 random rational points (``symbolic=False``) only when no rewrite reaches 0.
    """
    latex = display if display is not None else sp.latex(sp.Eq(lhs, rhs, evaluate=False))
    if definitions:
        lhs, rhs = sp.sympify(lhs).subs(definitions), sp.sympify(rhs).subs(definitions)
    diff = sp.sympify(lhs) - sp.sympify(rhs)
    if _numeric_compare(lhs, rhs, 3, 1, given) is False:
        # not an identity: no need to try the (slow) symbolic rewrites
        return Step(claim, latex, False, "differs at random rational points", symbolic=False)
    for name, rewrite in _rewrites(diff):
        try:
            reduced = rewrite()
            if reduced == 0:
                return Step(claim, latex, True, name)
            if given and sp.simplify(reduced.subs(given)) == 0:
                facts = ", ".join(f"{sp.sstr(k)} = {sp.sstr(v)}" for k, v in given.items())
                return Step(claim, latex, True, f"{name}, using {facts}")
        except (TypeError, ValueError, NotImplementedError, RecursionError):
            continue
    ok = _numeric_equal(lhs, rhs, given=given)
    return Step(claim, latex, ok, "no rewrite reached 0; equal at 30 random rational points"
                if ok else "no rewrite reached 0; differs at random rational points",
                symbolic=False)


_SIGNS = {
    "negative": ("is_negative", "< 0", lambda v: v < 0),
    "positive": ("is_positive", "> 0", lambda v: v > 0),
    "nonnegative": ("is_nonnegative", r"\ge 0", lambda v: v >= 0),
    "nonpositive": ("is_nonpositive", r"\le 0", lambda v: v <= 0),
}


def sign(claim: str, expr: sp.Expr, which: str, *, display: sp.Expr | None = None) -> Step:
    """Check that ``expr`` has the sign ``which`` for every value of its (declared) symbols.

    Proved by sympy's assumption system on ``expr`` after ``simplify``/``factor``; otherwise by
    the numeric fallback (``symbolic=False``).
    """
    attr, rel, test = _SIGNS[which]
    latex = sp.latex(display if display is not None else expr) + " " + rel
    forms = [("assumptions", lambda: expr), ("simplify + assumptions", lambda: sp.simplify(expr)),
             ("factor + assumptions", lambda: sp.factor(sp.simplify(expr))),
             ("together + assumptions", lambda: sp.together(sp.expand(expr)))]
    for name, form in forms:
        try:
            if getattr(form(), attr) is True:
                return Step(claim, latex, True, f"{name}: {which}")
        except (TypeError, ValueError, NotImplementedError, RecursionError):
            continue
    concrete = _concrete(expr, 3)
    free = _variables(concrete)
    rng = random.Random(0)
    try:
        ok = all(test(_evaluate(concrete, _random_point(free, rng)).real) for _ in range(30))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        ok = False
    return Step(claim, latex, ok, f"not provable by sympy; {which} at 30 random rational points"
                if ok else f"not provable by sympy; not {which} at random rational points",
                symbolic=False)


def solves(
    claim: str,
    expr: sp.Expr,
    var: sp.Symbol,
    expected: sp.Expr,
    *,
    unique: bool = True,
    given: Mapping[sp.Basic, sp.Expr] | None = None,
) -> Step:
    """Check that ``sympy.solve(expr = 0, var)`` returns ``expected`` (and, if ``unique``, only it).

    ``given`` substitutions are applied to ``expr`` before solving (e.g. a normalisation).
    """
    latex = sp.latex(sp.Eq(expr, 0)) + r" \iff " + sp.latex(sp.Eq(var, expected))
    if given:
        expr = expr.subs(given)
    solutions = sp.solve(sp.Eq(expr, 0), var, dict=False)
    if not isinstance(solutions, list):
        solutions = [solutions]
    checks = [equal("", s, expected) for s in solutions]
    matches = [c for c in checks if c.ok]
    ok = bool(matches) and (not unique or len(solutions) == 1)
    how = f"solve returned {len(solutions)} solution(s)" + (
        ", equal to the expected one" if ok
        else f": {solutions} (expected {'only ' if unique else ''}{expected})"
    )
    return Step(claim, latex, ok, how, all(c.symbolic for c in matches))


def stationary_point(
    claim: str,
    function: sp.Expr,
    var: sp.Symbol,
    expected: sp.Expr,
    *,
    unique: bool = True,
) -> Step:
    """Check that the only zero of ``d function / d var`` is ``expected`` (solve the stationarity
    condition with :func:`sympy.solve`)."""
    derivative = sp.diff(function, var)
    step = solves(claim, derivative, var, expected, unique=unique)
    name = r"\frac{\partial}{\partial " + sp.latex(var) + "}"
    latex = (name + r"\left(" + sp.latex(function) + r"\right) = " + sp.latex(derivative)
             + r" = 0 \iff " + sp.latex(sp.Eq(var, expected)))
    return Step(claim, latex, step.ok, step.how, step.symbolic)


def second_derivative_sign(
    claim: str, function: sp.Expr, var: sp.Symbol, which: str, *, at: Mapping | None = None
) -> Step:
    """Check the sign of ``d²function/dvar²`` (optionally at a point), e.g. concavity."""
    second = sp.diff(function, var, 2)
    if at:
        second = second.subs(at)
    step = sign(claim, second, which)
    name = r"\frac{\partial^2}{\partial " + sp.latex(var) + "^2}"
    latex = (name + r"\left(" + sp.latex(function) + r"\right) = "
             + sp.latex(sp.simplify(second)) + " " + _SIGNS[which][1])
    return Step(step.claim, latex, step.ok, step.how, step.symbolic)


def log_inequality(claim: str) -> Step:
    """The workhorse inequality ``x - 1 - log x >= 0`` on ``x > 0``, proved by calculus.

    Its only stationary point is ``x = 1`` (solve), the second derivative ``1/x^2`` is positive
    (so that point is the global minimum on ``x > 0``), and the value there is 0.
    """
    x = sp.Symbol("x", positive=True)
    f = x - 1 - sp.log(x)
    stationary = solves("", sp.diff(f, x), x, sp.Integer(1))
    convex = sign("", sp.diff(f, x, 2), "positive")
    at_min = sp.simplify(f.subs(x, 1))
    ok = stationary.ok and convex.ok and at_min == 0
    latex = (sp.latex(sp.Eq(sp.diff(f, x), 0)) + r" \iff x = 1,\quad "
             + sp.latex(sp.diff(f, x, 2)) + r" > 0,\quad \left." + sp.latex(f)
             + r"\right|_{x=1} = " + sp.latex(at_min))
    return Step(claim, latex, ok, f"{stationary.how}; second derivative {convex.how}; "
                f"value at x = 1 is {at_min}", stationary.symbolic and convex.symbolic)


# --------------------------------------------------------------------------------------------
# Random values for the spot checks.
# --------------------------------------------------------------------------------------------


def random_distribution(rng: np.random.Generator, n: int, *, size: int | None = None) -> np.ndarray:
    """A random probability vector of length ``n`` (Dirichlet(1), floored away from 0)."""
    shape = (n,) if size is None else (size, n)
    p = rng.dirichlet(np.ones(n), size=size).reshape(shape) + 1e-3
    return p / p.sum(-1, keepdims=True)


def tex(lhs: str, rhs: sp.Expr) -> str:
    """``lhs = rhs`` as LaTeX, with ``lhs`` given verbatim and ``rhs`` rendered by sympy."""
    return f"{lhs} = {sp.latex(rhs)}"
