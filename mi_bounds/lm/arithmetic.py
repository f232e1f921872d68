"""A verifiable arithmetic task with difficulty levels.

A problem is ``a<op>b=`` where both operands have exactly ``level`` digits (the first digit is
not 0) and ``op`` is one of ``+``, ``-``, ``*``; the response is the exact integer result in
decimal (a leading ``-`` for negative results), with nothing else. The verifier recomputes the
result from the prompt, so any response can be checked without a stored answer key.

Levels are operand digit counts: level 1 (``7+5=``) is easy for a tiny model, level 3 and above
need carries over several positions and are where small models fail.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence

__all__ = [
    "answer",
    "level_of",
    "make_prompt",
    "parse_prompt",
    "sample_prompts",
    "verify",
]

_PROMPT_RE = re.compile(r"^([1-9][0-9]*)([+\-*])([1-9][0-9]*)=$")


def make_prompt(a: int, op: str, b: int) -> str:
    """The prompt for ``a <op> b``, e.g. ``make_prompt(12, "+", 34) == "12+34="``."""
    if op not in "+-*" or len(op) != 1:
        raise ValueError(f"op must be one of '+', '-', '*', got {op!r}")
    if a <= 0 or b <= 0:
        raise ValueError(f"operands must be positive integers, got {a} and {b}")
    return f"{a}{op}{b}="


def parse_prompt(prompt: str) -> tuple[int, str, int] | None:
    """``(a, op, b)`` if ``prompt`` is a task prompt, else ``None``."""
    m = _PROMPT_RE.match(prompt)
    if m is None:
        return None
    return int(m.group(1)), m.group(2), int(m.group(3))


def answer(prompt: str) -> str:
    """The exact answer string of a task prompt; ``ValueError`` if it is not one."""
    parsed = parse_prompt(prompt)
    if parsed is None:
        raise ValueError(f"not an arithmetic task prompt: {prompt!r} (expected e.g. '12+34=')")
    a, op, b = parsed
    value = a + b if op == "+" else a - b if op == "-" else a * b
    return str(value)


def verify(prompt: str, response: str) -> bool:
    """True iff ``response`` (surrounding whitespace ignored) is the exact answer of ``prompt``."""
    return response.strip() == answer(prompt)


def level_of(prompt: str) -> int:
    """The difficulty level (digit count of the longer operand) of a task prompt."""
    parsed = parse_prompt(prompt)
    if parsed is None:
        raise ValueError(f"not an arithmetic task prompt: {prompt!r}")
    return max(len(str(parsed[0])), len(str(parsed[2])))


def _draw(rng: random.Random, level: int, ops: str) -> str:
    lo, hi = 10 ** (level - 1), 10**level - 1
    return make_prompt(rng.randint(lo, hi), rng.choice(ops), rng.randint(lo, hi))


def n_problems(level: int, ops: str) -> int:
    """How many distinct prompts a level has."""
    return (9 * 10 ** (level - 1)) ** 2 * len(set(ops))


def sample_prompts(
    rng: random.Random,
    n: int,
    levels: Sequence[int],
    weights: Sequence[float],
    ops: str = "+",
    *,
    exclude: Iterable[str] = (),
    unique: bool = True,
) -> list[str]:
    """Draw ``n`` prompts: a level by ``weights``, then operands uniformly at that level.

    With ``unique=True`` the prompts are distinct and none is in ``exclude``; a level whose
    prompts run out is no longer drawn (``ValueError`` if all run out before ``n``).
    """
    excluded = set(exclude)
    seen: set[str] = set()
    out: list[str] = []
    levels, weights = list(levels), list(weights)
    left = {lv: n_problems(lv, ops) - sum(1 for p in excluded
                                          if parse_prompt(p) and level_of(p) == lv)
            for lv in levels}
    while len(out) < n:
        live = [i for i, lv in enumerate(levels) if not unique or left[lv] > 0]
        if not live:
            raise ValueError(f"only {len(out)} distinct prompts available at levels {levels}")
        i = rng.choices(live, weights=[weights[j] for j in live])[0]
        p = _draw(rng, levels[i], ops)
        if p in excluded:
            continue
        if unique:
            if p in seen:
                continue
            seen.add(p)
            left[levels[i]] -= 1
        out.append(p)
    return out
