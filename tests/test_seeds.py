"""Every named seed stream: distinct, and a function of its arguments only."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import torch

from splitnet import config, seeds


def _cfg(**train):
    cfg = config.load(None, [])
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))


def test_streams_are_distinct():
    cfg = _cfg(shuffle="per-piece")
    values = [
        seeds.init_seed(cfg),
        seeds.pretrain_order_seed(cfg),
        seeds.remaining_order_seed(cfg),
        seeds.piece_order_seed(cfg, 0, (0, 0)),
        seeds.piece_order_seed(cfg, 0, (1, 1)),
        seeds.piece_order_seed(cfg, 1, (0, 0)),
        seeds.split_seed(cfg, 0),
        seeds.split_seed(cfg, 1),
        seeds.split_seed(cfg, 0, 1),
        seeds.split_seed(cfg, 0, 2),
        seeds.stitch_seed(cfg),
        seeds.stitch_seed(cfg, 1),
    ]
    assert len(set(values)) == len(values)
    assert all(0 <= v < 2**63 for v in values)
    other = dataclasses.replace(cfg, seed=1)
    assert seeds.init_seed(other) != seeds.init_seed(cfg)
    assert seeds.data_split_states(5) == (5, 6)


def test_piece_order_follows_train_shuffle():
    shared = _cfg(shuffle="shared")
    assert {seeds.piece_order_seed(shared, c, p) for c in range(3) for p in [(0,), (1,)]} == {
        seeds.remaining_order_seed(shared)
    }
    per = _cfg(shuffle="per-piece")
    assert seeds.piece_order_seed(per, 3, (1, 0)) == seeds.derive_seed(0, "piece", 3, 1, 0)


def test_per_piece_order_depends_on_combination_and_path():
    per = _cfg(shuffle="per-piece")
    got = {(c, p): seeds.piece_order_seed(per, c, p) for c in range(4) for p in [(0, 1), (1, 0)]}
    assert len(set(got.values())) == len(got)
    assert seeds.remaining_order_seed(per) not in got.values()


def test_split_seed_differs_per_combination_and_round():
    cfg = _cfg()
    got = {(c, r): seeds.split_seed(cfg, c, r) for c in range(5) for r in range(4)}
    assert len(set(got.values())) == len(got)


def test_round_zero_is_the_one_shot_split_seed():
    cfg = _cfg()
    assert (
        seeds.split_seed(cfg, 4, 0) == seeds.split_seed(cfg, 4) == seeds.derive_seed(0, "split", 4)
    )


STREAMS = [
    seeds.init_seed,
    seeds.pretrain_order_seed,
    seeds.remaining_order_seed,
    lambda cfg: seeds.piece_order_seed(cfg, 2, (1, 0)),
    lambda cfg: seeds.split_seed(cfg, 3),
    lambda cfg: seeds.split_seed(cfg, 3, 2),
    lambda cfg: seeds.stitch_seed(cfg, 1),
]


def _all(cfg, order=1):
    got = {i: STREAMS[i](cfg) for i in range(len(STREAMS))[::order]}
    return [got[i] for i in range(len(STREAMS))]


def test_seeds_depend_on_their_arguments_only():
    """Not on other settings, the global random state or the order of the calls."""
    cfg = _cfg(shuffle="per-piece")
    want = _all(cfg)
    other = config.load(
        None,
        [
            "train.shuffle='per-piece'",
            "model.hidden=[7,5,3]",
            "split.groups=3",
            "split.strategy='random'",
            "split.resplit_every=4",
            "train.lr=0.3",
            "train.engine='loop'",
            "data.name='iris'",
        ],
    )
    torch.manual_seed(123)
    np.random.seed(123)
    torch.rand(5), np.random.rand(5)
    assert _all(other) == want
    assert _all(cfg, order=-1) == want
    assert _all(dataclasses.replace(cfg, seed=1)) != want


def test_seeds_are_the_same_in_another_process():
    code = (
        "from splitnet import config, seeds; c = config.load(None, ['seed=3']); "
        "print(seeds.split_seed(c, 7, 2), seeds.init_seed(c))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    cfg = config.load(None, ["seed=3"])
    assert [int(v) for v in out] == [seeds.split_seed(cfg, 7, 2), seeds.init_seed(cfg)]
