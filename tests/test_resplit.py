"""The re-split study's measurements on tiny nets (``splitnet.resplit``), the independence
predictors and their summary (``splitnet.independence``), and the tables' series
(``splitnet.resplit_tables``) on hand-made rows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from splitnet import experiment, independence, resplit, resplit_tables
from splitnet.pieces import n_params
from splitnet.split import activation_affinity, activation_score

TINY = {
    "data": {"name": "digits"},
    "model": {"hidden": [4, 4]},
    "train": {"pretrain_epochs": 1, "piece_epochs": 1, "batch_size": 32},
}


@pytest.fixture(scope="module")
def prep() -> experiment.Prepared:
    s = resplit.ResplitConfig(config=TINY)
    return experiment.prepare(resplit.cell_config(s, 0, 2, "none"))


def test_cells_cover_the_grid_in_order_with_distinct_keys():
    rounds = resplit.Rounds(
        resplit_every=(1, 5), strategies=("random", "fixed"), recombination_variants=("straight",)
    )
    s = resplit.ResplitConfig((0, 1), (2,), ("none", "batch"), TINY, rounds)
    cells = resplit.cells(s)
    per = 1 + 2 * 2 + 1  # references, strategy x period, one variant
    assert len(cells) == 2 * 2 * per and len({c[-1] for c in cells}) == len(cells)
    kinds = ["ref", "rounds", "rounds", "rounds", "rounds", "recombination"]
    assert [c[3] for c in cells[:per]] == kinds
    batch = [c[2] for c in cells if c[2].model.norm == "batch"]
    assert len(batch) == 2 * per and all(c.train.engine == "loop" for c in batch)


def test_references_count_steps_and_ring_allreduce_bytes(prep):
    base, dp, equal = resplit.references(prep, resplit.Rounds())
    n, b, P = len(prep.data.remaining[0]), 32, n_params(prep.pretrained)
    T, T_big = math.ceil(n / b), math.ceil(n / (2 * b))  # one epoch at batch b and 2b
    assert (base["total_steps"], dp["total_steps"], equal["total_steps"]) == (T, T, T_big)
    assert base["bytes_total"] == 0 and base["accuracy"] == dp["accuracy"]
    assert dp["bytes_total"] == 8 * (2 - 1) * P * T  # 8 (N-1) P bytes a step, N = k = 2
    assert equal["bytes_total"] == 8 * P * T_big and 0 <= equal["accuracy"] <= 1


def test_one_round_without_stitch_leaves_the_accuracy_alone(prep):
    before, after = resplit.rounds(prep, resplit.Rounds(), "random", 10_000)  # E >= T: one-shot
    assert before["rounds"] == 1 and not before["stitch"] and after["stitch"]
    assert before["accuracy"] == after["accuracy"]  # zero stitch steps: the same net
    assert len(before["piece_accuracies"]) == 2 and 0 <= before["mean_cut_fraction"] <= 1
    many = resplit.rounds(prep, resplit.Rounds(), "fixed-dropout", 1)[0]
    assert many["rounds"] == many["total_steps"] == before["total_steps"]


def test_recombinations_four_ways_stitch_of_zero_steps_is_the_sum(prep):
    rows = resplit.recombinations(prep, resplit.Rounds(), "alternating")
    accs = {r["method"]: r["accuracy"] for r in rows}
    assert set(accs) == set(resplit_tables.METHODS) and rows[0]["pieces"] == 4  # k^L paths
    assert accs["stitch"] == accs["sum"]


def test_predictor_rows_and_summary(prep):
    splits = [  # two balanced splits of [4, 4] into k = 2 groups
        [np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])],
        [np.array([0, 1, 0, 1]), np.array([0, 1, 1, 0])],
    ]
    driver = [
        {"combination": i, "accuracy": a, "baseline_accuracy": 0.9, "split": sp, "cut_fraction": 0}
        for i, (a, sp) in enumerate(zip((0.8, 0.95), splits, strict=True))
    ]
    rows = independence.predictor_rows(driver, prep, 1, "src")
    A = activation_affinity(prep.pretrained, prep.data.pretrain[0])
    assert [r["activation_score"] for r in rows] == [activation_score(A, s) for s in splits]
    assert [r["weights_split"] for r in rows] == [False, True]
    assert rows[0]["lost"] == pytest.approx(0.1) and rows[0]["hidden"] == [4, 4]
    loss = [0.3, 0.1, 0.0, -0.05]
    rows = [
        {"lost": x, "accuracy": 0.9 - x, "baseline_accuracy": 0.9, "weights_split": i == 1}
        | {
            "cut_fraction": 10 * x,
            "activation_score": -x,
            "source": "s",
            "hidden": [4],
            "groups": 2,
        }
        for i, x in enumerate(loss)
    ]
    s = independence.summary(rows)
    assert s["rho_cut_fraction"] == pytest.approx(1) and s["rho_activation_score"] == -1
    assert (s["n"], s["reached_baseline"], s["lost_max"]) == (4, 2, 0.3)
    assert s["weights_split_lost"] == 0.1 and s["weights_split_percentile"] == 50
    text = "\n".join(independence.table_lines(s))
    assert "4 combinations" in text and "50% of all combinations lose less" in text
    assert independence.table_lines(None) == []


def test_series_means_over_seeds_by_period():
    rows = [
        {"kind": "rounds", "groups": 2, "strategy": "random", "stitch": False, "resplit_every": e}
        | {"accuracy": a, "bytes_total": b, "ensemble_accuracy": 0.5, "rounds": 30 // e}
        for e, a, b in ((10, 0.8, 100), (10, 0.9, 300), (1, 0.7, 1000))
    ]
    (e1, m1, c1, b1, ens1, r1), (e10, m10, _, b10, _, r10) = resplit_tables.series(
        rows, 2, "random", False
    )
    assert (e1, m1, c1, b1, ens1, r1) == (1, 0.7, 0.0, 1000, 0.5, 30)
    assert (e10, b10, r10) == (10, 200, 3) and m10 == pytest.approx(0.85)
    assert resplit_tables.series(rows, 2, "random", True) == []
