"""One experiment: prepare once, then a row per combination (the pure core the driver deals out).

    prep = prepare(cfg)                        # data, the pretrained net, the baseline
    rows = run_combinations(prep, [i, j])      # rounds.train_rounds -> evaluate -> rows

For ``split.strategy = "exhaustive"`` combination i is ``Space.split_at(i)``; ``sample``: the
i-th of ``split.samples`` uniform draws of the space (``combinations.SampledSpace``); ``search``:
the i-th evaluated split of the search (``splitnet.search``); ``random`` has ``RANDOM_DRAWS``
combinations (the i-th seeded draw); the other strategies have one (index 0). Rows of the indexed
strategies carry ``index``, the exact index in the full space (a decimal string above 2^53, where
JSON readers that use doubles would round it).

With ``data.validation_fraction > 0`` rows carry ``validation_accuracy`` (and the baseline's):
whatever *picks* a combination picks on it; test accuracy is only reported.
``seed`` fixes the data split and the pretrained net (the net being split), so combination i
names the same neurons in every run; each run seed of ``seeds = [...]`` replicates the training
of the pieces and of the baseline.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .analysis import exact_index
from .combinations import Indexed, n_combinations, paths_of, space_of
from .config import Config
from .data import Splits, load_splits
from .evaluation import accuracies, piece_and_ensemble_accuracies
from .model import MLP, build_mlp
from .pieces import fold
from .rounds import RoundsResult, train_rounds
from .seeds import init_seed, pretrain_order_seed, remaining_order_seed
from .sgd import accuracy, check_batchnorm_batches, train


@dataclass
class Prepared:
    """One run's fixed part, computed once and shared by all its combinations: the config, the
    data, the pretrained net (the one that is split), its and the baseline's accuracies, and the
    space of combinations."""

    config: Config  # the single-seed config of this run
    data: Splits
    pretrained: MLP
    pretrained_accuracy: float
    baseline_accuracy: float
    space: Indexed | None
    experiment: Config  # the (multi-seed) config the rows belong to
    baseline_validation_accuracy: float | None = None
    _identity: tuple | None = field(default=None, repr=False)  # (hash, dict) of ``experiment``

    @property
    def paths(self) -> list[tuple[int, ...]]:
        return paths_of(self.config)

    @property
    def count(self) -> int:
        return n_combinations(self.config, self.space)


def _train(cfg: Config, net: MLP, data: tuple, epochs: int, seed: int) -> MLP:
    t = cfg.train
    train(
        net, *data, epochs=epochs, batch_size=t.batch_size, lr=t.lr, momentum=t.momentum, seed=seed
    )
    return net


def pretrain(cfg: Config, data: Splits) -> MLP:
    sizes = [data.pretrain[0].shape[1], *cfg.model.hidden, data.n_classes]
    net = build_mlp(sizes, cfg.model.activation, seed=init_seed(cfg), norm=cfg.model.norm)
    return _train(cfg, net, data.pretrain, cfg.train.pretrain_epochs, pretrain_order_seed(cfg))


def baseline(cfg: Config, data: Splits, net: MLP) -> MLP:
    """The unsplit pretrained net trained on the remaining data with the pieces' budget."""
    return _train(
        cfg, copy.deepcopy(net), data.remaining, cfg.train.piece_epochs, remaining_order_seed(cfg)
    )


def validation_accuracy(net, data: Splits) -> float | None:
    """Accuracy on the validation part (None without one): what picks a combination."""
    return None if data.validation is None else accuracy(net, *data.validation)


@dataclass(frozen=True)
class Shared:
    """What one rank computes and broadcasts: the pretrained weights and the reference scores
    (the other ranks then train neither the net nor the baseline)."""

    state: dict
    pretrained_accuracy: float
    baseline_accuracy: float
    baseline_validation_accuracy: float | None

    @classmethod
    def of(cls, prep: Prepared) -> Shared:
        return cls(
            prep.pretrained.state_dict(),
            prep.pretrained_accuracy,
            prep.baseline_accuracy,
            prep.baseline_validation_accuracy,
        )


def load_data(cfg: Config) -> Splits:
    """The experiment's data (split by the experiment's ``seed``)."""
    return load_splits(cfg.data, cfg.seed)


def prepare(
    cfg: Config,
    shared: Shared | None = None,
    seed: int | None = None,
    data: Splits | None = None,
) -> Prepared:
    """Load data (or take ``data``), pretrain and train the baseline (or take ``shared``,
    broadcast by the rank that did).

    ``seed`` picks one run of a multi-seed config (default: its first seed).
    """
    experiment = cfg
    cfg = cfg.for_seed(cfg.run_seeds[0] if seed is None else seed)
    torch.set_num_threads(1)  # same arithmetic on any rank count; no oversubscription under MPI
    data = data if data is not None else load_data(experiment)
    if cfg.model.norm == "batch":
        for what, part in (("pretrain", data.pretrain), ("remaining", data.remaining)):
            check_batchnorm_batches(len(part[0]), cfg.train.batch_size, what)
    space = space_of(experiment)  # a sample is drawn from the experiment's seed, not a run seed
    if shared is not None:
        sizes = [data.pretrain[0].shape[1], *cfg.model.hidden, data.n_classes]
        net = MLP(sizes, cfg.model.activation, cfg.model.norm)
        net.load_state_dict(shared.state)
        return Prepared(
            cfg,
            data,
            net,
            shared.pretrained_accuracy,
            shared.baseline_accuracy,
            space,
            experiment,
            shared.baseline_validation_accuracy,
        )
    net = pretrain(cfg.for_seed(experiment.seed), data)
    base = baseline(cfg, data, net)
    return Prepared(
        cfg,
        data,
        net,
        accuracy(net, *data.test),
        accuracy(base, *data.test),
        space,
        experiment,
        validation_accuracy(base, data),
    )


def uses_rounds(cfg: Config) -> bool:
    """Rows carry the rounds fields (re-splitting, or dropout-scaled pieces)."""
    return cfg.split.resplit_every > 0 or cfg.split.piece_scale != "none"


def run_combinations(
    prep: Prepared, combinations: Sequence[int], space: Indexed | None = None
) -> list[dict]:
    """The rows of ``combinations`` (their pieces are trained together by the engine).

    ``space``: where the splits are, if not ``prep.space`` (a search's ``Candidates``).
    """
    for c in combinations:
        if not 0 <= c < prep.count:
            raise ValueError(f"combination {c} is outside [0, {prep.count})")
    space = space if space is not None else prep.space
    results = train_rounds(prep.pretrained, prep.data, prep.config, combinations, space=space)
    return [
        make_row(prep, res, space, score)
        for res, score in zip(results, scores(prep, results), strict=True)
    ]


def scores(prep: Prepared, results: Sequence[RoundsResult]) -> list[dict]:
    """Test (and validation) accuracies of every result's net, pieces and ensemble, evaluated
    as stacked computations (``evaluation``): the numbers of ``sgd.accuracy`` per net."""
    act, norm = prep.pretrained.activation, prep.pretrained.norm
    X_test, y_test = prep.data.test
    pieces = [[fold(p, norm) for p in r.pieces] for r in results]
    ens = piece_and_ensemble_accuracies(pieces, act, X_test, y_test)
    out = [{"piece_accuracies": p, "ensemble_accuracy": e} for p, e in ens]
    stitched = prep.config.split.stitch_steps > 0
    nets = [fold(r.final, norm) for r in results]
    test = accuracies(nets, act, X_test, y_test) if stitched else None
    val = None if prep.data.validation is None else accuracies(nets, act, *prep.data.validation)
    for i, (sc, res) in enumerate(zip(out, results, strict=True)):
        sc["accuracy"] = test[i] if stitched else res.accuracy_before_stitch
        if val is not None:
            sc["validation_accuracy"] = val[i]
    return out


def run_combination(prep: Prepared, combination: int) -> dict:
    return run_combinations(prep, [combination])[0]


def file_constants(cfg: Config) -> dict:
    """The keys of ``make_row`` that depend on the config alone: a results file keeps them
    once, in its sidecar (``results.DRIVER.shared``)."""
    s = cfg.split
    return {
        "strategy": s.strategy,
        "variant": s.variant,
        "groups": s.groups,
        "paths": [list(p) for p in paths_of(cfg)],
        "recombination": {"unheld": s.unheld, "output": s.output, "stitch_steps": s.stitch_steps},
    }


def make_row(
    prep: Prepared, res: RoundsResult, space: Indexed | None = None, score: dict | None = None
) -> dict:
    """A combination's row: the keys every row carries, plus the rounds fields. ``score``: its
    accuracies from ``scores`` (computed here, alone, if not given)."""
    score = score if score is not None else scores(prep, [res])[0]
    cfg, s = prep.config, prep.config.split
    X_test, y_test = prep.data.test
    if prep._identity is None:  # hashing the config per row costs more than a small piece
        prep._identity = (prep.experiment.hash(), prep.experiment.to_dict())
    config_hash, config_dict = prep._identity
    row = {
        "combination": res.combination,
        "split": [np.asarray(a).tolist() for a in res.split],
        **file_constants(cfg),
        "accuracy": score["accuracy"],
        "accuracy_before_stitch": res.accuracy_before_stitch if s.stitch_steps else None,
        "piece_accuracies": score["piece_accuracies"],
        "ensemble_accuracy": score["ensemble_accuracy"],
        "cut_fraction": res.cut_fractions[0],
        "seconds": res.seconds,
    }
    if s.strategy in ("sample", "search"):
        row["index"] = exact_index((space or prep.space).index(res.combination))
    if prep.data.validation is not None:
        row["validation_accuracy"] = score["validation_accuracy"]
        row["baseline_validation_accuracy"] = prep.baseline_validation_accuracy
    if uses_rounds(cfg):
        row.update(
            rounds=res.rounds,
            resplit_every=res.resplit_every,
            bytes_moved=res.bytes_total,
            dp_bytes=res.dp_bytes_total,
            curve=[list(c) for c in res.curve],
        )
    row.update(
        {
            "baseline_accuracy": prep.baseline_accuracy,
            "pretrained_accuracy": prep.pretrained_accuracy,
            "seed": cfg.seed,
            "piece_seeds": res.piece_seeds,
            "config_hash": config_hash,
            "config": config_dict,
        }
    )
    return row
