"""Threshold gradient sparsification (the progress report's) and its byte accounting.

Every rule acts on one flat float32 vector per rank: all parameters' gradients concatenated in
``model.parameters()`` order, so thresholds are **global** over the whole model, never
per tensor. With residual accumulation on, the vector is ``a = g + r``; off, ``a = g``.
A rule picks the index set S; the rank sends ``(S, a_S)``::

    none     S = {i : all i}                                      (dense; threshold 0)
    std1     S = {i : |a_i| > 1 * sigma(a)}                       (threshold 1 sigma)
    std2     S = {i : |a_i| > 2 * sigma(a)}                       (threshold 2 sigma)
    dynamic  S = {i : |a_i| > tau_t};   tau_0 = sigma(a at the first call),
             tau_{t+1} = mean_{i not in S} |a_i|                 (the report's rule)
    topk     S = the k = max(1, round(f * n)) largest |a_i|       (threshold = min_{i in S} |a_i|)

``sigma(a) = sqrt(mean((a - mean(a))^2))`` is the population standard deviation, centred at
the mean, while the comparison is on the uncentred magnitude |a_i| (gradients are close to
zero-mean, and an uncentred comparison never sends a large constant offset as "small").
Comparisons are strict, so exact zeros are never sent. In the dynamic mean, "not sent"
includes exact zeros; if every entry was sent, tau is kept.

Residual accumulation keeps what was not sent: ``r <- a - sent``, i.e. ``r_S = 0`` and
``r_i = a_i`` elsewhere, so ``sum_t sent_t + r_T = sum_t g_t`` (up to float32 rounding).

Note on ``dynamic``: each unsent |a_i| is at most tau_t, so ``tau_{t+1} <= tau_t``: the
rule can only lower the threshold. Unless the gradients grow, tau decays towards 0 and the
scheme sends ever more; the study shows this honestly instead of patching the rule.

Each rank owns its compressor (and its residual and tau): decisions use only the rank's
local gradient, which is fine because every rank then applies the same exchanged sum.

Bytes: a rank's sparse message is its count (one int32) plus k int32 indices and k float32
values, ``8k + 4`` bytes; the dense gradient is ``4n`` bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

COMPRESSORS = ("none", "std1", "std2", "dynamic", "topk")
INDEX_BYTES = VALUE_BYTES = COUNT_BYTES = 4  # int32 indices, float32 values, int32 count
LINK_BITS_PER_S = 1e9  # the report's 1 Gbit/s link (= 32 M float32 per second)


@dataclass(frozen=True)
class Sparse:
    """What one rank sends: ``indices`` (k,) int32 ascending, ``values`` (k,) float32."""

    indices: np.ndarray
    values: np.ndarray
    threshold: float  # the magnitude the rule compared against (0 for none)
    size: int  # n, length of the dense vector

    @property
    def count(self) -> int:
        return int(self.indices.size)

    @property
    def nbytes(self) -> int:
        return sparse_bytes(self.count)

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.size, np.float32)
        out[self.indices] = self.values
        return out


def sparse_bytes(k: int) -> int:
    """Bytes of a sparse message with k entries: count + indices + values = 8k + 4."""
    return COUNT_BYTES + k * (INDEX_BYTES + VALUE_BYTES)


def dense_bytes(n: int) -> int:
    """Bytes of the dense float32 gradient a rank contributes: 4n."""
    return VALUE_BYTES * n


def ring_allreduce_bytes(n: int, ranks: int) -> float:
    """Bytes each rank sends in a ring allreduce of n float32: 2 (N-1)/N * 4n (= 4n at N=2)."""
    return 2.0 * (ranks - 1) / ranks * dense_bytes(n) if ranks > 1 else 0.0


def wire_seconds(n_bytes: float, bits_per_s: float = LINK_BITS_PER_S) -> float:
    """Time on the wire: bytes * 8 / bandwidth (1 Gbit/s by default)."""
    return 8.0 * n_bytes / bits_per_s


def sigma(a: np.ndarray) -> float:
    """Population standard deviation (centred at the mean), accumulated in float64."""
    return float(np.std(a, dtype=np.float64))


class Compressor:
    """Base: residual bookkeeping; subclasses define ``_select(a) -> (indices, threshold)``."""

    name = "base"

    def __init__(self, size: int, residual: bool = True):
        if size < 1:
            raise ValueError(f"size={size} must be >= 1")
        self.size = int(size)
        self.residual = bool(residual)
        self.r = np.zeros(self.size, np.float32)  # (n,) stays 0 when residual is off

    def compress(self, g: np.ndarray) -> Sparse:
        g = np.asarray(g)
        if g.shape != (self.size,):
            raise ValueError(f"gradient shape {g.shape} != ({self.size},)")
        a = (g + self.r) if self.residual else g.astype(np.float32, copy=True)
        a = a.astype(np.float32, copy=False)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{self.name}: gradient has non-finite entries")
        idx, thr = self._select(a)
        idx = np.sort(idx).astype(np.int32)  # ascending: deterministic order on the wire
        sent = Sparse(idx, a[idx].copy(), float(thr), self.size)
        if self.residual:
            a[idx] = 0.0  # r <- a - sent
            self.r = a
        return sent

    def _select(self, a: np.ndarray) -> tuple[np.ndarray, float]:
        raise NotImplementedError


class NoCompression(Compressor):
    """Every entry sent (the dense reference): a threshold of 0."""

    name = "none"

    def _select(self, a):
        return np.arange(self.size), 0.0


class StdThreshold(Compressor):
    """Send |a_i| > k_sigma * sigma(a)."""

    def __init__(self, size: int, residual: bool = True, k_sigma: float = 1.0):
        super().__init__(size, residual)
        if not k_sigma > 0:
            raise ValueError(f"k_sigma={k_sigma} must be > 0")
        self.k_sigma = float(k_sigma)
        self.name = f"std{k_sigma:g}"

    def _select(self, a):
        thr = self.k_sigma * sigma(a)
        return np.flatnonzero(np.abs(a) > thr), thr


class DynamicThreshold(Compressor):
    """Send |a_i| > tau; then tau <- mean |a_i| over the unsent entries (tau_0 = sigma(a_0))."""

    name = "dynamic"

    def __init__(self, size: int, residual: bool = True, initial: float | None = None):
        super().__init__(size, residual)
        if initial is not None and not initial >= 0:
            raise ValueError(f"initial threshold={initial} must be >= 0")
        self.tau = initial  # None: 1 sigma of the first vector

    def _select(self, a):
        mag = np.abs(a)
        if self.tau is None:
            self.tau = sigma(a)
        thr = self.tau
        sent = mag > thr
        if not sent.all():
            self.tau = float(mag[~sent].mean(dtype=np.float64))
        return np.flatnonzero(sent), thr


class TopK(Compressor):
    """Send the k = max(1, round(fraction * n)) largest |a_i| (Aji & Heafield 2017; DGC)."""

    name = "topk"

    def __init__(self, size: int, residual: bool = True, fraction: float = 0.004):
        super().__init__(size, residual)
        if not 0 < fraction <= 1:
            raise ValueError(f"topk fraction={fraction} must lie in (0, 1]")
        self.fraction = float(fraction)
        self.k = max(1, min(self.size, round(fraction * self.size)))

    def _select(self, a):
        mag = np.abs(a)
        idx = np.argpartition(mag, self.size - self.k)[self.size - self.k :]
        return idx, float(mag[idx].min())


def make_compressor(
    name: str, size: int, residual: bool = True, *, topk_fraction: float = 0.004
) -> Compressor:
    """A compressor by name (one of ``COMPRESSORS``) for flat vectors of ``size`` entries."""
    if name == "none":
        return NoCompression(size, residual)
    if name in ("std1", "std2"):
        return StdThreshold(size, residual, k_sigma=float(name[-1]))
    if name == "dynamic":
        return DynamicThreshold(size, residual)
    if name == "topk":
        return TopK(size, residual, fraction=topk_fraction)
    raise ValueError(f"compressor={name!r} is not one of {', '.join(COMPRESSORS)}")


def sum_sparse(parts: list[tuple[np.ndarray, np.ndarray]], size: int) -> np.ndarray:
    """Sum sparse contributions ``[(indices, values), ...]`` into a dense (size,) float32 vector.

    Contributions are added in list (rank) order, so every rank that calls this with the same
    list gets bitwise the same result. Indices must be unique within one contribution.
    """
    out = np.zeros(size, np.float32)
    for idx, val in parts:
        out[idx] += val  # unique indices per part: fancy += is an exact per-entry add
    return out


def expected_fraction(k_sigma: float) -> float:
    """P(|z| > k sigma) for a zero-mean Gaussian: 0.317 at 1 sigma, 0.0455 at 2 sigma."""
    return math.erfc(k_sigma / math.sqrt(2.0))
