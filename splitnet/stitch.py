"""Stitching: after recombining, fine-tune only what no piece trained.

For a split and its paths, the entries of every Linear held by no piece (c = 0 in
``pieces.held_counts``: the cross-group hidden-to-hidden weights of ``straight``; none under
alternating / all-paths) and, with ``output=True``, the whole output layer take ``steps`` plain
SGD steps (``sgd.sgd`` with gradient masks: no momentum, no decay, so every other parameter stays
bit-for-bit unchanged). Minibatches follow ``sgd.minibatches(n, batch_size, seed)``. A
BatchNorm net's g and beta belong to held neurons and stay as they are (its running statistics
move with the stitch steps, as in any train-mode step).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from .model import MLP
from .pieces import GroupPath, held_counts, layout_of
from .sgd import minibatches, sgd
from .split import Split


def stitch_masks(
    net: MLP, split: Split, paths: Sequence[GroupPath], *, output: bool = True
) -> list[torch.Tensor]:
    """Float 0/1 masks, one per parameter (``net.parameters()`` order): the entries trained."""
    masks = []
    counts = held_counts(net, split, paths)
    for e in layout_of(net):
        if not e.param:
            continue
        cw, cb = counts[e.linear]
        last = output and e.linear == len(counts) - 1
        c = cw if e.kind == "weight" else cb
        if e.kind in ("gamma", "beta"):
            masks.append(torch.zeros(c.shape))
        else:
            masks.append(torch.ones(c.shape) if last else torch.as_tensor(c == 0).float())
    return masks


def stitch(
    net: MLP,
    split: Split,
    paths: Sequence[GroupPath],
    data: tuple[np.ndarray, np.ndarray],
    *,
    steps: int,
    lr: float,
    seed: int,
    batch_size: int = 32,
    output: bool = True,
) -> MLP:
    """A copy of the recombined ``net`` after ``steps`` SGD steps on only the stitch entries."""
    if steps < 0:
        raise ValueError(f"stitch steps={steps} must be >= 0")
    if batch_size < 1:
        raise ValueError(f"stitch batch_size={batch_size} must be >= 1")
    net = copy.deepcopy(net)
    if steps == 0:
        return net
    X, y = data
    sgd(
        net,
        X,
        y,
        minibatches(len(X), batch_size, seed, steps=steps),
        lr=lr,
        grad_masks=stitch_masks(net, split, paths, output=output),
    )
    return net
