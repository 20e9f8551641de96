"""Split strategies: balance, the planted-independence recovery, and the cut fraction."""

import numpy as np
import pytest
import torch

from splitnet.combinations import Space
from splitnet.model import build_mlp
from splitnet.split import (
    activation_score,
    contiguous_split,
    cut_fraction,
    make_split,
    random_split,
)


def planted_net(width=8, k=2, noise=0.01, seed=0):
    """Hidden layers [width, width] whose middle weights form k independent blocks (shuffled)."""
    net = build_mlp([6, width, width, 3], seed=seed)
    rng = np.random.default_rng(seed)
    truth = (
        rng.permutation(np.repeat(np.arange(k), width // k)),
        rng.permutation(np.repeat(np.arange(k), width // k)),
    )
    W = noise * rng.standard_normal((width, width))
    same = truth[1][:, None] == truth[0][None, :]
    W[same] = rng.uniform(0.5, 1.5, size=same.sum()) * rng.choice([-1, 1], size=same.sum())
    with torch.no_grad():
        net.linears[1].weight.copy_(torch.as_tensor(W, dtype=torch.float32))
    return net, truth


@pytest.mark.parametrize("k,seed", [(2, 0), (2, 1), (4, 2)])
def test_weights_recovers_planted_blocks(k, seed):
    net, truth = planted_net(width=8, k=k, seed=seed)
    split = make_split("weights", net, k, seed=seed)
    space = Space((8, 8), k, "straight")
    assert space.index_of(split) == space.index_of(truth)  # the same blocks, up to relabelling
    assert cut_fraction(net, split) < 0.05  # only the noise crosses groups


def test_activations_split_is_balanced_and_seeded():
    net = build_mlp([6, 7, 5, 3], seed=0)
    X = np.random.default_rng(0).standard_normal((200, 6)).astype(np.float32)
    a = make_split("activations", net, 2, seed=1, X=X)
    b = make_split("activations", net, 2, seed=1, X=X)
    Space((7, 5), 2).validate(a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_contiguous_is_the_slides_chunking():
    (labels,) = contiguous_split((7,), 2)
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    (labels,) = contiguous_split((8,), 4)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_random_split_is_balanced_and_reproducible():
    a, b = random_split((9, 9), 4, seed=5), random_split((9, 9), 4, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    Space((9, 9), 4).validate(a)


def test_cut_fraction_closed_form():
    net = build_mlp([2, 2, 2, 2], seed=0)
    with torch.no_grad():
        net.linears[1].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 4.0]]))
    split = (np.array([0, 1]), np.array([0, 1]))  # crossing entries: W[0,1], W[1,0]
    assert cut_fraction(net, split) == pytest.approx((2 + 3) / 10)
    assert cut_fraction(build_mlp([2, 3, 2]), (np.array([0, 1, 1]),)) is None


def test_unknown_strategy_is_named():
    with pytest.raises(ValueError, match="'spectral'"):
        make_split("spectral", build_mlp([2, 4, 4, 2]), 2, seed=0)


def test_activation_score_by_hand():
    # neurons: layer 1 = [a, b], layer 2 = [c, d]; groups {a, c} and {b, d}
    A = np.array([[0, 0.2, 0.9, 0.1], [0.2, 0, 0.3, 0.7], [0.9, 0.3, 0, 0.4], [0.1, 0.7, 0.4, 0]])
    within = (0.9 + 0.7) / 2
    across = (0.2 + 0.1 + 0.3 + 0.4) / 4
    assert activation_score(A, (np.array([0, 1]), np.array([0, 1]))) == pytest.approx(
        within - across
    )
