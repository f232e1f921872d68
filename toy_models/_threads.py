"""Run torch single-threaded for the tiny tensors of the toy worlds.

Every tensor of an exact toy computation is tiny: intra-op threads only add synchronisation
(7x slower on a loaded 2-core machine).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

__all__ = ["in_single_thread", "single_threaded"]

_F = TypeVar("_F", bound=Callable[..., Any])


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch single-threaded, then restore the setting.

    Every tensor here is tiny: intra-op threads only add synchronisation (7x slower on a
    loaded 2-core machine).
    """
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n_threads)



def in_single_thread(fn: _F) -> _F:
    """Decorator: run ``fn`` under :func:`single_threaded`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with single_threaded():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
