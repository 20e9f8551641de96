"""Results are never lost or doubled, nothing hangs, every bad value gets a message.

Each test states a behaviour an adversarial user checked for (two writers, foreign and doubled
files, pipes, huge spaces, bad values, Ctrl-C): what the driver does, not how it got there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY_COMBINATIONS, TINY_CONFIG, slow_shim

from splitnet import enumerate as driver
from splitnet import plot, results
from splitnet.results import read_rows


@pytest.fixture
def tiny(tmp_path) -> list[str]:
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_CONFIG)
    return ["--config", str(config), "--quiet"]


def _main(argv: list[str], capsys) -> tuple[int, str]:
    t0 = time.monotonic()
    rc = driver.main(argv)
    assert time.monotonic() - t0 < 30, "a refusal must come before any training"
    return rc, capsys.readouterr().err


def _env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra}


def _popen(args: list[str], log: Path, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "splitnet.enumerate", *args],
        cwd=REPO,
        env=_env(**env),
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
        start_new_session=True,
    )


def _wait_for_rows(path: Path, proc: subprocess.Popen, timeout: float = 90) -> float:
    t0 = time.monotonic()
    while not (path.exists() and read_rows(path)):
        assert proc.poll() is None, f"exited {proc.returncode} before its first row"
        assert time.monotonic() - t0 < timeout, f"no row after {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - t0


# --- one writer per file ------------------------------------------------------------------------


def test_a_second_writer_is_refused_while_the_first_runs(tiny, tmp_path, capsys):
    """A second run on the same --out waits for nothing and writes nothing: it is refused."""
    out = tmp_path / "shared.jsonl"
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(slow_shim(0.3))
    first = _popen(
        [*tiny, "--chunk", "1", "--out", str(out)],
        tmp_path / "first.log",
        PYTHONPATH=f"{shim}{os.pathsep}{REPO}",
    )
    try:
        _wait_for_rows(out, first)
        rc, err = _main([*tiny, "--out", str(out)], capsys)
        assert rc == 2 and "is being written by pid" in err and str(first.pid) in err, err
    finally:
        assert first.wait(timeout=180) == 0, (tmp_path / "first.log").read_text()
    rows = read_rows(out)
    assert sorted(r["combination"] for r in rows) == list(range(TINY_COMBINATIONS))


def test_a_file_holding_duplicates_is_reported_not_resumed(tiny, tmp_path, capsys):
    """A file holding a (seed, combination) twice is reported, never resumed into."""
    out = tmp_path / "d.jsonl"
    assert driver.main([*tiny, "--stop", "3", "--out", str(out)]) == 0
    out.write_bytes(out.read_bytes() * 2)
    before = out.read_bytes()
    rc, err = _main([*tiny, "--out", str(out)], capsys)
    assert rc == 2 and "3 duplicated row(s)" in err and "results merge" in err, err
    assert out.read_bytes() == before


# --- a foreign --out is never cut -----------------------------------------------------------------

FOREIGN = {
    "complete row of another config, no newline": b'{"accuracy": 0.5, "combination": 0, '
    b'"config_hash": "other", "seed": 0}',
    "json document": b'{\n  "name": "notes",\n  "items": [1, 2]\n}',
    "binary": bytes(range(256)) * 4,
    "note": b"remember to rerun with seed 3",
    "row of another config": b'{"accuracy": 0.5, "combination": 0, "config_hash": "other"}\n'
    b'{"accuracy": 0.5, "combination": 1, "conf',
}


@pytest.mark.parametrize("name", FOREIGN)
def test_a_foreign_file_as_out_is_refused_untouched(tiny, tmp_path, capsys, name):
    """Only a torn row of this run is cut; any other file without a final newline is refused
    and left byte for byte as it was."""
    out = tmp_path / "foreign.jsonl"
    out.write_bytes(FOREIGN[name])
    rc, err = _main([*tiny, "--out", str(out)], capsys)
    assert rc == 2 and "--out" in err and "Traceback" not in err, err
    assert out.read_bytes() == FOREIGN[name]


def test_a_torn_first_row_of_this_run_is_cut_and_resumed(tiny, tmp_path, capsys):
    out = tmp_path / "torn.jsonl"
    out.write_bytes(b'{"accuracy": 0.93, "baseline_acc')
    assert driver.main([*tiny, "--stop", "2", "--out", str(out)]) == 0
    assert [r["combination"] for r in read_rows(out)] == [0, 1]


@pytest.mark.parametrize("kind", ["fifo", "stdout"])
def test_an_out_that_blocks_on_read_is_refused(tiny, tmp_path, kind):
    """A FIFO or /dev/stdout as --out is refused at once, never opened or waited on."""
    out = tmp_path / "pipe.jsonl"
    if kind == "fifo":
        os.mkfifo(out)
    else:
        out = Path("/dev/stdout")
    proc = subprocess.run(
        [sys.executable, "-m", "splitnet.enumerate", *tiny, "--out", str(out)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "not a regular results file" in proc.stderr, proc.stderr


# --- time and memory do not grow with the space ------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["--shard", "1/3"]])
def test_a_huge_space_gives_its_first_row_at_once_in_flat_memory(tmp_path, extra):
    """[16, 16] (82,818,450 combinations) is streamed: its first row comes at once, in the
    memory of a small space."""
    out = tmp_path / "huge.jsonl"
    args = [
        "--quiet",
        "--chunk",
        "4",
        "--out",
        str(out),
        "--set",
        "model.hidden=[16,16]",
        "--set",
        "train.pretrain_epochs=1",
        "--set",
        "train.piece_epochs=1",
        *extra,
    ]
    proc = _popen(args, tmp_path / "huge.log")
    try:
        took = _wait_for_rows(out, proc, timeout=60)
        rss_kib = int(
            next(
                line.split()[1]
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:")
            )
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert took < 45 and rss_kib < 700 * 1024, (took, rss_kib)


def test_count_of_a_wide_net_has_no_recursion_limit(capsys):
    """Counting a space of widths in the hundreds needs no recursion (exact big integers)."""
    assert driver.main(["--count", "--set", "model.hidden=[600,600]"]) == 0
    count = int(capsys.readouterr().out)
    assert count == __import__("math").comb(600, 300) ** 2 // 2


# --- bad values: a message naming the value, exit 2, before any training ----------------------


def _npz(tmp_path, **arrays) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return str(path)


X20 = np.random.default_rng(0).normal(size=(40, 3))
Y20 = np.arange(40) % 2


def _bad_data(tmp_path, case):
    if case == "text file":
        (tmp_path / "t.npz").write_text("this is not an archive")
        return str(tmp_path / "t.npz"), "not a readable .npz"
    if case == "empty":
        return _npz(tmp_path, X=np.zeros((0, 3)), y=np.zeros(0)), "shape (0, 3)"
    if case == "lengths":
        return _npz(tmp_path, X=X20, y=Y20[:30]), "40 samples but labels of shape (30,)"
    if case == "negative labels":
        return _npz(tmp_path, X=X20, y=Y20 - 1), "labels must be 0..C-1, found -1"
    if case == "fractional labels":
        return _npz(tmp_path, X=X20, y=Y20 + 0.5), "whole numbers"
    if case == "label past the samples":  # would size a 10**10-wide output layer
        y = Y20.copy()
        y[0] = 10**10
        return _npz(tmp_path, X=X20, y=y), "label 10000000000 but only 40 samples"
    if case == "one class":
        return _npz(tmp_path, X=X20, y=np.zeros(40)), "a single class"
    if case == "non-finite":
        X = X20.copy()
        X[3, 1] = np.nan
        return _npz(tmp_path, X=X, y=Y20), "1 sample(s) have non-finite features"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "text file",
        "empty",
        "lengths",
        "negative labels",
        "fractional labels",
        "one class",
        "non-finite",
        "label past the samples",
    ],
)
def test_bad_data_files_are_refused(tmp_path, capsys, case):
    path, message = _bad_data(tmp_path, case)
    rc, err = _main(
        [
            "--quiet",
            "--out",
            str(tmp_path / "o.jsonl"),
            "--set",
            "data.name=idx",
            "--set",
            f"data.path='{path}'",
        ],
        capsys,
    )
    assert rc == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "o.jsonl").exists() or not read_rows(tmp_path / "o.jsonl")


@pytest.mark.parametrize(
    "setting, message",
    [
        ("data.test_fraction=0.001", "data.test_fraction=0.001"),
        ("data.pretrain_fraction=0.001", "data.pretrain_fraction=0.001"),
        ("seed=-1", "seed=-1 must lie in"),
        ("seed=18446744073709551616", "seed=18446744073709551616 must lie in"),
        ("train.momentum=-0.5", "train.momentum=-0.5"),
        ("train.momentum=nan", "train.momentum=nan"),
        ("train.lr=inf", "train.lr=inf"),
        ("train.lr=nan", "train.lr=nan"),
        ("split.stitch_lr=inf", "split.stitch_lr=inf"),
    ],
)
def test_bad_training_values_are_refused(tmp_path, capsys, setting, message):
    """Non-finite or negative training values are refused by name before any training."""
    rc, err = _main(["--quiet", "--out", str(tmp_path / "o.jsonl"), "--set", setting], capsys)
    assert rc == 2 and message in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "settings, message",
    [
        (["data.n_samples=0"], "data.n_samples=0"),
        (["data.n_classes=1"], "data.n_classes=1"),
    ],
)
def test_bad_synthetic_data_is_refused(tmp_path, capsys, settings, message):
    sets = [x for s in ["data.name=synthetic", *settings] for x in ("--set", s)]
    rc, err = _main(["--quiet", "--out", str(tmp_path / "o.jsonl"), *sets], capsys)
    assert rc == 2 and message in err, err


def test_a_binary_config_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(bytes(range(128, 256)))
    rc, err = _main(["--config", str(bad)], capsys)
    assert rc == 2 and str(bad) in err and "Traceback" not in err, err


# --- lines that are JSON but not rows; results merge / check / plot ------------------------------


@pytest.mark.parametrize("line", [b"[1, 2, 3]\n", b'{"accuracy": 1.0}\n'])
def test_json_that_is_not_a_row_is_named(tiny, tmp_path, capsys, line):
    out = tmp_path / "o.jsonl"
    out.write_bytes(line)
    rc, err = _main([*tiny, "--out", str(out)], capsys)
    assert rc == 2 and "line 1 is JSON but not a results row" in err, err
    assert plot.main([str(out), "-o", str(tmp_path / "f.png")]) == 2
    assert "not a results row" in capsys.readouterr().err


def _rows_file(path: Path, config_hash: str, combos) -> Path:
    path.write_text(
        "".join(
            json.dumps({"combination": c, "seed": 0, "config_hash": config_hash, "accuracy": 0.5})
            + "\n"
            for c in combos
        )
    )
    return path


def test_merge_names_a_missing_input(tmp_path, capsys):
    a = _rows_file(tmp_path / "a.jsonl", "h", [0, 1])
    assert (
        results.main(
            ["merge", "-o", str(tmp_path / "m.jsonl"), str(a), str(tmp_path / "gone.jsonl")]
        )
        == 2
    )
    assert "gone.jsonl" in capsys.readouterr().err and not (tmp_path / "m.jsonl").exists()


def test_merge_into_a_directory_leaves_nothing_behind(tmp_path, capsys):
    a = _rows_file(tmp_path / "a.jsonl", "h", [0, 1])
    (tmp_path / "outdir").mkdir()
    assert results.main(["merge", "-o", str(tmp_path / "outdir"), str(a)]) == 2
    assert "directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "outdir"]


def test_check_and_plot_refuse_a_file_mixing_two_configs(tmp_path, capsys):
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        _rows_file(tmp_path / "a.jsonl", "h1", [0]).read_text()
        + _rows_file(tmp_path / "b.jsonl", "h2", [1]).read_text()
    )
    assert results.main(["check", str(mixed)]) == 2
    assert "another experiment" in capsys.readouterr().err
    assert plot.main([str(mixed), "-o", str(tmp_path / "f.png")]) == 2
    assert "another experiment" in capsys.readouterr().err


def _rank_pid(out: Path, rank: int) -> int:
    """The pid of MPI rank ``rank`` of the run writing ``out`` (PMI_RANK in its environment)."""
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes()
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if (
            b"splitnet.enumerate" in cmd
            and str(out).encode() in cmd
            and f"PMI_RANK={rank}".encode() in env
            and b"mpiexec" not in cmd
        ):
            return int(proc.name)
    raise AssertionError(f"no rank {rank} writing {out}")


@pytest.mark.mpi
def test_ctrl_c_on_one_rank_without_mpi4py_launcher_ends_the_job(tiny, tmp_path):
    """SIGINT on one rank of a run launched without ``-m mpi4py`` ends every rank (no rank is
    left waiting in a collective)."""
    from conftest import mpiexec_path

    if mpiexec_path() is None:
        pytest.skip("no mpiexec next to the interpreter or on PATH")
    out = tmp_path / "int.jsonl"
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(slow_shim(0.3))
    cmd = [
        mpiexec_path(),
        "-n",
        "2",
        sys.executable,
        "-m",
        "splitnet.enumerate",
        *tiny,
        "--chunk",
        "1",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=_env(PYTHONPATH=f"{shim}{os.pathsep}{REPO}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _wait_for_rows(out, proc)
        os.kill(_rank_pid(out, 0), signal.SIGINT)
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the job still runs 60 s after rank 0 was interrupted (hung)")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert rc != 0 and "interrupted, ending the job" in err, (rc, err)
    rows = read_rows(out)
    assert len(rows) == len({r["combination"] for r in rows})  # nothing doubled or torn


def test_zero_epochs_with_momentum_run(tiny, tmp_path, capsys):
    """Momentum with zero pretraining or piece epochs (no step taken) runs."""
    out = tmp_path / "z.jsonl"
    args = [*tiny, "--stop", "2", "--out", str(out), "--set", "train.momentum=0.9"]
    for zero in ("train.pretrain_epochs=0", "train.piece_epochs=0"):
        assert driver.main([*args, "--set", zero, "--set", "train.engine=loop"]) == 0
        out.unlink()
        (tmp_path / "z.jsonl.lock").unlink()


def test_merge_refuses_while_a_run_writes_its_output(tiny, tmp_path, capsys):
    """``results merge`` into a file a run is appending to is refused while the run holds it
    (the run's later rows would go to a replaced, deleted file)."""
    out = tmp_path / "live.jsonl"
    assert driver.main([*tiny, "--stop", "2", "--out", str(out)]) == 0
    lock = results.acquire_lock(out)  # stands for the running writer
    try:
        assert results.main(["merge", "-o", str(out), str(out)]) == 2
        assert "is being written by pid" in capsys.readouterr().err
    finally:
        lock.close()
    assert results.main(["merge", "-o", str(out), str(out)]) == 0


def test_check_of_an_empty_file_reports_everything_missing(tmp_path, capsys):
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    assert results.main(["check", str(empty), "--expected", "18"]) == 1
    assert json.loads(capsys.readouterr().out)["missing"] == 18


def test_plot_names_a_missing_mark_file(tiny, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    assert driver.main([*tiny, "--stop", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    assert plot.main([str(out), "-o", str(tmp_path / "f.png"), "--mark", "gone.jsonl"]) == 2
    assert "gone.jsonl" in capsys.readouterr().err
