"""The progress report's sparsification study: every compressor, with and without residuals,
as real MPI runs of the data-parallel trainer; then figures.

    python experiments/sparsification/run.py experiments/sparsification/config.toml   # ~5 min
    python experiments/sparsification/run.py experiments/sparsification/config.toml \
        --datasets mnist --figures

Each run is ``mpiexec -n RANKS python -m mpi4py -m splitnet.parallel.dataparallel ...`` writing
``results/sparsification/<dataset>_<compressor>[_res|_nores].jsonl``; every run's ``DPConfig``
is checked before the first one starts. Resumable: a rerun skips the complete runs of the same
options and refuses those of others (``dataparallel.complete``). The drawing functions read
those files only (never train) and write into ``results/sparsification/`` (``--figures``:
``figures/``):

- ``sparsification_histograms.png``  weights and pre-compression gradients at the snapshots
- ``sparsification_threshold.png``   threshold and fraction sent against iteration
- ``sparsification_accuracy.png``    test accuracy against iteration, every run
- ``sparsification_table.md``        accuracy vs bytes (mean over the applied iterations)

(digits, the default; other datasets add a suffix: ``sparsification_accuracy_mnist.png``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from splitnet import study
from splitnet.analysis import markdown_table
from splitnet.mpi import launch
from splitnet.parallel import dataparallel as program
from splitnet.parallel.compress import COMPRESSORS, wire_seconds
from splitnet.parallel.sparsification import (
    CONSTRAINTS,
    SparsificationConfig,
    load_runs,
    run_config,
    run_names,
    with_datasets,
)

NAME = "sparsification"


def run_all(cfg: SparsificationConfig, out: Path) -> None:
    """Every run not complete, one ``mpiexec`` each; every recorded file is checked first
    (``dataparallel.complete``: a file of other options is a ValueError)."""
    runs = [run_config(cfg, *run, out) for run in run_names(cfg)]
    todo = [run for run in runs if not program.complete(run)]
    for run in runs:
        if run not in todo:
            print(f"{run.out}: complete, skipped", flush=True)
            continue
        # not complete: nothing there, or a run cut short (rank 0 writes at the end): replace it
        args = ["-m", "splitnet.parallel.dataparallel", *program.to_argv(run), "--overwrite"]
        print(f"mpiexec -n {cfg.ranks} python -m mpi4py {' '.join(args)}", flush=True)
        proc = launch(cfg.ranks, args)
        if proc.returncode:
            print(f"sparsification: {run.out}: exited {proc.returncode}", file=sys.stderr)
            raise SystemExit(proc.returncode)


HEAD = "compressor|residual|final test acc|Δ vs none (pp)|mean fraction sent|bytes/rank/iter|"
HEAD += "dense/sent|wire ms/iter @1 Gbit/s|replicas identical"
COLOURS = dict(zip(COMPRESSORS, ["k", "C0", "C1", "C3", "C2"], strict=True))
FLOOR = 1e-7  # log axes cannot show the dynamic rule's tau = 0


def style(name: str) -> dict:
    return {"color": COLOURS[name.split()[0]], "ls": "--" if "no res" in name else "-", "lw": 1}


def iterations(rows: list[dict], key: str) -> tuple[list, list]:
    pts = [(r["iteration"], r[key]) for r in rows if key in r and "iteration" in r]
    return [t for t, _ in pts], [v for _, v in pts]


def plot_histograms(rows: list[dict], path: Path, title: str) -> None:
    snaps = [r for r in rows if "weights_hist" in r]
    fig, axes = plt.subplots(2, len(snaps), figsize=(3.2 * len(snaps), 5.6), squeeze=False)
    for j, r in enumerate(snaps):
        for i, key in enumerate(["weights_hist", "grad_hist"]):
            h, ax = r[key], axes[i][j]
            edges = np.linspace(h["lo"], h["hi"], len(h["counts"]) + 1)
            ax.stairs(h["counts"], edges, fill=True, color="C0" if i == 0 else "C3", alpha=0.7)
            ax.set_yscale("log")
            for k, ls in ((1, "--"), (2, ":")) if i == 1 else ():  # the 1σ and 2σ rules' cuts
                for sgn in (-1, 1):
                    tag = f"{k}σ" if sgn > 0 else None
                    ax.axvline(sgn * k * h["std"], color="k", ls=ls, lw=0.8, label=tag)
            what = "weights" if i == 0 else "gradients"
            ax.set_title(f"{what}, iteration {r['iteration']}", fontsize=9)
            ax.tick_params(labelsize=7)
    axes[1][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    study.save_figure(fig, path)


def plot_threshold(runs: dict, path: Path) -> None:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in runs.items():
        if name != "none":
            it, tau = iterations(rows, "threshold")
            a1.plot(it, [max(v, FLOOR) for v in tau], label=name, **style(name))
            a2.plot(*iterations(rows, "fraction_sent"), label=name, **style(name))
    a1.set(yscale="log", xlabel="iteration", ylabel="threshold τ in |a_i| > τ (rank 0)")
    a1.set(title=f"threshold trend (τ = 0 drawn at {FLOOR:g})")
    a2.set(yscale="log", xlabel="iteration", ylabel="fraction of entries sent")
    a2.set(title="fraction sent (all ranks)")
    handles, labels = a1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    study.save_figure(fig, path, rect=(0, 0.1, 1, 1))


def plot_accuracy(runs: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rows in runs.items():
        ax.plot(*iterations(rows, "test_accuracy"), label=name, **style(name))
    ax.set(xlabel="iteration", ylabel="test accuracy", ylim=(0.5, 1.0))
    ax.set_title("test accuracy, data-parallel CNN")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    study.save_figure(fig, path)


def table(runs: dict, ds: str) -> str:
    """Markdown: accuracy against bytes, means over the applied iterations 0..T-1."""
    base = runs["none"][-1]["final_test_accuracy"] if "none" in runs else None
    body = []
    for rows in runs.values():
        s, m = rows[-1], program.traffic(rows)
        acc, sent = s["final_test_accuracy"], m["bytes_sent"]
        delta = f"{100 * (acc - base):+.1f}" if base is not None else "n/a"
        body.append(
            [s["compressor"], "yes" if s["residual"] else "no", f"{acc:.4f}", delta]
            + [f"{m['fraction_sent']:.4f}", f"{sent:,.0f}", f"{m['dense_bytes'] / sent:.1f}x"]
            + [f"{1e3 * wire_seconds(sent):.3f}", s["replicas_identical"]]
        )
    s = next(iter(runs.values()))[-1]
    dense = 4 * s["n_params"]
    lines = [
        f"**{ds}**",
        "",
        markdown_table(HEAD.split("|"), body),
        "",
        f"{s['ranks']} MPI ranks, {s['n_params']:,} parameters, dense gradient "
        f"{dense:,} B = {1e3 * wire_seconds(dense):.3f} ms at 1 Gbit/s; "
        f"{s['iterations']} iterations, global batch {s['batch_size']}, lr {s['lr']}, "
        f"seed {s['seed']}. Sparse message = 4 B count + 8 B per entry (int32 index, "
        f"float32 value).",
    ]
    return "\n".join(lines)


def draw(cfg: SparsificationConfig, out: Path, figs: Path) -> None:
    for ds in cfg.datasets:
        runs, hist = load_runs(cfg, out, ds), cfg.histogram_run
        if not runs:
            raise ValueError(f"no results for dataset {ds!r}; run without --plot-only first")
        if hist not in runs:
            raise ValueError(f"histogram_run={hist!r}: no results for it; run it first")
        name = "sparsification_{}" + ("" if ds == "digits" else f"_{ds}")  # digits: plain names
        title = f"{ds}, run '{hist}': all weights (top); rank 0's gradient before compression, "
        title += "a = g + r (bottom; r = 0 without residual); lines at 1σ, 2σ"
        plot_histograms(runs[hist], figs / f"{name.format('histograms')}.png", title)
        plot_threshold(runs, figs / f"{name.format('threshold')}.png")
        plot_accuracy(runs, figs / f"{name.format('accuracy')}.png")
        text = table(runs, ds) + "\n"
        (figs / f"{name.format('table')}.md").write_text(text)
        print(text)


def main(argv: list[str] | None = None) -> int:
    datasets = ("--datasets", {"default": "", "help": "override the config's list, e.g. mnist"})
    spec = {"constraints": CONSTRAINTS, "options": [datasets]}
    args, cfg = study.cli(NAME, __doc__, SparsificationConfig, argv, **spec)
    try:
        cfg = with_datasets(cfg, args.datasets, study.RESULTS / NAME)
    except ValueError as e:
        study.fail(NAME, str(e))
    out, figs = study.output_dirs(NAME, args.figures)
    try:
        if not args.plot_only:
            run_all(cfg, out)
        draw(cfg, out, figs)
    except ValueError as e:
        study.fail(NAME, str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
