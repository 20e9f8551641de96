"""The race's competitors: each method trains one MLP on N ranks (``splitnet.race`` drives them).

A method is a class ``(problem, variant, comm, meter)`` with ``train(lo, hi)`` (steps [lo, hi) of
the stream, on the clock) and ``full_net()`` (the whole net on rank 0, off the clock). They share
a ``Problem``: the data, the net's sizes and seed, and the single run's minibatch stream
s_0, s_1, ... of T steps (plain SGD, lr, no momentum):

    single        rank 0: sgd(net, s_lo..s_hi); the other ranks idle
    split         k = N pieces, rank p holds piece p only (``rounds.py``'s algorithm over MPI):
                  round r = steps [rE, (r+1)E):  rank 0 splits net_r (split_for), Scatterv the
                  packed pieces; rank p: sgd(piece_p, its stream); Gatherv to rank 0, which
                  recombines net_{r+1} (and keeps net_r: the value of weights no piece holds).
                  one-shot: E = T (the poster); rounds: E = race.E (IST)
    dataparallel  s_t cut into N contiguous shards (partition.bounds); g_r = sum_shard grad/B;
                  G = sum_r g_r by MPI Allreduce or our ring, or top-k + residual (Allgatherv);
                  w -= lr G                          (= single up to float rounding when dense)
    tensor        ChunkedMLP: rank r owns rows r of every layer; Allgatherv per layer forward,
                  Reduce_scatter per layer backward

A ``Variant`` names one competitor: the method and the options it reads (split's mode and E,
data-parallel's exchange); ``RUNNERS[variant.method]`` is its class.

``Metered`` counts the payload a rank hands to MPI for other ranks, at the calls (Send/Sendrecv:
the buffer; Allreduce: the vector; Allgather(v): its block; Reduce_scatter: the blocks of the
others; Gatherv: its block (root 0); Scatter(v): the root's blocks for the others), and times
them; for our ring it is the exact wire traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .combinations import paths_of, space_of
from .model import build_mlp
from .mpi import IN_PLACE, Comm, wtime
from .parallel import compress as cz
from .parallel import dp
from .parallel.tensor_parallel import ChunkedMLP
from .partition import bounds, displacements
from .pieces import (
    Params,
    as_mlp,
    dropout_factors,
    inference_net,
    n_values,
    pack,
    piece_neurons,
    piece_params,
    scale_for_dropout,
    unpack,
)
from .rounds import recombined_net
from .seeds import init_seed, piece_order_seed
from .sgd import accuracy, minibatches, sgd
from .split import split_for


def _nbytes(spec: Any) -> int:
    return (spec[0] if isinstance(spec, (list, tuple)) else spec).nbytes


class Metered:
    """A communicator that counts the payload this rank hands to MPI and times every call."""

    def __init__(self, comm: Comm):
        self.comm, self.bytes, self.seconds = comm, 0, 0.0
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.comm, name)
        if not callable(attr) or name.startswith("Get_"):
            return attr
        return self._timed(attr, lambda *a, **k: 0)

    def _timed(self, call: Callable, count: Callable[..., int]) -> Callable:
        def run(*args: Any, **kwargs: Any) -> Any:
            if self.size > 1:  # one rank sends nothing to anyone
                self.bytes += count(*args, **kwargs)
            t0 = wtime()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds += wtime() - t0

        return run

    def Get_rank(self) -> int:
        return self.rank

    def Get_size(self) -> int:
        return self.size

    def _own(self, spec: Any, itemsize: int) -> int:
        counts = spec[1][0] if isinstance(spec[1], tuple) else spec[1]
        return int(counts[self.rank]) * itemsize

    def Send(self, buf: Any, *a: Any, **k: Any) -> None:
        self._timed(self.comm.Send, lambda b, *_, **__: _nbytes(b))(buf, *a, **k)

    def Sendrecv(self, sendbuf: Any, *a: Any, **k: Any) -> None:
        self._timed(self.comm.Sendrecv, lambda b, *_, **__: _nbytes(b))(sendbuf, *a, **k)

    def Allreduce(self, sendbuf: Any, recvbuf: Any, **k: Any) -> None:
        n = _nbytes(recvbuf if sendbuf is IN_PLACE else sendbuf)
        self._timed(self.comm.Allreduce, lambda *_, **__: n)(sendbuf, recvbuf, **k)

    def Allgather(self, sendbuf: Any, recvbuf: Any) -> None:
        self._timed(self.comm.Allgather, lambda *_: _nbytes(sendbuf))(sendbuf, recvbuf)

    def Allgatherv(self, sendbuf: Any, recvbuf: Any) -> None:
        if sendbuf is IN_PLACE:  # ChunkedMLP: my block of the receive buffer
            n = self._own(recvbuf, recvbuf[0].itemsize)
        else:
            n = _nbytes(sendbuf)
        self._timed(self.comm.Allgatherv, lambda *_: n)(sendbuf, recvbuf)

    def Reduce_scatter(self, sendbuf: Any, recvbuf: Any, counts: Any) -> None:
        n = _nbytes(sendbuf) - int(counts[self.rank]) * sendbuf.itemsize
        self._timed(self.comm.Reduce_scatter, lambda *_: n)(sendbuf, recvbuf, counts)

    def Gatherv(self, sendbuf: Any, recvbuf: Any, root: int = 0) -> None:
        n = 0 if self.rank == root else _nbytes(sendbuf)
        self._timed(self.comm.Gatherv, lambda *_, **__: n)(sendbuf, recvbuf, root=root)

    def Scatter(self, sendbuf: Any, recvbuf: Any, root: int = 0) -> None:
        n = _nbytes(sendbuf) - _nbytes(recvbuf) if self.rank == root else 0
        self._timed(self.comm.Scatter, lambda *_, **__: n)(sendbuf, recvbuf, root=root)

    def Scatterv(self, sendbuf: Any, recvbuf: Any, root: int = 0) -> None:
        n = _nbytes(sendbuf) - _nbytes(recvbuf) if self.rank == root else 0
        self._timed(self.comm.Scatterv, lambda *_, **__: n)(sendbuf, recvbuf, root=root)


@dataclass(frozen=True)
class Variant:
    """One competitor of the race: a method and the options it reads (``race.variants``)."""

    method: str  # single | split | dataparallel | tensor
    mode: str | None = None  # split: "one-shot" (one sync, after T steps) or "rounds"
    E: int | None = None  # split rounds: local steps per round (IST)
    strategy: str | None = None  # split: how rank 0 cuts the net (race.strategy)
    shuffle: str | None = None  # split: the pieces' minibatch streams (race.shuffle)
    exchange: str | None = None  # dataparallel: "mpi" | "ring" (dense) | "topk" (+ residual)
    topk_ratio: float | None = None  # dataparallel topk: the fraction of entries sent

    @property
    def label(self) -> str:
        """The name in rows, tables and figures: "split E=20", "dp top-0.01", "tensor", ..."""
        if self.method == "split":
            return "split one-shot" if self.mode == "one-shot" else f"split E={self.E}"
        if self.method == "dataparallel":
            ex = self.exchange
            return f"dp top-{self.topk_ratio:g}" if ex == "topk" else f"dp {ex}"
        return self.method

    @property
    def options(self) -> dict[str, Any]:
        """A row's ``options``: what this method reads (split one-shot's E is None)."""
        if self.method == "split":
            return {
                "mode": self.mode,
                "E": self.E,
                "strategy": self.strategy,
                "shuffle": self.shuffle,
            }
        if self.method == "dataparallel":
            topk = {"topk_ratio": self.topk_ratio} if self.exchange == "topk" else {}
            return {"exchange": self.exchange} | topk
        return {}

    @property
    def exact(self) -> bool:
        """Computes single's SGD, up to float rounding (dense data-parallel, tensor-parallel)."""
        return self.method == "tensor" or (
            self.method == "dataparallel" and self.exchange != "topk"
        )

    def steps_per_sync(self, T: int) -> int:
        """Split's local steps between syncs in a run of T steps (one-shot: T)."""
        return T if self.mode == "one-shot" else int(self.E)


@dataclass
class Problem:
    """What every method trains: the data, the net's shape and seed, the minibatch stream."""

    cfg: Any
    X: torch.Tensor  # (n, d) training data (Splits.train)
    y: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    sizes: list[int]  # [d_in, h_1, ..., h_L, d_out]
    stream: list[torch.Tensor]  # T minibatches of the single run
    per_epoch: int
    combination: int = 0  # split: the exhaustive combination / the random draw (race.combination)

    @property
    def T(self) -> int:
        return len(self.stream)

    def net(self) -> nn.Module:
        c = self.cfg.model
        return build_mlp(self.sizes, c.activation, seed=init_seed(self.cfg), norm=c.norm)


class Single:
    """The reference: rank 0 runs ``sgd`` on the stream; the other ranks wait at the barrier."""

    def __init__(self, pb: Problem, v: Variant, comm: Comm, meter: Metered):
        self.pb, self.net = pb, pb.net() if comm.Get_rank() == 0 else None

    def train(self, lo: int, hi: int) -> None:
        if self.net is not None:
            sgd(self.net, self.pb.X, self.pb.y, self.pb.stream[lo:hi], lr=self.pb.cfg.train.lr)

    def full_net(self) -> nn.Module | None:
        return self.net


class SplitRun:
    """k = N straight pieces, piece p on rank p; rounds of E steps (one-shot: E = T).

    Rank 0 also keeps net_r between syncs: recombination needs the weights no piece holds
    (``split.unheld = "pretrained"``); it is never trained.
    """

    def __init__(self, pb: Problem, v: Variant, comm: Comm, meter: Metered):
        self.pb, self.comm, self.meter = pb, comm, meter
        self.rank, cfg = comm.Get_rank(), pb.cfg
        self.E = v.steps_per_sync(pb.T)
        self.paths = paths_of(cfg)  # straight: path p = (p, ..., p)
        self.space = space_of(cfg)
        self.ref = pb.net() if self.rank == 0 else None  # net_r
        self.split, self.counts, self.piece = None, None, None
        seed = piece_order_seed(cfg, pb.combination, self.paths[self.rank])
        n, B = len(pb.X), cfg.train.batch_size
        self.stream = minibatches(n, B, seed, steps=pb.T)
        self.dropout = cfg.split.piece_scale == "dropout"

    def train(self, lo: int, hi: int) -> None:
        t = lo
        while t < hi:
            end = min(hi, (t // self.E + 1) * self.E)  # never past the round's end
            if self.piece is None:
                self._distribute(t // self.E)
            sgd(self.piece, self.pb.X, self.pb.y, self.stream[t:end], lr=self.pb.cfg.train.lr)
            if end % self.E == 0 or end == self.pb.T:
                self._collect()
            t = end

    def _distribute(self, r: int) -> None:
        """Rank 0 splits net_r and Scatterv's piece p to rank p (shapes first, by Scatter)."""
        L, cfg = len(self.pb.sizes) - 2, self.pb.cfg
        headers, flat, spec = np.zeros((self.comm.Get_size(), L), np.int64), None, None
        if self.rank == 0:
            X = self.pb.X.numpy()
            self.split = split_for(
                cfg, self.ref, self.pb.combination, r, space=self.space, X=X,
                previous=self.split,
            )  # fmt: skip
            parts = []
            for p, path in enumerate(self.paths):
                neurons = piece_neurons(self.split, path)
                params = piece_params(self.ref, neurons)
                if self.dropout:
                    scale_for_dropout(params, dropout_factors(self.ref, neurons))
                headers[p] = [len(s) for s in neurons]
                parts.append(pack(params))
            self.counts = np.array([len(a) for a in parts], np.int64)
            flat = np.concatenate(parts)
            spec = [flat, self.counts, displacements(self.counts), None]
        mine = np.empty(L, np.int64)
        self.meter.Scatter(headers, mine, root=0)
        sizes = [self.pb.sizes[0], *mine.tolist(), self.pb.sizes[-1]]
        norm = cfg.model.norm
        buf = np.empty(n_values(sizes, norm), np.float32)
        self.meter.Scatterv(spec, buf, root=0)
        self.piece = as_mlp(unpack(sizes, buf, norm), cfg.model.activation, norm)

    def _gather(self, comm: Comm) -> list[Params] | None:
        """Every piece on rank 0 (Gatherv), unpacked in path order."""
        flat = pack(self.piece)
        recv = spec = None
        if self.rank == 0:
            recv = np.empty(int(self.counts.sum()), np.float32)
            spec = [recv, self.counts, displacements(self.counts), None]
        comm.Gatherv(flat, spec, root=0)
        if self.rank != 0:
            return None
        d_in, d_out = self.pb.sizes[0], self.pb.sizes[-1]
        out = []
        for path, at, c in zip(self.paths, displacements(self.counts), self.counts, strict=True):
            sizes = [d_in, *(len(s) for s in piece_neurons(self.split, path)), d_out]
            out.append(unpack(sizes, recv[at : at + c], self.pb.cfg.model.norm))
        return out

    def _recombined(self, pieces: list[Params]) -> nn.Module:
        return recombined_net(self.ref, self.split, self.paths, pieces, self.pb.cfg)

    def _collect(self) -> None:
        pieces = self._gather(self.meter)
        if self.rank == 0:
            self.ref = self._recombined(pieces)
        self.piece = None

    def full_net(self) -> nn.Module | None:
        """net_r, or the recombination of the pieces mid-round (both off the meter); a BatchNorm
        net with its statistics re-estimated on the training data (``split.norm_stats``)."""
        if self.piece is None:
            net = self.ref
        else:
            pieces = self._gather(self.comm)
            net = self._recombined(pieces) if self.rank == 0 else None
        if net is None:
            return None
        return inference_net(net, self.pb.X, self.pb.cfg.split.norm_stats)


class DataParallel:
    """Replicas; step t: my contiguous shard of s_t, ``dataparallel.step``, ``apply_update``."""

    def __init__(self, pb: Problem, v: Variant, comm: Comm, meter: Metered):
        self.pb, self.meter, self.net = pb, meter, pb.net()
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        n = n_values(pb.sizes)
        self.buffer = np.empty(n, np.float32)  # g_r, then G in place: reused every step
        topk = v.exchange == "topk"
        extra = {"topk_fraction": v.topk_ratio} if topk else {}
        self.comp = cz.make_compressor("topk" if topk else "none", n, residual=True, **extra)
        self.algorithm = "mpi" if topk else v.exchange

    def train(self, lo: int, hi: int) -> None:
        X, y, lr = self.pb.X, self.pb.y, self.pb.cfg.train.lr
        for b in self.pb.stream[lo:hi]:
            a, c = bounds(len(b), self.size)[self.rank : self.rank + 2]
            idx = b[a:c]
            st = dp.step(
                self.net, X[idx], y[idx], len(b), self.meter, self.comp, self.algorithm,
                buffer=self.buffer,
            )  # fmt: skip
            dp.apply_update(self.net, st.total, lr)

    def full_net(self) -> nn.Module | None:
        return self.net if self.rank == 0 else None


class TensorParallel:
    """``ChunkedMLP``: rank r owns rows r of every layer (same init, sliced, no broadcast)."""

    def __init__(self, pb: Problem, v: Variant, comm: Comm, meter: Metered):
        self.pb, self.comm, self.meter = pb, comm, meter
        self.tp = ChunkedMLP.from_torch(pb.net(), meter, broadcast=False)
        self.X, self.y = pb.X.numpy(), pb.y.numpy()

    def train(self, lo: int, hi: int) -> None:
        for b in self.pb.stream[lo:hi]:
            idx = b.numpy()
            self.tp.train_step(self.X[idx], self.y[idx], self.pb.cfg.train.lr)

    def full_net(self) -> nn.Module | None:
        self.tp.comm = self.comm  # assembling the net for evaluation is off the meter
        try:
            net = self.tp.to_torch()
        finally:
            self.tp.comm = self.meter
        return net if self.comm.Get_rank() == 0 else None


RUNNERS = {
    "single": Single,
    "split": SplitRun,
    "dataparallel": DataParallel,
    "tensor": TensorParallel,
}


@torch.no_grad()
def evaluate(net: nn.Module, pb: Problem) -> tuple[float, float]:
    """(mean cross-entropy on all training data, test accuracy)."""
    net.eval()
    loss = float(F.cross_entropy(net(pb.X), pb.y))
    return loss, accuracy(net, pb.X_test, pb.y_test)
