"""``batched.train_stack`` alone: each piece is ``sgd``, bit for bit whatever its stack-mates."""

from __future__ import annotations

import pytest
import torch

from splitnet.batched import train_stack
from splitnet.model import MLP
from splitnet.sgd import sgd

N, D, C = 60, 9, 4


def stack(P: int, hidden: list[int], seed: int = 0) -> tuple[list, list]:
    gen = torch.Generator().manual_seed(seed)
    sizes = [D, *hidden, C]
    Ws = [0.5 * torch.randn(P, sizes[m], sizes[m - 1], generator=gen) for m in range(1, len(sizes))]
    bs = [0.2 * torch.randn(P, sizes[m], generator=gen) for m in range(1, len(sizes))]
    return Ws, bs


def data(per_piece: int, steps: int = 6, batch: int = 7):
    """X, y and minibatches of ``batch`` rows: (batch,) shared, or (per_piece, batch) each."""
    gen = torch.Generator().manual_seed(1)
    X, y = torch.randn(N, D, generator=gen), torch.randint(0, C, (N,), generator=gen)
    shape = (per_piece, batch) if per_piece else (batch,)
    return X, y, [torch.randint(0, N, shape, generator=gen) for _ in range(steps)]


def train(sel, hidden, activation, per_piece, momentum, max_p=40):
    """Train pieces ``sel`` of a stack of ``max_p`` (their own rows and minibatch orders)."""
    Ws, bs = stack(max_p, hidden)
    Ws, bs = [W[sel].clone() for W in Ws], [b[sel].clone() for b in bs]
    X, y, batches = data(max_p if per_piece else 0)
    batches = [idx[sel] if per_piece else idx for idx in batches]
    bufs = train_stack(
        Ws, bs, X, y, batches, lr=0.1, momentum=momentum, activation=activation, buffers=None
    )
    return Ws, bs, bufs


@pytest.mark.parametrize(
    "hidden,activation,per_piece,momentum",
    [
        ([3, 2], "relu", False, 0.0),
        ([1, 3], "sigmoid", False, 0.9),  # one neuron in layer 1: the narrowest GEMM
        ([3, 2], "sigmoid", True, 0.5),
        ([2, 3, 2], "tanh", False, 0.5),
        ([2, 3, 2], "relu", True, 0.0),
    ],
)
def test_a_piece_is_bitwise_the_same_in_any_stack(hidden, activation, per_piece, momentum):
    """Alone, last of a stack of any size, or first: the same bits (sizes 1..40, batches of 7,
    so whole-stack elementwise ops would end in a scalar tail without the padding)."""
    full = train(torch.arange(40), hidden, activation, per_piece, momentum)
    for P in [*range(1, 21), 33, 39]:
        for sel, p in ((torch.arange(P), P - 1), (torch.arange(P - 1, 40), 0)):
            got = train(sel, hidden, activation, per_piece, momentum)
            q = int(sel[p])
            for a, b in zip([*got[0], *got[1]], [*full[0], *full[1]], strict=True):
                assert torch.equal(a[p], b[q]), (P, q)
            if momentum:
                for a, b in zip([*got[2][0], *got[2][1]], [*full[2][0], *full[2][1]], strict=True):
                    assert torch.equal(a[p], b[q]), (P, q)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("per_piece", [False, True])
def test_every_piece_is_sgd(activation, per_piece):
    """Three hidden layers, momentum, buffers handed in: each piece = torch.optim.SGD on it."""
    P, hidden, momentum = 5, [3, 2, 4], 0.5
    Ws, bs = stack(P, hidden)
    W_buf, b_buf = stack(P, hidden, seed=2)
    X, y, batches = data(P if per_piece else 0)
    nets = []
    for p in range(P):
        net = MLP((D, *hidden, C), activation)
        with torch.no_grad():
            for lin, W, b in zip(net.linears, Ws, bs, strict=True):
                lin.weight.copy_(W[p]), lin.bias.copy_(b[p])
        bufs = [t[p] for W, b in zip(W_buf, b_buf, strict=True) for t in (W, b)]
        order = [idx[p] if per_piece else idx for idx in batches]
        run = sgd(net, X, y, order, lr=0.1, momentum=momentum, buffers=bufs)
        nets.append((net, run.buffers))
    kw = dict(lr=0.1, momentum=momentum, activation=activation, buffers=(W_buf, b_buf))
    out = train_stack(Ws, bs, X, y, batches, **kw)
    for p, (net, ref_bufs) in enumerate(nets):
        got = [t[p] for W, b in zip(Ws, bs, strict=True) for t in (W, b)]
        for a, b in zip(got, net.parameters(), strict=True):
            torch.testing.assert_close(a, b.detach(), atol=1e-5, rtol=0)
        got = [t[p] for W, b in zip(*out, strict=True) for t in (W, b)]
        for a, b in zip(got, ref_bufs, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        assert all(t.shape[0] == P for t in [*Ws, *bs, *out[0], *out[1]])
