"""The one SGD loop against a hand-written torch.optim loop, the minibatch streams, accuracy."""

from __future__ import annotations

import copy

import pytest
import torch
from sklearn.metrics import accuracy_score

from splitnet.model import build_mlp
from splitnet.sgd import accuracy, batch_order, minibatches, sgd, steps_per_epoch, train

N, D, C = 70, 6, 3


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, D, generator=g)
    y = torch.randint(0, C, (N,), generator=g)
    return X, y


def _reference(model, X, y, batches, lr, momentum, opt=None):
    opt = opt or torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    for idx in batches:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
    return opt


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_is_torch_sgd(data, momentum):
    X, y = data
    net = build_mlp([D, 5, C], seed=1)
    ref = copy.deepcopy(net)
    batches = minibatches(N, 16, seed=3, epochs=3)
    run = sgd(net, X, y, batches, lr=0.1, momentum=momentum)
    _reference(ref, X, y, batches, 0.1, momentum)
    assert all(map(torch.equal, net.parameters(), ref.parameters()))
    assert len(run.losses) == len(batches) and (run.buffers is None) == (momentum == 0)


def test_passing_buffers_continues_the_optimizer(data):
    """Two sgd calls handing the momentum buffers on = one uninterrupted torch optimizer."""
    X, y = data
    net = build_mlp([D, 5, C], seed=2)
    ref = copy.deepcopy(net)
    batches = minibatches(N, 16, seed=4, steps=11)
    first = sgd(net, X, y, batches[:4], lr=0.05, momentum=0.9)
    second = sgd(net, X, y, batches[4:], lr=0.05, momentum=0.9, buffers=first.buffers)
    opt = _reference(ref, X, y, batches, 0.05, 0.9)
    assert all(map(torch.equal, net.parameters(), ref.parameters()))
    want = [opt.state[p]["momentum_buffer"] for p in ref.parameters()]
    assert all(map(torch.equal, second.buffers, want))
    # without the buffers the second call is a fresh optimizer: another result
    restart = build_mlp([D, 5, C], seed=2)
    sgd(restart, X, y, batches[:4], lr=0.05, momentum=0.9)
    sgd(restart, X, y, batches[4:], lr=0.05, momentum=0.9)
    assert not torch.equal(restart.linears[0].weight, net.linears[0].weight)


def test_zero_buffers_are_the_fresh_optimizer(data):
    X, y = data
    net = build_mlp([D, 5, C], seed=7)
    ref = copy.deepcopy(net)
    batches = minibatches(N, 16, seed=9, steps=6)
    zeros = [torch.zeros_like(p) for p in net.parameters()]
    run = sgd(net, X, y, batches, lr=0.05, momentum=0.9, buffers=zeros)
    opt = _reference(ref, X, y, batches, 0.05, 0.9)
    assert all(map(torch.equal, net.parameters(), ref.parameters()))
    want = [opt.state[p]["momentum_buffer"] for p in ref.parameters()]
    assert all(map(torch.equal, run.buffers, want))
    assert all(torch.equal(z, torch.zeros_like(z)) for z in zeros)  # the caller's are copied


def test_grad_masks_keep_masked_entries_bit_for_bit(data):
    X, y = data
    net = build_mlp([D, 5, C], seed=3)
    before = [p.detach().clone() for p in net.parameters()]
    masks = [
        torch.ones_like(p) if i % 2 else (torch.rand(p.shape) > 0.5).float()
        for i, p in enumerate(net.parameters())
    ]
    masks[1] = None  # unmasked
    sgd(net, X, y, minibatches(N, 16, seed=5, epochs=2), lr=0.2, grad_masks=masks)
    for p, b, m in zip(net.parameters(), before, masks, strict=True):
        if m is not None:
            assert torch.equal(p[m == 0], b[m == 0])
            assert not torch.equal(p[m == 1], b[m == 1])
    with pytest.raises(ValueError, match="1 gradient masks for 4 parameters"):
        sgd(net, X, y, [], lr=0.1, grad_masks=[None])


def test_another_optimizer_through_the_same_loop(data):
    X, y = data
    net = build_mlp([D, 5, C], seed=4)
    ref = copy.deepcopy(net)
    batches = minibatches(N, 16, seed=6, epochs=2)
    sgd(net, X, y, batches, lr=0.0, optimizer=lambda ps: torch.optim.Adam(ps, lr=0.01))
    _reference(ref, X, y, batches, 0, 0, opt=torch.optim.Adam(ref.parameters(), lr=0.01))
    assert all(map(torch.equal, net.parameters(), ref.parameters()))


def test_streams():
    epochs = minibatches(N, 16, seed=7, epochs=3)
    assert len(epochs) == 3 * steps_per_epoch(N, 16) == 15
    for e in range(3):  # every row once per epoch, a short last batch
        part = epochs[5 * e : 5 * e + 5]
        assert torch.equal(torch.cat(part).sort().values, torch.arange(N))
        assert [len(b) for b in part] == [16, 16, 16, 16, 6]
    for steps in (1, 5, 7, 15):
        assert all(map(torch.equal, minibatches(N, 16, seed=7, steps=steps), epochs[:steps]))
    perms = batch_order(N, 3, seed=7)
    assert torch.equal(torch.cat(perms), torch.cat(epochs))
    with pytest.raises(ValueError, match="exactly one"):
        minibatches(N, 16, seed=7)


def test_train_returns_epoch_means_of_the_step_losses(data):
    X, y = data
    net = build_mlp([D, 5, C], seed=5)
    ref = copy.deepcopy(net)
    losses = train(net, X, y, epochs=2, batch_size=16, lr=0.1, seed=8)
    steps = sgd(ref, X, y, minibatches(N, 16, seed=8, epochs=2), lr=0.1).losses
    sizes = [16, 16, 16, 16, 6]
    want = [sum(l * s for l, s in zip(steps[i : i + 5], sizes, strict=True)) / N for i in (0, 5)]
    assert losses == pytest.approx(want, rel=0, abs=0)
    assert all(map(torch.equal, net.parameters(), ref.parameters()))
    assert train(net, X, y, epochs=0, batch_size=16, lr=0.1, seed=8) == []


def test_accuracy_is_sklearns(data):
    X, y = data
    net = build_mlp([D, 5, C], seed=6)
    with torch.no_grad():
        pred = net(X).argmax(1).numpy()
    assert accuracy(net, X, y) == accuracy_score(y.numpy(), pred)
    assert (
        accuracy(lambda x: torch.nn.functional.one_hot(y, C).float(), X.numpy(), y.numpy()) == 1.0
    )


def test_bad_buffers_are_refused_by_name(data):
    X, y = data
    net = build_mlp([D, 5, C], seed=1)
    batches = minibatches(N, 16, seed=3, steps=2)
    with pytest.raises(ValueError, match="3 momentum buffers for 4 parameters"):
        sgd(net, X, y, batches, lr=0.1, momentum=0.9, buffers=[torch.zeros(1)] * 3)
    with pytest.raises(ValueError, match="without optimizer"):
        adam = lambda ps: torch.optim.Adam(ps, lr=0.01)  # noqa: E731
        sgd(net, X, y, batches, lr=0.1, buffers=list(net.parameters()), optimizer=adam)
