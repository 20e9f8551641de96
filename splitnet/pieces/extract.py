"""The piece of a path: the sub-network a split and a path keep of a net.

For a split and a path p = (p_1..p_L) (``GroupPath``: one group per hidden layer),
S_l = {i : split[l][i] = p_l}; the piece keeps all inputs and outputs and the neurons S_l of
every hidden layer::

    W'_1 = W_1[S_1, :]     b'_1 = b_1[S_1]
    W'_l = W_l[S_l, S_{l-1}]  b'_l = b_l[S_l]                    (l = 2..L)
    W'_out = W_out[:, S_L]    b'_out = b_out

A BatchNorm net's piece keeps ``g_l[S_l], beta_l[S_l], mu_l[S_l], var_l[S_l]`` and all of
``mu_out, var_out`` (every BatchNorm tensor is indexed by its layer's neurons).

Dropout scaling (``split.piece_scale = "dropout"``): a piece sees |S_{l-1}| of the h_{l-1}
inputs of every neuron of layer l >= 2, so its incoming weights are multiplied by
h_{l-1} / |S_{l-1}| while it trains (inverted dropout) and divided back after recombining
(``recombination.unscale_recombined``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..model import MLP
from ..split import Split
from .layout import GroupPath, Params, as_mlp, layout_of, params_of


def piece_neurons(split: Split, path: GroupPath) -> list[np.ndarray]:
    """S_l for every hidden layer: the neuron indices the piece keeps."""
    return [np.flatnonzero(np.asarray(a) == g) for a, g in zip(split, path, strict=True)]


def piece_params(net: MLP, neurons: Sequence[np.ndarray]) -> Params:
    """The ``Params`` of the piece keeping hidden neurons ``neurons`` (copies, not views)."""
    out = []
    index = [torch.as_tensor(s) for s in neurons]
    with torch.no_grad():
        for e, t in zip(layout_of(net), params_of(net), strict=True):
            if e.rows is not None:
                t = t[index[e.rows]]
            if e.cols is not None:
                t = t[:, index[e.cols]]
            out.append(t.clone())
    return out


def extract(net: MLP, split: Split, path: GroupPath) -> MLP:
    """The standalone piece of ``net`` for ``path`` (a smaller MLP; a copy, not a view)."""
    return as_mlp(piece_params(net, piece_neurons(split, path)), net.activation, net.norm)


def dropout_factors(net: MLP, neurons: Sequence[np.ndarray]) -> list[float]:
    """h_{m-1} / |S_{m-1}| for every Linear m >= 1 of the piece keeping ``neurons``."""
    return [lin.in_features / len(s) for lin, s in zip(net.linears[1:], neurons, strict=True)]


def scale_for_dropout(params: Params, factors: Sequence[float]) -> None:
    """Multiply the piece's incoming weights of Linear m >= 1 by ``factors``, in place."""
    weights = [t for t in params if t.dim() == 2]  # W_1 .. W_out (either layout)
    with torch.no_grad():
        for W, f in zip(weights[1:], factors, strict=True):
            W.mul_(f)
