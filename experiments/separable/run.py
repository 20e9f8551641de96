"""Depthwise-separable vs standard convolution in the seed-003 CNN, on digits (seed 002, MobileNet).

    python experiments/separable/run.py experiments/separable/config.toml    # ~35 s
    python experiments/separable/run.py experiments/separable/config.toml --figures

For a k x k convolution from N to M channels over a D_F x D_F output map (stride 1)::

    standard    weights K*K*N*M          mult-adds D_F^2 * K*K*N*M
    separable   weights K*K*N + N*M      mult-adds D_F^2 * (K*K*N + N*M)
    ratio       1/M + 1/K^2              (the same for both)

The study trains ``CNN(separable=False)`` and ``CNN(separable=True)`` on the same seeded splits,
counts parameters with ``numel`` and multiply-adds with forward hooks
(``nets.cnn.count_mult_adds``), and writes one JSON line per (variant, seed) to
``results/separable/separable.jsonl``; the figure and the markdown table are made from that file
alone. Not resumable: a run rewrites the file (about 35 s).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from splitnet import study
from splitnet.data import load_dataset, three_way_split
from splitnet.nets.cnn import CNN, conv2_closed_forms, count_mult_adds
from splitnet.sgd import accuracy, train

DEFAULTS = {
    "dataset": "digits",
    "seeds": [0, 1, 2],
    "epochs": 8,
    "batch_size": 64,
    "lr": 1e-3,
    "channels": [32, 64],
    "kernel_size": 0,
    "dense": 0,
    "dropout": 0.25,
    "test_fraction": 0.25,
}


def check(cfg: dict, _args: object = None) -> dict:
    for key in ("epochs", "batch_size"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key}={cfg[key]} must be >= 1")
    if not cfg["seeds"]:
        raise ValueError("seeds=[] must name at least one seed")
    return cfg


def train_eval(cfg: dict, separable: bool, seed: int, splits) -> dict:
    """Train one CNN with Adam for ``epochs``; return its test accuracy and costs."""
    torch.manual_seed(seed)  # the initial weights and the dropout masks
    model = CNN(
        splits.image_shape,
        splits.n_classes,
        tuple(cfg["channels"]),
        cfg["kernel_size"] or None,
        cfg["dense"] or None,
        cfg["dropout"],
        separable,
    )
    t0 = time.perf_counter()
    losses = train(
        model,
        *splits.train,
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        lr=cfg["lr"],
        seed=seed,
        optimizer=lambda ps: torch.optim.Adam(ps, lr=cfg["lr"]),
    )
    train_s = time.perf_counter() - t0
    acc = accuracy(model, *splits.test)
    hooks = count_mult_adds(model, splits.image_shape)
    closed = conv2_closed_forms(model)
    conv2_hooked = sum(v for k, v in hooks.items() if k.startswith("features.3"))
    conv2_params = sum(
        p.numel()
        for n, p in model.named_parameters()
        if n.startswith("features.3") and n.endswith("weight")
    )
    return {
        "variant": "separable" if separable else "standard",
        "seed": seed,
        "test_accuracy": acc,
        "train_losses": losses,
        "train_seconds": train_s,
        "params_total": sum(p.numel() for p in model.parameters()),
        "conv2_weights": conv2_params,
        "conv2_weights_closed_form": closed["weights"],
        "conv2_mult_adds": conv2_hooked,
        "conv2_mult_adds_closed_form": closed["mult_adds"],
        "mult_adds_total": sum(hooks.values()),
        "conv2_shape": closed,
    }


def run(cfg: dict, out: Path) -> list[dict]:
    torch.set_num_threads(1)
    ds = load_dataset(cfg["dataset"])
    rows = []
    for seed in cfg["seeds"]:
        # pretrain + remaining = the training set; the pretrain fraction only matters to the
        # splitting studies, so any value in (0, 1) gives the same train/test partition.
        splits = three_way_split(ds, 0.5, cfg["test_fraction"], seed)
        for separable in (False, True):
            row = train_eval(cfg, separable, seed, splits)
            row["config"] = cfg
            rows.append(row)
            print(
                f"seed={seed} {row['variant']:9s} acc={row['test_accuracy']:.4f} "
                f"params={row['params_total']} conv2={row['conv2_weights']} "
                f"({row['train_seconds']:.1f}s)"
            )
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
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
    s = summarize(rows)
    lines = [
        "| conv 2 | conv-2 weights (numel / closed form) | conv-2 mult-adds (hooks / closed "
        "form) | CNN params | CNN mult-adds | test accuracy (mean ± std) | train s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v, d in s.items():
        lines.append(
            f"| {v} | {d['conv2_weights']:,} / {d['conv2_weights_closed_form']:,} | "
            f"{d['conv2_mult_adds']:,} / {d['conv2_mult_adds_closed_form']:,} | "
            f"{d['params_total']:,} | {d['mult_adds_total']:,} | "
            f"{d['acc_mean']:.4f} ± {d['acc_std']:.4f} (n={d['n']}) | "
            f"{d['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


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
    return study.table_study(
        "separable", __doc__, DEFAULTS, argv, check=check, run=run, plot=plot, table=table
    )


if __name__ == "__main__":
    sys.exit(main())
