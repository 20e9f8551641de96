"""The data-parallel step of the progress report's trainer: backprop a shard, compress, exchange.

Iteration t (every rank, same seed, so the same global batch of B samples)::

    shard_r = batch[s_r : s_{r+1}]            contiguous, sizes differ by at most one
    g_r     = (1/B) sum_{j in shard_r} grad loss_j        so  sum_r g_r = full-batch mean grad
    (I_r, v_r) = compress_r(g_r)              local rule + local residual (parallel.compress)
    Allgatherv (I_r, v_r) for all r;  G = sum_r scatter(I_r, v_r)  in rank order 0..N-1
    w <- w - lr * G                           identical on every rank, bitwise

With the compressor ``none`` the dense g_r are summed by an allreduce instead (MPI's, or this
project's ring / tree / parameter server). Dropout masks are drawn per (seed, iteration) for the
whole batch, and rank r uses rows s_r..s_{r+1}: the masks depend on the global sample position,
not on N, so ``none`` on N ranks equals single-process full-batch training up to float rounding.

The program around these primitives (data, rows, command line) is ``parallel.dataparallel``;
the race (``race_methods.DataParallel``) calls ``step`` and ``apply_update`` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..mpi import IN_PLACE, SUM, Comm, wtime
from ..partition import displacements
from . import compress as cz
from .collectives import ByteCounter, allreduce

ALLREDUCE = ("mpi", "ring", "tree", "ps")  # the dense exchange's algorithms


def dropout_keep(seed: int, iteration: int, batch: int, width: int, p: float) -> torch.Tensor:
    """(B, width) float mask / (1-p) for the whole global batch of one iteration."""
    # SeedSequence, not hash(): str/tuple hashes are salted per process
    state = np.random.SeedSequence([seed, iteration, 0xD80]).generate_state(2, np.uint32)
    gen = torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
    return (torch.rand(batch, width, generator=gen) >= p).float() / (1.0 - p)


def flat_grad(model: nn.Module, out: np.ndarray | None = None) -> np.ndarray:
    """All gradients in one (n,) float32 array: a new one, or ``out`` (reused every step); a
    parameter without a gradient (an empty shard) contributes zeros."""
    grads = [
        p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel())
        for p in model.parameters()
    ]
    if out is None:
        return torch.cat(grads).numpy()
    torch.cat(grads, out=torch.from_numpy(out))
    return out


def flat_params(model: nn.Module) -> np.ndarray:
    """All parameters in one new (n,) float32 array, in ``model.parameters()`` order."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy()


def set_grad(model: nn.Module, flat: np.ndarray) -> None:
    """Copy the (n,) ``flat`` into the parameters' existing gradients (``flat_grad``'s inverse)."""
    t, off = torch.from_numpy(flat), 0
    for p in model.parameters():
        p.grad.copy_(t[off : off + p.numel()].view_as(p))
        off += p.numel()


def local_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, keep: torch.Tensor | None
) -> float:
    """Backprop sum_{j in shard} loss_j / B (B = global batch) in training mode; returns that
    partial loss. ``keep``: the batch-global dropout mask of this shard (None: a net without
    dropout). The one place a data-parallel step sets the mode, so an evaluation in between
    (``sgd.accuracy``, which leaves the net in eval mode) needs no undoing.
    """
    # set_to_none: backward then hands over its fresh gradients instead of adding them to zeroed
    # ones (two passes over every gradient less a step: the wide MLP is memory-bound)
    model.zero_grad(set_to_none=True)
    if len(y) == 0:  # empty shard (B < N): contributes a zero gradient (flat_grad)
        return 0.0
    model.train()
    hook = None
    if keep is not None:  # replace torch's own dropout draw by the batch-global mask
        drop = next(m for m in model.modules() if isinstance(m, nn.Dropout))
        hook = drop.register_forward_hook(lambda m, inp, out: inp[0] * keep)
    try:
        loss = F.cross_entropy(model(x), y, reduction="sum") / batch
        loss.backward()
    finally:
        if hook is not None:
            hook.remove()
    return float(loss.detach())


def gather_counts(comm: Comm, count: int) -> np.ndarray:
    """(N,) every rank's entry count: one int32 each through ``Allgather`` (4 bytes a rank)."""
    if comm.Get_size() == 1:
        return np.array([count], dtype=np.int64)
    out = np.empty(comm.Get_size(), np.int32)
    comm.Allgather(np.array([count], np.int32), out)
    return out.astype(np.int64)


def exchange_sparse(comm: Comm, sent: cz.Sparse) -> tuple[np.ndarray, np.ndarray]:
    """Allgatherv indices and values; returns (dense sum in rank order, per-rank counts)."""
    counts = gather_counts(comm, sent.count)  # the 4-byte counts
    displs = displacements(counts)
    idx = np.empty(counts.sum(), np.int32)
    val = np.empty(counts.sum(), np.float32)
    comm.Allgatherv(sent.indices, [idx, counts, displs, None])
    comm.Allgatherv(sent.values, [val, counts, displs, None])
    parts = [(idx[d : d + c], val[d : d + c]) for d, c in zip(displs, counts, strict=True)]
    return cz.sum_sparse(parts, sent.size), counts


def exchange_dense(
    comm: Comm, g: np.ndarray, algorithm: str, in_place: bool = False
) -> tuple[np.ndarray, int | None]:
    """Dense sum (MPI: overwriting ``g`` when ``in_place``, a third less memory traffic than a
    separate output); returns (sum, exact bytes this rank sent or None when MPI's choice)."""
    if algorithm == "mpi":
        if in_place:
            comm.Allreduce(IN_PLACE, g, op=SUM)
            return g, None
        out = np.empty_like(g)
        comm.Allreduce(g, out, op=SUM)
        return out, None
    counter = ByteCounter()
    return allreduce(g, algorithm, comm, counter=counter), counter.bytes


@dataclass
class Step:
    """One data-parallel step of one rank, before the update is applied."""

    loss: float  # this rank's partial loss sum_{j in shard} loss_j / B (sum over ranks: mean)
    g: np.ndarray  # (n,) this rank's gradient g_r
    sent: cz.Sparse  # what the compressor let through (all of g_r for "none")
    total: np.ndarray  # (n,) G = sum_r sent_r, the same on every rank
    counts: np.ndarray  # (N,) entries each rank sent
    exact_bytes: int | None  # bytes this rank sent in our own allreduce (None: MPI's / sparse)
    compute_s: float  # backprop + compression
    comm_s: float  # the exchange


def step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    comm: Comm,
    comp: cz.Compressor,
    algorithm: str = "mpi",
    keep: torch.Tensor | None = None,
    buffer: np.ndarray | None = None,
) -> Step:
    """Backprop my shard ``(x, y)`` of a global batch of ``batch`` samples, compress, exchange.

    ``comp.name == "none"``: the dense g_r summed by ``algorithm``; otherwise Allgatherv of
    every rank's (indices, values). The caller applies ``total`` (``apply_update``).
    ``buffer``: n floats the step overwrites instead of allocating: g_r is gathered into it and
    a dense MPI exchange sums in place, so ``g``, ``sent.values`` and ``total`` are then that one
    array, holding G (the race: it reads only ``total``).
    """
    t0 = wtime()
    loss = local_step(model, x, y, batch, keep)
    g = flat_grad(model, buffer)
    # dense: everything is sent and the residual stays 0, so skip the compressor (its index
    # sort alone costs ~0.1 s for 1.9 M entries)
    if comp.name == "none":
        sent = cz.Sparse(_every_index(g.size), g, 0.0, g.size)
    else:
        sent = comp.compress(g)
    t1 = wtime()
    if comp.name == "none":
        total, exact = exchange_dense(comm, sent.values, algorithm, in_place=buffer is not None)
        counts = np.full(comm.Get_size(), comp.size)
    else:
        (total, counts), exact = exchange_sparse(comm, sent), None
    return Step(loss, g, sent, total, counts, exact, t1 - t0, wtime() - t1)


_EVERY: dict[int, np.ndarray] = {}


def _every_index(n: int) -> np.ndarray:
    """0..n-1 as int32, made once per size (the indices of a dense "sparse" message)."""
    if n not in _EVERY:
        _EVERY.clear()
        _EVERY[n] = np.arange(n, dtype=np.int32)
    return _EVERY[n]


def apply_update(model: nn.Module, total: np.ndarray, lr: float) -> None:
    """w <- w - lr * G (plain SGD, no momentum), identical on every rank.

    Straight from views of G (no copy into ``p.grad`` first: 2 x 7.4 MB less memory traffic a
    step for the race's wide MLP); the same floats as stepping on ``set_grad``'s copy.
    """
    t, off = torch.from_numpy(total), 0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(t[off : off + p.numel()].view_as(p), alpha=-lr)
            off += p.numel()


def histogram(x: np.ndarray, bins: int) -> dict[str, Any]:
    """Symmetric histogram over [-max|x|, max|x|] with the mean and sigma of x."""
    m = float(np.abs(x).max()) or 1.0
    counts, _ = np.histogram(x, bins=bins, range=(-m, m))
    return {
        "lo": -m,
        "hi": m,
        "counts": counts.tolist(),
        "mean": float(x.mean(dtype=np.float64)),
        "std": float(x.std(dtype=np.float64)),
    }
