"""Depthwise-separable (MobileNet) vs standard convolution in the progress report's CNN, digits.

    python experiments/separable/run.py experiments/separable/config.toml    # ~35 s
    python experiments/separable/run.py experiments/separable/config.toml --figures

Trains ``CNN(separable=False)`` and ``CNN(separable=True)`` (``splitnet.nets.cnn``) with Adam
through ``splitnet.sgd`` on the same seeded splits, and records per (variant, seed) the test
accuracy and the costs of ``splitnet.nets.separable.costs``: parameters by ``numel`` and
multiply-adds by forward hooks, beside the closed forms K*K*N*M and K*K*N + N*M.

Resumable: one JSON line per (variant, seed) is written to ``results/separable/separable.jsonl``
as it completes, and a rerun skips the recorded cells (a cell depends on its seed only). The
figure and the markdown table are drawn from that file alone.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from splitnet import study
from splitnet.analysis import markdown_table
from splitnet.data import Splits, load_dataset, three_way_split
from splitnet.nets.cnn import CNN
from splitnet.nets.separable import costs
from splitnet.results import Layout, ResultsFile
from splitnet.sgd import accuracy, train
from splitnet.validation import Each, Interval

VARIANTS = ("standard", "separable")
ROWS = Layout(key=("variant", "seed"))


@dataclass(frozen=True)
class SeparableConfig:
    """The study's TOML (experiments/separable/config.toml says what each key does)."""

    dataset: str = "digits"
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    channels: tuple[int, ...] = (32, 64)
    kernel_size: int = 0
    dense: int = 0
    dropout: float = 0.25
    test_fraction: float = 0.25


CONSTRAINTS = {
    "seeds": Each(Interval(0)),
    "epochs": Interval(1),
    "batch_size": Interval(1),
    "lr": Interval(0, None, "neither"),
    "channels": Each(Interval(1)),
    "kernel_size": Interval(0),
    "dense": Interval(0),
    "dropout": Interval(0, 1),
    "test_fraction": Interval(0, 1, "neither"),
}


def check(cfg: SeparableConfig) -> None:
    if not cfg.seeds:
        raise ValueError("seeds=[] must name at least one seed")
    if len(cfg.channels) != 2:
        raise ValueError(f"channels={list(cfg.channels)} must be two positive integers")


STUDY = study.TableStudy("separable", SeparableConfig, ROWS, CONSTRAINTS, check)


def train_eval(cfg: SeparableConfig, separable: bool, seed: int, splits: Splits) -> dict[str, Any]:
    """Train one CNN with Adam for ``epochs``; its test accuracy, losses and costs."""
    torch.manual_seed(seed)  # the initial weights and the dropout masks
    model = CNN(
        splits.image_shape,
        splits.n_classes,
        cfg.channels,
        cfg.kernel_size or None,
        cfg.dense or None,
        cfg.dropout,
        separable,
    )
    t0 = time.perf_counter()
    losses = train(
        model,
        *splits.train,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=seed,  # the minibatch order: one seeded permutation per epoch
        optimizer=lambda ps: torch.optim.Adam(ps, lr=cfg.lr),
    )
    return {
        "variant": VARIANTS[separable],
        "seed": seed,
        "test_accuracy": accuracy(model, *splits.test),
        "train_losses": losses,
        "train_seconds": time.perf_counter() - t0,
        **costs(model),
    }


def run(cfg: SeparableConfig, out: ResultsFile) -> list[dict]:
    """Every (variant, seed) cell not yet in ``out``, written as it completes; all rows."""
    torch.set_num_threads(1)
    rows = out.rows
    ds = load_dataset(cfg.dataset)
    for seed in cfg.seeds:
        # pretrain + remaining = the training set; the pretrain fraction only matters to the
        # splitting studies, so any value in (0, 1) gives the same train/test partition.
        splits = None
        for separable in (False, True):
            if (VARIANTS[separable], seed) in out.done:
                continue
            splits = splits or three_way_split(ds, 0.5, cfg.test_fraction, seed)
            row = {**train_eval(cfg, separable, seed, splits), "config": study.as_dict(cfg)}
            out.write([row])
            rows.append(row)
            print(
                f"seed={seed} {row['variant']:9s} acc={row['test_accuracy']:.4f} "
                f"params={row['params_total']} conv2={row['conv2_weights']} "
                f"({row['train_seconds']:.1f}s)",
                flush=True,
            )
    return rows


def summarize(rows: list[dict]) -> dict[str, dict]:
    by: dict[str, dict] = {}
    for variant in ("standard", "separable"):
        rs = [r for r in rows if r["variant"] == variant]
        if not rs:
            continue
        acc = np.array([r["test_accuracy"] for r in rs])
        by[variant] = {
            **{
                k: rs[0][k]
                for k in (
                    "params_total",
                    "conv2_weights",
                    "conv2_weights_closed_form",
                    "conv2_mult_adds",
                    "conv2_mult_adds_closed_form",
                    "mult_adds_total",
                )
            },
            "acc_mean": acc.mean(),
            "acc_std": acc.std(),
            "n": len(rs),
            "seconds": float(np.mean([r["train_seconds"] for r in rs])),
        }
    return by


def table(rows: list[dict]) -> str:
    header = (
        "conv 2|conv-2 weights (numel / closed form)|conv-2 mult-adds (hooks / closed form)|"
        "CNN params|CNN mult-adds|test accuracy (mean ± std)|train s"
    ).split("|")
    body = [
        (
            v,
            f"{d['conv2_weights']:,} / {d['conv2_weights_closed_form']:,}",
            f"{d['conv2_mult_adds']:,} / {d['conv2_mult_adds_closed_form']:,}",
            f"{d['params_total']:,}",
            f"{d['mult_adds_total']:,}",
            f"{d['acc_mean']:.4f} ± {d['acc_std']:.4f} (n={d['n']})",
            f"{d['seconds']:.1f}",
        )
        for v, d in summarize(rows).items()
    ]
    return markdown_table(header, body, "lrrrrrr") + "\n"


def plot(rows: list[dict], path: str | Path) -> None:
    """Accuracy per seed and mean; parameters and mult-adds (whole CNN and conv 2), log scale."""
    s = summarize(rows)
    variants = list(s)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    ax = axes[0]
    for i, v in enumerate(variants):
        accs = [r["test_accuracy"] for r in rows if r["variant"] == v]
        ax.scatter([i] * len(accs), accs, color="0.5", zorder=2, s=14)
        ax.errorbar(
            [i], [s[v]["acc_mean"]], [s[v]["acc_std"]], fmt="o", color=f"C{i}", capsize=5, zorder=3
        )
    ax.set_xticks(range(len(variants)), variants)
    ax.set_xlim(-0.6, len(variants) - 0.4)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"digits, {s[variants[0]]['n']} seeds")
    for ax, (whole, part, title) in zip(
        axes[1:],
        (
            ("params_total", "conv2_weights", "parameters"),
            ("mult_adds_total", "conv2_mult_adds", "multiply-adds per image"),
        ),
        strict=True,
    ):
        x = np.arange(2)
        for i, v in enumerate(variants):
            ax.bar(x + (i - 0.5) * 0.38, [s[v][whole], s[v][part]], 0.38, label=v, color=f"C{i}")
        ax.set_xticks(x, ["whole CNN", "conv 2"])
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend(fontsize=8)
    study.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    return study.table_study(STUDY, __doc__, argv, run=run, plot=plot, table=table)


if __name__ == "__main__":
    sys.exit(main())
