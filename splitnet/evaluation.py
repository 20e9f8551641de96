"""Accuracy of many nets at once: the recombined nets, pieces and ensembles of a chunk.

Nets of equal layer shapes are stacked, W_m: (P, out, in), and run as one computation::

    z_1 = X W_1^T + b_1          (P, n, h_1)    one batched GEMM over the stack
    z_m = f(z_{m-1}) W_m^T + b_m                 (baddbmm, as ``pieces.forward`` per net)
    accuracy_p = mean_i [argmax_j z_{L+1}[p, i, j] = y_i]

The ensemble of a combination is sum_p piece_p(x) in path order (``pieces.ensemble_logits``).
These are the stacked twins of ``sgd.accuracy``, speed only: every accuracy is its
``sgd.argmax_accuracies`` of the logits, so the numbers equal the per-net evaluation
(tests/test_evaluation.py compares every row of the default experiment).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from .model import activation_fn
from .pieces import Params
from .sgd import argmax_accuracies


@torch.no_grad()
def stack_logits(stack: Params, activation: str, X: torch.Tensor) -> torch.Tensor:
    """The logits (P, n, C) of a stack [W_1, b_1, ...], W_m: (P, out, in), b_m: (P, out)."""
    f = activation_fn(activation)
    X = torch.as_tensor(X)
    n_layers = len(stack) // 2
    z = X.expand(len(stack[0]), *X.shape)  # (P, n, d), no copy
    for m in range(n_layers):
        z = torch.baddbmm(stack[2 * m + 1].unsqueeze(1), z, stack[2 * m].transpose(1, 2))
        if m < n_layers - 1:
            z = f(z)
    return z


@torch.no_grad()
def _logits_by_shape(
    nets: Sequence[Params], activation: str, X: torch.Tensor
) -> list[torch.Tensor]:
    """The logits (n, C) of every net in ``nets``, computed a stack of equal shapes at a time."""
    by_shape: dict[tuple, list[int]] = defaultdict(list)
    for i, p in enumerate(nets):
        by_shape[_shape(p)].append(i)
    out: list = [None] * len(nets)
    for members in by_shape.values():
        stack = [torch.stack([nets[i][t] for i in members]) for t in range(len(nets[members[0]]))]
        z = stack_logits(stack, activation, X)
        for j, i in enumerate(members):
            out[i] = z[j]
    return out


def stack_accuracies(stack: Params, activation: str, X, y) -> list[float]:
    """The accuracy of every net of a stack (``stack_logits``) in one pass."""
    return argmax_accuracies(stack_logits(stack, activation, X), y)


def accuracies(nets: Sequence[Params], activation: str, X, y) -> list[float]:
    """The accuracy of every net of ``nets`` (plain ``Params``), a stack of equal shapes at a
    time."""
    return [argmax_accuracies(z, y)[0] for z in _logits_by_shape(nets, activation, X)]


def piece_and_ensemble_accuracies(
    pieces: Sequence[Sequence[Params]], activation: str, X, y
) -> list[tuple[list[float], float]]:
    """Per combination (its pieces, in path order): the pieces' accuracies and the ensemble's."""
    flat = [p for ps in pieces for p in ps]
    k = len(pieces[0]) if pieces else 0
    if flat and all(len(ps) == k for ps in pieces) and len({_shape(p) for p in flat}) == 1:
        # one stack, combination-major: (combinations, k, n, C); the ensemble adds the pieces'
        # logits in path order, as the per-combination sum below
        z = stack_logits([torch.stack(ts) for ts in zip(*flat, strict=True)], activation, X)
        z = z.view(len(pieces), k, *z.shape[1:])
        total = z[:, 0]
        for q in range(1, k):
            total = total + z[:, q]
        acc = argmax_accuracies(z, y)  # combination-major, as ``flat``
        ens = argmax_accuracies(total, y)
        return [(acc[i * k : (i + 1) * k], ens[i]) for i in range(len(pieces))]
    logits = _logits_by_shape(flat, activation, X)
    out, at = [], 0
    for ps in pieces:
        mine = logits[at : at + len(ps)]
        at += len(ps)
        total = mine[0]
        for z in mine[1:]:
            total = total + z
        accs = [argmax_accuracies(z, y)[0] for z in mine]
        out.append((accs, argmax_accuracies(total, y)[0]))
    return out


def _shape(params: Params) -> tuple:
    return tuple(t.shape for t in params)
