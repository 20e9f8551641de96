"""Training and evaluation loops: plain minibatch SGD, explicit generators, no global RNG.

Seeds are derived, never drawn: ``derive_seed(seed, "piece", combination, *path)`` is the same
number on every rank and every run, so results depend on (seed, combination, path) only.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import nn


def derive_seed(*parts) -> int:
    """A 63-bit seed from a tuple of ints and strings (stable across processes and machines)."""
    words = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def batch_order(n: int, epochs: int, seed: int) -> list[torch.Tensor]:
    """One permutation of range(n) per epoch, from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=g) for _ in range(epochs)]


def train(model: nn.Module, X: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
          lr: float, seed: int, momentum: float = 0.0) -> list[float]:
    """Minibatch SGD on softmax cross-entropy; returns the mean loss of every epoch."""
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    losses = []
    model.train()
    for perm in batch_order(len(Xt), epochs, seed):
        total = 0.0
        for start in range(0, len(perm), batch_size):
            idx = perm[start:start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(perm))
    model.eval()
    return losses


@torch.no_grad()
def accuracy(model: nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    pred = model(torch.as_tensor(X)).argmax(1).numpy()
    return float((pred == np.asarray(y)).mean())
