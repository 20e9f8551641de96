"""Stacked evaluation gives the numbers of the per-net evaluation (``sgd.accuracy``)."""

from __future__ import annotations

import pytest
import torch

from splitnet import config, experiment
from splitnet.evaluation import accuracies, piece_and_ensemble_accuracies
from splitnet.model import build_mlp
from splitnet.pieces import ensemble_logits, forward, params_of
from splitnet.rounds import train_rounds
from splitnet.sgd import accuracy


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_stacked_accuracies_equal_one_net_at_a_time(activation):
    X = torch.randn(300, 12)
    y = torch.randint(0, 5, (300,)).numpy()
    # two shapes interleaved: stacks are formed by shape and results come back in order
    nets = [build_mlp([12, 3 + i % 2, 4, 5], activation, seed=i) for i in range(9)]
    params = [params_of(n) for n in nets]
    assert accuracies(params, activation, X, y) == [accuracy(n, X, y) for n in nets]
    combos = [params[:2], params[2:5], params[5:]]
    got = piece_and_ensemble_accuracies(combos, activation, X, y)
    for ps, (piece_acc, ens) in zip(combos, got, strict=True):
        assert piece_acc == [accuracy(lambda x, p=p: forward(p, activation, x), X, y) for p in ps]
        assert ens == accuracy(lambda x, ps=ps: ensemble_logits(ps, activation, x), X, y)


def test_rows_equal_the_per_net_evaluation_with_validation_and_stitch():
    cfg = config.load(
        None,
        ["model.hidden=[6,5]", "data.validation_fraction=0.2", "split.stitch_steps=3"],
    )
    prep = experiment.prepare(cfg)
    rows = experiment.run_combinations(prep, [0, 11, 40])
    for row, res in zip(
        rows, train_rounds(prep.pretrained, prep.data, prep.config, [0, 11, 40]), strict=True
    ):
        X, y = prep.data.test
        assert row["accuracy"] == accuracy(res.net, X, y)
        assert row["piece_accuracies"] == res.piece_accuracies(X, y)
        assert row["ensemble_accuracy"] == res.ensemble_accuracy(X, y)
        assert row["validation_accuracy"] == accuracy(res.net, *prep.data.validation)
