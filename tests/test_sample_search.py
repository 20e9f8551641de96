"""Spaces too big to enumerate: the validation split, uniform samples, the DKW / Clopper-Pearson
summary and the search."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from conftest import driver_on_one_and_two_ranks, timeless_rows
from scipy import stats

from splitnet import config, enumerate, experiment, results, search
from splitnet.analysis import (
    band_contains,
    clopper_pearson,
    dkw_epsilon,
    ecdf_band,
    pick_on_validation,
    quantile_bands,
)
from splitnet.combinations import SampledSpace, Space, sample_indices
from splitnet.data import load_splits

SMALL = ["model.hidden=[4,4]", "train.piece_epochs=1", "train.pretrain_epochs=2"]
SEARCH = [*SMALL, "split.strategy=search", "data.validation_fraction=0.2", "split.candidates=3"]


# --- validation split ---------------------------------------------------------------------------


def test_validation_is_a_stratified_part_of_the_remaining_data_only():
    plain = load_splits(config.load().data, 0)
    with_val = load_splits(config.load(None, ["data.validation_fraction=0.25"]).data, 0)
    # the pretrained net's data and the test set do not depend on validation_fraction
    for a, b in ((plain.pretrain, with_val.pretrain), (plain.test, with_val.test)):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    X_val, y_val = with_val.validation
    n_rem = len(plain.remaining[1])
    assert len(y_val) == math.ceil(0.25 * n_rem)
    assert len(y_val) + len(with_val.remaining[1]) == n_rem
    # stratified: every class's share within one sample of the remaining data's
    share = np.bincount(plain.remaining[1]) * 0.25
    assert np.all(np.abs(np.bincount(y_val) - share) <= 1)
    # disjoint: no validation row is also a remaining row
    rem = {r.tobytes() for r in with_val.remaining[0]}
    assert not any(r.tobytes() in rem for r in X_val)
    assert plain.validation is None


def test_rows_carry_validation_accuracy_and_the_baselines():
    prep = experiment.prepare(config.load(None, [*SMALL, "data.validation_fraction=0.2"]))
    row = experiment.run_combination(prep, 3)
    net = experiment.baseline(prep.config, prep.data, prep.pretrained)
    assert row["baseline_validation_accuracy"] == experiment.validation_accuracy(net, prep.data)
    assert 0 <= row["validation_accuracy"] <= 1
    assert "validation_accuracy" not in experiment.run_combination(
        experiment.prepare(config.load(None, SMALL)), 3
    )


# --- uniform samples ----------------------------------------------------------------------------


def test_sampled_indices_are_distinct_and_uniform_chi_square():
    count, k, reps = 18, 5, 3000  # [4, 4], k = 2: 18 combinations
    hits = np.zeros(count)
    for seed in range(reps):
        draw = sample_indices(count, k, seed)
        assert len(set(draw)) == k and all(0 <= i < count for i in draw)
        hits[draw] += 1
    # every index is drawn with probability k / count
    assert stats.chisquare(hits).pvalue > 1e-3
    # a prefix of a sample is a uniform sample too: the first draw alone
    first = np.bincount([sample_indices(count, k, s)[0] for s in range(reps)], minlength=count)
    assert stats.chisquare(first).pvalue > 1e-3


def test_samples_of_a_space_beyond_2_to_the_63():
    space = Space([64, 64], 2)
    assert space.count > 2**120
    s = SampledSpace(space, 400, seed=7)
    assert len(set(s.indices)) == 400 and all(0 <= i < space.count for i in s.indices)
    # uniform over [0, count): ten equal buckets
    buckets = np.bincount([i * 10 // space.count for i in s.indices], minlength=10)
    assert stats.chisquare(buckets).pvalue > 1e-3
    assert space.index_of(s.split_at(5)) == s.index(5)
    assert SampledSpace(space, 400, seed=7).indices == s.indices  # seeded


def test_a_sample_row_keeps_the_exact_index_as_a_string_past_2_to_the_53():
    cfg = config.load(
        None, [*SMALL, "model.hidden=[64,64]", "split.strategy=sample", "split.samples=3"]
    )
    prep = experiment.prepare(cfg)
    row = json.loads(results.encode_row(experiment.run_combination(prep, 1)))
    assert isinstance(row["index"], str) and int(row["index"]) == prep.space.index(1)
    split = Space([64, 64], 2).split_at(int(row["index"]))
    assert [list(a) for a in split] == row["split"]


def test_a_sample_is_the_same_on_one_and_two_ranks(tmp_path):
    args = ["--set", "split.strategy=sample", "--set", "split.samples=6", "--quiet"]
    args += [x for s in SMALL for x in ("--set", s)]
    one, two = driver_on_one_and_two_ranks(tmp_path, args)
    assert one == two and len(one) == 6
    assert len({r["index"] for r in one}) == 6


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["split.strategy=sample", "split.samples=0"], "split.samples=0"),
        (["split.strategy=sample", "split.samples=19"], "split.samples=19"),
        (["split.strategy=search", "split.budget=0"], "split.budget=0"),
        (
            ["split.strategy=search", "split.budget=19", "data.validation_fraction=0.2"],
            "split.budget=19",
        ),
        (["split.strategy=search", "split.budget=5"], "data.validation_fraction"),
        (["data.validation_fraction=1.5"], "data.validation_fraction=1.5"),
        (["data.validation_fraction=0.995"], "data.validation_fraction=0.995"),
        (["split.candidates=0"], "split.candidates=0"),
    ],
)
def test_bad_sample_search_and_validation_values_are_named_before_training(
    overrides, named, tmp_path, capsys
):
    args = [x for s in [*SMALL, *overrides] for x in ("--set", s)]
    code = enumerate.main([*args, "--out", str(tmp_path / "r.jsonl"), "--quiet"])
    assert code == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists()  # nothing written, nothing trained


def test_a_search_refuses_start_stop_and_shards(tmp_path, capsys):
    args = [x for s in [*SEARCH, "split.budget=5"] for x in ("--set", s)]
    assert enumerate.main([*args, "--shard", "0/2", "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "--shard" in capsys.readouterr().err


# --- the summary's statistics -------------------------------------------------------------------


def test_dkw_and_clopper_pearson_closed_forms():
    assert dkw_epsilon(200, 0.05) == pytest.approx(math.sqrt(math.log(40) / 400))
    # k = 0: the exact upper bound solves (1 - p)^n = alpha / 2
    lo, hi = clopper_pearson(0, 50, 0.05)
    assert lo == 0 and hi == pytest.approx(1 - 0.025 ** (1 / 50))
    lo, hi = clopper_pearson(50, 50, 0.05)
    assert hi == 1 and lo == pytest.approx(0.025 ** (1 / 50))
    x, F, low, up = ecdf_band([3.0, 1.0, 2.0])
    assert list(x) == [1, 2, 3] and list(F) == pytest.approx([1 / 3, 2 / 3, 1])
    assert np.all(low <= F) and np.all(F <= up)


def test_dkw_band_covers_the_true_cdf_at_least_95_percent():
    rng = np.random.default_rng(0)
    population = np.round(rng.normal(0.6, 0.07, 2450), 3)  # ties, like accuracies
    covered = [
        band_contains(rng.choice(population, 200, replace=False), population, 0.05)
        for _ in range(200)
    ]
    assert np.mean(covered) >= 0.95
    # and the check is not vacuous: a shifted sample is caught
    assert not band_contains(population[:200] + 0.1, population, 0.05)


def test_quantile_bands_bracket_the_population_quantiles():
    pop = np.linspace(0, 1, 1001)
    sample = np.random.default_rng(1).choice(pop, 300, replace=False)
    for b in quantile_bands(sample, (0.25, 0.5, 0.75)):
        true = np.quantile(pop, b["q"])
        assert b["lower"] <= true <= b["upper"]


def test_summary_of_a_full_enumeration_is_exact(tmp_path, capsys):
    out = tmp_path / "all.jsonl"
    enumerate.main([*(x for s in SMALL for x in ("--set", s)), "--out", str(out), "--quiet"])
    assert results.main(["summary", str(out)]) == 0
    d = json.loads(capsys.readouterr().out)
    rows = results.read_rows(out)
    acc = np.array([r["accuracy"] for r in rows])
    assert d["kind"] == "full enumeration" and d["combinations"] == d["space"] == 18
    for b in d["quantiles"]:
        assert b["estimate"] == np.quantile(acc, b["q"], method="inverted_cdf")
        assert b["lower"] == b["upper"] == b["estimate"]
    k = int((acc >= rows[0]["baseline_accuracy"]).sum())
    assert d["at_or_above_baseline"]["k"] == k
    # a prefix is not a sample: no statement about the space
    (tmp_path / "part.jsonl").write_bytes(b"".join(out.read_bytes().splitlines(True)[:5]))
    results.sidecar_path(tmp_path / "part.jsonl").write_bytes(
        results.sidecar_path(out).read_bytes()
    )
    assert results.main(["summary", str(tmp_path / "part.jsonl")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "partial" and "quantiles" not in d


# --- search -------------------------------------------------------------------------------------


def _search_rows(prep, recorded=None):
    return [r for step in search.steps(prep, recorded or {}) for r in step]


def test_search_path_never_reads_test_accuracy():
    cfg = config.load(None, [*SEARCH, "split.budget=10"])
    prep = experiment.prepare(cfg)
    clean = _search_rows(prep)
    X_test, y_test = prep.data.test
    poisoned_labels = (y_test + 1 + np.arange(len(y_test)) % 3) % prep.data.n_classes
    poisoned = dataclasses.replace(
        prep, data=dataclasses.replace(prep.data, test=(X_test, poisoned_labels))
    )
    dirty = _search_rows(poisoned)
    assert [r["index"] for r in clean] == [r["index"] for r in dirty]
    assert [r["search"] for r in clean] == [r["search"] for r in dirty]
    assert [r["accuracy"] for r in clean] != [r["accuracy"] for r in dirty]  # poison took effect


def test_search_moves_by_balanced_swaps_and_marks_the_best_on_validation():
    cfg = config.load(None, [*SEARCH, "split.budget=18"])  # the whole space of [4, 4]
    prep = experiment.prepare(cfg)
    rows = _search_rows(prep)
    assert [r["combination"] for r in rows] == list(range(18))
    assert {r["index"] for r in rows} == set(range(18))  # each once: never evaluated twice
    space = Space([4, 4], 2)
    by_e = {r["combination"]: r for r in rows}
    assert any(r["search"]["restart"] for r in rows)  # local maxima: it had to restart
    for r in rows[1:]:
        if r["search"]["restart"]:
            continue
        parent = by_e[r["search"]["current"]]
        a, b = (space.canonical(x["split"]) for x in (parent, r))
        # one swap of two neurons = relabelling 2 neurons of one layer, up to the symmetry
        assert (
            min(
                sum(int(np.sum(x != y)) for x, y in zip(a, b_perm, strict=True))
                for b_perm in (b, tuple(1 - x for x in b))
            )
            == 2
        )
    val = [r["validation_accuracy"] for r in rows]
    best = rows[-1]["search"]["best"]
    assert val[best] == max(val) and best == val.index(max(val))


def test_search_resumes_after_a_kill_with_nothing_lost_or_twice(tmp_path):
    args = [x for s in [*SEARCH, "split.budget=11"] for x in ("--set", s)]
    out = tmp_path / "s.jsonl"
    assert enumerate.main([*args, "--out", str(out), "--quiet"]) == 0
    full = out.read_bytes().splitlines(True)
    # killed after 5 rows, mid-write of the sixth
    out.write_bytes(b"".join(full[:5]) + full[5][:40])
    assert enumerate.main([*args, "--out", str(out), "--quiet"]) == 0
    again = out.read_bytes().splitlines(True)
    assert len(again) == 11

    def strip(lines):
        return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]

    assert strip(again) == strip(full)
    # a file of another search (edited index) is refused, not silently continued
    bad = json.loads(full[2])
    bad["index"] = 99
    out.write_bytes(b"".join(full[:2]) + results.encode_row(bad))
    with pytest.raises(ValueError, match="another search"):
        enumerate.main([*args, "--out", str(out), "--quiet"])


def test_sample_shards_merge_into_the_unsharded_run(tmp_path):
    args = ["--set", "split.strategy=sample", "--set", "split.samples=7", "--quiet"]
    args += [x for s in SMALL for x in ("--set", s)]
    whole = tmp_path / "whole.jsonl"
    enumerate.main([*args, "--out", str(whole)])
    shards = [tmp_path / f"s{t}.jsonl" for t in range(3)]
    for t in range(3):
        enumerate.main([*args, "--shard", f"{t}/3", "--out", str(shards[t])])
    merged = tmp_path / "merged.jsonl"
    assert results.merge(shards, merged) == 7
    assert timeless_rows(merged) == timeless_rows(whole)


def test_a_search_on_two_ranks_writes_the_rows_of_one(tmp_path):
    args = [x for s in [*SEARCH, "split.budget=9"] for x in ("--set", s)] + ["--quiet"]
    one, two = driver_on_one_and_two_ranks(tmp_path, args)
    assert one == two


def test_best_so_far_is_the_pick_on_validation_of_every_prefix():
    rng = np.random.default_rng(1)
    val = rng.integers(0, 4, size=30) / 4  # many ties
    rows = [{"combination": e, "validation_accuracy": val[e]} for e in range(len(val))]
    picks = search.best_so_far(rows[::-1])  # any order in, evaluation order out
    for e, pick in zip(range(len(picks)), picks, strict=True):
        expected = pick_on_validation({c: val[c] for c in range(e + 1)})
        assert pick["combination"] == expected


def test_pick_ranks_locates_the_pick_in_the_known_space():
    test = np.array([0.5, 0.9, 0.7, 0.8])
    val = np.array([0.6, 0.8, 0.9, 0.7])
    # the search evaluated indices 3, 0, 2 (in that order): its picks are 3, 3, 2
    rows = [
        {"combination": e, "index": i, "validation_accuracy": val[i], "accuracy": test[i]}
        for e, i in zip(range(3), [3, 0, 2], strict=True)
    ]
    ranks = search.pick_ranks(rows, test, val, [0.25, 0.75, 1.0])  # b = 1, 3, 4 (not reached)
    assert [(r["evaluations"], r["index"]) for r in ranks] == [(1, 3), (3, 2)]
    assert [(r["rank_test"], r["rank_validation"]) for r in ranks] == [(2, 3), (3, 1)]
    assert all(r["same_as_enumeration"] for r in ranks)
