"""Seed 003 study: every compressor, with and without residuals, as real MPI runs; then figures.

    python experiments/sparsification/run.py experiments/sparsification/config.toml   # ~5 min
    python experiments/sparsification/run.py experiments/sparsification/config.toml \
        --datasets mnist --figures

Each run is ``mpiexec -n RANKS python -m mpi4py -m splitnet.parallel.dataparallel ...`` writing
``results/sparsification/<dataset>_<compressor>[_res|_nores].jsonl``; every run's options are
checked by dataparallel's own parser before the first one starts. Resumable: a rerun skips the
runs whose file is complete (ends with its summary row) with the same options, and refuses a
complete file made with other options (move it away to rerun it). The drawing functions read
those files only (never train) and write into ``results/sparsification/`` (``--figures``:
``figures/``):

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
from splitnet.parallel import dataparallel
from splitnet.parallel.compress import COMPRESSORS, wire_seconds
from splitnet.results import ANY_ROWS, read_rows

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
RUN_OPTIONS = ("dataset", "compressor", "residual", "out", "quiet")  # set by the study, per run


def check(cfg: dict, args: object = None) -> dict:
    """The datasets override; known compressors; every run's options valid for dataparallel."""
    if getattr(args, "datasets", ""):
        cfg["datasets"] = args.datasets.split(",")
    bad = [c for c in cfg["compressors"] if c not in COMPRESSORS]
    if bad:
        raise ValueError(f"compressors {bad} are not among {', '.join(COMPRESSORS)}")
    if int(cfg["ranks"]) < 1:
        raise ValueError(f"ranks={cfg['ranks']} must be >= 1")
    missing = [d for d in cfg["datasets"] if d not in dataparallel.DATASETS or not cfg[d]]
    if missing:
        raise ValueError(f"datasets {missing} have no [table] of training options")
    labels = [label(comp, res) for _, comp, res in run_names(cfg)]
    if cfg["histogram_run"] not in labels:
        raise ValueError(f"histogram_run={cfg['histogram_run']!r} is not among the runs {labels}")
    for ds in cfg["datasets"]:
        taken = sorted(set(cfg[ds]) & set(RUN_OPTIONS))
        if taken:
            raise ValueError(f"[{ds}] sets {taken}, which the study sets for every run")
    for ds, comp, res in run_names(cfg):
        try:
            dataparallel.options(run_argv(cfg, ds, comp, res, study.RESULTS / "sparsification"))
        except ValueError as e:
            raise ValueError(f"[{ds}]: {e}") from None
    return cfg


def run_names(cfg: dict) -> list[tuple[str, str, bool]]:
    """(dataset, compressor, residual) for every run; ``none`` once (nothing is left unsent)."""
    out = []
    for ds in cfg["datasets"]:
        for c in cfg["compressors"]:
            for res in [True] if c == "none" else cfg["residual"]:
                out.append((ds, c, bool(res)))
    return out


def result_path(out: Path, ds: str, comp: str, res: bool) -> Path:
    tail = "" if comp == "none" else ("_res" if res else "_nores")
    return Path(out) / f"{ds}_{comp}{tail}.jsonl"


def run_argv(cfg: dict, ds: str, comp: str, res: bool, out: Path) -> list[str]:
    """The options of one dataparallel run: the dataset's table, then the run's own."""
    opts = [f"--{k.replace('_', '-')}={v}" for k, v in cfg[ds].items()]
    return [
        f"--dataset={ds}",
        f"--compressor={comp}",
        "--residual" if res else "--no-residual",
        *opts,
        "--quiet",
        f"--out={result_path(out, ds, comp, res)}",
    ]


def recorded(path: Path, argv: list[str]) -> bool:
    """Whether ``path`` is a complete run with the options of ``argv`` (ValueError: another's)."""
    rows = read_rows(path, ANY_ROWS)
    if not rows or not rows[-1].get("summary"):
        return False  # absent, or cut short (rank 0 writes at the end): run it
    want = vars(dataparallel.options(argv))
    other = {
        k: (rows[-1].get(k), v)
        for k, v in want.items()
        if k not in ("out", "quiet") and rows[-1].get(k) != v
    }
    if other:
        k, (was, now) = next(iter(other.items()))
        raise ValueError(
            f"{str(path)!r} is a complete run with other options ({k}: {was!r} recorded, "
            f"{now!r} asked); move it away to rerun it"
        )
    return True


def run_all(cfg: dict, out: Path) -> None:
    exe = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(exe) if exe.exists() else "mpiexec"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs = [run_argv(cfg, ds, comp, res, out) for ds, comp, res in run_names(cfg)]
    try:  # every recorded file checked before the first run
        todo = [argv for argv in runs if not recorded(Path(argv[-1][len("--out=") :]), argv)]
    except ValueError as e:
        study.fail("sparsification", str(e))
    for argv in runs:
        if argv not in todo:
            print(f"{argv[-1][len('--out=') :]}: complete, skipped", flush=True)
            continue
        cmd = [mpiexec, "-n", str(cfg["ranks"]), sys.executable, "-m", "mpi4py", "-m"]
        cmd += ["splitnet.parallel.dataparallel", *argv]
        print(" ".join(cmd[3:]), flush=True)
        proc = subprocess.run(cmd, env=env)
        if proc.returncode:
            print(f"sparsification: {' '.join(cmd)} exited {proc.returncode}", file=sys.stderr)
            raise SystemExit(proc.returncode)


def read_run(path: Path) -> tuple[list[dict], dict]:
    rows = read_rows(path, ANY_ROWS)
    return [r for r in rows if "iteration" in r], rows[-1]


def load_runs(cfg: dict, out: Path, ds: str) -> dict[str, tuple[list[dict], dict]]:
    runs = {}
    for d, comp, res in run_names(cfg):
        p = result_path(out, d, comp, res)
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
    study.save_figure(fig, path)


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
    study.save_figure(fig, path, rect=(0, 0.1, 1, 1))


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
    study.save_figure(fig, path)


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


def draw(cfg: dict, out: Path, figs: Path) -> None:
    for ds in cfg["datasets"]:
        runs = load_runs(cfg, out, ds)
        if not runs:
            raise ValueError(f"no results for dataset {ds!r}; run without --plot-only first")
        suffix = "" if ds == "digits" else f"_{ds}"  # digits, the default, gets the plain names
        hist = cfg["histogram_run"]
        if hist not in runs:
            raise ValueError(f"histogram_run={hist!r}: no results for it; run it first")
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
    out, figs = study.output_dirs("sparsification", args.figures)
    if not args.plot_only:
        run_all(cfg, out)
    try:
        draw(cfg, out, figs)
    except ValueError as e:
        study.fail("sparsification", str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
