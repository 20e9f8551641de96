"""One MLP trained on N ranks by every method, against the clock (issue 12).

    mpiexec -n 2 python -m mpi4py -m splitnet.race --config experiments/race.toml \
        --out results/race.jsonl [--set race.epochs=3 ...]

Every method trains the same net (``seeds.init_seed``) on the same data (``Splits.train``) with
plain SGD (lr, no momentum) on the baseline's minibatch stream s_0, s_1, ... (``sgd.minibatches``
with ``seeds.remaining_order_seed``), T = epochs * ceil(n / B) steps:

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

Clock: ``Barrier``, start, train to the next evaluation point, ``Barrier``, stop; evaluation (test
accuracy, train loss of the full net on all training data, off the clock) then runs untimed.
``compute_s`` / ``comm_s``: the slowest rank's time outside / inside MPI calls (waiting
included). ``bytes`` (cumulative, per rank): the payload this rank hands to MPI for other ranks,
counted at the calls by ``Metered`` (Send/Sendrecv: the buffer; Allreduce: the vector;
Allgather(v): its block; Reduce_scatter: the blocks of the others; Gatherv: its block (root 0);
Scatter(v): the root's blocks for the others). For our ring it is the exact wire traffic.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn
from tqdm import tqdm

from .combinations import Space, paths_of, space_of
from .config import _coerce, add_arguments, from_dict, read_raw
from .data import load_splits
from .model import build_mlp
from .mpi import IN_PLACE, Comm, abort_on_error, world, wtime
from .parallel import compress as cz
from .parallel import dataparallel as dp
from .parallel.tensor_parallel import ChunkedMLP
from .partition import bounds
from .pieces import (
    Params,
    cut,
    dropout_factors,
    inference_net,
    n_values,
    pack,
    piece_neurons,
    recombine,
    scale_for_dropout,
    unpack,
    unscale_recombined,
)
from .pieces import as_mlp as piece_mlp
from .seeds import init_seed, piece_order_seed, remaining_order_seed
from .sgd import accuracy, check_batchnorm_batches, minibatches, sgd, steps_per_epoch
from .split import split_for

METHODS = ("single", "split", "dataparallel", "tensor")
SPLIT_MODES = ("one-shot", "rounds")
EXCHANGES = ("mpi", "ring", "topk")  # dense MPI Allreduce, dense ring, top-k + residual
STRATEGIES = ("random", "weights", "activations", "contiguous", "exhaustive")
SHUFFLES = ("shared", "per-piece")


@dataclass(frozen=True)
class Race:
    """The [race] section of the config."""

    methods: tuple[str, ...] = METHODS
    epochs: int = 5
    eval_every: int = 0  # steps between evaluations; 0: once per epoch
    split_modes: tuple[str, ...] = SPLIT_MODES
    E: int = 20  # local steps per round of split's "rounds" mode (IST)
    strategy: str = "random"  # how split cuts the net (exhaustive: Space.split_at(combination))
    combination: int = 0  # the exhaustive combination / the random draw
    shuffle: str = "shared"  # pieces follow the single stream, or each its own
    exchanges: tuple[str, ...] = EXCHANGES  # data-parallel variants
    topk_ratio: float = 0.01  # fraction of the gradient entries top-k sends
    target: float = 0.97  # time to target: this fraction of single's final accuracy (study)


_LISTS = {"methods": METHODS, "split_modes": SPLIT_MODES, "exchanges": EXCHANGES}


def parse_race(raw: dict[str, Any]) -> Race:
    """The [race] table, checked; ValueError names the key and value."""
    base, out = Race(), {}
    known = {f.name for f in fields(Race)}
    for key, value in raw.items():
        if key not in known:
            raise ValueError(f"unknown key race.{key} (known: {', '.join(sorted(known))})")
        if key in _LISTS:
            if not isinstance(value, list) or not value:
                raise ValueError(f"race.{key} must be a non-empty list, got {value!r}")
            bad = [v for v in value if v not in _LISTS[key]]
            if bad:
                raise ValueError(
                    f"race.{key}: {bad[0]!r} is not one of {', '.join(_LISTS[key])} "
                    f"(race.{key}={value!r})"
                )
            out[key] = tuple(value)
        else:
            out[key] = _coerce(f"race.{key}", value, getattr(base, key))
    r = replace(base, **out)
    for key, allowed in (("strategy", STRATEGIES), ("shuffle", SHUFFLES)):
        if getattr(r, key) not in allowed:
            raise ValueError(f"race.{key}={getattr(r, key)!r} is not one of {', '.join(allowed)}")
    if r.E < 1:
        raise ValueError(f"race.E={r.E} must be >= 1 (steps per round)")
    if r.epochs < 1:
        raise ValueError(f"race.epochs={r.epochs} must be >= 1")
    if r.eval_every < 0:
        raise ValueError(f"race.eval_every={r.eval_every} must be >= 0 (0: every epoch)")
    if not 0 < r.topk_ratio <= 1:
        raise ValueError(f"race.topk_ratio={r.topk_ratio} must lie in (0, 1]")
    if not 0 < r.target <= 1:
        raise ValueError(f"race.target={r.target} must lie in (0, 1]")
    return r


def load(path: str | None, overrides: list[str], ranks: int) -> tuple[Any, Race]:
    """(splitnet Config, Race) from the TOML and ``--set`` items, for a run on ``ranks`` ranks.

    The race owns ``split.strategy``, ``split.groups`` (= N for split) and ``train.shuffle``.
    """
    raw = read_raw(path or None, overrides)
    for section in ("race", "model", "split", "train"):
        if not isinstance(raw.get(section, {}), dict):
            raise ValueError(f"[{section}] must be a table, got {raw[section]!r}")
    race = parse_race(raw.pop("race", {}))
    for section, key in (("split", "strategy"), ("split", "groups"), ("train", "shuffle")):
        if key in raw.get(section, {}):
            raise ValueError(f"{section}.{key} is set by the race: use race.* instead")
    hidden = raw.get("model", {}).get("hidden", [8, 8])
    hidden = hidden if isinstance(hidden, list) else []  # (from_dict names a bad one)
    if "split" in race.methods and any(isinstance(h, int) and ranks > h for h in hidden):
        raise ValueError(
            f"race method 'split' needs N={ranks} ranks <= every hidden width "
            f"(model.hidden={hidden}): rank r holds group r of every layer"
        )
    raw.setdefault("split", {}).update(
        strategy=race.strategy, groups=ranks if "split" in race.methods else 1
    )
    raw.setdefault("train", {})["shuffle"] = race.shuffle
    norm = raw.get("model", {}).get("norm", "none")
    if norm == "batch":
        cannot = [m for m in race.methods if m in ("dataparallel", "tensor")]
        if cannot:
            raise ValueError(
                f"race method {cannot[0]!r} cannot train model.norm='batch' (its replicas or "
                "chunks would normalise different batches): drop it from race.methods or use "
                "model.norm='none'"
            )
        raw["train"].setdefault("engine", "loop")  # the race trains with sgd, never an engine
    cfg = from_dict(raw)
    if "split" in race.methods and race.strategy == "exhaustive":
        count = Space(cfg.model.hidden, ranks, "straight").count
        if not 0 <= race.combination < count:
            raise ValueError(
                f"race.combination={race.combination} is outside the {count} combinations of "
                f"model.hidden={list(cfg.model.hidden)} into k={ranks} groups"
            )
    if cfg.train.momentum != 0:
        raise ValueError(f"train.momentum={cfg.train.momentum}: the race uses plain SGD (0)")
    if cfg.split.variant != "straight":
        raise ValueError(f"split.variant={cfg.split.variant!r}: split runs k = N straight pieces")
    return cfg, race


def variants(race: Race) -> list[dict[str, Any]]:
    """Every (method, options) the race runs, in order."""
    out: list[dict[str, Any]] = []
    for m in race.methods:
        if m == "split":
            for mode in race.split_modes:
                out.append(
                    {
                        "method": m,
                        "mode": mode,
                        "E": race.E if mode == "rounds" else None,
                        "strategy": race.strategy,
                        "shuffle": race.shuffle,
                    }
                )
        elif m == "dataparallel":
            for ex in race.exchanges:
                out.append(
                    {"method": m, "exchange": ex}
                    | ({"topk_ratio": race.topk_ratio} if ex == "topk" else {})
                )
        else:
            out.append({"method": m})
    return out


def label(v: dict[str, Any]) -> str:
    if v["method"] == "split":
        return "split one-shot" if v["mode"] == "one-shot" else f"split E={v['E']}"
    if v["method"] == "dataparallel":
        ex = v["exchange"]
        return f"dp top-{v['topk_ratio']:g}" if ex == "topk" else f"dp {ex}"
    return v["method"]


# -- metering ---------------------------------------------------------------------------------
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


# -- the methods ------------------------------------------------------------------------------
@dataclass
class Problem:
    """What every method trains: the data, the net's shape and seed, the minibatch stream."""

    cfg: Any
    race: Race
    X: torch.Tensor  # (n, d) training data (Splits.train)
    y: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    sizes: list[int]  # [d_in, h_1, ..., h_L, d_out]
    stream: list[torch.Tensor]  # T minibatches of the single run
    per_epoch: int

    @property
    def T(self) -> int:
        return len(self.stream)

    def net(self) -> nn.Module:
        c = self.cfg.model
        return build_mlp(self.sizes, c.activation, seed=init_seed(self.cfg), norm=c.norm)


def problem(cfg: Any, race: Race) -> Problem:
    data = load_splits(cfg.data, cfg.seed)
    (X, y), (Xt, yt) = data.train, data.test
    B = cfg.train.batch_size
    if cfg.model.norm == "batch":
        check_batchnorm_batches(len(X), B, "training")
    stream = minibatches(len(X), B, remaining_order_seed(cfg), epochs=race.epochs)
    sizes = [X.shape[1], *cfg.model.hidden, data.n_classes]
    tensors = (torch.from_numpy(a) for a in (X, y, Xt, yt))
    return Problem(cfg, race, *tensors, sizes, stream, steps_per_epoch(len(X), B))


class Single:
    """The reference: rank 0 runs ``sgd`` on the stream; the other ranks wait at the barrier."""

    def __init__(self, pb: Problem, v: dict, comm: Comm, meter: Metered):
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

    def __init__(self, pb: Problem, v: dict, comm: Comm, meter: Metered):
        self.pb, self.comm, self.meter = pb, comm, meter
        self.rank, cfg = comm.Get_rank(), pb.cfg
        self.E = pb.T if v["mode"] == "one-shot" else v["E"]
        self.paths = paths_of(cfg)  # straight: path p = (p, ..., p)
        self.space = space_of(cfg)
        self.ref = pb.net() if self.rank == 0 else None  # net_r
        self.split, self.counts, self.piece = None, None, None
        seed = piece_order_seed(cfg, pb.race.combination, self.paths[self.rank])
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
                cfg, self.ref, self.pb.race.combination, r, space=self.space, X=X,
                previous=self.split,
            )  # fmt: skip
            parts = []
            for p, path in enumerate(self.paths):
                neurons = piece_neurons(self.split, path)
                params = cut(self.ref, neurons)
                if self.dropout:
                    scale_for_dropout(params, dropout_factors(self.ref, neurons))
                headers[p] = [len(s) for s in neurons]
                parts.append(pack(params))
            self.counts = np.array([len(a) for a in parts], np.int64)
            flat = np.concatenate(parts)
            spec = [flat, self.counts, _displs(self.counts), None]
        mine = np.empty(L, np.int64)
        self.meter.Scatter(headers, mine, root=0)
        sizes = [self.pb.sizes[0], *mine.tolist(), self.pb.sizes[-1]]
        norm = cfg.model.norm
        buf = np.empty(n_values(sizes, norm), np.float32)
        self.meter.Scatterv(spec, buf, root=0)
        self.piece = piece_mlp(unpack(sizes, buf, norm), cfg.model.activation, norm)

    def _gather(self, comm: Comm) -> list[Params] | None:
        """Every piece on rank 0 (Gatherv), unpacked in path order."""
        flat = pack(self.piece)
        recv = spec = None
        if self.rank == 0:
            recv = np.empty(int(self.counts.sum()), np.float32)
            spec = [recv, self.counts, _displs(self.counts), None]
        comm.Gatherv(flat, spec, root=0)
        if self.rank != 0:
            return None
        d_in, d_out = self.pb.sizes[0], self.pb.sizes[-1]
        out = []
        for path, at, c in zip(self.paths, _displs(self.counts), self.counts, strict=True):
            sizes = [d_in, *(len(s) for s in piece_neurons(self.split, path)), d_out]
            out.append(unpack(sizes, recv[at : at + c], self.pb.cfg.model.norm))
        return out

    def _recombined(self, pieces: list[Params]) -> nn.Module:
        s = self.pb.cfg.split
        net = recombine(self.ref, self.split, self.paths, pieces, unheld=s.unheld, output=s.output)
        if self.dropout:
            unscale_recombined(net, self.split, self.paths)
        return net

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


def _displs(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


class DataParallel:
    """Replicas; step t: my contiguous shard of s_t, ``dataparallel.step``, ``apply_update``."""

    def __init__(self, pb: Problem, v: dict, comm: Comm, meter: Metered):
        self.pb, self.meter, self.net = pb, meter, pb.net()
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        n = n_values(pb.sizes)
        self.buffer = np.empty(n, np.float32)  # g_r, then G in place: reused every step
        topk = v["exchange"] == "topk"
        self.comp = cz.make_compressor(
            "topk" if topk else "none", n, residual=True, topk_fraction=pb.race.topk_ratio
        )
        self.algorithm = "mpi" if topk else v["exchange"]

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


class Tensor:
    """``ChunkedMLP``: rank r owns rows r of every layer (same init, sliced, no broadcast)."""

    def __init__(self, pb: Problem, v: dict, comm: Comm, meter: Metered):
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


RUNNERS = {"single": Single, "split": SplitRun, "dataparallel": DataParallel, "tensor": Tensor}


@torch.no_grad()
def evaluate(net: nn.Module, pb: Problem) -> tuple[float, float]:
    """(mean cross-entropy on all training data, test accuracy)."""
    net.eval()
    loss = float(F.cross_entropy(net(pb.X), pb.y))
    return loss, accuracy(net, pb.X_test, pb.y_test)


def eval_points(pb: Problem) -> list[int]:
    every = pb.race.eval_every or pb.per_epoch
    return sorted({*range(every, pb.T, every), pb.T})


def race_one(pb: Problem, v: dict, comm: Comm, tag: dict, quiet: bool) -> list[dict]:
    """Train one method to T steps; a row (on rank 0) at step 0 and every evaluation point."""
    rank = comm.Get_rank()
    meter = Metered(comm)
    runner = RUNNERS[v["method"]](pb, v, comm, meter)
    wall = compute = 0.0
    rows: list[dict] = []
    seen = np.cumsum([0] + [len(b) for b in pb.stream])
    bar = tqdm(total=pb.T, desc=label(v), unit="step", disable=quiet or rank != 0, leave=False)
    lo = 0
    for hi in [0, *eval_points(pb)]:
        comm.Barrier()
        t0, c0 = wtime(), meter.seconds
        if hi > lo:
            runner.train(lo, hi)
        mine = wtime() - t0
        comm.Barrier()
        wall += wtime() - t0
        compute += mine - (meter.seconds - c0)
        bar.update(hi - lo)
        # off the clock: the full net, its accuracy, every rank's meters
        net = runner.full_net()
        stats = comm.gather((compute, meter.seconds, meter.bytes), root=0)
        if rank == 0:
            loss, acc = evaluate(net, pb)
            rows.append(
                {
                    "method": v["method"],
                    "options": {k: x for k, x in v.items() if k != "method"},
                    "label": label(v),
                    "ranks": comm.Get_size(),
                    "step": hi,
                    "epoch": hi / pb.per_epoch,
                    "samples": int(seen[hi]),
                    "wall_s": wall,
                    "compute_s": max(s[0] for s in stats),
                    "comm_s": max(s[1] for s in stats),
                    "bytes": [s[2] for s in stats],
                    "bytes_max": max(s[2] for s in stats),
                    "train_loss": loss,
                    "test_accuracy": acc,
                    **tag,
                }
            )
        lo = hi
    bar.close()
    return rows


def race_all(args: argparse.Namespace, cfg: Any, race: Race, comm: Comm, f: TextIO | None) -> None:
    """Every variant in turn; rank 0 appends its rows to ``f`` as each finishes."""
    torch.set_num_threads(1)  # one core per rank: the race compares ranks, not BLAS threads
    threadpool_limits(1)  # numpy's BLAS too (ChunkedMLP's products)
    pb = problem(cfg, race)
    # start-up off the clock: torch.optim's first use imports for about a second
    sgd(pb.net(), pb.X, pb.y, pb.stream[:1], lr=cfg.train.lr)
    full = config_dict(cfg, race)
    tag = {"seed": cfg.seed, "config_hash": _hash(full)}
    if comm.Get_rank() == 0:
        Path(str(args.out) + ".config.json").write_text(json.dumps(full, indent=1) + "\n")
    for v in variants(race):
        rows = race_one(pb, v, comm, tag, args.quiet)
        if comm.Get_rank() == 0:
            write_rows(f, rows)
            last = rows[-1]
            print(
                f"{label(v):>16}: accuracy {last['test_accuracy']:.4f}  wall {last['wall_s']:.2f} s"
                f"  bytes/rank {last['bytes_max'] / 1e6:.2f} MB",
                file=sys.stderr,
            )


def _hash(d: dict) -> str:
    """12 hex digits of the run's config (the keys sorted): rows say what made them."""
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


# -- setup ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m splitnet.race",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(ap, "race config (experiments/race.toml)", "race.epochs=3")
    ap.add_argument("--out", metavar="PATH", default="results/race.jsonl", help="JSON Lines rows")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def setup(argv: list[str] | None, comm: Comm) -> tuple[tuple[str, Any], TextIO | None]:
    """Parse and check on rank 0; every rank gets the verdict ("run", ...) or ("exit", code)."""
    verdict, f = None, None
    if comm.Get_rank() == 0:
        try:
            args = parse_args(argv)
            cfg, race = load(args.config, args.overrides, comm.Get_size())
            load_splits(cfg.data, cfg.seed)  # bad data: a message now, not after start-up
            try:
                dp.check_out(args.out)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                f = open(args.out, "w")  # noqa: SIM115 - held for the whole run, closed in main
            except OSError as e:
                raise ValueError(f"--out={args.out!r} is not writable: {e.strerror}") from None
            verdict = ("run", (args, cfg, race))
        except SystemExit as e:  # argparse: --help or a bad flag (already printed)
            verdict = ("exit", e.code)
        except ValueError as e:
            print(f"splitnet.race: error: {e}", file=sys.stderr)
            verdict = ("exit", 2)
    return comm.bcast(verdict, root=0), f


# -- the race ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    comm = world()
    with abort_on_error(comm):
        (kind, payload), f = setup(argv, comm)
        if kind == "exit":
            return payload or 0
        try:
            args, cfg, race = payload
            race_all(args, cfg, race, comm, f)
        finally:
            if f is not None:
                f.close()
    return 0


def write_rows(f: TextIO, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        f.write(json.dumps(r) + "\n")
    f.flush()


def config_dict(cfg: Any, race: Race) -> dict[str, Any]:
    return {**cfg.to_dict(), "race": asdict(race)}


if __name__ == "__main__":
    sys.exit(main())
