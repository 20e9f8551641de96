"""The exhaustive space against a brute force over every balanced label assignment."""

import itertools

import numpy as np
import pytest

from splitnet.combinations import Space, n_balanced, n_rg, paths


def balanced_labellings(h, k):
    for a in itertools.product(range(k), repeat=h):
        sizes = np.bincount(a, minlength=k)
        if sizes.max() - sizes.min() <= 1:
            yield np.array(a)


def piece_set(split, P):
    """A combination is the set of pieces it yields: each piece as its neuron sets per layer."""
    return frozenset(
        tuple(frozenset(np.flatnonzero(split[l] == p[l]).tolist()) for l in range(len(split)))
        for p in P
    )


def brute_force(hidden, k, variant):
    P = paths(variant, len(hidden), k)
    layers = [list(balanced_labellings(h, k)) for h in hidden]
    return {piece_set(s, P) for s in itertools.product(*layers)}, layers


@pytest.mark.parametrize(
    "hidden,k,variant,expected",
    [
        ((4, 4), 2, "straight", 18),
        ((4, 4), 2, "alternating", 9),
        ((6, 6), 2, "straight", 200),
        ((4, 4, 4), 2, "straight", 108),
        ((6, 6), 3, "straight", 1350),
    ],
)
def test_issue_counts(hidden, k, variant, expected):
    assert Space(hidden, k, variant).count == expected


CASES = [((4, 4), 2, v) for v in ("straight", "alternating", "all-paths")] + [
    ((5, 3), 2, "straight"),
    ((4, 4, 4), 2, "alternating"),
    ((3, 3, 3), 3, "alternating"),
    ((4, 3), 3, "all-paths"),
    ((3, 4), 3, "alternating"),
    ((5,), 2, "straight"),
    ((3, 4, 3), 3, "alternating"),
    ((4, 5), 3, "straight"),
    ((3, 3, 3), 2, "all-paths"),
]


@pytest.mark.parametrize("hidden,k,variant", CASES)
def test_count_and_bijection_equal_brute_force(hidden, k, variant):
    space = Space(hidden, k, variant)
    combos, layers = brute_force(hidden, k, variant)
    assert space.count == len(combos)
    seen = []
    for i in range(space.count):
        s = space.split_at(i)
        space.validate(s)
        assert space.index_of(s) == i
        seen.append(piece_set(s, space.paths))
    assert set(seen) == combos and len(seen) == len(combos)  # onto and one-to-one
    # every labelling maps to the combination with the same pieces
    for s in itertools.product(*layers):
        i = space.index_of(s)
        assert seen[i] == piece_set(s, space.paths)


def test_closed_form_pieces():
    assert n_balanced(7, 2) == 70 and n_balanced(6, 3) == 90
    assert n_rg(6, 3) == 90 // 6
    assert Space((8, 8), 2).count == 2450 and Space((10, 10), 2).count == 31752


def test_large_space_jumps_without_walking():
    space = Space((12, 12, 12), 3, "straight")  # 34650^3 / 6 ~ 6.9e12 combinations
    for i in (0, 1, space.count // 3, space.count - 1):
        assert space.index_of(space.split_at(i)) == i


def test_variant_paths():
    assert paths("straight", 2, 2) == [(0, 0), (1, 1)]
    assert paths("alternating", 2, 2) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert len(paths("alternating", 3, 3)) == 9 and len(paths("all-paths", 3, 3)) == 27
    with pytest.raises(ValueError, match="variant"):
        paths("zigzag", 2, 2)


@pytest.mark.parametrize(
    "bad,msg",
    [
        ([[0, 0, 0, 1], [0, 0, 1, 1]], "unbalanced"),
        ([[0, 0, 1, 2], [0, 0, 1, 1]], "outside"),
        ([[0, 1, 0, 1]], "layers"),
    ],
)
def test_bad_split_is_named(bad, msg):
    with pytest.raises(ValueError, match=msg):
        Space((4, 4), 2).index_of(bad)


def test_bad_space_and_index():
    with pytest.raises(ValueError, match="exceeds the width 3"):
        Space((4, 3), 4)
    with pytest.raises(ValueError, match="outside"):
        Space((4, 4), 2).split_at(18)
