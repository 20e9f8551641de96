"""Recombination options beside the plain average: stitch, shared rescale, and the ensemble.

For a split and its paths P (one piece per path), let c(W_m[i, j]) be the number of pieces that
hold entry (i, j) of Linear m and n(i) the number that hold its row neuron i (its bias count).

    stitch            after recombining, fine-tune only the entries no piece trained (c = 0: the
                      cross-group hidden-to-hidden weights of ``straight``) and, optionally, the
                      whole output layer; every other parameter stays bit-for-bit unchanged (the
                      gradient is masked, plain SGD, no weight decay).
    shared rescale    every neuron's pre-activation becomes the MEAN of the pre-activations of the
                      pieces that hold it, each piece seeing its own inputs:
                          z_i = (1/n(i)) sum_{p holds i} (sum_{j in p} W^p_ij a_j + b^p_i)
                              = sum_j (c_ij / n(i)) Wbar_ij a_j + bbar_i
                      with Wbar, bbar the plain averages of ``subnet.recombine``. So a held weight
                      is scaled by c_ij / n(i); unheld entries (c = 0) follow ``unheld`` unscaled.
                      First layer: c = n (a piece holds all inputs), factor 1. Output layer:
                      n = |P|, c = S_g = the pieces whose last group is g, factor S_g / |P|
                      (straight: 1/k, the existing ``output="rescale"``). Hidden layer l >= 2 of
                      alternating / all-paths: neuron g is fed by S blocks, one per piece through
                      it, each trained by one piece: factor 1/S (plain ``sum`` adds S
                      contributions that were each trained to produce the whole pre-activation).
                      With ``unheld="zero"`` and straight paths the recombined logits equal the
                      mean of the pieces' logits exactly.
    ensemble          sum_p piece_p(x): the logit-sum of the pieces (an upper reference; it
                      needs every piece at inference time, so it is not one net of the
                      original size).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .model import MLP
from .subnet import piece_neurons, recombine
from .train import batch_order


def held_counts(net: MLP, split, paths) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(c for the weight, n for the bias) of every Linear: how many pieces hold each entry."""
    lins = net.linears
    out = [(torch.zeros(l.weight.shape, dtype=torch.int64),
            torch.zeros(l.bias.shape, dtype=torch.int64)) for l in lins]
    for path in paths:
        S = [torch.as_tensor(s) for s in piece_neurons(split, path)]
        for m, lin in enumerate(lins):
            rows = S[m] if m < len(lins) - 1 else torch.arange(lin.out_features)
            cols = S[m - 1] if m > 0 else torch.arange(lin.in_features)
            out[m][0][rows[:, None], cols[None, :]] += 1
            out[m][1][rows] += 1
    return out


def stitch_masks(net: MLP, split, paths, *, output: bool = True) -> list[tuple[torch.Tensor, ...]]:
    """Float (0/1) masks of the entries ``stitch`` trains: unheld ones, plus the output layer."""
    masks = []
    for m, (cw, cb) in enumerate(held_counts(net, split, paths)):
        last = output and m == len(net.linears) - 1
        masks.append((torch.ones(cw.shape) if last else (cw == 0).float(),
                      torch.ones(cb.shape) if last else (cb == 0).float()))
    return masks


def stitch(net: MLP, split, paths, data, *, steps: int, lr: float, seed: int,
           batch_size: int = 32, output: bool = True) -> MLP:
    """A copy of the recombined ``net`` after ``steps`` SGD steps on only the stitch entries.

    ``data = (X, y)`` (the remaining data); minibatches follow ``batch_order(n, ., seed)``. Trained:
    entries held by no piece (cross-group weights under ``straight``; none under alternating /
    all-paths) and, if ``output``, the output layer's weight and bias. All else is unchanged.
    """
    if steps < 0:
        raise ValueError(f"stitch steps={steps} must be >= 0")
    if batch_size < 1:
        raise ValueError(f"stitch batch_size={batch_size} must be >= 1")
    net = copy.deepcopy(net)
    if steps == 0:
        return net
    X, y = (torch.as_tensor(a) for a in data)
    masks = [t for pair in stitch_masks(net, split, paths, output=output) for t in pair]
    params = [p for lin in net.linears for p in (lin.weight, lin.bias)]
    opt = torch.optim.SGD(params, lr=lr)  # no momentum, no decay: a zero gradient moves nothing
    per_epoch = -(-len(X) // batch_size)
    perms = batch_order(len(X), -(-steps // per_epoch), seed)
    batches = [perm[s:s + batch_size] for perm in perms for s in range(0, len(perm), batch_size)]
    net.train()
    for idx in batches[:steps]:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
        for p, mask in zip(params, masks, strict=True):
            p.grad.mul_(mask)
        opt.step()
    net.eval()
    return net


def recombine_shared_rescale(net: MLP, split, paths, pieces, *, unheld: str = "zero") -> MLP:
    """``subnet.recombine`` (averages), then each held weight scaled by c_ij / n(i).

    Every neuron's pre-activation is then the mean over the pieces that hold it of what that
    piece would compute from the recombined net's activations (see the module docstring).
    """
    out = recombine(net, split, paths, pieces, unheld=unheld, output="sum")
    with torch.no_grad():
        for lin, (cw, cb) in zip(out.linears, held_counts(net, split, paths), strict=True):
            held = cw > 0
            factor = torch.ones_like(lin.weight)
            factor[held] = (cw.double() / cb.double().clamp(min=1)[:, None])[held].float()
            lin.weight.mul_(factor)
    return out


@torch.no_grad()
def ensemble_logits(pieces, x) -> torch.Tensor:
    """sum_p piece_p(x): the logit-sum ensemble, (n, d_out)."""
    x = torch.as_tensor(x)
    out = None
    for piece in pieces:
        piece.eval()
        z = piece(x)
        out = z if out is None else out + z
    return out


def ensemble_accuracy(pieces, X, y) -> float:
    pred = ensemble_logits(pieces, X).argmax(1).numpy()
    return float((pred == np.asarray(y)).mean())
