"""Data-parallel CNN training with sparsified gradient exchange (seed 003).

    mpiexec -n 2 python -m mpi4py -m splitnet.parallel.dataparallel --compressor dynamic \
        --iterations 950 --out results/dp.jsonl

Iteration t (every rank, same seed, so the same global batch of B samples)::

    shard_r = batch[s_r : s_{r+1}]            contiguous, sizes differ by at most one
    g_r     = (1/B) sum_{j in shard_r} grad loss_j        so  sum_r g_r = full-batch mean grad
    (I_r, v_r) = compress_r(g_r)              local rule + local residual (parallel.compress)
    Allgatherv (I_r, v_r) for all r;  G = sum_r scatter(I_r, v_r)  in rank order 0..N-1
    w <- w - lr * G                           identical on every rank, bitwise

With ``--compressor none`` the dense g_r are summed by an allreduce instead (``--allreduce``).
Dropout masks are drawn per (seed, iteration) for the whole batch, and rank r uses rows
s_r..s_{r+1}: the masks depend on the global sample position, not on N, so ``none`` on N ranks
equals single-process full-batch training up to float rounding.

Rows t = 0..T describe the weights w_t (after t updates): test accuracy when measured, and the
step taken from w_t (loss, threshold, bytes). Row T's exchange is accounted but not applied.
At snapshot iterations the row also carries histograms of all weights and of rank 0's
pre-compression vector a = g + r. Rank 0 alone writes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import load_dataset, three_way_split
from ..mpi import IN_PLACE, SUM, Comm, abort_on_error, world, wtime
from ..nets.cnn import CNN
from ..partition import bounds, displacements
from ..sgd import accuracy
from . import compress as cz
from .collectives import ByteCounter, allreduce

ALLREDUCE = ("mpi", "ring", "tree", "ps")
DATASETS = ("digits", "mnist", "idx")


USAGE = """\
Run it under MPI, one process per rank (rank 0 writes --out):

    mpiexec -n N python -m mpi4py -m splitnet.parallel.dataparallel [options]

e.g. mpiexec -n 2 python -m mpi4py -m splitnet.parallel.dataparallel --compressor dynamic \\
         --iterations 950 --out results/dp.jsonl
Plain "python -m splitnet.parallel.dataparallel [options]" runs a single rank.
"""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help (an empty one says so in the help text itself); the
    description's command lines kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default == "" else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="splitnet.parallel.dataparallel",
        description=__doc__.split("\n")[0] + "\n\n" + USAGE,
        formatter_class=_Formatter,
    )
    p.add_argument("--dataset", default="digits", help=f"one of {', '.join(DATASETS)}")
    p.add_argument(
        "--data-path",
        default="",
        help="IDX directory or .npz file, for --dataset idx (default: none)",
    )
    p.add_argument(
        "--compressor",
        default="dynamic",
        help=f"gradient compression, one of {', '.join(cz.COMPRESSORS)} (none: dense exchange)",
    )
    p.add_argument(
        "--residual",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="accumulate the unsent part of each gradient locally and add it to the next",
    )
    p.add_argument(
        "--topk-fraction",
        type=float,
        default=0.004,
        help="fraction of the entries --compressor topk sends",
    )
    p.add_argument(
        "--allreduce",
        default="mpi",
        help=f"dense-exchange algorithm for --compressor none, one of {', '.join(ALLREDUCE)}",
    )
    p.add_argument("--iterations", type=int, default=950, help="SGD steps T")
    p.add_argument(
        "--batch-size", type=int, default=50, help="global batch B, split over the ranks"
    )
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (no momentum)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="data split, initial weights, batches and dropout masks (the same on every rank)",
    )
    p.add_argument("--channels", default="32,64", help="conv channels c1,c2")
    p.add_argument(
        "--dense", type=int, default=0, help="dense layer width (0: 128 for digits, 1024 MNIST)"
    )
    p.add_argument("--dropout", type=float, default=0.5, help="dropout on the dense layer")
    p.add_argument(
        "--test-fraction", type=float, default=0.25, help="fraction of the data held out for test"
    )
    p.add_argument(
        "--eval-every", type=int, default=50, help="test accuracy every this many iterations"
    )
    p.add_argument(
        "--snapshot-iterations",
        default="0,50,200,550,950",
        help="iterations whose rows carry weight/gradient histograms",
    )
    p.add_argument("--bins", type=int, default=80, help="histogram bins of the snapshots")
    p.add_argument(
        "--out",
        default="",
        help="JSON Lines file of the rows, written by rank 0 at the end; checked before "
        "training (default: none, only the summary is printed)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def options(argv: Sequence[str]) -> argparse.Namespace:
    """The options of ``argv``, all checked; a ValueError names a bad or unknown one (for
    callers that build command lines, such as the sparsification study, before any run)."""
    p = build_parser()
    p.exit_on_error = False  # a value of the wrong type raises ArgumentError instead of exiting
    try:
        args, unknown = p.parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise ValueError(str(e)) from None
    if unknown:
        raise ValueError(f"unknown options {unknown} of splitnet.parallel.dataparallel")
    validate(args)
    return args


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options, all checked before any work (a bad one: usage, its value, exit 2)."""
    p = build_parser()
    args = p.parse_args(argv)
    try:
        validate(args)
    except ValueError as e:
        p.error(str(e))
    return args


def _int_list(name: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"{name}={text!r} must be comma-separated integers") from None


def validate(a: argparse.Namespace) -> None:
    """Check every argument before any work; ValueError names the offending value."""
    for name, value, allowed in (
        ("--dataset", a.dataset, DATASETS),
        ("--compressor", a.compressor, cz.COMPRESSORS),
        ("--allreduce", a.allreduce, ALLREDUCE),
    ):
        if value not in allowed:
            raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")
    if a.dataset == "idx" and not Path(a.data_path).exists():
        raise ValueError(f"--dataset idx needs an existing --data-path, got {a.data_path!r}")
    if a.allreduce != "mpi" and a.compressor != "none":
        raise ValueError(f"--allreduce={a.allreduce!r} applies to --compressor none only")
    for name, v in (
        ("--iterations", a.iterations),
        ("--batch-size", a.batch_size),
        ("--eval-every", a.eval_every),
        ("--bins", a.bins),
    ):
        if v < 1:
            raise ValueError(f"{name}={v} must be >= 1")
    if not a.lr > 0:
        raise ValueError(f"--lr={a.lr} must be > 0")
    if not 0 < a.topk_fraction <= 1:
        raise ValueError(f"--topk-fraction={a.topk_fraction} must lie in (0, 1]")
    if not 0 <= a.dropout < 1:
        raise ValueError(f"--dropout={a.dropout} must lie in [0, 1)")
    if not 0 < a.test_fraction < 1:
        raise ValueError(f"--test-fraction={a.test_fraction} must lie in (0, 1)")
    ch = _int_list("--channels", a.channels)
    if len(ch) != 2 or min(ch) < 1:
        raise ValueError(f"--channels={a.channels!r} must be two positive integers, e.g. 32,64")
    if a.dense < 0:
        raise ValueError(f"--dense={a.dense} must be >= 0")
    snaps = _int_list("--snapshot-iterations", a.snapshot_iterations)
    if any(s < 0 for s in snaps):  # those beyond --iterations are simply never reached
        raise ValueError(f"--snapshot-iterations={a.snapshot_iterations!r} must be >= 0")
    check_out(a.out)


def check_out(out: str) -> None:
    """``--out`` must be a file rank 0 can write at the end: not a directory, and its folder
    either exists and is writable or can be created (checked now, not after the training)."""
    if not out:
        return
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"--out={out!r} is a directory; name a .jsonl file in it")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"--out={out!r} exists and is not writable")
    folder = path.absolute().parent
    while not folder.exists():  # the nearest existing ancestor is where folders get created
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"--out={out!r} cannot be created: {str(folder)!r} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--out={out!r} cannot be created: {str(folder)!r} is not writable")


def dropout_keep(seed: int, iteration: int, batch: int, width: int, p: float) -> torch.Tensor:
    """(B, width) float mask / (1-p) for the whole global batch of one iteration."""
    # SeedSequence, not hash(): str/tuple hashes are salted per process
    state = np.random.SeedSequence([seed, iteration, 0xD80]).generate_state(2, np.uint32)
    gen = torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
    return (torch.rand(batch, width, generator=gen) >= p).float() / (1.0 - p)


def batch_indices(seed: int, n_train: int, batch: int) -> Iterator[np.ndarray]:
    """Infinite stream of global batches: a seeded permutation per epoch, identical on all ranks."""
    rng = np.random.default_rng(seed)
    pos, perm = n_train, None
    while True:
        if pos + batch > n_train:
            perm, pos = rng.permutation(n_train), 0
        yield perm[pos : pos + batch]
        pos += batch


def load_data(
    a: argparse.Namespace,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int, int]]:
    """(X_train, y_train, X_test, y_test, image shape); train = pretrain + remaining."""
    ds = load_dataset(a.dataset, a.data_path, seed=a.seed)
    sp = three_way_split(ds, 0.5, a.test_fraction, a.seed)  # pretrain|remaining = train
    (Xtr, ytr), (Xte, yte) = sp.train, sp.test
    return (
        torch.from_numpy(Xtr),
        torch.from_numpy(ytr),
        torch.from_numpy(Xte),
        torch.from_numpy(yte),
        ds.image_shape,
    )


def build_model(a: argparse.Namespace, image_shape: tuple[int, int, int]) -> CNN:
    torch.manual_seed(a.seed)  # same initial weights on every rank
    return CNN(
        image_shape,
        channels=_int_list("--channels", a.channels),
        dense=a.dense or None,
        dropout=a.dropout,
    )


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
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy()


def set_grad(model: nn.Module, flat: np.ndarray) -> None:
    t, off = torch.from_numpy(flat), 0
    for p in model.parameters():
        p.grad.copy_(t[off : off + p.numel()].view_as(p))
        off += p.numel()


def local_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, keep: torch.Tensor | None
) -> float:
    """Backprop sum_{j in shard} loss_j / B (B = global batch); returns that partial loss.

    ``keep``: the batch-global dropout mask of this shard (None: a net without dropout).
    """
    # set_to_none: backward then hands over its fresh gradients instead of adding them to zeroed
    # ones (two passes over every gradient less a step: the wide MLP is memory-bound)
    model.zero_grad(set_to_none=True)
    if len(y) == 0:  # empty shard (B < N): contributes a zero gradient (flat_grad)
        return 0.0
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


def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy (``sgd.accuracy``, in eval mode), then back to training mode."""
    acc = accuracy(model, X, y)
    model.train()
    return acc


def train(a: argparse.Namespace, comm: Comm | None = None) -> tuple[nn.Module, list[dict]]:
    """Run the data-parallel loop; returns the model and (on rank 0) the rows."""
    comm = comm or world()
    rank, size = comm.Get_rank(), comm.Get_size()
    torch.set_num_threads(1)
    Xtr, ytr, Xte, yte, shape = load_data(a)
    model = build_model(a, shape)
    n = sum(p.numel() for p in model.parameters())
    comp = cz.make_compressor(a.compressor, n, a.residual, topk_fraction=a.topk_fraction)
    width = model.classifier[1].out_features  # the dropout acts on the first dense layer
    lo, hi = bounds(a.batch_size, size)[rank : rank + 2]  # my shard of every global batch
    snaps = set(_int_list("--snapshot-iterations", a.snapshot_iterations))
    batches = batch_indices(a.seed, len(ytr), a.batch_size)
    rows: list[dict] = []
    steps = range(a.iterations + 1)
    if rank == 0 and not a.quiet:
        steps = tqdm(steps, desc=f"{a.compressor}{'+r' if a.residual else ''}")
    for t in steps:
        row = {"iteration": t}
        if rank == 0 and (t % a.eval_every == 0 or t == a.iterations):
            row["test_accuracy"] = evaluate(model, Xte, yte)
        b = next(batches)[lo:hi]
        keep = dropout_keep(a.seed, t, a.batch_size, width, a.dropout)[lo:hi]
        st = step(model, Xtr[b], ytr[b], a.batch_size, comm, comp, a.allreduce, keep)
        sent, counts = st.sent, st.counts
        if a.compressor == "none":
            # MPI's own Allreduce: count the 4n-byte payload; ours: what each rank really sent
            exact = st.exact_bytes
            bytes_each = comm.allgather(exact) if exact is not None else [cz.dense_bytes(n)] * size
        else:
            bytes_each = [cz.sparse_bytes(int(c)) for c in counts]
        t1 = wtime()
        loss = comm.allreduce(st.loss, op=SUM)  # full-batch mean loss
        comm_s = st.comm_s + wtime() - t1
        if rank == 0 and t in snaps:  # w_t, before this row's update
            row["weights_hist"] = histogram(flat_params(model), a.bins)
            row["grad_hist"] = histogram(comp.r + sent.to_dense() if a.residual else st.g, a.bins)
        if t < a.iterations:
            apply_update(model, st.total, a.lr)
        if rank:
            continue
        row.update(
            threshold=sent.threshold,
            fraction_sent=float(counts.sum()) / (size * n),
            bytes_sent=float(np.mean(bytes_each)),
            bytes_sent_max=int(max(bytes_each)),
            dense_bytes=cz.dense_bytes(n),
            ring_dense_bytes=cz.ring_allreduce_bytes(n, size),
            wire_s=cz.wire_seconds(np.mean(bytes_each)),
            train_loss=loss,
            compute_s=st.compute_s,
            comm_s=comm_s,
        )
        rows.append(row)
    digests = comm.allgather(hashlib.sha256(flat_params(model).tobytes()).hexdigest())
    if rank == 0:
        meta = {k: v for k, v in vars(a).items() if k != "quiet"}
        rows.append(
            {
                "summary": True,
                "ranks": size,
                "n_params": n,
                **meta,
                "replicas_identical": len(set(digests)) == 1,
                "final_test_accuracy": rows[-1]["test_accuracy"],
            }
        )
    return model, rows


def write_rows(rows: list[dict], path: str | Path) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    comm = world()
    with abort_on_error(comm):
        _, rows = train(args, comm)
        if comm.Get_rank() == 0:
            if args.out:
                write_rows(rows, args.out)
            s = rows[-1]
            mean = np.mean([r["bytes_sent"] for r in rows[:-1]])
            print(
                f"{args.compressor} residual={args.residual}: test accuracy "
                f"{s['final_test_accuracy']:.4f}, mean bytes/rank/iter {mean:.0f} vs dense "
                f"{rows[0]['dense_bytes']} ({rows[0]['dense_bytes'] / mean:.1f}x), "
                f"replicas identical: {s['replicas_identical']}"
            )


if __name__ == "__main__":
    main()
