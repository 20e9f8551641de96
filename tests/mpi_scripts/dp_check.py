"""Check splitnet.parallel.dataparallel and its step (parallel.dp) on N ranks against a plain
single-process torch loop.

Run: mpiexec -n N python -m mpi4py tests/mpi_scripts/dp_check.py OUT.jsonl [ALGO]

1. ``--compressor none`` with B = 7 (not divisible by N) and dropout on: the final parameters
   equal a plain full-batch torch run (same init, batches and dropout masks) within 1e-5.
2. The same through ``splitnet.parallel.collectives`` allreduce ALGO (if given).
3. ``--compressor dynamic`` with residuals: every rank's parameters are bitwise identical.
4. ``main`` with ``--out OUT.jsonl`` (the test reads the rows).
Prints ``OK <name>`` per check; an AssertionError aborts the job under -m mpi4py.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F
from mpi4py import MPI

from splitnet.parallel import dataparallel as program
from splitnet.parallel import dp
from splitnet.parallel.collectives import bytes_sent

TINY = [
    "--channels",
    "2,3",
    "--dense",
    "8",
    "--batch-size",
    "7",
    "--lr",
    "0.2",
    "--quiet",
    "--eval-every",
    "2",
    "--snapshot-iterations",
    "0,3",
]


def reference(cfg: program.DPConfig) -> np.ndarray:
    """Plain torch: full batch, mean loss, SGD; dropout masks from dp.dropout_keep."""
    Xtr, ytr, _, _, shape = program.load_data(cfg)
    model = program.build_model(cfg, shape)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    batches = program.batch_indices(cfg.seed, len(ytr), cfg.batch_size)
    width = model.classifier[1].out_features
    for t in range(cfg.iterations):
        b = next(batches)
        keep = dp.dropout_keep(cfg.seed, t, cfg.batch_size, width, cfg.dropout)
        h = model.classifier[:3](model.features(Xtr[b].view(-1, *shape)))  # flatten, dense, relu
        loss = F.cross_entropy(model.classifier[4](h * keep), ytr[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return dp.flat_params(model)


def check_equals_reference(comm, extra: list[str], name: str) -> None:
    cfg = program.parse(TINY + ["--compressor", "none", "--iterations", "4"] + extra)
    model, rows = program.train(cfg, comm)
    mine = dp.flat_params(model)
    if comm.Get_rank() == 0:
        ref = reference(cfg)
        err = float(np.abs(mine - ref).max())
        assert err < 1e-5, f"{name}: max |dp - single| = {err}"
        assert rows[-1]["replicas_identical"], name
        if "--allreduce" in extra:  # the exact bytes our collective sent, averaged over ranks
            size, n = comm.Get_size(), rows[-1]["n_params"]
            want = np.mean([bytes_sent(cfg.allreduce, size, 4 * n, r, 4) for r in range(size)])
            assert rows[0]["bytes_sent"] == want, (rows[0]["bytes_sent"], want)
        print(f"OK {name} max_abs_err={err:.2e}", flush=True)


def check_replicas_identical(comm) -> None:
    cfg = program.parse(TINY + ["--compressor", "dynamic", "--iterations", "6"])
    model, _ = program.train(cfg, comm)
    mine = dp.flat_params(model).tobytes()
    assert all(b == mine for b in comm.allgather(mine)), "dynamic: replicas drifted"
    if comm.Get_rank() == 0:
        print("OK dynamic_replicas_identical", flush=True)


def main() -> None:
    comm = MPI.COMM_WORLD
    out = sys.argv[1]
    check_equals_reference(comm, [], "none_equals_single_process")
    if len(sys.argv) > 2:
        algo = sys.argv[2]
        check_equals_reference(comm, ["--allreduce", algo], f"none_{algo}_equals_single_process")
    check_replicas_identical(comm)
    status = program.main(
        TINY
        + ["--compressor", "topk", "--topk-fraction", "0.05", "--iterations", "3", "--out", out]
    )
    assert status == 0, status


if __name__ == "__main__":
    main()
