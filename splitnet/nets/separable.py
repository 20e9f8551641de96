"""What a depthwise-separable (MobileNet) convolution saves, measured on a net.

For a k x k convolution from N to M channels over a D_F x D_F output map (stride 1)::

    standard    weights K*K*N*M          mult-adds D_F^2 * K*K*N*M
    separable   weights K*K*N + N*M      mult-adds D_F^2 * (K*K*N + N*M)
    ratio       1/M + 1/K^2              (the same for both)

``count_mult_adds`` counts the multiply-adds of any net with forward hooks, ``conv2_closed_forms``
gives the second convolution of ``nets.cnn.CNN`` from the closed forms (``nets.cnn``), and
``costs`` puts both side by side for one CNN (the rows of ``experiments/separable/run.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .cnn import CNN, conv_mult_adds, conv_weight_count


def count_mult_adds(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Multiply-adds of one forward pass of one sample, per Conv2d/Linear module name.

    Conv2d: every output element costs (in_channels / groups) * kH * kW multiply-adds, so a
    depthwise conv (groups = N) costs K*K per output element and a 1x1 conv costs N.
    Linear: in_features per output element. Bias adds, ReLU and pooling are not counted (as in
    MobileNet). Works on the ``meta`` device, so paper-sized layers cost no memory or time.
    """
    counts: dict[str, int] = {}
    hooks = []

    def hook(name: str) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def fn(mod: nn.Module, inp: Any, out: torch.Tensor) -> None:
            per_out = (
                mod.in_channels // mod.groups * math.prod(mod.kernel_size)
                if isinstance(mod, nn.Conv2d)
                else mod.in_features
            )
            counts[name] = counts.get(name, 0) + out[0].numel() * per_out  # out[0]: one sample

        return fn

    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            hooks.append(mod.register_forward_hook(hook(name)))
    try:
        dev = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=dev))
    finally:
        for h in hooks:
            h.remove()
    return counts


def conv2_closed_forms(model: CNN) -> dict[str, int]:
    """The second conv's weights and multiply-adds from the closed forms above."""
    conv = model.features[3]
    sep = model.separable
    first = conv.depthwise if sep else conv
    k, n = first.kernel_size[0], first.in_channels
    m = (conv.pointwise if sep else conv).out_channels
    _, h, w = model.image_shape
    oh, ow = h // 2, w // 2  # after the first pool; 'same' padding keeps the size (odd k)
    return {
        "k": k,
        "n": n,
        "m": m,
        "out_hw": oh,
        "weights": conv_weight_count(k, n, m, sep),
        "mult_adds": conv_mult_adds(k, n, m, oh, ow, sep),
    }


def costs(model: CNN) -> dict[str, Any]:
    """Parameters and multiply-adds of ``model`` (whole net and conv 2), counted and closed-form."""
    hooks = count_mult_adds(model, model.image_shape)
    closed = conv2_closed_forms(model)
    return {
        "params_total": sum(p.numel() for p in model.parameters()),
        "conv2_weights": sum(
            p.numel()
            for n, p in model.named_parameters()
            if n.startswith("features.3") and n.endswith("weight")
        ),
        "conv2_weights_closed_form": closed["weights"],
        "conv2_mult_adds": sum(v for k, v in hooks.items() if k.startswith("features.3")),
        "conv2_mult_adds_closed_form": closed["mult_adds"],
        "mult_adds_total": sum(hooks.values()),
        "conv2_shape": closed,
    }
