"""Depthwise-separable convolution: counts against MobileNet's closed forms and the seed-002 notes.

The lecture notes use two notations:

* MobileNet block: K = 5, N = M = 1024 *channels*; weights I = K*K*N*M = 26,214,400 against
  II = K*K*N + N*M = 25,600 + 1,048,576 = 1,074,176 (the notes' "II: N*M*K + N*M*K" line is
  garbled; the MobileNet paper's form is the one tested).
* "Deepwise Separable Conv" block: cost ``N x M x D x k x k x S`` with K = 5, N = M = 1024,
  D = 3, S = 12, "I 9*10^8, II 6*10^7", and per position ``S*K*K*D -> D*S + K*K*D``. Reading
  that: N x M = 1024 x 1024 is the *image* (output map), D = 3 the input depth (RGB), S = 12 the
  number of filters (output channels). Then I = N*M*K*K*D*S = 943,718,400 ~ 9*10^8 exactly as
  noted, and II = N*M*(K*K*D + D*S) = 116,391,936 ~ 1.2*10^8 (ratio 1/S + 1/K^2 = 0.123). The
  notes' 6*10^7 is N*M*(K*K + D*S) = 63,963,136: the depthwise term without its factor D, as if
  one k x k filter were shared by all D channels. We test the MobileNet form and record the gap.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from splitnet.nets.cnn import CNN, DepthwiseSeparableConv2d, conv_mult_adds, conv_weight_count
from splitnet.nets.separable import conv2_closed_forms, costs, count_mult_adds


def n_weights(mod: nn.Module) -> int:
    return sum(p.numel() for name, p in mod.named_parameters() if name.endswith("weight"))


def test_mobilenet_weight_counts_notes_numbers():
    k, n, m = 5, 1024, 1024
    with torch.device("meta"):  # shapes only: no 100 MB allocation for the standard conv
        std = nn.Conv2d(n, m, k, bias=False)
        sep = DepthwiseSeparableConv2d(n, m, k, bias=False)
    assert sum(p.numel() for p in std.parameters()) == k * k * n * m == 26_214_400
    assert sum(p.numel() for p in sep.parameters()) == k * k * n + n * m == 1_074_176
    assert sum(p.numel() for p in sep.depthwise.parameters()) == 25_600
    assert sum(p.numel() for p in sep.pointwise.parameters()) == 1_048_576
    assert conv_weight_count(k, n, m) == 26_214_400
    assert conv_weight_count(k, n, m, separable=True) == 1_074_176
    # MobileNet's reduction factor 1/M + 1/K^2
    assert math.isclose(1_074_176 / 26_214_400, 1 / m + 1 / k**2)


@settings(max_examples=30, deadline=None)
@given(
    k=st.sampled_from([1, 3, 5, 7]), n=st.integers(1, 48), m=st.integers(1, 48), bias=st.booleans()
)
def test_weight_count_matches_numel(k, n, m, bias):
    with torch.device("meta"):
        std = nn.Conv2d(n, m, k, bias=bias)
        sep = DepthwiseSeparableConv2d(n, m, k, bias=bias)
    assert n_weights(std) == conv_weight_count(k, n, m)
    assert n_weights(sep) == conv_weight_count(k, n, m, separable=True)
    # bias: the standard conv's M, the pointwise conv's M (the depthwise conv has none)
    assert sum(p.numel() for p in sep.parameters()) - n_weights(sep) == (m if bias else 0)


def test_notes_mult_adds_image_reading():
    k, h, w, d, s = 5, 1024, 1024, 3, 12  # image N x M = 1024 x 1024, depth D, S filters
    std = conv_mult_adds(k, d, s, h, w)
    sep = conv_mult_adds(k, d, s, h, w, separable=True)
    assert std == h * w * d * k * k * s == 943_718_400  # notes: I = 9*10^8
    assert round(std, -8) == 9 * 10**8
    assert sep == h * w * (d * s + k * k * d) == 116_391_936
    assert math.isclose(sep / std, 1 / s + 1 / k**2)
    # the notes' II = 6*10^7 drops the depthwise factor D: N*M*(K*K + D*S)
    assert round(h * w * (k * k + d * s), -7) == 6 * 10**7
    # forward hooks on the meta device count the same numbers for real modules ('same' padding)
    with torch.device("meta"):
        std_mod = nn.Conv2d(d, s, k, padding=k // 2)
        sep_mod = DepthwiseSeparableConv2d(d, s, k, padding=k // 2)
    assert sum(count_mult_adds(std_mod, (d, h, w)).values()) == std
    assert sum(count_mult_adds(sep_mod, (d, h, w)).values()) == sep


def test_mobilenet_mult_adds_channel_reading():
    k, n, m, df = 5, 1024, 1024, 14  # a MobileNet-like 14x14 map
    with torch.device("meta"):
        std_mod = nn.Conv2d(n, m, k, padding=2, bias=False)
        sep_mod = DepthwiseSeparableConv2d(n, m, k, padding=2, bias=False)
    assert sum(count_mult_adds(std_mod, (n, df, df)).values()) == conv_mult_adds(k, n, m, df, df)
    hooks = count_mult_adds(sep_mod, (n, df, df))
    assert hooks == {"depthwise": df * df * k * k * n, "pointwise": df * df * n * m}
    assert sum(hooks.values()) == conv_mult_adds(k, n, m, df, df, separable=True)


@pytest.mark.parametrize("k,pad", [(3, 1), (5, 2), (3, 0)])
def test_separable_equals_grouped_then_pointwise_conv(k, pad):
    torch.manual_seed(0)
    n, m = 6, 10
    mod = DepthwiseSeparableConv2d(n, m, k, padding=pad)
    x = torch.randn(2, n, 9, 11)
    ref = F.conv2d(x, mod.depthwise.weight, None, padding=pad, groups=n)
    ref = F.conv2d(ref, mod.pointwise.weight, mod.pointwise.bias)
    assert mod.depthwise.weight.shape == (n, 1, k, k)
    assert mod.pointwise.weight.shape == (m, n, 1, 1)
    torch.testing.assert_close(mod(x), ref)
    # the separable conv is a standard conv whose kernel is rank-structured:
    # W[o, i] = P[o, i] * D[i], so a dense conv with that kernel gives the same output
    dense = mod.pointwise.weight[:, :, 0, 0, None, None] * mod.depthwise.weight[:, 0][None]
    torch.testing.assert_close(
        mod(x), F.conv2d(x, dense, mod.pointwise.bias, padding=pad), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_cnn_separable_runs_and_saves_parameters(shape):
    torch.manual_seed(0)
    std, sep = CNN(shape, 10, separable=False), CNN(shape, 10, separable=True)
    x = torch.randn(3, shape[1] * shape[2])  # flat pixels, as splitnet.data gives them
    assert sep(x).shape == std(x).shape == (3, 10)
    k = 5 if shape[1] >= 28 else 3
    n, m = 32, 64
    saved = conv_weight_count(k, n, m) - conv_weight_count(k, n, m, separable=True)
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert count(std) - count(sep) == saved
    ma_std = sum(count_mult_adds(std, shape).values())
    ma_sep = sum(count_mult_adds(sep, shape).values())
    h2 = shape[1] // 2
    assert ma_std - ma_sep == (
        conv_mult_adds(k, n, m, h2, h2) - conv_mult_adds(k, n, m, h2, h2, separable=True)
    )


@pytest.mark.parametrize("separable", [False, True])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_costs_counted_equal_the_closed_forms(shape, separable):
    """The study's row: hooks and numel on conv 2 give exactly the closed forms."""
    with torch.device("meta"):
        model = CNN(shape, 10, channels=(8, 12), dense=16, separable=separable)
    c = costs(model)
    assert c["conv2_shape"] == conv2_closed_forms(model)
    assert c["conv2_weights"] == c["conv2_weights_closed_form"]
    assert c["conv2_mult_adds"] == c["conv2_mult_adds_closed_form"]
    assert c["params_total"] == sum(p.numel() for p in model.parameters())
    assert c["mult_adds_total"] == sum(count_mult_adds(model, shape).values())
