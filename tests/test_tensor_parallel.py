"""ChunkedMLP against plain torch: 1 rank in-process, 1..4 ranks under one real mpiexec."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from conftest import REPO, run_mpi
from torch import nn

from splitnet.model import build_mlp, parse_sequential
from splitnet.parallel.tensor_parallel import ChunkedMLP


class RankOf:
    """Just enough of a communicator for the constructor: rank r of p (no messages)."""

    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size

    def Get_rank(self) -> int:
        return self.rank

    def Get_size(self) -> int:
        return self.size


@pytest.mark.parametrize("p", [1, 2, 3, 4, 7])
def test_each_rank_owns_its_array_split_rows(p):
    """Rank r keeps rows ``np.array_split(range(n), p)[r]`` of every layer (n < p included)."""
    ref = build_mlp([5, 7, 3, 2], seed=0)
    layers = parse_sequential(ref)
    for r in range(p):
        net = ChunkedMLP.from_torch(ref, RankOf(r, p), broadcast=False)
        for l, (lin, _) in enumerate(layers):
            rows = np.array_split(np.arange(lin.out_features), p)[r]
            assert net.counts[l] == len(rows) and net.all_counts[l].sum() == lin.out_features
            np.testing.assert_array_equal(net.W[l], lin.weight.detach().numpy()[rows])
            np.testing.assert_array_equal(net.b[l][:, 0], lin.bias.detach().numpy()[rows])


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
