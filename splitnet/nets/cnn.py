"""The progress report's MNIST CNN and the lecture notes' depthwise-separable convolution.

CNN (2 conv, 2 max-pool, 2 dense, 1 dropout)::

    conv(k) -> relu -> maxpool2 -> conv(k) -> relu -> maxpool2 -> dense -> relu -> dropout -> dense

With ``separable=True`` the second convolution is MobileNet's depthwise-separable one: a k x k
depthwise convolution (one filter per input channel) followed by a 1 x 1 pointwise convolution.
For N input and M output channels its weights cost ``K*K*N + N*M`` instead of ``K*K*N*M``.
"""

from __future__ import annotations

import torch
from torch import nn


class DepthwiseSeparableConv2d(nn.Module):
    """k x k depthwise conv (groups = in_channels, no bias) followed by a 1 x 1 pointwise conv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        bias: bool = True,
    ):
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, padding=padding, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def conv_weight_count(k: int, n: int, m: int, separable: bool = False) -> int:
    """Weights (no bias) of a k x k conv from n to m channels: K*K*N*M, or K*K*N + N*M."""
    return k * k * n + n * m if separable else k * k * n * m


def conv_mult_adds(k: int, n: int, m: int, out_h: int, out_w: int, separable: bool = False) -> int:
    """Multiply-adds over an out_h x out_w output map: D_F^2 * K*K*N*M, or D_F^2*(K*K*N + N*M)."""
    return out_h * out_w * conv_weight_count(k, n, m, separable)


class CNN(nn.Module):
    """The report's MNIST CNN, sized from ``image_shape`` (8x8 digits or 28x28 MNIST)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 8, 8),
        n_classes: int = 10,
        channels: tuple[int, int] = (32, 64),
        kernel_size: int | None = None,
        dense: int | None = None,
        dropout: float = 0.5,
        separable: bool = False,
    ):
        super().__init__()
        c, h, w = image_shape
        if h < 4 or w < 4:
            raise ValueError(f"image_shape={tuple(image_shape)} must be at least 4x4 (2 pools)")
        k = kernel_size or (5 if min(h, w) >= 28 else 3)
        dense = dense or (1024 if min(h, w) >= 28 else 128)
        c1, c2 = channels
        self.image_shape = (c, h, w)
        self.separable = separable
        conv2 = (
            DepthwiseSeparableConv2d(c1, c2, k, padding=k // 2)
            if separable
            else nn.Conv2d(c1, c2, k, padding=k // 2)
        )
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, k, padding=k // 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            conv2,
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = c2 * (h // 4) * (w // 4)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, dense),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dense, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # flat pixels from splitnet.data -> (n, c, h, w)
            x = x.view(-1, *self.image_shape)
        return self.classifier(self.features(x))
