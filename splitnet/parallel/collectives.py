"""Allreduce three ways, over point-to-point messages on numpy buffers (the lecture notes' three).

Every rank holds a vector ``x_r`` of K values; afterwards every rank holds ``sum_r x_r``.
With N ranks and K values (``n_bytes = K * itemsize``):

=========  ==========================================  ===========================  ===========
algorithm  schedule                                    bytes sent, busiest rank     rounds
=========  ==========================================  ===========================  ===========
``ps``     all send to rank 0; rank 0 sums in rank     root: (N-1)·K                2(N-1) at
           order and sends the sum back to everyone    (and receives (N-1)·K)       the root
``tree``   binomial-tree reduce to rank 0, then a      root: ⌈log2 N⌉·K             2⌈log2 N⌉
           binomial-tree broadcast from rank 0         (sent + received ≈ 2K·log2 N)
``ring``   reduce-scatter (N-1 steps), then            every rank: 2·(N-1)/N·K      2(N-1)
           allgather (N-1 steps) around the ring
``mpi``    the MPI library's own ``Allreduce``          (library's choice)           --
=========  ==========================================  ===========================  ===========

So the parameter server's root moves O(N·K) bytes, the ring O(K) per rank whatever N is
(the lecture notes' comparison), and the tree O(K·log N) with only O(log N) latencies.
:func:`bytes_sent` gives the exact count per rank (ring chunks need not be equal);
``splitnet.parallel.costmodel`` turns the rounds and bytes into seconds.

Ring chunks are ``splitnet.partition.bounds(K, N)`` (``np.array_split``'s): chunk i has
``K//N + (i < K % N)`` elements, so for K < N some chunks are empty (their messages carry
0 bytes but still happen).

Determinism: each element's sum is formed in one fixed order on one rank and then copied,
so every rank ends with bitwise the same array (ps: ``((x_0 + x_1) + x_2) ...`` on rank 0;
tree: the binomial reduction order; ring: chunk c is ``((x_c + x_{c+1}) + x_{c+2}) ...``
accumulated around the ring). The order differs from the MPI library's, so results agree
with ``MPI.Allreduce`` up to rounding (exactly when all partial sums are representable).

Data moves as raw bytes (``uint8`` views), so any float dtype works, float16 included;
the sums are numpy's. All ranks must call with the same shape and dtype, like any collective.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from ..mpi import IN_PLACE, SUM, Comm, world
from ..partition import bounds

ALGORITHMS = ("ps", "tree", "ring", "mpi")
_TAG = 7002  # one tag for all our traffic: per-pair message order is what keeps steps apart


# One grow-only receive buffer per process, reused across calls: a fresh 64 MB buffer per call
# costs 16k page faults (~10-30% of a 64 MB allreduce here). Holds the largest K seen; not
# thread-safe (nor is calling MPI from several threads without MPI_THREAD_MULTIPLE).
_SCRATCH = [np.empty(0, dtype=np.uint8)]


def _scratch(n: int, dtype: np.dtype) -> np.ndarray:
    """A (n,) array of ``dtype`` on the shared scratch buffer (contents undefined)."""
    need = n * dtype.itemsize
    if _SCRATCH[0].nbytes < need:
        _SCRATCH[0] = np.empty(need, dtype=np.uint8)
    return _SCRATCH[0][:need].view(dtype)


class ByteCounter:
    """Counts what this rank hands to MPI send calls (bytes and messages); pass to allreduce."""

    def __init__(self) -> None:
        self.bytes = 0
        self.messages = 0

    def add(self, buf: np.ndarray) -> None:
        self.bytes += buf.nbytes
        self.messages += 1


class _Link:
    """The three point-to-point calls the algorithms use, on byte views, with counting."""

    def __init__(self, comm: Comm, counter: ByteCounter | None):
        self.comm, self.counter = comm, counter

    def send(self, buf: np.ndarray, dest: int) -> None:
        self._count(buf)
        self.comm.Send(buf.view(np.uint8), dest=dest, tag=_TAG)

    def recv(self, buf: np.ndarray, source: int) -> None:
        self.comm.Recv(buf.view(np.uint8), source=source, tag=_TAG)

    def sendrecv(self, sendbuf: np.ndarray, dest: int, recvbuf: np.ndarray, source: int) -> None:
        self._count(sendbuf)
        self.comm.Sendrecv(
            sendbuf.view(np.uint8),
            dest=dest,
            sendtag=_TAG,
            recvbuf=recvbuf.view(np.uint8),
            source=source,
            recvtag=_TAG,
        )

    def _count(self, buf: np.ndarray) -> None:
        if self.counter is not None:
            self.counter.add(buf)


def allreduce(
    array: ArrayLike,
    algorithm: str = "ring",
    comm: Comm | None = None,
    *,
    counter: ByteCounter | None = None,
) -> np.ndarray:
    """Sum ``array`` over all ranks of ``comm`` (default: world); every rank gets the sum.

    Returns a new C-contiguous array of the input's shape and dtype; the input is untouched
    (a non-contiguous input is copied first). ``counter`` tallies the bytes this rank sends
    (not available for ``algorithm="mpi"``, whose traffic is the library's business).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown allreduce algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    arr = np.asarray(array)
    if arr.dtype.kind != "f":  # (np.issubdtype costs 2 µs, a tenth of a small allreduce)
        raise ValueError(f"allreduce needs a float array, got dtype {arr.dtype}")
    if counter is not None and algorithm == "mpi":
        raise ValueError("counter is not available for algorithm='mpi'")
    comm = comm if comm is not None else world()
    out = np.array(arr, order="C", copy=True)  # (shape,): the result, reduced in place
    flat = out.reshape(-1)  # (K,) view of out
    rank, size = comm.Get_rank(), comm.Get_size()
    if algorithm == "mpi":
        comm.Allreduce(IN_PLACE, flat, op=SUM)
    elif size > 1 and flat.size > 0:
        link = _Link(comm, counter)
        {"ps": _ps, "tree": _tree, "ring": _ring}[algorithm](flat, rank, size, link)
    return out


def _ps(x: np.ndarray, rank: int, n: int, link: _Link) -> None:
    """Parameter server: rank 0 receives every vector, sums in rank order, sends the sum back."""
    if rank == 0:
        tmp = _scratch(x.size, x.dtype)
        for src in range(1, n):  # in rank order: the sum's association is fixed
            link.recv(tmp, src)
            x += tmp
        for dst in range(1, n):
            link.send(x, dst)
    else:
        link.send(x, 0)
        link.recv(x, 0)


def _tree(x: np.ndarray, rank: int, n: int, link: _Link) -> None:
    """Binomial-tree reduce to rank 0, then binomial-tree broadcast from rank 0.

    Reduce: at step j (mask = 2^j) a rank whose bit j is set sends its partial sum to
    ``rank - mask`` and is done; the others add the partial of ``rank + mask`` if it exists
    (that test is what handles N that is not a power of two). Broadcast runs the same tree
    backwards. ⌈log2 N⌉ steps each way.
    """
    tmp = _scratch(x.size, x.dtype)
    mask = 1
    while mask < n:
        if rank & mask:
            link.send(x, rank - mask)
            break
        if rank + mask < n:
            link.recv(tmp, rank + mask)
            x += tmp
        mask <<= 1
    _tree_bcast(x, rank, n, link)


def _tree_bcast(x: np.ndarray, rank: int, n: int, link: _Link) -> None:
    mask = 1
    while mask < n:  # find the parent: clear the lowest set bit of rank
        if rank & mask:
            link.recv(x, rank - mask)
            break
        mask <<= 1
    mask >>= 1
    while mask > 0:  # children: rank + 2^j for every 2^j below the lowest set bit
        if rank + mask < n:
            link.send(x, rank + mask)
        mask >>= 1


def _ring(x: np.ndarray, rank: int, n: int, link: _Link) -> None:
    """Reduce-scatter then allgather around the ring ``r -> r+1``.

    Reduce-scatter step s = 0..N-2: send chunk (r - s) mod N to the right, receive chunk
    (r - s - 1) mod N from the left and add it to ours. Chunk c thus starts on rank c and
    collects ranks c+1, c+2, ... in that order; after N-1 steps rank r holds the full sum of
    chunk (r + 1) mod N. Allgather step s: send chunk (r + 1 - s) mod N, receive chunk
    (r - s) mod N into place (a copy, no arithmetic, so every rank ends bitwise equal).
    """
    b = bounds(x.size, n)  # chunk i is x[b[i] : b[i+1]] (plain ints: this runs every call)
    right, left = (rank + 1) % n, (rank - 1) % n
    tmp = _scratch(b[1] - b[0], x.dtype)  # chunk 0 is the largest
    for s in range(n - 1):
        c_out, c_in = (rank - s) % n, (rank - s - 1) % n
        m = b[c_in + 1] - b[c_in]
        link.sendrecv(x[b[c_out] : b[c_out + 1]], right, tmp[:m], left)
        x[b[c_in] : b[c_in + 1]] += tmp[:m]
    for s in range(n - 1):
        c_out, c_in = (rank + 1 - s) % n, (rank - s) % n
        link.sendrecv(x[b[c_out] : b[c_out + 1]], right, x[b[c_in] : b[c_in + 1]], left)


def _tree_children(rank: int, n: int) -> int:
    """Number of ranks ``rank`` sends to in the binomial broadcast."""
    low = rank & -rank if rank else 1 << max(n - 1, 0).bit_length()
    return sum(1 for j in range(low.bit_length() - 1) if rank + (1 << j) < n)


def bytes_sent(algorithm: str, n_ranks: int, n_bytes: int, rank: int, itemsize: int = 8) -> int:
    """Exact bytes ``rank`` sends in one allreduce of ``n_bytes`` per rank (K = n_bytes/itemsize).

    Closed forms (c_i = size of ring chunk i, in elements):

    - ps:   root (N-1)·K·s; every other rank K·s.
    - tree: (1[rank > 0] + children(rank))·K·s, children(0) = ⌈log2 N⌉, so the root sends
      ⌈log2 N⌉·K·s and receives as much: ≈ 2·K·log2 N through the busiest rank.
    - ring: (2K - c_{(r+1) mod N} - c_{(r+2) mod N})·s: every chunk except the one the rank
      ends the reduce-scatter owning, every chunk except the one it receives last in the
      allgather; = 2·(N-1)/N·K·s when N divides K.

    All are 0 for N = 1 or K = 0 (nothing is sent). ``mpi`` is the library's and not modelled.
    """
    if algorithm not in ("ps", "tree", "ring"):
        raise ValueError(f"bytes_sent knows 'ps', 'tree', 'ring', not {algorithm!r}")
    if not 0 <= rank < n_ranks:
        raise ValueError(f"rank {rank} outside 0..{n_ranks - 1}")
    if n_bytes % itemsize:
        raise ValueError(f"n_bytes={n_bytes} is not a multiple of itemsize={itemsize}")
    k, n = n_bytes // itemsize, n_ranks
    if n == 1 or k == 0:
        return 0
    if algorithm == "ps":
        return (n - 1) * n_bytes if rank == 0 else n_bytes
    if algorithm == "tree":
        return ((rank > 0) + _tree_children(rank, n)) * n_bytes
    b = bounds(k, n)
    c = [b[i + 1] - b[i] for i in range(n)]
    return (2 * k - c[(rank + 1) % n] - c[(rank + 2) % n]) * itemsize


def max_bytes_sent(algorithm: str, n_ranks: int, n_bytes: int, itemsize: int = 8) -> int:
    """The busiest rank's :func:`bytes_sent`."""
    return max(bytes_sent(algorithm, n_ranks, n_bytes, r, itemsize) for r in range(n_ranks))


def rounds(algorithm: str, n_ranks: int) -> int:
    """Sequential message steps on the critical path (the latency count of the cost model)."""
    if n_ranks == 1:
        return 0
    return {
        "ps": 2 * (n_ranks - 1),
        "tree": 2 * math.ceil(math.log2(n_ranks)),
        "ring": 2 * (n_ranks - 1),
    }[algorithm]
