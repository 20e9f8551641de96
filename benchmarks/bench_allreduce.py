"""Allreduce benchmark: ps / tree / ring / mpi, measured against the α-β-γ cost model.

Run (each rank count appends its results; the table and figure cover every count run so far):
    .venv/bin/mpiexec -n 2 .venv/bin/python -m mpi4py benchmarks/bench_allreduce.py
    .venv/bin/mpiexec -n 4 .venv/bin/python -m mpi4py benchmarks/bench_allreduce.py
    .venv/bin/python benchmarks/bench_allreduce.py --plot-only      # redraw from the JSON files

Writes allreduce_n{N}.json (raw), allreduce_table.md, allreduce.png into results/ (``--out
figures`` refreshes the committed ones).
Timing: a barrier, then one allreduce per repetition; a repetition's time is the slowest
rank's; after warm-up we keep the minimum over repetitions (the quiet-machine estimate: other
processes on a shared machine only ever add time) and the median. α, β come from a ping-pong run
in the same job (so under the same load), γ, δ from numpy on rank 0 (splitnet.parallel.costmodel).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from splitnet.mpi import MPI, world, wtime
from splitnet.parallel.collectives import ALGORITHMS, ByteCounter, allreduce, bytes_sent
from splitnet.parallel.costmodel import CostParams, calibrate, local_rates, predict

RESULTS = Path(__file__).resolve().parents[1] / "results"
COLORS = {"ps": "tab:red", "tree": "tab:green", "ring": "tab:blue", "mpi": "black"}


def reps_for(n_bytes: int) -> tuple[int, int]:
    """(warm-up, repetitions): many for latency-bound sizes, few where one call takes 100 ms."""
    if n_bytes <= 1 << 16:
        return 5, 40
    if n_bytes <= 1 << 22:
        return 2, 15
    return 1, 8


def time_allreduce(comm, x: np.ndarray, reps: int | None = None) -> dict[str, tuple[float, float]]:
    """{algorithm: (min, median)} over repetitions of the slowest rank's time for one call.

    The algorithms take turns inside each repetition, so a burst of load from other processes
    hits all of them alike instead of whichever happened to be running.
    """
    warmup, auto = reps_for(x.nbytes)
    reps = reps or auto
    samples = {alg: [] for alg in ALGORITHMS}
    for r in range(warmup + reps):
        for alg in ALGORITHMS:
            comm.Barrier()
            t0 = wtime()
            allreduce(x, alg, comm)
            dt = comm.allreduce(wtime() - t0, op=MPI.MAX)
            if r >= warmup:
                samples[alg].append(dt)
    return {alg: (float(np.min(t)), float(np.median(t))) for alg, t in samples.items()}


def counted_bytes(comm, x: np.ndarray, algorithm: str) -> int:
    """Bytes the busiest rank sent in one call, counted on the send path and checked."""
    if algorithm == "mpi":
        return -1
    counter = ByteCounter()
    allreduce(x, algorithm, comm, counter=counter)
    n, rank = comm.Get_size(), comm.Get_rank()
    want = bytes_sent(algorithm, n, x.nbytes, rank, x.itemsize)
    if counter.bytes != want:
        raise RuntimeError(f"{algorithm}: rank {rank} sent {counter.bytes} bytes, model {want}")
    return comm.allreduce(counter.bytes, op=MPI.MAX)


def run(args) -> dict:
    comm = world()
    n, rank = comm.Get_size(), comm.Get_rank()
    if n < 2:
        raise SystemExit("run under mpiexec with >= 2 ranks (the ping-pong needs a partner)")
    load0 = os.getloadavg()
    # ping-pong sizes 1 B, 4 B, ... up to the largest message benchmarked
    pp = [4**e for e in range(int(np.log(args.max_bytes) / np.log(4)) + 1)]
    params, pp_sizes, pp_times = calibrate(comm, pp, reps=args.reps or 20)
    dtype = np.dtype(args.dtype)
    rows = []
    size = args.min_bytes
    while size <= args.max_bytes:
        x = np.random.default_rng(rank).standard_normal(size // dtype.itemsize).astype(dtype)
        gamma, delta = local_rates(comm, size)
        p = replace(params, gamma=gamma, delta=delta)  # α, β fitted once; γ, δ at this size
        times = time_allreduce(comm, x, args.reps)
        for algorithm in ALGORITHMS:
            sent = counted_bytes(comm, x, algorithm)
            best, med = times[algorithm]
            rows.append(
                dict(
                    n_bytes=size,
                    algorithm=algorithm,
                    measured=best,
                    median=med,
                    predicted=predict(algorithm, n, size, p),
                    max_sent=sent,
                    gamma=gamma,
                    delta=delta,
                )
            )
            if rank == 0 and args.verbose:
                print(f"  {size:>10} {algorithm:>5} {best * 1e3:9.3f} ms", flush=True)
        size *= args.step
    mpich = {k: v for k, v in os.environ.items() if k.startswith("MPIR_CVAR_")}
    return dict(
        n_ranks=n,
        dtype=dtype.name,
        params=params.__dict__,
        load=[load0, os.getloadavg()],
        mpich_env=mpich,
        pingpong=dict(sizes=pp_sizes.tolist(), times=pp_times.tolist()),
        rows=rows,
    )


def fmt_size(b: int) -> str:
    for unit, div in (("MB", 1 << 20), ("KB", 1 << 10)):
        if b >= div:
            return f"{b // div} {unit}"
    return f"{b} B"


def table(results: list[dict]) -> str:
    """Markdown: one line per (N, size, algorithm); 'vs mpi' = t_mpi / t_alg (>1: faster)."""
    lines = [
        "| N | size | algorithm | measured ms (min) | median ms | predicted ms | error % | "
        "vs mpi | max bytes sent/rank |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        mpi_t = {r["n_bytes"]: r["measured"] for r in res["rows"] if r["algorithm"] == "mpi"}
        for r in res["rows"]:
            err = 100 * (r["predicted"] - r["measured"]) / r["measured"]
            sent = "library" if r["max_sent"] < 0 else f"{r['max_sent']:,}"
            lines.append(
                f"| {res['n_ranks']} | {fmt_size(r['n_bytes'])} | {r['algorithm']} | "
                f"{r['measured'] * 1e3:.3f} | {r['median'] * 1e3:.3f} | "
                f"{r['predicted'] * 1e3:.3f} | {err:+.0f} | "
                f"{mpi_t[r['n_bytes']] / r['measured']:.2f} | {sent} |"
            )
    return "\n".join(lines)


def header(res: dict) -> str:
    p = CostParams(**res["params"])
    l0, l1 = res["load"]
    return (
        f"N={res['n_ranks']} ({res['dtype']}): α={p.alpha * 1e6:.2f} µs, "
        f"β={p.beta * 1e9:.3f} ns/B ({1e-9 / p.beta if p.beta else float('inf'):.2f} GB/s); "
        f"at 16 MB γ={p.gamma * 1e9:.3f} ns/B, δ={p.delta * 1e9:.3f} ns/B; "
        f"load avg before {l0[0]:.2f}, after {l1[0]:.2f}"
        + "".join(f"; {k}={v}" for k, v in res.get("mpich_env", {}).items())
    )


def summary(res: dict, big: int = 1 << 20) -> str:
    """The issue's two goals, checked on messages >= 1 MB."""
    rows = [r for r in res["rows"] if r["n_bytes"] >= big]
    if not rows:
        return f"N={res['n_ranks']}: no message >= 1 MB measured"
    mpi_t = {r["n_bytes"]: r["measured"] for r in rows if r["algorithm"] == "mpi"}
    ring = [mpi_t[r["n_bytes"]] / r["measured"] for r in rows if r["algorithm"] == "ring"]
    errs = [abs(r["predicted"] / r["measured"] - 1) for r in rows]
    return (
        f"N={res['n_ranks']}, >= 1 MB: ring/mpi speed min {min(ring):.2f} (goal >= 0.8); "
        f"model |error| max {100 * max(errs):.0f}%, median {100 * np.median(errs):.0f}% "
        f"(goal <= 25% on a quiet machine)"
    )


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(results), figsize=(6 * len(results), 4.5), squeeze=False, sharey=True
    )
    for ax, res in zip(axes[0], results, strict=True):
        n = res["n_ranks"]
        for alg in ALGORITHMS:
            rows = [r for r in res["rows"] if r["algorithm"] == alg]
            sizes = [r["n_bytes"] for r in rows]
            ax.loglog(
                sizes,
                [r["measured"] for r in rows],
                "o",
                color=COLORS[alg],
                label=f"{alg} measured",
            )
            ax.loglog(
                sizes,
                [r["predicted"] for r in rows],
                "--",
                color=COLORS[alg],
                lw=1,
                label=f"{alg} model",
            )
        ax.set_title(f"{n} ranks ({res['dtype']}), load avg {res['load'][0][0]:.1f}")
        ax.set_xlabel("message size per rank (bytes)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("time per allreduce (s)")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def load_results(out: Path) -> list[dict]:
    files = sorted(out.glob("allreduce_n*.json"), key=lambda f: int(f.stem.split("_n")[1]))
    return [json.loads(f.read_text()) for f in files]


def write_outputs(out: Path) -> None:
    results = load_results(out)
    md = [
        "# Allreduce: measured vs α-β-γ model",
        "",
        "Generated by `benchmarks/bench_allreduce.py`. Time of the slowest rank; 'measured' is "
        "the minimum over repetitions, error % = predicted / measured - 1, 'vs mpi' = "
        "t_mpi / t_alg (above 1: faster than the library).",
        "",
    ]
    md += [f"- {header(r)}" for r in results] + [f"- {summary(r)}" for r in results]
    (out / "allreduce_table.md").write_text("\n".join(md + ["", table(results), ""]))
    plot(results, out / "allreduce.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-bytes", type=int, default=1 << 10)
    ap.add_argument("--max-bytes", type=int, default=1 << 26)
    ap.add_argument("--step", type=int, default=4, help="size multiplier between points")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default: by size)")
    ap.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="folder of the raw JSON, table and figure (figures/ holds the committed ones)",
    )
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if args.plot_only:
        write_outputs(args.out)
        return
    res = run(args)
    if world().Get_rank() == 0:  # rank 0 alone prints and writes
        print(header(res))
        print(table([res]))
        print(summary(res))
        args.out.mkdir(exist_ok=True)
        (args.out / f"allreduce_n{res['n_ranks']}.json").write_text(json.dumps(res, indent=1))
        write_outputs(args.out)


if __name__ == "__main__":
    main()
