"""The batched engine's kernel against the machine: FLOP rate per layer, a roofline line each.

    .venv/bin/python benchmarks/bench_kernels.py                 # about 1 minute
    .venv/bin/python benchmarks/bench_kernels.py --out figures/bench_kernels.md

One SGD step of a stack of P pieces of sizes [d, h_1, .., h_L, C] on a minibatch of B rows
(``batched.train_stack``) does, per layer m with fan-in n_{m-1} and width n_m, products of

    2 * P * B * n_m * n_{m-1} FLOP each:  forward z, weight gradient, input gradient (m > 1)

so a step is sum_m 2 P B n_m n_{m-1} (2 if m = 1 else 3) FLOP; the elementwise work
(activations, softmax, bias sums, updates) is O(P B n) and not counted. The roof is a 1024^3
float32 GEMM (2 * 1024^3 FLOP) on one thread, measured in the same process. Each product is
timed alone in the kernel's layout (layer 1 with a shared order: one (P*h_1, d) x (d, B) GEMM;
the others: P per-piece GEMMs, one bmm), then the whole step of the previous kernel
(``--reference``'s batched.py, from git) and of today's, interleaved; and the engines end to end:
``train_pieces`` batched (both kernels) against the loop engine on a subset of the pieces.

Times are CPU seconds of this process (time.process_time: on a shared machine the time spent
waiting for a core is not counted); minimum and median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from splitnet import batched, engines  # noqa: E402
from splitnet.model import build_mlp  # noqa: E402
from splitnet.sgd import minibatches  # noqa: E402

# name: (pieces P, piece sizes); the pieces of a net [d, 2h, 2h, C] split in k=2 groups
STACKS = {
    "default: [8,8] k=2, pieces [4,4]": (1024, [64, 4, 4, 10]),
    "target: [12,12] k=2, pieces [6,6]": (1024, [64, 6, 6, 10]),
}
B = 32
N_ROWS = 1000  # rows of the training set: 32 steps per epoch
REFERENCE = "070627c"  # the column-layout kernel (commit 2d77b0d) before this benchmark's work


def timed(f, repeats: int, inner: int = 1) -> list[float]:
    """CPU seconds per call of ``f``: ``repeats`` timings of ``inner`` calls each."""
    f()
    out = []
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(inner):
            f()
        out.append((time.process_time() - t0) / inner)
    return out


def timed_pair(f, g, repeats: int) -> tuple[list[float], list[float]]:
    """``timed`` of two functions, interleaved so that the load hits both alike."""
    f(), g()
    tf, tg = [], []
    for _ in range(repeats):
        tf += timed(f, 1)
        tg += timed(g, 1)
    return tf, tg


def gemm_peak(repeats: int) -> float:
    """GFLOP/s of a 1024^3 float32 GEMM on one thread (the roof)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return 2 * 1024**3 / min(timed(lambda: a @ b, repeats, 3)) / 1e9


def products(P: int, sizes: list[int]) -> list[tuple[int, str, int, object]]:
    """(layer, product, FLOP, thunk) of every GEMM of one shared-order step, kernel's layout."""
    out = []
    a0 = torch.randn(B, sizes[0])
    for m in range(1, len(sizes)):
        n_in, n_out = sizes[m - 1], sizes[m]
        flop = 2 * P * B * n_out * n_in
        W, b = torch.randn(P, n_out, n_in), torch.randn(P, n_out)
        g = torch.randn(P, n_out, B)
        if m == 1:
            Wf, bf, gf = W.reshape(P * n_out, n_in), b.reshape(P * n_out, 1), g.reshape(-1, B)
            out.append((m, "forward", flop, lambda Wf=Wf, bf=bf: torch.addmm(bf, Wf, a0.t())))
            out.append((m, "weight grad", flop, lambda gf=gf: torch.mm(gf, a0)))
            continue
        a = torch.randn(P, n_in, B)
        out.append((m, "forward", flop, lambda W=W, b=b, a=a: torch.baddbmm(b[..., None], W, a)))
        out.append((m, "weight grad", flop, lambda g=g, a=a: torch.bmm(g, a.transpose(1, 2))))
        out.append((m, "input grad", flop, lambda W=W, g=g: torch.bmm(W.transpose(1, 2), g)))
    return out


def step_flop(P: int, sizes: list[int]) -> int:
    return sum(2 * P * B * sizes[m] * sizes[m - 1] * (2 if m == 1 else 3) for m in range(1, 4))


def load_reference(rev: str):
    """``splitnet/batched.py`` as it was at ``rev`` (git show), as a module."""
    text = subprocess.run(
        ["git", "show", f"{rev}:splitnet/batched.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "batched_reference.py"
    path.write_text(text.replace("from .model import", "from splitnet.model import"))
    spec = importlib.util.spec_from_file_location("batched_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kernel_run(kernel, P: int, sizes: list[int], steps: int = 10):
    """A thunk: ``steps`` shared-order SGD steps of ``kernel`` on a fresh random stack."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(N_ROWS, sizes[0], generator=gen)
    y = torch.randint(0, sizes[-1], (N_ROWS,), generator=gen)
    W0 = [0.3 * torch.randn(P, sizes[m], sizes[m - 1], generator=gen) for m in range(1, 4)]
    b0 = [0.1 * torch.randn(P, sizes[m], generator=gen) for m in range(1, 4)]
    batches = minibatches(N_ROWS, B, 0, steps=steps)

    def run():
        Ws, bs = [w.clone() for w in W0], [b.clone() for b in b0]
        kernel.train_stack(Ws, bs, X, y, batches, lr=0.05, momentum=0.0, activation="relu")
        return Ws, bs

    return run


def jobs_of(P: int, sizes: list[int]) -> list[engines.PieceJob]:
    """P pieces of a net with hidden [2h, 2h]: random halves of each hidden layer, path (0, 0)."""
    net = build_mlp((sizes[0], 2 * sizes[1], 2 * sizes[2], sizes[3]), seed=0)
    rng = np.random.default_rng(0)
    return [
        engines.PieceJob(net, tuple(np.sort(rng.permutation(2 * h)[:h]) for h in sizes[1:3]), 0)
        for _ in range(P)
    ]


def engine_times(old, P: int, sizes: list[int], n_loop: int, epochs: int, repeats: int):
    """Seconds per piece: train_pieces batched (today's kernel, the reference's) and loop."""
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(N_ROWS, sizes[0], generator=gen)
    y = torch.randint(0, sizes[-1], (N_ROWS,), generator=gen)
    streams = {0: minibatches(N_ROWS, B, 0, epochs=epochs)}
    T = len(streams[0])
    jobs = jobs_of(P, sizes)
    kw = dict(steps=(0, T), lr=0.05, shared_order=True)

    def batched_with(kernel):
        def run():
            saved, engines.train_stack = engines.train_stack, kernel.train_stack
            try:
                engines.train_pieces(jobs, X, y, streams, engine="batched", **kw)
            finally:
                engines.train_stack = saved

        return run

    t_old, t_new = timed_pair(batched_with(old), batched_with(batched), repeats)
    t_loop = timed(
        lambda: engines.train_pieces(jobs[:n_loop], X, y, streams, engine="loop", **kw), 2
    )
    per = lambda ts, k: [t / k for t in ts]  # noqa: E731
    return T, per(t_old, P), per(t_new, P), per(t_loop, n_loop)


def us(ts: list[float]) -> str:
    return f"{1e6 * min(ts):,.0f} / {1e6 * statistics.median(ts):,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--reference", default=REFERENCE, help="commit of the previous kernel")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--loop-pieces", type=int, default=12, help="pieces the loop engine trains")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per piece, engines end to end")
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    peak = gemm_peak(args.repeats)
    old = load_reference(args.reference)
    R = args.repeats
    lines = [
        "# Batched kernel: FLOP rate per layer against the single-thread GEMM peak",
        "",
        f"Roof: 1024^3 float32 GEMM on one thread, {peak:.1f} GFLOP/s. Batch {B}, shared order, "
        f"relu. FLOP = 2 P B n_m n_(m-1) per product. Times: CPU microseconds (process_time), "
        f"min / median of {R}. `{args.reference}`: the previous kernel (git). "
        f"Load average (1, 5, 15 min) {', '.join(f'{v:.2f}' for v in load0)} at the start "
        "(2 cores shared with other jobs).",
        f"Command: `.venv/bin/python benchmarks/bench_kernels.py {' '.join(sys.argv[1:])}`",
    ]
    summary = []
    for name, (P, sizes) in STACKS.items():
        lines += [
            "",
            f"## {name}: a stack of {P} pieces of {sizes}",
            "",
            "| layer | product | MFLOP | us (min / median) | GFLOP/s | % of peak |",
            "|---|---|---:|---:|---:|---:|",
        ]
        per_layer: dict[int, list] = {}
        for m, prod, flop, f in products(P, sizes):
            ts = timed(f, R, 10)
            rate = flop / min(ts) / 1e9
            per_layer.setdefault(m, []).append((flop, ts))
            lines.append(
                f"| {m} ({sizes[m - 1]}->{sizes[m]}) | {prod} | {flop / 1e6:.2f} | {us(ts)} | "
                f"{rate:.1f} | {100 * rate / peak:.0f}% |"
            )
        for m, rows in per_layer.items():
            flop, t = sum(r[0] for r in rows), sum(min(r[1]) for r in rows)
            lines.append(
                f"| **{m}** | **all products** | {flop / 1e6:.2f} | {1e6 * t:,.0f} | "
                f"**{flop / t / 1e9:.1f}** | {100 * flop / t / 1e9 / peak:.0f}% |"
            )
        flop = step_flop(P, sizes)
        prod_t = sum(min(r[1]) for rows in per_layer.values() for r in rows)
        steps = 10
        to, tn = timed_pair(
            kernel_run(old, P, sizes, steps), kernel_run(batched, P, sizes, steps), R
        )
        to, tn = [t / steps for t in to], [t / steps for t in tn]
        for label, ts in ((f"previous ({args.reference})", to), ("today", tn)):
            rate = flop / min(ts) / 1e9
            lines.append(
                f"| step | **whole step, {label}** | {flop / 1e6:.2f} | {us(ts)} | {rate:.1f} | "
                f"{100 * rate / peak:.0f}% |"
            )
        lines.append(
            f"| step | products alone (sum of the lines above) | {flop / 1e6:.2f} | "
            f"{1e6 * prod_t:,.0f} | {flop / prod_t / 1e9:.1f} | "
            f"{100 * flop / prod_t / 1e9 / peak:.0f}% |"
        )
        T, eo, en, el = engine_times(old, P, sizes, args.loop_pieces, args.epochs, max(3, R // 2))
        lines += [
            "",
            f"Kernel, whole step, today / previous: **{min(to) / min(tn):.2f}x** (min), "
            f"{statistics.median(to) / statistics.median(tn):.2f}x (median); the products alone "
            f"are {100 * prod_t / min(tn):.0f}% of today's step.",
            "",
            f"Engines end to end (`train_pieces`, {T} steps per piece, shared order), "
            "ms per piece (min / median):",
            "",
            "| engine | pieces | ms per piece | loop / this |",
            "|---|---:|---:|---:|",
            f"| loop (`sgd`, one piece at a time) | {args.loop_pieces} | "
            f"{1e3 * min(el):.2f} / {1e3 * statistics.median(el):.2f} | 1.0x |",
            f"| batched, previous kernel | {P} | {1e3 * min(eo):.3f} / "
            f"{1e3 * statistics.median(eo):.3f} | {min(el) / min(eo):.0f}x |",
            f"| batched, today's kernel | {P} | {1e3 * min(en):.3f} / "
            f"{1e3 * statistics.median(en):.3f} | **{min(el) / min(en):.0f}x** |",
        ]
        summary.append(
            f"{name}: kernel step {us(to)} -> {us(tn)} us, {min(to) / min(tn):.2f}x; "
            f"batched/loop per piece {min(el) / min(eo):.0f}x -> {min(el) / min(en):.0f}x"
        )
    lines += ["", f"Load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}."]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    print("\n".join(summary))


if __name__ == "__main__":
    main()
