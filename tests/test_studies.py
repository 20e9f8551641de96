"""Every study script refuses a bad config with one line and exit 2, and writes under results/
of the directory it runs in unless ``--figures`` asks for the committed figures/; a resumable
study skips what it recorded and refuses a rows file of another config."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from conftest import REPO, load_study_script, run_study

from splitnet.study import config_hash, load_config, load_study
from splitnet.validation import Each, Interval

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


def refusal(name: str, argv: list[str], capsys) -> str:
    """The one line a study prints when it exits 2 on ``argv`` (in this process)."""
    with pytest.raises(SystemExit) as e:
        load_study_script(name).main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{name}: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "name, text, word",
    [
        *((name, "no_such_key = 1\n", "no_such_key") for name in STUDIES),
        ("resplit", "this is [not toml", "not valid TOML"),
        ("pruning", None, "cannot read"),
        ("separable", 'epochs = "8"\n', "epochs must be of type int, got '8'"),
        ("lightrnn", "models = 3\n", "models must be a list of strings, got 3"),
        ("pruning", "fractions = 0.5\n", "fractions must be a list of numbers, got 0.5"),
        ("pruning", "fractions = [0.5, 1.0]\n", "fractions[1]=1.0 must lie in [0, 1)"),
        ("sampling", "wide_hidden = [32]\n", "wide_hidden must be a list of lists of integers"),
        ("sampling", "alpha = 1.5\n", "alpha=1.5 must lie in (0, 1)"),
        ("separable", "channels = [4]\n", "channels=[4] must be two positive integers"),
        ("resplit", "[rounds]\nresplit_every = [0]\n", "rounds.resplit_every[0]=0 must be >= 1"),
        ("resplit", "[rounds]\ncolour = 1\n", "unknown key rounds.colour"),
        ("resplit", 'norms = ["layer"]\n', "norms[0]='layer' is not one of none, batch"),
        ("sparsification", "digits = 1\n", "[digits] must be a table, got 1"),
        ("sparsification", "ranks = 0\n", "ranks=0 must be >= 1"),
        ("sparsification", "[mnist]\nlr = 0\n", "mnist.lr=0.0 must be a finite number > 0"),
    ],
)
def test_a_bad_config_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, name, text, word):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.toml"
    if text is not None:
        bad.write_text(text)
    assert word in refusal(name, [str(bad)], capsys)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.*"))


@pytest.mark.parametrize("name", ["lightrnn", "pruning", "resplit", "sampling", "separable"])
def test_the_committed_config_loads(tmp_path, monkeypatch, capsys, name):
    """The committed TOML passes the study's checks: --plot-only then stops only for want of
    rows (nothing trains)."""
    monkeypatch.chdir(tmp_path)
    config = str(REPO / "experiments" / name / "config.toml")
    assert "no rows in" in refusal(name, [config, "--plot-only"], capsys)


def test_a_bad_config_exits_2_without_a_traceback_end_to_end(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = 0\n")
    proc = run_study("separable", [str(bad)], tmp_path, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr == "separable: error: epochs=0 must be >= 1\n"


@dataclass(frozen=True)
class Inner:
    steps: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class Outer:
    lr: float = 0.1
    names: tuple[str, ...] = ("a",)
    grid: tuple[tuple[int, ...], ...] = ((8, 8),)
    inner: Inner = field(default_factory=Inner)


def test_load_config_builds_typed_lists_and_nested_tables(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('lr = 1\nnames = ["b", "c"]\ngrid = [[4, 4], [2]]\n[inner]\nsteps = [3]\n')
    table = {"grid": Each(Each(Interval(1)))}
    cfg = load_config(path, Outer, table)
    assert cfg == Outer(1.0, ("b", "c"), ((4, 4), (2,)), Inner((3,)))
    for text, word in (
        ("nope = 1\n", r"unknown key nope \(known: lr"),  # top level: no leading dot
        ("[inner]\nnope = 1\n", r"unknown key inner.nope \(known: steps"),
        ("names = [1]\n", r"names must be a list of strings, got \[1\]"),
        ("grid = [4]\n", r"grid must be a list of lists of integers, got \[4\]"),
        ("[inner]\nsteps = [1.5]\n", r"inner.steps must be a list of integers, got \[1.5\]"),
        ("grid = [[1], [0]]\n", r"grid\[1\]\[0\]=0 must be >= 1"),
    ):
        path.write_text(text)
        with pytest.raises(ValueError, match=word):
            load_config(path, Outer, table)


def test_the_dict_loader_checks_types_against_the_defaults(tmp_path):
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


def test_the_separable_study_writes_results_not_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "s.toml"
    cfg.write_text("seeds = [0]\nepochs = 1\nchannels = [4, 8]\ndense = 16\n")
    separable = load_study_script("separable")
    assert separable.main([str(cfg)]) == 0
    out = tmp_path / "results" / "separable"
    assert {p.name for p in out.iterdir()} == {
        "separable.jsonl",
        "separable.jsonl.config.json",  # the results sidecar: the study config, once
        "separable.jsonl.lock",  # one writer per results file
        "separable.png",
        "separable_table.md",
    }
    assert not (tmp_path / "figures").exists()
    assert separable.main([str(cfg), "--plot-only", "--figures"]) == 0
    assert (tmp_path / "figures" / "separable.png").exists()


def test_the_separable_study_resumes_and_refuses_another_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    separable = load_study_script("separable")
    cfg = tmp_path / "s.toml"
    cfg.write_text("seeds = [0, 1]\nepochs = 1\nchannels = [2, 4]\ndense = 8\n")
    rows = tmp_path / "results" / "separable" / "separable.jsonl"
    assert separable.main([str(cfg)]) == 0
    lines = rows.read_text().splitlines()
    assert len(lines) == 4 and capsys.readouterr().out.count("seed=") == 4
    rows.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # killed mid-row
    assert separable.main([str(cfg)]) == 0
    assert capsys.readouterr().out.count("seed=") == 1  # only the cell whose row was torn
    relines = rows.read_text().splitlines()
    assert relines[:3] == lines[:3] and len(relines) == 4
    keep = [json.loads(x) for x in relines]
    assert [r["test_accuracy"] for r in keep] == [json.loads(x)["test_accuracy"] for x in lines]
    cfg.write_text("seeds = [0, 1]\nepochs = 2\nchannels = [2, 4]\ndense = 8\n")
    assert "rows of another config" in refusal("separable", [str(cfg)], capsys)
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


def test_the_resplit_study_runs_both_architectures_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    resplit = load_study_script("resplit")
    cfg = tmp_path / "r.toml"
    cfg.write_text(RESPLIT_BOTH)
    assert resplit.main([str(cfg), "--skip-independence"]) == 0
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
    capsys.readouterr()
    assert resplit.main([str(cfg), "--skip-independence"]) == 0
    assert "norm=" not in capsys.readouterr().out  # every cell was recorded: nothing retrained
    assert len((out / "resplit.jsonl").read_text().splitlines()) == len(rows)
    cfg.write_text(RESPLIT_BOTH.replace("piece_epochs = 1", "piece_epochs = 2"))
    err = refusal("resplit", [str(cfg), "--skip-independence"], capsys)
    assert "rows of another config" in err


def test_the_sparsification_datasets_override_is_checked(tmp_path, monkeypatch, capsys):
    """``--datasets`` replaces the config's list and is checked like it."""
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "s.toml"
    cfg.write_text('compressors = ["none"]\n')
    err = refusal("sparsification", [str(cfg), "--datasets", "digits,cifar"], capsys)
    assert "datasets[1]='cifar' is not one of digits, mnist, idx" in err
    cfg.write_text('compressors = ["none"]\n[idx]\ndata_path = "nowhere.npz"\n')
    err = refusal("sparsification", [str(cfg), "--datasets", "idx", "--plot-only"], capsys)
    assert "idx.dataset='idx' needs an existing idx.data_path, got 'nowhere.npz'" in err
