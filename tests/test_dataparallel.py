"""parallel.dp and parallel.dataparallel: sharding, dropout masks, DPConfig and its command line,
a 1-rank and a 2-rank run, the sparsification study's table and config checks."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from conftest import load_study_script, run_mpi

from splitnet.parallel import dataparallel as program
from splitnet.parallel import dp, sparsification
from splitnet.parallel.dataparallel import DPConfig
from splitnet.study import load_config


def load(toml) -> sparsification.SparsificationConfig:
    """The sparsification study's config as its script loads it (checked, ``--datasets`` unset)."""
    cfg = load_config(toml, sparsification.SparsificationConfig, sparsification.CONSTRAINTS)
    return sparsification.with_datasets(cfg, "", toml.parent / "results")


REQUIRED = {"iteration", "threshold", "fraction_sent", "bytes_sent", "dense_bytes", "train_loss"}
TINY = ["--channels", "2,3", "--dense", "8", "--batch-size", "8", "--quiet"]


def test_help_gives_every_default_and_the_mpiexec_command(capsys):
    assert program.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "mpiexec -n N python -m mpi4py -m splitnet.parallel.dataparallel" in text
    actions = program.build_parser()._actions
    assert {a.dest for a in actions} - {"help"} == {f.name for f in dataclasses.fields(DPConfig)}
    for action in actions:
        if action.dest == "help":
            continue
        assert action.help, action.dest
        shown = "none" if action.default == "" else str(action.default)
        assert f"{action.help} (default: {shown}" in text or (
            action.default == "" and f"(default: {shown}" in action.help
        ), action.dest


def test_out_is_checked_before_any_training(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    for out, needle in (
        (tmp_path, "is a directory"),
        (tmp_path / "a_file" / "r.jsonl", "Not a directory"),
    ):
        assert program.main(TINY + ["--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert repr(str(out)) in err and needle in err, err
    made = program.open_out(DPConfig(out=str(tmp_path / "new" / "deeper" / "r.jsonl")))
    made.close()  # folders that can be created are


def test_out_goes_through_the_one_results_path(tmp_path, capsys):
    """A finished run is never lost to a rerun (refused without --overwrite, replaced with it),
    a file that is not data-parallel rows is never emptied, and the rows carry the hash of the
    run's options in a sidecar."""
    from splitnet import results

    out = tmp_path / "r.jsonl"
    assert program.main(TINY + ["--out", str(out)]) == 0
    rows = results.read_rows(out, program.ROWS)
    assert rows[-1]["summary"] and len({r["config_hash"] for r in rows}) == 1
    assert results.read_sidecar(out)["config_hash"] == rows[0]["config_hash"]
    before = out.read_bytes()
    assert program.main(TINY + ["--out", str(out)]) == 2
    assert "already holds" in capsys.readouterr().err and out.read_bytes() == before
    assert program.main(TINY + ["--out", str(out), "--overwrite"]) == 0
    notes = tmp_path / "notes.jsonl"
    notes.write_text("my notes\n")
    assert program.main(TINY + ["--out", str(notes), "--overwrite"]) == 2
    assert notes.read_text() == "my notes\n"


def test_dpconfig_refuses_bad_values_naming_them(tmp_path):
    assert program.from_dict({"iterations": 3, "channels": [2, 3]}) == DPConfig(
        iterations=3, channels=(2, 3)
    )
    for raw, needle in (
        ({"iterations": 0}, "iterations=0 must be >= 1"),
        ({"lr": 0}, "lr=0.0 must be a finite number > 0"),
        ({"dropout": 1}, "dropout=1.0 must lie in [0, 1)"),
        ({"compressor": "std3"}, "compressor='std3' is not one of none, std1"),
        ({"channels": [4]}, "channels=[4] must be two integers"),
        ({"channels": [4, 0]}, "channels[1]=0 must be >= 1"),
        ({"snapshot_iterations": [0, -1]}, "snapshot_iterations[1]=-1 must be >= 0"),
        ({"allreduce": "ring"}, "allreduce='ring' applies to compressor='none' only"),
        ({"dataset": "idx", "data_path": "nowhere"}, "needs an existing data_path"),
        ({"channels": "16,32"}, "channels must be a list of integers, got '16,32'"),
        ({"iterations": 2.5}, "iterations must be of type int, got 2.5"),
        ({"learning_rate": 0.1}, "learning_rate (known: dataset, data_path,"),
        ({"out": str(tmp_path)}, "is a directory"),
    ):
        with pytest.raises(ValueError, match=re.escape(needle)):
            program.from_dict(raw)
    # a prefix names the table the values came from (the study's [digits])
    with pytest.raises(ValueError, match=re.escape("digits.iterations=0 must be >= 1")):
        program.from_dict({"iterations": 0}, "digits")


def test_the_command_line_is_the_config():
    cfg = DPConfig(compressor="none", residual=False, allreduce="ring", channels=(2, 3), lr=0.25)
    argv = program.to_argv(cfg)
    assert "--no-residual" in argv and "--channels=2,3" in argv and "--lr=0.25" in argv
    assert program.parse(argv) == cfg and program.parse([]) == DPConfig()
    assert program.record(cfg)["channels"] == "2,3" and "quiet" not in program.record(cfg)


def test_dropout_masks_depend_on_seed_and_iteration_only():
    a = dp.dropout_keep(0, 3, 50, 16, 0.5)
    np.testing.assert_array_equal(a, dp.dropout_keep(0, 3, 50, 16, 0.5))
    assert not torch.equal(a, dp.dropout_keep(0, 4, 50, 16, 0.5))
    assert set(a.unique().tolist()) == {0.0, 2.0}  # kept units scaled by 1/(1-p)
    assert abs(float(a.mean()) - 1.0) < 0.15


def test_batches_cover_each_epoch():
    it = program.batch_indices(0, 10, 5)
    assert sorted(np.concatenate([next(it), next(it)]).tolist()) == list(range(10))


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--compressor", "std3"], "compressor='std3' is not one of"),
        (["--dataset", "cifar"], "dataset='cifar' is not one of"),
        (["--iterations", "0"], "iterations=0 must be >= 1"),
        (["--iterations=x"], "argument --iterations: invalid int value: 'x'"),
        (["--lr", "-1"], "lr=-1.0 must be a finite number > 0"),
        (["--topk-fraction", "2"], "topk_fraction=2.0 must lie in (0, 1]"),
        (["--allreduce", "ring", "--compressor", "topk"], "allreduce='ring' applies to"),
        (["--channels", "4"], "channels=[4] must be two integers"),
        (["--snapshot-iterations", "0,x"], "--snapshot-iterations: '0,x' must be comma-separated"),
        (["--colour=red"], "unrecognized arguments: --colour=red"),
    ],
)
def test_bad_arguments_exit_2_with_the_value(argv, needle, capsys):
    assert program.main(argv) == 2
    assert needle in capsys.readouterr().err


def test_one_rank_run_writes_rows(tmp_path):
    out = tmp_path / "r.jsonl"
    status = program.main(
        TINY
        + [
            "--compressor",
            "std2",
            "--iterations",
            "4",
            "--eval-every",
            "2",
            "--snapshot-iterations",
            "0,4,99",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    it, summary = rows[:-1], rows[-1]
    assert [r["iteration"] for r in it] == [0, 1, 2, 3, 4]
    assert all(REQUIRED <= r.keys() for r in it)
    assert [r["iteration"] for r in it if "test_accuracy" in r] == [0, 2, 4]
    assert [r["iteration"] for r in it if "weights_hist" in r] == [0, 4]
    assert summary["summary"] and summary["ranks"] == 1 and summary["replicas_identical"]
    assert all(0 < r["fraction_sent"] < 0.2 for r in it)  # 2 sigma sends a few percent
    assert all(r["bytes_sent"] < r["dense_bytes"] for r in it)
    # a rerun of these options finds the file complete; other options are refused by name
    cfg = program.from_dict(
        {"channels": [2, 3], "dense": 8, "batch_size": 8, "compressor": "std2", "iterations": 4},
        base=DPConfig(eval_every=2, snapshot_iterations=(0, 4, 99), out=str(out)),
    )
    assert program.complete(cfg)
    with pytest.raises(ValueError, match=re.escape("other options (lr: 0.1 recorded, 0.2 asked)")):
        program.complete(dataclasses.replace(cfg, lr=0.2))
    assert not program.complete(dataclasses.replace(cfg, out=str(tmp_path / "none.jsonl")))


@pytest.mark.mpi
def test_two_ranks_match_single_process_and_stay_identical(tmp_path):
    out = tmp_path / "dp.jsonl"
    algo = ["ring"]
    proc = run_mpi(2, ["tests/mpi_scripts/dp_check.py", str(out), *algo], timeout=180)
    for name in [
        "none_equals_single_process",
        "dynamic_replicas_identical",
        *(f"none_{a}_equals_single_process" for a in algo),
    ]:
        assert f"OK {name}" in proc.stdout, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[-1]["ranks"] == 2 and rows[-1]["replicas_identical"]
    for r in rows[:-1]:
        assert REQUIRED <= r.keys()
        # topk 5% of P per rank: 8 bytes an entry + a 4-byte count
        k = max(1, round(0.05 * rows[-1]["n_params"]))
        assert r["bytes_sent"] == 8 * k + 4 and r["dense_bytes"] == 4 * rows[-1]["n_params"]


def test_study_config_runs_and_table(tmp_path):
    study = sparsification
    toml = tmp_path / "s.toml"
    toml.write_text(
        'compressors = ["none", "topk"]\nresidual = [true, false]\n'
        'datasets = ["digits"]\n[digits]\niterations = 2\n'
    )
    cfg = load(toml)
    assert study.run_names(cfg) == [
        ("digits", "none", True),
        ("digits", "topk", True),
        ("digits", "topk", False),
    ]
    for ds, comp, res in study.run_names(cfg):  # fake rows: 2 applied + 1 final iteration
        rows = [
            {
                "iteration": t,
                "threshold": 0.1,
                "fraction_sent": 0.01 if comp == "topk" else 1,
                "bytes_sent": 84.0 if comp == "topk" else 400.0,
                "dense_bytes": 400,
                "train_loss": 1.0,
                "test_accuracy": 0.9,
            }
            for t in range(3)
        ]
        rows.append(
            {
                "summary": True,
                "compressor": comp,
                "residual": res,
                "ranks": 2,
                "n_params": 100,
                "iterations": 2,
                "batch_size": 8,
                "lr": 0.1,
                "seed": 0,
                "final_test_accuracy": 0.9 if res else 0.8,
                "replicas_identical": True,
            }
        )
        path = study.result_path(tmp_path, ds, comp, res)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = load_study_script("sparsification").table
    text = table(study.load_runs(cfg, tmp_path, "digits"), "digits")
    assert "| topk | yes | 0.9000 | +0.0 | 0.0100 | 84 | 4.8x |" in text
    assert "| topk | no | 0.8000 | -10.0 |" in text
    bad = tmp_path / "bad.toml"
    for text, word in (  # in process: the exit 2 of a refused study config is test_studies'
        ('compressors = ["std3"]\n', "std3"),
        ('colour = "red"\n', "colour"),
        ("[digits]\niterations = 0\n", "digits.iterations=0 must be >= 1"),
        ("[digits]\nlearning_rate = 0.1\n", "unknown key digits.learning_rate"),
        ('[digits]\nchannels = "16,32"\n', "digits.channels must be a list of integers"),
        ("[digits]\ncompressor = 'topk'\n", "sets ['compressor']"),
        (
            'histogram_run = "std1"\ncompressors = ["none"]\n[digits]\niterations = 2\n',
            "histogram_run='std1'",
        ),
    ):
        bad.write_text(text)
        with pytest.raises(ValueError, match=re.escape(word)):
            load(bad)
