"""Neural critics T(x, y) for MI estimation, evaluated as a score matrix.

A critic maps a batch of ``K`` joint samples ``(x_i, y_i)`` to the ``[K, K]`` score matrix
``S[i, j] = T(x_i, y_j)`` (Poole et al., "On Variational Bounds of Mutual Information", ICML
2019, Sec. 2 and Fig. 1): the diagonal holds critic values on samples of the joint ``p(x, y)``,
the off-diagonal entries on samples of ``p(x)p(y)``. Every bound of :mod:`mi_bounds.bounds`
then reads the matrix (:func:`mi_bounds.bounds.split_scores`, :func:`infonce_bound`).

Two architectures, as in Poole et al. (2019) and Song & Ermon (ICLR 2020, Sec. 6.1):

* :class:`SeparableCritic`: ``T(x, y) = g(x)ᵀ h(y)`` with two MLP embeddings; the whole matrix
  costs two MLP passes over ``K`` points plus one ``K × K`` matrix product.
* :class:`ConcatCritic`: ``T(x, y) = f([x, y])`` with one MLP on the concatenated pair; the
  matrix costs one MLP pass over all ``K²`` pairs.

Default sizes follow Song & Ermon's released settings: hidden width 256, ReLU, 32-dimensional
embeddings, and ``layers = 2`` extra hidden layers (three hidden layers in all).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mi_bounds._validation import check_int

__all__ = [
    "ACTIVATIONS",
    "CRITICS",
    "ConcatCritic",
    "SeparableCritic",
    "make_critic",
    "mlp",
    "score_matrix",
]

#: Activation functions by name (unknown names raise ``ValueError``).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def _dims(x_dim: object, y_dim: object) -> tuple[int, int]:
    """Validated ``(x_dim, y_dim)``; ``y_dim = None`` means ``x_dim``."""
    x_dim = check_int(x_dim, "x_dim", minimum=1)
    return x_dim, x_dim if y_dim is None else check_int(y_dim, "y_dim", minimum=1)


def _activation(name: str) -> Callable[[], nn.Module]:
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; valid names: {', '.join(ACTIVATIONS)}"
        ) from None


def mlp(
    in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, activation: str = "relu"
) -> nn.Sequential:
    """MLP ``in_dim → hidden_dim → (layers × hidden_dim) → out_dim`` with the given activation.

    ``layers`` counts the hidden-to-hidden layers, so the network has ``layers + 1`` hidden
    layers (Song & Ermon's ``mlp(dim, hidden_dim, output_dim, layers, activation)`` convention).
    """
    check_int(in_dim, "in_dim", minimum=1)
    check_int(hidden_dim, "hidden_dim", minimum=1)
    check_int(out_dim, "out_dim", minimum=1)
    check_int(layers, "layers", minimum=0)
    act = _activation(activation)
    seq: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), act()]
    for _ in range(layers):
        seq += [nn.Linear(hidden_dim, hidden_dim), act()]
    seq.append(nn.Linear(hidden_dim, out_dim))
    return nn.Sequential(*seq)


def _check_pair(
    x: torch.Tensor, y: torch.Tensor, x_dim: int, y_dim: int, *, paired: bool = True
) -> None:
    for name, t, d in (("x", x, x_dim), ("y", y, y_dim)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 2 or t.shape[1] != d:
            raise ValueError(f"{name} must have shape [K, {d}], got {tuple(t.shape)}")
    if paired and x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must hold the same number of samples, got {x.shape[0]} and {y.shape[0]}"
        )


class SeparableCritic(nn.Module):
    r"""Separable critic ``T(x, y) = g(x)ᵀ h(y)``, two MLP embeddings of size ``embed_dim``.

    .. math:: S_{ij} = g(x_i)^\top h(y_j), \qquad S = G H^\top

    Args:
        x_dim, y_dim: dimensions of x and y (``y_dim`` defaults to ``x_dim``).
        hidden_dim: hidden width of both MLPs (256 in Poole et al. / Song & Ermon).
        embed_dim: embedding dimension (32 in the staircase experiment).
        layers: extra hidden layers per MLP (see :func:`mlp`).
        activation: a key of :data:`ACTIVATIONS`.

    Shape:
        ``scores(x [K, x_dim], y [K, y_dim]) -> [K, K]``; ``cross_scores(x [N, x_dim],
        y [M, y_dim]) -> [N, M]``; ``forward(x [N, x_dim], y [N, y_dim]) -> [N]`` (the critic
        on aligned pairs, ``T(x_n, y_n)``).
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int | None = None,
        *,
        hidden_dim: int = 256,
        embed_dim: int = 32,
        layers: int = 2,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.x_dim, self.y_dim = _dims(x_dim, y_dim)
        check_int(embed_dim, "embed_dim", minimum=1)
        self.g = mlp(self.x_dim, hidden_dim, embed_dim, layers, activation)
        self.h = mlp(self.y_dim, hidden_dim, embed_dim, layers, activation)

    def scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Score matrix ``S[i, j] = T(x_i, y_j)``, shape ``[K, K]``."""
        _check_pair(x, y, self.x_dim, self.y_dim)
        return self.g(x) @ self.h(y).T  # (K, E) @ (E, K) -> (K, K)

    def cross_scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``T(x_i, y_j)`` for every ``x_i`` of ``x [N, x_dim]`` and ``y_j`` of ``y [M, y_dim]``."""
        _check_pair(x, y, self.x_dim, self.y_dim, paired=False)
        return self.g(x) @ self.h(y).T  # (N, E) @ (E, M) -> (N, M)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Critic on aligned pairs, ``T(x_n, y_n)``, shape ``[N]``."""
        _check_pair(x, y, self.x_dim, self.y_dim)
        return (self.g(x) * self.h(y)).sum(-1)


class ConcatCritic(nn.Module):
    r"""Joint ("concat") critic ``T(x, y) = f([x; y])``, one MLP on the concatenated pair.

    .. math:: S_{ij} = f([x_i; y_j])

    The score matrix evaluates ``f`` on all ``K²`` pairs, so it costs ``K`` times more than the
    separable critic's; it can represent any function of the pair.

    Args:
        x_dim, y_dim: dimensions of x and y (``y_dim`` defaults to ``x_dim``).
        hidden_dim, layers, activation: as in :func:`mlp`.

    Shape:
        ``scores(x [K, x_dim], y [K, y_dim]) -> [K, K]``; ``cross_scores(x [N, x_dim],
        y [M, y_dim]) -> [N, M]`` (in row chunks of at most ``2**22`` pairs);
        ``forward(x [N, x_dim], y [N, y_dim]) -> [N]``.
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int | None = None,
        *,
        hidden_dim: int = 256,
        layers: int = 2,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.x_dim, self.y_dim = _dims(x_dim, y_dim)
        self.f = mlp(self.x_dim + self.y_dim, hidden_dim, 1, layers, activation)

    def scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Score matrix ``S[i, j] = T(x_i, y_j)``, shape ``[K, K]``."""
        _check_pair(x, y, self.x_dim, self.y_dim)
        k = x.shape[0]
        pairs = torch.cat(  # (K, K, x_dim + y_dim), pairs[i, j] = [x_i; y_j]
            [x.unsqueeze(1).expand(k, k, self.x_dim), y.unsqueeze(0).expand(k, k, self.y_dim)],
            dim=-1,
        )
        return self.f(pairs).squeeze(-1)  # (K, K)

    def cross_scores(
        self, x: torch.Tensor, y: torch.Tensor, *, max_pairs: int = 2**22
    ) -> torch.Tensor:
        """``T(x_i, y_j)`` for all ``N × M`` pairs, ``max_pairs`` pairs per MLP pass."""
        _check_pair(x, y, self.x_dim, self.y_dim, paired=False)
        n, m = x.shape[0], y.shape[0]
        rows = max(1, max_pairs // max(m, 1))
        out = []
        for i in range(0, n, rows):
            xi = x[i:i + rows]
            k = xi.shape[0]
            pairs = torch.cat(  # (k, M, x_dim + y_dim)
                [xi.unsqueeze(1).expand(k, m, self.x_dim), y.unsqueeze(0).expand(k, m, self.y_dim)],
                dim=-1,
            )
            out.append(self.f(pairs).squeeze(-1))
        return torch.cat(out, dim=0)  # (N, M)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Critic on aligned pairs, ``T(x_n, y_n)``, shape ``[N]``."""
        _check_pair(x, y, self.x_dim, self.y_dim)
        return self.f(torch.cat([x, y], dim=-1)).squeeze(-1)


def score_matrix(critic: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``S[i, j] = T(x_i, y_j)`` for ``x [N, x_dim]`` and ``y [M, y_dim]``, shape ``[N, M]``.

    Uses the critic's ``cross_scores`` where it has one (both critics here do); a critic with
    only ``scores`` is accepted for ``N == M``.
    """
    if hasattr(critic, "cross_scores"):
        return critic.cross_scores(x, y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            "this critic has no cross_scores method, so x and y must have the same number of "
            f"rows, got {x.shape[0]} and {y.shape[0]}"
        )
    return critic.scores(x, y)


#: Critic classes by name, for configs and the CLI.
CRITICS: dict[str, type[nn.Module]] = {"separable": SeparableCritic, "concat": ConcatCritic}


def make_critic(name: str, x_dim: int, y_dim: int | None = None, **kwargs: object) -> nn.Module:
    """Build a critic by name (``"separable"`` or ``"concat"``); unknown names raise ``ValueError``.

    ``embed_dim`` is ignored by the concat critic (it has no embedding).
    """
    if name not in CRITICS:
        raise ValueError(f"unknown critic {name!r}; valid names: {', '.join(CRITICS)}")
    if name == "concat":
        kwargs = {k: v for k, v in kwargs.items() if k != "embed_dim"}
    return CRITICS[name](x_dim, y_dim, **kwargs)
