"""What a uniform sample of n combinations says about the whole space, distribution-free.

Dvoretzky-Kiefer-Wolfowitz (Massart's constant): for n i.i.d. draws with empirical CDF F_n,

    P( sup_x |F_n(x) - F(x)| > eps ) <= 2 exp(-2 n eps^2),   eps = sqrt(ln(2 / alpha) / (2 n))

so [F_n - eps, F_n + eps] holds the true CDF everywhere with probability >= 1 - alpha. A
sample *without* replacement from a finite space is less variable than i.i.d. draws (Hoeffding
1963, section 6), so the band stays valid, conservatively. Inverting it bounds every quantile:

    Q(q) in [ F_n^{-1}(q - eps), F_n^{-1}(q + eps) ],   F_n^{-1}(p) = x_(ceil(n p))

(unbounded below when q - eps <= 0, above when q + eps > 1). The fraction of combinations at or
above the baseline, k of n, gets the exact binomial (Clopper-Pearson) interval from scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import binomtest

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


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


def empirical_quantile(x_sorted: np.ndarray, p: float) -> float | None:
    """F_n^{-1}(p) = x_(ceil(n p)) for p in (0, 1]; None outside (the band is unbounded)."""
    if not 0 < p <= 1:
        return None
    return float(x_sorted[max(0, math.ceil(len(x_sorted) * p - 1e-12) - 1)])


def quantile_bands(
    values: Sequence[float], qs: Sequence[float] = QUANTILES, alpha: float = 0.05
) -> list[dict]:
    """Every quantile q's estimate F_n^{-1}(q) and its simultaneous (1 - alpha) DKW bounds."""
    x = np.sort(np.asarray(values, dtype=float))
    eps = dkw_epsilon(len(x), alpha)
    return [
        {
            "q": q,
            "estimate": empirical_quantile(x, q),
            "lower": empirical_quantile(x, q - eps),
            "upper": empirical_quantile(x, q + eps) if q + eps <= 1 else None,
        }
        for q in qs
    ]


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (1 - alpha) binomial interval for a proportion observed as k of n."""
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
    return sup_distance(sample, population) <= dkw_epsilon(len(sample), alpha) + 1e-12
