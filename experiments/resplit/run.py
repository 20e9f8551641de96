"""Beyond one-shot: re-split period, stitch, bytes moved; and does "independence" predict anything?

    python experiments/resplit/run.py experiments/resplit/config.toml            # ~5 min, 2 cores
    python experiments/resplit/run.py experiments/resplit/config.toml --figures  # refresh figures/
    python experiments/resplit/run.py experiments/resplit/config.toml --plot-only

Part 1, rounds (``splitnet.resplit``). For every architecture of ``norms`` ("none": the
BatchNorm-free MLP; "batch": IST's, bias-free Linear + BatchNorm1d, its pieces trained by the loop
engine, a recombined net's statistics re-estimated on the remaining data), seed, k, strategy
(``random``: re-drawn every round, IST; ``fixed``: the poster's weight-based split of the
pretrained net, kept; a ``-dropout`` suffix sets ``split.piece_scale = "dropout"``) and re-split
period E, every piece trains the baseline's T steps in ceil(T/E) rounds; one run gives the
accuracy before and after a ``stitch_steps`` stitch. References per (k, seed): ``baseline``,
``dp`` and ``dp-equal-data`` (``resplit.references``). A one-shot table recombines the same
trained pieces four ways (``resplit.recombinations``).

Part 2, independence (``splitnet.independence``). The exhaustive enumeration of
``[independence] config`` (the driver, into this study's own file, resumable) gives Spearman's
rho of the cut fraction and of the activation score against the accuracy lost to the split.

Resumable: rows are written per cell (one row per cell, kind, stitch and method) and a rerun
skips the recorded cells; a rows file of another config is refused. The figures and the table
(``splitnet.resplit_tables``) are drawn from the files alone.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from splitnet import config as config_mod
from splitnet import experiment, independence, study
from splitnet.analysis import mean_ci
from splitnet.resplit import CONSTRAINTS, ROWS, ResplitConfig, check, poster_combination, run_cells
from splitnet.resplit_tables import LABELS, REFERENCES, by_norm, group, series, table
from splitnet.results import Layout

NAME = "resplit"
CURVES = {  # (strategy, stitched): (colour, line, label)
    ("random", False): ("C0", "-", "IST: random re-split"),
    ("random", True): ("C0", ":", "IST + stitch"),
    ("random-dropout", False): ("C1", "-", "IST, dropout-scaled pieces"),
    ("random-dropout", True): ("C1", ":", "IST dropout-scaled + stitch"),
    ("fixed", False): ("C2", "-", "poster split, fixed"),
    ("fixed", True): ("C2", ":", "poster split + stitch"),
}
FIGURE_PREDICTORS = {
    "cut_fraction": "cut fraction (|W| crossing groups)",
    "activation_score": "activation score (within - across mean |corr|)",
}
INDEPENDENCE = Layout(key=("combination",))


def run_independence(s: ResplitConfig, out: Path, plot_only: bool) -> list[dict] | None:
    """The enumeration's rows with their predictors (``independence.jsonl``, derived from the
    enumeration: rewritten whole); with ``plot_only`` read back (None if never run)."""
    path = out / "independence.jsonl"
    if plot_only:
        return study.recorded(path, s, INDEPENDENCE) if path.exists() else None
    source = out / "independence-exhaustive.jsonl"
    rows = study.driver_rows(NAME, source, config=s.independence.config)  # resumes
    prep = experiment.prepare(config_mod.from_dict(rows[0]["config"]))
    _, weights_index = poster_combination(prep, prep.config.split.variant)
    new = independence.predictor_rows(rows, prep, weights_index, str(source))
    writer, _ = study.rows_file(NAME, path, s, INDEPENDENCE, plot_only=False, resumable=False)
    with writer:
        writer.write(new)
    return new


# --- figures (from the rows alone) -------------------------------------------------------------


def panels(rows: list[dict], path: Path, draw, xlabel: str, what: str) -> None:
    """A panel per (architecture, k): ``draw(ax, rows of the architecture, k)``."""
    ks, norms = sorted({r["groups"] for r in rows}), by_norm(rows)
    fig, axes = plt.subplots(
        len(norms), len(ks), figsize=(6 * len(ks), 4.2 * len(norms)), squeeze=False
    )
    for i, (norm, rs) in enumerate(norms):
        for j, k in enumerate(ks):
            title = f"{'BatchNorm MLP' if norm == 'batch' else 'MLP'}, k = {k}{what(rs, k)}"
            draw(axes[i][j], rs, k)
            axes[i][j].set(xscale="log", xlabel=xlabel, ylabel="test accuracy (%)", title=title)
    study.save_figure(fig, path)


def plot_accuracy(rows: list[dict], path: Path) -> None:
    def draw(ax, rows, k):
        base, half = mean_ci([r["accuracy"] for r in group(rows, kind="baseline", groups=k)])
        ax.axhline(base * 100, color="C3", lw=1.5, label=f"baseline {base * 100:.1f}%")
        ax.axhspan((base - half) * 100, (base + half) * 100, color="C3", alpha=0.1)
        if fixed := series(rows, k, "fixed", False):
            one = fixed[-1][1] * 100
            ax.axhline(
                one, color="0.3", ls="--", lw=1.2, label=f"one-shot, poster split {one:.1f}%"
            )
        for (strategy, stitch), (color, ls, label) in CURVES.items():
            if s := series(rows, k, strategy, stitch):
                e, m, c = (np.array([x[i] for x in s]) for i in range(3))
                ax.plot(e, m * 100, ls, marker="o", ms=4, color=color, label=label)
                ax.fill_between(e, (m - c) * 100, (m + c) * 100, color=color, alpha=0.15)
        periods = sorted({r["resplit_every"] for r in group(rows, kind="rounds", groups=k)})
        ax.set_xscale("log")
        ax.set_xticks(periods, [str(e) for e in periods])
        ax.minorticks_off()
        ax.legend(fontsize=7, loc="lower left")

    seeds = lambda rs, k: f": mean ± 95% CI over {len({r['seed'] for r in rs})} seeds"  # noqa: E731
    xlabel = "re-split period (SGD steps per round; right end = one-shot)"
    panels(rows, path, draw, xlabel, seeds)


def plot_bytes(rows: list[dict], path: Path) -> None:
    def draw(ax, rows, k):
        for strategy in ("random", "random-dropout", "fixed"):
            if s := series(rows, k, strategy, False):
                b, m, c = (np.array([x[i] for x in s]) for i in (3, 1, 2))
                color = CURVES[strategy, False][0]
                ax.errorbar(
                    b,
                    m * 100,
                    c * 100,
                    fmt="o-",
                    color=color,
                    ms=4,
                    capsize=3,
                    label=LABELS[strategy],
                )
                for x in s:
                    ax.annotate(
                        f"E={x[0]}",
                        (x[3], x[1] * 100),
                        fontsize=6,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
        dp = (
            ("dp", "s", "C3", REFERENCES["dp"]),
            ("dp-equal-data", "^", "C1", f"data-parallel, batch {k}x32"),
        )
        for kind, marker, color, label in dp:
            if rs := group(rows, kind=kind, groups=k):
                m, c = mean_ci([r["accuracy"] for r in rs])
                ax.errorbar(
                    [rs[0]["bytes_total"]],
                    [m * 100],
                    [c * 100],
                    fmt=marker,
                    color=color,
                    ms=7,
                    capsize=3,
                    label=label,
                )
        ax.legend(fontsize=7, loc="lower right")

    xlabel = "bytes moved in training (all workers, float32)"
    panels(rows, path, draw, xlabel, lambda rs, k: " workers: accuracy vs communication")


def plot_independence(rows: list[dict], s: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    lost = np.array([r["lost"] for r in rows]) * 100
    w = np.array([r["weights_split"] for r in rows])
    for ax, (name, label) in zip(axes, FIGURE_PREDICTORS.items(), strict=True):
        x = np.array([r[name] for r in rows])
        ax.plot(x[~w], lost[~w], ".", ms=4, color="C4", alpha=0.7, label="combination")
        if w.any():
            ax.plot(x[w], lost[w], "*", ms=12, color="C3", label="poster's weight-based split")
        ax.axhline(0, color="0.5", lw=1)
        title = f"Spearman rho = {s[f'rho_{name}']:.2f} (p = {s[f'p_{name}']:.2g})"
        ax.set(xlabel=label, ylabel="accuracy lost to the split (pp)", title=title)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Independence vs accuracy lost: {s['n']} combinations, hidden {s['hidden']}, "
        f"k = {s['groups']}"
    )
    study.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    skip = ("--skip-independence", {"action": "store_true", "help": "part 1 (rounds) only"})
    spec = {"constraints": CONSTRAINTS, "check": check, "options": [skip]}
    args, s = study.cli(NAME, __doc__, ResplitConfig, argv, **spec)
    torch.set_num_threads(1)
    out, figs = study.output_dirs(NAME, args.figures)
    t0 = time.perf_counter()
    writer, rows = study.rows_file(NAME, out / "resplit.jsonl", s, ROWS, plot_only=args.plot_only)
    if writer is not None:
        with writer:
            rows = run_cells(s, writer)
    ind_rows = None if args.skip_independence else run_independence(s, out, args.plot_only)
    ind = independence.summary(ind_rows) if ind_rows else None
    plot_accuracy(rows, figs / "resplit_accuracy.png")
    plot_bytes(rows, figs / "resplit_bytes.png")
    if ind:
        plot_independence(ind_rows, ind, figs / "independence.png")
    (figs / "resplit_table.md").write_text(text := table(rows, ind))
    print(text)
    print(f"({time.perf_counter() - t0:.0f}s; rows in {out}, figures in {figs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
