"""What the race's modelled clock measures in one process: every method's per-step compute at N
ranks, and split's accuracy with k pieces (``experiments/race/run.py`` projects with both).

``measure`` times, on one core, what the busiest of N ranks computes per step
(``costmodel.StepCompute``): single's SGD step; a data-parallel replica's step on its ⌈B/N⌉
shard; a split piece's SGD step (widths ⌈h/N⌉); tensor-parallel rank 0's rows, its collectives
replaced by ``SoloComm``'s no-ops; the top-k selection; and split's rank-0 work per round.
``split_curves`` trains split with k pieces in process (``rounds.train_rounds``: the race's
algorithm, seeds and stream) for the k no run on this machine reaches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from .data import Splits
from .model import build_mlp
from .mpi import SerialComm
from .parallel import compress as cz
from .parallel import dp
from .parallel.costmodel import StepCompute
from .parallel.tensor_parallel import ChunkedMLP
from .partition import ceil_div
from .pieces import n_values, pack, piece_neurons, piece_params, recombine
from .race import Race, problem
from .rounds import train_rounds
from .sgd import sgd
from .split import random_split


class SoloComm(SerialComm):
    """Rank 0 of a pretend ``size``-rank world whose collectives do nothing: ChunkedMLP's
    compute of rank 0's rows, without its messages."""

    def __init__(self, size: int):
        self.size = size

    def Get_size(self) -> int:
        return self.size

    def Allgatherv(self, *a: Any) -> None:
        pass

    def Reduce_scatter(self, *a: Any) -> None:
        pass


def seconds_per_call(fn: Callable[[], Any], reps: int, calls: int) -> float:
    """The minimum over ``reps`` of the mean time of ``calls`` calls (after one warm-up call):
    on a shared machine other processes only ever add time."""
    fn()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def measure(cfg: Any, race: Race, ns: Sequence[int], reps: int, steps: int) -> StepCompute:
    """Per-step compute (s) of each method on the busiest rank of each N in ``ns``, timed here
    on one core (as every rank of the race: one torch and one BLAS thread)."""
    torch.set_num_threads(1)
    threadpool_limits(1)  # ChunkedMLP's products
    pb = problem(cfg, race)
    B, lr, sizes = cfg.train.batch_size, cfg.train.lr, pb.sizes
    hidden = sizes[1:-1]
    X, y = pb.X[: 4 * B], pb.y[: 4 * B]
    idx = [torch.arange(B)] * steps  # one sgd call of `steps` steps: as the race calls it
    net = pb.net()
    single = seconds_per_call(lambda: sgd(net, X, y, idx, lr=lr), reps, 1) / steps
    comp = cz.make_compressor("topk", n_values(sizes), True, topk_fraction=race.topk_ratio)
    g = dp.flat_grad(net)
    compress = seconds_per_call(lambda: comp.compress(g), reps, max(3, steps // 4))
    split2 = random_split(hidden, 2, 0)
    paths = [(0,) * len(hidden), (1,) * len(hidden)]

    def sync() -> None:  # rank 0 per round: split, cut + pack, recombine
        pieces = [piece_params(net, piece_neurons(split2, q)) for q in paths]
        [pack(q) for q in pieces]
        recombine(net, split2, paths, pieces)

    sync_s = seconds_per_call(sync, reps, 3)
    per_dp, per_piece, per_tensor = {}, {}, {}
    xn, yn = X[:B].numpy(), y[:B].numpy()
    for N in ns:
        b = ceil_div(B, N)  # the busiest rank's shard

        def dp_step(b: int = b) -> None:
            dp.local_step(net, X[:b], y[:b], B, None)
            dp.apply_update(net, dp.flat_grad(net), 0.0)

        per_dp[N] = seconds_per_call(dp_step, reps, steps)
        if N <= min(hidden):
            piece = build_mlp([sizes[0], *(ceil_div(h, N) for h in hidden), sizes[-1]])
            step = seconds_per_call(lambda p=piece: sgd(p, X, y, idx, lr=lr), reps, 1)
            per_piece[N] = step / steps
        tp = ChunkedMLP.from_torch(pb.net(), SoloComm(N), broadcast=False)
        tp.plan(B).clear()  # the rows other ranks would send: zeros
        per_tensor[N] = seconds_per_call(lambda tp=tp: tp.train_step(xn, yn, 0.0), reps, steps)
    return StepCompute(single, compress, sync_s, per_dp, per_piece, per_tensor)


def split_curves(cfg: Any, race: Race, ks: Sequence[int]) -> dict[str, dict[int, list]]:
    """Test accuracy of split with k pieces trained in process (the batched engine): one-shot
    after every 2 epochs, and the rounds mode's curve. {mode: {k: [(step, accuracy), ...]}}."""
    torch.set_num_threads(1)
    pb = problem(cfg, race)
    train = (pb.X.numpy(), pb.y.numpy())
    data = Splits(train, train, (pb.X_test.numpy(), pb.y_test.numpy()), pb.sizes[-1])
    net0 = pb.net()
    out: dict[str, dict[int, list]] = {"one-shot": {}, "rounds": {}}
    for k in ks:
        ck = replace(
            cfg, split=replace(cfg.split, groups=k), train=replace(cfg.train, engine="batched")
        )
        curve = []
        for e in range(2, race.epochs + 1, 2):
            res = train_rounds(net0, data, ck, [0], total_steps=e * pb.per_epoch)[0]
            curve.append((e * pb.per_epoch, res.curve[-1][1]))
        out["one-shot"][k] = curve
        ck = replace(ck, split=replace(ck.split, resplit_every=race.E))
        out["rounds"][k] = train_rounds(net0, data, ck, [0], total_steps=pb.T)[0].curve
        print(f"split k={k}: one-shot {curve[-1][1]:.4f}, rounds {out['rounds'][k][-1][1]:.4f}")
    return out
