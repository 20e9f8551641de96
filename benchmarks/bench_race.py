"""The race's per-epoch goals at N = 2: wall-clock of split and dense data-parallel per epoch,
as ratios to single's in the same job, for several batch sizes.

    .venv/bin/python benchmarks/bench_race.py                   # ~4 min on 2 idle cores
    .venv/bin/python benchmarks/bench_race.py --repeats 5 --out figures/bench_race.md

Each run is one ``mpiexec -n 2 ... splitnet.race`` job (``splitnet.mpi.launch``) on
``experiments/race.toml`` (the wide 784-1024-1024-10 MLP on MNIST-5k) with methods single,
split (one-shot) and dataparallel (MPI Allreduce), ``--epochs`` epochs and no evaluation in
between, so the three run back to back in one job and their ratio sees the same load. The
goals set when the race was built: split <= 0.5x, dense
data-parallel <= 0.6x single's per-epoch time. Reported per batch size: min and median over
``--repeats`` jobs of each ratio, and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from splitnet.mpi import launch  # noqa: E402
from splitnet.race import read_rows  # noqa: E402

LABELS = ("single", "split one-shot", "dp mpi")
GOALS = {"split one-shot": 0.5, "dp mpi": 0.6}


def one_job(batch: int, epochs: int, out: Path) -> dict[str, float]:
    """Seconds per epoch of every method of one 2-rank race job."""
    items = [
        'race.methods=["single", "split", "dataparallel"]',
        'race.split_modes=["one-shot"]',
        'race.exchanges=["mpi"]',
        f"race.epochs={epochs}",
        "race.eval_every=1000000",  # one evaluation point: the end
        f"train.batch_size={batch}",
    ]
    sets = [x for item in items for x in ("--set", item)]
    args = ["-m", "splitnet.race", "--config", str(REPO / "experiments" / "race.toml")]
    launch(2, [*args, "--out", str(out), "--quiet", *sets], check=True, cwd=REPO, timeout=1200)
    rows = read_rows(out)
    out.unlink()
    last = {r["label"]: r for r in rows if r["step"] > 0}
    return {label: last[label]["wall_s"] / last[label]["epoch"] for label in LABELS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 128, 256])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "results" / "bench_race.md"))
    a = ap.parse_args(argv)
    load0 = os.getloadavg()
    per: dict[int, list[dict[str, float]]] = {b: [] for b in a.batches}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeats):  # alternate batch sizes: slow drifts hit all alike
            for b in a.batches:
                t = one_job(b, a.epochs, Path(tmp) / f"race_{b}_{rep}.jsonl")
                per[b].append(t)
                print(
                    f"B={b} repeat {rep}: "
                    + ", ".join(f"{k} {v:.2f} s/epoch" for k, v in t.items()),
                    flush=True,
                )
    load1 = os.getloadavg()
    L = [
        "# Race per-epoch goals at N = 2 (784-1024-1024-10, MNIST-5k)",
        "",
        f"`python benchmarks/bench_race.py --batches {' '.join(map(str, a.batches))} "
        f"--epochs {a.epochs} --repeats {a.repeats}`; load average "
        f"{load0[0]:.2f} before, {load1[0]:.2f} after (2 cores). Ratios: a method's seconds per "
        "epoch / single's in the same job; min / median over the jobs.",
        "",
        "| batch | single s/epoch (median) | split one-shot / single | goal "
        "| dp mpi / single | goal |",
        "| ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for b in a.batches:
        single = statistics.median(t["single"] for t in per[b])
        cells = []
        for label, goal in GOALS.items():
            ratios = [t[label] / t["single"] for t in per[b]]
            lo, med = min(ratios), statistics.median(ratios)
            cells += [f"{lo:.2f} / {med:.2f}", f"<= {goal}: {'met' if med <= goal else 'missed'}"]
        L.append(f"| {b} | {single:.2f} | " + " | ".join(cells) + " |")
    text = "\n".join(L) + "\n"
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
