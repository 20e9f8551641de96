"""Every named seed stream: distinct, and a function of its arguments only."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

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


def test_round_zero_is_the_one_shot_split_seed():
    cfg = _cfg()
    assert (
        seeds.split_seed(cfg, 4, 0) == seeds.split_seed(cfg, 4) == seeds.derive_seed(0, "split", 4)
    )


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
