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
from scipy.stats import spearmanr  # noqa: E402

from .results import read_rows  # noqa: E402


def summarize(rows: list[dict]) -> dict:
    """Best / median / worst recombined accuracy against the baseline, and how many reached it."""
    acc = np.array([r["accuracy"] for r in rows])
    base = rows[0]["baseline_accuracy"]
    cut = np.array([np.nan if r["cut_fraction"] is None else r["cut_fraction"] for r in rows])
    ok = ~np.isnan(cut)
    rho, p = (spearmanr(cut[ok], acc[ok]) if ok.sum() > 2 and np.ptp(cut[ok]) > 0
              else (float("nan"), float("nan")))
    return {
        "combinations": len(rows), "baseline": base,
        "pretrained": rows[0].get("pretrained_accuracy"),
        "best": float(acc.max()), "median": float(np.median(acc)), "worst": float(acc.min()),
        "reached_baseline": int((acc >= base).sum()),
        "mean_piece": float(np.mean([np.mean(r["piece_accuracies"]) for r in rows])),
        "spearman_cut_vs_accuracy": float(rho), "spearman_p": float(p),
    }


def _title(rows: list[dict]) -> str:
    c = rows[0]["config"]
    hidden = "x".join(map(str, c["model"]["hidden"]))
    return (f"{c['data']['name']}, hidden [{hidden}], k={c['split']['groups']}, "
            f"{c['split']['strategy']} {c['split']['variant']}")


def plot(rows: list[dict], out: str | Path, title: str | None = None) -> dict:
    if not rows:
        raise ValueError("no rows to plot")
    rows = sorted(rows, key=lambda r: r["combination"])
    s = summarize(rows)
    idx = np.array([r["combination"] for r in rows])
    acc = np.array([r["accuracy"] for r in rows]) * 100
    pieces = np.array([r["piece_accuracies"] for r in rows]) * 100  # (C, pieces)
    base, pre = s["baseline"] * 100, (s["pretrained"] or np.nan) * 100

    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    small = len(rows) <= 400
    a = ax[0, 0]
    a.plot(idx, acc, "o" if small else ".", ms=3 if small else 1.5, color="C0", label="recombined")
    a.axhline(base, color="C3", lw=1.5, label=f"baseline {base:.1f}%")
    a.axhline(pre, color="0.5", lw=1, ls="--", label=f"pretrained {pre:.1f}%")
    a.set(xlabel="combination index (canonical order)", ylabel="test accuracy (%)",
          title="Accuracy vs combination")
    a.legend(loc="lower right", fontsize=8)

    a = ax[0, 1]
    order = np.argsort(acc)
    x = np.arange(len(rows))
    for j in range(pieces.shape[1]):
        a.plot(x, pieces[order, j], ".", ms=1.5, color="C2", alpha=0.5,
               label="pieces (alone)" if j == 0 else None)
    a.plot(x, acc[order], "-", color="C0", lw=2, label="recombined")
    a.axhline(base, color="C3", lw=1.5, label="baseline")
    a.set(xlabel="combination (sorted by recombined accuracy)", ylabel="test accuracy (%)",
          title="Sorted, with the pieces' own accuracies")
    a.legend(loc="lower right", fontsize=8)

    a = ax[1, 0]
    a.hist(acc, bins=min(40, max(5, len(rows) // 5)), color="C0", alpha=0.8)
    a.axvline(base, color="C3", lw=1.5, label="baseline")
    a.axvline(np.median(acc), color="k", ls=":", label=f"median {np.median(acc):.1f}%")
    a.set(xlabel="recombined test accuracy (%)", ylabel="combinations",
          title=f"Distribution: {s['reached_baseline']} of {len(rows)} reach the baseline")
    a.legend(fontsize=8)

    a = ax[1, 1]
    cut = np.array([np.nan if r["cut_fraction"] is None else r["cut_fraction"] for r in rows])
    if np.isnan(cut).all():
        a.text(0.5, 0.5, "one hidden layer: no hidden-to-hidden cut", ha="center", va="center")
    else:
        a.plot(cut * 100, acc, ".", ms=3 if small else 1.5, color="C4")
        a.axhline(base, color="C3", lw=1.5)
    a.set(xlabel="cut fraction (% of hidden-to-hidden |W| crossing groups)",
          ylabel="recombined test accuracy (%)",
          title=f"Independence vs accuracy: Spearman rho = {s['spearman_cut_vs_accuracy']:.2f}")
    fig.suptitle(title or _title(rows))
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m splitnet.plot", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="a results file written by splitnet.enumerate")
    ap.add_argument("-o", "--out", required=True, help="figure path (.png, .pdf, .svg)")
    ap.add_argument("--title")
    args = ap.parse_args(argv)
    try:
        rows = read_rows(args.results)
        if not rows:
            raise ValueError(f"{args.results!r} holds no rows")
        s = plot(rows, args.out, args.title)
    except (ValueError, OSError) as e:
        print(f"splitnet.plot: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
