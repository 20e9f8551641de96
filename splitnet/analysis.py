"""Statistics of rows: bands, intervals, rank correlation, reaching the baseline, the pick on
validation, what a file says about the whole combination space, and markdown tables of them.

Dvoretzky-Kiefer-Wolfowitz (Massart's constant): for n i.i.d. draws with empirical CDF F_n,

    P( sup_x |F_n(x) - F(x)| > eps ) <= 2 exp(-2 n eps^2),   eps = sqrt(ln(2 / alpha) / (2 n))

so [F_n - eps, F_n + eps] holds the true CDF everywhere with probability >= 1 - alpha. A
sample *without* replacement from a finite space is less variable than i.i.d. draws (Hoeffding
1963, section 6), so the band stays valid, conservatively. Inverting it bounds every quantile:

    Q(q) in [ F_n^{-1}(q - eps), F_n^{-1}(q + eps) ],   F_n^{-1}(p) = x_(ceil(n p))

(unbounded below when q - eps <= 0, above when q + eps > 1). The fraction of combinations at or
above the baseline, k of n, gets the exact binomial (Clopper-Pearson) interval. Over seeds, a
mean gets Student's t interval. A split "reaches the baseline" when its test accuracy is at or
above the baseline's; the pick on validation is the best validation score, ties to the lowest
combination index.

Reads rows, never files (``results`` reads them); scipy loads in the functions that need it, so
``python -m splitnet.results check`` stays quick.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def exact_index(index: int) -> int | str:
    """A count or index as JSON keeps it exactly: an int up to 2^53, a decimal string beyond
    (readers of JSON numbers round to doubles)."""
    return index if index <= 2**53 else str(index)


# --- distribution-free bands of a uniform sample -------------------------------------------------
def dkw_epsilon(n: int, alpha: float = 0.05) -> float:
    """Half-width of the (1 - alpha) DKW band of an n-sample's empirical CDF."""
    if n < 1:
        raise ValueError(f"a band needs at least one value, got n={n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha} must lie in (0, 1)")
    return math.sqrt(math.log(2 / alpha) / (2 * n))


def ecdf_band(
    values: Sequence[float], alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x sorted, F_n(x), lower, upper): the empirical CDF at its jumps and its DKW band."""
    x = np.sort(np.asarray(values, dtype=float))
    F = np.arange(1, len(x) + 1) / len(x)
    eps = dkw_epsilon(len(x), alpha)
    return x, F, np.clip(F - eps, 0, 1), np.clip(F + eps, 0, 1)


def _order_index(n: int, p: np.ndarray) -> np.ndarray:
    """The 0-based order statistic of F_n^{-1}(p) = x_(ceil(n p)) (below 0 / past n - 1 outside
    (0, 1]: there the band is unbounded)."""
    return np.ceil(n * np.asarray(p, dtype=float) - 1e-12).astype(int) - 1


def empirical_quantile(x_sorted: np.ndarray, p: float) -> float | None:
    """F_n^{-1}(p) = x_(ceil(n p)) for p in (0, 1]; None outside (the band is unbounded)."""
    if not 0 < p <= 1:
        return None
    return float(x_sorted[max(0, int(_order_index(len(x_sorted), p)))])


def quantile_band(
    x_sorted: np.ndarray, alpha: float = 0.05, qs: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper (1 - alpha) DKW bounds of the space's q-quantile for every q of ``qs``
    (default: p = (i + 1) / n, i = 0..n-1, every order statistic), clipped to the sample's
    range where the band is unbounded (for drawing)."""
    x = np.asarray(x_sorted, dtype=float)
    n = len(x)
    eps = dkw_epsilon(n, alpha)
    p = (np.arange(n) + 1) / n if qs is None else np.asarray(qs, dtype=float)
    lo = np.clip(_order_index(n, p - eps), 0, n - 1)
    hi = np.clip(_order_index(n, p + eps), 0, n - 1)
    return x[lo], x[hi]


def quantile_bands(
    values: Sequence[float], qs: Sequence[float] = QUANTILES, alpha: float = 0.05
) -> list[dict]:
    """Every quantile q's estimate F_n^{-1}(q) and its simultaneous (1 - alpha) DKW bounds
    (``quantile_band``'s, None where the band is unbounded)."""
    x = np.sort(np.asarray(values, dtype=float))
    eps = dkw_epsilon(len(x), alpha)
    lower, upper = quantile_band(x, alpha, qs)
    return [
        {
            "q": q,
            "estimate": empirical_quantile(x, q),
            "lower": float(lo) if q - eps > 0 else None,
            "upper": float(hi) if q + eps <= 1 else None,
        }
        for q, lo, hi in zip(qs, lower, upper, strict=True)
    ]


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (1 - alpha) binomial interval for a proportion observed as k of n."""
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method="exact")
    return float(ci.low), float(ci.high)


def sup_distance(sample: Sequence[float], population: Sequence[float]) -> float:
    """sup_x |F_n(x) - F(x)| (Kolmogorov's statistic; both CDFs are step functions, so their
    values at every jump and just below it are all the points that matter)."""
    xs = np.sort(np.asarray(sample, dtype=float))
    pop = np.sort(np.asarray(population, dtype=float))
    pts = np.unique(np.concatenate([pop, xs]))
    return max(
        float(
            np.max(
                np.abs(
                    np.searchsorted(pop, pts, side=side) / len(pop)
                    - np.searchsorted(xs, pts, side=side) / len(xs)
                )
            )
        )
        for side in ("right", "left")  # F(x) and F(x-)
    )


def band_contains(sample: Sequence[float], population: Sequence[float], alpha: float) -> bool:
    """Whether the sample's (1 - alpha) DKW band holds the population's CDF everywhere."""
    return sup_distance(sample, population) <= dkw_epsilon(len(sample), alpha) + _ROUNDING


_ROUNDING = 1e-12  # a distance "equal" to eps up to float rounding is inside the band


def band_coverage(
    population: Sequence[float], samples: Sequence[Sequence[int]], alpha: float = 0.05
) -> dict:
    """How often a sample's (1 - alpha) DKW band holds the population's CDF everywhere:
    ``samples`` are index arrays into ``population``, all of one size n. Returns ``eps`` (the
    band's half-width), ``distances`` (Kolmogorov's sup|F_n - F| of each sample) and
    ``covered`` (the fraction of samples whose band holds F, as ``band_contains`` judges)."""
    sizes = sorted({len(s) for s in samples})
    if len(sizes) != 1:
        raise ValueError(f"samples of sizes {sizes}: the coverage of one n at a time")
    pop = np.asarray(population, dtype=float)
    eps = dkw_epsilon(sizes[0], alpha)
    dist = [sup_distance(pop[np.asarray(s)], pop) for s in samples]
    covered = float(np.mean([d <= eps + _ROUNDING for d in dist]))
    return {"eps": eps, "distances": dist, "covered": covered}


# --- over seeds, ranks, the baseline, the pick --------------------------------------------------
def mean_ci(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval over seeds (0 for one value)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), 0.0
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(half)


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's rho and its p-value over the pairs where neither is NaN; (nan, nan) with
    fewer than 3 such pairs or a constant x (no ranking to correlate)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    if ok.sum() <= 2 or np.ptp(x[ok]) == 0:
        return float("nan"), float("nan")
    rho, p = spearmanr(x[ok], y[ok])
    return float(rho), float(p)


def reaches_baseline(accuracy: Sequence[float] | np.ndarray, baseline: float) -> np.ndarray:
    """Which accuracies reach the baseline (at or above it); ``.sum()`` counts them."""
    return np.asarray(accuracy, dtype=float) >= baseline


def percent_below(values: Sequence[float] | np.ndarray, x: float) -> float:
    """The percentage of ``values`` strictly below ``x``: where x ranks among them."""
    return float((np.asarray(values, dtype=float) < x).mean() * 100)


def pick_on_validation(validation: Mapping[int, float]) -> int:
    """The combination with the best validation accuracy; ties go to the lowest index."""
    return max(validation, key=lambda c: (validation[c], -c))


def by_combination(rows: list[dict]) -> dict[int, list[dict]]:
    """The rows of each combination (one per seed), in combination order."""
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["combination"], []).append(r)
    return dict(sorted(groups.items()))


def combination_means(groups: dict[int, list[dict]], key: str) -> np.ndarray:
    """Per combination, the mean over seeds of ``key`` (None as NaN; lists elementwise)."""
    values = [[np.nan if r[key] is None else r[key] for r in rs] for rs in groups.values()]
    return np.array([np.mean(v, axis=0) for v in values])


def accuracy_summary(rows: list[dict]) -> dict:
    """Best / median / worst recombined accuracy against the baseline, how many reach it, and
    Spearman's rho of cut fraction against accuracy (per combination, averaged over seeds)."""
    groups = by_combination(rows)
    acc, cut = combination_means(groups, "accuracy"), combination_means(groups, "cut_fraction")
    base = float(np.mean([r["baseline_accuracy"] for r in rows]))
    rho, p = spearman(cut, acc)
    ens = [r["ensemble_accuracy"] for r in rows if "ensemble_accuracy" in r]
    return {
        "combinations": len(acc),
        "seeds": max(len(rs) for rs in groups.values()),
        "baseline": base,
        "pretrained": float(np.mean([r.get("pretrained_accuracy", np.nan) for r in rows])),
        "best": float(acc.max()),
        "median": float(np.median(acc)),
        "worst": float(acc.min()),
        "reached_baseline": int(reaches_baseline(acc, base).sum()),
        "mean_piece": float(np.mean([np.mean(r["piece_accuracies"]) for r in rows])),
        "mean_ensemble": float(np.mean(ens)) if ens else None,
        "spearman_cut_vs_accuracy": rho,
        "spearman_p": p,
    }


# --- what a results file says: its rows, and the whole space ------------------------------------
def row_counts(keys: list[tuple[int, int]], seeds: list[int], expected: int | None = None) -> dict:
    """Rows and distinct (seed, combination) ``keys``; with ``expected`` combinations (per seed),
    the rows expected (combinations x ``seeds``), missing and extra (outside [0, expected))."""
    out = {
        "rows": len(keys),
        "seeds": seeds,
        "combinations": len({c for _, c in keys}),
        "distinct_rows": len(set(keys)),
        "duplicates": len(keys) - len(set(keys)),
    }
    if expected is not None:
        if expected < 0:
            raise ValueError(f"--expected {expected} must be >= 0")
        distinct = set(keys)
        inside = {k for k in distinct if k[0] in seeds and 0 <= k[1] < expected}
        n_seeds = max(1, len(seeds))  # an empty file still owes one seed's rows
        out["expected_rows"] = expected * n_seeds
        out["missing"] = expected * n_seeds - len(inside)
        out["extra"] = len(distinct) - len(inside)
    return out


def describe_row_counts(s: dict) -> str:
    """One human line for ``row_counts``' dict."""
    text = (
        f"{s['rows']} rows: {s['combinations']} combinations x {len(s['seeds'])} seed(s) "
        f"{s['seeds']}, {s['duplicates']} duplicated"
    )
    if "expected_rows" in s:
        text += (
            f"; expected {s['expected_rows']} rows, {s['missing']} missing, "
            f"{s['extra']} extra (combination outside the expected range or another seed)"
        )
    return text


def space_summary(rows: list[dict], alpha: float = 0.05) -> dict:
    """What the rows say about the whole combination space, averaged over seeds per
    combination: the test-accuracy quantiles (exact for a full enumeration; with a DKW band for
    a uniform sample; none for a prefix or shard, which is not a sample), the fraction reaching
    the baseline with its Clopper-Pearson interval, and with validation data the combination
    picked on validation (and a search's result) with its test accuracy."""
    from .combinations import Space  # scipy-free callers of this module skip its imports

    if not rows:
        raise ValueError("no rows to summarise")
    cfg = rows[0].get("config") or {}
    split = cfg.get("split", {})
    strategy = split.get("strategy", rows[0].get("strategy"))
    by_c = by_combination(rows)

    def mean(rs: list[dict], key: str) -> float:
        return sum(r[key] for r in rs) / len(rs)

    acc = sorted(mean(rs, "accuracy") for rs in by_c.values())
    base = mean(rows, "baseline_accuracy")
    n = len(acc)
    count = None
    if strategy in ("exhaustive", "sample", "search") and "model" in cfg:
        count = Space(cfg["model"]["hidden"], split["groups"], split["variant"]).count
    if strategy == "exhaustive":
        kind = "full enumeration" if n == count and set(by_c) == set(range(n)) else "partial"
    else:
        kind = {"sample": "uniform sample", "search": "search"}.get(strategy, strategy)
    out: dict[str, Any] = {
        "kind": kind,
        "combinations": n,
        "space": None if count is None else exact_index(count),
    }
    k = int(reaches_baseline(acc, base).sum())
    reached = {"k": k, "n": n, "fraction": k / n, "baseline": base}
    if kind == "full enumeration":
        bands = quantile_bands(acc, alpha=alpha)
        for b in bands:  # the population itself: the quantiles are exact
            b["lower"] = b["upper"] = b["estimate"]
        out["quantiles"] = bands
        reached["interval"] = [k / n, k / n]
    elif kind == "uniform sample":
        out["quantiles"] = quantile_bands(acc, alpha=alpha)
        reached["interval"] = list(clopper_pearson(k, n, alpha))
    else:
        out["note"] = "not a uniform sample of the space: no statement about the whole space"
    out["alpha"] = alpha
    out["at_or_above_baseline"] = reached
    out["max_test_accuracy"] = acc[-1]  # a maximum over test scores: optimistic as a pick
    if all("validation_accuracy" in r for r in rows):
        pick = pick_on_validation({c: mean(rs, "validation_accuracy") for c, rs in by_c.items()})
        out["picked_on_validation"] = {
            "combination": pick,
            "validation_accuracy": mean(by_c[pick], "validation_accuracy"),
            "test_accuracy": mean(by_c[pick], "accuracy"),
        }
    if strategy == "search":
        last = max(rows, key=lambda r: r["combination"])
        best = by_c[last["search"]["best"]]
        out["search_result"] = {
            "combination": best[0]["combination"],
            "index": best[0].get("index"),
            "validation_accuracy": mean(best, "validation_accuracy"),
            "test_accuracy": mean(best, "accuracy"),
        }
    return out


def describe_space_summary(d: dict) -> str:
    """Human lines for ``space_summary``'s dict."""
    pct = 100 * (1 - d["alpha"])
    lines = [f"{d['kind']}: {d['combinations']} combinations of {d['space'] or '?'}"]

    def f(v: float | None) -> str:
        return "unbounded" if v is None else f"{100 * v:.1f}%"

    for b in d.get("quantiles", []):
        lo, hi = f(b["lower"]), f(b["upper"])
        band = "" if b["lower"] == b["upper"] else f"  ({pct:.0f}% band {lo} .. {hi})"
        lines.append(f"  q{round(100 * b['q']):02d} test accuracy {f(b['estimate'])}{band}")
    r = d["at_or_above_baseline"]
    text = f"  at or above the baseline ({100 * r['baseline']:.1f}%): {r['k']} of {r['n']}"
    if "interval" in r and d["kind"] == "uniform sample":
        lo, hi = r["interval"]
        text += f"; of the space {100 * lo:.2f}% .. {100 * hi:.2f}% (Clopper-Pearson {pct:.0f}%)"
    lines.append(text)
    if d.get("note"):
        lines.append(f"  {d['note']}")
    for key in ("picked_on_validation", "search_result"):
        if key in d:
            p = d[key]
            lines.append(
                f"  {key.replace('_', ' ')}: combination {p['combination']}, validation "
                f"{100 * p['validation_accuracy']:.1f}%, test {100 * p['test_accuracy']:.1f}%"
            )
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A GitHub markdown table: ``align`` a letter per column, "l" (default) or "r"; cells are
    written with ``str`` (format numbers before). Lines joined by newlines, none at the end."""
    align = align or "l" * len(header)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align={align!r} needs an 'l' or 'r' per column of {list(header)}")
    rule = ["---:" if a == "r" else "---" for a in align]
    body = [list(map(str, r)) for r in rows]
    bad = [r for r in body if len(r) != len(header)]
    if bad:
        raise ValueError(f"a row of {len(bad[0])} cells {bad[0]} under {len(header)} columns")
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [list(header), rule, *body])
