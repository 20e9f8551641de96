"""Every study script refuses a bad config with one line and exit 2, and writes under results/
of the directory it runs in unless ``--figures`` asks for the committed figures/; a resumable
study skips what it recorded and refuses a rows file of another config."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, run_study

from splitnet.study import config_hash, load_study

STUDIES = sorted(p.parent.name for p in (REPO / "experiments").glob("*/run.py"))


def test_every_study_is_a_folder_with_config_and_script():
    assert STUDIES == [
        "lightrnn",
        "pruning",
        "race",
        "resplit",
        "sampling",
        "separable",
        "sparsification",
    ]
    for name in STUDIES:
        assert (REPO / "experiments" / name / "config.toml").exists()
        doc = (REPO / "experiments" / name / "run.py").read_text()
        assert f"python experiments/{name}/run.py experiments/{name}/config.toml" in doc


# every study once with an unknown key; the shared loader's other refusals once each
# (a subprocess per case: each imports torch, so the list stays short)
@pytest.mark.parametrize(
    "name, text, word",
    [
        *((name, "no_such_key = 1\n", "no_such_key") for name in STUDIES),
        ("resplit", "this is [not toml", "not valid TOML"),
        ("pruning", None, "cannot read"),
    ],
)
def test_a_bad_config_is_one_line_and_exit_2(tmp_path, name, text, word):
    bad = tmp_path / "bad.toml"
    if text is not None:
        bad.write_text(text)
    proc = run_study(name, [str(bad)], tmp_path, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert word in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.*"))


def test_the_separable_study_writes_results_not_figures(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text("seeds = [0]\nepochs = 1\nchannels = [4, 8]\ndense = 16\n")
    proc = run_study("separable", [str(cfg)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "results" / "separable"
    assert {p.name for p in out.iterdir()} == {
        "separable.jsonl",
        "separable.jsonl.config.json",  # the results sidecar: the study config, once
        "separable.jsonl.lock",  # one writer per results file
        "separable.png",
        "separable_table.md",
    }
    assert not (tmp_path / "figures").exists()
    again = run_study("separable", [str(cfg), "--plot-only", "--figures"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "figures" / "separable.png").exists()


@pytest.mark.parametrize(
    "name, text, word",
    [
        ("separable", 'epochs = "8"\n', "epochs='8'"),
        ("lightrnn", "models = 3\n", "models=3"),
        ("pruning", "fractions = 0.5\n", "fractions=0.5"),
        ("sparsification", "digits = 1\n", "digits=1"),
    ],
)
def test_a_value_of_the_wrong_type_is_one_line_and_exit_2(tmp_path, name, text, word):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    proc = run_study(name, [str(bad)], tmp_path, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert word in proc.stderr and "must be" in proc.stderr and "Traceback" not in proc.stderr


def test_loader_types(tmp_path):
    defaults = {"lr": 0.1, "epochs": 2, "flag": False, "name": "a", "xs": [1], "t": {}}
    path = tmp_path / "c.toml"
    path.write_text('lr = 1\nepochs = 3\nflag = true\nname = "b"\nxs = []\n[t]\nk = 1\n')
    assert load_study(path, defaults) == {
        "lr": 1,
        "epochs": 3,
        "flag": True,
        "name": "b",
        "xs": [],
        "t": {"k": 1},
    }
    for text, word in (("epochs = 2.5\n", "an integer"), ("flag = 1\n", "true or false")):
        path.write_text(text)
        with pytest.raises(ValueError, match=word):
            load_study(path, defaults)
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1}) != config_hash({"a": 2})


def test_the_separable_study_resumes_and_refuses_another_config(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text("seeds = [0, 1]\nepochs = 1\nchannels = [2, 4]\ndense = 8\n")
    rows = tmp_path / "results" / "separable" / "separable.jsonl"
    first = run_study("separable", [str(cfg)], tmp_path)
    assert first.returncode == 0, first.stderr
    lines = rows.read_text().splitlines()
    assert len(lines) == 4 and first.stdout.count("seed=") == 4
    rows.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # killed mid-row
    again = run_study("separable", [str(cfg)], tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("seed=") == 1  # only the cell whose row was torn
    relines = rows.read_text().splitlines()
    assert relines[:3] == lines[:3] and len(relines) == 4
    keep = [json.loads(x) for x in relines]
    assert [r["test_accuracy"] for r in keep] == [json.loads(x)["test_accuracy"] for x in lines]
    cfg.write_text("seeds = [0, 1]\nepochs = 2\nchannels = [2, 4]\ndense = 8\n")
    other = run_study("separable", [str(cfg)], tmp_path)
    assert other.returncode == 2 and "rows of another config" in other.stderr, other.stderr
    assert rows.read_text().splitlines() == relines


RESPLIT_BOTH = """\
seeds = [0]
groups = [2]
norms = ["none", "batch"]
[config.data]
name = "digits"
[config.model]
hidden = [6, 6]
[config.train]
pretrain_epochs = 2
piece_epochs = 1
[rounds]
resplit_every = [10]
strategies = ["random"]
recombination_variants = ["straight"]
stitch_steps = 5
"""


def test_the_resplit_study_runs_both_architectures_and_resumes(tmp_path):
    cfg = tmp_path / "r.toml"
    cfg.write_text(RESPLIT_BOTH)
    proc = run_study("resplit", [str(cfg), "--skip-independence"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "results" / "resplit"
    rows = [json.loads(x) for x in (out / "resplit.jsonl").read_text().splitlines()]
    assert {r["norm"] for r in rows} == {"none", "batch"}
    for norm in ("none", "batch"):  # ref: 3 rows, rounds: 2 (+ stitch), recombination: 4
        assert len([r for r in rows if r["norm"] == norm]) == 3 + 2 + 4
    batch = [r for r in rows if r["norm"] == "batch"]
    assert all(r["config"]["model"]["norm"] == "batch" for r in batch)
    assert all(r["config"]["train"]["engine"] == "loop" for r in batch)
    text = (out / "resplit_table.md").read_text()
    assert "# BatchNorm-free MLP" in text and "# IST's BatchNorm MLP" in text
    again = run_study("resplit", [str(cfg), "--skip-independence"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert "norm=" not in again.stdout  # every cell was recorded: nothing retrained
    assert len((out / "resplit.jsonl").read_text().splitlines()) == len(rows)
    cfg.write_text(RESPLIT_BOTH.replace('"batch"]', '"layer"]'))
    bad = run_study("resplit", [str(cfg)], tmp_path, timeout=120)
    assert bad.returncode == 2 and "'layer' is not one of none, batch" in bad.stderr, bad.stderr
