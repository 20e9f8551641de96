"""Results files that scale: the config once per file in a sidecar, compact rows, and every
reader (read_rows, resume, merge, check, plot, summary, pandas) on both the new layout and the
layout written before it (the config in every row)."""

from __future__ import annotations

import json

import pytest

from splitnet import config, experiment, plot, results
from splitnet import enumerate as driver

TINY = ["--set", "model.hidden=[4,4]", "--set", "train.piece_epochs=1", "--quiet"]


def _whole(rows: list[dict]) -> list[dict]:
    """Rows without what a file does not keep exactly (timing, derivable seeds)."""
    return [{k: v for k, v in r.items() if k not in ("seconds", "piece_seeds")} for r in rows]


def test_a_default_row_is_at_most_400_bytes_and_the_config_is_in_the_sidecar(tmp_path):
    out = tmp_path / "d.jsonl"
    assert driver.main(["--quiet", "--stop", "300", "--out", str(out)]) == 0
    lines = out.read_bytes().splitlines()
    assert max(len(line) + 1 for line in lines) <= 400
    raw = json.loads(lines[0])
    assert "config" not in raw and "strategy" not in raw
    meta = json.loads(results.sidecar_path(out).read_text())
    cfg = config.Config()
    assert meta["config_hash"] == raw["config_hash"] == cfg.hash()
    assert meta["config"] == cfg.to_dict()
    # read_rows gives the rows make_row made (timing and derivable seeds aside)
    prep = experiment.prepare(cfg)
    made = experiment.run_combinations(prep, [0, 7])
    read = results.read_rows(out)
    assert _whole([read[0], read[7]]) == _whole(made)


def _old_layout(path, rows: list[dict]) -> None:
    """A file as the version before the sidecar wrote it: whole rows, no sidecar."""
    path.write_bytes(b"".join(results.encode_row(r) for r in rows))


def test_an_old_file_resumes_reads_merges_and_plots(tmp_path, capsys):
    new = tmp_path / "new.jsonl"
    assert driver.main([*TINY, "--out", str(new)]) == 0
    full = results.read_rows(new)
    old = tmp_path / "old.jsonl"
    _old_layout(old, full[:6])
    assert results.read_rows(old) == full[:6]  # read as they are
    assert driver.main([*TINY, "--out", str(old)]) == 0  # resumes: 12 compact rows appended
    mixed = results.read_rows(old)
    assert _whole(mixed) == _whole(full)
    assert results.main(["check", str(old), "--expected", "18"]) == 0
    # merge of an old-layout shard and a new one: today's layout out
    shard = tmp_path / "shard.jsonl"
    _old_layout(shard, full[:9])
    merged = tmp_path / "merged.jsonl"
    assert results.merge([shard, new], merged) == 18
    assert results.sidecar_path(merged).exists()
    assert "config" not in json.loads(merged.read_bytes().splitlines()[0])
    assert _whole(results.read_rows(merged)) == _whole(full)
    # plot and summary read both layouts alike
    s_old = plot.plot(results.read_rows(shard), tmp_path / "a.png")
    s_new = plot.plot(results.read_rows(new)[:9], tmp_path / "b.png")
    assert s_old == s_new
    capsys.readouterr()
    assert results.main(["summary", str(merged)]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "full enumeration"


def test_merge_refuses_shards_of_two_configs_by_their_sidecars(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert driver.main([*TINY, "--stop", "2", "--out", str(a)]) == 0
    assert driver.main([*TINY, "--stop", "2", "--set", "seed=1", "--out", str(b)]) == 0
    with pytest.raises(ValueError, match="mix 2 configs"):
        results.merge([a, b], tmp_path / "m.jsonl")


def test_a_sidecar_of_another_config_is_refused_and_a_stale_one_replaced(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert driver.main([*TINY, "--stop", "2", "--out", str(out)]) == 0
    # rows there: another config is refused, naming the sidecar
    assert driver.main([*TINY, "--stop", "2", "--set", "seed=3", "--out", str(out)]) == 2
    assert "config_hash" in capsys.readouterr().err
    # the rows deleted, the sidecar left behind: it is stale, the new run replaces it
    out.unlink()
    assert driver.main([*TINY, "--stop", "2", "--set", "seed=3", "--out", str(out)]) == 0
    assert json.loads(results.sidecar_path(out).read_text())["config"]["seed"] == 3


def test_pandas_reads_one_row_per_combination(tmp_path):
    pd = pytest.importorskip("pandas")
    out = tmp_path / "r.jsonl"
    assert driver.main([*TINY, "--out", str(out)]) == 0
    df = pd.read_json(out, lines=True)  # the README's one-liner
    assert len(df) == 18 and sorted(df["combination"]) == list(range(18))
    # (pandas parses floats fast, not round-trip: precise_float=True gives them exactly)
    assert df["accuracy"].tolist() == pytest.approx([r["accuracy"] for r in results.read_rows(out)])
