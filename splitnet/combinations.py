"""The exhaustive combination space: count, canonical order, and index <-> split bijection.

A *split* labels every neuron of hidden layer l (width h_l) with a group in {0..k-1}, balanced:
group sizes differ by at most one (h = qk + r: r groups of q+1, k-r groups of q). A *variant*
turns a split into pieces, one per *path* p = (p_1..p_L) (a group per hidden layer):

    straight     p = (g, g, ..., g)                       g in Z_k           k pieces
    alternating  p = (g, g+s, g+2s, ...) mod k            g, s in Z_k        k^2 paths (fewer
                 if L = 1); every hidden-to-hidden block (a -> b) lies on exactly one path
    all-paths    every p in Z_k^L                                            k^L pieces

A *combination* is the set of pieces a split yields. Relabelling groups layer-wise by
sigma = (sigma_1..sigma_L) in S_k^L changes the pieces' names, not the set, exactly when sigma maps
the path set P onto itself; those sigma form the symmetry group G (straight: the k! simultaneous
relabellings; all-paths: all of S_k^L; alternating: computed). G acts freely (every group is
non-empty in every layer), so

    count = prod_l B(h_l, k) / |G|,     B(h, k) = C(k, r) * h! / ((q+1)!^r * q!^(k-r))

Canonical order. Write a layer's labels as a = tau o rg, with rg the restricted-growth string
(groups numbered by first appearance) and tau the permutation of first appearances. Layer by
layer, with H_l the labels G can still move in layer l once layers < l are fixed, a layer's
classes are (rg, right coset H_l tau): radix_l = RG(h_l, k) * k!/|H_l|, and

    index = mixed-radix(i_1, ..., i_L), layer 1 most significant,  i_l = rank(rg) * k!/|H_l| + coset

so ``split_at(i)`` and ``index_of(split)`` are O(sum h_l * k) after setup, never walking from 0.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from functools import cached_property
from typing import Protocol

import numpy as np

from .config import VARIANTS, Config
from .partition import balanced, check_groups
from .seeds import sample_seed

# a random strategy draws this many splits (combination i is the i-th seeded draw)
RANDOM_DRAWS = 100
# Space.split_at memoises a layer's labels per digit when the layer has at most this many
LABEL_CACHE = 1 << 16

Perm = tuple[int, ...]  # perm[j] = image of label j


def n_balanced(width: int, k: int) -> int:
    """B(h, k): balanced labellings of h neurons into k labelled groups."""
    q, r = balanced(width, k)
    return (
        math.comb(k, r)
        * math.factorial(width)
        // (math.factorial(q + 1) ** r * math.factorial(q) ** (k - r))
    )


def paths(variant: str, n_layers: int, groups: int) -> list[tuple[int, ...]]:
    """The pieces a split yields, as group-per-layer paths, in sorted order."""
    k = groups
    if variant == "straight":
        out = {(g,) * n_layers for g in range(k)}
    elif variant == "alternating":
        out = {tuple((g + s * l) % k for l in range(n_layers)) for g in range(k) for s in range(k)}
    elif variant == "all-paths":
        out = set(itertools.product(range(k), repeat=n_layers))
    else:
        raise ValueError(f"split.variant={variant!r} is not one of {', '.join(VARIANTS)}")
    return sorted(out)


# --- restricted-growth strings with balanced blocks --------------------------------------------


def _next_states(width: int, k: int, counts: tuple[int, ...]) -> int | list[tuple[int, ...]]:
    """The count of a finished state, or the states one more neuron leads to."""
    q, _ = balanced(width, k)
    left = width - sum(counts)
    used = len(counts)
    if left == 0:
        return int(used == k and min(counts) >= q)
    # neurons still owed to reach at least q in every group, including groups not yet opened
    owed = sum(max(0, q - c) for c in counts) + (k - used) * q
    if owed > left:
        return 0
    out = [
        tuple(sorted(counts[:j] + (c + 1,) + counts[j + 1 :]))
        for j, c in enumerate(counts)
        if c < q + 1
    ]
    if used < k:
        out.append(tuple(sorted(counts + (1,))))
    return out


_COMPLETIONS: dict[tuple[int, int], dict[tuple[int, ...], int]] = {}


def _completions(width: int, k: int, counts: tuple[int, ...]) -> int:
    """Ways to finish an RG string whose open groups have ``counts`` (sorted), balanced at end.

    Memoised depth-first search with an explicit stack: the recursion would be ``width`` deep
    (a RecursionError from about 500 neurons on).
    """
    memo = _COMPLETIONS.setdefault((width, k), {})
    stack = [counts]
    while stack:
        state = stack[-1]
        if state in memo:
            stack.pop()
            continue
        nxt = _next_states(width, k, state)
        if isinstance(nxt, int):
            memo[state] = nxt
            stack.pop()
            continue
        todo = [c for c in nxt if c not in memo]
        if todo:
            stack.extend(todo)
        else:
            memo[state] = sum(memo[c] for c in nxt)
            stack.pop()
    return memo[counts]


def n_rg(width: int, k: int) -> int:
    """Balanced restricted-growth strings: B(h, k) / k!."""
    return _completions(width, k, ())


def _after(width: int, k: int, counts: list[int], label: int) -> int:
    """Completions once the next neuron takes ``label`` (a new group if label == len(counts))."""
    q, _ = balanced(width, k)
    if label == len(counts):
        return _completions(width, k, tuple(sorted(counts + [1])))
    if counts[label] >= q + 1:
        return 0
    bumped = counts[:label] + [counts[label] + 1] + counts[label + 1 :]
    return _completions(width, k, tuple(sorted(bumped)))


def rank_rg(rg: np.ndarray, k: int) -> int:
    """Position of ``rg`` among balanced RG strings of its length, in lexicographic order."""
    width, counts, rank = len(rg), [], 0
    for label in map(int, rg):
        for smaller in range(label):
            rank += _after(width, k, counts, smaller)
        if label == len(counts):
            counts.append(1)
        else:
            counts[label] += 1
    return rank


def unrank_rg(rank: int, width: int, k: int) -> np.ndarray:
    """The restricted-growth string of ``width`` labels < k at ``rank`` in the canonical order
    (``rank_rg``'s inverse), walking the completion counts instead of enumerating."""
    counts: list[int] = []
    out = np.empty(width, dtype=np.int64)
    for i in range(width):
        for label in range(min(len(counts) + 1, k)):
            n = _after(width, k, counts, label)
            if rank < n:
                out[i] = label
                if label == len(counts):
                    counts.append(1)
                else:
                    counts[label] += 1
                break
            rank -= n
        else:  # pragma: no cover - guarded by the caller's range check
            raise ValueError("rank out of range")
    return out


def to_rg(labels: np.ndarray) -> tuple[np.ndarray, Perm]:
    """labels = tau[rg]: tau lists the labels in order of first appearance."""
    tau: list[int] = []
    index = {}
    rg = np.empty(len(labels), dtype=np.int64)
    for i, a in enumerate(labels):
        a = int(a)
        if a not in index:
            index[a] = len(tau)
            tau.append(a)
        rg[i] = index[a]
    return rg, tuple(tau)


# --- the symmetry group and its layer-by-layer transversal --------------------------------------


def _compose(a: Perm, b: Perm) -> Perm:
    return tuple(a[j] for j in b)


def _inverse(a: Perm) -> Perm:
    inv = [0] * len(a)
    for j, x in enumerate(a):
        inv[x] = j
    return tuple(inv)


def symmetry_group(variant: str, n_layers: int, k: int) -> list[tuple[Perm, ...]]:
    """All sigma in S_k^L with sigma(P) = P, by backtracking over layers."""
    perms = list(itertools.permutations(range(k)))
    P = paths(variant, n_layers, k)
    prefixes = [{p[: l + 1] for p in P} for l in range(n_layers)]
    out: list[tuple[Perm, ...]] = []

    def extend(sigma: tuple[Perm, ...]) -> None:
        l = len(sigma)
        if l == n_layers:
            out.append(sigma)
            return
        for s in perms:
            cand = sigma + (s,)
            image = {tuple(c[x] for c, x in zip(cand, p, strict=True)) for p in prefixes[l]}
            if image == prefixes[l]:
                extend(cand)

    extend(())
    return out


class Space:
    """The exhaustive combination space of one (hidden widths, groups k, variant)."""

    def __init__(self, hidden: Sequence[int], groups: int, variant: str = "straight"):
        check_groups(hidden, groups)
        self.hidden = tuple(int(h) for h in hidden)
        self.groups = int(groups)
        self.variant = variant
        self.paths = paths(variant, len(self.hidden), self.groups)
        self._setup_layers()

    def _setup_layers(self) -> None:
        L, k = len(self.hidden), self.groups
        ident: Perm = tuple(range(k))
        all_perms = list(itertools.permutations(range(k)))
        if self.variant == "all-paths" or len(self.paths) == k**L:  # G = S_k^L: layers independent
            self.group_order = math.factorial(k) ** L
            H = [set(all_perms)] * L
            lifts = [
                {h: tuple(h if m == l else ident for m in range(L)) for h in all_perms}
                for l in range(L)
            ]
        else:
            G = symmetry_group(self.variant, L, k)
            self.group_order = len(G)
            H, lifts = [], []
            for l in range(L):
                lift = {ident: tuple([ident] * L)}
                for s in G:
                    lift.setdefault(s[l], s)
                H.append(set(lift))
                lifts.append(lift)
                G = [s for s in G if s[l] == ident]
        self._lifts = lifts
        # cosets H_l tau, each named by its lexicographically smallest member
        self._coset_reps, self._coset_of = [], []
        for h_set in H:
            reps = sorted({min(_compose(h, t) for h in h_set) for t in all_perms})
            pos = {r: i for i, r in enumerate(reps)}
            self._coset_reps.append(reps)
            self._coset_of.append({t: pos[min(_compose(h, t) for h in h_set)] for t in all_perms})
        self.radices = [
            n_rg(h, k) * len(reps) for h, reps in zip(self.hidden, self._coset_reps, strict=True)
        ]
        self._labels: dict[tuple[int, int], np.ndarray] = {}  # see _layer_labels

    @cached_property
    def count(self) -> int:
        """Closed form: prod_l B(h_l, k) / |G|."""
        return math.prod(n_balanced(h, self.groups) for h in self.hidden) // self.group_order

    def __len__(self) -> int:
        return self.count

    def split_at(self, index: int) -> tuple[np.ndarray, ...]:
        """The canonical split of combination ``index`` (0 <= index < count)."""
        if not 0 <= index < self.count:
            raise ValueError(f"combination index {index} is outside [0, {self.count})")
        digits = []
        for radix in reversed(self.radices):
            index, d = divmod(index, radix)
            digits.append(d)
        digits.reverse()
        return tuple(self._layer_labels(l, d).copy() for l, d in enumerate(digits))

    def _layer_labels(self, layer: int, digit: int) -> np.ndarray:
        """Layer ``layer``'s labels for its mixed-radix digit ``digit``: rep_coset[unrank(rg)].

        Memoised while the layer's radix is at most ``LABEL_CACHE`` (the default experiment's
        [8,8] has 35 per layer, [12,12] 462): an exhaustive enumeration meets every digit
        thousands of times, and unranking costs more than training a piece's share of a step.
        """
        key = (layer, digit)
        labels = self._labels.get(key)
        if labels is None:
            reps = self._coset_reps[layer]
            rg_rank, coset = divmod(digit, len(reps))
            labels = np.asarray(reps[coset])[unrank_rg(rg_rank, self.hidden[layer], self.groups)]
            if self.radices[layer] <= LABEL_CACHE:
                self._labels[key] = labels
        return labels

    def index_of(self, split: Sequence[Sequence[int]]) -> int:
        """The combination index of any split (canonicalised first)."""
        labels = [np.asarray(a, dtype=np.int64).copy() for a in self.validate(split)]
        index = 0
        for l, radix in enumerate(self.radices):
            rg, tau = to_rg(labels[l])
            coset = self._coset_of[l][tau]
            rep = self._coset_reps[l][coset]
            h = _compose(rep, _inverse(tau))  # h o tau = rep, and h is in H_l
            sigma = self._lifts[l][h]
            labels = [np.asarray(s)[a] for s, a in zip(sigma, labels, strict=True)]
            index = index * radix + rank_rg(rg, self.groups) * len(self._coset_reps[l]) + coset
        return index

    def index(self, combination: int) -> int:
        """The exact index of combination ``combination`` (itself, in the full space)."""
        return combination

    def canonical(self, split: Sequence[Sequence[int]]) -> tuple[np.ndarray, ...]:
        return self.split_at(self.index_of(split))

    def validate(self, split: Sequence[Sequence[int]]) -> tuple[np.ndarray, ...]:
        """Check a split's shape, label range and balance; return it as int arrays."""
        if len(split) != len(self.hidden):
            raise ValueError(f"split has {len(split)} layers, model.hidden={list(self.hidden)}")
        out = []
        for l, (a, h) in enumerate(zip(split, self.hidden, strict=True)):
            a = np.asarray(a, dtype=np.int64)
            if a.shape != (h,):
                raise ValueError(f"split layer {l} has shape {a.shape}, expected ({h},)")
            if a.min() < 0 or a.max() >= self.groups:
                raise ValueError(
                    f"split layer {l} has labels outside 0..{self.groups - 1}: {a.tolist()}"
                )
            sizes = np.bincount(a, minlength=self.groups)
            if sizes.max() - sizes.min() > 1:
                raise ValueError(f"split layer {l} is unbalanced: group sizes {sizes.tolist()}")
            out.append(a)
        return tuple(out)


def paths_of(cfg: Config) -> list[tuple[int, ...]]:
    """The paths of an experiment's split (``split.variant``, ``split.groups``)."""
    return paths(cfg.split.variant, len(cfg.model.hidden), cfg.split.groups)


class Indexed(Protocol):
    """A space whose combination c is ``split_at(c)``, at exact index ``index(c)`` of the full
    space: ``Space``, ``SampledSpace``, a search's ``Candidates``."""

    @property
    def count(self) -> int: ...

    def split_at(self, combination: int) -> tuple[np.ndarray, ...]: ...

    def index(self, combination: int) -> int: ...


# below this count the sample is drawn by ``random.sample`` over the range; above it, distinct
# draws by rejection (a collision has probability < samples^2 / count, negligible there)
_SMALL_SPACE = 2**62


def sample_indices(count: int, samples: int, seed: int) -> list[int]:
    """``samples`` distinct indices drawn uniformly from [0, count), in draw order.

    Python integers throughout, so ``count`` may be far beyond 2^63. Every prefix of the list is
    itself a uniform sample without replacement (a run stopped early is still unbiased).
    """
    if not 1 <= samples <= count:
        raise ValueError(f"split.samples={samples} must lie in [1, {count}] (the space's count)")
    rng = random.Random(seed)
    if count < _SMALL_SPACE:
        return rng.sample(range(count), samples)
    out: list[int] = []
    seen: set[int] = set()
    while len(out) < samples:
        i = rng.randrange(count)
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


class SampledSpace:
    """Combination c (0 <= c < samples) of a ``sample`` run is ``space.split_at(indices[c])``."""

    def __init__(self, space: Space, samples: int, seed: int):
        self.space = space
        self.indices = sample_indices(space.count, samples, seed)

    @property
    def count(self) -> int:
        return len(self.indices)

    def split_at(self, combination: int) -> tuple[np.ndarray, ...]:
        return self.space.split_at(self.index(combination))

    def index(self, combination: int) -> int:
        """The exact index in the exhaustive space."""
        return self.indices[combination]


def space_of(cfg: Config) -> Space | SampledSpace | None:
    """The combination space of an experiment config (``cfg.seed`` seeds a sample):
    exhaustive -> ``Space``; sample -> ``SampledSpace``; search -> ``Space`` (its moves are
    balanced splits, named by their exact index); other strategies have none."""
    s = cfg.split
    if s.strategy not in ("exhaustive", "sample", "search"):
        return None
    space = Space(cfg.model.hidden, s.groups, s.variant)
    if s.strategy == "sample":
        return SampledSpace(space, s.samples, sample_seed(cfg))
    return space


def n_combinations(cfg: Config, space: Space | SampledSpace | None = None) -> int:
    """The combinations (rows per seed) of an experiment: the exhaustive space's count, the
    ``split.samples`` of a sample, the ``split.budget`` evaluations of a search,
    ``RANDOM_DRAWS`` draws of a random strategy, or 1 (weights, activations, contiguous)."""
    s = cfg.split
    if s.strategy == "exhaustive":
        return (space or Space(cfg.model.hidden, s.groups, s.variant)).count
    if s.strategy == "sample":
        count = Space(cfg.model.hidden, s.groups, s.variant).count if space is None else None
        if count is not None and not 1 <= s.samples <= count:
            raise ValueError(f"split.samples={s.samples} must lie in [1, {count}] (the count)")
        return s.samples
    if s.strategy == "search":
        count = Space(cfg.model.hidden, s.groups, s.variant).count if space is None else None
        if count is not None and s.budget > count:
            raise ValueError(f"split.budget={s.budget} is more than the {count} combinations")
        return s.budget
    return RANDOM_DRAWS if s.strategy == "random" else 1
