"""The ``Params`` of a net or a piece: their order, shapes, the MLP holding them, the wire format.

A piece's parameters are a list ``[W_1, b_1, ..., W_out, b_out]`` (``Params``, the order of
``MLP.parameters()``). BatchNorm nets (``model.norm = "batch"``): ``Params`` is the net's state in
``state_dict`` order without ``num_batches_tracked`` (``layout``)::

    [W_1, g_1, beta_1, mu_1, var_1, ..., W_out, mu_out, var_out]

Every tensor is indexed by its layer's neurons (``Entry.rows``, ``Entry.cols``), which is all the
piece extraction and the recombination need to know of it. ``pack`` lays a piece out as one
float32 vector in this order (the wire format); ``unpack`` reads it back as views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from torch import nn

from ..model import MLP

GroupPath = Sequence[int]  # a path p = (p_1..p_L): one group per hidden layer

Params = list[torch.Tensor]  # [W_1, b_1, ..., W_out, b_out] (BatchNorm nets: ``layout``)


@dataclass(frozen=True)
class Entry:
    """One tensor of a net's state: which hidden layer's neurons index its rows and columns."""

    name: str  # its state_dict key
    linear: int  # m: the Linear it belongs to or follows (0-based; L = the output layer)
    kind: str  # "weight", "bias" (Linear); "gamma", "beta", "mean", "var" (BatchNorm)
    rows: int | None  # the hidden layer whose neurons index dim 0 (None: all, the outputs)
    cols: int | None  # the hidden layer indexing dim 1 (Linear weights; None: all inputs)

    @property
    def param(self) -> bool:  # trained by SGD (the rest are running statistics)
        return self.kind in ("weight", "bias", "gamma", "beta")


@cache
def layout(n_linears: int, norm: str = "none") -> tuple[Entry, ...]:
    """The ``Params`` order of an MLP with ``n_linears`` Linear layers (``model.MLP``)."""
    out = []
    L = n_linears - 1  # hidden layers
    for m in range(n_linears):
        rows, cols = (m if m < L else None), (m - 1 if m > 0 else None)
        if norm == "none":  # Sequential: Linear, activation, ...
            out += [Entry(f"{2 * m}.weight", m, "weight", rows, cols)]
            out += [Entry(f"{2 * m}.bias", m, "bias", rows, None)]
        else:  # Linear (no bias), BatchNorm1d (affine-free on the logits), activation, ...
            out += [Entry(f"{3 * m}.weight", m, "weight", rows, cols)]
            bn = f"{3 * m + 1}"
            if m < L:
                out += [Entry(f"{bn}.weight", m, "gamma", rows, None)]
                out += [Entry(f"{bn}.bias", m, "beta", rows, None)]
            out += [Entry(f"{bn}.running_mean", m, "mean", rows, None)]
            out += [Entry(f"{bn}.running_var", m, "var", rows, None)]
    return tuple(out)


def layout_of(net: MLP) -> tuple[Entry, ...]:
    """``layout`` of ``net``'s sizes and norm."""
    return layout(len(net.sizes) - 1, net.norm)


def shapes(sizes: Sequence[int], norm: str = "none") -> list[tuple[int, ...]]:
    """The shape of every ``Params`` tensor of an MLP of ``sizes``."""
    return [
        (sizes[e.linear + 1], sizes[e.linear]) if e.kind == "weight" else (sizes[e.linear + 1],)
        for e in layout(len(sizes) - 1, norm)
    ]


def n_values(sizes: Sequence[int], norm: str = "none") -> int:
    """How many floats ``pack`` makes of a piece of ``sizes``."""
    return sum(int(np.prod(s)) for s in shapes(sizes, norm))


def params_of(piece: MLP | Sequence[torch.Tensor]) -> Params:
    """A piece as ``Params`` (an MLP's state in ``layout`` order, detached, or the list itself)."""
    if isinstance(piece, nn.Module):
        if getattr(piece, "norm", "none") == "none":
            return [p.detach() for p in piece.parameters()]
        return [t.detach() for k, t in piece.state_dict().items() if "num_batches" not in k]
    return list(piece)


def sizes_of(params: Params) -> list[int]:
    """[d_in, h_1, ..., d_out] of the MLP holding ``params`` (read off its weights)."""
    return [params[0].shape[1], *(W.shape[0] for W in params if W.dim() == 2)]


def n_params(params: Params | nn.Module) -> int:
    """How many numbers a piece (or net) holds, running statistics included."""
    return sum(t.numel() for t in params_of(params))


def as_mlp(params: Params, activation: str, norm: str = "none") -> MLP:
    """An MLP holding copies of ``params``, built without ``nn.Module.__init__``.

    Module construction (about 0.5 ms for a 3-layer MLP) would cost more than training a small
    piece, so every piece is a structural copy of one template per shape.
    """
    key = (tuple(sizes_of(params)), activation, norm)
    template = _TEMPLATES.get(key)
    if template is None:
        # eval mode, as sgd leaves a net: a BatchNorm copy must not normalise (and update its
        # statistics with) the batch of whatever inspects it, e.g. the activations split
        template = _TEMPLATES[key] = MLP(*key).eval()
    net = _clone_module(template)
    if norm == "none":
        for lin, W, b in zip(net.linears, params[0::2], params[1::2], strict=True):
            lin._parameters["weight"] = nn.Parameter(W.detach().clone())
            lin._parameters["bias"] = nn.Parameter(b.detach().clone())
        return net
    for e, t in zip(layout(len(key[0]) - 1, norm), params, strict=True):
        module, name = net._modules[e.name.split(".")[0]], e.name.split(".")[1]
        if e.param:
            module._parameters[name] = nn.Parameter(t.detach().clone())
        else:
            module._buffers[name] = t.detach().clone()
    for bn in net.norms:  # its own counter: the template's must never be shared
        bn._buffers["num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    return net


_TEMPLATES: dict = {}


def _clone_module(mod: nn.Module) -> nn.Module:
    new = mod.__class__.__new__(mod.__class__)
    # every dict/set attribute (parameters, buffers, hooks, submodules) is a new container
    new.__dict__ = {
        k: (v.copy() if isinstance(v, (dict, set)) else v) for k, v in mod.__dict__.items()
    }
    for name, child in mod._modules.items():
        new._modules[name] = _clone_module(child)
    return new


def pack(params: Params | MLP) -> np.ndarray:
    """A piece's ``Params`` as one float32 vector, in ``layout`` order (plain: Linear by Linear,
    weight then bias; BatchNorm: its statistics travel with it)."""
    return torch.cat([p.detach().reshape(-1) for p in params_of(params)]).numpy()


def unpack(sizes: Sequence[int], flat: np.ndarray, norm: str = "none") -> Params:
    """The ``Params`` of an MLP of ``sizes`` from ``pack``'s vector (views into it)."""
    flat = torch.from_numpy(np.asarray(flat, dtype=np.float32))
    n = n_values(sizes, norm)
    if n != flat.numel():
        raise ValueError(
            f"a packed piece of sizes {list(sizes)} has {n} values, got {flat.numel()}"
        )
    out, at = [], 0
    for shape in shapes(sizes, norm):
        size = int(np.prod(shape))
        out.append(flat[at : at + size].view(*shape))
        at += size
    return out
