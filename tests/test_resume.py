"""The driver's promises around failure: a killed run resumes to exactly one row per combination;
rows do not depend on the number of ranks; bad inputs and a failing rank end the job at once.

The slow runs start together in the background (a module fixture) and each test waits for the
ones it needs, so the module's wall time is about that of its longest chain.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, mpiexec_path, run_mpi, slow_shim
from conftest import TINY_COMBINATIONS as N_COMBINATIONS
from conftest import TINY_CONFIG as TINY

from splitnet import enumerate as driver
from splitnet.mpi import mpiexec_command
from splitnet.results import read_rows

pytestmark = pytest.mark.mpi

BAD_UNDER_MPI = [
    (["--shard", "3/2"], "0 <= T < N"),  # a ValueError on rank 0 (each rank costs ~3 s CPU)
]
HANG = 60  # seconds: a run that has not ended by then is hung (a clean failure takes ~2-15 s)

# A pause after each results write (rows unchanged), so a test can kill a run between rows.
SLOW_SHIM = slow_shim(0.2)

# Rank 1 raises in its second chunk: rows of the first chunk are on disk, rank 0 is waiting in
# a collective. ``python -m mpi4py`` must turn that into an abort of the whole job.
FAILING_RANK = """\
import sys
import splitnet.enumerate as driver
import splitnet.experiment as experiment
from splitnet.mpi import world

calls = 0
_run = experiment.run_combinations
def run_combinations(*args, **kwargs):
    global calls
    calls += 1
    if world().Get_rank() == 1 and calls == 2:
        raise RuntimeError("injected failure on rank 1")
    return _run(*args, **kwargs)
experiment.run_combinations = run_combinations
sys.exit(driver.main(sys.argv[1:]))
"""


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.update(extra)
    return env


def _cmd(n: int | None, args: list[str]) -> list[str]:
    """``python -m splitnet.enumerate ARGS``, under ``mpiexec -n N python -m mpi4py`` if N."""
    if n is None:
        return [sys.executable, "-m", "splitnet.enumerate", *args]
    return mpiexec_command(n, ["-m", "splitnet.enumerate", *args])


def _strip(rows: list[dict]) -> list[dict]:
    return sorted(
        ({k: v for k, v in r.items() if k != "seconds"} for r in rows),
        key=lambda r: r["combination"],
    )


def _one_row_each(path: Path) -> list[dict]:
    rows = read_rows(path)
    combos = sorted(r["combination"] for r in rows)
    assert combos == list(range(N_COMBINATIONS)), f"{path}: combinations {combos}"
    return rows


class Background:
    """A subprocess started now and waited for later (stdout + stderr captured in a file)."""

    def __init__(self, cmd: list[str], log: Path, env: dict | None = None):
        self.cmd, self.log = cmd, log
        self._out = open(log, "w")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env or _env(),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.seconds = None  # wall time to exit, measured by a watcher thread
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        self.proc.wait()
        self.seconds = time.monotonic() - self.t0

    def result(self, timeout: float) -> tuple[int, str, float]:
        """(exit status, output, seconds since start); a timeout fails the test (a hang)."""
        try:
            rc = self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.t0)))
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(
                f"{' '.join(self.cmd)} still running after {timeout} s (hung)\n"
                f"{self.log.read_text()}"
            )
        finally:
            self._out.close()
        while self.seconds is None:
            time.sleep(0.01)
        return rc, self.log.read_text(), self.seconds

    def wait(self, timeout: float = 180) -> None:
        rc, output, _ = self.result(timeout)
        assert rc == 0, f"{' '.join(self.cmd)} exited {rc}\n{output}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if mpiexec_path() is None:
        pytest.skip("no mpiexec next to the interpreter or on PATH")
    root = tmp_path_factory.mktemp("resume")
    config = root / "tiny.toml"
    config.write_text(TINY)
    (root / "shim").mkdir()
    (root / "shim" / "sitecustomize.py").write_text(SLOW_SHIM)
    base = ["--config", str(config), "--quiet"]
    out = {"root": root, "config": config, "base": base, "bg": {}}
    for n in (1, 4):  # uninterrupted runs, default chunking (it depends on the rank count)
        args = [*base, "--out", str(root / f"n{n}.jsonl")]
        out["bg"][n] = Background(_cmd(None if n == 1 else n, args), root / f"n{n}.log")
    # runs that must fail fast under 2 ranks; started now, side by side with the rest
    for i, (extra, _) in enumerate(BAD_UNDER_MPI):
        out["bg"][f"bad{i}"] = Background(
            _cmd(2, [*base, "--out", str(root / f"bad{i}.jsonl"), *extra]), root / f"bad{i}.log"
        )
    (root / "failing_rank.py").write_text(FAILING_RANK)
    out["bg"]["failing"] = Background(
        mpiexec_command(
            2,
            [
                str(root / "failing_rank.py"),
                *base,
                "--chunk",
                "1",
                "--out",
                str(root / "failing.jsonl"),
            ],
        ),
        root / "failing.log",
    )
    yield out
    for bg in out["bg"].values():
        bg._out.close()
        if bg.proc.poll() is None:
            os.killpg(bg.proc.pid, signal.SIGKILL)
            bg.proc.wait()


def _reference(runs, n: int) -> list[dict]:
    runs["bg"][n].wait()
    return _one_row_each(runs["root"] / f"n{n}.jsonl")


def test_sigkill_mid_run_and_torn_line_then_same_command_resumes(runs):
    root, out = runs["root"], runs["root"] / "killed.jsonl"
    cmd = _cmd(2, [*runs["base"], "--chunk", "1", "--out", str(out)])
    # SIGKILL of the whole job (mpiexec and both ranks: what the OOM killer or a node loss does)
    # once the first rows are on disk; the shim spaces the rows 0.2 s apart.
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(PYTHONPATH=f"{root / 'shim'}{os.pathsep}{REPO}"),
        start_new_session=True,
    )
    t0 = time.monotonic()
    try:
        while not read_rows(out):
            assert proc.poll() is None, (
                f"exited {proc.returncode} before a row: {proc.stderr.read().decode()}"
            )
            assert time.monotonic() - t0 < 120, "no row after 120 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    before = len(read_rows(out))
    assert 1 <= before < N_COMBINATIONS
    with open(out, "ab") as f:  # killed in the middle of writing a row
        f.write(b'{"accuracy": 0.93, "combination": 7, "conf')

    again = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    rows = _one_row_each(out)
    assert out.read_bytes().endswith(b"\n")
    # the same rows as an uninterrupted run, whatever the kill cut (and -n 2 equals -n 1)
    assert _strip(rows) == _strip(_reference(runs, 1))


def test_rows_do_not_depend_on_the_number_of_ranks(runs):
    one = _strip(_reference(runs, 1))
    four = _strip(_reference(runs, 4))
    assert one == four
    # -n 2: the resumed file of the test above when it ran, else a run of its own
    two_path = runs["root"] / "killed.jsonl"
    if len(read_rows(two_path)) != N_COMBINATIONS:
        two_path = runs["root"] / "n2.jsonl"
        run_mpi(2, ["-m", "splitnet.enumerate", *runs["base"], "--out", str(two_path)], timeout=180)
    assert _strip(_one_row_each(two_path)) == one


def _main(argv, capsys) -> tuple[int, str]:
    t0 = time.monotonic()
    rc = driver.main(argv)
    assert time.monotonic() - t0 < 20
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--shard", "3/2"], "0 <= T < N"),
        (["--shard", "x"], "must look like T/N"),
        (["--start", "999"], "beyond the 18 combinations"),
        (["--stop", "0"], "--stop 0"),
        (["--chunk", "0"], "--chunk 0"),
        (["--set", "model.depth=3"], "unknown key model.depth"),
        (["--config", "/nonexistent/x.toml"], "cannot read config"),
        (["--out", "/proc/x.jsonl"], "not writable"),
        (["--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_refused_with_a_message(runs, tmp_path, capsys, extra, message):
    rc, err = _main([*runs["base"], "--out", str(tmp_path / "o.jsonl"), *extra], capsys)
    assert rc != 0 and message in err, (rc, err)
    assert "Traceback" not in err


def test_rows_of_another_config_are_refused(runs, tmp_path, capsys):
    out = tmp_path / "mixed.jsonl"
    _reference(runs, 1)
    out.write_bytes((runs["root"] / "n1.jsonl").read_bytes())
    before = out.read_bytes()
    rc, err = _main([*runs["base"], "--set", "seed=1", "--out", str(out)], capsys)
    assert rc != 0 and "config_hash" in err, (rc, err)
    assert out.read_bytes() == before  # untouched


@pytest.mark.parametrize("i", range(len(BAD_UNDER_MPI)))
def test_bad_input_under_two_ranks_exits_without_hanging(runs, i):
    extra, message = BAD_UNDER_MPI[i]
    rc, output, took = runs["bg"][f"bad{i}"].result(HANG)
    assert rc != 0 and message in output, (rc, output)
    assert "Traceback" not in output
    print(f"{extra}: exit {rc} after {took:.1f} s")


def test_a_rank_failing_mid_run_ends_the_whole_job(runs):
    rc, output, took = runs["bg"]["failing"].result(HANG)
    assert rc != 0, output
    assert "injected failure on rank 1" in output, output
    # at most the first chunk's row (the abort may beat its write), nothing torn or doubled
    assert [r["combination"] for r in read_rows(runs["root"] / "failing.jsonl")] in ([], [0])
    print(f"a failing rank ended the job (exit {rc}) after {took:.1f} s")


def test_out_that_is_a_directory_is_refused_with_a_message(runs, tmp_path, capsys):
    rc, err = _main([*runs["base"], "--out", str(tmp_path)], capsys)
    assert rc != 0 and "--out" in err and "Traceback" not in err, (rc, err)
