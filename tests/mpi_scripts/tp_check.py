"""Check splitnet.parallel.tensor_parallel.ChunkedMLP against plain torch on 1, 2, 3 and 4 ranks.

Run: mpiexec -n 4 python -m mpi4py tests/mpi_scripts/tp_check.py [--bench-out ROWS.jsonl]

One launch covers every rank count: the world is split into sub-communicators of k = 1..N ranks
(ranks >= k sit the round out). For each net (uneven 7 neurons, 3 neurons where some rank owns
none, relu/tanh/sigmoid, float32/float64, an output activation, a Linear without bias):
  - forward equals the torch module within 1e-5, identically on every rank;
  - gradients (full, gathered) equal torch's autograd ones within 1e-5;
  - three train_steps equal three plain SGD steps ``p -= lr * p.grad`` (torch.optim.SGD without
    momentum; tests/test_tensor_parallel.py checks that against the optimizer itself): parameters
    after to_torch() within 1e-5, and the returned losses equal torch's;
  - to_torch() of an untrained net gives back the exact weights (slicing is lossless).
With ``--bench-out`` it then runs the benchmark tiny (a smoke test: it runs and writes rows).
An AssertionError aborts the job (non-zero exit) under ``python -m mpi4py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from mpi4py import MPI
from torch import nn

from splitnet.parallel.tensor_parallel import ChunkedMLP

TOL = 1e-5


def nets():
    """(name, factory) pairs; ``check`` seeds torch before each call, so all ranks agree."""
    L, R, T, S = nn.Linear, nn.ReLU, nn.Tanh, nn.Sigmoid
    f64 = torch.float64
    return [
        ("relu 5-7-3-4 f32", lambda: nn.Sequential(L(5, 7), R(), L(7, 3), R(), L(3, 4))),
        ("tanh 5-7-3-4 f64", lambda: nn.Sequential(L(5, 7), T(), L(7, 3), T(), L(3, 4)).to(f64)),
        ("sigmoid 4-3-1-2 f64", lambda: nn.Sequential(L(4, 3), S(), L(3, 1), S(), L(1, 2)).to(f64)),
        (
            "out-sigmoid, no-bias 6-9-5 f32",
            lambda: nn.Sequential(L(6, 9, bias=False), R(), L(9, 5), S()),
        ),
        (
            "60x3 64-60-60-60-10 f32",
            lambda: nn.Sequential(L(64, 60), R(), L(60, 60), R(), L(60, 60), R(), L(60, 10)),
        ),
    ]


def linears(m):
    return [x for x in m if isinstance(x, nn.Linear)]


def check(comm, name, make) -> None:
    k, rank = comm.Get_size(), comm.Get_rank()
    where = f"[{name}] k={k} rank={rank}"
    torch.manual_seed(1)
    ref = make()
    dt = next(ref.parameters()).dtype
    d_in, d_out = linears(ref)[0].in_features, linears(ref)[-1].out_features
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, d_in, generator=gen, dtype=dt)
    y = torch.randint(0, d_out, (6,), generator=gen)

    net = ChunkedMLP.from_torch(ref, comm)
    back = net.to_torch()
    for a, b in zip(back.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{where}: to_torch() of an untrained net changed weights"

    out = net.forward(x.numpy())
    err = np.abs(out - ref(x).detach().numpy()).max()
    assert err < TOL, f"{where}: forward differs from torch by {err:.3g}"
    assert all(np.array_equal(out, o) for o in comm.allgather(out)), f"{where}: ranks differ"
    one = net.forward(x[0].numpy())
    assert one.shape == (d_out,) and np.abs(one - out[0]).max() < TOL, f"{where}: 1-D input"

    for step in range(3):
        xs, ys = x[2 * step :], y[2 * step :]  # different batch sizes reuse/add plans
        ref.zero_grad()
        loss_t = nn.functional.cross_entropy(ref(xs), ys)
        loss_t.backward()
        if step == 0:
            net.backward(xs.numpy(), ys.numpy())
            for l, ((gw, gb), lin) in enumerate(
                zip(net.full_gradients(), linears(ref), strict=True)
            ):
                err = np.abs(gw - lin.weight.grad.numpy()).max()
                if lin.bias is not None:
                    err = max(err, np.abs(gb - lin.bias.grad.numpy()).max())
                assert err < TOL, f"{where}: layer {l} gradient differs by {err:.3g}"
        loss = net.train_step(xs.numpy(), ys.numpy(), lr=0.5)
        with torch.no_grad():  # torch.optim.SGD(lr) step (its import costs ~2 s per rank)
            for p in ref.parameters():
                p -= 0.5 * p.grad
        assert abs(loss - loss_t.item()) < TOL, f"{where}: step {step} loss {loss} vs {loss_t}"
    for (key, a), b in zip(
        net.to_torch().state_dict().items(), ref.state_dict().values(), strict=True
    ):
        err = (a - b).abs().max().item()
        assert err < TOL, f"{where}: after 3 SGD steps {key} differs by {err:.3g}"


def bench_smoke(out: str) -> None:
    """Run benchmarks/bench_tensor_parallel.py tiny, in this job (saves a second launch)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_tensor_parallel.py"
    spec = importlib.util.spec_from_file_location("bench_tp", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(
        [
            "--widths",
            "8",
            "--batch",
            "4",
            "--train-batch",
            "4",
            "--min-time",
            "0.001",
            "--repeats",
            "1",
            "--out",
            out,
        ]
    )


def main() -> None:
    world = MPI.COMM_WORLD
    torch.set_num_threads(1)
    for k in range(1, world.Get_size() + 1):
        sub = world.Split(0 if world.Get_rank() < k else MPI.UNDEFINED, world.Get_rank())
        if sub != MPI.COMM_NULL:
            for name, make in nets():
                check(sub, name, make)
            sub.Free()
        world.Barrier()
    if world.Get_rank() == 0:
        print(f"tp_check: OK on 1..{world.Get_size()} ranks", flush=True)
    if len(sys.argv) > 2 and sys.argv[1] == "--bench-out":
        bench_smoke(sys.argv[2])


if __name__ == "__main__":
    main()
