"""Where a row's time goes: milliseconds per combination by part, one thread, no profiler.

    .venv/bin/python benchmarks/profile_rows.py              # default study, 1,024 combinations
    .venv/bin/python benchmarks/profile_rows.py -n 2450 --set model.hidden=[10,10]

Rows of the default study (bench_enumerate's: digits [8,8], k = 2, straight, batched engine) in
the driver's chunks of 256, encoded as JSON, after one warm-up chunk. Each part is a function
wrapped with a perf_counter timer where its caller looks it up (nested parts are included in
their callers: ``train_rounds`` holds ``train_pieces``, which holds the kernel). A deterministic
profiler (cProfile) would charge every small call its own overhead and overstate the Python.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splitnet import config, engines, experiment, rounds  # noqa: E402

STUDY = ["model.hidden=[8,8]", "split.groups=2", "split.variant=straight", "train.engine=batched"]
CHUNK = 256

# (module, name looked up there, label)
PARTS = [
    (experiment, "train_rounds", "rounds.train_rounds (all of it)"),
    (rounds, "train_pieces", "  engines.train_pieces"),
    (engines, "train_stack", "    batched.train_stack (the kernel)"),
    (rounds, "split_for", "  split_for"),
    (rounds, "cut_fraction", "  cut_fraction"),
    (rounds, "piece_order_seed", "  piece_order_seed"),
    (rounds, "recombine", "  recombine (per combination)"),
    (rounds, "recombine_stacked", "  recombine_stacked"),
    (rounds, "accuracies", "  evaluation.accuracies (per net)"),
    (rounds, "stack_accuracies", "  evaluation.stack_accuracies"),
    (experiment, "scores", "experiment.scores (pieces, ensembles)"),
    (experiment, "make_row", "experiment.make_row"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=1024, help="combinations timed")
    ap.add_argument("--set", action="append", default=[], help="config overrides")
    args = ap.parse_args()
    torch.set_num_threads(1)
    spent: collections.Counter = collections.Counter()

    def timed(f, label):
        def g(*a, **k):
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                spent[label] += time.perf_counter() - t0

        return g

    for mod, name, label in PARTS:
        if hasattr(mod, name):
            setattr(mod, name, timed(getattr(mod, name), label))
    prep = experiment.prepare(config.load(None, [*STUDY, *args.set]))
    combos = list(range(min(args.n, prep.count)))
    experiment.run_combinations(prep, combos[:CHUNK])  # warm-up
    spent.clear()
    t0 = time.perf_counter()
    for lo in range(0, len(combos), CHUNK):
        rows = experiment.run_combinations(prep, combos[lo : lo + CHUNK])
        t1 = time.perf_counter()
        [json.dumps(r, sort_keys=True) for r in rows]
        spent["json.dumps"] += time.perf_counter() - t1
    total = time.perf_counter() - t0
    n = len(combos)
    print(f"{n} combinations: {1e3 * total / n:.3f} ms each, {n / total:.0f} rows/s")
    for _, _, label in [*PARTS, (None, None, "json.dumps")]:
        if label in spent:
            print(f"  {label:44s} {1e3 * spent[label] / n:7.3f} ms")


if __name__ == "__main__":
    main()
