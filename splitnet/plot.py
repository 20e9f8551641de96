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
from scipy import stats  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from .combinations import Space  # noqa: E402
from .confidence import dkw_epsilon  # noqa: E402
from .results import check_config, read_rows  # noqa: E402

ALPHA = 0.05  # the sorted panel's band: 95%


def quantile_band(sorted_acc: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper DKW bounds of the space's quantile at p = (i + 1) / n, i = 0..n-1
    (clipped to the sample's range where the band is unbounded)."""
    n = len(sorted_acc)
    eps = dkw_epsilon(n, alpha)
    p = (np.arange(n) + 1) / n
    lo = np.clip(np.ceil(n * (p - eps) - 1e-12).astype(int) - 1, 0, n - 1)
    hi = np.clip(np.ceil(n * (p + eps) - 1e-12).astype(int) - 1, 0, n - 1)
    return sorted_acc[lo], sorted_acc[hi]


def mean_ci(values: list[float] | np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval over seeds (0 for one value)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), 0.0
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(half)


def by_combination(rows: list[dict]) -> dict[str, np.ndarray]:
    """Per-combination means over seeds, with the 95% confidence half-width of the accuracy
    (``mean_ci``: Student t over the seeds; 0 with a single seed)."""
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["combination"], []).append(r)
    idx = np.array(sorted(groups))

    def mean(key: str) -> np.ndarray:
        return np.array(
            [np.mean([np.nan if r[key] is None else r[key] for r in groups[c]]) for c in idx]
        )

    acc = [np.array([r["accuracy"] for r in groups[c]]) for c in idx]
    ci = np.array([mean_ci(a)[1] for a in acc])
    pieces = np.array([np.mean([r["piece_accuracies"] for r in groups[c]], axis=0) for c in idx])
    return {
        "combination": idx,
        "accuracy": mean("accuracy"),
        "ci": ci,
        "pieces": pieces,
        "cut": mean("cut_fraction"),
        "baseline": mean("baseline_accuracy"),
        "n_seeds": np.array([len(groups[c]) for c in idx]),
    }


def summarize(rows: list[dict]) -> dict:
    """Best / median / worst recombined accuracy against the baseline, and how many reached it
    (per combination, averaged over seeds)."""
    agg = by_combination(rows)
    acc, cut = agg["accuracy"], agg["cut"]
    base = float(np.mean([r["baseline_accuracy"] for r in rows]))
    ok = ~np.isnan(cut)
    rho, p = (
        spearmanr(cut[ok], acc[ok])
        if ok.sum() > 2 and np.ptp(cut[ok]) > 0
        else (float("nan"), float("nan"))
    )
    ens = [r["ensemble_accuracy"] for r in rows if "ensemble_accuracy" in r]
    return {
        "combinations": len(acc),
        "seeds": int(agg["n_seeds"].max()),
        "baseline": base,
        "pretrained": float(np.mean([r.get("pretrained_accuracy", np.nan) for r in rows])),
        "best": float(acc.max()),
        "median": float(np.median(acc)),
        "worst": float(acc.min()),
        "reached_baseline": int((acc >= base).sum()),
        "mean_piece": float(np.mean([np.mean(r["piece_accuracies"]) for r in rows])),
        "mean_ensemble": float(np.mean(ens)) if ens else None,
        "spearman_cut_vs_accuracy": float(rho),
        "spearman_p": float(p),
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
    if not rows:
        raise ValueError("no rows to plot")
    s = summarize(rows)
    agg = by_combination(rows)
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
