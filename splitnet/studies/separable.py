"""Depthwise-separable vs standard convolution in the seed-003 CNN, on digits (seed 002, MobileNet).

Run: ``python -m splitnet.studies.separable experiments/separable.toml``

For a k x k convolution from N to M channels over a D_F x D_F output map (stride 1)::

    standard    weights K*K*N*M          mult-adds D_F^2 * K*K*N*M
    separable   weights K*K*N + N*M      mult-adds D_F^2 * (K*K*N + N*M)
    ratio       1/M + 1/K^2              (the same for both)

The study trains ``CNN(separable=False)`` and ``CNN(separable=True)`` on the same seeded splits,
counts parameters with ``numel`` and multiply-adds with forward hooks (``count_mult_adds``), and
writes one JSON line per (variant, seed) to ``results/separable.jsonl``. The figure and the
markdown table are made from that file alone (``plot``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from splitnet.data import load_dataset, three_way_split
from splitnet.model import CNN, conv_mult_adds, conv_weight_count
from splitnet.studies.common import load_study, save_figure, table_study_main

DEFAULTS = {
    "dataset": "digits", "seeds": [0, 1, 2], "epochs": 8, "batch_size": 64, "lr": 1e-3,
    "channels": [32, 64], "kernel_size": 0, "dense": 0, "dropout": 0.25, "test_fraction": 0.25,
    "out": "results/separable.jsonl", "figure": "figures/separable.png",
    "table": "figures/separable_table.md",
}


def load_config(path: str | Path) -> dict:
    cfg = load_study(path, DEFAULTS)
    for key in ("epochs", "batch_size"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key}={cfg[key]} must be >= 1")
    if not cfg["seeds"]:
        raise ValueError("seeds=[] must name at least one seed")
    return cfg


def count_mult_adds(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Multiply-adds of one forward pass of one sample, counted with forward hooks.

    Conv2d: every output element costs (in_channels / groups) * kH * kW multiply-adds, so a
    depthwise conv (groups = N) costs K*K per output element and a 1x1 conv costs N.
    Linear: in_features per output element. Bias adds, ReLU and pooling are not counted (as in
    MobileNet). Works on the ``meta`` device, so paper-sized layers cost no memory or time.
    """
    counts: dict[str, int] = {}
    hooks = []

    def hook(name):
        def fn(mod, inp, out):
            per_out = (mod.in_channels // mod.groups * math.prod(mod.kernel_size)
                       if isinstance(mod, nn.Conv2d) else mod.in_features)
            counts[name] = counts.get(name, 0) + out[0].numel() * per_out  # out[0]: one sample
        return fn

    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            hooks.append(mod.register_forward_hook(hook(name)))
    try:
        dev = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=dev))
    finally:
        for h in hooks:
            h.remove()
    return counts


def conv2_closed_forms(model: CNN) -> dict[str, int]:
    """The second conv's weights and multiply-adds from ``model.py``'s closed forms."""
    conv = model.features[3]
    sep = model.separable
    first = conv.depthwise if sep else conv
    k, n = first.kernel_size[0], first.in_channels
    m = (conv.pointwise if sep else conv).out_channels
    _, h, w = model.image_shape
    oh, ow = h // 2, w // 2  # after the first pool; 'same' padding keeps the size (odd k)
    return {"k": k, "n": n, "m": m, "out_hw": oh,
            "weights": conv_weight_count(k, n, m, sep),
            "mult_adds": conv_mult_adds(k, n, m, oh, ow, sep)}


def train_eval(cfg: dict, separable: bool, seed: int, splits) -> dict:
    """Train one CNN with Adam for ``epochs``; return its test accuracy and costs."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = CNN(splits.image_shape, splits.n_classes, tuple(cfg["channels"]),
                cfg["kernel_size"] or None, cfg["dense"] or None, cfg["dropout"], separable)
    X, y = (torch.from_numpy(a) for a in splits.train)
    Xt, yt = (torch.from_numpy(a) for a in splits.test)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    t0, losses = time.perf_counter(), []
    for _ in range(cfg["epochs"]):
        model.train()
        perm, total = torch.randperm(len(X), generator=gen), 0.0
        for i in range(0, len(X), cfg["batch_size"]):
            idx = perm[i:i + cfg["batch_size"]]
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(X))
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        acc = (model(Xt).argmax(1) == yt).float().mean().item()
    hooks = count_mult_adds(model, splits.image_shape)
    closed = conv2_closed_forms(model)
    conv2_hooked = sum(v for k, v in hooks.items() if k.startswith("features.3"))
    conv2_params = sum(p.numel() for n, p in model.named_parameters()
                       if n.startswith("features.3") and n.endswith("weight"))
    return {"variant": "separable" if separable else "standard", "seed": seed,
            "test_accuracy": acc, "train_losses": losses, "train_seconds": train_s,
            "params_total": sum(p.numel() for p in model.parameters()),
            "conv2_weights": conv2_params, "conv2_weights_closed_form": closed["weights"],
            "conv2_mult_adds": conv2_hooked, "conv2_mult_adds_closed_form": closed["mult_adds"],
            "mult_adds_total": sum(hooks.values()), "conv2_shape": closed}


def run(cfg: dict) -> list[dict]:
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
            print(f"seed={seed} {row['variant']:9s} acc={row['test_accuracy']:.4f} "
                  f"params={row['params_total']} conv2={row['conv2_weights']} "
                  f"({row['train_seconds']:.1f}s)")
    out = Path(cfg["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def read_rows(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def summarize(rows: list[dict]) -> dict[str, dict]:
    by: dict[str, dict] = {}
    for variant in ("standard", "separable"):
        rs = [r for r in rows if r["variant"] == variant]
        if not rs:
            continue
        acc = np.array([r["test_accuracy"] for r in rs])
        by[variant] = {**{k: rs[0][k] for k in ("params_total", "conv2_weights",
                                                "conv2_weights_closed_form", "conv2_mult_adds",
                                                "conv2_mult_adds_closed_form", "mult_adds_total")},
                       "acc_mean": acc.mean(), "acc_std": acc.std(), "n": len(rs),
                       "seconds": float(np.mean([r["train_seconds"] for r in rs]))}
    return by


def table(rows: list[dict]) -> str:
    s = summarize(rows)
    lines = ["| conv 2 | conv-2 weights (numel / closed form) | conv-2 mult-adds (hooks / closed "
             "form) | CNN params | CNN mult-adds | test accuracy (mean ± std) | train s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for v, d in s.items():
        lines.append(f"| {v} | {d['conv2_weights']:,} / {d['conv2_weights_closed_form']:,} | "
                     f"{d['conv2_mult_adds']:,} / {d['conv2_mult_adds_closed_form']:,} | "
                     f"{d['params_total']:,} | {d['mult_adds_total']:,} | "
                     f"{d['acc_mean']:.4f} ± {d['acc_std']:.4f} (n={d['n']}) | "
                     f"{d['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str | Path) -> None:
    """Accuracy per seed and mean; parameters and mult-adds (whole CNN and conv 2), log scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarize(rows)
    variants = list(s)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    ax = axes[0]
    for i, v in enumerate(variants):
        accs = [r["test_accuracy"] for r in rows if r["variant"] == v]
        ax.scatter([i] * len(accs), accs, color="0.5", zorder=2, s=14)
        ax.errorbar([i], [s[v]["acc_mean"]], [s[v]["acc_std"]], fmt="o", color=f"C{i}",
                    capsize=5, zorder=3)
    ax.set_xticks(range(len(variants)), variants)
    ax.set_xlim(-0.6, len(variants) - 0.4)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"digits, {s[variants[0]]['n']} seeds")
    for ax, (whole, part, title) in zip(axes[1:], (
            ("params_total", "conv2_weights", "parameters"),
            ("mult_adds_total", "conv2_mult_adds", "multiply-adds per image")), strict=True):
        x = np.arange(2)
        for i, v in enumerate(variants):
            ax.bar(x + (i - 0.5) * 0.38, [s[v][whole], s[v][part]], 0.38, label=v, color=f"C{i}")
        ax.set_xticks(x, ["whole CNN", "conv 2"])
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend(fontsize=8)
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    table_study_main(argv, __doc__, "experiments/separable.toml", load_config, run, plot, table,
                     read_rows)


if __name__ == "__main__":
    main()
