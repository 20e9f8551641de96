"""Iterated split rounds: from the poster's one-shot split to IST's re-split every few steps.

    res = train_rounds(prep, strategy="random", resplit_every=20)     # IST (Yuan et al. 2022)
    res = train_rounds(prep, strategy="exhaustive", combination=i,
                       resplit_every=10**9)                            # one-shot: the poster

Every piece takes the baseline's budget: T = ``train.piece_epochs`` epochs of minibatches over the
remaining data. The stream of T minibatches is cut into R = ceil(T / resplit_every) rounds::

    net_0 = pretrained
    round r:  split_r = strategy(net_r)          random: seed derive_seed(seed, "round", r);
                                                 weights / activations: recomputed on net_r;
                                                 exhaustive: Space.split_at(combination), fixed
              piece_p = extract(net_r, split_r, p)       for every path p
              train piece_p on minibatches [r*E, min((r+1)*E, T)) of ITS stream (E = resplit_every)
              net_{r+1} = recombine(net_r, split_r, pieces)  (split.unheld, split.output)

A piece's stream is the baseline's (``train.shuffle = "shared"``) or its path's
(``"per-piece"``: ``piece_seed(cfg, combination, path)``), indexed by the global step, so the data
seen does not depend on the period and k = 1 reproduces the baseline bit for bit. SGD momentum
buffers travel with the pieces and are recombined like the parameters (same k = 1 guarantee).

Communication, counted in bytes of float32 (4 bytes), summed over all workers:

    IST, per round     2 * 4 * sum_p n_params(piece_p)     every piece to its worker and back
                       (x2 when momentum > 0: the buffers travel too)
    data-parallel      N * 2(N-1)/N * 4 * n_params(net)  = 8 (N-1) n_params per step: a ring
                       allreduce of all gradients every step (N = number of pieces = workers);
                       with the global minibatch split over N workers it IS the baseline.

Piece scaling (``piece_scale="dropout"``): a piece sees one group of every layer's inputs, so
while it trains its incoming weights of layers >= 2 are scaled by h_{l-1} / |S_{l-1}| (inverted
dropout: a piece is a dropout mask keeping one group) and the recombined weights are divided
back. Without it (``"none"``, the poster's way) each piece learns to produce the whole
pre-activation from its group alone and the recombined sum over-counts.

MPI (optional): with ``comm.size > 1`` the pieces of a round are dealt round-robin over the
ranks, trained, all-gathered (lowercase, pickled state dicts), and every rank recombines the same
way, so the result does not depend on the rank count. The counted bytes model the IST
master <-> worker exchange, not this allgather.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .combinations import Space
from .combinations import paths as make_paths
from .experiment import Prepared, piece_seed, remaining_order_seed
from .model import MLP
from .split import cut_fraction, make_split
from .stitch import ensemble_accuracy, held_counts, stitch
from .subnet import extract, recombine
from .train import accuracy, batch_order, derive_seed

STRATEGIES = ("random", "weights", "activations", "contiguous", "exhaustive", "fixed")
FIXED = ("contiguous", "exhaustive", "fixed")  # the same split every round
FLOAT_BYTES = 4


@dataclass
class RoundsResult:
    net: MLP  # final recombined net (after stitch, if any)
    accuracy: float  # test accuracy of ``net``
    accuracy_before_stitch: float
    ensemble_accuracy: float  # logit-sum of the last round's trained pieces
    piece_accuracies: list[float]  # the last round's pieces alone
    rounds: int
    total_steps: int
    resplit_every: int
    n_workers: int  # pieces per round = workers
    bytes_per_round: list[int]
    bytes_total: int
    dp_bytes_per_step: int  # data-parallel reference, summed over workers
    dp_bytes_total: int  # for the same number of steps
    curve: list[tuple[int, float]]  # (steps done, test accuracy) after every round
    cut_fractions: list[float | None]  # of every round's split, on the net it split
    last_split: tuple[np.ndarray, ...]
    pieces: list[MLP]  # the last round's trained pieces
    paths: list[tuple[int, ...]]
    seconds: float
    extra: dict = field(default_factory=dict)


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def round_bytes(pieces, momentum: float = 0.0) -> int:
    """IST bytes of one round: 2 * 4 * sum_p n_params(piece_p) (x2 with momentum buffers)."""
    return 2 * FLOAT_BYTES * sum(n_params(p) for p in pieces) * (2 if momentum > 0 else 1)


def dp_step_bytes(net: nn.Module, n_workers: int) -> int:
    """Ring allreduce of all parameters, summed over N workers: N * 2(N-1)/N * 4 * n = 8(N-1)n."""
    return 2 * (n_workers - 1) * FLOAT_BYTES * n_params(net)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def batch_stream(n: int, steps: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """The first ``steps`` minibatches of ``train``'s order: epochs of ``batch_order``, in order."""
    epochs = max(1, -(-steps // steps_per_epoch(n, batch_size)))
    perms = batch_order(n, epochs, seed)
    return [perm[s:s + batch_size] for perm in perms for s in range(0, n, batch_size)][:steps]


def sgd_steps(model: MLP, X: torch.Tensor, y: torch.Tensor, batches, *, lr: float,
              momentum: float = 0.0, buffers=None) -> list[torch.Tensor] | None:
    """``train``'s arithmetic on the given minibatches; returns the momentum buffers (or None)."""
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    if momentum > 0:
        # a zero buffer gives m*0 + g = g exactly: the same first step as a fresh optimizer
        for p, b in zip(params, buffers or [torch.zeros_like(q) for q in params], strict=True):
            opt.state[p]["momentum_buffer"] = b.detach().clone()
    model.train()
    for idx in batches:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
    model.eval()
    if momentum <= 0:
        return None
    return [opt.state[p]["momentum_buffer"].detach().clone() for p in params]


def _as_mlp(like: MLP, tensors) -> MLP:
    """An MLP of ``like``'s shape holding ``tensors`` (so buffers extract/recombine too)."""
    out = MLP(like.sizes, like.activation)
    with torch.no_grad():
        for p, t in zip(out.parameters(), tensors, strict=True):
            p.copy_(t)
    return out


def scale_piece(piece: MLP, net: MLP) -> None:
    """Dropout-style (inverted) scaling of a freshly extracted piece, in place.

    A piece sees |S_{l-1}| of the h_{l-1} inputs of every neuron of layer l >= 2 (and of the
    outputs); scaling its incoming weights by h_{l-1} / |S_{l-1}| makes its pre-activations an
    unbiased estimate of the full net's under a random split, as inverted dropout does (a piece
    is a dropout mask that keeps one group). ``unscale_recombined`` undoes it after recombining,
    so split -> recombine without training returns the net (exactly when the factors are powers
    of two), and k = 1 is untouched.
    """
    with torch.no_grad():
        for lin, plin in zip(net.linears[1:], piece.linears[1:], strict=True):
            plin.weight.mul_(lin.in_features / plin.in_features)


def unscale_recombined(net: MLP, split, paths) -> None:
    """Divide every held weight of Linear m >= 1 by h_{m-1} / |G(j)| (G(j): column j's group)."""
    counts = held_counts(net, split, paths)
    with torch.no_grad():
        for m, lin in enumerate(net.linears[1:], start=1):
            labels = np.asarray(split[m - 1])
            group_size = np.bincount(labels)[labels]  # (h_{m-1},)
            f = torch.as_tensor(lin.in_features / group_size, dtype=lin.weight.dtype)
            held = counts[m][0] > 0
            lin.weight[held] = (lin.weight / f[None, :])[held]


def _unpack(prep):
    if isinstance(prep, Prepared):
        return prep.config, prep.data, prep.pretrained
    cfg, data, net = prep
    return cfg, data, net


def round_split(strategy: str, net: MLP, k: int, variant: str, *, seed: int, r: int,
                combination: int | None, split=None, X=None):
    """The split of round ``r`` (see the module docstring)."""
    if strategy == "exhaustive":
        if combination is None:
            raise ValueError("strategy='exhaustive' needs combination=<index into the Space>")
        return Space(net.hidden, k, variant).split_at(combination)
    if strategy == "fixed":
        if split is None:
            raise ValueError("strategy='fixed' needs split=<a split>")
        return tuple(np.asarray(a, dtype=np.int64) for a in split)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is not one of {', '.join(STRATEGIES)}")
    return make_split(strategy, net, k, seed=derive_seed(seed, "round", r), X=X)


def train_rounds(prep, *, resplit_every: int, strategy: str | None = None, k: int | None = None,
                 variant: str | None = None, total_steps: int | None = None,
                 combination: int | None = None, split=None, stitch_steps: int = 0,
                 stitch_lr: float | None = None, stitch_every_round: bool = False,
                 unheld: str | None = None, output: str | None = None,
                 piece_scale: str = "none", comm=None) -> RoundsResult:
    """Split -> train pieces ``resplit_every`` steps -> recombine, until ``total_steps``.

    ``prep``: an ``experiment.Prepared`` or a tuple ``(cfg, data, pretrained_net)``. Unset
    arguments come from the config (``split.strategy/groups/variant/unheld/output``;
    ``total_steps`` = ``train.piece_epochs`` epochs of the remaining data, the baseline's).
    ``stitch_steps`` > 0 stitches (``splitnet.stitch.stitch``) after the last round (or after
    every round with ``stitch_every_round``); those steps are extra, on the recombined net, and
    move no bytes in the count. ``piece_scale="dropout"``: see ``scale_piece``.
    """
    cfg, data, net0 = _unpack(prep)
    s, t = cfg.split, cfg.train
    strategy = strategy or s.strategy
    k = s.groups if k is None else k
    variant = variant or s.variant
    unheld, output = unheld or s.unheld, output or s.output
    X, y = (torch.as_tensor(a) for a in data.remaining)
    per_epoch = steps_per_epoch(len(X), t.batch_size)
    T = t.piece_epochs * per_epoch if total_steps is None else int(total_steps)
    if resplit_every < 1:
        raise ValueError(f"resplit_every={resplit_every} must be >= 1 (steps)")
    if T < 1:
        raise ValueError(f"total_steps={T} must be >= 1")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is not one of {', '.join(STRATEGIES)}")
    if piece_scale not in ("none", "dropout"):
        raise ValueError(f"piece_scale={piece_scale!r} is not one of none, dropout")
    E = min(resplit_every, T)
    R = -(-T // E)
    paths = make_paths(variant, len(net0.hidden), k)
    comb = 0 if combination is None else combination
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    streams = {p: batch_stream(len(X), T, t.batch_size,
                               remaining_order_seed(cfg) if t.shuffle == "shared"
                               else piece_seed(cfg, comb, p)) for p in paths}
    X_test, y_test = data.test
    stitch_lr = t.lr if stitch_lr is None else stitch_lr

    t0 = time.perf_counter()
    net = copy.deepcopy(net0)
    buf = _as_mlp(net, [torch.zeros_like(p) for p in net.parameters()]) if t.momentum > 0 else None
    bytes_per_round, curve, cuts = [], [], []
    pieces: list[MLP] = []
    sp = None
    for r in range(R):
        lo, hi = r * E, min((r + 1) * E, T)
        if r == 0 or strategy not in FIXED:  # a fixed split is computed once
            sp = round_split(strategy, net, k, variant, seed=cfg.seed, r=r,
                             combination=combination, split=split, X=data.pretrain[0])
        cuts.append(cut_fraction(net, sp))
        local: dict[int, tuple[MLP, list | None]] = {}
        for j, p in enumerate(paths):
            if j % size != rank:
                continue
            piece = extract(net, sp, p)
            if piece_scale == "dropout":
                scale_piece(piece, net)
            pbuf = list(extract(buf, sp, p).parameters()) if buf is not None else None
            pbuf = sgd_steps(piece, X, y, streams[p][lo:hi], lr=t.lr, momentum=t.momentum,
                             buffers=pbuf)
            local[j] = (piece, pbuf)
        if size > 1:
            for part in comm.allgather({j: (pc.state_dict(), b) for j, (pc, b) in local.items()}):
                for j, (state, b) in part.items():
                    if j not in local:
                        piece = extract(net, sp, paths[j])  # the right shape; values replaced
                        piece.load_state_dict(state)
                        local[j] = (piece, b)
        pieces = [local[j][0] for j in range(len(paths))]
        pbufs = ([_as_mlp(local[j][0], local[j][1]) for j in range(len(paths))]
                 if buf is not None else [])
        bytes_per_round.append(round_bytes(pieces, t.momentum))
        new = recombine(net, sp, paths, pieces, unheld=unheld, output=output)
        if piece_scale == "dropout":
            unscale_recombined(new, sp, paths)
        if buf is not None:
            buf = recombine(buf, sp, paths, pbufs, unheld="pretrained", output="sum")
        net = new
        if stitch_steps and stitch_every_round and r < R - 1:
            net = stitch(net, sp, paths, data.remaining, steps=stitch_steps, lr=stitch_lr,
                         seed=derive_seed(cfg.seed, "stitch", r), batch_size=t.batch_size)
        curve.append((hi, accuracy(net, X_test, y_test)))

    before = curve[-1][1]
    if stitch_steps:
        net = stitch(net, sp, paths, data.remaining, steps=stitch_steps, lr=stitch_lr,
                     seed=derive_seed(cfg.seed, "stitch", R - 1), batch_size=t.batch_size)
    dp_step = dp_step_bytes(net0, len(paths))
    return RoundsResult(
        net=net, accuracy=accuracy(net, X_test, y_test), accuracy_before_stitch=before,
        ensemble_accuracy=ensemble_accuracy(pieces, X_test, y_test),
        piece_accuracies=[accuracy(p, X_test, y_test) for p in pieces], rounds=R, total_steps=T,
        resplit_every=E, n_workers=len(paths), bytes_per_round=bytes_per_round,
        bytes_total=sum(bytes_per_round), dp_bytes_per_step=dp_step, dp_bytes_total=dp_step * T,
        curve=curve, cut_fractions=cuts, last_split=sp, pieces=pieces, paths=paths,
        seconds=time.perf_counter() - t0)
