"""BatchNorm nets: fold the normalisation into the weights, re-estimate the running statistics.

Recombining takes the mean of a BatchNorm tensor over the pieces holding its neuron, as for a
bias. A summed net's pre-activations are not any piece's, so its running statistics are
re-estimated on data before it is evaluated (``inference_net``: ``split.norm_stats =
"reestimate"``; ``"average"`` keeps the pieces' mean). ``fold`` writes the eval-mode function
as a plain ``[W, b, ...]`` so stacked evaluation needs only Linear layers.
"""

from __future__ import annotations

import numpy as np
import torch

from ..model import MLP
from .layout import Params, as_mlp, layout, params_of, sizes_of

BN_EPS = 1e-5  # torch.nn.BatchNorm1d's default, used by every MLP


def fold(params: Params, norm: str = "none") -> Params:
    """The plain ``[W, b, ...]`` of the same eval-mode function (BatchNorm folded in)::

        BN(W a) = s * (W a - mu) + beta = (s W) a + (beta - s mu),   s = g / sqrt(var + eps)

    (the logits' BN: g = 1, beta = 0). Computed in float64, so only the final rounding to
    float32 differs from torch's eval-mode BatchNorm. A plain net's list is returned as is.
    """
    if norm == "none":
        return list(params)
    out, state = [], {}
    for e, t in zip(layout(len(sizes_of(params)) - 1, norm), params, strict=True):
        state[e.kind] = t.double()
        if e.kind == "var":  # the last tensor of a layer
            s = state.get("gamma", 1.0) / torch.sqrt(state["var"] + BN_EPS)
            b = state.get("beta", 0.0) - s * state["mean"]
            out += [(s[:, None] * state["weight"]).float(), b.float()]
            state = {}
    return out


def restat(net: MLP, X: torch.Tensor | np.ndarray) -> MLP:
    """A copy of the BatchNorm ``net`` whose running statistics are those of ``X`` in one batch
    (every layer's mu and unbiased var of its pre-activations on ``X``, the layers before it
    normalised alike); its parameters are unchanged."""
    out = as_mlp(params_of(net), net.activation, net.norm)
    momenta = [bn.momentum for bn in out.norms]
    for bn in out.norms:
        bn.momentum = 1.0  # running = this batch's statistics
    out.train()
    with torch.no_grad():
        out(torch.as_tensor(X))
    for bn, m in zip(out.norms, momenta, strict=True):
        bn.momentum = m
    return out.eval()


def inference_net(net: MLP, X: torch.Tensor | np.ndarray, norm_stats: str) -> MLP:
    """The net to evaluate: a BatchNorm net restat'ed on ``X`` (``norm_stats="reestimate"``),
    else ``net`` itself (a plain net; BatchNorm with the pieces' averaged statistics)."""
    if net.norm == "none" or norm_stats == "average":
        return net
    return restat(net, X)
