"""The one balanced-partition rule: n items into k contiguous parts, sizes differ by at most one.

    n = q k + r:   parts 0 .. r-1 hold q + 1 items, parts r .. k-1 hold q     (np.array_split)
    offset of part i = i q + min(i, r)

Used for the groups of a split, the neuron chunks of the tensor-parallel MLP (``rank*chunk``
of the MPI slides), the ring allreduce's chunks and the data-parallel batch shares.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ceil_div(a: int, b: int) -> int:
    """ceil(a / b) for integers, exactly (no float): the number of size-b parts that cover a."""
    return -(-a // b)


def displacements(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """Offsets of consecutive parts of the given sizes (MPI's ``displs``): [0, c0, c0+c1, ..]."""
    counts = np.asarray(counts)
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(counts.dtype, copy=False)


def balanced(n: int, k: int) -> tuple[int, int]:
    """(q, r): r parts of q + 1 items and k - r parts of q."""
    if n < 0 or k < 1:
        raise ValueError(f"cannot partition n={n} items into k={k} parts (need n >= 0, k >= 1)")
    return divmod(n, k)


def bounds(n: int, k: int) -> list[int]:
    """The k + 1 offsets: part i is ``[b[i], b[i+1])``. Plain ints (called per allreduce)."""
    q, r = balanced(n, k)
    return [i * q + min(i, r) for i in range(k + 1)]


def sizes(n: int, k: int) -> list[int]:
    q, r = balanced(n, k)
    return [q + (i < r) for i in range(k)]


def labels(n: int, k: int) -> np.ndarray:
    """(n,) int64: the part of every item."""
    return np.repeat(np.arange(k, dtype=np.int64), sizes(n, k))


def check_groups(hidden: Sequence[int], groups: int) -> None:
    """The one check of ``split.groups``: every group needs a neuron in every hidden layer."""
    hidden = [int(h) for h in hidden]
    if not hidden:
        raise ValueError("model.hidden=[] must list at least one hidden layer width")
    if groups < 1:
        raise ValueError(f"split.groups={groups} must be >= 1")
    for i, w in enumerate(hidden):
        if groups > w:
            raise ValueError(
                f"split.groups={groups} exceeds the width {w} of hidden layer {i} "
                f"(model.hidden={hidden}): every group needs a neuron in every layer"
            )
