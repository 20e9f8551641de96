"""Spaces too big to enumerate: what a uniform sample says, and where a search lands.

    python experiments/sampling/run.py experiments/sampling/config.toml            # ~10 min
    python experiments/sampling/run.py experiments/sampling/config.toml --figures  # figures/
    python experiments/sampling/run.py experiments/sampling/config.toml --plot-only

Every run goes through the driver (``splitnet.enumerate``) into its own file under
``results/sampling/`` (so every part resumes); every pick is made on validation accuracy
(``validation_fraction`` of the remaining data), test accuracy is only reported.

Part 1, [8, 8] on digits, where the truth is known (all 2,450 combinations enumerated):
coverage: how often the (1 - alpha) DKW band of a uniform sample of ``sample_size`` holds the
true CDF (``analysis.band_coverage`` over ``repetitions`` samples; one sample is also run
through the driver, whose rows must equal the enumeration's); search: after 1%, 5% and 20% of
the space, where the pick on validation of a search (``split.strategy = "search"``, from each
start) ranks in the enumeration (rank 1 = the best test accuracy of all).

Part 2, real widths (``wide_hidden`` on ``wide_datasets``): a uniform sample, a search from the
weights split, the weights split itself, and the baseline; ``analysis.space_summary`` answers
"does any split reach the baseline?" as far as a sample can.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from splitnet import study
from splitnet.analysis import (
    band_coverage,
    ecdf_band,
    markdown_table,
    quantile_band,
    reaches_baseline,
    space_summary,
)
from splitnet.combinations import sample_indices
from splitnet.search import best_so_far, pick_ranks
from splitnet.validation import Each, Interval, OneOf

NAME = "sampling"
FRACTIONS = (0.01, 0.05, 0.20)  # of the [8, 8] space: where the search's best is ranked


@dataclass(frozen=True)
class SamplingConfig:
    """The study's TOML (experiments/sampling/config.toml says what each key does)."""

    seed: int = 0
    validation_fraction: float = 0.2
    alpha: float = 0.05
    small_hidden: tuple[int, ...] = (8, 8)
    sample_size: int = 200
    repetitions: int = 100
    search_budget: int = 490
    search_starts: tuple[str, ...] = ("weights", "random")
    wide_datasets: tuple[str, ...] = ("digits", "mnist")
    wide_hidden: tuple[tuple[int, ...], ...] = ((32, 32), (64, 64))
    wide_samples: int = 100
    wide_budget: int = 100


CONSTRAINTS = {
    "validation_fraction": Interval(0, 1, "neither"),
    "alpha": Interval(0, 1, "neither"),
    "small_hidden": Each(Interval(1)),
    **dict.fromkeys(
        ("sample_size", "repetitions", "search_budget", "wide_samples", "wide_budget"), Interval(1)
    ),
    "search_starts": Each(OneOf(("weights", "random"))),
    "wide_hidden": Each(Each(Interval(1))),
}


def by_combination(rows: list[dict], key: str) -> np.ndarray:
    return np.array([r[key] for r in sorted(rows, key=lambda r: r["combination"])])


def small_part(s: SamplingConfig, run: Callable[..., list[dict]]) -> dict:
    """The [8, 8] part; ``run(tag, dataset, hidden, strategy, **sets)``: a driver run's rows."""
    hidden = s.small_hidden
    rows = run("exhaustive-small", "digits", hidden, "exhaustive")
    acc, val = by_combination(rows, "accuracy"), by_combination(rows, "validation_accuracy")
    sample = run("sample-small", "digits", hidden, "sample", **{"split.samples": s.sample_size})
    searches = {}
    for start in s.search_starts:
        sets = {"split.budget": s.search_budget, "split.start": start}
        searches[start] = run(f"search-small-{start}", "digits", hidden, "search", **sets)
    draws = [sample_indices(len(acc), s.sample_size, rep) for rep in range(s.repetitions)]
    return {
        "acc": acc,
        "baseline": rows[0]["baseline_accuracy"],
        "sample": by_combination(sample, "accuracy"),
        "sample_equals_enumeration": all(r["accuracy"] == acc[int(r["index"])] for r in sample),
        "coverage": band_coverage(acc, draws, s.alpha),
        "searches": {st: pick_ranks(r, acc, val, FRACTIONS) for st, r in searches.items()},
        "trajectories": {start: best_so_far(r) for start, r in searches.items()},
    }


def wide_cell(s: SamplingConfig, run: Callable[..., list[dict]], dataset: str, hidden) -> dict:
    tag = f"{dataset}-{'x'.join(map(str, hidden))}"
    sample = run(f"sample-{tag}", dataset, hidden, "sample", **{"split.samples": s.wide_samples})
    search = run(f"search-{tag}", dataset, hidden, "search", **{"split.budget": s.wide_budget})
    weights = run(f"weights-{tag}", dataset, hidden, "weights")
    base = sample[0]["baseline_accuracy"]
    every = [r["accuracy"] for r in sample + search + weights]
    return {
        "dataset": dataset,
        "hidden": list(hidden),
        "sample": space_summary(sample, s.alpha),
        "search": space_summary(search, s.alpha),
        "sample_acc": by_combination(sample, "accuracy"),
        "weights": weights[0]["accuracy"],
        "baseline": base,
        "baseline_validation": sample[0]["baseline_validation_accuracy"],
        "any_reached": bool(reaches_baseline(every, base).any()),
    }


def pct(v: float | None) -> str:
    return "unbounded" if v is None else f"{100 * v:.1f}%"


def table(s: SamplingConfig, small: dict, wide: list[dict]) -> str:
    c, n = small["coverage"], len(small["acc"])
    searches = [
        f"{start}|{r['evaluations']} ({100 * r['fraction']:.0f}%)|{pct(r['test'])}|"
        f"{r['rank_test']} of {n}|{r['rank_validation']} of {n}".split("|")
        for start, ranks in small["searches"].items()
        for r in ranks
    ]
    head = "search start|evaluations (% of space)|best on validation: test accuracy|"
    head += "rank by test (of all)|rank by validation"
    lines = [
        f"## {list(s.small_hidden)} on digits ({n} combinations, all enumerated)",
        "",
        f"DKW band of a uniform sample of {s.sample_size} (eps = {c['eps']:.3f}) held the "
        f"true CDF in {100 * c['covered']:.0f}% of {s.repetitions} samples (required: "
        f">= {100 * (1 - s.alpha):.0f}%); Kolmogorov distance median "
        f"{np.median(c['distances']):.3f}, max {np.max(c['distances']):.3f}. The driver's "
        f"sample rows equal the enumeration's: {small['sample_equals_enumeration']}.",
        "",
        markdown_table(head.split("|"), searches),
        "",
        f"Best test accuracy of all {n}: {pct(small['acc'].max())}; baseline "
        f"{pct(small['baseline'])}.",
        "",
        "## Real widths: does any split reach the baseline?",
        "",
    ]
    head = "data|hidden|space|sample median [95% band]|sample q95 [band]|reach baseline: sample "
    head += "k/n, space CI|weights split (test)|search best (val / test)|baseline (val / test)|"
    head += "any evaluated split >= baseline (test)"
    lines.append(markdown_table(head.split("|"), [wide_cells(w) for w in wide]))
    return "\n".join(lines) + "\n"


def wide_cells(w: dict) -> list[str]:
    d, q = w["sample"], {b["q"]: b for b in w["sample"]["quantiles"]}
    r, sr, space = d["at_or_above_baseline"], w["search"]["search_result"], d["space"]
    space = f"{float(space):.2e}" if int(space) > 10**6 else str(space)
    median, q95 = (
        f"{pct(q[p]['estimate'])} [{pct(q[p]['lower'])}, {pct(q[p]['upper'])}]" for p in (0.5, 0.95)
    )
    return (
        f"{w['dataset']}|{w['hidden']}|{space}|{median}|{q95}|{r['k']}/{r['n']}, "
        f"{100 * r['interval'][0]:.1f}%..{100 * r['interval'][1]:.1f}%|{pct(w['weights'])}|"
        f"{pct(sr['validation_accuracy'])} / {pct(sr['test_accuracy'])}|"
        f"{pct(w['baseline_validation'])} / {pct(w['baseline'])}|"
        f"{'yes' if w['any_reached'] else 'no'}"
    ).split("|")


def draw(s: SamplingConfig, small: dict, wide: list[dict], figs: Path) -> None:
    c = small["coverage"]
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.6))
    a = ax[0]
    x = np.sort(small["acc"]) * 100
    a.step(x, np.arange(1, len(x) + 1) / len(x), where="post", color="k", label="true CDF (all)")
    xs, F, lo, hi = ecdf_band(small["sample"], s.alpha)
    a.step(xs * 100, F, where="post", color="C0", label=f"sample of {len(xs)} (driver)")
    a.fill_between(xs * 100, lo, hi, step="post", color="C0", alpha=0.25, label="95% DKW band")
    a.axvline(small["baseline"] * 100, color="C3", label="baseline")
    title = f"{list(s.small_hidden)}: a sample's band against the truth"
    a.set(xlabel="recombined test accuracy (%)", ylabel="fraction of combinations", title=title)
    a.legend(fontsize=8, loc="lower right")
    a = ax[1]
    a.hist(c["distances"], bins=20, color="C0", alpha=0.8)
    a.axvline(c["eps"], color="C3", label=f"band half-width eps = {c['eps']:.3f}")
    title = f"Coverage: {100 * c['covered']:.0f}% of {s.repetitions} samples"
    a.set(xlabel="sup |F_n - F| of a sample", ylabel="samples", title=title)
    a.legend(fontsize=8)
    a = ax[2]
    for j, (start, picks) in enumerate(small["trajectories"].items()):
        test = np.array([r["accuracy"] for r in picks])
        a.plot(np.arange(1, len(picks) + 1), test * 100, color=f"C{j}", label=start)
    for q, ls, label in ((1.0, "-", "best of all"), (0.99, "--", "99th pct"), (0.5, ":", "median")):
        a.axhline(np.quantile(small["acc"], q) * 100, color="gray", ls=ls, lw=1, label=label)
    a.axhline(small["baseline"] * 100, color="C3", label="baseline")
    for f in FRACTIONS:
        a.axvline(f * len(small["acc"]), color="k", lw=0.5, alpha=0.4)
    a.set(xlabel="evaluations", ylabel="test accuracy of the best on validation (%)")
    a.set(title=f"Search on {list(s.small_hidden)} (ticks: 1%, 5%, 20% of the space)")
    a.legend(fontsize=7, loc="lower right")
    study.save_figure(fig, figs / "sampling_small.png")

    fig, ax = plt.subplots(1, len(wide), figsize=(4.2 * len(wide), 4.2), squeeze=False)
    for a, w in zip(ax[0], wide, strict=True):
        acc = np.sort(w["sample_acc"])
        p = (np.arange(len(acc)) + 1) / len(acc)
        lo, hi = quantile_band(acc, s.alpha)
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
    args, s = study.cli(NAME, __doc__, SamplingConfig, argv, constraints=CONSTRAINTS)
    out, figs = study.output_dirs(NAME, args.figures)

    def run(tag: str, dataset: str, hidden, strategy: str, **sets) -> list[dict]:
        common = {"seed": s.seed, "data.name": dataset, "model.hidden": list(hidden)}
        common |= {"data.validation_fraction": s.validation_fraction, "split.strategy": strategy}
        path = out / f"{tag}.jsonl"
        return study.driver_rows(NAME, path, common | sets, plot_only=args.plot_only)

    small = small_part(s, run)
    wide = [wide_cell(s, run, data, hidden) for data in s.wide_datasets for hidden in s.wide_hidden]
    draw(s, small, wide, figs)
    (figs / "sampling_table.md").write_text(text := table(s, small, wide))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
