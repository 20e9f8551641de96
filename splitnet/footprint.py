"""What a net needs in memory, checked before anything is allocated.

A run of any command holds at least the whole net and its gradient, in float32 (4 bytes)::

    n(theta) = sum_l (h_{l-1} + 1) h_l          sizes [h_0 = d_in, h_1 .. h_L, h_{L+1} = classes]
    need    >= 2 * 4 * n(theta)  bytes          (weights + gradients; pieces, momentum and
                                                  activations come on top)

It is a lower bound on purpose: a config refused by it cannot run on this machine, and no config
that could run is refused. "Available" is the kernel's MemAvailable (what can be allocated
without swapping), or the physical memory where /proc/meminfo is missing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

FLOAT_BYTES = 4
COPIES = 2  # the net's weights and its gradient


def n_parameters(sizes: Sequence[int]) -> int:
    """Weights and biases of an MLP of ``sizes`` (exact; Python ints, no overflow)."""
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def least_bytes(sizes: Sequence[int]) -> int:
    """The lower bound above: 2 * 4 * n(theta)."""
    return COPIES * FLOAT_BYTES * n_parameters(sizes)


def available_bytes() -> int:
    """What this machine can allocate now (MemAvailable), else its physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_fits(sizes: Sequence[int], key: str = "model.hidden", available: int | None = None):
    """Refuse a net that cannot fit (ValueError naming ``key``, the estimate and what is free)."""
    sizes = [int(s) for s in sizes]
    need = least_bytes(sizes)
    have = available_bytes() if available is None else available
    if need > have:
        raise ValueError(
            f"{key}={sizes[1:-1]} needs at least {gib(need)} (a net of {n_parameters(sizes):,} "
            f"parameters, sizes {sizes}: weights and gradients in float32) but this machine has "
            f"{gib(have)} available: choose narrower layers"
        )
