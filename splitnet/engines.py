"""Engines: train many pieces, each on its own minibatch steps. Same API, two engines.

    trained = train_pieces(jobs, X, y, streams, steps=(lo, hi), lr=..., momentum=...,
                           engine="batched")

A ``PieceJob`` names the net a piece is cut from, the piece's hidden neurons S_l, the seed of
its minibatch stream (``streams[seed]``, the list from ``sgd.minibatches``) and, with momentum,
the net of momentum buffers cut alike. Every piece takes the steps ``lo .. hi-1`` of its
stream, so a run cut into rounds sees the same data as one that is not.

    loop      one piece at a time through ``sgd.sgd`` (the reference)
    batched   pieces grouped by shape into stacks of at most ``max_stack`` and trained by
              ``batched.train_stack`` (the vectorised twin, 40x+ faster on small pieces); a
              piece's result does not depend on its stack-mates

A piece's ``seconds`` is its share of the training time (its stack's, for batched).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .batched import MIN_COLUMNS, stack_params, train_stack
from .config import ENGINES
from .model import MLP
from .partition import ceil_div
from .pieces import (
    Params,
    as_mlp,
    dropout_factors,
    layout_of,
    params_of,
    piece_params,
    scale_for_dropout,
)
from .sgd import sgd

MAX_STACK = 1024  # pieces trained together; larger job lists are split into several stacks


@dataclass(frozen=True)
class PieceJob:
    """One piece to train: the net it is cut from, its neurons, its stream, its buffers."""

    source: MLP  # the net the piece is cut from
    neurons: tuple[np.ndarray, ...]  # S_l of every hidden layer
    order_seed: int  # its minibatch stream: streams[order_seed]
    buffers: MLP | None = None  # momentum buffers of ``source`` (same shape), cut alike
    dropout_scale: bool = False  # train with inverted-dropout scaled weights (pieces module)


@dataclass
class TrainedPiece:
    """A trained piece: its ``Params``, its momentum buffers and its training time."""

    params: Params
    buffers: Params | None  # momentum buffers after training (None: momentum 0)
    seconds: float


def train_pieces(
    jobs: Sequence[PieceJob],
    X: torch.Tensor,
    y: torch.Tensor,
    streams: dict[int, list[torch.Tensor]],
    *,
    steps: tuple[int, int],
    lr: float,
    momentum: float = 0.0,
    engine: str = "batched",
    shared_order: bool = False,
    max_stack: int = MAX_STACK,
) -> list[TrainedPiece]:
    """Train every job on steps ``[lo, hi)`` of its stream; results in job order.

    ``shared_order``: every job follows the same stream (``train.shuffle = "shared"``), so the
    batched engine runs a stack's first layer as one GEMM. It is the caller's statement, never
    inferred from a stack's members, so a piece does not depend on its stack-mates.
    """
    if shared_order and len({job.order_seed for job in jobs}) > 1:
        raise ValueError("shared_order=True but the jobs follow different streams")
    if engine == "loop":
        return [_train_one(job, X, y, streams, steps, lr, momentum) for job in jobs]
    if engine != "batched":
        raise ValueError(f"train.engine={engine!r} is not one of {', '.join(ENGINES)}")
    return _train_batched(jobs, X, y, streams, steps, lr, momentum, shared_order, max_stack)


def _train_one(job: PieceJob, X, y, streams, steps, lr, momentum) -> TrainedPiece:
    t0 = time.perf_counter()
    params = piece_params(job.source, job.neurons)
    if job.dropout_scale:
        scale_for_dropout(params, dropout_factors(job.source, job.neurons))
    model = as_mlp(params, job.source.activation, job.source.norm)
    # momentum buffers travel as a net of the source's layout; sgd takes the parameters' only
    lay = layout_of(job.source)
    buffers = None
    if job.buffers is not None:
        buffers = [
            b for e, b in zip(lay, piece_params(job.buffers, job.neurons), strict=True) if e.param
        ]
    lo, hi = steps
    run = sgd(
        model, X, y, streams[job.order_seed][lo:hi], lr=lr, momentum=momentum, buffers=buffers
    )
    trained = params_of(model)
    out = run.buffers
    if out is not None and len(out) != len(trained):  # BatchNorm: zeros where statistics sit
        given = iter(out)
        out = [
            next(given) if e.param else torch.zeros_like(t)
            for e, t in zip(lay, trained, strict=True)
        ]
    return TrainedPiece(trained, out, time.perf_counter() - t0)


def _train_batched(
    jobs, X, y, streams, steps, lr, momentum, shared, max_stack
) -> list[TrainedPiece]:
    lo, hi = steps
    by_shape = defaultdict(list)
    for i, job in enumerate(jobs):
        by_shape[tuple(len(s) for s in job.neurons)].append(i)
    out: list = [None] * len(jobs)
    for hidden, members in by_shape.items():
        for start in range(0, len(members), max_stack):
            stack = members[start : start + max_stack]
            t0 = time.perf_counter()
            first = jobs[stack[0]]
            # pad a shared-order stack so layer 1's GEMM takes the wide kernel (see batched)
            pad = max(0, ceil_div(MIN_COLUMNS, hidden[0]) - len(stack)) if shared else 0
            padded = [jobs[i] for i in stack] + [first] * pad
            Ws, bs = _stack(padded, lambda job: job.source)
            buffers = (
                _stack(padded, lambda job: job.buffers)
                if momentum and first.buffers is not None
                else None
            )
            if first.dropout_scale:
                for W, f in zip(Ws[1:], dropout_factors(first.source, first.neurons), strict=True):
                    W.mul_(f)
            if shared:
                batches = streams[first.order_seed][lo:hi]
            else:  # (P, steps * B) indices, cut per step: one stack per stack, not per step
                per = torch.stack(
                    [
                        torch.cat(streams[jobs[i].order_seed][lo:hi])
                        if hi > lo
                        else torch.empty(0, dtype=torch.int64)
                        for i in stack
                    ]
                )
                bounds = np.cumsum([0] + [len(b) for b in streams[first.order_seed][lo:hi]])
                batches = [per[:, a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            bufs = train_stack(
                Ws,
                bs,
                X,
                y,
                batches,
                lr=lr,
                momentum=momentum,
                activation=first.source.activation,
                buffers=buffers,
            )
            share = (time.perf_counter() - t0) / len(stack)
            for p, i in enumerate(stack):
                params = [t for W, b in zip(Ws, bs, strict=True) for t in (W[p], b[p])]
                pbufs = (
                    None
                    if bufs is None
                    else [t for W, b in zip(*bufs, strict=True) for t in (W[p], b[p])]
                )
                out[i] = TrainedPiece(params, pbufs, share)
    return out


def _stack(jobs: Sequence[PieceJob], net_of) -> tuple[list, list]:
    """stack_params over jobs that may come from different nets (one call per net, in order)."""
    runs: list[tuple[MLP, list]] = []
    for job in jobs:
        net = net_of(job)
        if runs and runs[-1][0] is net:
            runs[-1][1].append(job.neurons)
        else:
            runs.append((net, [job.neurons]))
    parts = [stack_params(net, neurons) for net, neurons in runs]
    if len(parts) == 1:
        return parts[0]
    Ws = [torch.cat([p[0][m] for p in parts]) for m in range(len(parts[0][0]))]
    bs = [torch.cat([p[1][m] for p in parts]) for m in range(len(parts[0][1]))]
    return Ws, bs
