"""Results files: ``check`` counts rows as combinations x seeds, flags missing, extra and
duplicated rows; ``merge`` is a union of one config."""

from __future__ import annotations

import json

import pytest

from splitnet import results


def _rows(seeds, combinations, config_seeds=None, config_hash="h"):
    config = {"seed": seeds[0], "seeds": list(config_seeds or [])}
    return [
        {"seed": s, "combination": c, "config_hash": config_hash, "config": config}
        for s in seeds
        for c in combinations
    ]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_complete_multi_seed_file_passes(tmp_path, capsys):
    path = _write(tmp_path / "a.jsonl", _rows([0, 1, 2], range(5), config_seeds=[0, 1, 2]))
    assert results.main(["check", str(path), "--expected", "5"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s == {
        "rows": 15,
        "seeds": [0, 1, 2],
        "combinations": 5,
        "distinct_rows": 15,
        "duplicates": 0,
        "expected_rows": 15,
        "missing": 0,
        "extra": 0,
    }


def test_a_missing_seed_counts_against_the_config_seeds(tmp_path, capsys):
    # seed 2 never ran: its 5 rows are missing although every present seed is complete
    path = _write(tmp_path / "a.jsonl", _rows([0, 1], range(5), config_seeds=[0, 1, 2]))
    assert results.main(["check", str(path), "--expected", "5"]) == 1
    out, err = capsys.readouterr()
    s = json.loads(out)
    assert s["missing"] == 5 and s["expected_rows"] == 15 and s["extra"] == 0
    assert "10 rows: 5 combinations x 3 seed(s)" in err and "5 missing" in err


def test_extra_rows_fail_the_check(tmp_path, capsys):
    path = _write(tmp_path / "a.jsonl", _rows([0], range(7)))
    assert results.main(["check", str(path), "--expected", "5"]) == 1
    s = json.loads(capsys.readouterr().out)
    assert s["extra"] == 2 and s["missing"] == 0


def test_duplicates_fail_the_check(tmp_path, capsys):
    rows = _rows([0], range(3))
    path = _write(tmp_path / "a.jsonl", rows + rows[:1])
    assert results.main(["check", str(path)]) == 1
    assert json.loads(capsys.readouterr().out)["duplicates"] == 1


def test_merge_is_a_sorted_union_of_one_config(tmp_path):
    a = _write(tmp_path / "a.jsonl", _rows([0], [3, 1]))
    b = _write(tmp_path / "b.jsonl", _rows([0], [1, 0, 2]))
    out = tmp_path / "all.jsonl"
    assert results.merge([a, b], out) == 4
    assert [r["combination"] for r in results.read_rows(out)] == [0, 1, 2, 3]
    other = _write(tmp_path / "c.jsonl", _rows([0], [9], config_hash="other"))
    with pytest.raises(ValueError, match="mix 2 configs"):
        results.merge([a, other], tmp_path / "bad.jsonl")
