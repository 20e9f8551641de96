"""The one algorithm: split -> train pieces -> recombine, in R rounds. One-shot is R = 1.

    results = train_rounds(net0, data, cfg, combinations=[i, j, ...], space=space)

Every piece takes the baseline's budget: T = ``train.piece_epochs`` epochs of minibatches over
the remaining data. The stream of T minibatches is cut into R = ceil(T / E) rounds, E =
``split.resplit_every`` (0: E = T, one round: the poster's one-shot split)::

    net_0 = pretrained
    round r:  split_r = split_for(cfg, net_r, combination, r)     exhaustive / contiguous: fixed;
                                                                 random, weights, activations:
                                                                 re-drawn (seeds.split_seed)
              piece_p = piece_params(net_r, split_r, p)           for every path p
              train piece_p on steps [r E, min((r+1) E, T)) of ITS stream (seeds.piece_order_seed)
              net_{r+1} = recombined_net(net_r, split_r, pieces)  (split.unheld, split.output)
    after the last round: finished_net: stitch ``split.stitch_steps`` steps (stitch module),
    a BatchNorm net's statistics re-estimated (split.norm_stats)

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
from .engines import PieceJob, TrainedPiece, train_pieces
from .evaluation import accuracies, stack_accuracies
from .model import MLP
from .partition import ceil_div
from .pieces import (
    GroupPath,
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
    """One combination after its rounds: the final net, its last pieces and split, the test
    accuracy after every round, and the communication counts of the module docstring. Its
    accuracies are ``sgd.accuracy``'s (the pieces' and the logit-sum ensemble's on request)."""

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
        """Accuracy of sum_p piece_p(x), the last round's pieces (``pieces.ensemble_logits``)."""
        act, norm = self.activation, self.norm
        return accuracy(lambda x: ensemble_logits(self.pieces, act, x, norm), X, y)

    def piece_accuracies(self, X: np.ndarray, y: np.ndarray) -> list[float]:
        """Accuracy of every piece of the last round, in path order."""
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


def recombined_net(
    net: MLP,
    split: Split,
    paths: Sequence[GroupPath],
    pieces: Sequence[Params | MLP],
    cfg: Config,
    *,
    data: tuple[np.ndarray, np.ndarray] | None = None,
    stitch_round: int = 0,
) -> MLP:
    """The recombination of the trained ``pieces`` (one per path, in order) of ``net``::

        net' = recombine(net, split, paths, pieces)      split.unheld, split.output
        net' = net' / dropout factors                    split.piece_scale = "dropout"
        net' = stitch(net', data)                        split.stitch_steps > 0
        net' = inference_net(net', data X)               BatchNorm: split.norm_stats

    ``data`` (X, y): the data the stitch trains on and a BatchNorm net's statistics are
    re-estimated on (the remaining data). Without it only the first two steps: the raw
    recombination that a next round starts from (``finished_net`` takes it further).
    """
    s = cfg.split
    out = recombine(net, split, paths, pieces, unheld=s.unheld, output=s.output)
    if s.piece_scale == "dropout":
        unscale_recombined(out, split, paths)
    if data is None:
        return out
    return finished_net(out, split, paths, cfg, data, stitch_round=stitch_round)


def finished_net(
    net: MLP,
    split: Split,
    paths: Sequence[GroupPath],
    cfg: Config,
    data: tuple[np.ndarray, np.ndarray],
    *,
    stitch_round: int = 0,
) -> MLP:
    """The last two steps of ``recombined_net`` on a recombined ``net``: ``split.stitch_steps``
    stitch steps on ``data`` (lr ``split.stitch_lr`` or ``train.lr``, seed ``seeds.stitch_seed(cfg,
    stitch_round)``; a copy), then a BatchNorm net's statistics re-estimated on ``data[0]``."""
    s, t = cfg.split, cfg.train
    if s.stitch_steps:
        net = stitch(
            net,
            split,
            paths,
            data,
            steps=s.stitch_steps,
            lr=s.stitch_lr or t.lr,
            seed=stitch_seed(cfg, stitch_round),
            batch_size=t.batch_size,
        )
    return inference_net(net, data[0], s.norm_stats)


@dataclass
class _Combination:
    """One combination's state through the rounds (``train_rounds`` runs them in lockstep)."""

    index: int
    seeds: list[int]  # seeds.piece_order_seed of every path
    net: MLP  # net_r: the pretrained net, then every round's recombination
    buffers: MLP | None = None  # recombined momentum buffers (momentum > 0, after round 0)
    split: Split | None = None  # this round's split
    pieces: list[Params] = field(default_factory=list)  # this round's trained pieces
    final: Params | None = None  # the stacked path's recombination (tensors, no MLP)
    cut_fractions: list[float | None] = field(default_factory=list)
    curve: list[tuple[int, float]] = field(default_factory=list)
    bytes_per_round: list[int] = field(default_factory=list)
    seconds: float = 0.0


def _zeros_like(net: MLP) -> MLP:
    out = copy.deepcopy(net)
    with torch.no_grad():
        for p in out.parameters():
            p.zero_()
    return out


def _split_round(
    cfg: Config, runs: list[_Combination], r: int, paths, space, X_split
) -> list[PieceJob]:
    """Round r's split of every combination (and its cut fraction); the engine's jobs."""
    dropout = cfg.split.piece_scale == "dropout"
    weights: dict[int, list[np.ndarray]] = {}  # hidden_weights per net (round 0: net0's)
    jobs = []
    for run in runs:
        run.split = split_for(
            cfg, run.net, run.index, r, space=space, X=X_split, previous=run.split
        )
        if id(run.net) not in weights:
            weights[id(run.net)] = hidden_weights(run.net)
        run.cut_fractions.append(cut_fraction(run.net, run.split, weights[id(run.net)]))
        jobs += [
            PieceJob(run.net, tuple(piece_neurons(run.split, p)), seed, run.buffers, dropout)
            for p, seed in zip(paths, run.seeds, strict=True)
        ]
    return jobs


def _recombine_round(
    cfg: Config, net0: MLP, run: _Combination, paths, trained: list[TrainedPiece]
) -> None:
    """net_{r+1} (and the momentum buffers) of one combination, from its trained pieces."""
    new = recombined_net(run.net, run.split, paths, run.pieces, cfg)
    if cfg.train.momentum > 0:
        old = run.buffers if run.buffers is not None else _zeros_like(net0)
        buffers = [tp.buffers for tp in trained]
        run.buffers = recombine(old, run.split, paths, buffers, unheld="pretrained", output="sum")
    run.net = new


def _stacked_accuracies(cfg: Config, net0: MLP, runs: list[_Combination], paths, test) -> list:
    """One-shot, batched: every combination's recombination as one stack, evaluated at once."""
    s = cfg.split
    stack = recombine_stacked(
        net0,
        [r.split for r in runs],
        paths,
        [r.pieces for r in runs],
        unheld=s.unheld,
        output=s.output,
    )
    for i, run in enumerate(runs):
        run.final = [t[i] for t in stack]
    return stack_accuracies(stack, net0.activation, *test)


def _accuracies(cfg: Config, net0: MLP, runs: list[_Combination], X, test) -> list[float]:
    """Every combination's net_r on the test set (a BatchNorm net with its statistics
    re-estimated, ``split.norm_stats``, and folded), stacked (``evaluation``)."""
    nets = [fold(params_of(inference_net(r.net, X, cfg.split.norm_stats)), net0.norm) for r in runs]
    return accuracies(nets, net0.activation, *test)


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
    search passes its ``Candidates``). ``total_steps`` overrides T (default:
    ``train.piece_epochs`` epochs of the remaining data).
    """
    s, t = cfg.split, cfg.train
    X, y = (torch.as_tensor(a) for a in data.remaining)
    T, E, R = schedule(cfg, len(X), total_steps)
    paths = paths_of(cfg)
    if space is None and s.strategy in ("exhaustive", "sample"):
        space = space_of(cfg)
    runs = [
        _Combination(c, [piece_order_seed(cfg, c, p) for p in paths], net0) for c in combinations
    ]
    streams = {
        seed: minibatches(len(X), t.batch_size, seed, steps=T) if T else []
        for seed in {x for run in runs for x in run.seeds}
    }
    stacked = stacked_one_shot(cfg, net0, R)
    for r in range(R):
        lo, hi = r * E, min((r + 1) * E, T)
        jobs = _split_round(cfg, runs, r, paths, space, data.pretrain[0])
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
        for j, run in enumerate(runs):
            mine = trained[j * len(paths) : (j + 1) * len(paths)]
            run.pieces = [tp.params for tp in mine]
            run.seconds += sum(tp.seconds for tp in mine)
            run.bytes_per_round.append(round_bytes(run.pieces, t.momentum))
            if not stacked:  # stacked: recombined below, every combination at once
                _recombine_round(cfg, net0, run, paths, mine)
        if stacked:
            accs = _stacked_accuracies(cfg, net0, runs, paths, data.test)
        else:
            accs = _accuracies(cfg, net0, runs, X, data.test)
        for run, acc in zip(runs, accs, strict=True):
            run.curve.append((hi, acc))
    dp_step = dp_step_bytes(net0, len(paths))
    return [_result(cfg, net0, run, paths, data, (T, E, R), dp_step, stacked) for run in runs]


def _result(
    cfg: Config,
    net0: MLP,
    run: _Combination,
    paths: list[tuple[int, ...]],
    data: Splits,
    TER: tuple[int, int, int],
    dp_step: int,
    stacked: bool,
) -> RoundsResult:
    """The ``RoundsResult`` of a combination after its last round: its net finished
    (``finished_net``), except a stacked one that is not stitched (tensors only)."""
    T, E, R = TER
    net = None
    if not stacked or cfg.split.stitch_steps:
        raw = as_mlp(run.final, net0.activation) if stacked else run.net
        net = finished_net(raw, run.split, paths, cfg, data.remaining, stitch_round=R - 1)
    return RoundsResult(
        combination=run.index,
        final=run.final if net is None else params_of(net),
        accuracy_before_stitch=run.curve[-1][1],
        pieces=run.pieces,
        split=run.split,
        paths=paths,
        rounds=R,
        total_steps=T,
        resplit_every=E,
        bytes_per_round=run.bytes_per_round,
        dp_bytes_per_step=dp_step,
        curve=run.curve,
        cut_fractions=run.cut_fractions,
        seconds=run.seconds,
        piece_seeds=run.seeds,
        activation=net0.activation,
        norm=net0.norm,
        _net=net,
    )
