"""The one results writer (``results.open_results``) for any row key, and its refusals: a
sidecar is verified whenever read, locks and sidecars belong to the resolved file, a FIFO is
refused at once, a doubled key is refused, a resume skips what is recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO

from splitnet import config, plot, results
from splitnet import enumerate as driver

RACE = results.Layout(key=("label", "seed", "step"))
CFG = {"train": {"lr": 0.05, "epochs": 2}, "race": {"methods": ["dp", "split"]}}


def _rows(label: str, steps: range) -> list[dict]:
    return [{"label": label, "seed": 0, "step": s, "test_accuracy": 0.5 + s / 100} for s in steps]


def test_one_digest_for_every_config():
    cfg = config.Config()
    assert results.config_hash(cfg.to_dict()) == cfg.hash()
    assert results.config_hash({"a": 1, "b": 2}) == results.config_hash({"b": 2, "a": 1})
    assert results.config_hash({"a": 1}) != results.config_hash({"a": 2})


def test_keyed_rows_resume_and_a_doubled_key_is_refused(tmp_path):
    path = tmp_path / "race.jsonl"
    with results.open_results(path, CFG, RACE) as out:
        assert out.done == set() and out.rows == []
        out.write(_rows("dp", range(3)))
        with pytest.raises(ValueError, match=r"already holds the row label 'dp', seed 0, step 2"):
            out.write(_rows("dp", range(2, 4)))  # nothing of it is written
    lines = path.read_bytes().splitlines()
    assert len(lines) == 3 and all(json.loads(x)["config_hash"] for x in lines)
    side = json.loads(results.sidecar_path(path).read_text())
    assert side == {"config": CFG, "config_hash": results.config_hash(CFG), "row": {}}

    with results.open_results(path, CFG, RACE) as out:  # a resume: the recorded keys
        assert out.done == {("dp", 0, s) for s in range(3)}
        assert [r["step"] for r in out.rows] == [0, 1, 2]
        out.write(_rows("split", range(2)))
    assert [r["label"] for r in results.read_rows(path, RACE)] == ["dp"] * 3 + ["split"] * 2

    path.write_bytes(path.read_bytes() + lines[0] + b"\n")  # two writers doubled a row
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"1 duplicated row\(s\) \(first: label 'dp', seed 0"):
        results.open_results(path, CFG, RACE)
    assert path.read_bytes() == before


def test_another_config_new_and_replace(tmp_path):
    path = tmp_path / "r.jsonl"
    with results.open_results(path, CFG, RACE) as out:
        out.write(_rows("dp", range(2)))
    other = {**CFG, "train": {"lr": 0.07, "epochs": 2}}
    with pytest.raises(ValueError, match="rows of another config"):
        results.open_results(path, other, RACE)
    with pytest.raises(ValueError, match="already holds 2 row"):
        results.open_results(path, other, RACE, mode="new")
    with results.open_results(path, other, RACE, mode="replace") as out:
        assert out.done == set()
    assert path.read_bytes() == b""
    assert json.loads(results.sidecar_path(path).read_text())["config"] == other
    path.write_text("my notes\n")
    with pytest.raises(ValueError, match="not valid JSON"):  # never a foreign file
        results.open_results(path, other, RACE, mode="replace")
    assert path.read_text() == "my notes\n"


def test_an_edited_sidecar_is_refused_and_an_untouched_one_accepted(tmp_path):
    path = tmp_path / "r.jsonl"
    with results.open_results(path, CFG, RACE) as out:
        out.write(_rows("dp", range(2)))
    side = results.sidecar_path(path)
    text = side.read_text()
    with results.open_results(path, CFG, RACE) as out:  # untouched: resumes
        assert len(out.done) == 2
    assert len(results.read_rows(path, RACE)) == 2
    side.write_text(text.replace("0.05", "0.07"))
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"changed after .* at 'train.lr' \(0.07 there, 0.05 here"):
        results.open_results(path, CFG, RACE)
    with pytest.raises(ValueError, match="does not hash to its config_hash"):
        results.read_rows(path, RACE)
    assert path.read_bytes() == before


def test_a_symlink_and_its_target_share_one_lock_and_one_sidecar(tmp_path):
    target = tmp_path / "data" / "r.jsonl"
    target.parent.mkdir()
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    first = results.open_results(target, CFG, RACE)
    try:
        with pytest.raises(ValueError, match="is being written by pid"):
            results.open_results(link, CFG, RACE)
    finally:
        first.close()
    with results.open_results(link, CFG, RACE) as out:  # through the link: the target's file
        out.write(_rows("dp", range(1)))
        assert out.path == target.resolve()
    assert len(target.read_bytes().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "link.jsonl"]
    assert sorted(p.name for p in target.parent.iterdir()) == [
        "r.jsonl",
        "r.jsonl.config.json",
        "r.jsonl.lock",
    ]


def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    code = (
        "import sys; from splitnet import results\n"
        "try:\n    results.open_results(sys.argv[1], {}, results.Layout(('step',)))\n"
        "except ValueError as e:\n    print(e); sys.exit(2)\n"
    )
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code, str(fifo)],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert proc.returncode == 2 and "is a FIFO" in proc.stdout, proc
    assert time.monotonic() - t0 < 10


TINY = ["--set", "model.hidden=[4,4]", "--set", "train.piece_epochs=1", "--quiet"]


def test_the_driver_refuses_an_edited_sidecar_naming_the_key(tmp_path, capsys):
    out = tmp_path / "d.jsonl"
    assert driver.main([*TINY, "--stop", "2", "--out", str(out)]) == 0
    assert driver.main([*TINY, "--stop", "3", "--out", str(out)]) == 0  # untouched: resumes
    side = results.sidecar_path(out)
    side.write_text(side.read_text().replace('"lr": 0.05', '"lr": 0.07'))
    before = out.read_bytes()
    capsys.readouterr()
    assert driver.main([*TINY, "--stop", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "d.jsonl.config.json" in err and "'train.lr' (0.07 there, 0.05 here)" in err, err
    assert out.read_bytes() == before
    assert results.main(["summary", str(out)]) == 2
    assert plot.main([str(out), "-o", str(tmp_path / "f.png")]) == 2
    assert "does not hash to its config_hash" in capsys.readouterr().err
