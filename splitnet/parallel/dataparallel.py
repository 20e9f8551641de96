"""The progress report's data-parallel trainer: a CNN on N ranks, sparsified gradient exchange.

    mpiexec -n 2 python -m mpi4py -m splitnet.parallel.dataparallel --compressor dynamic \
        --iterations 950 --out results/dp.jsonl

A run is one frozen ``DPConfig`` (every command-line option is a field, ``--batch-size`` is
``batch_size``), checked by the project's constraint tables before any training. Each step is
``parallel.dp.step`` (the partition maths is written there): every rank draws the same global
batch of B samples, backprops its balanced shard (``partition.bounds``), compresses and
exchanges; the update is identical on every rank.

Rows t = 0..T describe the weights w_t (after t updates): test accuracy when measured, and the
step taken from w_t (loss, threshold, bytes). Row T's exchange is accounted but not applied.
At snapshot iterations the row also carries histograms of all weights and of rank 0's
pre-compression vector a = g + r. The last row is the summary (the options as the command line
spells them, the replicas' agreement, the final accuracy). Rank 0 alone writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .. import results
from ..data import load_dataset, three_way_split
from ..mpi import SUM, Comm, abort_on_error, rank0_verdict, world, wtime
from ..nets.cnn import CNN
from ..partition import bounds
from ..sgd import accuracy
from ..validation import Constraint, Each, Interval, OneOf, build, check
from . import compress as cz
from .dp import ALLREDUCE, apply_update, dropout_keep, flat_params, histogram, step

PROG = "splitnet.parallel.dataparallel"
DATASETS = ("digits", "mnist", "idx")


@dataclass(frozen=True)
class DPConfig:
    """One data-parallel run; the field ``x_y`` is the command line's ``--x-y`` (see HELP)."""

    dataset: str = "digits"
    data_path: str = ""
    compressor: str = "dynamic"
    residual: bool = True
    topk_fraction: float = 0.004
    allreduce: str = "mpi"
    iterations: int = 950
    batch_size: int = 50
    lr: float = 0.1
    seed: int = 0
    channels: tuple[int, ...] = (32, 64)
    dense: int = 0
    dropout: float = 0.5
    test_fraction: float = 0.25
    eval_every: int = 50
    snapshot_iterations: tuple[int, ...] = (0, 50, 200, 550, 950)
    bins: int = 80
    out: str = ""
    overwrite: bool = False
    quiet: bool = False


HELP = {
    "dataset": f"one of {', '.join(DATASETS)}",
    "data_path": "IDX directory or .npz file, for --dataset idx (default: none)",
    "compressor": f"gradient compression, one of {', '.join(cz.COMPRESSORS)} (none: dense "
    "exchange)",
    "residual": "accumulate the unsent part of each gradient locally and add it to the next",
    "topk_fraction": "fraction of the entries --compressor topk sends",
    "allreduce": f"dense-exchange algorithm for --compressor none, one of {', '.join(ALLREDUCE)}",
    "iterations": "SGD steps T",
    "batch_size": "global batch B, split over the ranks",
    "lr": "SGD learning rate (no momentum)",
    "seed": "data split, initial weights, batches and dropout masks (the same on every rank)",
    "channels": "conv channels c1,c2",
    "dense": "dense layer width (0: 128 for digits, 1024 MNIST)",
    "dropout": "dropout on the dense layer",
    "test_fraction": "fraction of the data held out for test",
    "eval_every": "test accuracy every this many iterations",
    "snapshot_iterations": "iterations whose rows carry weight/gradient histograms",
    "bins": "histogram bins of the snapshots",
    "out": "JSON Lines file of the rows, written by rank 0 at the end; checked before training "
    "(default: none, only the summary is printed)",
    "quiet": "no progress bar",
    "overwrite": "replace the rows --out already holds (without it such a file is refused: "
    "a finished run is never lost to a rerun)",
}

# What every value must satisfy (splitnet.validation); rules tying keys together: validate.
CONSTRAINTS: dict[str, Constraint] = {
    "dataset": OneOf(DATASETS),
    "compressor": OneOf(cz.COMPRESSORS),
    "allreduce": OneOf(ALLREDUCE),
    "topk_fraction": Interval(0, 1, "right"),
    "iterations": Interval(1),
    "batch_size": Interval(1),
    "lr": Interval(0, None, "neither"),
    "seed": Interval(0),
    "channels": Each(Interval(1)),
    "dense": Interval(0),
    "dropout": Interval(0, 1, "left"),
    "test_fraction": Interval(0, 1, "neither"),
    "eval_every": Interval(1),
    "snapshot_iterations": Each(Interval(0)),  # those beyond iterations are never reached
    "bins": Interval(1),
}


def validate(cfg: DPConfig, prefix: str = "") -> None:
    """The constraint table, then the rules that tie keys together; a ``ValueError`` names the
    key (``prefix.key`` when given) and its value. ``out`` is opened by ``open_out``."""
    check(cfg, CONSTRAINTS, prefix)

    def key(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    if len(cfg.channels) != 2:
        raise ValueError(f"{key('channels')}={list(cfg.channels)} must be two integers, e.g. 32,64")
    if cfg.dataset == "idx" and not (cfg.data_path and Path(cfg.data_path).exists()):
        raise ValueError(
            f"{key('dataset')}='idx' needs an existing {key('data_path')}, got {cfg.data_path!r}"
        )
    if cfg.allreduce != "mpi" and cfg.compressor != "none":
        raise ValueError(
            f"{key('allreduce')}={cfg.allreduce!r} applies to {key('compressor')}='none' only, "
            f"not {cfg.compressor!r}"
        )
    if cfg.out:
        try:  # a folder or a FIFO now; the rest when rank 0 opens it (``open_out``)
            results.check_regular(cfg.out)
        except ValueError as e:
            raise ValueError(f"{key('out')}: {e}") from None


def from_dict(raw: Mapping[str, Any], prefix: str = "", base: DPConfig | None = None) -> DPConfig:
    """``base`` (or the defaults) with the keys of ``raw`` (a TOML table, say), validated."""
    cfg = build(DPConfig, raw, prefix, base)
    validate(cfg, prefix)
    return cfg


def record(cfg: DPConfig) -> dict[str, Any]:
    """The options as the summary row holds them: as the command line spells them (lists as
    ``"32,64"``), ``quiet`` and ``overwrite`` left out; a rerun compares these to resume."""
    d = dataclasses.asdict(cfg)
    del d["quiet"], d["overwrite"]
    return {k: ",".join(map(str, v)) if isinstance(v, tuple) else v for k, v in d.items()}


# ---- the command line: flags <-> DPConfig ------------------------------------------------------

USAGE = f"""\
Run it under MPI, one process per rank (rank 0 writes --out):

    mpiexec -n N python -m mpi4py -m {PROG} [options]

e.g. mpiexec -n 2 python -m mpi4py -m {PROG} --compressor dynamic \\
         --iterations 950 --out results/dp.jsonl
Plain "python -m {PROG} [options]" runs a single rank.
"""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help (an empty one says so in the help text itself); the
    description's command lines kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default == "" else super()._get_help_string(action)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def int_list(text: str) -> tuple[int, ...]:
    """``"0,50,200"`` -> (0, 50, 200): the command line's spelling of a list field."""
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be comma-separated integers") from None


def build_parser() -> argparse.ArgumentParser:
    """One flag per DPConfig field, its default the field's (lists spelled ``32,64``)."""
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n")[0] + "\n\n" + USAGE, formatter_class=_Formatter
    )
    for f in fields(DPConfig):
        default = f.default
        if f.name in ("quiet", "overwrite"):
            p.add_argument(flag(f.name), action="store_true", help=HELP[f.name])
        elif isinstance(default, bool):
            action = argparse.BooleanOptionalAction
            p.add_argument(flag(f.name), action=action, default=default, help=HELP[f.name])
        elif isinstance(default, tuple):  # argparse runs the type on a string default too
            text = ",".join(map(str, default))
            p.add_argument(flag(f.name), type=int_list, default=text, help=HELP[f.name])
        else:
            p.add_argument(flag(f.name), type=type(default), default=default, help=HELP[f.name])
    return p


def parse(argv: Sequence[str] | None = None) -> DPConfig:
    """The DPConfig of a command line, validated (argparse exits on a bad flag; a bad value is
    a ``ValueError`` naming it)."""
    cfg = DPConfig(**vars(build_parser().parse_args(argv)))
    validate(cfg)
    return cfg


def to_argv(cfg: DPConfig) -> list[str]:
    """The command line of ``cfg`` (``parse``'s inverse): a flag for every non-default field."""
    argv = []
    for f in fields(DPConfig):
        v = getattr(cfg, f.name)
        if v == f.default:
            continue
        if isinstance(v, bool):
            argv.append(flag(f.name) if v else "--no-" + flag(f.name)[2:])
        else:
            argv.append(f"{flag(f.name)}={','.join(map(str, v)) if isinstance(v, tuple) else v}")
    return argv


# ---- the run ------------------------------------------------------------------------------------


def batch_indices(seed: int, n_train: int, batch: int) -> Iterator[np.ndarray]:
    """Infinite stream of global batches: a seeded permutation per epoch, identical on all ranks.

    Every batch holds exactly B samples (an epoch's tail too short for one is dropped), so the
    shards ``bounds(B, N)`` and the 1/B of the step are the same every step; ``sgd.minibatches``
    ends each epoch with a short batch instead.
    """
    rng = np.random.default_rng(seed)
    pos, perm = n_train, None
    while True:
        if pos + batch > n_train:
            perm, pos = rng.permutation(n_train), 0
        yield perm[pos : pos + batch]
        pos += batch


def load_data(
    cfg: DPConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int, int]]:
    """(X_train, y_train, X_test, y_test, image shape); train = pretrain + remaining."""
    ds = load_dataset(cfg.dataset, cfg.data_path, seed=cfg.seed)
    sp = three_way_split(ds, 0.5, cfg.test_fraction, cfg.seed)  # pretrain|remaining = train
    (Xtr, ytr), (Xte, yte) = sp.train, sp.test
    tensors = (torch.from_numpy(a) for a in (Xtr, ytr, Xte, yte))
    return (*tensors, ds.image_shape)


def build_model(cfg: DPConfig, image_shape: tuple[int, int, int]) -> CNN:
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    return CNN(image_shape, channels=cfg.channels, dense=cfg.dense or None, dropout=cfg.dropout)


def train(cfg: DPConfig, comm: Comm | None = None) -> tuple[nn.Module, list[dict]]:
    """Run the data-parallel loop; returns the model and (on rank 0) the rows."""
    comm = comm or world()
    rank, size = comm.Get_rank(), comm.Get_size()
    torch.set_num_threads(1)
    Xtr, ytr, Xte, yte, shape = load_data(cfg)
    model = build_model(cfg, shape)
    n = sum(p.numel() for p in model.parameters())
    comp = cz.make_compressor(cfg.compressor, n, cfg.residual, topk_fraction=cfg.topk_fraction)
    width = model.classifier[1].out_features  # the dropout acts on the first dense layer
    lo, hi = bounds(cfg.batch_size, size)[rank : rank + 2]  # my shard of every global batch
    batches = batch_indices(cfg.seed, len(ytr), cfg.batch_size)
    rows: list[dict] = []
    steps = range(cfg.iterations + 1)
    if rank == 0 and not cfg.quiet:
        steps = tqdm(steps, desc=f"{cfg.compressor}{'+r' if cfg.residual else ''}")
    for t in steps:
        row = {"iteration": t}
        if rank == 0 and (t % cfg.eval_every == 0 or t == cfg.iterations):
            row["test_accuracy"] = accuracy(model, Xte, yte)  # eval mode; the step sets train
        b = next(batches)[lo:hi]
        keep = dropout_keep(cfg.seed, t, cfg.batch_size, width, cfg.dropout)[lo:hi]
        st = step(model, Xtr[b], ytr[b], cfg.batch_size, comm, comp, cfg.allreduce, keep)
        sent, counts = st.sent, st.counts
        if cfg.compressor == "none":
            # MPI's own Allreduce: count the 4n-byte payload; ours: what each rank really sent
            exact = st.exact_bytes
            bytes_each = comm.allgather(exact) if exact is not None else [cz.dense_bytes(n)] * size
        else:
            bytes_each = [cz.sparse_bytes(int(c)) for c in counts]
        t1 = wtime()
        loss = comm.allreduce(st.loss, op=SUM)  # full-batch mean loss
        comm_s = st.comm_s + wtime() - t1
        if rank == 0 and t in cfg.snapshot_iterations:  # w_t, before this row's update
            row["weights_hist"] = histogram(flat_params(model), cfg.bins)
            a = comp.r + sent.to_dense() if cfg.residual else st.g
            row["grad_hist"] = histogram(a, cfg.bins)
        if t < cfg.iterations:
            apply_update(model, st.total, cfg.lr)
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
        rows.append(
            {
                "summary": True,
                "ranks": size,
                "n_params": n,
                **record(cfg),
                "replicas_identical": len(set(digests)) == 1,
                "final_test_accuracy": rows[-1]["test_accuracy"],
            }
        )
    return model, rows


def traffic(rows: list[dict]) -> dict[str, float]:
    """Means over the applied iterations 0..T-1 of a run's rows (row T's exchange is never
    applied; a summary row is skipped): ``bytes_sent`` per rank and iteration, ``fraction_sent``,
    and ``dense_bytes``."""
    applied = [r for r in rows if "iteration" in r][:-1]
    return {
        "bytes_sent": sum(r["bytes_sent"] for r in applied) / len(applied),
        "fraction_sent": sum(r["fraction_sent"] for r in applied) / len(applied),
        "dense_bytes": applied[0]["dense_bytes"],
    }


def complete(cfg: DPConfig) -> bool:
    """Whether ``cfg.out`` holds a complete run (ending with its summary row) of these options;
    a ``ValueError`` for one of other options (the caller moves it away to rerun it)."""
    rows = results.read_rows(cfg.out, ROWS) if Path(cfg.out).exists() else []
    if not rows or not rows[-1].get("summary"):
        return False  # absent, or cut short (rank 0 writes at the end): run it
    held = rows[-1]
    other = [(k, held.get(k), v) for k, v in record(cfg).items() if k != "out" and held.get(k) != v]
    if other:
        k, was, now = other[0]
        raise ValueError(
            f"{cfg.out!r} is a complete run with other options ({k}: {was!r} recorded, "
            f"{now!r} asked); move it away to rerun it"
        )
    return True


# ---- the file: through the one results path ---------------------------------------------------

ROWS = results.Layout(key=("iteration",), key_defaults={"iteration": "summary"})  # one run a file


def open_out(cfg: DPConfig) -> results.ResultsFile | None:
    """Lock and check ``--out`` before any training (a FIFO, a folder, a foreign file, another
    writer: refused); one holding rows only with ``--overwrite``. None without ``--out``."""
    if not cfg.out:
        return None
    config = {k: v for k, v in record(cfg).items() if k != "out"}
    mode = "replace" if cfg.overwrite else "new"
    try:
        return results.open_results(cfg.out, config, ROWS, mode=mode)
    except OSError as e:
        raise ValueError(f"--out={cfg.out!r} is not writable: {e.strerror}") from None
    except ValueError as e:
        hint = ": pass --overwrite to replace them" if "already holds" in str(e) else ""
        raise ValueError(f"--out {e}{hint}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse and check on rank 0 (a bad flag or value: one message, exit 2 on every rank), then
    train; rank 0 writes ``--out`` and prints the summary. Returns the exit status."""
    comm = world()
    with abort_on_error(comm):

        def decide() -> tuple[DPConfig, results.ResultsFile | None]:
            cfg = parse(argv)
            return cfg, open_out(cfg)

        (kind, cfg), out = rank0_verdict(comm, PROG, decide)
        if kind == "exit":
            return cfg or 0
        try:
            _, rows = train(cfg, comm)
            if out is not None:
                out.write(rows)
        finally:
            if out is not None:
                out.close()
        if comm.Get_rank() == 0:
            s, mean = rows[-1], traffic(rows)
            print(
                f"{cfg.compressor} residual={cfg.residual}: test accuracy "
                f"{s['final_test_accuracy']:.4f}, mean bytes/rank/iter {mean['bytes_sent']:.0f} "
                f"vs dense {mean['dense_bytes']} ({mean['dense_bytes'] / mean['bytes_sent']:.1f}x)"
                f", replicas identical: {s['replicas_identical']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
