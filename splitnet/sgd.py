"""The one SGD loop and the one accuracy. Everything that trains a net calls ``sgd``; everything
that scores one calls ``accuracy`` (or its stacked twins in ``evaluation``).

    for idx in batches:                     # minibatch index tensors, in order
        g = d CE(model(X[idx]), y[idx]) / d theta
        g = g * mask                        # grad_masks: stitching, pruned weights stay 0
        buf = momentum * buf + g            # first step buf = g (torch.optim.SGD)
        theta -= lr * buf

The minibatch stream of a seed is ``epochs`` seeded permutations of range(n) cut into batches
(``minibatches``), so a run that stops after T steps and one that is cut into rounds of E steps
see the same data. ``batched.train_stack`` is this loop's vectorised twin (tested against it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .partition import ceil_div


def batch_order(n: int, epochs: int, seed: int) -> list[torch.Tensor]:
    """One permutation of range(n) per epoch, from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=g) for _ in range(epochs)]


def steps_per_epoch(n: int, batch_size: int) -> int:
    return ceil_div(n, batch_size)


def check_batchnorm_batches(n: int, batch_size: int, what: str) -> None:
    """A BatchNorm net cannot take a train-mode step on one sample: refuse a stream of ``n``
    samples whose last minibatch would hold one (before any training)."""
    if n % batch_size == 1 or n < 2:
        raise ValueError(
            f"train.batch_size={batch_size} leaves a minibatch of 1 of the {n} {what} samples; "
            "model.norm='batch' needs >= 2 per minibatch: choose another batch size"
        )


def minibatches(
    n: int, batch_size: int, seed: int, *, epochs: int | None = None, steps: int | None = None
) -> list[torch.Tensor]:
    """The stream of ``seed``: ``epochs`` epochs of ``batch_order``, or its first ``steps``."""
    if (epochs is None) == (steps is None):
        raise ValueError(f"give exactly one of epochs={epochs} and steps={steps}")
    if epochs is None:
        epochs = max(1, ceil_div(steps, steps_per_epoch(n, batch_size)))
    stream = [
        perm[s : s + batch_size]
        for perm in batch_order(n, epochs, seed)
        for s in range(0, n, batch_size)
    ]
    return stream if steps is None else stream[:steps]


@torch.no_grad()
def _sgd_step(
    params: list[nn.Parameter], bufs: list[torch.Tensor | None], lr: float, momentum: float
) -> None:
    """One step of ``torch.optim.SGD(params, lr, momentum)`` (no dampening, weight decay or
    Nesterov), op for op as its single-tensor path: buf = grad on the first step, then
    buf = momentum * buf + grad; p -= lr * buf. ``bufs`` is updated in place
    (tests/test_sgd.py: bit for bit against the optimizer itself)."""
    for i, p in enumerate(params):
        if p.grad is None:
            continue
        grad = p.grad
        if momentum != 0:
            if bufs[i] is None:
                bufs[i] = torch.clone(grad).detach()
            else:
                bufs[i].mul_(momentum).add_(grad, alpha=1)
            grad = bufs[i]
        p.add_(grad, alpha=-lr)


@dataclass
class SGDRun:
    """What ``sgd`` leaves besides the trained model: the losses and the momentum buffers."""

    losses: list[float]  # the mean loss of every step
    buffers: list[torch.Tensor] | None  # momentum buffers after the last step (None: momentum 0)


def sgd(
    model: nn.Module,
    X: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    batches: Iterable[torch.Tensor],
    *,
    lr: float,
    momentum: float = 0.0,
    buffers: Sequence[torch.Tensor] | None = None,
    grad_masks: Sequence[torch.Tensor | None] | None = None,
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
) -> SGDRun:
    """Minibatch steps on softmax cross-entropy, in place; ``model`` is left in eval mode.

    ``buffers``: momentum buffers to start from (a zero buffer gives the fresh optimizer's first
    step exactly). ``grad_masks``: one per parameter (None = unmasked), multiplied into the
    gradient before the step. ``optimizer``: another optimizer factory (e.g. Adam) instead.
    """
    params = list(model.parameters())
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    if grad_masks is not None and len(grad_masks) != len(params):
        raise ValueError(f"{len(grad_masks)} gradient masks for {len(params)} parameters")
    if buffers is not None and len(buffers) != len(params):
        raise ValueError(f"{len(buffers)} momentum buffers for {len(params)} parameters")
    if buffers is not None and optimizer is not None:
        raise ValueError("buffers are plain SGD's momentum buffers: give them without optimizer")
    opt = optimizer(params) if optimizer is not None else None
    # plain SGD: torch.optim.SGD's step written out (below) instead of constructed: the first
    # torch optimizer of a process imports torch._dynamo, about 2 s of every run's start-up
    bufs: list[torch.Tensor | None] = [None] * len(params)
    if buffers is not None and momentum > 0:
        bufs = [b.detach().clone() for b in buffers]
    losses = []
    model.train()
    for idx in batches:
        for p in params:
            p.grad = None
        loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
        loss.backward()
        if grad_masks is not None:
            for p, mask in zip(params, grad_masks, strict=True):
                if mask is not None:
                    p.grad.mul_(mask)
        if opt is not None:
            opt.step()
        else:
            _sgd_step(params, bufs, lr, momentum)
        losses.append(loss.item())
    model.eval()
    out = None
    if momentum > 0 and optimizer is None:  # no step taken: the buffers that came in, or zeros
        out = [
            b.detach().clone() if b is not None else torch.zeros_like(p.detach())
            for p, b in zip(params, bufs, strict=True)
        ]
    return SGDRun(losses, out)


def train(
    model: nn.Module,
    X: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    momentum: float = 0.0,
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
) -> list[float]:
    """``epochs`` epochs of ``sgd`` on the stream of ``seed``; returns each epoch's mean loss."""
    n = len(X)
    batches = minibatches(n, batch_size, seed, epochs=epochs) if epochs else []
    run = sgd(model, X, y, batches, lr=lr, momentum=momentum, optimizer=optimizer)
    per_epoch = steps_per_epoch(n, batch_size)
    sizes = [len(b) for b in batches]
    return [
        sum(
            loss * s
            for loss, s in zip(run.losses[e : e + per_epoch], sizes[e : e + per_epoch], strict=True)
        )
        / n
        for e in range(0, len(batches), per_epoch)
    ]


def argmax_accuracies(logits: torch.Tensor, y: torch.Tensor | np.ndarray) -> list[float]:
    """The accuracy of every (n, C) slice of ``logits`` (..., n, C), flattened over the leading
    dims: mean_i [argmax_j z[i, j] = y_i] as hits / n, an exact count over an exact count (the
    float numpy's mean of the hit mask gives). The one argmax-compare of the package."""
    y = torch.as_tensor(np.asarray(y))
    hits = (logits.argmax(-1) == y).sum(-1).reshape(-1)
    n = len(y)
    return [h / n if n else float("nan") for h in hits.tolist()]


@torch.no_grad()
def accuracy(
    model: Callable[[torch.Tensor], torch.Tensor],
    X: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
) -> float:
    """Fraction of rows whose argmax logit is the label; ``model`` is a net (put in eval mode)
    or any logit map; ``X`` and ``y`` are tensors or numpy arrays. The one accuracy of a net
    (``evaluation`` holds its stacked twins)."""
    if isinstance(model, nn.Module):
        model.eval()
    return argmax_accuracies(model(torch.as_tensor(X)), y)[0]
