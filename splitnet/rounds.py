"""The one algorithm: split -> train pieces -> recombine, in R rounds. One-shot is R = 1.

    results = train_rounds(net0, data, cfg, combinations=[i, j, ...], space=space)

Every piece takes the baseline's budget: T = ``train.piece_epochs`` epochs of minibatches over
the remaining data. The stream of T minibatches is cut into R = ceil(T / E) rounds, E =
``split.resplit_every`` (0: E = T, one round: the poster's one-shot split)::

    net_0 = pretrained
    round r:  split_r = split_for(cfg, net_r, combination, r)     exhaustive / contiguous: fixed;
                                                                 random, weights, activations:
                                                                 re-drawn (seeds.split_seed)
              piece_p = cut(net_r, split_r, p)                    for every path p
              train piece_p on steps [r E, min((r+1) E, T)) of ITS stream (seeds.piece_order_seed)
              net_{r+1} = recombine(net_r, split_r, pieces)       (split.unheld, split.output)
    after the last round: stitch ``split.stitch_steps`` steps (stitch module)

A piece's stream is indexed by the global step, so the data seen does not depend on E, and k = 1
reproduces the baseline bit for bit. SGD momentum buffers travel with the pieces and are
recombined like the parameters. The combinations given are run in lockstep, so the engine
trains the pieces of all of them in one call per round (stacks of equal shapes). A one-shot run
of the batched engine on a plain MLP (``stacked_one_shot``) also recombines and evaluates them as
one stack (``pieces.recombine_stacked``, ``evaluation.stack_accuracies``): the same numbers as the
per-combination ``recombine``, without a Python loop per combination.

Communication, counted in bytes of float32 (4 bytes), summed over all workers:

    IST, per round     2 * 4 * sum_p n_params(piece_p)     every piece to its worker and back
                       (x2 when momentum > 0: the buffers travel too)
    data-parallel      N * 2(N-1)/N * 4 * n_params(net)  = 8 (N-1) n_params per step: a ring
                       allreduce of all gradients every step (N = number of pieces = workers)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .combinations import Indexed, paths_of, space_of
from .config import Config
from .data import Splits
from .engines import PieceJob, train_pieces
from .evaluation import accuracies, stack_accuracies
from .model import MLP
from .partition import ceil_div
from .pieces import (
    Params,
    as_mlp,
    ensemble_logits,
    fold,
    forward,
    inference_net,
    n_params,
    params_of,
    piece_neurons,
    recombine,
    recombine_stacked,
    unscale_recombined,
)
from .seeds import piece_order_seed, stitch_seed
from .sgd import accuracy, minibatches, steps_per_epoch
from .split import Split, cut_fraction, hidden_weights, split_for
from .stitch import stitch

FLOAT_BYTES = 4


@dataclass
class RoundsResult:
    combination: int
    final: Params  # the final recombined net's parameters (after stitching, if any)
    accuracy_before_stitch: float  # test accuracy after the last round
    pieces: list[Params]  # the last round's trained pieces, in path order
    split: Split  # the last round's split
    paths: list[tuple[int, ...]]
    rounds: int
    total_steps: int
    resplit_every: int
    bytes_per_round: list[int]
    dp_bytes_per_step: int  # data-parallel reference, summed over workers
    curve: list[tuple[int, float]]  # (steps done, test accuracy) after every round
    cut_fractions: list[float | None]  # of every round's split, on the net it split
    seconds: float  # training time of its pieces
    piece_seeds: list[int]  # seeds.piece_order_seed of every path
    activation: str
    norm: str = "none"  # model.norm of the net
    _net: MLP | None = field(default=None, repr=False)

    @property
    def net(self) -> MLP:
        """The final net as an MLP (built on first use: the stacked path keeps only tensors)."""
        if self._net is None:
            self._net = as_mlp(self.final, self.activation, self.norm)
        return self._net

    @property
    def bytes_total(self) -> int:
        return sum(self.bytes_per_round)

    @property
    def dp_bytes_total(self) -> int:
        return self.dp_bytes_per_step * self.total_steps

    def ensemble_accuracy(self, X: np.ndarray, y: np.ndarray) -> float:
        act, norm = self.activation, self.norm
        return accuracy(lambda x: ensemble_logits(self.pieces, act, x, norm), X, y)

    def piece_accuracies(self, X: np.ndarray, y: np.ndarray) -> list[float]:
        act, norm = self.activation, self.norm
        return [accuracy(lambda x, p=p: forward(p, act, x, norm), X, y) for p in self.pieces]


def round_bytes(pieces: Sequence[Params], momentum: float = 0.0) -> int:
    """IST bytes of one round: 2 * 4 * sum_p n_params(piece_p) (x2 with momentum buffers)."""
    return 2 * FLOAT_BYTES * sum(n_params(p) for p in pieces) * (2 if momentum > 0 else 1)


def dp_step_bytes(net: nn.Module, n_workers: int) -> int:
    """Ring allreduce of all parameters, summed over N workers: N * 2(N-1)/N * 4 * n = 8(N-1)n."""
    return 2 * (n_workers - 1) * FLOAT_BYTES * n_params(net)


def schedule(cfg: Config, n: int, total_steps: int | None = None) -> tuple[int, int, int]:
    """(T, E, R): total steps, steps per round, rounds."""
    t = cfg.train
    T = t.piece_epochs * steps_per_epoch(n, t.batch_size) if total_steps is None else total_steps
    if T < 0:
        raise ValueError(f"total_steps={T} must be >= 0")
    E = min(cfg.split.resplit_every or T, T)
    R = ceil_div(T, E) if E else 1
    return T, E, R


def stacked_one_shot(cfg: Config, net: MLP, rounds: int) -> bool:
    """Whether ``train_rounds`` recombines and evaluates a round's combinations as one stack
    (``pieces.recombine_stacked``): one round of the batched engine, no dropout scaling, and a
    plain MLP (Linear weights and biases only, no buffers). With one round the recombined
    momentum buffers are never used, so they are not recombined."""
    plain = len(list(net.parameters())) == 2 * len(net.linears) and not list(net.buffers())
    return (
        rounds == 1 and cfg.train.engine == "batched" and cfg.split.piece_scale == "none" and plain
    )


def _zeros_like(net: MLP) -> MLP:
    out = copy.deepcopy(net)
    with torch.no_grad():
        for p in out.parameters():
            p.zero_()
    return out


def train_rounds(
    net0: MLP,
    data: Splits,
    cfg: Config,
    combinations: Sequence[int],
    *,
    space: Indexed | None = None,
    total_steps: int | None = None,
) -> list[RoundsResult]:
    """Run the rounds of every combination (lockstep, one engine call per round).

    ``space``: where combination c's split is (``combinations.space_of(cfg)`` if None; a
    search passes its ``Candidates``). ``total_steps``
    overrides T (default: ``train.piece_epochs`` epochs of the remaining data).
    """
    s, t = cfg.split, cfg.train
    X, y = (torch.as_tensor(a) for a in data.remaining)
    X_test, y_test = data.test
    T, E, R = schedule(cfg, len(X), total_steps)
    paths = paths_of(cfg)
    if space is None and s.strategy in ("exhaustive", "sample"):
        space = space_of(cfg)
    seeds = {c: [piece_order_seed(cfg, c, p) for p in paths] for c in combinations}
    streams = {
        seed: minibatches(len(X), t.batch_size, seed, steps=T) if T else []
        for seed in {x for v in seeds.values() for x in v}
    }
    dropout = s.piece_scale == "dropout"
    stacked = stacked_one_shot(cfg, net0, R)

    nets = {c: net0 for c in combinations}
    bufs: dict[int, MLP | None] = {c: None for c in combinations}
    splits: dict[int, Split] = {}
    cuts = {c: [] for c in combinations}
    curves = {c: [] for c in combinations}
    sent = {c: [] for c in combinations}
    secs = dict.fromkeys(combinations, 0.0)
    pieces: dict[int, list[Params]] = {}
    final: dict[int, Params] = {}  # the stacked path's recombined nets
    for r in range(R):
        lo, hi = r * E, min((r + 1) * E, T)
        jobs = []
        weights: dict[int, list[np.ndarray]] = {}  # hidden_weights per net (round 0: net0's)
        for c in combinations:
            splits[c] = split_for(
                cfg, nets[c], c, r, space=space, X=data.pretrain[0], previous=splits.get(c)
            )
            if id(nets[c]) not in weights:
                weights[id(nets[c])] = hidden_weights(nets[c])
            cuts[c].append(cut_fraction(nets[c], splits[c], weights[id(nets[c])]))
            jobs += [
                PieceJob(nets[c], tuple(piece_neurons(splits[c], p)), seed, bufs[c], dropout)
                for p, seed in zip(paths, seeds[c], strict=True)
            ]
        trained = train_pieces(
            jobs,
            X,
            y,
            streams,
            steps=(lo, hi),
            lr=t.lr,
            momentum=t.momentum,
            engine=t.engine,
            shared_order=t.shuffle == "shared",
        )
        for j, c in enumerate(combinations):
            mine = trained[j * len(paths) : (j + 1) * len(paths)]
            pieces[c] = [tp.params for tp in mine]
            secs[c] += sum(tp.seconds for tp in mine)
            sent[c].append(round_bytes(pieces[c], t.momentum))
            if stacked:
                continue  # recombined below, every combination at once
            new = recombine(nets[c], splits[c], paths, pieces[c], unheld=s.unheld, output=s.output)
            if dropout:
                unscale_recombined(new, splits[c], paths)
            if t.momentum > 0:
                old = bufs[c] if bufs[c] is not None else _zeros_like(net0)
                bufs[c] = recombine(
                    old,
                    splits[c],
                    paths,
                    [tp.buffers for tp in mine],
                    unheld="pretrained",
                    output="sum",
                )
            nets[c] = new
        # every combination's recombined net on the test set, stacked (evaluation)
        if stacked:
            stack = recombine_stacked(
                net0,
                [splits[c] for c in combinations],
                paths,
                [pieces[c] for c in combinations],
                unheld=s.unheld,
                output=s.output,
            )
            accs = stack_accuracies(stack, net0.activation, X_test, y_test)
            final.update((c, [t[i] for t in stack]) for i, c in enumerate(combinations))
        else:  # a BatchNorm net with its statistics re-estimated (split.norm_stats), folded
            nets_now = [
                fold(params_of(inference_net(nets[c], X, s.norm_stats)), net0.norm)
                for c in combinations
            ]
            accs = accuracies(nets_now, net0.activation, X_test, y_test)
        for c, acc in zip(combinations, accs, strict=True):
            curves[c].append((hi, acc))

    dp_step = dp_step_bytes(net0, len(paths))
    out = []
    for c in combinations:
        net = None if stacked else nets[c]  # the stacked path builds no MLP unless stitching
        if s.stitch_steps:
            net = stitch(
                as_mlp(final[c], net0.activation) if stacked else net,
                splits[c],
                paths,
                data.remaining,
                steps=s.stitch_steps,
                lr=s.stitch_lr or t.lr,
                seed=stitch_seed(cfg, R - 1),
                batch_size=t.batch_size,
            )
        if net is not None:  # the deliverable: a BatchNorm net's statistics re-estimated
            net = inference_net(net, X, s.norm_stats)
        out.append(
            RoundsResult(
                combination=c,
                final=final[c] if net is None else params_of(net),
                accuracy_before_stitch=curves[c][-1][1],
                pieces=pieces[c],
                split=splits[c],
                paths=paths,
                rounds=R,
                total_steps=T,
                resplit_every=E,
                bytes_per_round=sent[c],
                dp_bytes_per_step=dp_step,
                curve=curves[c],
                cut_fractions=cuts[c],
                seconds=secs[c],
                piece_seeds=seeds[c],
                activation=net0.activation,
                norm=net0.norm,
                _net=net,
            )
        )
    return out
