"""Exhaustive-enumeration speed: loop vs batched engine, today vs a reference commit, 1 vs 2
MPI ranks, and the [10,10] / [12,12] goals (wall-clock, peak memory, file size).

    .venv/bin/python benchmarks/bench_enumerate.py          # about 4 minutes on 2 idle cores
    .venv/bin/python benchmarks/bench_enumerate.py --big    # + all 31,752 [10,10] on 1 and 2 ranks
    .venv/bin/python benchmarks/bench_enumerate.py --huge   # + all 426,888 [12,12] on 2 ranks
    ... --out figures/bench_enumerate.md                    # refresh the committed table

Study: digits, hidden [8,8], k = 2, straight (2,450 combinations, 2 pieces each), default
training (10 epochs, batch 32, shared order). Measured, in this order:

1. in one process, rows (train, recombine, evaluate, encode) of the first ``--loop-combos``
   combinations with the loop engine, then the batched engine on the same subset;
2. all 2,450 rows in-process with today's code and with ``--reference`` (a commit, checked out
   into a temporary git worktree and run in a subprocess), alternated ``--repeats`` times:
   minimum and median combinations/s of each, and their ratio;
3. ``mpiexec -n 1`` and ``-n 2`` runs of the driver on all 2,450, wall-clock including start-up,
   ``--pairs`` times back to back (one speed-up per pair: minimum and median);
4. ``--big``: all of [10,10] on 1 and 2 ranks (the 2-rank speed-up, start-up included);
   ``--huge``: all of [12,12] on 2 ranks: wall-clock, peak RSS of the largest rank, file size,
   and rows equal to the loop engine's on ``--check`` sampled combinations.

Timings on a shared machine are noisy: the load average is printed with the table; ratios are
taken between runs back to back. Writes results/bench_enumerate.md (``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from splitnet import config, experiment, results  # noqa: E402
from splitnet.mpi import mpiexec_command  # noqa: E402

STUDY = ["model.hidden=[8,8]", "split.groups=2", "split.variant=straight"]
CHUNK = 256  # combinations per run_combinations call: the driver's batched chunk on 1 rank


def rows_in_process(prep, combos) -> tuple[float, float]:
    """(total seconds, training seconds) to produce the rows of ``combos``, in the driver's
    chunks (one ``run_combinations`` call per chunk, as one rank does), encoded as JSON."""
    t0, train_s = time.perf_counter(), 0.0
    for lo in range(0, len(combos), CHUNK):
        rows = experiment.run_combinations(prep, combos[lo : lo + CHUNK])
        train_s += sum(r["seconds"] for r in rows)
        [json.dumps(r, sort_keys=True) for r in rows]
    return time.perf_counter() - t0, train_s


# run by a subprocess in a worktree of --reference: the same measurement with that code
REFERENCE_SCRIPT = """
import json, sys, time
import torch
from splitnet import config, experiment
torch.set_num_threads(1)
prep = experiment.prepare(config.load(None, sys.argv[1:]))
combos = list(range(prep.count))
t0 = time.perf_counter()
for lo in range(0, len(combos), 256):
    rows = experiment.run_combinations(prep, combos[lo : lo + 256])
    [json.dumps(r, sort_keys=True) for r in rows]
print(json.dumps({"seconds": time.perf_counter() - t0, "combinations": len(combos)}))
"""


def in_process(code_dir: Path, sets: list[str]) -> float:
    """Seconds for all rows of ``sets`` in a fresh process running the code in ``code_dir``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(code_dir))
    out = subprocess.run(
        [sys.executable, "-c", REFERENCE_SCRIPT, *sets],
        cwd=code_dir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def with_engine(prep, engine):
    cfg = prep.config
    return dataclasses.replace(
        prep, config=dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, engine=engine))
    )


def mpi_run(n: int, sets: list[str], extra: list[str], out: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB of the largest process) of one driver run."""
    cmd = mpiexec_command(n, ["-m", "splitnet.enumerate", "--quiet", "--out", str(out), *extra])
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


def reference_rates(rev: str, repeats: int) -> tuple[list[float], list[float]]:
    """Combinations/s of all default rows, today's code and ``rev``'s, alternated."""
    sets = [*STUDY, "train.engine=batched"]
    n = 2450
    today, ref = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "reference"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), rev],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        try:
            for _ in range(repeats):
                today.append(n / in_process(REPO, sets))
                ref.append(n / in_process(tree, sets))
                print(f"  today {today[-1]:.1f} comb/s, {rev} {ref[-1]:.1f} comb/s", flush=True)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True
            )
    return today, ref


def rows_match_loop(path: Path, sets: list[str], n_check: int, seed: int = 0) -> tuple[int, int]:
    """(rows equal, rows checked): ``n_check`` random combinations of the file against the
    loop engine in-process (accuracy, piece and ensemble accuracies, split)."""
    import random

    rows = {}
    prep = experiment.prepare(config.load(None, [*sets, "train.engine=loop"]))
    want = sorted(random.Random(seed).sample(range(prep.count), n_check))
    wanted = set(want)
    with open(path, "rb") as f:
        for line in f:
            r = json.loads(line)
            if r["combination"] in wanted:
                rows[r["combination"]] = r
    keys = ("accuracy", "piece_accuracies", "ensemble_accuracy", "split")
    loop = experiment.run_combinations(prep, want)
    same = sum(all(rows[r["combination"]][k] == r[k] for k in keys) for r in loop)
    return same, len(want)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--loop-combos", type=int, default=200, help="subset for the loop engine")
    ap.add_argument(
        "--reference",
        default="7a57730",
        help="the commit whose engine today's is compared with (default: before the speed work)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="today/reference alternations")
    ap.add_argument("--big", action="store_true", help="all of [10,10] on 1 and 2 ranks")
    ap.add_argument("--huge", action="store_true", help="all of [12,12] on 2 ranks")
    ap.add_argument(
        "--pairs", type=int, default=1, help="1-rank / 2-rank driver runs back to back, per size"
    )
    ap.add_argument("--check", type=int, default=20, help="[12,12] rows checked against loop")
    ap.add_argument("--skip-mpi", action="store_true")
    ap.add_argument(
        "--out",
        default=str(REPO / "results" / "bench_enumerate.md"),
        help="the markdown table (figures/bench_enumerate.md is the committed one)",
    )
    args = ap.parse_args()
    load0 = os.getloadavg()
    table: list[tuple[str, int, float, str]] = []  # (what, combinations, seconds, note)
    ratios: list[tuple[str, str]] = []
    extras: list[tuple[str, str]] = []

    def add(what, n, sec, note=""):
        table.append((what, n, sec, note))
        print(f"{what:48s} {n:7d} comb {sec:9.1f} s {n / sec:9.1f} comb/s  {note}", flush=True)

    prep = experiment.prepare(config.load(None, [*STUDY, "train.engine=loop"]))
    n_all = prep.count
    subset = list(range(min(args.loop_combos, n_all)))
    loop_s, loop_train = rows_in_process(prep, subset)
    add("loop engine, in-process", len(subset), loop_s, f"training {loop_train:.1f} s")
    fast = with_engine(prep, "batched")
    b_s, b_train = rows_in_process(fast, subset)
    add("batched engine, in-process (same subset)", len(subset), b_s, f"training {b_train:.1f} s")
    ratios.append(("batched / loop, rows (same subset)", f"{loop_s / b_s:.0f}x"))
    today, ref = reference_rates(args.reference, args.repeats)
    loop_rate = len(subset) / loop_s
    for name, rates in ((f"today, all {n_all} in-process", today), (args.reference, ref)):
        add(
            f"batched, {name}",
            n_all,
            n_all / statistics.median(rates),
            f"comb/s min {min(rates):.1f}, median {statistics.median(rates):.1f}",
        )
    pair = [t / r for t, r in zip(today, ref, strict=True)]
    ratios.append(
        (
            f"today / {args.reference}, rows per second (pairs run back to back)",
            f"min {min(pair):.2f}x, median {statistics.median(pair):.2f}x",
        )
    )
    per_loop = [t / loop_rate for t in today]
    ratios.append(
        (
            "today batched (all) / loop (subset), rows per second",
            f"min {min(per_loop):.0f}x, median {statistics.median(per_loop):.0f}x",
        )
    )
    if not args.skip_mpi:
        with tempfile.TemporaryDirectory() as tmp:
            runs = [("[8,8]", STUDY, {})]
            if args.big:
                runs.append(("[10,10]", ["model.hidden=[10,10]", "split.groups=2"], {}))
            for label, sets, _ in runs:
                speedups = []
                for k in range(args.pairs):  # 1 rank then 2, back to back: one ratio per pair
                    walls = {}
                    for n in (1, 2):
                        path = Path(tmp) / f"{label}-{n}-{k}.jsonl"
                        wall, peak = mpi_run(n, sets, [], path)
                        walls[n] = wall
                        count = sum(1 for _ in open(path, "rb"))
                        add(
                            f"driver, {label}, {n} rank(s), start-up included",
                            count,
                            wall,
                            f"pair {k + 1}, peak RSS {peak:.0f} MiB",
                        )
                    speedups.append(walls[1] / walls[2])
                ratios.append(
                    (
                        f"{label}: 2 ranks / 1 rank, wall-clock ({args.pairs} pair(s))",
                        f"min {min(speedups):.2f}x, median {statistics.median(speedups):.2f}x",
                    )
                )
            if args.huge:
                sets = ["model.hidden=[12,12]", "split.groups=2"]
                path = Path(tmp) / "huge.jsonl"
                wall, peak = mpi_run(2, sets, [], path)
                count = sum(1 for _ in open(path, "rb"))
                add("driver, [12,12], 2 ranks, start-up included", count, wall, "")
                size = path.stat().st_size + results.sidecar_path(path).stat().st_size
                same, checked = rows_match_loop(path, sets, args.check)
                extras += [
                    ("[12,12] wall-clock, 2 ranks", f"{wall / 60:.1f} min"),
                    ("[12,12] peak RSS, largest rank", f"{peak:.0f} MiB"),
                    ("[12,12] results file + sidecar", f"{size / 1e6:.0f} MB ({count} rows)"),
                    ("[12,12] rows equal to the loop engine's", f"{same} of {checked} sampled"),
                ]
    load1 = os.getloadavg()
    lines = [
        "# Exhaustive enumeration: loop vs batched engine, today vs reference, 1 vs 2 ranks",
        "",
        f"digits, k=2, straight, 10 epochs/piece, batch 32; [8,8] has {n_all} combinations.",
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
        *[f"| {w} | {r} |" for w, r in ratios],
        *(
            ["", "| goal | measured |", "| --- | ---: |", *[f"| {w} | {m} |" for w, m in extras]]
            if extras
            else []
        ),
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
