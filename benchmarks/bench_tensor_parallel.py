"""Sequential vs neuron-chunk parallel MLP: predict latency and training throughput.

Run everything (one 4-rank launch timing 1, 2 and 4 ranks, then the table and the figures):
    benchmarks/run_tensor_parallel.sh
or by hand (each launch appends to the JSON Lines file; --report reads it, latest row wins):
    .venv/bin/mpiexec -n 4 .venv/bin/python -m mpi4py benchmarks/bench_tensor_parallel.py
    .venv/bin/python benchmarks/bench_tensor_parallel.py --report

Nets: ``[64, w, w, w, 10]`` (3 hidden layers of width w; w = 60 is the slides' "60x3" net, 64
inputs and 10 classes as for 8x8 digits), float32. Metrics: ``predict1`` (one sample),
``predict_batch`` (B samples), ``train`` (one SGD step on B_train samples). Next to ChunkedMLP
on p = 1, 2, 4 ranks, rank 0 times the same net in plain torch (``inference_mode``,
``optim.SGD``), in a bare numpy chain (``np.maximum(x @ W.T + b, 0)``, hand-written backprop
for training) and in TensorFlow when it is installed (skipped otherwise). All single-threaded
(torch threads, BLAS threads = 1), so p ranks use at most p cores.

Timing: calibrate n calls per round (~``--min-time`` s), then ``--repeats`` rounds; a round
starts after a barrier and its time is the slowest rank's. The rounds of all variants are
interleaved (round i of every variant back to back), and ranks outside the timed group sleep,
so a load change on a shared machine hits every variant alike. We keep the best round (other
users only ever add time) and the median, and the best CPU time per call (``process_time``):
for one single-threaded process that is the work itself, whatever share of a core other users
leave us; for p > 1 it includes MPI's busy-polling while waiting.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from splitnet.model import build_mlp
from splitnet.mpi import MPI, world
from splitnet.parallel.tensor_parallel import ChunkedMLP

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("predict1", "predict_batch", "train")


def idle_barrier(comm, poll: float = 0.002) -> None:
    """A barrier that sleeps while waiting (MPI's own spins and steals the busy ranks' cores)."""
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(poll)


def calibrate(fn, comm, min_time: float) -> int:
    """Calls per round so a round lasts ~``min_time``; the slowest rank decides, all agree."""
    fn()
    n = 1
    while True:
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        per = comm.allreduce((time.perf_counter() - t0) / n, op=MPI.MAX)
        if per * n >= min_time / 4:
            return max(1, int(min_time / per))
        n *= 2


def one_round(fn, comm, n: int) -> tuple[float, float]:
    """(wall, CPU) seconds per call over n calls started together, the slowest rank's."""
    comm.Barrier()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    wall, cpu = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
    return comm.allreduce(wall, op=MPI.MAX), comm.allreduce(cpu, op=MPI.MAX)


def numpy_net(model):
    """Bare numpy: predict and a hand-written SGD step (allocating, as one would write it)."""
    Ws = [lin.weight.detach().numpy().copy() for lin in model.linears]
    bs = [lin.bias.detach().numpy().copy() for lin in model.linears]

    def predict(x):
        for W, b in zip(Ws[:-1], bs[:-1], strict=True):
            x = np.maximum(x @ W.T + b, 0)
        return x @ Ws[-1].T + bs[-1]

    def train(x, y, lr=0.01):
        acts = [x]
        for W, b in zip(Ws[:-1], bs[:-1], strict=True):
            acts.append(np.maximum(acts[-1] @ W.T + b, 0))
        z = acts[-1] @ Ws[-1].T + bs[-1]
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        d = p / len(y)
        for l in range(len(Ws) - 1, -1, -1):
            gW, gb = d.T @ acts[l], d.sum(axis=0)
            if l:
                d = (d @ Ws[l]) * (acts[l] > 0)
            Ws[l] -= lr * gW
            bs[l] -= lr * gb

    return predict, train


def torch_net(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def predict(x):
        with torch.inference_mode():
            return model(x)

    def train(x, y):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return predict, train


def tensorflow_net(model):
    """The same net in Keras, called directly (``model(x)``; ``.predict`` adds ~ms of setup)."""
    import tensorflow as tf

    layers = [tf.keras.Input((model.sizes[0],))]
    for i, lin in enumerate(model.linears):
        layers.append(
            tf.keras.layers.Dense(
                lin.out_features, activation=("relu" if i < len(model.linears) - 1 else None)
            )
        )
    net = tf.keras.Sequential(layers)
    for dense, lin in zip(net.layers, model.linears, strict=True):
        dense.set_weights([lin.weight.detach().numpy().T, lin.bias.detach().numpy()])
    opt = tf.keras.optimizers.SGD(0.01)
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def train(x, y):
        with tf.GradientTape() as tape:
            value = loss(y, net(x, training=True))
        opt.apply_gradients(
            zip(tape.gradient(value, net.trainable_variables), net.trainable_variables, strict=True)
        )

    return (lambda x: net(x, training=False).numpy()), train


def callables(predict, train, x1, xb, xt, yt) -> dict:
    """metric -> zero-argument call on the fixed inputs."""
    return {
        "predict1": lambda: predict(x1),
        "predict_batch": lambda: predict(xb),
        "train": lambda: train(xt, yt),
    }


def run(args) -> None:
    """One launch of N ranks times every rank count p in ``--ranks`` (p <= N) *interleaved*:
    round i of p = 1, 2, 4 and of the baselines run back to back, so a load change on a shared
    machine hits all of them alike. Ranks outside the measured group wait in a sleeping barrier."""
    comm = world()
    rank, size = comm.Get_rank(), comm.Get_size()
    torch.set_num_threads(1)
    ranks = [p for p in args.ranks if p <= size]
    subs = {p: comm.Split(0 if rank < p else MPI.UNDEFINED, rank) for p in ranks}
    rng = np.random.default_rng(0)
    rows = []
    for width in args.widths:
        sizes = [args.d_in, width, width, width, args.d_out]
        model = build_mlp(sizes, seed=0)
        x1 = rng.standard_normal((1, args.d_in)).astype(np.float32)
        xb = rng.standard_normal((args.batch, args.d_in)).astype(np.float32)
        xt = rng.standard_normal((args.train_batch, args.d_in)).astype(np.float32)
        yt = rng.integers(0, args.d_out, args.train_batch)
        group = {("chunked", p): (p, subs[p]) for p in ranks}  # (impl, p) -> (p, comm)
        fns = {}
        for p, sub in group.values():
            if rank < p:
                net = ChunkedMLP.from_torch(model, sub)
                fns[("chunked", p)] = callables(
                    net.forward, lambda a, b, net=net: net.train_step(a, b, 0.01), x1, xb, xt, yt
                )
        if args.baselines:
            names = ["numpy", "torch"] + (
                ["tensorflow"] if importlib.util.find_spec("tensorflow") is not None else []
            )
            for name in names:
                group[(name, 1)] = (1, subs[1])
                if rank == 0:
                    make = {"numpy": numpy_net, "torch": torch_net, "tensorflow": tensorflow_net}[
                        name
                    ]
                    conv = torch.from_numpy if name == "torch" else (lambda a: a)
                    fns[(name, 1)] = callables(
                        *make(build_mlp(sizes, seed=0)), *(conv(a) for a in (x1, xb, xt, yt))
                    )
        for metric in METRICS:
            calls, times = {}, {key: [] for key in group}
            for key, (p, sub) in group.items():
                if rank < p:
                    calls[key] = calibrate(fns[key][metric], sub, args.min_time)
                idle_barrier(comm)
            for _ in range(args.repeats):
                for key, (p, sub) in group.items():
                    if rank < p:
                        times[key].append(one_round(fns[key][metric], sub, calls[key]))
                    idle_barrier(comm)
            for (impl, p), ts in times.items():
                if rank == 0:
                    walls = [w for w, _ in ts]
                    best, median = float(min(walls)), float(np.median(walls))
                    cpu = float(min(c for _, c in ts))
                    rows.append(
                        {
                            "impl": impl,
                            "ranks": p,
                            "launch_ranks": size,
                            "width": width,
                            "sizes": sizes,
                            "metric": metric,
                            "samples": {
                                "predict1": 1,
                                "predict_batch": args.batch,
                                "train": args.train_batch,
                            }[metric],
                            "best_s": best,
                            "median_s": median,
                            "cpu_s": cpu,
                            "load1": os.getloadavg()[0],
                        }
                    )
                    print(
                        f"p={p} w={width:5d} {impl:10s} {metric:13s} best {best * 1e3:9.4f}"
                        f" ms  median {median * 1e3:9.4f} ms",
                        flush=True,
                    )
    if rank == 0:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


def report(path: Path, fig_dir: Path) -> None:
    """Print the tables (wall: all, with speedups; CPU: sequential) and draw the figures.

    "Performance seq" plots CPU time of the one-process implementations; "Performance para"
    plots the wall-clock speedup of p ranks over 1 rank (the only honest parallel metric)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, cpu, loads = {}, {}, []
    for line in path.read_text().splitlines():  # the latest row wins for each key
        r = json.loads(line)
        t[(r["impl"], r["ranks"], r["width"], r["metric"])] = r["best_s"]
        cpu[(r["impl"], r["ranks"], r["width"], r["metric"])] = r.get("cpu_s", r["best_s"])
        loads.append(r["load1"])
    print(
        f"wall-clock, best of rounds; 1-min load average during the run "
        f"{min(loads):.1f}..{max(loads):.1f}\n"
    )
    widths = sorted({k[2] for k in t})
    ranks = sorted({k[1] for k in t if k[0] == "chunked"})
    base = [b for b in ("numpy", "torch", "tensorflow") if any(k[0] == b for k in t)]
    cols = base + [f"chunked p={p}" for p in ranks] + [f"x{p}/1" for p in ranks if p > 1]
    print("| net | metric | " + " | ".join(cols) + " |")
    print("|" + "---|" * (len(cols) + 2))
    for w in widths:
        for m in METRICS:
            c1 = t.get(("chunked", 1, w, m))
            cells = [t.get((b, 1, w, m)) for b in base] + [
                t.get(("chunked", p, w, m)) for p in ranks
            ]
            cells = [f"{v * 1e3:.3f} ms" if v else "-" for v in cells]
            cells += [
                f"{c1 / t[('chunked', p, w, m)]:.2f}x" if c1 and ("chunked", p, w, m) in t else "-"
                for p in ranks
                if p > 1
            ]
            print(f"| {w}x3 | {m} | " + " | ".join(cells) + " |")
    seq = base + ["chunked"]
    print("\nsequential, CPU time per call (1 thread; robust to other users' load)\n")
    print("| net | metric | " + " | ".join(seq) + " |")
    print("|" + "---|" * (len(seq) + 2))
    for w in widths:
        for m in METRICS:
            cells = [cpu.get((b, 1, w, m)) for b in seq]
            print(
                f"| {w}x3 | {m} | "
                + " | ".join(f"{v * 1e3:.3f} ms" if v else "-" for v in cells)
                + " |"
            )
    key_c, key_n = ("chunked", 1, 60, "predict1"), ("numpy", 1, 60, "predict1")
    if key_c in t and key_n in t:
        print(
            f"\n60x3 one-sample predict, chunked p=1 / bare numpy: wall "
            f"{t[key_c] / t[key_n]:.2f}, CPU {cpu[key_c] / cpu[key_n]:.2f} (goal <= 3)"
        )
    fig_dir.mkdir(parents=True, exist_ok=True)
    styles = {"numpy": "s-", "torch": "o-", "tensorflow": "^-", "chunked": "D-"}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, m in zip(axes, METRICS, strict=True):
        for impl in base + ["chunked"]:
            ws = [w for w in widths if (impl, 1, w, m) in t]
            ax.loglog(
                ws,
                [cpu[(impl, 1, w, m)] * 1e3 for w in ws],
                styles[impl],
                label=impl + (" (1 rank)" if impl == "chunked" else ""),
            )
        ax.set(
            title=f"{m}", xlabel="hidden width w (net 64-w-w-w-10)", ylabel="CPU time per call (ms)"
        )
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle("Performance seq: one process, single-threaded, float32")
    fig.tight_layout()
    fig.savefig(fig_dir / "tensor_parallel_seq.png", dpi=110)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, m in zip(axes, METRICS, strict=True):
        for w in widths:
            ps = [p for p in ranks if ("chunked", p, w, m) in t]
            if ("chunked", 1, w, m) in t:
                ax.plot(
                    ps,
                    [t[("chunked", 1, w, m)] / t[("chunked", p, w, m)] for p in ps],
                    "o-",
                    label=f"{w}x3",
                )
        ax.plot(ranks, ranks, "k--", lw=1, label="ideal")
        ax.axhline(1, color="grey", lw=0.8)
        ax.set(title=m, xlabel="MPI ranks", ylabel="speedup over 1 rank (x)", xticks=ranks)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Performance para: neuron-chunk parallel MLP (ranks share 2 cores)")
    fig.tight_layout()
    fig.savefig(fig_dir / "tensor_parallel_para.png", dpi=110)
    print(f"wrote {fig_dir / 'tensor_parallel_seq.png'}, {fig_dir / 'tensor_parallel_para.png'}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[60, 256, 1024, 4096])
    p.add_argument(
        "--ranks",
        type=int,
        nargs="+",
        default=[1, 2, 4],
        help="group sizes timed in this launch (at most its -n)",
    )
    p.add_argument("--d-in", type=int, default=64)
    p.add_argument("--d-out", type=int, default=10)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--min-time", type=float, default=0.3, help="seconds per timing round")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-baselines", dest="baselines", action="store_false")
    p.add_argument("--out", default=str(ROOT / "results" / "tensor_parallel.jsonl"))
    p.add_argument("--report", action="store_true", help="print the table, draw the figures")
    p.add_argument(
        "--fig-dir",
        default=str(ROOT / "results"),
        help="where the figures go (figures/ holds the committed ones)",
    )
    args = p.parse_args(argv)
    if args.report:
        report(Path(args.out), Path(args.fig_dir))
        return
    with threadpool_limits(1):  # numpy's BLAS single-threaded, like torch and every rank
        run(args)


if __name__ == "__main__":
    sys.exit(main())
