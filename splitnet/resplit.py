"""The re-split study's measurements: one-shot against iterated rounds, the references, and the
same trained pieces recombined several ways. ``experiments/resplit/run.py`` declares the grid and
draws; this module says what each cell measures.

A cell is (architecture ``norm``, seed, k, kind, strategy, re-split period E). Every piece trains
the baseline's budget of T steps (T = ``piece_epochs`` x ceil(n / b) over the n remaining
examples, minibatch b) in R = ceil(T / E) rounds (``rounds.train_rounds``); E >= T is the
poster's one-shot. Strategies: ``random`` re-draws a balanced random split every round (IST);
``fixed`` is the poster's weight-based split of the pretrained net, kept every round; a
``-dropout`` suffix scales each piece's incoming weights by h/|S| while it trains (inverted
dropout, ``split.piece_scale = "dropout"``), undone on recombination.

Bytes: a round moves every piece out and back; data-parallel over N workers moves
8 (N - 1) P bytes a step (ring allreduce of P float32 parameters, ``rounds.dp_step_bytes``).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import config as config_mod
from . import experiment
from .combinations import Space
from .pieces import n_params
from .results import Layout, ResultsFile
from .rounds import dp_step_bytes, recombined_net, train_rounds
from .sgd import accuracy, steps_per_epoch
from .split import split_for
from .validation import Each, Interval, OneOf

NORMS = ("none", "batch")  # model.norm: the BatchNorm-free MLP, IST's BatchNorm MLP
STRATEGIES = ("random", "random-dropout", "fixed", "fixed-dropout")
ROWS = Layout(
    key=("key", "kind", "stitch", "method"), key_defaults={"stitch": None, "method": None}
)


@dataclass(frozen=True)
class Rounds:
    """[rounds]: re-split periods (steps) and strategies of every cell, the stitch, and the
    path variants of the one-shot recombination table."""

    resplit_every: tuple[int, ...] = (1, 10, 100)
    strategies: tuple[str, ...] = ("random", "fixed")
    stitch_steps: int = 0
    stitch_lr: float = 0.0
    recombination_variants: tuple[str, ...] = ()


@dataclass(frozen=True)
class Independence:
    """[independence]: the splitnet config whose every combination is enumerated."""

    config: str = "experiments/resplit/independence.toml"


@dataclass(frozen=True)
class ResplitConfig:
    """The study's TOML; ``config`` holds the splitnet config tables every cell shares."""

    seeds: tuple[int, ...] = (0,)
    groups: tuple[int, ...] = (2,)
    norms: tuple[str, ...] = ("none",)
    config: dict = field(default_factory=dict)
    rounds: Rounds = field(default_factory=Rounds)
    independence: Independence = field(default_factory=Independence)


CONSTRAINTS = {
    "seeds": Each(Interval(0)),
    "groups": Each(Interval(1)),
    "norms": Each(OneOf(NORMS)),
    "rounds": {
        "resplit_every": Each(Interval(1)),
        "strategies": Each(OneOf(STRATEGIES)),
        "stitch_steps": Interval(0),
        "stitch_lr": Interval(0),
        "recombination_variants": Each(OneOf(config_mod.VARIANTS)),
    },
}


def check(s: ResplitConfig) -> None:
    """At least one seed and architecture; every cell's splitnet config valid (every k fits)."""
    if not s.seeds or not s.norms:
        raise ValueError(f"seeds={list(s.seeds)} and norms={list(s.norms)} must not be empty")
    for k in s.groups:
        for norm in s.norms:
            cell_config(s, s.seeds[0], k, norm)


def cell_config(s: ResplitConfig, seed: int, groups: int, norm: str) -> config_mod.Config:
    """The splitnet config of a cell: ``s.config`` with its seed, k and ``model.norm``; a
    BatchNorm net trains its pieces on the loop engine (the batched kernel has no BatchNorm)."""
    raw = copy.deepcopy(s.config)
    raw["seed"] = seed
    raw.setdefault("split", {})["groups"] = groups
    if norm != "none":
        raw.setdefault("model", {})["norm"] = norm
        raw.setdefault("train", {})["engine"] = "loop"
    return config_mod.from_dict(raw)


def with_split(cfg: config_mod.Config, **split: Any) -> config_mod.Config:
    """``cfg`` with the ``split`` section's fields ``split`` replaced."""
    return dataclasses.replace(cfg, split=dataclasses.replace(cfg.split, **split))


def poster_combination(
    prep: experiment.Prepared, variant: str = "straight"
) -> tuple[config_mod.Config, int]:
    """(config, combination) of the poster's weight-based split of the pretrained net as a fixed
    exhaustive combination: ``split_for``'s one-shot weights split, located by its index in the
    space of (hidden, k, ``variant``)."""
    cfg = prep.config
    weights = split_for(with_split(cfg, strategy="weights"), prep.pretrained, 0)
    fixed = with_split(cfg, strategy="exhaustive", variant=variant)
    return fixed, Space(cfg.model.hidden, cfg.split.groups, variant).index_of(weights)


def cells(s: ResplitConfig) -> list[tuple]:
    """(seed, k, cell config, kind, strategy, period, key) of every cell, in run order: per
    (norm, seed, k) the references, then every (strategy, period) of rounds, then every
    recombination variant. ``key`` names the cell in the rows file (config hash, kind,
    strategy or variant, period, stitch steps)."""
    r = s.rounds
    kinds = [("ref", None, None)]
    kinds += [("rounds", st, e) for st in r.strategies for e in r.resplit_every]
    kinds += [("recombination", v, None) for v in r.recombination_variants]
    return [
        (seed, k, cfg, kind, st, e, f"{cfg.hash()}|{kind}|{st}|{e}|{r.stitch_steps}")
        for norm in s.norms
        for seed in s.seeds
        for k in s.groups
        for cfg in [cell_config(s, seed, k, norm)]
        for kind, st, e in kinds
    ]


def run_cells(s: ResplitConfig, out: ResultsFile) -> list[dict]:
    """Every cell whose key is not in ``out``, its rows (stamped with key, seed, k, norm, the
    cell's splitnet config and seconds) written as it completes; returns all rows. A prepared
    net is shared by the cells of one splitnet config."""
    rows, done, preps = out.rows, {key[0] for key in out.done}, {}
    for seed, k, cfg, kind, strategy, period, key in cells(s):
        if key in done:
            continue
        prep = preps.get(cfg.hash()) or preps.setdefault(cfg.hash(), experiment.prepare(cfg))
        t0 = time.perf_counter()
        new = MEASURE[kind](prep, s.rounds, strategy, period)
        stamp = {"key": key, "seed": seed, "groups": k, "norm": cfg.model.norm}
        stamp |= {"config": cfg.to_dict(), "seconds": time.perf_counter() - t0}
        out.write(new := [{**row, **stamp} for row in new])
        rows += new
        what = ", ".join(f"{x['kind']}={x['accuracy']:.4f}" for x in new)
        cell = (
            f"norm={cfg.model.norm} seed={seed} groups={k} {kind} {strategy or ''} {period or ''}"
        )
        print(f"{cell}: {what} ({stamp['seconds']:.1f}s)", flush=True)
    return rows


def references(prep: experiment.Prepared, r: Rounds, _strategy=None, _period=None) -> list[dict]:
    """Three rows: ``baseline``, the unsplit net on the same T minibatches (0 bytes); ``dp``,
    data-parallel over N = k workers splitting the global minibatch, which is the baseline's
    arithmetic (its accuracy) at 8 (N-1) P bytes a step for T steps; ``dp-equal-data``, each
    worker a minibatch of the usual size b: the baseline trained with batch k x b for the same
    epochs, T' = ``piece_epochs`` x ceil(n / kb) steps of 8 (N-1) P bytes."""
    cfg, t = prep.config, prep.config.train
    k, n = cfg.split.groups, len(prep.data.remaining[0])
    T, T_big = (t.piece_epochs * steps_per_epoch(n, b) for b in (t.batch_size, k * t.batch_size))
    step = dp_step_bytes(prep.pretrained, k)
    big = dataclasses.replace(cfg, train=dataclasses.replace(t, batch_size=k * t.batch_size))
    net = experiment.baseline(big, prep.data, prep.pretrained)  # the baseline, batch k x b
    base = {"kind": "baseline", "accuracy": prep.baseline_accuracy, "total_steps": T}
    dp = {"kind": "dp", "accuracy": prep.baseline_accuracy, "total_steps": T}
    equal = {"kind": "dp-equal-data", "accuracy": accuracy(net, *prep.data.test)}
    return [
        {**base, "bytes_total": 0, "pretrained_accuracy": prep.pretrained_accuracy},
        {**dp, "bytes_total": step * T, "n_params": n_params(prep.pretrained)},
        {**equal, "total_steps": T_big, "bytes_total": step * T_big},
    ]


def rounds(prep: experiment.Prepared, r: Rounds, strategy: str, period: int) -> list[dict]:
    """One run of ``train_rounds`` with re-split period ``period``: two rows, the test accuracy
    of the recombined net before (``stitch`` False) and after ``r.stitch_steps`` steps of the
    whole net (``stitch`` True), each with the rounds, steps, bytes moved (and data-parallel's
    for the same steps), the logit-sum ensemble's and every piece's accuracy, the mean cut
    fraction over rounds and the last 50 points of the curve."""
    if strategy.startswith("fixed"):
        cfg, combination = poster_combination(prep)
    else:
        cfg, combination = with_split(prep.config, strategy="random"), 0
    scale = "dropout" if strategy.endswith("-dropout") else "none"
    stitch = {"stitch_steps": r.stitch_steps, "stitch_lr": r.stitch_lr}
    cfg = with_split(cfg, resplit_every=period, piece_scale=scale, **stitch)
    res = train_rounds(prep.pretrained, prep.data, cfg, [combination])[0]
    test = prep.data.test
    cut = float(np.mean([c for c in res.cut_fractions if c is not None]))
    common = {"kind": "rounds", "strategy": strategy, "resplit_every": period}
    common |= {"effective_resplit_every": res.resplit_every, "rounds": res.rounds}
    common |= {"total_steps": res.total_steps, "bytes_total": res.bytes_total}
    common |= {
        "dp_bytes_total": res.dp_bytes_total,
        "ensemble_accuracy": res.ensemble_accuracy(*test),
    }
    common |= {"piece_accuracies": res.piece_accuracies(*test), "curve": res.curve[-50:]}
    common["mean_cut_fraction"] = cut
    after = {"stitch": True, "accuracy": accuracy(res.net, *test), "stitch_steps": r.stitch_steps}
    return [
        {**common, "stitch": False, "accuracy": res.accuracy_before_stitch},
        {**common, **after},
    ]


def recombinations(prep: experiment.Prepared, r: Rounds, variant: str, _period=None) -> list[dict]:
    """One-shot on the poster split with path ``variant``: the same trained pieces recombined
    four ways (``rounds.recombined_net``), a row each (``method``): ``sum`` (output layer sums
    the groups' contributions), ``shared-rescale``, ``stitch`` (``sum`` then ``r.stitch_steps``
    of the whole net) and ``ensemble`` (the pieces' logits summed, no recombination)."""
    cfg, combination = poster_combination(prep, variant)
    res = train_rounds(prep.pretrained, prep.data, cfg, [combination])[0]
    test, data = prep.data.test, prep.data.remaining
    stitch = {"stitch_steps": r.stitch_steps, "stitch_lr": r.stitch_lr}

    def recombined(**split: Any) -> float:
        c = with_split(cfg, **split)
        net = recombined_net(prep.pretrained, res.split, res.paths, res.pieces, c, data=data)
        return accuracy(net, *test)

    accs = {
        "sum": recombined(output="sum", stitch_steps=0),
        "shared-rescale": recombined(output="shared-rescale", stitch_steps=0),
        "ensemble": res.ensemble_accuracy(*test),
        "stitch": recombined(output="sum", **stitch),
    }
    one = {"kind": "recombination", "variant": variant, "pieces": len(res.paths)}
    return [{**one, "method": m, "accuracy": a} for m, a in accs.items()]


MEASURE = {"ref": references, "rounds": rounds, "recombination": recombinations}
