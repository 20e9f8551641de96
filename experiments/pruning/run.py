"""Pruning study (the MPI NN slides): accuracy and predict time against the fraction pruned.

    python experiments/pruning/run.py experiments/pruning/config.toml   # ~1 min
    python experiments/pruning/run.py experiments/pruning/config.toml --figures

Train a 64-h-h-10 MLP on digits, then for every method and fraction ``a``:

    connections-layer    zero round(a * n_l) smallest |w| of every Linear (l1_unstructured)
    connections-global   zero round(a * sum n_l) smallest |w| over all Linears together
    neurons-l2           remove round(a * h) neurons per hidden layer, lowest ||W_l[j, :]||_2
    neurons-activity     ... lowest mean |a_j| on the training data

measure test accuracy, without and with ``finetune_epochs`` of masked SGD, and predict time:
the dense torch forward (batch = the test set, and one sample), and the same weights as
``scipy.sparse`` CSR matrices (batch); single-threaded, best-of-rounds CPU seconds.
A zeroed connection still costs a multiply in a dense matmul, so connection pruning only pays
with sparse kernels at high sparsity; a removed neuron shrinks two matrices and pays at once.
One JSON line per (method, fraction, finetuned) in ``results/pruning/pruning.jsonl``, written as
measured. Not resumable: a run starts the file anew (timings of a resumed run would mix loads).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from splitnet import study
from splitnet.analysis import markdown_table
from splitnet.data import load_dataset, three_way_split
from splitnet.model import ACTIVATIONS, build_mlp
from splitnet.parallel.prune import METHODS, csr_predictor, finetune, prune_by, sparsity
from splitnet.results import Layout, ResultsFile
from splitnet.sgd import accuracy, train
from splitnet.validation import Each, Interval, OneOf

ROWS = Layout(key=("method", "fraction", "finetuned"))


@dataclass(frozen=True)
class PruningConfig:
    """The study's TOML (experiments/pruning/config.toml says what each key does)."""

    dataset: str = "digits"
    test_fraction: float = 0.25
    seed: int = 0
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    epochs: int = 40
    batch_size: int = 32
    lr: float = 0.05
    fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9)
    methods: tuple[str, ...] = METHODS
    finetune_epochs: int = 3
    finetune_lr: float = 0.02
    timing_min_time: float = 0.1
    timing_repeats: int = 5


CONSTRAINTS = {
    "test_fraction": Interval(0, 1, "neither"),
    "hidden": Each(Interval(1)),
    "activation": OneOf(tuple(ACTIVATIONS)),
    "epochs": Interval(0),
    "batch_size": Interval(1),
    "fractions": Each(Interval(0, 1)),
    "methods": Each(OneOf(METHODS)),
    "finetune_epochs": Interval(0),
    "timing_min_time": Interval(0, None, "neither"),
    "timing_repeats": Interval(1),
}


STUDY = study.TableStudy("pruning", PruningConfig, ROWS, CONSTRAINTS, resumable=False)


def best_times(
    fns: dict[str, Callable[[], object]], min_time: float, repeats: int
) -> dict[str, float]:
    """Best-of-rounds CPU seconds per call, the variants' rounds interleaved.

    CPU time (``time.process_time``) of this single-threaded process, not wall time: on a
    shared machine other users stretch the wall clock by whatever share of a core they take;
    the CPU time of a single thread is the work itself and equals wall time on a quiet machine.
    """
    clock = time.process_time
    calls = {}
    for k, fn in fns.items():
        fn()
        t0, n = clock(), 0
        while clock() - t0 < min_time / 4:
            fn()
            n += 1
        calls[k] = max(1, int(min_time / ((clock() - t0) / max(n, 1))))
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = clock()
            for _ in range(calls[k]):
                fn()
            best[k] = min(best[k], (clock() - t0) / calls[k])
    return best


def run(cfg: PruningConfig, out: ResultsFile) -> list[dict]:
    """Train, then prune, fine-tune and time every (method, fraction); rows written as made."""
    torch.set_num_threads(1)
    splits = three_way_split(load_dataset(cfg.dataset), 0.5, cfg.test_fraction, cfg.seed)
    Xtr, ytr = (torch.from_numpy(a) for a in splits.train)
    Xte, yte = (torch.from_numpy(a) for a in splits.test)
    sizes = [Xtr.shape[1], *cfg.hidden, splits.n_classes]
    base = build_mlp(sizes, cfg.activation, seed=cfg.seed)
    t0 = time.perf_counter()
    fit = {"batch_size": cfg.batch_size, "epochs": cfg.epochs, "lr": cfg.lr, "seed": cfg.seed}
    train(base, Xtr, ytr, **fit)
    print(
        f"trained {sizes} in {time.perf_counter() - t0:.1f} s: test accuracy "
        f"{accuracy(base, Xte, yte):.4f}",
        flush=True,
    )
    xT, x1 = np.ascontiguousarray(Xte.numpy().T), Xte[:1]
    rows: list[dict] = []
    for method in cfg.methods:
        for amount in cfg.fractions:
            net = prune_by(base, method, amount, Xtr)
            csr = csr_predictor(net)
            with torch.inference_mode():
                t = best_times(
                    {
                        "dense_batch": lambda n=net: n(Xte),
                        "dense_one": lambda n=net: n(x1),
                        "sparse_batch": lambda p=csr: p(xT),
                    },
                    cfg.timing_min_time,
                    cfg.timing_repeats,
                )
            n_params = sum(p.numel() for p in net.parameters())
            common = {
                "method": method,
                "fraction": amount,
                "sizes": list(net.sizes),
                "params": n_params,
                "weight_sparsity": sparsity(net),
                "predict_batch_dense_s": t["dense_batch"],
                "predict_one_dense_s": t["dense_one"],
                "predict_batch_sparse_s": t["sparse_batch"],
                "test_samples": len(Xte),
                "load1": os.getloadavg()[0],
                "config": study.as_dict(cfg),
            }
            accs = [accuracy(net, Xte, yte)]
            if cfg.finetune_epochs > 0:  # in place: the pruned net is measured already
                tune = {"epochs": cfg.finetune_epochs, "lr": cfg.finetune_lr, "seed": cfg.seed + 1}
                finetune(net, Xtr, ytr, batch_size=cfg.batch_size, **tune)
                accs.append(accuracy(net, Xte, yte))
            for tuned_flag, acc in zip((False, True), accs, strict=False):
                row = {**common, "finetuned": tuned_flag, "test_acc": acc}
                out.write([row])
                rows.append(row)
            print(
                f"{method:19s} a={amount:.1f} params={n_params:6d} "
                f"acc={accs[0]:.4f}"
                + (f" tuned={accs[1]:.4f}" if len(accs) > 1 else "")
                + f"  dense {t['dense_batch'] * 1e3:.3f} ms sparse "
                f"{t['sparse_batch'] * 1e3:.3f} ms",
                flush=True,
            )
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: accuracy (fine-tuned in brackets) and batch predict ms per method x fraction."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fracs = sorted({r["fraction"] for r in rows})
    get = {(r["method"], r["fraction"], r["finetuned"]): r for r in rows}
    body = []
    for a in fracs:
        cells = []
        for m in methods:
            r, rt = get.get((m, a, False)), get.get((m, a, True))
            dense = f"{r['predict_batch_dense_s'] * 1e3:.3f}"
            if m.startswith("connections"):
                dense += f" / csr {r['predict_batch_sparse_s'] * 1e3:.3f}"
            cells.append(
                f"{r['test_acc']:.3f}"
                + (f" ({rt['test_acc']:.3f})" if rt else "")
                + f", {dense} ms"
            )
        body.append([f"{a:.1f}", *cells])
    return markdown_table(["fraction", *methods], body)


def plot(rows: list[dict], path: str | Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colors = dict(zip(METHODS, ("tab:blue", "tab:cyan", "tab:red", "tab:orange"), strict=True))

    def series(m: str, tuned: bool) -> list[dict]:
        chosen = (r for r in rows if r["method"] == m and r["finetuned"] == tuned)
        return sorted(chosen, key=lambda r: r["fraction"])

    for m in dict.fromkeys(r["method"] for r in rows):
        for tuned, style in ((False, "o-"), (True, "s--")):
            if rs := series(m, tuned):
                x, y = [r["fraction"] for r in rs], [r["test_acc"] for r in rs]
                label = m + (" + fine-tune" if tuned else "")
                ax1.plot(x, y, style, color=colors[m], ms=4, label=label)
        rs = series(m, False)
        curves = [("predict_batch_dense_s", "o-", 4, "dense")]
        if m.startswith("connections"):
            curves.append(("predict_batch_sparse_s", "x:", None, "CSR"))
        for key, style, ms, kind in curves:
            x, y = [r["fraction"] for r in rs], [r[key] * 1e3 for r in rs]
            ax2.plot(x, y, style, color=colors[m], ms=ms, label=f"{m} ({kind})")
    xlabel = "fraction pruned (of weights, or of hidden neurons)"
    sizes = "-".join(map(str, rows[0]["sizes"]))
    ax1.set(xlabel=xlabel, ylabel="test accuracy", title=f"Accuracy after pruning ({sizes} at 0)")
    ax2.set(
        xlabel=xlabel,
        ylabel=f"predict CPU time, batch of {rows[0]['test_samples']} (ms)",
        title="Predict time (1 thread, best of rounds)",
    )
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    study.save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    return study.table_study(STUDY, __doc__, argv, run=run, plot=plot, table=table)


if __name__ == "__main__":
    sys.exit(main())
