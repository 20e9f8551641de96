"""The statistics of rows in one place: reaching the baseline, the pick on validation (ties to
the lowest index), Spearman over the defined pairs, the DKW band of every order statistic, and
the one markdown table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from splitnet import analysis


def test_reaching_the_baseline_is_at_or_above_it():
    assert analysis.reaches_baseline([0.69, 0.7, 0.71], 0.7).tolist() == [False, True, True]


def test_the_pick_on_validation_breaks_ties_to_the_lowest_index():
    assert analysis.pick_on_validation({5: 0.9, 2: 0.9, 7: 0.8}) == 2


def test_spearman_skips_nan_pairs_and_is_undefined_for_a_constant():
    rho, p = analysis.spearman([1, 2, np.nan, 3, 4], [1, 3, 9, 2, 4])
    assert (rho, p) == pytest.approx(tuple(stats.spearmanr([1, 2, 3, 4], [1, 3, 2, 4])))
    assert all(math.isnan(v) for v in analysis.spearman([1, 1, 1], [1, 2, 3]))


def test_the_drawn_band_and_the_tabled_bands_agree():
    x = np.sort(np.random.default_rng(0).random(40))
    qs = (0.05, 0.25, 0.5, 0.75, 0.95)
    lower, upper = analysis.quantile_band(x, 0.05, qs)
    for b, lo, hi in zip(analysis.quantile_bands(x, qs, 0.05), lower, upper, strict=True):
        assert b["lower"] in (None, lo) and b["upper"] in (None, hi)
        assert (b["lower"] is None) == (lo == x[0] and b["q"] - analysis.dkw_epsilon(40) <= 0)


def test_markdown_table():
    text = analysis.markdown_table(["method", "accuracy"], [["dp", "0.91"], ["split", 0.9]], "lr")
    assert text == "| method | accuracy |\n| --- | ---: |\n| dp | 0.91 |\n| split | 0.9 |"
    with pytest.raises(ValueError, match="a row of 1 cells"):
        analysis.markdown_table(["a", "b"], [["x"]])


def test_band_coverage_judges_each_sample_as_band_contains_does():
    rng = np.random.default_rng(0)
    population = rng.normal(size=300)
    samples = [rng.choice(300, 40, replace=False) for _ in range(25)]
    cov = analysis.band_coverage(population, samples, 0.2)
    assert cov["eps"] == analysis.dkw_epsilon(40, 0.2)
    held = [analysis.band_contains(population[s], population, 0.2) for s in samples]
    assert cov["covered"] == np.mean(held) and 0 < cov["covered"] <= 1
    assert cov["distances"] == [analysis.sup_distance(population[s], population) for s in samples]
    with pytest.raises(ValueError, match=r"samples of sizes \[3, 4\]"):
        analysis.band_coverage(population, [[0, 1, 2], [0, 1, 2, 3]])
