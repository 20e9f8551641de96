"""Figures from enumeration results; reads rows only, never trains.

    python -m splitnet.plot results/digits.jsonl -o figures/digits.png [--title "..."]

Four panels: recombined accuracy against combination index with the baseline and the pretrained
net as lines; the same sorted, with each combination's piece accuracies; the distribution of
recombined accuracy; and cut fraction against accuracy with Spearman's rho (does the poster's
"independence" predict which splits survive?). A one-line summary goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .analysis import (  # noqa: E402
    accuracy_summary,
    by_combination,
    combination_means,
    mean_ci,
    quantile_band,
)
from .combinations import Space  # noqa: E402
from .results import check_config, read_rows  # noqa: E402

ALPHA = 0.05  # the sorted panel's band: 95%


def combination_arrays(rows: list[dict]) -> dict[str, np.ndarray]:
    """Per-combination means over seeds, with the 95% confidence half-width of the accuracy
    (``mean_ci``: Student t over the seeds; 0 with a single seed)."""
    groups = by_combination(rows)
    return {
        "combination": np.array(list(groups)),
        "accuracy": combination_means(groups, "accuracy"),
        "ci": np.array([mean_ci([r["accuracy"] for r in rs])[1] for rs in groups.values()]),
        "pieces": combination_means(groups, "piece_accuracies"),
        "cut": combination_means(groups, "cut_fraction"),
    }


def _title(rows: list[dict]) -> str:
    c = rows[0]["config"]
    hidden = "x".join(map(str, c["model"]["hidden"]))
    return (
        f"{c['data']['name']}, hidden [{hidden}], k={c['split']['groups']}, "
        f"{c['split']['strategy']} {c['split']['variant']}"
    )


def marked_splits(rows: list[dict], marks: list[dict]) -> list[tuple[str, int, float]]:
    """(label, combination index, mean accuracy) of the splits in ``marks`` (rows of another
    strategy, e.g. the poster's weight-based split), located in the exhaustive space of ``rows``."""
    c = rows[0]["config"]
    space = Space(c["model"]["hidden"], c["split"]["groups"], c["split"]["variant"])
    out: dict[tuple[str, int], list[float]] = {}
    for m in marks:
        out.setdefault((m["strategy"], space.index_of(m["split"])), []).append(m["accuracy"])
    return [(label, i, float(np.mean(a))) for (label, i), a in sorted(out.items())]


def plot(
    rows: list[dict], out: str | Path, title: str | None = None, marks: list[dict] = ()
) -> dict:
    """Draw the four panels of ``rows`` (one experiment) to ``out``; return the numbers they
    show (``analysis.accuracy_summary``, plus where each of ``marks``' splits lands)."""
    if not rows:
        raise ValueError("no rows to plot")
    s = accuracy_summary(rows)
    agg = combination_arrays(rows)
    idx, acc, ci = agg["combination"], agg["accuracy"] * 100, agg["ci"] * 100
    pieces = agg["pieces"] * 100  # (C, pieces)
    base, pre = s["baseline"] * 100, s["pretrained"] * 100
    seeds = f" (mean of {s['seeds']} seeds, 95% CI band)" if s["seeds"] > 1 else ""

    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    small = len(idx) <= 400
    a = ax[0, 0]
    a.plot(idx, acc, "o" if small else ".", ms=3 if small else 1.5, color="C0", label="recombined")
    if s["seeds"] > 1:
        a.fill_between(idx, acc - ci, acc + ci, color="C0", alpha=0.25, lw=0)
    a.axhline(base, color="C3", lw=1.5, label=f"baseline {base:.1f}%")
    a.axhline(pre, color="0.5", lw=1, ls="--", label=f"pretrained {pre:.1f}%")
    located = marked_splits(rows, marks) if marks else []
    for j, (label, i, m_acc) in enumerate(located):
        pct = 100 * float((acc < m_acc * 100).mean())
        s.setdefault("marks", []).append(
            {"strategy": label, "combination": i, "accuracy": m_acc, "percentile": pct}
        )
        a.plot(
            [i],
            [m_acc * 100],
            "*",
            ms=14,
            color=f"C{j + 5}",
            mec="k",
            label=f"{label} split: {m_acc * 100:.1f}% (beats {pct:.0f}%)",
        )
        ax[1, 0].axvline(m_acc * 100, color=f"C{j + 5}", lw=2, label=f"{label} split")
    a.set(
        xlabel={
            "sample": "draw (uniform sample of the space)",
            "search": "evaluation (search order)",
        }.get(rows[0].get("strategy"), "combination index (canonical order)"),
        ylabel="test accuracy (%)",
        title="Accuracy vs combination" + seeds,
    )
    a.legend(loc="lower right", fontsize=8)

    a = ax[0, 1]
    order = np.argsort(acc, kind="stable")
    sample = rows[0].get("strategy") == "sample"
    # a uniform sample's sorted accuracies estimate the space's quantile function: plot them
    # against the fraction of the space, with the DKW band of every quantile
    x = (np.arange(len(idx)) + 1) / len(idx) if sample else np.arange(len(idx))
    for j in range(pieces.shape[1]):
        a.plot(
            x,
            pieces[order, j],
            ".",
            ms=1.5,
            color="C2",
            alpha=0.5,
            label="pieces (alone)" if j == 0 else None,
        )
    a.plot(x, acc[order], "-", color="C0", lw=2, label="recombined")
    if s["seeds"] > 1:
        a.fill_between(x, (acc - ci)[order], (acc + ci)[order], color="C0", alpha=0.25, lw=0)
    if sample:
        lo, hi = quantile_band(acc[order], ALPHA)
        a.fill_between(x, lo, hi, color="C1", alpha=0.3, lw=0, label="95% DKW band (space)")
    a.axhline(base, color="C3", lw=1.5, label="baseline")
    a.set(
        xlabel=(
            f"fraction of the space (uniform sample of {len(idx)}, sorted)"
            if sample
            else "combination (sorted by recombined accuracy)"
        ),
        ylabel="test accuracy (%)",
        title="Sorted, with the pieces' own accuracies",
    )
    a.legend(loc="lower right", fontsize=8)

    a = ax[1, 0]
    a.hist(acc, bins=min(40, max(5, len(idx) // 5)), color="C0", alpha=0.8)
    a.axvline(base, color="C3", lw=1.5, label="baseline")
    a.axvline(np.median(acc), color="k", ls=":", label=f"median {np.median(acc):.1f}%")
    a.set(
        xlabel="recombined test accuracy (%)",
        ylabel="combinations",
        title=f"Distribution: {s['reached_baseline']} of {len(idx)} reach the baseline",
    )
    a.legend(fontsize=8)

    a = ax[1, 1]
    cut = agg["cut"]
    if np.isnan(cut).all():
        a.text(0.5, 0.5, "one hidden layer: no hidden-to-hidden cut", ha="center", va="center")
    else:
        a.plot(cut * 100, acc, ".", ms=3 if small else 1.5, color="C4")
        a.axhline(base, color="C3", lw=1.5)
    a.set(
        xlabel="cut fraction (% of hidden-to-hidden |W| crossing groups)",
        ylabel="recombined test accuracy (%)",
        title=f"Independence vs accuracy: Spearman rho = {s['spearman_cut_vs_accuracy']:.2f}",
    )
    fig.suptitle(title or _title(rows))
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return s


def main(argv: list[str] | None = None) -> int:
    """``python -m splitnet.plot``: one results file (and ``--mark`` files) to a figure; prints
    the numbers; exit 2 with one line on bad input."""
    ap = argparse.ArgumentParser(
        prog="python -m splitnet.plot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("results", help="a results file written by splitnet.enumerate")
    ap.add_argument("-o", "--out", required=True, help="figure path (.png, .pdf, .svg)")
    ap.add_argument("--title")
    ap.add_argument(
        "--mark",
        action="append",
        default=[],
        metavar="RESULTS",
        help="also mark the splits of these results (e.g. strategy = weights)",
    )
    args = ap.parse_args(argv)
    try:
        rows = read_rows(args.results)
        if not rows:
            raise ValueError(f"{args.results!r} holds no rows")
        check_config(rows, None, args.results)  # one experiment per figure
        missing = [p for p in args.mark if not Path(p).exists()]
        if missing:
            raise ValueError(f"--mark {', '.join(missing)}: no such results file")
        marks = [r for path in args.mark for r in read_rows(path)]
        s = plot(rows, args.out, args.title, marks)
    except (ValueError, OSError) as e:
        print(f"splitnet.plot: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
