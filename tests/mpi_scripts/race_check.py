"""Check splitnet.race's methods against single-process SGD on the same stream.

Run: mpiexec -n N python -m mpi4py tests/mpi_scripts/race_check.py

1. N = 1: split with k = 1 (one-shot and rounds, evaluation points anywhere) ends with single's
   weights exactly (torch.equal on every parameter).
2. N > 1: dense data-parallel (MPI Allreduce and our ring) equals single-process SGD on the
   global batch within float rounding (1e-5); so does the tensor-parallel ChunkedMLP (1e-4).
Prints ``OK <name>`` per check; an AssertionError aborts the job under -m mpi4py.
"""

from __future__ import annotations

import torch

from splitnet import race, race_methods
from splitnet.mpi import world
from splitnet.sgd import sgd

comm = world()
rank, size = comm.Get_rank(), comm.Get_size()
# B = 7: the last batch of an epoch is short and the shards uneven (4 + 3, then 2 + 1)
items = ["data.name=digits", "model.hidden=[12, 13]", "train.batch_size=7", "train.lr=0.1"]
cfg, rc = race.load(None, [*items, "race.epochs=2", "race.E=5"], size)
pb = race.problem(cfg, rc)
torch.set_num_threads(1)
ref = pb.net()
sgd(ref, pb.X, pb.y, pb.stream, lr=cfg.train.lr)


def final(v: race_methods.Variant, cuts: list[int]) -> torch.nn.Module | None:
    """Train ``v`` to T steps in the segments cut at ``cuts``; the full net on rank 0."""
    runner = race_methods.RUNNERS[v.method](pb, v, comm, race_methods.Metered(comm))
    for lo, hi in zip([0, *cuts], [*cuts, pb.T], strict=True):
        runner.train(lo, hi)
        mid = runner.full_net()  # an evaluation mid-way must not change anything
        assert rank != 0 or mid is not None
    return runner.full_net()


def params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach() for p in net.parameters()]


for v in race.variants(rc):
    net = final(v, [3, 13, pb.T // 2])
    if rank != 0:
        continue
    diff = max(float((a - b).abs().max()) for a, b in zip(params(net), params(ref), strict=True))
    name = v.label.replace(" ", "_")
    if v.method == "split" and size == 1:
        assert all(torch.equal(a, b) for a, b in zip(params(net), params(ref), strict=True)), (
            name,
            diff,
        )
        print(f"OK {name}_k1_equals_single", flush=True)
    elif v.method == "dataparallel" and v.exchange != "topk" and size > 1:
        assert diff < 1e-5, (name, diff)
        print(f"OK {name}_equals_single_process ({diff:.1e})", flush=True)
    elif v.method == "tensor" and size > 1:
        assert diff < 1e-4, (name, diff)
        print(f"OK {name}_equals_single_process ({diff:.1e})", flush=True)
