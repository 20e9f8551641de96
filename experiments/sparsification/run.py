"""Seed 003 study: every compressor, with and without residuals, as real MPI runs; then figures.

    python experiments/sparsification/run.py experiments/sparsification/config.toml   # ~5 min
    python experiments/sparsification/run.py experiments/sparsification/config.toml \
        --datasets mnist --figures

Each run is ``mpiexec -n RANKS python -m mpi4py -m splitnet.parallel.dataparallel ...`` writing
``results/sparsification/<dataset>_<compressor>[_res|_nores].jsonl``; a rerun skips the runs
whose file is complete (ends with its summary row). The drawing functions read those files only
(never train) and write into ``results/sparsification/`` (``--figures``: ``figures/``):

- ``sparsification_histograms.png``  weights and pre-compression gradients at the snapshots
- ``sparsification_threshold.png``   threshold and fraction sent against iteration
- ``sparsification_accuracy.png``    test accuracy against iteration, every run
- ``sparsification_table.md``        accuracy vs bytes (mean over the applied iterations)

(digits, the default; other datasets add a suffix: ``sparsification_accuracy_mnist.png``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from splitnet import study
from splitnet.parallel.compress import COMPRESSORS, wire_seconds
from splitnet.results import read_rows

# top-level keys, plus one table of dataparallel options per dataset (--dataset values)
DEFAULTS = {
    "ranks": 2,
    "datasets": ["digits"],
    "compressors": list(COMPRESSORS),
    "residual": [True, False],
    "histogram_run": "none",
    "digits": {},
    "mnist": {},
    "idx": {},
}
OUT = Path("results/sparsification")  # set by main from study.output_dirs


def check(cfg: dict, args: object = None) -> dict:
    """The datasets override, known compressors, a table of options per dataset."""
    if getattr(args, "datasets", ""):
        cfg["datasets"] = args.datasets.split(",")
    bad = [c for c in cfg.get("compressors", []) if c not in COMPRESSORS]
    if bad:
        raise ValueError(f"compressors {bad} are not among {', '.join(COMPRESSORS)}")
    if int(cfg.get("ranks", 2)) < 1:
        raise ValueError(f"ranks={cfg['ranks']} must be >= 1")
    missing = [d for d in cfg["datasets"] if d not in ("digits", "mnist", "idx") or not cfg[d]]
    if missing:
        raise ValueError(f"datasets {missing} have no [table] of training options")
    return cfg


def run_names(cfg: dict) -> list[tuple[str, str, bool]]:
    """(dataset, compressor, residual) for every run; ``none`` once (nothing is left unsent)."""
    out = []
    for ds in cfg.get("datasets", ["digits"]):
        for c in cfg.get("compressors", list(COMPRESSORS)):
            for res in [True] if c == "none" else cfg.get("residual", [True, False]):
                out.append((ds, c, bool(res)))
    return out


def result_path(cfg: dict, ds: str, comp: str, res: bool) -> Path:
    tail = "" if comp == "none" else ("_res" if res else "_nores")
    return Path(cfg.get("_out", OUT)) / f"{ds}_{comp}{tail}.jsonl"


def run_all(cfg: dict) -> None:
    exe = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(exe) if exe.exists() else "mpiexec"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for ds, comp, res in run_names(cfg):
        path = result_path(cfg, ds, comp, res)
        if (
            path.exists()
            and read_rows(path, require=None)[-1:]
            and read_rows(path, require=None)[-1].get("summary")
        ):
            print(f"{path}: complete, skipped", flush=True)
            continue
        opts = [f"--{k.replace('_', '-')}={v}" for k, v in cfg[ds].items()]
        cmd = [
            mpiexec,
            "-n",
            str(cfg.get("ranks", 2)),
            sys.executable,
            "-m",
            "mpi4py",
            "-m",
            "splitnet.parallel.dataparallel",
            "--dataset",
            ds,
            "--compressor",
            comp,
            "--residual" if res else "--no-residual",
            *opts,
            "--quiet",
            "--out",
            str(result_path(cfg, ds, comp, res)),
        ]
        print(" ".join(cmd[3:]), flush=True)
        subprocess.run(cmd, check=True, env=env)


def read_run(path: Path) -> tuple[list[dict], dict]:
    rows = read_rows(path, require=None)
    return [r for r in rows if "iteration" in r], rows[-1]


def load_runs(cfg: dict, ds: str) -> dict[str, tuple[list[dict], dict]]:
    runs = {}
    for d, comp, res in run_names(cfg):
        p = result_path(cfg, d, comp, res)
        if d == ds and p.exists():
            runs[label(comp, res)] = read_run(p)
    return runs


def label(comp: str, res: bool) -> str:
    return comp if comp == "none" else f"{comp}{'' if res else ' (no residual)'}"


def _style(name: str) -> dict:
    colours = dict(zip(COMPRESSORS, ["k", "C0", "C1", "C3", "C2"], strict=True))
    return {
        "color": colours[name.split()[0]],
        "ls": "--" if "no residual" in name else "-",
        "lw": 1.0,
    }


def plot_histograms(rows: list[dict], path: Path, title: str) -> None:

    snaps = [r for r in rows if "weights_hist" in r]
    fig, axes = plt.subplots(2, len(snaps), figsize=(3.2 * len(snaps), 5.6), squeeze=False)
    for j, r in enumerate(snaps):
        for i, key in enumerate(["weights_hist", "grad_hist"]):
            h, ax = r[key], axes[i][j]
            edges = np.linspace(h["lo"], h["hi"], len(h["counts"]) + 1)
            ax.stairs(h["counts"], edges, fill=True, color="C0" if i == 0 else "C3", alpha=0.7)
            ax.set_yscale("log")
            if i == 1:  # where the 1 sigma and 2 sigma rules would cut
                for k, ls in ((1, "--"), (2, ":")):
                    for sgn in (-1, 1):
                        ax.axvline(
                            sgn * k * h["std"],
                            color="k",
                            ls=ls,
                            lw=0.8,
                            label=f"{k}σ" if sgn > 0 else None,
                        )
            ax.set_title(
                f"{'weights' if i == 0 else 'gradients'}, iteration {r['iteration']}", fontsize=9
            )
            ax.tick_params(labelsize=7)
    axes[1][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


FLOOR = 1e-7  # log axes cannot show the dynamic rule's tau = 0


def plot_threshold(runs: dict, path: Path) -> None:

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, (rows, _) in runs.items():
        if name == "none":
            continue
        it = [r["iteration"] for r in rows]
        a1.plot(it, [max(r["threshold"], FLOOR) for r in rows], label=name, **_style(name))
        a2.plot(it, [r["fraction_sent"] for r in rows], label=name, **_style(name))
    a1.set(
        yscale="log",
        xlabel="iteration",
        ylabel="threshold τ in |a_i| > τ (rank 0)",
        title=f"threshold trend (τ = 0 drawn at {FLOOR:g})",
    )
    a2.set(
        yscale="log",
        xlabel="iteration",
        ylabel="fraction of entries sent",
        title="fraction sent (all ranks)",
    )
    handles, labels = a1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy(runs: dict, path: Path) -> None:

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (rows, _) in runs.items():
        pts = [(r["iteration"], r["test_accuracy"]) for r in rows if "test_accuracy" in r]
        ax.plot(*zip(*pts, strict=True), label=name, **_style(name))
    ax.set(
        xlabel="iteration",
        ylabel="test accuracy",
        ylim=(0.5, 1.0),
        title="test accuracy, data-parallel CNN",
    )
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(runs: dict, ds: str) -> str:
    """Markdown: accuracy against bytes, means over the applied iterations 0..T-1."""
    base = runs["none"][1]["final_test_accuracy"] if "none" in runs else None
    head = (
        "| compressor | residual | final test acc | Δ vs none (pp) | mean fraction sent "
        "| bytes/rank/iter | dense/sent | wire ms/iter @1 Gbit/s | replicas identical |"
    )
    lines = [f"**{ds}**", "", head, "|" + "---|" * 9]
    for rows, s in runs.values():
        applied = [r for r in rows if r["iteration"] < s["iterations"]]
        sent = sum(r["bytes_sent"] for r in applied) / len(applied)
        frac = sum(r["fraction_sent"] for r in applied) / len(applied)
        acc = s["final_test_accuracy"]
        delta = f"{100 * (acc - base):+.1f}" if base is not None else "n/a"
        lines.append(
            f"| {s['compressor']} | {'yes' if s['residual'] else 'no'} | {acc:.4f} | {delta} "
            f"| {frac:.4f} | {sent:,.0f} | {applied[0]['dense_bytes'] / sent:.1f}x "
            f"| {1e3 * wire_seconds(sent):.3f} | {s['replicas_identical']} |"
        )
    s = next(iter(runs.values()))[1]
    dense = 4 * s["n_params"]
    lines += [
        "",
        f"{s['ranks']} MPI ranks, {s['n_params']:,} parameters, dense gradient "
        f"{dense:,} B = {1e3 * wire_seconds(dense):.3f} ms at 1 Gbit/s; "
        f"{s['iterations']} iterations, global batch {s['batch_size']}, lr {s['lr']}, "
        f"seed {s['seed']}. Sparse message = 4 B count + 8 B per entry (int32 index, "
        f"float32 value).",
    ]
    return "\n".join(lines)


def draw(cfg: dict, figs: Path) -> None:
    for ds in cfg.get("datasets", ["digits"]):
        runs = load_runs(cfg, ds)
        if not runs:
            raise ValueError(f"no results for dataset {ds!r}; run without --plot-only first")
        suffix = "" if ds == "digits" else f"_{ds}"  # digits, the default, gets the plain names
        hist = cfg.get("histogram_run", "none")
        if hist not in runs:
            raise ValueError(f"histogram_run={hist!r} is not among the runs {sorted(runs)}")
        plot_histograms(
            runs[hist][0],
            figs / f"sparsification_histograms{suffix}.png",
            f"{ds}, run '{hist}': all weights (top); rank 0's gradient before "
            "compression, a = g + r (bottom; r = 0 without residual); lines at 1σ, 2σ",
        )
        plot_threshold(runs, figs / f"sparsification_threshold{suffix}.png")
        plot_accuracy(runs, figs / f"sparsification_accuracy{suffix}.png")
        text = table(runs, ds) + "\n"
        (figs / f"sparsification_table{suffix}.md").write_text(text)
        print(text)


def main(argv: list[str] | None = None) -> int:
    args, cfg = study.cli(
        "sparsification",
        __doc__,
        DEFAULTS,
        argv,
        check=check,
        options=[("--datasets", {"default": "", "help": "override the config's list, e.g. mnist"})],
    )
    cfg["_out"], figs = study.output_dirs("sparsification", args.figures)
    if not args.plot_only:
        run_all(cfg)
    draw(cfg, figs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
