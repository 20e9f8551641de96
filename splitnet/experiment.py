"""One experiment, one combination, one call: the pure core the MPI driver distributes.

    prep = prepare(cfg)                 # data, the pretrained net, the baseline (once per job)
    row  = run_combination(prep, i)     # split i -> train its pieces -> recombine -> evaluate

For ``split.strategy = "exhaustive"`` combination i is ``Space.split_at(i)``; the other strategies
have one combination (index 0), except ``random``, where index i is the i-th seeded draw.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .combinations import Space, paths
from .config import Config
from .data import Splits, load_splits
from .model import MLP, build_mlp
from .split import cut_fraction, make_split
from .subnet import extract, recombine
from .train import accuracy, derive_seed, train

# a random strategy without an explicit range draws this many splits
RANDOM_DRAWS = 100


@dataclass
class Prepared:
    config: Config  # the single-seed config of this run
    data: Splits
    pretrained: MLP
    pretrained_accuracy: float
    baseline_accuracy: float
    paths: list[tuple[int, ...]]
    space: Space | None
    experiment: Config | None = None  # the multi-seed config the rows belong to
    _identity: tuple | None = field(default=None, repr=False)  # (hash, dict) of ``experiment``

    @property
    def count(self) -> int:
        return n_combinations(self.config, self.space)


def n_combinations(cfg: Config, space: Space | None = None) -> int:
    s = cfg.split
    if s.strategy == "exhaustive":
        return (space or Space(cfg.model.hidden, s.groups, s.variant)).count
    return RANDOM_DRAWS if s.strategy == "random" else 1


def remaining_order_seed(cfg: Config) -> int:
    """The data order of the baseline (and of every piece when train.shuffle = "shared")."""
    return derive_seed(cfg.seed, "remaining")


def piece_seed(cfg: Config, combination: int, path) -> int:
    return derive_seed(cfg.seed, "piece", combination, *path)


def pretrain(cfg: Config, data: Splits) -> MLP:
    sizes = [data.pretrain[0].shape[1], *cfg.model.hidden, data.n_classes]
    net = build_mlp(sizes, cfg.model.activation, seed=derive_seed(cfg.seed, "init"))
    t = cfg.train
    train(net, *data.pretrain, epochs=t.pretrain_epochs, batch_size=t.batch_size, lr=t.lr,
          momentum=t.momentum, seed=derive_seed(cfg.seed, "pretrain"))
    return net


def baseline(cfg: Config, data: Splits, net: MLP) -> float:
    """The unsplit pretrained net trained on the remaining data with the pieces' budget."""
    t = cfg.train
    net = copy.deepcopy(net)
    train(net, *data.remaining, epochs=t.piece_epochs, batch_size=t.batch_size, lr=t.lr,
          momentum=t.momentum, seed=remaining_order_seed(cfg))
    return accuracy(net, *data.test)


def prepare(cfg: Config, state: dict | None = None, seed: int | None = None) -> Prepared:
    """Load data, pretrain (or take ``state``, a broadcast ``net.state_dict()``), baseline.

    ``seed`` picks one run of a multi-seed config (default: its first seed).
    """
    experiment = cfg
    cfg = cfg.for_seed(cfg.run_seeds[0] if seed is None else seed)
    torch.set_num_threads(1)  # same arithmetic on any rank count; no oversubscription under MPI
    # ``seed`` fixes the data split and the pretrained net (the net being split), so combination
    # i names the same neurons in every run; the run seed (one of ``seeds``) replicates the
    # training of the pieces and of the baseline
    data = load_splits(cfg.data, experiment.seed)
    if state is None:
        net = pretrain(cfg.for_seed(experiment.seed), data)
    else:
        sizes = [data.pretrain[0].shape[1], *cfg.model.hidden, data.n_classes]
        net = MLP(sizes, cfg.model.activation)
        net.load_state_dict(state)
    s = cfg.split
    space = Space(cfg.model.hidden, s.groups, s.variant) if s.strategy == "exhaustive" else None
    return Prepared(cfg, data, net, accuracy(net, *data.test), baseline(cfg, data, net),
                    paths(s.variant, len(cfg.model.hidden), s.groups), space, experiment)


def split_of(prep: Prepared, combination: int):
    cfg = prep.config
    if not 0 <= combination < prep.count:
        raise ValueError(f"combination {combination} is outside [0, {prep.count})")
    if prep.space is not None:
        return prep.space.split_at(combination)
    return make_split(cfg.split.strategy, prep.pretrained, cfg.split.groups,
                      seed=derive_seed(cfg.seed, "split", combination), X=prep.data.pretrain[0])


def train_piece(prep: Prepared, split, path, combination: int) -> MLP:
    cfg, t = prep.config, prep.config.train
    piece = extract(prep.pretrained, split, path)
    seed = (remaining_order_seed(cfg) if t.shuffle == "shared"
            else piece_seed(cfg, combination, path))
    train(piece, *prep.data.remaining, epochs=t.piece_epochs, batch_size=t.batch_size, lr=t.lr,
          momentum=t.momentum, seed=seed)
    return piece


def train_pieces(prep: Prepared, jobs) -> list[tuple[MLP, float]]:
    """Train pieces ``jobs = [(combination, split, path), ...]``; returns (piece, seconds) each.

    ``train.engine = "loop"`` trains them one by one; ``"batched"`` stacks pieces of equal shape
    and trains each stack as one batched computation (``splitnet.batched``).
    """
    if prep.config.train.engine == "batched":
        from .batched import train_pieces_batched

        return train_pieces_batched(prep, jobs)
    out = []
    for combination, split, path in jobs:
        t0 = time.perf_counter()
        piece = train_piece(prep, split, path, combination)
        out.append((piece, time.perf_counter() - t0))
    return out


def stitch_seed(cfg: Config) -> int:
    return derive_seed(cfg.seed, "stitch", 0)


def recombine_and_stitch(prep: Prepared, split, pieces: list[MLP]) -> tuple[MLP, MLP]:
    """(recombined net, the same after ``split.stitch_steps`` of stitching) for one-shot rows."""
    from .stitch import recombine_shared_rescale, stitch

    s, t = prep.config.split, prep.config.train
    if s.output == "shared-rescale":
        net = recombine_shared_rescale(prep.pretrained, split, prep.paths, pieces, unheld=s.unheld)
    else:
        net = recombine(prep.pretrained, split, prep.paths, pieces, unheld=s.unheld,
                        output=s.output)
    stitched = stitch(net, split, prep.paths, prep.data.remaining, steps=s.stitch_steps,
                      lr=s.stitch_lr or t.lr, seed=stitch_seed(prep.config),
                      batch_size=t.batch_size) if s.stitch_steps else net
    return net, stitched


def uses_rounds(cfg: Config) -> bool:
    """Rows come from ``splitnet.rounds`` (re-splitting, or dropout-scaled pieces)."""
    return cfg.split.resplit_every > 0 or cfg.split.piece_scale != "none"


def _row(prep: Prepared, combination: int, split, **measured) -> dict:
    """The keys every row carries, plus the measured ones."""
    cfg = prep.config
    if prep._identity is None:  # hashing the config per row costs more than a small piece
        experiment = prep.experiment or cfg
        prep._identity = (experiment.hash(), experiment.to_dict())
    config_hash, config_dict = prep._identity
    return {
        "combination": combination,
        "split": [np.asarray(a).tolist() for a in split],
        "strategy": cfg.split.strategy,
        "variant": cfg.split.variant,
        "groups": cfg.split.groups,
        "paths": [list(p) for p in prep.paths],
        **measured,
        "baseline_accuracy": prep.baseline_accuracy,
        "pretrained_accuracy": prep.pretrained_accuracy,
        "recombination": {"unheld": cfg.split.unheld, "output": cfg.split.output,
                          "stitch_steps": cfg.split.stitch_steps},
        "seed": cfg.seed,
        "piece_seeds": [piece_seed(cfg, combination, p) if cfg.train.shuffle == "per-piece"
                        else remaining_order_seed(cfg) for p in prep.paths],
        "config_hash": config_hash,
        "config": config_dict,
    }


def make_row(prep: Prepared, combination: int, split, pieces: list[MLP], seconds: float) -> dict:
    """Recombine trained pieces (one per path, in ``prep.paths`` order) and evaluate."""
    unstitched, net = recombine_and_stitch(prep, split, pieces)
    X_test, y_test = prep.data.test
    with torch.no_grad():  # the logit-sum ensemble of the pieces: an upper reference
        logits = sum(p(torch.as_tensor(X_test)) for p in pieces)
    return _row(
        prep, combination, split,
        accuracy=accuracy(net, X_test, y_test),
        accuracy_before_stitch=(accuracy(unstitched, X_test, y_test)
                                if net is not unstitched else None),
        piece_accuracies=[accuracy(p, X_test, y_test) for p in pieces],
        ensemble_accuracy=float((logits.argmax(1).numpy() == y_test).mean()),
        cut_fraction=cut_fraction(prep.pretrained, split),
        seconds=seconds,
    )


def rounds_row(prep: Prepared, combination: int) -> dict:
    """A row of an iterated-rounds run (``split.resplit_every`` > 0): see ``splitnet.rounds``."""
    from .rounds import train_rounds

    s = prep.config.split
    fixed = s.strategy == "exhaustive"
    t0 = time.perf_counter()
    # every round re-splits with the strategy; an exhaustive combination is a fixed split
    res = train_rounds(prep, resplit_every=s.resplit_every or 10**12, combination=combination,
                       strategy="exhaustive" if fixed else s.strategy,
                       stitch_steps=s.stitch_steps, stitch_lr=s.stitch_lr or None,
                       piece_scale=s.piece_scale)
    return _row(
        prep, combination, res.last_split,
        accuracy=res.accuracy,
        accuracy_before_stitch=res.accuracy_before_stitch if s.stitch_steps else None,
        piece_accuracies=res.piece_accuracies,
        ensemble_accuracy=res.ensemble_accuracy,
        cut_fraction=res.cut_fractions[0],
        rounds=res.rounds, resplit_every=res.resplit_every,
        bytes_moved=res.bytes_total, dp_bytes=res.dp_bytes_total,
        curve=[list(c) for c in res.curve],
        seconds=time.perf_counter() - t0,
    )


def run_split(prep: Prepared, split, combination: int = 0) -> dict:
    trained = train_pieces(prep, [(combination, split, p) for p in prep.paths])
    return make_row(prep, combination, split, [p for p, _ in trained],
                    sum(sec for _, sec in trained))


def run_combination(prep: Prepared, combination: int) -> dict:
    if uses_rounds(prep.config):
        return rounds_row(prep, combination)
    return run_split(prep, split_of(prep, combination), combination)
