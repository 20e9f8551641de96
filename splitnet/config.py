"""Experiment configuration: frozen dataclasses loaded from TOML, validated at load time.

Every result row carries ``Config.to_dict()`` and ``Config.hash()`` so rows of different
experiments never mix. Bad values raise ``ValueError`` naming the dotted key and the value.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .partition import check_groups
from .validation import Constraint, Each, Interval, OneOf, build, check, coerce

DATASETS = ("digits", "breast_cancer", "wine", "iris", "synthetic", "mnist", "idx")
STRATEGIES = ("exhaustive", "weights", "activations", "random", "contiguous", "sample", "search")
VARIANTS = ("straight", "alternating", "all-paths")
UNHELD = ("pretrained", "zero")  # parameters held by no piece
OUTPUTS = ("sum", "rescale", "shared-rescale")  # how the pieces' contributions combine
PIECE_SCALES = ("none", "dropout")
ENGINES = ("loop", "batched")
SHUFFLES = ("shared", "per-piece")
ACTIVATIONS = ("relu", "tanh", "sigmoid")
NORMS = ("none", "batch")  # model.norm (model.MLP)
NORM_STATS = ("reestimate", "average")
SEARCH_STARTS = ("weights", "random")
MAX_SEED = 2**32 - 2  # scikit-learn takes random_state < 2**32; the data split uses seed + 1


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: which dataset, and the seeded stratified split into pretrain / remaining
    (/ validation) / test."""

    name: str = "digits"
    path: str = ""  # IDX directory or .npz file (name = "idx"), e.g. full MNIST / Fashion-MNIST
    pretrain_fraction: float = 0.3  # of the training data, used to pretrain the unsplit net
    test_fraction: float = 0.25  # of all data, held out for test accuracy
    # of the remaining data, held out to *pick* combinations (best, search); 0: none
    validation_fraction: float = 0.0
    n_samples: int = 2000  # synthetic only
    n_features: int = 20  # synthetic only
    n_classes: int = 4  # synthetic only


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[int, ...] = (8, 8)
    activation: str = "relu"
    # "batch": IST's architecture (bias-free Linear + BatchNorm1d, affine-free BN on the logits)
    norm: str = "none"


@dataclass(frozen=True)
class SplitConfig:
    """``[split]``: how the hidden units are grouped, which pieces a split yields, how they are
    recombined, and the strategy that picks the combinations (every one, a sample, a search)."""

    strategy: str = "exhaustive"
    groups: int = 2
    variant: str = "straight"
    unheld: str = "pretrained"
    output: str = "sum"
    # iterated rounds (splitnet.rounds): re-split every this many SGD steps; 0 = one-shot
    resplit_every: int = 0
    piece_scale: str = "none"  # "dropout": pieces train with inverted-dropout weight scaling
    stitch_steps: int = 0  # after recombining, SGD steps on the unheld weights + output layer
    stitch_lr: float = 0.0  # 0: train.lr
    samples: int = 0  # strategy "sample": this many distinct combinations, uniform over the space
    budget: int = 0  # strategy "search": this many evaluated combinations
    start: str = "weights"  # strategy "search": the split it starts from
    candidates: int = 8  # strategy "search": neighbours evaluated per step (in parallel)
    # model.norm = "batch": the recombined net's running statistics, re-estimated on the
    # remaining data before it is evaluated ("reestimate"), or the pieces' mean ("average")
    norm_stats: str = "reestimate"


@dataclass(frozen=True)
class TrainConfig:
    """``[train]``: the budgets and the SGD of pretraining, pieces and the baseline alike."""

    pretrain_epochs: int = 30
    piece_epochs: int = 10
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    engine: str = "batched"  # stacks equal-shape pieces; "loop" trains them one by one
    # "shared": every piece and the baseline see the remaining data in the same order, so
    # accuracy differences come from structure alone (and k = 1 reproduces the baseline exactly);
    # "per-piece": each piece shuffles with its own seed from (seed, combination, path).
    shuffle: str = "shared"


@dataclass(frozen=True)
class Config:
    """One experiment: its seeds and sections. Frozen; ``hash()`` names what made a row."""

    seed: int = 0
    # seed: the data split and the pretrained net. seeds = [0, 1, 2] trains every combination's
    # pieces (and the baseline) once per seed, rows carry "seed"; empty means [seed]
    seeds: tuple[int, ...] = ()
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"]["hidden"] = list(self.model.hidden)
        d["seeds"] = list(self.seeds)
        return d

    @property
    def run_seeds(self) -> tuple[int, ...]:
        return self.seeds or (self.seed,)

    def for_seed(self, seed: int) -> Config:
        """The single-seed config of one run of a multi-seed experiment."""
        return replace(self, seed=seed, seeds=())

    def hash(self) -> str:
        """Short digest of everything that changes results (stable across runs and machines).

        Keys added after the first release are hashed only when they differ from their
        default, so a file written before they existed still resumes with the same config.
        """
        return config_hash(self.to_dict())


def config_hash(config: dict[str, Any]) -> str:
    """16 hex digits of sha256 over the config's JSON (keys sorted, compact): the one digest of
    every config that makes rows (the driver's ``Config``, the race's, a study's dict).

    A key of ``LATER_KEYS`` at its default is left out, so a file written before the key existed
    still resumes with the same hash (a dict without those sections hashes as it is).
    """
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for (section, key), default in LATER_KEYS.items():
        if isinstance(d.get(section), dict) and d[section].get(key, default) == default:
            d[section].pop(key, None)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# (section, key) -> default of every key added after the first results files were written
LATER_KEYS = {
    ("data", "validation_fraction"): 0.0,
    ("split", "samples"): 0,
    ("split", "budget"): 0,
    ("split", "start"): "weights",
    ("split", "candidates"): 8,
    ("model", "norm"): "none",
    ("split", "norm_stats"): "reestimate",
}


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "split": SplitConfig, "train": TrainConfig}

# What every value must satisfy (splitnet.validation); rules that tie keys together follow below.
CONSTRAINTS: dict[str, dict[str, Constraint]] = {
    "": {"seed": Interval(0, MAX_SEED, "both"), "seeds": Each(Interval(0, MAX_SEED, "both"))},
    "data": {
        "name": OneOf(DATASETS),
        "pretrain_fraction": Interval(0, 1, "neither"),
        "test_fraction": Interval(0, 1, "neither"),
        "validation_fraction": Interval(0, 1, "left"),
    },
    "model": {
        "hidden": Each(Interval(1)),
        "activation": OneOf(ACTIVATIONS),
        "norm": OneOf(NORMS),
    },
    "split": {
        "norm_stats": OneOf(NORM_STATS),
        "start": OneOf(SEARCH_STARTS),
        "strategy": OneOf(STRATEGIES),
        "variant": OneOf(VARIANTS),
        "unheld": OneOf(UNHELD),
        "output": OneOf(OUTPUTS),
        "piece_scale": OneOf(PIECE_SCALES),
        "resplit_every": Interval(0),
        "stitch_steps": Interval(0),
        "candidates": Interval(1),
        "stitch_lr": Interval(0),
    },
    "train": {
        "engine": OneOf(ENGINES),
        "shuffle": OneOf(SHUFFLES),
        "pretrain_epochs": Interval(0),
        "piece_epochs": Interval(0),
        "batch_size": Interval(1),
        "lr": Interval(0, None, "neither"),
        "momentum": Interval(0, 1, "left"),
    },
}


def from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a Config from a (possibly partial) nested dict."""
    base = Config()
    top: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            top[key] = build(_SECTIONS[key], value, key, getattr(base, key))
        elif key == "seed":
            top[key] = coerce("seed", value, 0)
        elif key == "seeds":
            top[key] = coerce("seeds", value, ())
            if len(set(top[key])) != len(top[key]):
                raise ValueError(f"seeds={list(value)} repeats a seed")
        else:
            raise ValueError(f"unknown key {key!r} (known: seed, seeds, {', '.join(_SECTIONS)})")
    cfg = replace(base, **top)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """The constraint table, then the rules that tie keys together."""
    for section, table in CONSTRAINTS.items():
        check(getattr(cfg, section) if section else cfg, table, section)
    d, m, s, t = cfg.data, cfg.model, cfg.split, cfg.train
    if m.norm == "batch" and t.engine != "loop":
        raise ValueError(
            f"model.norm='batch' with train.engine={t.engine!r}: the batched kernel has no "
            'BatchNorm; set train.engine = "loop"'
        )
    if s.strategy == "sample" and s.samples < 1:
        raise ValueError(f"split.samples={s.samples} must be >= 1 with split.strategy='sample'")
    if s.strategy == "search" and s.budget < 1:
        raise ValueError(f"split.budget={s.budget} must be >= 1 with split.strategy='search'")
    if s.strategy == "search" and d.validation_fraction == 0:
        raise ValueError(
            "split.strategy='search' picks combinations on validation data: set "
            "data.validation_fraction > 0 (e.g. 0.2)"
        )
    if d.name == "idx":
        if not d.path:
            raise ValueError("data.name='idx' needs data.path (an IDX directory or a .npz file)")
        if not Path(d.path).exists():
            raise ValueError(f"data.path={d.path!r} does not exist")
    check_groups(m.hidden, s.groups)
    if d.name == "synthetic":
        check(d, {"n_classes": Interval(2), "n_features": Interval(2)}, "data")
        if d.n_samples < 4 * d.n_classes:
            raise ValueError(
                f"data.n_samples={d.n_samples} must be >= 4 x data.n_classes "
                f"({4 * d.n_classes}): every class needs samples in every part"
            )


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"model.hidden=[4,4]"`` -> (["model", "hidden"], [4, 4]); TOML values, bare words as str."""
    if "=" not in item:
        raise ValueError(f"--set {item!r} must look like KEY=VALUE, e.g. split.groups=3")
    key, text = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word such as digits or all-paths
    return key.strip().split("."), value


def add_arguments(ap: argparse.ArgumentParser, what: str, example: str) -> None:
    """The ``--config FILE.toml`` and repeatable ``--set KEY=VALUE`` options of a command
    (their values go to ``read_raw`` / ``load``)."""
    ap.add_argument("--config", metavar="FILE.toml", help=what)
    ap.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help=f"override a config key, TOML value, repeatable: --set {example}",
    )


def read_raw(path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The nested dict of a TOML file (or {}) with ``--set KEY=VALUE`` overrides applied."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text())
        except OSError as e:
            raise ValueError(f"cannot read config {str(p)!r}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"config {str(p)!r} is not valid TOML: {e}") from None
        except UnicodeDecodeError:
            raise ValueError(f"config {str(p)!r} is not a text (UTF-8) file") from None
    for item in overrides:
        keys, value = parse_override(item)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {k} is not a table")
        node[keys[-1]] = value
    return raw


def load(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a TOML file (or the defaults) and apply ``--set KEY=VALUE`` overrides."""
    return from_dict(read_raw(path, overrides))
