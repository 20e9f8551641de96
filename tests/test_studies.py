"""Every study script refuses a bad config with one line and exit 2, and writes under results/
of the directory it runs in unless ``--figures`` asks for the committed figures/."""

from __future__ import annotations

import pytest
from conftest import REPO, run_study

STUDIES = sorted(p.parent.name for p in (REPO / "experiments").glob("*/run.py"))


def test_every_study_is_a_folder_with_config_and_script():
    assert STUDIES == ["lightrnn", "pruning", "resplit", "separable", "sparsification"]
    for name in STUDIES:
        assert (REPO / "experiments" / name / "config.toml").exists()
        doc = (REPO / "experiments" / name / "run.py").read_text()
        assert f"python experiments/{name}/run.py experiments/{name}/config.toml" in doc


@pytest.mark.parametrize("name", STUDIES)
@pytest.mark.parametrize(
    "text, word",
    [
        ("no_such_key = 1\n", "no_such_key"),
        ("this is [not toml", "not valid TOML"),
        (None, "cannot read"),
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
        "separable.png",
        "separable_table.md",
    }
    assert not (tmp_path / "figures").exists()
    again = run_study("separable", [str(cfg), "--plot-only", "--figures"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "figures" / "separable.png").exists()
