"""Every named seed stream of splitnet, in one place.

Seeds are derived, never drawn: ``derive_seed(seed, name, *ints)`` is the same 63-bit number on
every rank, every run and every machine, so results depend on (seed, combination, path, round)
and never on the rank count. ``seed`` below is a run's ``Config.seed``.

    stream                       derived from                      used for
    data_split_states(seed)      seed, seed + 1 (scikit-learn)     test split, pretrain split
    validation_state(seed)       (seed, "validation") mod 2^32     the validation split
    sample_seed                  (seed, "sample")                  split.strategy = "sample"
    search_seed                  (seed, "search", step)            a search step's candidates
    init_seed                    (seed, "init")                    the initial weights
    pretrain_order_seed          (seed, "pretrain")                pretraining minibatches
    remaining_order_seed         (seed, "remaining")               the baseline's minibatches
    piece_order_seed             shared: remaining_order_seed      a piece's minibatches
                                 per-piece: (seed, "piece", c, *path)
    split_seed                   (seed, "split", c)  round 0       a random / clustered split
                                 (seed, "split", c, "round", r)    re-split of round r >= 1
    stitch_seed                  (seed, "stitch", r)               stitching after round r
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from .config import Config


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple of ints and strings (stable across processes and machines)."""
    words = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def data_split_states(seed: int) -> tuple[int, int]:
    """scikit-learn ``random_state`` of the test split and of the pretrain/remaining split."""
    return seed, seed + 1


def validation_state(seed: int) -> int:
    """scikit-learn ``random_state`` of the validation split (32-bit)."""
    return derive_seed(seed, "validation") % 2**32


def sample_seed(cfg: Config) -> int:
    """The uniform sample of combination indices (``split.strategy = "sample"``): from the
    experiment's ``seed``, so every run seed of ``seeds = [...]`` trains the same sample."""
    return derive_seed(cfg.seed, "sample")


def search_seed(cfg: Config, step: int) -> int:
    """The neighbours proposed at step ``step`` of a search (and its random start, step -1)."""
    return derive_seed(cfg.seed, "search", step)


def init_seed(cfg: Config) -> int:
    return derive_seed(cfg.seed, "init")


def pretrain_order_seed(cfg: Config) -> int:
    return derive_seed(cfg.seed, "pretrain")


def remaining_order_seed(cfg: Config) -> int:
    """The baseline's data order (and every piece's with ``train.shuffle = "shared"``)."""
    return derive_seed(cfg.seed, "remaining")


def piece_order_seed(cfg: Config, combination: int, path: Sequence[int]) -> int:
    """The minibatch order of the piece ``path`` of ``combination``.

    ``train.shuffle = "shared"``: the baseline's order, so accuracy differences come from
    structure alone and k = 1 reproduces the baseline bit for bit; ``"per-piece"``: the piece's
    own stream.
    """
    if cfg.train.shuffle == "shared":
        return remaining_order_seed(cfg)
    return derive_seed(cfg.seed, "piece", combination, *path)


def split_seed(cfg: Config, combination: int, round_: int = 0) -> int:
    """The seed of a drawn split (random, or the k-means of weights/activations).

    Draw ``combination`` of a random strategy in round ``round_``: every draw and every round
    differ; round 0 is the one-shot split of that draw.
    """
    if round_ == 0:
        return derive_seed(cfg.seed, "split", combination)
    return derive_seed(cfg.seed, "split", combination, "round", round_)


def stitch_seed(cfg: Config, round_: int = 0) -> int:
    return derive_seed(cfg.seed, "stitch", round_)
