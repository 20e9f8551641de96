"""The stacked one-shot path (``rounds.stacked_one_shot``) gives the per-combination numbers bit
for bit: ``pieces.recombine_stacked`` equals ``pieces.recombine`` per combination, the stacked
evaluation equals ``evaluation.accuracies``, and ``train_rounds`` with the fast path equals it
without (nets, pieces, curves, cut fractions); ``Space.split_at``'s memo returns fresh arrays."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from splitnet import config, experiment, rounds
from splitnet.combinations import Space, paths
from splitnet.evaluation import accuracies, piece_and_ensemble_accuracies, stack_accuracies
from splitnet.model import build_mlp
from splitnet.pieces import (
    ensemble_logits,
    forward,
    params_of,
    piece_neurons,
    piece_params,
    recombine,
    recombine_stacked,
)
from splitnet.sgd import accuracy
from splitnet.split import cut_fraction, hidden_weights


def _trained_like(net, split, path, seed):
    """A piece of ``net`` with perturbed values (as if trained)."""
    g = torch.Generator().manual_seed(seed)
    return [
        t + torch.randn(t.shape, generator=g) for t in piece_params(net, piece_neurons(split, path))
    ]


@pytest.mark.parametrize("unheld", ["pretrained", "zero"])
@pytest.mark.parametrize("output", ["sum", "rescale", "shared-rescale"])
@pytest.mark.parametrize(
    "hidden,k,variant",
    [([8, 8], 2, "straight"), ([7, 5], 3, "alternating"), ([5, 4, 3], 2, "all-paths")],
)
def test_recombine_stacked_equals_recombine(hidden, k, variant, unheld, output):
    net = build_mlp([6, *hidden, 4], "relu", seed=1)
    space = Space(hidden, k, variant)
    ps = paths(variant, len(hidden), k)
    # unequal groups (7 = 3+2+2, 5, 3) put combinations in several shape classes
    combos = sorted({(37 * i) % space.count for i in range(12)})
    splits = [space.split_at(c) for c in combos]
    pieces = [
        [_trained_like(net, s, p, 100 * c + q) for q, p in enumerate(ps)]
        for c, s in zip(combos, splits, strict=True)
    ]
    stack = recombine_stacked(net, splits, ps, pieces, unheld=unheld, output=output)
    for i, (s, mine) in enumerate(zip(splits, pieces, strict=True)):
        ref = params_of(recombine(net, s, ps, mine, unheld=unheld, output=output))
        for a, b in zip(ref, stack, strict=True):
            assert torch.equal(a, b[i])
    assert stack_accuracies(stack, "relu", X := torch.randn(50, 6), y := np.arange(50) % 4) == (
        accuracies([[t[i] for t in stack] for i in range(len(combos))], "relu", X, y)
    )


def _cfg(sets):
    return config.load(
        None, ["model.hidden=[6,5]", "train.pretrain_epochs=3", "train.piece_epochs=2", *sets]
    )


@pytest.mark.parametrize(
    "sets",
    [
        [],
        ["split.variant=alternating", "split.output=shared-rescale", "split.unheld=zero"],
        ["split.groups=3", "split.output=rescale", "train.momentum=0.9"],
        ["split.stitch_steps=3", "train.shuffle=per-piece", "data.validation_fraction=0.2"],
    ],
)
def test_train_rounds_stacked_equals_per_combination(monkeypatch, sets):
    torch.set_num_threads(1)
    prep = experiment.prepare(_cfg(sets))
    combos = list(range(0, prep.count, max(1, prep.count // 9)))
    assert rounds.stacked_one_shot(prep.config, prep.pretrained, 1)
    fast = rounds.train_rounds(prep.pretrained, prep.data, prep.config, combos, space=prep.space)
    rows = experiment.run_combinations(prep, combos)
    monkeypatch.setattr(rounds, "stacked_one_shot", lambda *a: False)
    ref = rounds.train_rounds(prep.pretrained, prep.data, prep.config, combos, space=prep.space)
    assert rows == [
        {**r, "seconds": f["seconds"]}
        for r, f in zip(experiment.run_combinations(prep, combos), rows, strict=True)
    ]
    for a, b in zip(fast, ref, strict=True):
        assert (a.curve, a.cut_fractions) == (b.curve, b.cut_fractions)
        assert a.piece_seeds == b.piece_seeds
        for x, y in zip(a.final, b.final, strict=True):
            assert torch.equal(x, y)
        for x, y in zip(a.net.parameters(), b.net.parameters(), strict=True):
            assert torch.equal(x, y)
        for pa, pb in zip(a.pieces, b.pieces, strict=True):
            assert all(torch.equal(x, y) for x, y in zip(pa, pb, strict=True))


def test_not_stacked_for_rounds_loop_or_dropout():
    prep = experiment.prepare(_cfg([]))
    cfg, net = prep.config, prep.pretrained
    assert not rounds.stacked_one_shot(cfg, net, 2)
    loop = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, engine="loop"))
    assert not rounds.stacked_one_shot(loop, net, 1)
    drop = dataclasses.replace(cfg, split=dataclasses.replace(cfg.split, piece_scale="dropout"))
    assert not rounds.stacked_one_shot(drop, net, 1)


def test_split_at_memo_returns_fresh_arrays_and_cut_fraction_weights():
    space = Space([8, 8], 2)
    fresh = Space([8, 8], 2)
    a = space.split_at(5)
    a[0][:] = 7  # a caller's edit must not reach the memo
    assert space.split_at(5)[0][0] != 7
    for c in (5, 17, 2449):
        got, want = space.split_at(c), fresh.split_at(c)
        assert all(np.array_equal(x, y) for x, y in zip(got, want, strict=True))
    net = build_mlp([4, 8, 8, 3], "relu", seed=0)
    w = hidden_weights(net)
    for c in (0, 5, 100):
        s = space.split_at(c)
        assert cut_fraction(net, s, w) == cut_fraction(net, s)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_piece_and_ensemble_accuracies_of_one_stack_equal_one_net_at_a_time(activation):
    X = torch.randn(200, 12)
    y = torch.randint(0, 5, (200,)).numpy()
    nets = [params_of(build_mlp([12, 3, 4, 5], activation, seed=i)) for i in range(12)]
    combos = [nets[i : i + 3] for i in range(0, 12, 3)]  # one shape, 3 pieces each: one stack
    got = piece_and_ensemble_accuracies(combos, activation, X, y)
    for ps, (piece_acc, ens) in zip(combos, got, strict=True):
        assert piece_acc == [accuracy(lambda x, p=p: forward(p, activation, x), X, y) for p in ps]
        assert ens == accuracy(lambda x, ps=ps: ensemble_logits(ps, activation, x), X, y)


def test_no_combinations():
    """A rank may be dealt none (more ranks than combinations in a chunk)."""
    prep = experiment.prepare(_cfg([]))
    assert rounds.train_rounds(prep.pretrained, prep.data, prep.config, [], space=prep.space) == []
    net = prep.pretrained
    stack = recombine_stacked(net, [], prep.paths, [])
    assert [tuple(t.shape) for t in stack] == [(0, *t.shape) for t in params_of(net)]
    assert stack_accuracies(stack, net.activation, *prep.data.test) == []
