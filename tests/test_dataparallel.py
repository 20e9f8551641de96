"""parallel.dataparallel: sharding, dropout masks, argument errors, a 1-rank and a 2-rank run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import load_study_script, run_mpi, run_study

from splitnet.parallel import dataparallel as dp
from splitnet.study import load_study

REQUIRED = {"iteration", "threshold", "fraction_sent", "bytes_sent", "dense_bytes", "train_loss"}
TINY = ["--channels", "2,3", "--dense", "8", "--batch-size", "8", "--quiet"]


def test_help_gives_every_default_and_the_mpiexec_command(capsys):
    with pytest.raises(SystemExit) as e:
        dp.parse_args(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "mpiexec -n N python -m mpi4py -m splitnet.parallel.dataparallel" in text
    for action in dp.build_parser()._actions:
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
        (tmp_path / "a_file" / "r.jsonl", "is not a directory"),
    ):
        with pytest.raises(SystemExit) as e:
            dp.main(TINY + ["--out", str(out)])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"--out={str(out)!r}" in err and needle in err, err
    dp.check_out(str(tmp_path / "new" / "deeper" / "r.jsonl"))  # folders that can be created


def test_options_name_bad_and_unknown_values():
    assert dp.options(["--iterations=3"]).iterations == 3
    for argv, needle in (
        (["--iterations=x"], "invalid int value: 'x'"),
        (["--colour=red"], "--colour=red"),
        (["--lr=0"], "--lr=0.0"),
    ):
        with pytest.raises(ValueError, match=needle):
            dp.options(argv)


def test_dropout_masks_depend_on_seed_and_iteration_only():
    a = dp.dropout_keep(0, 3, 50, 16, 0.5)
    np.testing.assert_array_equal(a, dp.dropout_keep(0, 3, 50, 16, 0.5))
    assert not torch.equal(a, dp.dropout_keep(0, 4, 50, 16, 0.5))
    assert set(a.unique().tolist()) == {0.0, 2.0}  # kept units scaled by 1/(1-p)
    assert abs(float(a.mean()) - 1.0) < 0.15


def test_batches_cover_each_epoch():
    it = dp.batch_indices(0, 10, 5)
    assert sorted(np.concatenate([next(it), next(it)]).tolist()) == list(range(10))


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--compressor", "std3"], "--compressor='std3'"),
        (["--dataset", "cifar"], "--dataset='cifar'"),
        (["--iterations", "0"], "--iterations=0"),
        (["--lr", "-1"], "--lr=-1.0"),
        (["--topk-fraction", "2"], "--topk-fraction=2.0"),
        (["--allreduce", "ring", "--compressor", "topk"], "--allreduce='ring'"),
        (["--channels", "4"], "--channels='4'"),
        (["--snapshot-iterations", "0,x"], "--snapshot-iterations='0,x'"),
    ],
)
def test_bad_arguments_exit_with_the_value(argv, needle, capsys):
    with pytest.raises(SystemExit):
        dp.parse_args(argv)
    assert needle in capsys.readouterr().err


def test_one_rank_run_writes_rows(tmp_path):
    out = tmp_path / "r.jsonl"
    dp.main(
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
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    it, summary = rows[:-1], rows[-1]
    assert [r["iteration"] for r in it] == [0, 1, 2, 3, 4]
    assert all(REQUIRED <= r.keys() for r in it)
    assert [r["iteration"] for r in it if "test_accuracy" in r] == [0, 2, 4]
    assert [r["iteration"] for r in it if "weights_hist" in r] == [0, 4]
    assert summary["summary"] and summary["ranks"] == 1 and summary["replicas_identical"]
    assert all(0 < r["fraction_sent"] < 0.2 for r in it)  # 2 sigma sends a few percent
    assert all(r["bytes_sent"] < r["dense_bytes"] for r in it)


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
    study = load_study_script("sparsification")
    toml = tmp_path / "s.toml"
    toml.write_text(
        'compressors = ["none", "topk"]\nresidual = [true, false]\n'
        'datasets = ["digits"]\n[digits]\niterations = 2\n'
    )
    cfg = study.check(load_study(toml, study.DEFAULTS))
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
    text = study.table(study.load_runs(cfg, tmp_path, "digits"), "digits")
    assert "| topk | yes | 0.9000 | +0.0 | 0.0100 | 84 | 4.8x |" in text
    assert "| topk | no | 0.8000 | -10.0 |" in text
    bad = tmp_path / "bad.toml"
    for text, word in (
        ('compressors = ["std3"]\n', "std3"),
        ('colour = "red"\n', "colour"),
        ("[digits]\niterations = 0\n", "[digits]: --iterations=0 must be >= 1"),
        ("[digits]\nlearning_rate = 0.1\n", "--learning-rate=0.1"),
        ("[digits]\ncompressor = 'topk'\n", "sets ['compressor']"),
        (
            'histogram_run = "std1"\ncompressors = ["none"]\n[digits]\niterations = 2\n',
            "histogram_run='std1'",
        ),
    ):
        bad.write_text(text)
        proc = run_study("sparsification", [str(bad)], tmp_path)
        assert proc.returncode == 2 and word in proc.stderr and "Traceback" not in proc.stderr
