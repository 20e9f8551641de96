"""Pieces: extract the sub-network of a path, and recombine trained pieces into one net.

For a split and a path p = (p_1..p_L), let S_l = {i : split[l][i] = p_l}. The piece keeps all
inputs and outputs and the neurons S_l of every hidden layer:

    W'_1 = W_1[S_1, :]     b'_1 = b_1[S_1]
    W'_l = W_l[S_l, S_{l-1}]  b'_l = b_l[S_l]                    (l = 2..L)
    W'_out = W_out[:, S_L]    b'_out = b_out

Recombination maps every piece parameter back to its place. An entry held by several pieces gets
their mean; an entry held by none keeps its pretrained value (``unheld="pretrained"``) or is
zeroed (``"zero"``). The output layer sums the groups' contributions, logits = sum_g W_out[:, S_g]
a_g + mean(b_out), or with ``output="rescale"`` averages them, W_out / k_L, so a straight split with
zeroed cross-weights is exactly the mean of the pieces' logits.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from .model import MLP


def piece_neurons(split, path) -> list[np.ndarray]:
    """S_l for every hidden layer: the neuron indices the piece keeps."""
    return [np.flatnonzero(np.asarray(a) == g) for a, g in zip(split, path, strict=True)]


def _slices(n_linear: int, neurons: list[np.ndarray]):
    """(row index, column index) into each Linear's weight; None means 'all'."""
    out = []
    for m in range(n_linear):
        rows = neurons[m] if m < n_linear - 1 else None
        cols = neurons[m - 1] if m > 0 else None
        out.append((rows, cols))
    return out


def _take(t: torch.Tensor, rows, cols) -> torch.Tensor:
    if rows is not None:
        t = t[torch.as_tensor(rows)]
    if cols is not None and t.dim() == 2:
        t = t[:, torch.as_tensor(cols)]
    return t


def extract(net: MLP, split, path) -> MLP:
    """The standalone piece of ``net`` for ``path`` (a smaller MLP; a copy, not a view)."""
    neurons = piece_neurons(split, path)
    sizes = [net.sizes[0], *(len(s) for s in neurons), net.sizes[-1]]
    piece = MLP(sizes, net.activation)
    lins = net.linears
    with torch.no_grad():
        for lin, plin, (rows, cols) in zip(lins, piece.linears, _slices(len(lins), neurons),
                                           strict=True):
            plin.weight.copy_(_take(lin.weight, rows, cols))
            plin.bias.copy_(_take(lin.bias, rows, None))
    return piece


def recombine(net: MLP, split, paths, pieces, *, unheld: str = "pretrained",
              output: str = "sum") -> MLP:
    """Assemble trained ``pieces`` (one per path, in order) into a copy of ``net``."""
    if len(paths) != len(pieces):
        raise ValueError(f"{len(paths)} paths but {len(pieces)} pieces")
    if unheld not in ("pretrained", "zero"):
        raise ValueError(f"split.unheld={unheld!r} is not one of pretrained, zero")
    if output not in ("sum", "rescale"):
        raise ValueError(f"split.output={output!r} is not one of sum, rescale")
    lins = net.linears
    orig = [(lin.weight.detach().numpy(), lin.bias.detach().numpy()) for lin in lins]
    # float64 sums: the mean of identical float32 copies is then exactly that value.
    # numpy index sets, not torch indexing: this runs once per combination (thousands of times)
    sums = [(np.zeros(w.shape), np.zeros(b.shape)) for w, b in orig]
    counts = [(np.zeros(w.shape, np.int64), np.zeros(b.shape, np.int64)) for w, b in orig]
    every = [np.arange(n) for n in net.sizes]
    for path, piece in zip(paths, pieces, strict=True):
        neurons = piece_neurons(split, path)
        for m, plin in enumerate(piece.linears):
            rows = neurons[m] if m < len(lins) - 1 else every[m + 1]
            cols = neurons[m - 1] if m > 0 else every[0]
            ix = np.ix_(rows, cols)
            sums[m][0][ix] += plin.weight.detach().numpy()
            counts[m][0][ix] += 1
            sums[m][1][rows] += plin.bias.detach().numpy()
            counts[m][1][rows] += 1
    out = copy.deepcopy(net)
    with torch.no_grad():
        for olin, (w, b), (sw, sb), (cw, cb) in zip(out.linears, orig, sums, counts, strict=True):
            for param, o, s, c in ((olin.weight, w, sw, cw), (olin.bias, b, sb, cb)):
                base = o.copy() if unheld == "pretrained" else np.zeros_like(o)
                held = c > 0
                base[held] = (s[held] / c[held]).astype(o.dtype)
                param.copy_(torch.from_numpy(base))
        if output == "rescale":
            k_last = len(np.unique(np.asarray(split[-1])))
            out.linears[-1].weight.mul_(1.0 / k_last)
    return out


def coverage(net: MLP, split, paths) -> list[np.ndarray]:
    """How many pieces hold each hidden-to-hidden weight: a (h_{l+1}, h_l) array per layer."""
    out = []
    for l in range(len(net.hidden) - 1):
        c = np.zeros((net.hidden[l + 1], net.hidden[l]), dtype=np.int64)
        for path in paths:
            S = piece_neurons(split, path)
            c[np.ix_(S[l + 1], S[l])] += 1
        out.append(c)
    return out


def masked_forward(net: MLP, split, path, x: torch.Tensor) -> torch.Tensor:
    """The full net's forward with every hidden neuron outside the path's groups forced to 0."""
    masks = [torch.as_tensor(np.asarray(a) == g) for a, g in zip(split, path, strict=True)]
    layer = 0
    for m in net:
        x = m(x)
        if not isinstance(m, torch.nn.Linear):
            x = x * masks[layer]
            layer += 1
    return x
