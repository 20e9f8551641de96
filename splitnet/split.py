"""Split strategies: assign every hidden neuron to one of k balanced groups.

A split is a tuple of integer arrays, one per hidden layer: ``split[l][i]`` is the group of
neuron i of hidden layer l (0-based). Balanced: within a layer group sizes differ by at most one.

    contiguous   neuron i of a width-h layer -> the chunk holding it (``splitnet.partition``:
                 ``rank*chunk : rank*chunk+chunk`` of the MPI slides; the first h mod k get +1)
    random       a seeded random permutation of the contiguous labels, per layer
    weights      the poster's "theory of independence": spectral clustering of the graph whose
                 nodes are all hidden neurons and whose edge (i in l, j in l+1) weighs
                 |W_{l+1}[j, i]|, then a balancing step per layer
    activations  the same clustering, with edges |corr(a_i, a_j)| of activations on the
                 pretrain data (all hidden neurons, all layers)
    exhaustive   every balanced split: see ``splitnet.combinations``

The *cut fraction* of any split is the hidden-to-hidden |W| mass that crosses groups:
    cut = sum_l sum_{i,j: g_l(i) != g_{l+1}(j)} |W_{l+1}[j, i]| / sum_l sum_{i,j} |W_{l+1}[j, i]|
(undefined, ``None``, for a single hidden layer).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.manifold import spectral_embedding

from . import partition
from .combinations import Indexed, Space
from .config import Config
from .model import MLP
from .seeds import split_seed

Split = tuple[np.ndarray, ...]


def contiguous_split(hidden: Sequence[int], groups: int) -> Split:
    return tuple(partition.labels(h, groups) for h in hidden)


def random_split(hidden: Sequence[int], groups: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    return tuple(rng.permutation(labels) for labels in contiguous_split(hidden, groups))


def hidden_weights(net: MLP) -> list[np.ndarray]:
    """|W| of the hidden-to-hidden layers: W_{l+1} of shape (h_{l+1}, h_l), l = 1..L-1."""
    return [lin.weight.detach().abs().double().numpy() for lin in net.linears[1:-1]]


def cut_fraction(net: MLP, split: Split, weights: list[np.ndarray] | None = None) -> float | None:
    """The cut fraction of ``split`` on ``net`` (``weights``: ``hidden_weights(net)``, given when
    many splits of one net are measured: the conversion costs more than the sum)."""
    weights = hidden_weights(net) if weights is None else weights
    if not weights:
        return None
    total = cross = 0.0
    for l, W in enumerate(weights):
        crossing = split[l + 1][:, None] != split[l][None, :]  # (h_{l+1}, h_l)
        total += W.sum()
        cross += W[crossing].sum()
    return float(cross / total) if total > 0 else 0.0


def activation_score(affinity: np.ndarray, split: Split) -> float:
    """Mean affinity over neuron pairs in the same group minus over pairs in different groups
    (all hidden layers; with ``activation_affinity`` it is the within - across mean |corr|)."""
    labels = np.concatenate([np.asarray(a) for a in split])
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(labels), dtype=bool)
    return float(affinity[same & off].mean() - affinity[~same].mean())


def _balanced_assign(points: np.ndarray, centers: np.ndarray, k: int) -> np.ndarray:
    """Balanced labels for one layer: min total squared distance to the cluster centres.

    Group g gets q or q+1 slots (h = qk + r); every choice of the r larger groups is tried.
    """
    h = len(points)
    q, r = partition.balanced(h, k)
    cost = ((points[:, None, :] - centers[None, :, :]) ** 2).sum(-1)  # (h, k)
    best, best_cost = None, np.inf
    for big in itertools.combinations(range(k), r):
        slots = np.concatenate([np.full(q + (g in big), g) for g in range(k)])
        rows, cols = linear_sum_assignment(cost[:, slots])
        c = cost[rows, slots[cols]].sum()
        if c < best_cost:
            best_cost, best = c, np.empty(h, dtype=np.int64)
            best[rows] = slots[cols]
    return best


def cluster_split(affinity: np.ndarray, hidden: Sequence[int], groups: int, seed: int) -> Split:
    """Spectral embedding of the neuron graph, k-means, then a balanced assignment per layer."""
    k = groups
    offsets = np.concatenate([[0], np.cumsum(hidden)])
    if k == 1:
        return tuple(np.zeros(h, dtype=np.int64) for h in hidden)
    # a faint uniform background keeps the graph connected (dead neurons have no edges)
    A = affinity + 1e-9 * affinity.max(initial=1.0)
    np.fill_diagonal(A, 0.0)
    rs = seed % 2**32  # scikit-learn takes 32-bit seeds
    emb = spectral_embedding(A, n_components=k, random_state=rs, drop_first=False)
    km = KMeans(n_clusters=k, n_init=10, random_state=rs).fit(emb)
    return tuple(
        _balanced_assign(emb[offsets[l] : offsets[l + 1]], km.cluster_centers_, k)
        for l in range(len(hidden))
    )


def weight_affinity(net: MLP) -> np.ndarray:
    """Symmetric |W| adjacency over all hidden neurons (edges between adjacent hidden layers).

    With one hidden layer there are no such edges; neurons that feed the same outputs are linked
    instead, |W_out|^T |W_out|.
    """
    hidden = net.hidden
    offsets = np.concatenate([[0], np.cumsum(hidden)])
    A = np.zeros((offsets[-1], offsets[-1]))
    if len(hidden) == 1:
        Wout = net.linears[-1].weight.detach().abs().double().numpy()
        return Wout.T @ Wout
    for l, W in enumerate(hidden_weights(net)):
        block = (slice(offsets[l + 1], offsets[l + 2]), slice(offsets[l], offsets[l + 1]))
        A[block] = W
    return A + A.T


def activation_affinity(net: MLP, X: np.ndarray) -> np.ndarray:
    """|corr| of every pair of hidden neurons' activations on X (dead neurons: no edges)."""
    with torch.no_grad():
        acts = torch.cat(net.hidden_activations(torch.as_tensor(X)), dim=1).double().numpy()
    std = acts.std(0)
    live = std > 1e-12
    C = np.zeros((acts.shape[1], acts.shape[1]))
    C[np.ix_(live, live)] = np.abs(np.corrcoef(acts[:, live], rowvar=False))
    return np.nan_to_num(C)


def make_split(
    strategy: str, net: MLP, groups: int, *, seed: int, X: np.ndarray | None = None
) -> Split:
    """A split of ``net``'s hidden neurons by one of the non-exhaustive strategies."""
    hidden, k = net.hidden, groups
    if strategy == "contiguous":
        return contiguous_split(hidden, k)
    if strategy == "random":
        return random_split(hidden, k, seed)
    if strategy == "weights":
        return cluster_split(weight_affinity(net), hidden, k, seed)
    if strategy == "activations":
        if X is None:
            raise ValueError("split.strategy='activations' needs the pretrain data X")
        return cluster_split(activation_affinity(net, X), hidden, k, seed)
    raise ValueError(
        f"split.strategy={strategy!r} is not one of contiguous, random, weights, "
        "activations (exhaustive splits come from splitnet.combinations.Space)"
    )


FIXED = ("exhaustive", "sample", "search", "contiguous")  # the same split in every round
INDEXED = ("exhaustive", "sample", "search")  # combination c is ``space.split_at(c)``


def split_for(
    cfg: Config,
    net: MLP,
    combination: int,
    round_: int = 0,
    *,
    space: Indexed | None = None,
    X: np.ndarray | None = None,
    previous: Split | None = None,
) -> Split:
    """The split of ``combination`` in round ``round_`` of an experiment, made from ``net``.

    ``exhaustive`` / ``sample`` / ``search``: ``space.split_at(combination)`` (a ``Space``,
    ``SampledSpace`` or the search's ``Candidates``); ``contiguous``: the chunks; all fixed, so
    ``previous`` (the last round's split) is returned as it is. ``random``: draw
    ``combination``; ``weights`` / ``activations``: clustered on ``net`` (``X``: the pretrain
    data); all three re-drawn every round with ``seeds.split_seed(cfg, combination, round_)``.
    """
    s = cfg.split
    if s.strategy in FIXED and previous is not None:
        return previous
    if s.strategy in INDEXED:
        if space is None:
            if s.strategy != "exhaustive":
                raise ValueError(f"split.strategy={s.strategy!r} needs its space (space_of)")
            space = Space(cfg.model.hidden, s.groups, s.variant)
        return space.split_at(combination)
    return make_split(s.strategy, net, s.groups, seed=split_seed(cfg, combination, round_), X=X)
