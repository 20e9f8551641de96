"""The α-β(-γ) cost model of allreduce, and the measurements that fit it.

Sending one message of m bytes costs ``α + β·m`` (α: latency, β: seconds per byte); adding
m bytes of floats into another buffer costs ``γ·m``; copying them ``δ·m``. With N ranks and
K bytes per rank, along the critical path (``splitnet.parallel.collectives`` has the schedules):

    ring  T = 2(N-1)·α + 2(N-1)/N·K·β + (N-1)/N·K·γ + K·δ
    tree  T = 2⌈log2 N⌉·(α + K·β) + ⌈log2 N⌉·K·γ + K·δ
    ps    T = 2(N-1)·(α + K·β) + (N-1)·K·γ + K·δ        (the root serialises everything)
    mpi   T = min(recursive doubling, Rabenseifner) + K·δ, the textbook pair MPICH picks from:
          ⌈log2 N⌉·(α + K·β + K·γ)   and   2⌈log2 N⌉·α + 2(N-1)/N·K·β + (N-1)/N·K·γ

``K·δ`` is the copy ``allreduce`` makes so that the caller's array stays untouched.
α and β come from a ping-pong between ranks 0 and 1 (one-way time = round trip / 2), fitted by
least squares on *relative* residuals: an ordinary fit is dominated by the largest messages
and leaves α (microseconds) at the mercy of their noise (milliseconds). γ and δ are numpy's
in-place add and allocate-and-copy throughput, timed on all ranks at once and at the message
size itself (:func:`local_rates`): they change severalfold between cache- and DRAM-resident
sizes, which a single constant cannot follow. This model has no term for contention between
ranks sharing cores (more ranks than cores): it describes ranks that each own a core.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..mpi import MAX, Comm, wtime

_TAG = 7003


@dataclass(frozen=True)
class CostParams:
    """Seconds: ``alpha`` per message; ``beta``/``gamma``/``delta`` per byte sent/added/copied."""

    alpha: float
    beta: float
    gamma: float = 0.0
    delta: float = 0.0


def fit_alpha_beta(
    sizes: Sequence[float] | np.ndarray, times: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """Least-squares ``t ≈ α + β·m`` minimising ``Σ ((α + β·m_i - t_i) / t_i)²``.

    Relative residuals weigh a 1 µs point like a 10 ms one. Negative estimates (possible
    with noisy data) are clipped to 0: a latency or a per-byte cost cannot be negative.
    """
    m, t = np.asarray(sizes, dtype=np.float64), np.asarray(times, dtype=np.float64)
    if m.shape != t.shape or m.size < 2 or np.any(t <= 0):
        raise ValueError(f"need >= 2 (size, positive time) pairs, got sizes {m} and times {t}")
    a = np.stack([np.ones_like(m), m], axis=1) / t[:, None]  # each row divided by its t_i
    (alpha, beta), *_ = np.linalg.lstsq(a, np.ones_like(t), rcond=None)
    return max(float(alpha), 0.0), max(float(beta), 0.0)


def predict(algorithm: str, n_ranks: int, n_bytes: float, p: CostParams) -> float:
    """Modelled seconds for one allreduce of ``n_bytes`` per rank on ``n_ranks`` ranks."""
    n, k = n_ranks, float(n_bytes)
    copy = k * p.delta
    if n == 1:
        return copy
    lg = math.ceil(math.log2(n))
    frac = (n - 1) / n
    if algorithm == "ring":
        return 2 * (n - 1) * p.alpha + 2 * frac * k * p.beta + frac * k * p.gamma + copy
    if algorithm == "tree":
        return 2 * lg * (p.alpha + k * p.beta) + lg * k * p.gamma + copy
    if algorithm == "ps":
        return 2 * (n - 1) * (p.alpha + k * p.beta) + (n - 1) * k * p.gamma + copy
    if algorithm == "mpi":
        doubling = lg * (p.alpha + k * p.beta + k * p.gamma)
        rabenseifner = 2 * lg * p.alpha + 2 * frac * k * p.beta + frac * k * p.gamma
        return min(doubling, rabenseifner) + copy
    raise ValueError(f"no cost model for algorithm {algorithm!r}")


def ping_pong(
    comm: Comm, sizes: Sequence[int] | np.ndarray, reps: int = 20, warmup: int = 3
) -> np.ndarray:
    """Fastest one-way time (round trip / 2) per message size between ranks 0 and 1.

    The minimum, not the mean: on a shared machine other processes only ever add time, and
    the model describes the machine without them.

    Other ranks sit in the closing barrier. Every rank returns the same array (broadcast from
    rank 0). Needs at least 2 ranks.
    """
    rank = comm.Get_rank()
    if comm.Get_size() < 2:
        raise ValueError(f"ping_pong needs >= 2 ranks, got {comm.Get_size()}")
    out = np.zeros(len(sizes))
    for i, m in enumerate(sizes):
        buf = np.zeros(int(m), dtype=np.uint8)
        samples = []
        comm.Barrier()
        for r in range(warmup + reps):
            if rank == 0:
                t0 = wtime()
                comm.Send(buf, dest=1, tag=_TAG)
                comm.Recv(buf, source=1, tag=_TAG)
                if r >= warmup:
                    samples.append((wtime() - t0) / 2)
            elif rank == 1:
                comm.Recv(buf, source=0, tag=_TAG)
                comm.Send(buf, dest=0, tag=_TAG)
        if rank == 0:
            out[i] = float(np.min(samples))
    comm.Barrier()
    comm.Bcast(out, root=0)
    return out


def local_rates(comm: Comm, n_bytes: int, reps: int = 5) -> tuple[float, float]:
    """(γ, δ) at this size: seconds per byte of numpy's in-place add and of ``allreduce``'s copy.

    Timed on every rank at once (the slowest rank counts), because that is how the algorithms
    run them: the ranks share the memory bandwidth. The copy includes allocating the result,
    as ``allreduce`` does. Per size, because the rates change severalfold between messages
    that fit in the caches and those that do not.
    """
    k = max(n_bytes // 4, 1)
    a, b = np.ones(k, dtype=np.float32), np.ones(k, dtype=np.float32)
    t_add, t_copy = math.inf, math.inf
    for _ in range(reps):
        comm.Barrier()
        t0 = wtime()
        np.add(a, b, out=a)
        t1 = wtime()
        c = np.array(a, copy=True)
        t2 = wtime()
        del c
        t_add = min(t_add, comm.allreduce(t1 - t0, op=MAX))
        t_copy = min(t_copy, comm.allreduce(t2 - t1, op=MAX))
    return t_add / a.nbytes, t_copy / a.nbytes


def calibrate(
    comm: Comm, sizes: Sequence[int] | np.ndarray | None = None, reps: int = 20
) -> tuple[CostParams, np.ndarray, np.ndarray]:
    """Fit α, β from a ping-pong and measure γ, δ at 16 MB; returns (params, sizes, times)."""
    sizes = np.asarray(sizes if sizes is not None else [4**e for e in range(14)])
    times = ping_pong(comm, sizes, reps=reps)
    alpha, beta = fit_alpha_beta(sizes, times)
    gamma, delta = local_rates(comm, 1 << 24)
    return CostParams(alpha, beta, gamma, delta), sizes, times
