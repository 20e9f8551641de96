"""The α-β(-γ) cost model of the collectives, the measurements that fit it, and the race's
modelled clock built on it.

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

The other collectives the race uses (recursive doubling / Bruck; m, K bytes per rank)::

    allgather       T = ⌈log2 N⌉·α + (N-1)·m·β
    reduce_scatter  T = ⌈log2 N⌉·α + (N-1)/N·K·(β + γ)

The race's modelled clock (:class:`RaceClock`) predicts seconds per training step on N ranks:
each method's measured per-step compute on its busiest rank (:class:`StepCompute`, one-rank
microbenchmarks: ``splitnet.race_bench``) plus its messages in this model. With n the net's
parameters, n_p a piece's (widths ⌈h/N⌉), B the batch, w_l the layer widths::

    single         c_single
    dp mpi / ring  c_dp(N) + allreduce(N, 4n)
    dp top-k       c_dp(N) + c_compress + allgather(N, 4) + 2·allgather(N, 4k),  k = ratio·n
    tensor         c_tp(N) + Σ_l allgather(N, 4·w_l·B/N) + Σ_hidden reduce_scatter(N, 4·h·B)
    split          c_piece(N) + (c_sync + 2(N-1)·(α + 4·n_p·β)) / E   (one sync per E steps)

Speed-up in time to a target: ``steps_single · c_single / (steps · step_time)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, TypeVar

import numpy as np

from ..mpi import MAX, Comm, wtime
from ..partition import ceil_div
from ..pieces import n_values

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


def link(gbit_per_s: float, alpha_s: float, like: CostParams) -> CostParams:
    """A network link of ``gbit_per_s`` and ``alpha_s`` per message; γ and δ of ``like``."""
    return CostParams(alpha_s, 8 / (gbit_per_s * 1e9), like.gamma, like.delta)


def allgather(N: int, m: float, p: CostParams) -> float:
    """N blocks of ``m`` bytes to everyone: ⌈log2 N⌉ latencies (recursive doubling / Bruck),
    (N-1)·m bytes received."""
    return 0.0 if N == 1 else math.ceil(math.log2(N)) * p.alpha + (N - 1) * m * p.beta


def reduce_scatter(N: int, K: float, p: CostParams) -> float:
    """``K`` bytes per rank summed, each rank keeping its 1/N: ⌈log2 N⌉ latencies,
    (N-1)/N·K bytes sent and added."""
    frac = (N - 1) / N
    return 0.0 if N == 1 else math.ceil(math.log2(N)) * p.alpha + frac * K * (p.beta + p.gamma)


# -- the race's modelled clock -----------------------------------------------------------------
PerN = Mapping[int, float]  # N -> seconds, measured at some N
V = TypeVar("V")


@dataclass(frozen=True)
class StepCompute:
    """Seconds of compute per training step on a method's busiest rank, no messages.

    Measured on one rank (``splitnet.race_bench.measure``); the tables run over the N measured.
    """

    single: float  # sgd on B samples, the full net
    compress: float  # top-k selection of the full gradient
    sync: float  # split's rank-0 work per round: split, cut + pack the pieces, recombine
    dp: PerN  # a replica's step on its ⌈B/N⌉-sample shard
    piece: PerN  # sgd on B samples of a piece of widths ⌈h/N⌉
    tensor: PerN  # ChunkedMLP's step of rank 0's rows, collectives free

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> StepCompute:
        """From ``to_json``'s dict read back from JSON (whose keys are strings)."""
        per_n = {k: {int(n): float(t) for n, t in d[k].items()} for k in ("dp", "piece", "tensor")}
        return cls(d["single"], d["compress"], d["sync"], **per_n)


def nearest(table: Mapping[int, V], N: int) -> V:
    """``table``'s value at the measured N closest to ``N`` in log scale (beyond: the last)."""
    return table[min(table, key=lambda k: abs(math.log2(k) - math.log2(N)))]


class Competitor(Protocol):
    """What the clock reads of a race variant (``splitnet.race_methods.Variant``)."""

    @property
    def method(self) -> str: ...
    @property
    def exchange(self) -> str | None: ...
    @property
    def topk_ratio(self) -> float | None: ...
    def steps_per_sync(self, T: int) -> int: ...


@dataclass(frozen=True)
class RaceClock:
    """Predicted seconds per step of every race method on N ranks (the module docstring's
    table), for the net ``sizes`` = [d_in, h_1, ..., h_L, d_out] at batch ``batch`` in a run
    of ``steps`` steps, on the links ``params``."""

    compute: StepCompute
    sizes: tuple[int, ...]
    batch: int
    steps: int
    params: CostParams

    def step_time(self, v: Competitor, N: int) -> float:
        """Seconds per step of ``v`` on N ranks: its compute at N plus its messages."""
        model = {
            "single": self._single,
            "split": self._split,
            "dataparallel": self._dataparallel,
            "tensor": self._tensor,
        }
        if v.method not in model:
            raise ValueError(f"no modelled clock for race method {v.method!r}")
        return model[v.method](v, N)

    def speedup(self, v: Competitor, N: int, steps: float, single_steps: float) -> float:
        """Time to target of single over that of ``v`` on N ranks (each's steps to it)."""
        return single_steps * self.compute.single / (steps * self.step_time(v, N))

    def _single(self, v: Competitor, N: int) -> float:
        return self.compute.single

    def _dataparallel(self, v: Competitor, N: int) -> float:
        n, p, c = n_values(self.sizes), self.params, self.compute
        if v.exchange == "topk":
            k = max(1, round((v.topk_ratio or 0.0) * n))
            sent = allgather(N, 4, p) + 2 * allgather(N, 4 * k, p)  # count, indices, values
            return nearest(c.dp, N) + c.compress + sent
        return nearest(c.dp, N) + predict(str(v.exchange), N, 4 * n, p)

    def _tensor(self, v: Competitor, N: int) -> float:
        B, p, hidden = self.batch, self.params, self.sizes[1:-1]
        forward = sum(allgather(N, w * B * 4 / N, p) for w in self.sizes[1:])
        backward = sum(reduce_scatter(N, h * B * 4, p) for h in hidden)
        return nearest(self.compute.tensor, N) + forward + backward

    def _split(self, v: Competitor, N: int) -> float:
        """Scatterv and Gatherv go through rank 0: 2(N-1) messages of a piece each sync."""
        s, p = self.sizes, self.params
        n_p = n_values([s[0], *(ceil_div(h, N) for h in s[1:-1]), s[-1]])
        sync = self.compute.sync + 2 * (N - 1) * (p.alpha + 4 * n_p * p.beta)
        return nearest(self.compute.piece, N) + sync / v.steps_per_sync(self.steps)
