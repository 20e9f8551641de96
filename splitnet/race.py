"""One MLP trained on N ranks by every method, against the clock.

    mpiexec -n 2 python -m mpi4py -m splitnet.race --config experiments/race.toml \
        --out results/race.jsonl [--set race.epochs=3 ...]

Every method (``race_methods``: single, split one-shot or in rounds, data-parallel with dense or
top-k exchanges, tensor-parallel) trains the same net (``seeds.init_seed``) on the same data
(``Splits.train``) with plain SGD (lr, no momentum) on the baseline's minibatch stream s_0, s_1,
... (``sgd.minibatches`` with ``seeds.remaining_order_seed``), T = epochs * ceil(n / B) steps.

Clock: ``Barrier``, start, train to the next evaluation point, ``Barrier``, stop; evaluation (test
accuracy, train loss of the full net on all training data, off the clock) then runs untimed.
``compute_s`` / ``comm_s``: the slowest rank's time outside / inside MPI calls (waiting
included). ``bytes`` (cumulative, per rank): the payload this rank hands to MPI for other ranks
(``race_methods.Metered``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from . import results
from .combinations import Space
from .config import add_arguments, from_dict, read_raw
from .data import load_splits
from .footprint import check_fits
from .mpi import Comm, abort_on_error, rank0_verdict, world, wtime
from .race_methods import RUNNERS, Metered, Problem, Variant, evaluate
from .seeds import remaining_order_seed
from .sgd import check_batchnorm_batches, minibatches, sgd, steps_per_epoch
from .validation import Constraint, Each, Interval, OneOf, build, check

METHODS = ("single", "split", "dataparallel", "tensor")
SPLIT_MODES = ("one-shot", "rounds")
EXCHANGES = ("mpi", "ring", "topk")  # dense MPI Allreduce, dense ring, top-k + residual
STRATEGIES = ("random", "weights", "activations", "contiguous", "exhaustive")
SHUFFLES = ("shared", "per-piece")


@dataclass(frozen=True)
class Race:
    """The [race] section of the config: which variants run, for how long, split's options."""

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


# What every value of [race] must satisfy (splitnet.validation); ``load`` ties keys together.
CONSTRAINTS: dict[str, Constraint] = {
    "methods": Each(OneOf(METHODS)),
    "epochs": Interval(1),
    "eval_every": Interval(0),
    "split_modes": Each(OneOf(SPLIT_MODES)),
    "E": Interval(1),
    "strategy": OneOf(STRATEGIES),
    "combination": Interval(0),
    "shuffle": OneOf(SHUFFLES),
    "exchanges": Each(OneOf(EXCHANGES)),
    "topk_ratio": Interval(0, 1, "right"),
    "target": Interval(0, 1, "right"),
}
_NAME_LISTS = ("methods", "split_modes", "exchanges")  # lists of names, not of integers


def parse_race(raw: Mapping[str, Any]) -> Race:
    """The [race] table, built and checked (``splitnet.validation``); ValueError names the key
    and the value."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"[race] must be a table, got {raw!r}")
    names = {k: _names(f"race.{k}", raw[k]) for k in _NAME_LISTS if k in raw}
    race = replace(build(Race, {k: v for k, v in raw.items() if k not in names}, "race"), **names)
    check(race, CONSTRAINTS, "race")
    return race


def _names(key: str, value: Any) -> tuple[str, ...]:
    """A non-empty list of strings (``validation.coerce`` takes lists of integers only)."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a non-empty list of names, got {value!r}")
    return tuple(value)


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


def variants(race: Race) -> list[Variant]:
    """Every competitor the race runs, in order: its methods, split per mode, data-parallel per
    exchange."""
    out: list[Variant] = []
    for m in race.methods:
        if m == "split":
            for mode in race.split_modes:
                E = race.E if mode == "rounds" else None
                out.append(Variant(m, mode, E, strategy=race.strategy, shuffle=race.shuffle))
        elif m == "dataparallel":
            for ex in race.exchanges:
                ratio = race.topk_ratio if ex == "topk" else None
                out.append(Variant(m, exchange=ex, topk_ratio=ratio))
        else:
            out.append(Variant(m))
    return out


# -- metering ---------------------------------------------------------------------------------


def problem(cfg: Any, race: Race) -> Problem:
    """The data, sizes and stream every method of ``race`` trains on (``race_methods.Problem``)."""
    data = load_splits(cfg.data, cfg.seed)
    (X, y), (Xt, yt) = data.train, data.test
    B = cfg.train.batch_size
    if cfg.model.norm == "batch":
        check_batchnorm_batches(len(X), B, "training")
    stream = minibatches(len(X), B, remaining_order_seed(cfg), epochs=race.epochs)
    sizes = [X.shape[1], *cfg.model.hidden, data.n_classes]
    tensors = (torch.from_numpy(a) for a in (X, y, Xt, yt))
    return Problem(cfg, *tensors, sizes, stream, steps_per_epoch(len(X), B), race.combination)


def eval_points(pb: Problem, eval_every: int = 0) -> list[int]:
    """The steps after which the full net is evaluated: every ``eval_every`` (0: per epoch), T."""
    every = eval_every or pb.per_epoch
    return sorted({*range(every, pb.T, every), pb.T})


def race_one(
    pb: Problem, v: Variant, comm: Comm, tag: dict, quiet: bool, eval_every: int = 0
) -> list[dict]:
    """Train one method to T steps; a row (on rank 0) at step 0 and every evaluation point."""
    rank = comm.Get_rank()
    meter = Metered(comm)
    runner = RUNNERS[v.method](pb, v, comm, meter)
    wall = compute = 0.0
    rows: list[dict] = []
    seen = np.cumsum([0] + [len(b) for b in pb.stream])
    bar = tqdm(total=pb.T, desc=v.label, unit="step", disable=quiet or rank != 0, leave=False)
    lo = 0
    for hi in [0, *eval_points(pb, eval_every)]:
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
                    "method": v.method,
                    "options": v.options,
                    "label": v.label,
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


def race_all(
    args: argparse.Namespace, cfg: Any, race: Race, comm: Comm, out: results.ResultsFile | None
) -> None:
    """Every variant in turn; rank 0 appends its rows to ``out`` as each finishes."""
    torch.set_num_threads(1)  # one core per rank: the race compares ranks, not BLAS threads
    threadpool_limits(1)  # numpy's BLAS too (ChunkedMLP's products)
    pb = problem(cfg, race)
    # start-up off the clock: autograd's first backward (a few ms)
    sgd(pb.net(), pb.X, pb.y, pb.stream[:1], lr=cfg.train.lr)
    tag = {"seed": cfg.seed}  # the writer stamps config_hash
    for v in variants(race):
        rows = race_one(pb, v, comm, tag, args.quiet, race.eval_every)
        if out is not None:
            out.write(rows)
            last = rows[-1]
            print(
                f"{v.label:>16}: accuracy {last['test_accuracy']:.4f}  wall {last['wall_s']:.2f} s"
                f"  bytes/rank {last['bytes_max'] / 1e6:.2f} MB",
                file=sys.stderr,
            )


# -- setup ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The race's command line (``--help`` documents every flag)."""
    ap = argparse.ArgumentParser(
        prog="python -m splitnet.race",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(ap, "race config (experiments/race.toml)", "race.epochs=3")
    ap.add_argument("--out", metavar="PATH", default="results/race.jsonl", help="JSON Lines rows")
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the rows --out already holds (without it such a file is refused: a timed "
        "race cannot resume, and a rerun must not lose a finished one)",
    )
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def setup(argv: list[str] | None, comm: Comm) -> tuple[tuple[str, Any], results.ResultsFile | None]:
    """Parse and check on rank 0; every rank gets the verdict ("run", ...) or ("exit", code).

    Rank 0 also checks that the net fits in memory and opens (locks) ``--out`` through the one
    results path, before any training: a FIFO, a foreign file, another run's lock or an edited
    sidecar is refused here, and a file holding rows only with ``--overwrite`` (a timed race
    cannot resume).
    """

    def decide() -> tuple[Any, results.ResultsFile]:
        args = parse_args(argv)
        cfg, race = load(args.config, args.overrides, comm.Get_size())
        data = load_splits(cfg.data, cfg.seed)  # bad data: a message now, not after start-up
        check_fits([data.pretrain[0].shape[1], *cfg.model.hidden, data.n_classes])
        mode = "replace" if args.overwrite else "new"
        try:
            out = results.open_results(args.out, config_dict(cfg, race), ROWS, mode=mode)
        except OSError as e:
            raise ValueError(f"--out={args.out!r} is not writable: {e.strerror}") from None
        except ValueError as e:
            hint = ": pass --overwrite to replace them" if "already holds" in str(e) else ""
            raise ValueError(f"--out {e}{hint}") from None
        return (args, cfg, race), out

    return rank0_verdict(comm, "splitnet.race", decide)


# -- the race ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    comm = world()
    with abort_on_error(comm):
        (kind, payload), out = setup(argv, comm)
        if kind == "exit":
            return payload or 0
        try:
            args, cfg, race = payload
            race_all(args, cfg, race, comm, out)
        finally:
            if out is not None:
                out.close()
    return 0


# -- rows: through the one results path (splitnet.results) ----------------------------------
ROWS = results.Layout(key=("label", "seed", "step"))  # a row per variant and evaluation point


def config_dict(cfg: Any, race: Race) -> dict[str, Any]:
    """The run's whole config: what ``config_hash`` digests and the sidecar holds."""
    return {**cfg.to_dict(), "race": asdict(race)}


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a race's ``--out`` file ([] when it does not exist)."""
    return results.read_rows(path, ROWS)


def complete(path: Path, cfg: Any, race: Race) -> bool:
    """``path`` holds a finished run of this config: every variant's last evaluation."""
    want = results.config_hash(config_dict(cfg, race))
    finals = {
        r["label"]
        for r in read_rows(path)
        if r["epoch"] == race.epochs and r["config_hash"] == want
    }
    return finals == {v.label for v in variants(race)}


if __name__ == "__main__":
    sys.exit(main())
