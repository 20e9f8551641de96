"""One combination, one call: k = 1 is the baseline; rows depend on (seed, combination) only."""

import pytest

from splitnet import config, experiment

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
    for key in ("combination", "split", "variant", "accuracy", "baseline_accuracy",
                "piece_accuracies", "cut_fraction", "seed", "config", "config_hash"):
        assert key in row
    assert row["combination"] == 5 and len(row["piece_accuracies"]) == 2
    assert prep.space.index_of(row["split"]) == 5


def test_rows_are_reproducible(prep):
    again = experiment.prepare(config.load(None, FAST))
    a, b = experiment.run_combination(prep, 3), experiment.run_combination(again, 3)
    a.pop("seconds"), b.pop("seconds")
    assert a == b


def test_per_piece_shuffle_uses_path_seeds():
    prep = experiment.prepare(config.load(None, [*FAST, "train.shuffle=per-piece"]))
    row = experiment.run_combination(prep, 0)
    assert len(set(row["piece_seeds"])) == 2


@pytest.mark.parametrize("strategy", ["weights", "activations", "contiguous", "random"])
def test_every_strategy_runs(strategy):
    prep = experiment.prepare(config.load(None, [*FAST, f"split.strategy={strategy}"]))
    row = experiment.run_combination(prep, 0)
    assert 0.0 <= row["accuracy"] <= 1.0 and row["strategy"] == strategy


def test_rounds_through_the_config():
    rounds = experiment.prepare(config.load(None, [*FAST, "split.resplit_every=3",
                                                   "split.groups=1"]))
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
        experiment.prepare(config.load(None, [*FAST, "split.stitch_steps=5"])), 2)
    plain = experiment.run_combination(experiment.prepare(config.load(None, FAST)), 2)
    assert stitched["accuracy_before_stitch"] == plain["accuracy"]
    assert plain["accuracy_before_stitch"] is None
    shared = experiment.run_combination(
        experiment.prepare(config.load(None, [*FAST, "split.output=shared-rescale"])), 2)
    assert shared["piece_accuracies"] == plain["piece_accuracies"]
