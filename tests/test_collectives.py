"""Allreduce (splitnet.parallel.collectives) and its cost model (splitnet.parallel.costmodel).

The MPI half runs tests/mpi_scripts/coll_check.py under mpiexec on 1-4 ranks: every algorithm
against MPI.Allreduce (exact on integer-valued data, within rounding otherwise), bitwise-equal
results on every rank, and the bytes counted on the send path against ``bytes_sent``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import run_mpi
from hypothesis import given
from hypothesis import strategies as st

from splitnet.mpi import SerialComm, world
from splitnet.parallel.collectives import (
    ALGORITHMS,
    ByteCounter,
    allreduce,
    bytes_sent,
    max_bytes_sent,
    rounds,
)
from splitnet.parallel.costmodel import CostParams, fit_alpha_beta, predict

OURS = ("ps", "tree", "ring")


# ---- pure: schedules, byte counts -------------------------------------------------------------


@given(n=st.integers(1, 33), k=st.integers(0, 300), itemsize=st.sampled_from([2, 4, 8]))
def test_every_algorithm_sends_2_n_minus_1_k_in_total(n, k, itemsize):
    """Each value crosses N-1 links on the way in and N-1 on the way out, whatever the shape."""
    for alg in OURS:
        total = sum(bytes_sent(alg, n, k * itemsize, r, itemsize) for r in range(n))
        assert total == 2 * (n - 1) * k * itemsize, alg


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 13, 64])
def test_busiest_rank_closed_forms(n):
    k = 64 * 1000 * n  # divisible by n: the ring's chunks are equal
    assert max_bytes_sent("ps", n, k) == bytes_sent("ps", n, k, 0) == (n - 1) * k  # O(N·K)
    assert (
        max_bytes_sent("tree", n, k) == bytes_sent("tree", n, k, 0) == math.ceil(math.log2(n)) * k
    )
    ring = [bytes_sent("ring", n, k, r) for r in range(n)]
    assert ring == [2 * (n - 1) * k // n] * n  # O(K): independent of N up to the (N-1)/N


@given(n=st.integers(2, 20), k=st.integers(0, 200))
def test_ring_is_balanced_to_two_elements(n, k):
    sent = [bytes_sent("ring", n, 4 * k, r, itemsize=4) for r in range(n)]
    assert max(sent) - min(sent) <= 2 * 4


def test_nothing_is_sent_alone_or_empty():
    for alg in OURS:
        assert bytes_sent(alg, 1, 800, 0) == 0
        assert bytes_sent(alg, 4, 0, 3) == 0


@pytest.mark.parametrize(
    "args, match",
    [
        (("mpi", 2, 8, 0), "'mpi'"),
        (("ring", 2, 8, 2), "rank 2"),
        (("ring", 2, 12, 0), "n_bytes=12"),
    ],
)
def test_bytes_sent_rejects(args, match):
    with pytest.raises(ValueError, match=match):
        bytes_sent(*args)


# ---- allreduce in-process (one rank) ------------------------------------------------------------


@pytest.mark.parametrize("comm", [SerialComm(), None], ids=["serial", "world"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_one_rank_returns_a_copy(algorithm, comm):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]  # non-contiguous (3, 2)
    keep = x.copy()
    y = allreduce(x, algorithm, comm if comm is not None else world())
    assert np.array_equal(x, keep) and np.array_equal(y, x)
    assert y.dtype == np.float32 and y.flags.c_contiguous and not np.shares_memory(x, y)


def test_counter_on_one_rank_counts_nothing():
    c = ByteCounter()
    allreduce(np.ones(5), "ring", SerialComm(), counter=c)
    assert (c.bytes, c.messages) == (0, 0)


@pytest.mark.parametrize(
    "x, algorithm, match",
    [
        (np.ones(3), "allgather", "'allgather'"),
        (np.arange(3), "ring", "int64"),
        (np.ones(3, dtype=np.complex64), "ring", "complex64"),
    ],
)
def test_allreduce_rejects(x, algorithm, match):
    with pytest.raises(ValueError, match=match):
        allreduce(x, algorithm, SerialComm())


def test_counter_refused_for_the_library_algorithm():
    with pytest.raises(ValueError, match="mpi"):
        allreduce(np.ones(3), "mpi", SerialComm(), counter=ByteCounter())


# ---- cost model ---------------------------------------------------------------------------------


def test_fit_recovers_alpha_beta():
    sizes = 4.0 ** np.arange(14)
    alpha, beta = 3e-6, 1e-10
    noise = 1 + 0.02 * np.random.default_rng(0).standard_normal(sizes.size)
    a, b = fit_alpha_beta(sizes, (alpha + beta * sizes) * noise)
    assert a == pytest.approx(alpha, rel=0.05) and b == pytest.approx(beta, rel=0.05)


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError):
        fit_alpha_beta([1, 2], [1e-6, 0.0])


@pytest.mark.parametrize("n", [2, 3, 4, 7, 8])
@pytest.mark.parametrize("alg", OURS)
def test_model_latency_term_is_the_rounds(alg, n):
    assert predict(alg, n, 1024, CostParams(alpha=1.0, beta=0.0)) == rounds(alg, n)


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_model_bandwidth_term_matches_bytes_sent(n):
    """β·(bytes through the busiest rank's link): the model and the byte count agree."""
    k = 8 * 240  # divisible by n
    p = CostParams(alpha=0.0, beta=1.0)
    assert predict("ring", n, k, p) == pytest.approx(max_bytes_sent("ring", n, k))
    # the root of ps and tree receives as much as it sends, one message at a time
    assert predict("ps", n, k, p) == 2 * max_bytes_sent("ps", n, k)
    assert predict("tree", n, k, p) == 2 * max_bytes_sent("tree", n, k)


def test_model_orders_algorithms_as_the_lecture_says():
    p = CostParams(alpha=2e-6, beta=2e-10, gamma=5e-11, delta=5e-11)
    big, small = 64 << 20, 1 << 10
    for n in (4, 8, 16):
        assert predict("ring", n, big, p) < predict("tree", n, big, p) < predict("ps", n, big, p)
        assert predict("tree", n, small, p) < predict("ring", n, small, p)  # latency-bound
    assert predict("ring", 1, big, p) == pytest.approx(big * p.delta)  # one rank: the copy


def test_model_rejects_unknown_algorithm():
    with pytest.raises(ValueError, match="'bcast'"):
        predict("bcast", 2, 8, CostParams(1.0, 1.0))


# ---- under mpiexec ------------------------------------------------------------------------------


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_equal_to_mpi_allreduce(n):
    out = run_mpi(n, ["tests/mpi_scripts/coll_check.py"], timeout=90).stdout
    assert f"passed on {n} ranks" in out


@pytest.mark.mpi
def test_benchmark_smoke(tmp_path):
    """The benchmark runs end to end on small sizes and writes its table, JSON and figure."""
    out = run_mpi(
        2,
        [
            "benchmarks/bench_allreduce.py",
            "--max-bytes",
            "4096",
            "--reps",
            "3",
            "--out",
            str(tmp_path),
        ],
        timeout=90,
    ).stdout
    assert "α=" in out and "| 2 | 4 KB | ring |" in out
    for name in ("allreduce_n2.json", "allreduce_table.md", "allreduce.png"):
        assert (tmp_path / name).stat().st_size > 0
