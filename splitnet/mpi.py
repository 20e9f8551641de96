"""The one module that imports mpi4py.

Everything else asks for a communicator here. Under ``mpiexec -n N python -m mpi4py -m X``
``world()`` is ``MPI.COMM_WORLD``; under plain ``python`` it is a 1-rank world (the mpich
wheel initialises as a singleton), and where no MPI library can be loaded at all it falls back
to ``SerialComm``, which implements the calls splitnet uses for a single rank.

Convention (mpi4py's): uppercase calls move numpy buffers, lowercase calls pickle small objects.
"""

from __future__ import annotations

import os
import sys
import traceback
from contextlib import contextmanager

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

    def bcast(self, obj, root=0):
        return obj

    def gather(self, obj, root=0):
        return [obj]

    def allgather(self, obj):
        return [obj]

    def allreduce(self, obj, op=None):
        return obj

    def alltoall(self, objs):
        return list(objs)

    def Barrier(self):
        pass

    def barrier(self):
        pass

    def Bcast(self, buf, root=0):
        pass

    def Allreduce(self, sendbuf, recvbuf, op=None):
        src = recvbuf if sendbuf is IN_PLACE else sendbuf
        np.copyto(_array(recvbuf), _array(src))

    def Allgatherv(self, sendbuf, recvbuf):
        send, recv = _array(sendbuf), _array(recvbuf)
        recv.reshape(-1)[: send.size] = send.reshape(-1)

    def Abort(self, errorcode=1):
        os._exit(errorcode)


IN_PLACE = MPI.IN_PLACE if MPI is not None else object()
SUM = MPI.SUM if MPI is not None else None


def _array(buf):
    """The numpy array of a buffer spec (``arr`` or ``[arr, counts, displs, type]``)."""
    return buf[0] if isinstance(buf, (list, tuple)) else buf


def world():
    """``MPI.COMM_WORLD``, or a ``SerialComm`` where no MPI library is available."""
    return MPI.COMM_WORLD if MPI is not None else SerialComm()


def rank_size(comm=None) -> tuple[int, int]:
    comm = comm or world()
    return comm.Get_rank(), comm.Get_size()


def is_root(comm=None) -> bool:
    return (comm or world()).Get_rank() == 0


def wtime() -> float:
    if MPI is not None:
        return MPI.Wtime()
    import time

    return time.perf_counter()


@contextmanager
def abort_on_error(comm=None):
    """Turn an uncaught exception on any rank into ``Abort`` of the whole job.

    ``python -m mpi4py`` already does this; the guard covers code run as ``python -m splitnet.X``
    under mpiexec, where one rank's exception would otherwise leave the others blocked forever.
    ``SystemExit`` (argparse errors, clean exits) passes through untouched.
    """
    comm = comm or world()
    try:
        yield comm
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        if comm.Get_size() == 1:
            raise
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
