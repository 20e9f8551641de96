"""Check splitnet.parallel.collectives.allreduce against MPI.Allreduce on every rank count.

Run: mpiexec -n N python -m mpi4py tests/mpi_scripts/coll_check.py   (N = 1, 2, 3, 4, ...)

For every algorithm x dtype x length (0, 1, 2, 7, 1000; 1 and 2 are shorter than N >= 3):
  - random normal data: |ours - MPI| <= N * eps * sum_r |x_r| (a bound on any summation order);
  - integer-valued data (all partial sums exact): ours == MPI.Allreduce exactly;
  - every rank's result is bitwise identical (we gather the bytes to compare);
  - the bytes this rank sent (counted on the send path) equal bytes_sent(...) exactly.
Also on a sub-communicator (comm.Split), and that the input array is left untouched.
Exits non-zero (AssertionError aborts the job under -m mpi4py) on the first failure.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from splitnet.parallel.collectives import ALGORITHMS, ByteCounter, allreduce, bytes_sent

LENGTHS = (0, 1, 2, 7, 1000)
DTYPES = (np.float16, np.float32, np.float64)


def reference(comm, x: np.ndarray) -> np.ndarray:
    ref = np.empty_like(x)
    comm.Allreduce(x, ref, op=MPI.SUM)
    return ref


def same_on_all_ranks(comm, y: np.ndarray) -> bool:
    mine = y.tobytes()
    return all(b == mine for b in comm.allgather(mine))


def check(comm, algorithm: str, dtype, k: int, seed: int) -> None:
    rank, n = comm.Get_rank(), comm.Get_size()
    rng = np.random.default_rng([seed, rank, k])
    where = f"algorithm={algorithm} dtype={np.dtype(dtype).name} K={k} N={n} rank={rank}"

    # integer-valued: |x| <= 8, so |sum| <= 8N, exact even in float16 -> any order is exact
    xi = rng.integers(-8, 9, size=k).astype(dtype)
    keep = xi.copy()
    counter = None if algorithm == "mpi" else ByteCounter()
    yi = allreduce(xi, algorithm, comm, counter=counter)
    assert np.array_equal(xi, keep), f"input modified: {where}"
    assert yi.dtype == xi.dtype and yi.shape == xi.shape, f"dtype/shape: {where}"
    assert np.array_equal(yi, reference(comm, xi)), f"integer-valued not exact: {where}"
    assert same_on_all_ranks(comm, yi), f"ranks differ (integer data): {where}"
    if counter is not None:
        want = bytes_sent(algorithm, n, xi.nbytes, rank, xi.itemsize)
        assert counter.bytes == want, f"sent {counter.bytes} bytes, model {want}: {where}"

    # random data: within the worst-case rounding of a length-N sum
    x = rng.standard_normal(k).astype(dtype)
    y = allreduce(x, algorithm, comm)
    ref = reference(comm, x)
    bound = reference(comm, np.abs(x)).astype(np.float64) * n * np.finfo(dtype).eps
    err = np.abs(y.astype(np.float64) - ref.astype(np.float64))
    assert np.all(err <= bound), f"max err {err.max() if k else 0} over bound: {where}"
    assert same_on_all_ranks(comm, y), f"ranks differ (random data): {where}"


def main() -> None:
    comm = MPI.COMM_WORLD
    n_checks = 0
    for algorithm in ALGORITHMS:
        for dtype in DTYPES:
            for k in LENGTHS:
                check(comm, algorithm, dtype, k, seed=11)
                n_checks += 1
        # a 2-D, non-contiguous input keeps its shape and matches the contiguous result
        x = np.arange(24, dtype=np.float64).reshape(4, 6)[:, ::2] * (comm.Get_rank() + 1)
        y = allreduce(x, algorithm, comm)
        assert y.shape == (4, 3) and np.array_equal(y, reference(comm, np.ascontiguousarray(x)))
    if comm.Get_size() >= 2:  # the trainer may hand us a sub-communicator
        sub = comm.Split(color=comm.Get_rank() % 2, key=comm.Get_rank())
        for algorithm in ALGORITHMS:
            check(sub, algorithm, np.float32, 7, seed=5)
            n_checks += 1
        sub.Free()
    if comm.Get_rank() == 0:
        print(f"coll_check: {n_checks} cases passed on {comm.Get_size()} ranks")


if __name__ == "__main__":
    main()
