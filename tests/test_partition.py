"""The one balanced-partition rule against numpy's array_split, and the check of split.groups."""

from __future__ import annotations

import numpy as np
import pytest

from splitnet import partition


@pytest.mark.parametrize("n", [0, 1, 2, 7, 10, 33, 64])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 10])
def test_the_rule_is_array_split(n, k):
    parts = np.array_split(np.arange(n), k)
    assert partition.sizes(n, k) == [len(p) for p in parts]
    b = partition.bounds(n, k)
    assert all(isinstance(x, int) for x in b)
    assert [list(range(b[i], b[i + 1])) for i in range(k)] == [p.tolist() for p in parts]
    labels = partition.labels(n, k)
    assert labels.dtype == np.int64
    assert labels.tolist() == [g for g, p in enumerate(parts) for _ in p]
    q, r = partition.balanced(n, k)
    assert (q, r) == (n // k, n % k)


@pytest.mark.parametrize("n, k, word", [(4, 0, "k=0"), (-1, 2, "n=-1")])
def test_bad_sizes_are_named(n, k, word):
    with pytest.raises(ValueError, match=word):
        partition.bounds(n, k)


def test_groups_check_names_the_layer():
    partition.check_groups([4, 4], 4)
    with pytest.raises(ValueError, match=r"split.groups=5 exceeds the width 4 of hidden layer 1"):
        partition.check_groups([8, 4], 5)
    with pytest.raises(ValueError, match="split.groups=0 must be >= 1"):
        partition.check_groups([8], 0)
    with pytest.raises(ValueError, match=r"model.hidden=\[\]"):
        partition.check_groups([], 2)


def test_ceil_div_and_displacements_match_their_closed_forms():
    import math

    from splitnet.partition import ceil_div, displacements

    for a in range(0, 40):
        for b in range(1, 9):
            assert ceil_div(a, b) == math.ceil(a / b)
    counts = np.array([3, 0, 5, 2], np.int64)
    d = displacements(counts)
    assert d.dtype == np.int64 and d.tolist() == [0, 3, 3, 8]
