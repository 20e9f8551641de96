"""One combination, one call: k = 1 is the baseline; rows depend on (seed, combination) only."""

import numpy as np
import pytest
import torch

from splitnet import config, experiment, partition, rounds, seeds
from splitnet.combinations import RANDOM_DRAWS, Space
from splitnet.pieces import extract, recombine
from splitnet.sgd import accuracy, train
from splitnet.split import make_split

FAST = ["model.hidden=[4,4]", "train.pretrain_epochs=5", "train.piece_epochs=2"]


@pytest.fixture(scope="module")
def prep():
    return experiment.prepare(config.load(None, FAST))


def test_k1_gives_exactly_the_baseline():
    prep = experiment.prepare(config.load(None, [*FAST, "split.groups=1"]))
    assert prep.count == 1
    row = experiment.run_combination(prep, 0)
    assert row["accuracy"] == row["baseline_accuracy"]
    assert row["piece_accuracies"] == [row["baseline_accuracy"]]


def test_row_has_the_promised_keys(prep):
    row = experiment.run_combination(prep, 5)
    for key in (
        "combination",
        "split",
        "variant",
        "accuracy",
        "baseline_accuracy",
        "piece_accuracies",
        "cut_fraction",
        "seed",
        "config",
        "config_hash",
    ):
        assert key in row
    assert row["combination"] == 5 and len(row["piece_accuracies"]) == 2
    assert prep.space.index_of(row["split"]) == 5


def test_rows_are_reproducible(prep):
    again = experiment.prepare(config.load(None, FAST))
    a, b = experiment.run_combination(prep, 3), experiment.run_combination(again, 3)
    a.pop("seconds"), b.pop("seconds")
    assert a == b


def test_per_piece_shuffle_trains_each_piece_on_its_own_stream():
    shared = experiment.prepare(config.load(None, FAST))
    per = experiment.prepare(config.load(None, [*FAST, "train.shuffle=per-piece"]))
    a, b = experiment.run_combination(shared, 0), experiment.run_combination(per, 0)
    assert a["split"] == b["split"]
    assert b["piece_seeds"] == [seeds.piece_order_seed(per.config, 0, p) for p in per.paths]
    assert len(set(b["piece_seeds"])) == 2 and len(set(a["piece_seeds"])) == 1
    # the same pieces, other minibatch orders: trained differently (so the seeds are used)
    ra = rounds.train_rounds(shared.pretrained, shared.data, shared.config, [0])[0]
    rb = rounds.train_rounds(per.pretrained, per.data, per.config, [0])[0]
    assert not any(torch.equal(x, y) for x, y in zip(ra.pieces[0], rb.pieces[0], strict=True))
    # ... and exactly as sgd on the extracted piece with that seed's stream
    piece = extract(per.pretrained, rb.split, per.paths[1])
    X, y = per.data.remaining
    t = per.config.train
    train(
        piece,
        X,
        y,
        epochs=t.piece_epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        seed=b["piece_seeds"][1],
    )
    for u, v in zip(piece.parameters(), rb.pieces[1], strict=True):
        torch.testing.assert_close(u.detach(), v, atol=1e-4, rtol=0)


@pytest.mark.parametrize("shuffle", ["shared", "per-piece"])
def test_same_split_other_seeds_train_other_pieces(shuffle):
    """Combinations 0 and 1 of the contiguous strategy have the same split; only their piece
    seeds (per-piece) can tell them apart."""
    cfg = config.load(None, [*FAST, "split.strategy=contiguous", f"train.shuffle={shuffle}"])
    prep = experiment.prepare(cfg)
    a, b = rounds.train_rounds(prep.pretrained, prep.data, prep.config, [0, 1])
    assert all(np.array_equal(u, v) for u, v in zip(a.split, b.split, strict=True))
    same = [all(map(torch.equal, p, q)) for p, q in zip(a.pieces, b.pieces, strict=True)]
    assert same == ([True, True] if shuffle == "shared" else [False, False])


@pytest.mark.parametrize("strategy", ["weights", "activations", "contiguous", "random"])
def test_every_strategy_splits_as_it_says(strategy):
    prep = experiment.prepare(config.load(None, [*FAST, f"split.strategy={strategy}"]))
    row = experiment.run_combination(prep, 0)
    cfg = prep.config
    want = make_split(
        strategy, prep.pretrained, 2, seed=seeds.split_seed(cfg, 0), X=prep.data.pretrain[0]
    )
    assert row["split"] == [a.tolist() for a in want] and row["strategy"] == strategy
    assert all(sorted(np.bincount(a)) == [2, 2] for a in map(np.array, row["split"]))
    # the strategy is not ignored: its own number of combinations, its own split
    assert prep.count == (RANDOM_DRAWS if strategy == "random" else 1) and prep.space is None
    exhaustive_0 = [a.tolist() for a in Space((4, 4), 2, "straight").split_at(0)]
    if strategy == "contiguous":
        assert row["split"] == [partition.labels(4, 2).tolist()] * 2
    else:
        assert row["split"] != exhaustive_0
    # the row's accuracy is the recombined net of that split, recomputed by hand
    pieces = [extract(prep.pretrained, want, p) for p in prep.paths]
    X, y = prep.data.remaining
    t = cfg.train
    for piece in pieces:
        train(
            piece,
            X,
            y,
            epochs=t.piece_epochs,
            batch_size=t.batch_size,
            lr=t.lr,
            seed=seeds.remaining_order_seed(cfg),
        )
    net = recombine(prep.pretrained, want, prep.paths, pieces)
    assert abs(accuracy(net, *prep.data.test) - row["accuracy"]) <= 1 / len(prep.data.test[1])
    if strategy == "random":  # every draw is another split
        assert experiment.run_combination(prep, 1)["split"] != row["split"]
    else:
        with pytest.raises(ValueError, match="combination 1 is outside"):
            experiment.run_combination(prep, 1)


def test_strategies_give_different_splits():
    splits = {
        s: experiment.run_combination(
            experiment.prepare(config.load(None, [*FAST, f"split.strategy={s}"])), 0
        )["split"]
        for s in ("weights", "activations", "random", "exhaustive")
    }
    assert len({str(v) for v in splits.values()}) == 4, splits


def test_rounds_through_the_config():
    rounds = experiment.prepare(
        config.load(None, [*FAST, "split.resplit_every=3", "split.groups=1"])
    )
    row = experiment.run_combination(rounds, 0)
    assert row["rounds"] > 1 and row["bytes_moved"] > 0
    assert row["accuracy"] == row["baseline_accuracy"]  # k = 1: re-splitting changes nothing
    # a period longer than the budget is the one-shot row
    one_shot = experiment.prepare(config.load(None, [*FAST, "split.resplit_every=100000"]))
    plain = experiment.prepare(config.load(None, FAST))
    a, b = experiment.run_combination(one_shot, 4), experiment.run_combination(plain, 4)
    assert a["rounds"] == 1 and a["accuracy"] == b["accuracy"]
    assert a["piece_accuracies"] == b["piece_accuracies"]


def test_stitch_and_shared_rescale_rows():
    stitched = experiment.run_combination(
        experiment.prepare(config.load(None, [*FAST, "split.stitch_steps=5"])), 2
    )
    plain = experiment.run_combination(experiment.prepare(config.load(None, FAST)), 2)
    assert stitched["accuracy_before_stitch"] == plain["accuracy"]
    assert plain["accuracy_before_stitch"] is None
    shared = experiment.run_combination(
        experiment.prepare(config.load(None, [*FAST, "split.output=shared-rescale"])), 2
    )
    assert shared["piece_accuracies"] == plain["piece_accuracies"]
