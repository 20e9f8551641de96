"""Spaces too big to enumerate: what a uniform sample says, and where a search lands.

    python experiments/sampling/run.py experiments/sampling/config.toml            # ~10 min
    python experiments/sampling/run.py experiments/sampling/config.toml --figures  # figures/
    python experiments/sampling/run.py experiments/sampling/config.toml --plot-only

Every run goes through the driver (``splitnet.enumerate``) into its own file under
``results/sampling/``, so every part resumes after a kill. All picks are made on validation
accuracy (``validation_fraction`` of the remaining data); test accuracy is only reported.

Part 1, [8, 8] on digits, where the truth is known (all 2,450 combinations enumerated):

- coverage: ``repetitions`` uniform samples of ``sample_size`` combinations (indices from
  ``combinations.sample_indices``, rows looked up in the enumeration): the fraction whose
  (1 - alpha) DKW band holds the true CDF everywhere (``confidence.band_contains``), and
  Kolmogorov's distance sup|F_n - F| against the band's half-width eps. One sample is also run
  through the driver (``split.strategy = "sample"``): its rows must equal the enumeration's.
- search: ``split.strategy = "search"`` from each start, budget ``search_budget``; after 1%, 5%
  and 20% of the space its best-on-validation combination is ranked in the enumeration (rank 1
  = the best test accuracy of all 2,450; a shorter budget's search is a prefix of a longer one).

Part 2, real widths (``wide_hidden`` on ``wide_datasets``): a uniform sample, a search from the
weights split, the weights split itself, and the baseline; ``analysis.space_summary`` answers
"does any split reach the baseline?" as far as a sample can.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from splitnet import enumerate as driver  # noqa: E402
from splitnet import study  # noqa: E402
from splitnet.analysis import (  # noqa: E402
    dkw_epsilon,
    ecdf_band,
    quantile_band,
    space_summary,
    sup_distance,
)
from splitnet.combinations import sample_indices  # noqa: E402
from splitnet.results import read_rows  # noqa: E402

NAME = "sampling"
DEFAULTS = {
    "seed": 0,
    "validation_fraction": 0.2,
    "alpha": 0.05,
    "small_hidden": [8, 8],
    "sample_size": 200,
    "repetitions": 100,
    "search_budget": 490,
    "search_starts": ["weights", "random"],
    "wide_datasets": ["digits", "mnist"],
    "wide_hidden": [[32, 32], [64, 64]],
    "wide_samples": 100,
    "wide_budget": 100,
}
FRACTIONS = (0.01, 0.05, 0.20)  # of the [8, 8] space: where the search's best is ranked


def check(s: dict, args) -> dict:
    for key in ("sample_size", "repetitions", "search_budget", "wide_samples", "wide_budget"):
        if s[key] < 1:
            raise ValueError(f"{key}={s[key]} must be >= 1")
    if not 0 < s["validation_fraction"] < 1:
        raise ValueError(f"validation_fraction={s['validation_fraction']} must lie in (0, 1)")
    if not 0 < s["alpha"] < 1:
        raise ValueError(f"alpha={s['alpha']} must lie in (0, 1)")
    bad = sorted(set(s["search_starts"]) - {"weights", "random"})
    if bad:
        raise ValueError(f"search_starts {bad} are not among ['weights', 'random']")
    return s


def sets(s: dict, dataset: str, hidden: list[int], strategy: str, **extra) -> list[str]:
    """The driver's ``--set`` overrides of one run."""
    items = {
        "seed": s["seed"],
        "data.name": dataset,
        "model.hidden": list(hidden),
        "data.validation_fraction": s["validation_fraction"],
        "split.strategy": strategy,
        **extra,
    }
    return [f"{k}={v}" for k, v in items.items()]


def run_driver(out: Path, tag: str, overrides: list[str], plot_only: bool) -> list[dict]:
    """The rows of one driver run into ``out/<tag>.jsonl`` (resumes; only reads if plot_only)."""
    path = out / f"{tag}.jsonl"
    if not plot_only:
        args = [x for o in overrides for x in ("--set", o)]
        code = driver.main([*args, "--out", str(path), "--quiet"])
        if code:
            study.fail(NAME, f"the driver run {tag} exited {code}")
    rows = read_rows(path)
    if not rows:
        study.fail(NAME, f"no rows in {str(path)!r}: run without --plot-only first")
    return rows


def by_combination(rows: list[dict], key: str) -> np.ndarray:
    return np.array([r[key] for r in sorted(rows, key=lambda r: r["combination"])])


def coverage(s: dict, acc: np.ndarray) -> dict:
    n, eps = s["sample_size"], dkw_epsilon(s["sample_size"], s["alpha"])
    dist = [
        sup_distance(acc[sample_indices(len(acc), n, rep)], acc) for rep in range(s["repetitions"])
    ]
    return {"eps": eps, "distances": dist, "covered": float(np.mean(np.array(dist) <= eps))}


def search_ranks(rows: list[dict], acc: np.ndarray, val: np.ndarray) -> list[dict]:
    """Where the best-on-validation of the first b evaluations lands among all combinations."""
    rows = sorted(rows, key=lambda r: r["combination"])
    out = []
    for frac in FRACTIONS:
        b = max(1, round(frac * len(acc)))
        if b > len(rows):
            continue
        head = rows[:b]
        best = max(head, key=lambda r: (r["validation_accuracy"], -r["combination"]))
        i = int(best["index"])
        out.append(
            {
                "fraction": frac,
                "evaluations": b,
                "index": i,
                "test": float(acc[i]),
                "rank_test": int(1 + np.sum(acc > acc[i])),
                "rank_validation": int(1 + np.sum(val > val[i])),
                "same_as_enumeration": bool(best["accuracy"] == acc[i]),
            }
        )
    return out


def small_part(s: dict, out: Path, plot_only: bool) -> dict:
    hidden = s["small_hidden"]
    rows = run_driver(out, "exhaustive-small", sets(s, "digits", hidden, "exhaustive"), plot_only)
    acc, val = by_combination(rows, "accuracy"), by_combination(rows, "validation_accuracy")
    sample = run_driver(
        out,
        "sample-small",
        sets(s, "digits", hidden, "sample", **{"split.samples": s["sample_size"]}),
        plot_only,
    )
    same = all(r["accuracy"] == acc[int(r["index"])] for r in sample)
    searches = {
        start: search_ranks(
            run_driver(
                out,
                f"search-small-{start}",
                sets(
                    s,
                    "digits",
                    hidden,
                    "search",
                    **{"split.budget": s["search_budget"], "split.start": start},
                ),
                plot_only,
            ),
            acc,
            val,
        )
        for start in s["search_starts"]
    }
    trajectories = {
        start: read_rows(out / f"search-small-{start}.jsonl") for start in s["search_starts"]
    }
    return {
        "acc": acc,
        "val": val,
        "baseline": rows[0]["baseline_accuracy"],
        "sample": by_combination(sample, "accuracy"),
        "sample_equals_enumeration": same,
        "coverage": coverage(s, acc),
        "searches": searches,
        "trajectories": trajectories,
    }


def wide_part(s: dict, out: Path, plot_only: bool) -> list[dict]:
    cells = []
    for dataset in s["wide_datasets"]:
        for hidden in s["wide_hidden"]:
            tag = f"{dataset}-{'x'.join(map(str, hidden))}"
            sample = run_driver(
                out,
                f"sample-{tag}",
                sets(s, dataset, hidden, "sample", **{"split.samples": s["wide_samples"]}),
                plot_only,
            )
            search = run_driver(
                out,
                f"search-{tag}",
                sets(s, dataset, hidden, "search", **{"split.budget": s["wide_budget"]}),
                plot_only,
            )
            weights = run_driver(
                out, f"weights-{tag}", sets(s, dataset, hidden, "weights"), plot_only
            )
            cells.append(
                {
                    "dataset": dataset,
                    "hidden": hidden,
                    "sample": space_summary(sample, s["alpha"]),
                    "search": space_summary(search, s["alpha"]),
                    "sample_acc": by_combination(sample, "accuracy"),
                    "weights": weights[0]["accuracy"],
                    "weights_validation": weights[0]["validation_accuracy"],
                    "baseline": sample[0]["baseline_accuracy"],
                    "baseline_validation": sample[0]["baseline_validation_accuracy"],
                    "any_reached": any(
                        r["accuracy"] >= r["baseline_accuracy"] for r in sample + search + weights
                    ),
                }
            )
    return cells


def pct(v: float | None) -> str:
    return "unbounded" if v is None else f"{100 * v:.1f}%"


def table(s: dict, small: dict, wide: list[dict]) -> str:
    c = small["coverage"]
    lines = [
        f"## {s['small_hidden']} on digits ({len(small['acc'])} combinations, all enumerated)",
        "",
        f"DKW band of a uniform sample of {s['sample_size']} (eps = {c['eps']:.3f}) held the "
        f"true CDF in {100 * c['covered']:.0f}% of {s['repetitions']} samples (required: "
        f">= {100 * (1 - s['alpha']):.0f}%); Kolmogorov distance median "
        f"{np.median(c['distances']):.3f}, max {np.max(c['distances']):.3f}. The driver's "
        f"sample rows equal the enumeration's: {small['sample_equals_enumeration']}.",
        "",
        "| search start | evaluations (% of space) | best on validation: test accuracy | "
        "rank by test (of all) | rank by validation |",
        "|---|---|---|---|---|",
    ]
    n = len(small["acc"])
    for start, ranks in small["searches"].items():
        for r in ranks:
            lines.append(
                f"| {start} | {r['evaluations']} ({100 * r['fraction']:.0f}%) | "
                f"{pct(r['test'])} | {r['rank_test']} of {n} | {r['rank_validation']} of {n} |"
            )
    lines += [
        "",
        f"Best test accuracy of all {n}: {pct(small['acc'].max())}; baseline "
        f"{pct(small['baseline'])}.",
        "",
        "## Real widths: does any split reach the baseline?",
        "",
        "| data | hidden | space | sample median [95% band] | sample q95 [band] | "
        "reach baseline: sample k/n, space CI | weights split (test) | search best "
        "(val / test) | baseline (val / test) | any evaluated split >= baseline (test) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in wide:
        d, q = w["sample"], {b["q"]: b for b in w["sample"]["quantiles"]}
        r = d["at_or_above_baseline"]
        sr = w["search"]["search_result"]
        space = d["space"]
        space_text = f"{float(space):.2e}" if int(space) > 10**6 else str(space)
        lines.append(
            f"| {w['dataset']} | {w['hidden']} | {space_text} | {pct(q[0.5]['estimate'])} "
            f"[{pct(q[0.5]['lower'])}, {pct(q[0.5]['upper'])}] | {pct(q[0.95]['estimate'])} "
            f"[{pct(q[0.95]['lower'])}, {pct(q[0.95]['upper'])}] | {r['k']}/{r['n']}, "
            f"{100 * r['interval'][0]:.1f}%..{100 * r['interval'][1]:.1f}% | "
            f"{pct(w['weights'])} | {pct(sr['validation_accuracy'])} / "
            f"{pct(sr['test_accuracy'])} | {pct(w['baseline_validation'])} / "
            f"{pct(w['baseline'])} | {'yes' if w['any_reached'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def draw(s: dict, small: dict, wide: list[dict], figs: Path) -> None:
    c = small["coverage"]
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.6))
    a = ax[0]
    x = np.sort(small["acc"]) * 100
    a.step(x, np.arange(1, len(x) + 1) / len(x), where="post", color="k", label="true CDF (all)")
    xs, F, lo, hi = ecdf_band(small["sample"], s["alpha"])
    a.step(xs * 100, F, where="post", color="C0", label=f"sample of {len(xs)} (driver)")
    a.fill_between(xs * 100, lo, hi, step="post", color="C0", alpha=0.25, label="95% DKW band")
    a.axvline(small["baseline"] * 100, color="C3", label="baseline")
    a.set(xlabel="recombined test accuracy (%)", ylabel="fraction of combinations")
    a.set_title("[8, 8]: a sample's band against the truth")
    a.legend(fontsize=8, loc="lower right")
    a = ax[1]
    a.hist(c["distances"], bins=20, color="C0", alpha=0.8)
    a.axvline(c["eps"], color="C3", label=f"band half-width eps = {c['eps']:.3f}")
    a.set(xlabel="sup |F_n - F| of a sample", ylabel="samples")
    a.set_title(f"Coverage: {100 * c['covered']:.0f}% of {s['repetitions']} samples")
    a.legend(fontsize=8)
    a = ax[2]
    for j, (start, rows) in enumerate(small["trajectories"].items()):
        rows = sorted(rows, key=lambda r: r["combination"])
        best_val, test = -1.0, []
        for r in rows:
            if r["validation_accuracy"] > best_val:
                best_val, pick = r["validation_accuracy"], r["accuracy"]
            test.append(pick)
        a.plot(np.arange(1, len(rows) + 1), np.array(test) * 100, color=f"C{j}", label=start)
    for q, ls, label in ((1.0, "-", "best of all"), (0.99, "--", "99th pct"), (0.5, ":", "median")):
        a.axhline(np.quantile(small["acc"], q) * 100, color="gray", ls=ls, lw=1, label=label)
    a.axhline(small["baseline"] * 100, color="C3", label="baseline")
    for f in FRACTIONS:
        a.axvline(f * len(small["acc"]), color="k", lw=0.5, alpha=0.4)
    a.set(xlabel="evaluations", ylabel="test accuracy of the best on validation (%)")
    a.set_title("Search on [8, 8] (ticks: 1%, 5%, 20% of the space)")
    a.legend(fontsize=7, loc="lower right")
    study.save_figure(fig, figs / "sampling_small.png")

    fig, ax = plt.subplots(1, len(wide), figsize=(4.2 * len(wide), 4.2), squeeze=False)
    for a, w in zip(ax[0], wide, strict=True):
        acc = np.sort(w["sample_acc"])
        p = (np.arange(len(acc)) + 1) / len(acc)
        lo, hi = quantile_band(acc, s["alpha"])
        a.plot(p, acc * 100, color="C0", label="sample (sorted)")
        a.fill_between(p, lo * 100, hi * 100, color="C0", alpha=0.25, label="95% DKW band")
        a.axhline(w["weights"] * 100, color="C2", label="weights split")
        a.axhline(w["search"]["search_result"]["test_accuracy"] * 100, color="C1", label="search")
        a.axhline(w["baseline"] * 100, color="C3", label="baseline")
        a.set(xlabel="fraction of the space", ylabel="test accuracy (%)")
        a.set_title(f"{w['dataset']} {w['hidden']}", fontsize=10)
        a.legend(fontsize=7, loc="lower right")
    study.save_figure(fig, figs / "sampling_wide.png")


def main(argv: list[str] | None = None) -> int:
    args, s = study.cli(NAME, __doc__, DEFAULTS, argv, check=check)
    out, figs = study.output_dirs(NAME, args.figures)
    small = small_part(s, out, args.plot_only)
    wide = wide_part(s, out, args.plot_only)
    draw(s, small, wide, figs)
    text = table(s, small, wide)
    (figs / "sampling_table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
