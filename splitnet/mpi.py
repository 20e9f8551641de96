"""The one module that imports mpi4py.

Everything else asks for a communicator here. Under ``mpiexec -n N python -m mpi4py -m X``
``world()`` is ``MPI.COMM_WORLD``; under plain ``python`` it is a 1-rank world (the mpich
wheel initialises as a singleton), and where no MPI library can be loaded at all it falls back
to ``SerialComm``, which implements the calls splitnet uses for a single rank.

Convention (mpi4py's): uppercase calls move numpy buffers, lowercase calls pickle small objects.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

try:  # an MPI library that cannot be loaded raises RuntimeError, a missing mpi4py ImportError
    from mpi4py import MPI
except (ImportError, RuntimeError):  # pragma: no cover - exercised only on machines without MPI
    MPI = None


class SerialComm:
    """A 1-rank stand-in for an mpi4py communicator (used only when MPI cannot be loaded)."""

    rank = 0
    size = 1

    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return 1

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def gather(self, obj: Any, root: int = 0) -> list[Any]:
        return [obj]

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    def allreduce(self, obj: Any, op: Any = None) -> Any:
        return obj

    def alltoall(self, objs: list[Any]) -> list[Any]:
        return list(objs)

    def Barrier(self) -> None:
        pass

    def barrier(self) -> None:
        pass

    def Bcast(self, buf: Any, root: int = 0) -> None:
        pass

    def Allreduce(self, sendbuf: Any, recvbuf: Any, op: Any = None) -> None:
        src = recvbuf if sendbuf is IN_PLACE else sendbuf
        np.copyto(_array(recvbuf), _array(src))

    def Allgatherv(self, sendbuf: Any, recvbuf: Any) -> None:
        send, recv = _array(sendbuf), _array(recvbuf)
        recv.reshape(-1)[: send.size] = send.reshape(-1)

    def Abort(self, errorcode: int = 1) -> None:
        os._exit(errorcode)


Comm = Any  # an mpi4py communicator, or SerialComm
IN_PLACE = MPI.IN_PLACE if MPI is not None else object()
SUM = MPI.SUM if MPI is not None else None
MAX = MPI.MAX if MPI is not None else None  # (SerialComm ignores the op)


def _array(buf: Any) -> np.ndarray:
    """The numpy array of a buffer spec (``arr`` or ``[arr, counts, displs, type]``)."""
    return buf[0] if isinstance(buf, (list, tuple)) else buf


ABORT_GRACE_S = 0.5  # between the last words of a failing rank and Abort


def world() -> Comm:
    """``MPI.COMM_WORLD``, or a ``SerialComm`` where no MPI library is available."""
    return MPI.COMM_WORLD if MPI is not None else SerialComm()


def wtime() -> float:
    return MPI.Wtime() if MPI is not None else time.perf_counter()


@contextmanager
def abort_on_error(comm: Comm | None = None) -> Iterator[Comm]:
    """Turn any way a rank leaves the run early into ``Abort`` of the whole job.

    ``python -m mpi4py`` does this for exceptions; the guard also covers code run as
    ``python -m splitnet.X`` under mpiexec and Ctrl-C (``KeyboardInterrupt``, SIGINT) on one
    rank, where the other ranks would otherwise wait in a collective forever. A clean exit
    (``SystemExit(0)``) passes through; so does anything on a single rank.
    """
    comm = comm or world()
    try:
        yield comm
    except SystemExit as e:
        if e.code in (0, None) or comm.Get_size() == 1:
            raise
        comm.Abort(e.code if isinstance(e.code, int) else 1)
    except BaseException as e:
        if comm.Get_size() == 1:
            raise
        if isinstance(e, KeyboardInterrupt):
            print(f"rank {comm.Get_rank()}: interrupted, ending the job", file=sys.stderr)
        else:
            traceback.print_exc()
        sys.stderr.flush()
        # Abort kills every rank at once, and the launcher may stop forwarding a rank's stderr
        # before it has read the message above (seen under load): give it a moment
        time.sleep(ABORT_GRACE_S)
        comm.Abort(130 if isinstance(e, KeyboardInterrupt) else 1)


def rank0_verdict(
    comm: Comm, prog: str, decide: Callable[[], tuple[Any, Any]]
) -> tuple[tuple[str, Any], Any]:
    """Check the input on rank 0 only; every rank gets the same verdict, so none is left waiting.

    ``decide()`` parses and validates, and returns ``(payload, local)``: ``payload`` goes to every
    rank as ``("run", payload)``, ``local`` (an open file, say) stays on rank 0 (None elsewhere).
    argparse's exit (``--help``, a bad flag) becomes ``("exit", code)``; a ``ValueError`` is
    printed once as ``prog: error: ...`` and becomes ``("exit", 2)``.
    """
    verdict, local = None, None
    if comm.Get_rank() == 0:
        try:
            payload, local = decide()
            verdict = ("run", payload)
        except SystemExit as e:  # argparse: --help or a bad flag (already printed)
            verdict = ("exit", e.code)
        except ValueError as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            verdict = ("exit", 2)
    return comm.bcast(verdict, root=0), local


def mpiexec_path() -> str | None:
    """The venv's own mpiexec (the mpich wheel's; a system Open MPI launcher cannot start it)."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def mpiexec_command(n: int, args: Sequence[str]) -> list[str]:
    """``mpiexec -n N python -m mpi4py ARGS`` (ARGS: ``-m module ...`` or ``script.py ...``):
    under ``-m mpi4py`` one rank's uncaught exception aborts the job instead of hanging it."""
    exe = mpiexec_path()
    if exe is None:
        raise RuntimeError("no mpiexec next to the interpreter or on PATH (pip install mpich)")
    return [exe, "-n", str(n), sys.executable, "-m", "mpi4py", *args]


def launch(
    n: int, args: Sequence[str], *, timeout: float | None = None, **kwargs: Any
) -> subprocess.CompletedProcess:
    """Run ``mpiexec_command(n, args)`` to the end, one thread per rank (``OMP_NUM_THREADS=1``
    unless the caller's ``env`` says otherwise); ``kwargs`` go to ``subprocess.run``."""
    env = {"OMP_NUM_THREADS": "1", **(kwargs.pop("env", None) or os.environ)}
    return subprocess.run(mpiexec_command(n, args), timeout=timeout, env=env, **kwargs)
