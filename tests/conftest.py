"""Shared test helpers: run a module or script under a real ``mpiexec`` as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from splitnet.mpi import launch, mpiexec_path

REPO = Path(__file__).resolve().parents[1]

# A tiny enumeration for the driver and Slurm tests: digits, hidden [4, 4], k = 2 (18 combinations)
TINY_CONFIG = """\
seed = 0
[data]
name = "digits"
[model]
hidden = [4, 4]
[split]
groups = 2
[train]
piece_epochs = 1
pretrain_epochs = 2
"""
TINY_COMBINATIONS = 18


def slow_shim(pause: float) -> str:
    """A ``sitecustomize`` that pauses after each results write (rows unchanged), so a test can
    kill or requeue a run between rows (otherwise the tiny run ends in about a second)."""
    return f"""\
import time
import splitnet.results as _results
_append = _results.append_lines
def _slow_append(f, lines):
    _append(f, lines)
    time.sleep({pause})
_results.append_lines = _slow_append
"""


def load_study_script(name: str):
    """``experiments/<name>/run.py`` as a module (its table and drawing helpers are tested)."""
    import importlib.util

    path = REPO / "experiments" / name / "run.py"
    spec = importlib.util.spec_from_file_location(f"study_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def run_study(
    name: str, args: list[str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python experiments/<name>/run.py ARGS`` in ``cwd`` (its results/ go there)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, str(REPO / "experiments" / name / "run.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _mpi_skip_reason() -> str | None:
    try:
        from mpi4py import MPI  # noqa: F401
    except (ImportError, RuntimeError) as e:
        return f"no MPI library: {e}"
    if mpiexec_path() is None:
        return "no mpiexec found next to the interpreter or on PATH"
    return None


def run_mpi(
    n: int, args: list[str], timeout: float = 120, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """``mpiexec -n N python -m mpi4py ARGS`` (ARGS: ``-m module ...`` or ``script.py ...``).

    ``python -m mpi4py`` makes one rank's uncaught exception abort the job instead of hanging it.
    """
    reason = _mpi_skip_reason()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = launch(
        n, args, capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(proc.args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@pytest.fixture
def mpi():
    """The ``run_mpi`` launcher as a fixture."""
    return run_mpi


def timeless_rows(path: Path) -> list[dict]:
    """A results file's rows without ``seconds`` (the one key that depends on timing)."""
    from splitnet import results

    return [{k: v for k, v in r.items() if k != "seconds"} for r in results.read_rows(path)]


def driver_on_one_and_two_ranks(tmp_path: Path, args: list[str]) -> tuple[list, list]:
    """The driver's rows (``timeless_rows``) of ``args`` in this process and on 2 MPI ranks."""
    from splitnet import enumerate as driver

    driver.main([*args, "--out", str(tmp_path / "one.jsonl")])
    run_mpi(2, ["-m", "splitnet.enumerate", *args, "--out", str(tmp_path / "two.jsonl")])
    return timeless_rows(tmp_path / "one.jsonl"), timeless_rows(tmp_path / "two.jsonl")
