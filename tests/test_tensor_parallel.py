"""ChunkedMLP against plain torch: 1 rank in-process, 1..4 ranks under one real mpiexec."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from conftest import REPO, run_mpi
from torch import nn

from splitnet.model import build_mlp
from splitnet.parallel.tensor_parallel import ChunkedMLP, parse_sequential, partition


@pytest.mark.parametrize(
    "n,p,counts",
    [(4, 2, [2, 2]), (7, 2, [4, 3]), (3, 4, [1, 1, 1, 0]), (0, 3, [0, 0, 0]), (10, 3, [4, 3, 3])],
)
def test_partition_is_array_split(n, p, counts):
    c, o = partition(n, p)
    assert c.tolist() == counts == [len(a) for a in np.array_split(np.arange(n), p)]
    assert o.tolist() == [int(sum(counts[:r])) for r in range(p)]


def test_partition_rejects_bad_sizes():
    with pytest.raises(ValueError, match="k=0 parts"):
        partition(4, 0)


def test_one_train_step_equals_torch_optim_sgd():
    torch.manual_seed(0)
    ref = build_mlp([8, 7, 5, 3], activation="tanh", seed=3)
    net = ChunkedMLP.from_torch(ref)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    out = net.forward(x.numpy())
    np.testing.assert_allclose(out, ref(x).detach().numpy(), atol=1e-5, rtol=0)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        loss_t = nn.functional.cross_entropy(ref(x), y)
        loss_t.backward()
        opt.step()
        loss = net.train_step(x.numpy(), y.numpy(), lr=0.1)
        assert abs(loss - loss_t.item()) < 1e-5
    for a, b in zip(net.to_torch().parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_to_torch_round_trip_is_exact_and_keeps_dtype():
    ref = build_mlp([5, 4, 2], activation="sigmoid", seed=1).double()
    back = ChunkedMLP.from_torch(ref).to_torch()
    assert [type(m) for m in back] == [type(m) for m in ref]
    for a, b in zip(back.state_dict().values(), ref.state_dict().values(), strict=True):
        assert a.dtype == torch.float64 and torch.equal(a, b)


@pytest.mark.parametrize(
    "module,match",
    [
        (nn.Sequential(nn.Linear(3, 4), nn.Dropout(), nn.Linear(4, 2)), "Dropout"),
        (nn.Sequential(nn.ReLU(), nn.Linear(3, 2)), "must directly follow"),
        (nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)), "do not chain"),
        (nn.Linear(3, 2), "nn.Sequential"),
    ],
)
def test_unsupported_modules_are_named(module, match):
    with pytest.raises(ValueError, match=match):
        parse_sequential(module)


def test_bad_inputs_raise():
    net = ChunkedMLP.from_torch(build_mlp([4, 3, 2], seed=0))
    with pytest.raises(ValueError, match=r"x.shape=\(2, 5\)"):
        net.forward(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="labels"):
        net.backward(np.zeros((2, 4)), np.array([0, 2]))


@pytest.mark.mpi
def test_chunked_mlp_on_1_to_4_ranks_and_benchmark_smoke(tmp_path):
    """One launch: sub-communicators of 1, 2, 3, 4 ranks (7 on 2 and 3 on 4 neurons included),
    then the benchmark, tiny: rows for 1, 2, 4 ranks and the baselines, and both figures."""
    out = tmp_path / "tp.jsonl"
    proc = run_mpi(4, ["tests/mpi_scripts/tp_check.py", "--bench-out", str(out)], timeout=240)
    assert "tp_check: OK on 1..4 ranks" in proc.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(r["impl"], r["ranks"]) for r in rows} >= {
        ("chunked", 1),
        ("chunked", 2),
        ("chunked", 4),
        ("numpy", 1),
        ("torch", 1),
    }
    spec = importlib.util.spec_from_file_location(
        "bench_tp", REPO / "benchmarks" / "bench_tensor_parallel.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.report(out, tmp_path)
    assert (tmp_path / "tensor_parallel_seq.png").stat().st_size > 0
    assert (tmp_path / "tensor_parallel_para.png").stat().st_size > 0
