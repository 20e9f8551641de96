"""The experiment driver: split, train pieces on the ranks, recombine: a row per combination.

    mpiexec -n 2 python -m mpi4py -m splitnet.enumerate --config experiments/poster_straight.toml
    python -m splitnet.enumerate                       # embedded default: digits, 1 rank
    python -m splitnet.enumerate --count --set model.hidden=[10,10]

Rank 0 pretrains once and broadcasts the weights. Combinations are taken in chunks; the
combinations of a chunk are dealt round-robin over the ranks, each rank trains the pieces of its
combinations in one engine call (``experiment.run_combinations``), recombines and evaluates, and
rank 0 appends the rows in order (flushed, fsynced) and shows progress. Every seed comes from
(seed, combination, path), so the rows are the same for any number of ranks. A killed run
resumes with the same command: recorded (seed, combination) rows are skipped.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from tqdm import tqdm

from . import config as config_mod
from . import results
from .combinations import n_combinations, paths_of
from .config import Config
from .footprint import check_fits
from .mpi import Comm, abort_on_error, rank0_verdict, world

PIECES_PER_RANK = {"loop": 8, "batched": 512}  # chunk size: pieces each rank trains per chunk


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The driver's command line (``--help`` documents every flag)."""
    ap = argparse.ArgumentParser(
        prog="python -m splitnet.enumerate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_mod.add_arguments(ap, "experiment config (default: embedded)", "model.hidden=[4,4]")
    ap.add_argument(
        "--out",
        metavar="PATH",
        help="results file, JSON Lines "
        "(default: results/<strategy>-<variant>-h<hidden>-k<groups>-<hash>.jsonl)",
    )
    ap.add_argument("--start", type=int, default=0, metavar="I", help="first combination index")
    ap.add_argument("--stop", type=int, metavar="J", help="one past the last combination index")
    ap.add_argument(
        "--shard",
        metavar="T/N",
        help="take the T-th (0-based) of N equal contiguous "
        "shards of [start, stop), e.g. --shard $SLURM_ARRAY_TASK_ID/8",
    )
    ap.add_argument(
        "--chunk",
        type=int,
        metavar="C",
        help="combinations per chunk (default: "
        "enough for 8 pieces per rank with the loop engine, 512 with batched)",
    )
    ap.add_argument("--count", action="store_true", help="print the number of combinations, exit")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def parse_shard(text: str) -> tuple[int, int]:
    try:
        t, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r} must look like T/N, e.g. 0/8") from None
    if n < 1 or not 0 <= t < n:
        raise ValueError(f"--shard {text}: need 0 <= T < N (T is 0-based)")
    return t, n


def plan(args: argparse.Namespace, cfg: Config) -> tuple[range, Path]:
    """The combination range and the output path, validated before any training."""
    count = n_combinations(cfg)
    stop = count if args.stop is None else args.stop
    if not 0 <= args.start < count:
        raise ValueError(f"--start {args.start} is beyond the {count} combinations [0, {count})")
    if not args.start < stop <= count:
        raise ValueError(f"--stop {stop} must lie in ({args.start}, {count}]")
    lo, hi = args.start, stop
    if args.shard:
        t, n = parse_shard(args.shard)
        size = hi - lo
        lo, hi = lo + size * t // n, lo + size * (t + 1) // n
    if cfg.split.strategy == "search" and (args.start or args.stop is not None or args.shard):
        raise ValueError(
            "split.strategy='search' is sequential (each step starts from the last): "
            "--start, --stop and --shard do not apply; it resumes from its file"
        )
    if args.chunk is not None and args.chunk < 1:
        raise ValueError(f"--chunk {args.chunk} must be >= 1")
    s = cfg.split
    hidden = "x".join(map(str, cfg.model.hidden))
    default = f"results/{s.strategy}-{s.variant}-h{hidden}-k{s.groups}-{cfg.hash()}.jsonl"
    return range(lo, hi), Path(args.out or default)


def setup(argv: list[str] | None, comm: Comm) -> tuple[tuple[str, Any], Any]:
    """Parse and validate on rank 0; every rank gets the same verdict (no rank left waiting).

    Rank 0 also checks the data and opens (locks) the results file here, before any training;
    it returns that ``results.ResultsFile`` beside the verdict (None on the other ranks).
    """
    if comm.Get_rank() != 0:
        # import torch and scikit-learn while rank 0 checks the input (which imports them too):
        # else the imports run one after the other, 2-3 s of every multi-rank start-up
        from . import experiment  # noqa: F401

    def decide() -> tuple[tuple[str, Any], Any]:
        args = parse_args(argv)
        cfg = config_mod.load(args.config, args.overrides)
        check_fits([1, *cfg.model.hidden, 1])  # the hidden layers alone, before counting them
        todo_range, out = plan(args, cfg)
        if args.count:
            return ("count", n_combinations(cfg)), None
        # scikit-learn loads here, not at import: --help and --count stay instant
        from .data import load_splits

        data = load_splits(cfg.data, cfg.seed)  # bad data: a message now, not after set-up
        check_fits([data.pretrain[0].shape[1], *cfg.model.hidden, data.n_classes])
        try:
            from .experiment import file_constants  # torch: only once input is good

            shared = file_constants(cfg)
            writer = results.open_results(
                out, cfg.to_dict(), results.DRIVER, shared=shared, keep_rows=False
            )
        except OSError as e:
            raise ValueError(f"--out {str(out)!r} is not writable: {e.strerror}") from None
        except ValueError as e:
            raise ValueError(f"--out {e}") from None
        return ("run", (args, cfg, todo_range, out, writer.done)), writer

    (kind, payload), writer = rank0_verdict(comm, "splitnet.enumerate", decide)
    return (payload if kind == "run" else (kind, payload)), writer


def pending(
    todo_range: range, seed: int, done: set[tuple[int, int]], chunk: int
) -> Iterator[list[int]]:
    """The combinations of ``todo_range`` not yet recorded for ``seed``, ``chunk`` at a time.

    Lazy: memory and the time to the first chunk do not depend on the size of the range.
    """
    part: list[int] = []
    for c in todo_range:
        if (seed, c) not in done:
            part.append(c)
            if len(part) == chunk:
                yield part
                part = []
    if part:
        yield part


def run(
    args: argparse.Namespace,
    cfg: Config,
    todo_range: range,
    out: Path,
    done: set[tuple[int, int]],
    comm: Comm,
    writer: results.ResultsFile | None = None,
) -> int:
    """Train and record every pending row; rank 0 writes through ``writer``."""
    # torch loads here, once the arguments are checked: --help, --count and bad input answer at
    # once instead of after the 2-4 s of importing torch (not a way around an import cycle)
    from . import experiment

    rank, size = comm.Get_rank(), comm.Get_size()
    t0 = time.perf_counter()
    seeds = cfg.run_seeds
    per_seed = {s: sum(1 for d, c in done if d == s and c in todo_range) for s in seeds}
    total = len(todo_range) * len(seeds)
    n_todo = total - sum(per_seed.values())
    if n_todo == 0:  # nothing to train: say so instead of "0 rows in 0.0 s"
        if rank == 0 and not args.quiet:
            print(
                f"all {total} rows ({len(todo_range)} combinations x {len(seeds)} seed(s)) are "
                f"already recorded in {out}",
                file=sys.stderr,
            )
        return 0
    # a row is one (seed, combination): the bar counts rows, total = combinations x seeds
    bar = tqdm(
        total=total,
        initial=total - n_todo,
        unit="row",
        disable=args.quiet or rank != 0,
        desc=out.name,
        smoothing=0.05,
    )
    n_paths = len(paths_of(cfg))
    chunk = args.chunk or max(1, math.ceil(PIECES_PER_RANK[cfg.train.engine] * size / n_paths))
    data = None
    for seed in seeds:
        if per_seed[seed] == len(todo_range):
            continue
        # rank 0 pretrains and trains the baseline once; meanwhile the others load the data,
        # then take the weights and the scores (no rank redoes them)
        if rank == 0:
            prep = experiment.prepare(cfg, seed=seed)
        else:
            data = data if data is not None else experiment.load_data(cfg)
        shared = comm.bcast(experiment.Shared.of(prep) if rank == 0 else None, root=0)
        if rank != 0:
            prep = experiment.prepare(cfg, shared, seed=seed, data=data)
        if cfg.split.strategy == "search":
            _search(prep, seed, out, comm, writer, bar)
            continue
        sends = Sends(comm)
        for combos in pending(todo_range, seed, done, chunk):
            lines = _chunk(experiment, prep, combos, comm, sends)
            if rank == 0:
                writer.append(lines)
                bar.update(len(lines))
        sends.wait_all()
    bar.close()
    if rank == 0 and not args.quiet:
        print(
            f"{n_todo} rows ({len(todo_range)} combinations x {len(seeds)} seed(s), "
            f"{total - n_todo} already recorded) in {time.perf_counter() - t0:.1f} s on "
            f"{size} rank(s) -> {out}",
            file=sys.stderr,
        )
    return 0


class Sends:
    """A worker's rows on their way to rank 0: sent without waiting for rank 0 to take them,
    so a worker goes on training while rank 0 writes; at most ``AHEAD`` chunks in flight
    (memory stays flat when rank 0 falls behind)."""

    AHEAD = 4

    def __init__(self, comm: Comm):
        self.comm, self.requests = comm, []

    def send(self, obj: Any, tag: int) -> None:
        if len(self.requests) >= self.AHEAD:
            self.requests.pop(0).wait()
        self.requests.append(self.comm.isend(obj, dest=0, tag=tag))

    def wait_all(self) -> None:
        while self.requests:
            self.requests.pop(0).wait()


def _chunk(
    experiment: ModuleType, prep: Any, combos: list[int], comm: Comm, sends: Sends
) -> list[bytes] | None:
    """Rank r takes combinations r, r + size, ...; rank 0 gets the rows as JSON lines, in order.

    Chunks are taken in the same order on every rank, and MPI keeps the order of messages
    between two ranks, so rank 0's k-th receive from a worker is that worker's k-th chunk.
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    rows = experiment.run_combinations(prep, combos[rank::size])
    mine = [(r["combination"], results.DRIVER.encode(r)) for r in rows]
    if rank != 0:
        sends.send(mine, tag=ROWS_TAG)
        return None
    parts = [mine] + [comm.recv(source=r, tag=ROWS_TAG) for r in range(1, size)]
    return [line for _, line in sorted(item for part in parts for item in part)]


ROWS_TAG = 7


def _search(prep: Any, seed: int, out: Path, comm: Comm, writer: Any, bar: tqdm) -> None:
    """A search's steps: the candidates of a step are dealt over the ranks, every rank learns
    every score (each holds the search's state), rank 0 appends the step's rows."""
    from . import search  # torch, like experiment above

    rank, size = comm.Get_rank(), comm.Get_size()
    recorded = None
    if rank == 0:
        recorded = {
            r["combination"]: (r["index"], r["validation_accuracy"])
            for r in results.read_rows(out)
            if r.get("seed", 0) == seed
        }
    recorded = comm.bcast(recorded, root=0)

    def evaluate(evaluations: list[int], candidates: Any) -> list[dict]:
        from .experiment import run_combinations

        mine = run_combinations(prep, evaluations[rank::size], candidates)
        return sorted((r for part in comm.allgather(mine) for r in part), key=row_order)

    for rows in search.steps(prep, recorded, evaluate):
        if rank == 0:
            writer.append([results.DRIVER.encode(r) for r in rows])
            bar.update(len(rows))


def row_order(row: dict) -> int:
    return row["combination"]


def main(argv: list[str] | None = None) -> int:
    comm = world()
    with abort_on_error(comm):
        (kind, payload), writer = setup(argv, comm)
        if kind == "exit":
            return payload or 0
        if kind == "count":
            if comm.Get_rank() == 0:
                print(payload)
            return 0
        try:
            return run(*payload, comm, writer)
        finally:
            if writer is not None:
                writer.close()


if __name__ == "__main__":
    sys.exit(main())
