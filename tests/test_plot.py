"""The plot reads rows only and states the finding in numbers."""

import json

import pytest
from scipy import stats

from splitnet.analysis import accuracy_summary, mean_ci
from splitnet.plot import main


def fake_rows(n=30):
    rows = []
    for i in range(n):
        acc = 0.5 + 0.01 * i
        rows.append(
            {
                "combination": i,
                "accuracy": acc,
                "baseline_accuracy": 0.7,
                "pretrained_accuracy": 0.4,
                "piece_accuracies": [acc - 0.1, acc - 0.2],
                "cut_fraction": 1.0 - 0.01 * i,
                "seed": 0,
                "config": {
                    "data": {"name": "digits"},
                    "model": {"hidden": [4, 4]},
                    "split": {"groups": 2, "strategy": "exhaustive", "variant": "straight"},
                },
            }
        )
    return rows


def test_summary_numbers():
    s = accuracy_summary(fake_rows())
    assert s["best"] == pytest.approx(0.79) and s["worst"] == pytest.approx(0.5)
    assert s["reached_baseline"] == 10  # 0.70 .. 0.79
    assert s["spearman_cut_vs_accuracy"] == pytest.approx(-1.0)


def test_cli_writes_a_figure(tmp_path, capsys):
    res = tmp_path / "r.jsonl"
    res.write_text("".join(json.dumps(r) + "\n" for r in fake_rows()))
    out = tmp_path / "fig.png"
    assert main([str(res), "-o", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert json.loads(capsys.readouterr().out)["combinations"] == 30


def test_empty_results_are_an_error(tmp_path, capsys):
    res = tmp_path / "empty.jsonl"
    res.write_text("")
    assert main([str(res), "-o", str(tmp_path / "x.png")]) == 2
    assert "no rows" in capsys.readouterr().err


def test_mean_ci_is_the_student_t_interval():
    m, ci = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and ci == pytest.approx(4.302653 * 1.0 / 3**0.5, rel=1e-5)
    assert mean_ci([0.5]) == (0.5, 0.0)
    v = [0.61, 0.64, 0.58, 0.66]
    lo, hi = stats.t.interval(0.95, 3, loc=sum(v) / 4, scale=stats.sem(v))
    assert mean_ci(v)[1] == pytest.approx((hi - lo) / 2)
