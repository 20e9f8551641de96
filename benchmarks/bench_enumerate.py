"""Exhaustive-enumeration speed: loop vs batched engine, 1 vs 2 MPI ranks, and peak memory.

    .venv/bin/python benchmarks/bench_enumerate.py        # about 2 minutes on 2 idle cores
    .venv/bin/python benchmarks/bench_enumerate.py --big-stop 0 --out figures/bench_enumerate.md
                                    # all 31,752 [10,10] combinations too: about 7 minutes

Study: digits, hidden [8,8], k = 2, straight (2,450 combinations, 2 pieces each), default
training (10 epochs, batch 32, shared order). Measured, in this order:

1. in one process, rows (train the pieces + make_row) of the first ``--loop-combos``
   combinations with the loop engine, then the batched engine on the same subset and on all
   2,450;
2. ``mpiexec -n 1`` and ``-n 2`` runs of the batched driver (``python -m splitnet.enumerate
   --quiet``) on all 2,450; the start-up (imports, pretraining, baseline) is measured by a
   ``--stop 2`` run with the same rank count and subtracted;
3. the [10,10] enumeration (31,752 combinations; ``--big-stop`` takes a prefix) under
   ``mpiexec -n 1``, for peak RSS (the largest process in the tree, from wait4).

Timings on a shared machine are noisy: the load average is printed with the table; ratios are
taken between runs back to back. Writes results/bench_enumerate.md (``--out``; the committed
table is figures/bench_enumerate.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from splitnet import config, experiment  # noqa: E402

STUDY = ["model.hidden=[8,8]", "split.groups=2", "split.variant=straight"]
CHUNK = 256  # combinations per run_combinations call: the driver's batched chunk on 1 rank


def rows_in_process(prep, combos) -> tuple[float, float]:
    """(total seconds, training seconds) to produce the rows of ``combos``, in the driver's
    chunks (one ``run_combinations`` call per chunk, as one rank does)."""
    t0, train_s = time.perf_counter(), 0.0
    for lo in range(0, len(combos), CHUNK):
        rows = experiment.run_combinations(prep, combos[lo : lo + CHUNK])
        train_s += sum(r["seconds"] for r in rows)
    return time.perf_counter() - t0, train_s


def with_engine(prep, engine):
    cfg = prep.config
    return dataclasses.replace(
        prep, config=dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, engine=engine))
    )


def mpi_run(n: int, sets: list[str], extra: list[str], out: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB of the largest process) of one driver run."""
    mpiexec = Path(sys.executable).parent / "mpiexec"
    cmd = [
        str(mpiexec),
        "-n",
        str(n),
        sys.executable,
        "-m",
        "mpi4py",
        "-m",
        "splitnet.enumerate",
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    return wall, usage.ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--loop-combos", type=int, default=200, help="subset for the loop engine")
    ap.add_argument(
        "--big-stop",
        type=int,
        default=4096,
        help="combinations of the [10,10] run (0 = all 31,752: that run alone ~4 min)",
    )
    ap.add_argument("--skip-mpi", action="store_true")
    ap.add_argument(
        "--out",
        default=str(REPO / "results" / "bench_enumerate.md"),
        help="the markdown table (figures/bench_enumerate.md is the committed one)",
    )
    args = ap.parse_args()
    load0 = os.getloadavg()
    table: list[tuple[str, int, float, str]] = []  # (what, combinations, seconds, note)

    def add(what, n, sec, note=""):
        table.append((what, n, sec, note))
        print(f"{what:44s} {n:6d} comb {sec:9.1f} s {n / sec:9.1f} comb/s  {note}", flush=True)

    prep = experiment.prepare(config.load(None, [*STUDY, "train.engine=loop"]))
    n_all = prep.count
    subset = list(range(min(args.loop_combos, n_all)))
    loop_s, loop_train = rows_in_process(prep, subset)
    add("loop engine, in-process", len(subset), loop_s, f"training {loop_train:.1f} s")
    fast = with_engine(prep, "batched")
    b_s, b_train = rows_in_process(fast, subset)
    add("batched engine, in-process (same subset)", len(subset), b_s, f"training {b_train:.1f} s")
    full_s, full_train = rows_in_process(fast, list(range(n_all)))
    add("batched engine, in-process (all)", n_all, full_s, f"training {full_train:.1f} s")
    ratios = [
        ("batched / loop, rows (same subset)", loop_s / b_s),
        ("batched / loop, training only (same subset)", loop_train / b_train),
        (
            "batched (all) / loop (subset), rows per second",
            (n_all / full_s) / (len(subset) / loop_s),
        ),
    ]
    rss = []
    if not args.skip_mpi:
        sets = [*STUDY, "train.engine=batched"]
        with tempfile.TemporaryDirectory() as tmp:
            walls = {}
            for n in (1, 2):
                start, _ = mpi_run(n, sets, ["--stop", "2"], Path(tmp) / f"start{n}.jsonl")
                wall, peak = mpi_run(n, sets, [], Path(tmp) / f"n{n}.jsonl")
                walls[n] = wall - start
                add(
                    f"driver, batched, {n} rank(s)",
                    n_all,
                    walls[n],
                    f"wall {wall:.1f} s - start-up {start:.1f} s; peak RSS {peak:.0f} MiB/rank",
                )
            ratios.append(("2 ranks / 1 rank (driver, start-up excluded)", walls[1] / walls[2]))
            big = [
                "model.hidden=[10,10]",
                "split.groups=2",
                "split.variant=straight",
                "train.engine=batched",
            ]
            extra = ["--stop", str(args.big_stop)] if args.big_stop else []
            wall, peak = mpi_run(1, big, extra, Path(tmp) / "big.jsonl")
            n_big = args.big_stop or 31752
            add("driver, batched, 1 rank, [10,10]", n_big, wall, f"peak RSS {peak:.0f} MiB")
            rss.append((f"[10,10], {n_big} of 31,752 combinations, 1 rank", peak))
    load1 = os.getloadavg()
    lines = [
        "# Exhaustive enumeration: loop vs batched engine, 1 vs 2 ranks",
        "",
        f"digits, hidden [8,8], k=2, straight ({n_all} combinations), 10 epochs/piece, batch 32.",
        f"Machine: {os.cpu_count()} cores, shared; load average {load0[0]:.1f} at the start, "
        f"{load1[0]:.1f} at the end (1-min).",
        "Command: `.venv/bin/python benchmarks/bench_enumerate.py " + " ".join(sys.argv[1:]) + "`",
        "",
        "| run | combinations | seconds | combinations/s | note |",
        "| --- | ---: | ---: | ---: | --- |",
        *[f"| {w} | {n} | {s:.1f} | {n / s:.1f} | {note} |" for w, n, s, note in table],
        "",
        "| ratio | value |",
        "| --- | ---: |",
        *[f"| {w} | {r:.1f}x |" for w, r in ratios],
        *(
            ["", "| peak RSS | MiB |", "| --- | ---: |", *[f"| {w} | {m:.0f} |" for w, m in rss]]
            if rss
            else []
        ),
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
