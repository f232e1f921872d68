"""Critics: the score matrix S[i, j] = T(x_i, y_j) against pair-by-pair evaluation."""

from __future__ import annotations

import pytest
import torch

from mi_bounds.estimation.critics import ConcatCritic, SeparableCritic, make_critic, mlp


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(7, 3, generator=g), torch.randn(7, 5, generator=g)


@pytest.mark.parametrize("cls", [SeparableCritic, ConcatCritic])
def test_scores_match_pairwise_forward(cls, batch) -> None:
    """S[i, j] equals the critic evaluated on the single pair (x_i, y_j), for every i, j."""
    torch.manual_seed(1)
    x, y = batch
    critic = cls(3, 5, hidden_dim=16, layers=1)
    s = critic.scores(x, y)
    assert s.shape == (7, 7)
    for i in range(7):
        for j in range(7):
            t_ij = critic(x[i : i + 1], y[j : j + 1])
            torch.testing.assert_close(s[i, j], t_ij[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(critic(x, y), s.diagonal())


def test_separable_is_inner_product_of_embeddings(batch) -> None:
    """The separable critic is g(x)ᵀh(y), so its score matrix has rank <= embed_dim."""
    torch.manual_seed(2)
    x, y = batch
    critic = SeparableCritic(3, 5, hidden_dim=8, embed_dim=2, layers=0)
    s = critic.scores(x, y)
    torch.testing.assert_close(s, critic.g(x) @ critic.h(y).T)
    assert torch.linalg.matrix_rank(s.double(), atol=1e-4) <= 2


def test_mlp_layer_count_and_sizes() -> None:
    """mlp(layers=L) has L + 1 hidden layers (Song & Ermon's convention)."""
    net = mlp(4, 10, 3, layers=2)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    sizes = [(m.in_features, m.out_features) for m in linears]
    assert sizes == [(4, 10), (10, 10), (10, 10), (10, 3)]


def test_published_sizes() -> None:
    """Defaults: 256 hidden units, 32-dim embeddings (Poole et al. 2019; Song & Ermon 2020)."""
    c = SeparableCritic(20)
    assert c.g[0].out_features == 256 and c.g[-1].out_features == 32
    assert ConcatCritic(20).f[0].in_features == 40


def test_validation_errors(batch) -> None:
    x, y = batch
    critic = SeparableCritic(3, 5, hidden_dim=4)
    with pytest.raises(ValueError, match="y must have shape"):
        critic.scores(x, x)
    with pytest.raises(ValueError, match="same number of samples"):
        critic.scores(x, y[:3])
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        critic.scores(x.numpy(), y)
    with pytest.raises(ValueError, match=r"unknown critic 'mlp'.*separable, concat"):
        make_critic("mlp", 3)
    with pytest.raises(ValueError, match="unknown activation"):
        SeparableCritic(3, activation="swish")
    with pytest.raises(ValueError, match="hidden_dim must be an int >= 1"):
        ConcatCritic(3, hidden_dim=0)


def test_make_critic_ignores_embed_dim_for_concat() -> None:
    c = make_critic("concat", 2, 3, hidden_dim=4, embed_dim=9, layers=0)
    assert isinstance(c, ConcatCritic) and c.f[0].in_features == 5
