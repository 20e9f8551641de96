"""The MLP that gets split (the CNN and LightRNN of the other seeds live in ``splitnet.nets``).

MLP with sizes ``[d_in, h_1, ..., h_L, d_out]``, ``norm="none"``::

    a_0 = x,   a_l = f(W_l a_{l-1} + b_l)  (l = 1..L),   logits = W_{L+1} a_L + b_{L+1}

It is an ``nn.Sequential`` of ``Linear`` and activation modules, so the tensor-parallel and
pruning code accept it as any plain torch stack.

``norm="batch"`` is Independent Subnet Training's released architecture: bias-free Linear, a
``BatchNorm1d`` after every hidden Linear and an affine-free one on the logits::

    a_l = f(BN_l(W_l a_{l-1})),   BN_l(z)_i = g_i (z_i - mu_i) / sqrt(var_i + eps) + beta_i
    logits = BN_out(W_{L+1} a_L)  (no g, beta)

(mu, var: the batch's in train mode, the running statistics in eval mode.) Every BatchNorm
quantity belongs to one neuron, so a piece carries those of its neurons (``pieces``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from .config import ACTIVATIONS as ACTIVATION_NAMES
from .config import NORMS


class Activation(NamedTuple):
    """One activation two ways: the module an MLP stacks and the function of a raw forward."""

    module: type[nn.Module]  # what an MLP stacks
    fn: Callable[[torch.Tensor], torch.Tensor]  # what a forward over raw parameters calls


# The one activation table: every forward over modules or raw parameters looks f up here.
ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(nn.ReLU, torch.relu),
    "tanh": Activation(nn.Tanh, torch.tanh),
    "sigmoid": Activation(nn.Sigmoid, torch.sigmoid),
}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES  # config validates the names it lists here


def activation_fn(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """f of an activation name; "identity" (a stack's last layer) is the identity."""
    return (lambda t: t) if name == "identity" else ACTIVATIONS[name].fn


class MLP(nn.Sequential):
    """The net that gets split: ``sizes`` = [d_in, h_1, ..., h_L, d_out]; Linear, activation, ...
    (``norm="batch"``: Linear without bias, BatchNorm1d, activation; an affine-free BatchNorm on
    the logits). ``linears`` and ``norms`` list its layers in order."""

    def __init__(
        self, sizes: list[int] | tuple[int, ...], activation: str = "relu", norm: str = "none"
    ):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"MLP sizes={sizes} need an input and an output size, all >= 1")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r} is not one of {', '.join(NORMS)}")
        bn = norm == "batch"
        mods: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            hidden = i < len(sizes) - 2
            mods.append(nn.Linear(a, b, bias=not bn))
            if bn:
                mods.append(nn.BatchNorm1d(b, affine=hidden))
            if hidden:
                mods.append(ACTIVATIONS[activation].module())
        super().__init__(*mods)
        self.sizes = tuple(sizes)
        self.activation = activation
        self.norm = norm

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self if isinstance(m, nn.Linear)]

    @property
    def norms(self) -> list[nn.BatchNorm1d]:
        return [m for m in self if isinstance(m, nn.BatchNorm1d)]

    @property
    def hidden(self) -> tuple[int, ...]:
        return self.sizes[1:-1]

    def hidden_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[a_1, ..., a_L]: the post-activation outputs of every hidden layer."""
        outs = []
        for m in self:
            x = m(x)
            if not isinstance(m, (nn.Linear, nn.BatchNorm1d)):
                outs.append(x)
        return outs


def build_mlp(sizes, activation: str = "relu", seed: int = 0, norm: str = "none") -> MLP:
    """An MLP whose initial weights depend on ``seed`` only (not on global RNG state)."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return MLP(sizes, activation, norm)
    finally:
        torch.random.set_rng_state(gen_state)


_NAMES = {a.module: name for name, a in ACTIVATIONS.items()}


def parse_sequential(module: nn.Module) -> list[tuple[nn.Linear, str]]:
    """``[(linear, activation name), ...]`` from a Sequential of Linear and activation modules."""
    if not isinstance(module, nn.Sequential):
        raise ValueError(
            f"expected an nn.Sequential of Linear/activation layers, got {type(module).__name__}"
        )
    layers: list[tuple[nn.Linear, str]] = []
    for i, m in enumerate(module):
        if isinstance(m, nn.Linear):
            layers.append((m, "identity"))
        elif isinstance(m, nn.Identity):
            continue
        elif type(m) in _NAMES:
            if not layers or layers[-1][1] != "identity":
                raise ValueError(f"module [{i}] {m} must directly follow an nn.Linear")
            layers[-1] = (layers[-1][0], _NAMES[type(m)])
        else:
            raise ValueError(
                f"unsupported module [{i}] {type(m).__name__}: only Linear, ReLU, "
                f"Tanh, Sigmoid and Identity are supported"
            )
    if not layers:
        raise ValueError("the Sequential has no nn.Linear layer")
    for (a, _), (b, _) in zip(layers[:-1], layers[1:], strict=True):
        if a.out_features != b.in_features:
            raise ValueError(f"Linear sizes do not chain: {a} then {b}")
    return layers
