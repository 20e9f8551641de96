"""The logits of pieces without building their nets: one piece, the logit-sum ensemble of a
combination's pieces, and the full net with the neurons outside a path masked to 0::

    forward(piece_p)(x)        = the MLP of piece_p in eval mode (BatchNorm folded in)
    ensemble_logits(x)         = sum_p piece_p(x)                 in path order
    masked_forward(net, p)(x)  = net(x) with h_l[i] = 0 for i not in S_l   (equals piece_p(x))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..model import MLP, activation_fn
from ..split import Split
from .layout import GroupPath, Params, params_of
from .norm import fold


@torch.no_grad()
def forward(params: Params, activation: str, x: torch.Tensor, norm: str = "none") -> torch.Tensor:
    """The logits of the piece ``params`` (the same ops as ``MLP.forward`` in eval mode)."""
    f = activation_fn(activation)
    params = fold(params, norm)
    n = len(params) // 2
    for m in range(n):
        x = nn.functional.linear(x, params[2 * m], params[2 * m + 1])
        if m < n - 1:
            x = f(x)
    return x


@torch.no_grad()
def ensemble_logits(
    pieces: Sequence[Params], activation: str, x: torch.Tensor | np.ndarray, norm: str = "none"
) -> torch.Tensor:
    """sum_p piece_p(x): the logit-sum ensemble, (n, d_out) (an upper reference: it needs every
    piece at inference time, so it is not one net of the original size)."""
    x = torch.as_tensor(x)
    out = None
    for piece in pieces:
        z = forward(params_of(piece), activation, x, norm)
        out = z if out is None else out + z
    return out


def masked_forward(net: MLP, split: Split, path: GroupPath, x: torch.Tensor) -> torch.Tensor:
    """The full net's forward with every hidden neuron outside the path's groups forced to 0."""
    masks = [torch.as_tensor(np.asarray(a) == g) for a, g in zip(split, path, strict=True)]
    layer = 0
    for m in net:
        x = m(x)
        if not isinstance(m, (nn.Linear, nn.BatchNorm1d)):  # after every activation
            x = x * masks[layer]
            layer += 1
    return x
