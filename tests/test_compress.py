"""The sparsification rules of splitnet.parallel.compress on hand-made gradients."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from splitnet.parallel import compress as cz

# mean 0, population sigma = sqrt((9 + 9 + 1 + 1 + 0.25*4) / 10) = sqrt(2.1) = 1.449
G = np.array([3.0, -3.0, 1.0, -1.0, 0.5, -0.5, 0.5, -0.5, 0.0, 0.0], np.float32)


def test_sigma_is_population_std_centred_at_mean():
    assert cz.sigma(G) == pytest.approx(np.sqrt(2.1))
    assert cz.sigma(G + 10) == pytest.approx(np.sqrt(2.1))  # centred


def test_std1_and_std2_thresholds():
    s1 = cz.make_compressor("std1", G.size, residual=False).compress(G)
    assert s1.threshold == pytest.approx(np.sqrt(2.1))
    assert s1.indices.tolist() == [0, 1]  # |3| > 1.449; |1| is not
    g = np.array([5.0, 1.5, -1.5, 1.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], np.float32)
    s1 = cz.make_compressor("std1", g.size, residual=False).compress(g)
    s2 = cz.make_compressor("std2", g.size, residual=False).compress(g)
    sig = float(np.std(g.astype(np.float64)))  # 1.364
    assert s1.indices.tolist() == [0, 1, 2] and s1.threshold == pytest.approx(sig)
    assert s2.indices.tolist() == [0] and s2.threshold == pytest.approx(2 * sig)
    assert s1.values.tolist() == [5.0, 1.5, -1.5] and s1.values.dtype == np.float32
    assert s1.indices.dtype == np.int32


def test_uncentred_comparison_on_an_offset_vector():
    g = np.full(8, 2.0, np.float32)
    g[0] = 3.0  # sigma = 0.33: every |g_i| passes, offset or not
    assert cz.make_compressor("std1", 8, residual=False).compress(g).count == 8


def test_none_sends_everything_and_zero_threshold():
    s = cz.make_compressor("none", G.size).compress(G)
    assert s.count == G.size and s.threshold == 0.0
    np.testing.assert_array_equal(s.to_dense(), G)


def test_topk_picks_largest_magnitudes():
    g = np.array([0.1, -0.9, 0.3, 0.8, -0.2, 0.05, 0.0, 0.7, -0.4, 0.6], np.float32)
    s = cz.make_compressor("topk", 10, residual=False, topk_fraction=0.3).compress(g)
    assert s.indices.tolist() == [1, 3, 7] and s.threshold == pytest.approx(0.7)
    one = cz.make_compressor("topk", 10, topk_fraction=1e-9).compress(g)
    assert one.indices.tolist() == [1]  # k is at least 1


def test_dynamic_threshold_is_mean_of_unsent_magnitudes():
    c = cz.make_compressor("dynamic", G.size, residual=False)
    s = c.compress(G)
    assert s.threshold == pytest.approx(np.sqrt(2.1))  # tau_0 = 1 sigma of the first vector
    assert s.indices.tolist() == [0, 1]
    # unsent |a|: 1, 1, 0.5 x4, 0, 0 -> mean 4/8 = 0.5 (zeros included)
    assert c.tau == pytest.approx(0.5)
    s = c.compress(G)
    assert s.threshold == pytest.approx(0.5) and s.indices.tolist() == [0, 1, 2, 3]
    assert c.tau == pytest.approx(2.0 / 6)  # unsent: 0.5 x4, 0, 0
    s = c.compress(np.zeros_like(G))  # nothing sent -> mean of all zeros
    assert s.count == 0 and c.tau == 0.0


def test_dynamic_keeps_tau_when_everything_is_sent():
    c = cz.DynamicThreshold(3, residual=False, initial=0.1)
    assert c.compress(np.array([1.0, -2.0, 3.0], np.float32)).count == 3
    assert c.tau == 0.1


def test_residual_keeps_the_unsent_part_and_sends_it_later():
    c = cz.make_compressor("std1", G.size, residual=True)
    c.compress(G)  # sends +-3
    expect = G.copy()
    expect[[0, 1]] = 0
    np.testing.assert_array_equal(c.r, expect)  # r = a - sent
    s = c.compress(G)  # a = G + r: the +-1 entries are now +-2
    assert set(s.indices.tolist()) >= {0, 1, 2, 3}


def test_no_residual_drops_the_unsent_part():
    c = cz.make_compressor("std1", G.size, residual=False)
    c.compress(G)
    assert not c.r.any()
    assert c.compress(G).indices.tolist() == [0, 1]  # same as the first time


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float32, (5, 30), elements=st.floats(-10, 10, width=32)),
    st.sampled_from(["std1", "std2", "dynamic", "topk"]),
)
def test_residual_conserves_the_gradient_sum(gs, name):
    """sum_t sent_t + r_T == sum_t g_t (float rounding aside)."""
    c = cz.make_compressor(name, 30, residual=True, topk_fraction=0.1)
    sent = np.zeros(30, np.float64)
    for g in gs:
        sent += c.compress(g).to_dense()
    np.testing.assert_allclose(sent + c.r, gs.astype(np.float64).sum(0), atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, (6, 25), elements=st.floats(-5, 5, width=32)), st.booleans())
def test_dynamic_threshold_never_rises(gs, residual):
    """Each unsent |a_i| <= tau, so their mean is too: the report's rule only lowers tau."""
    c = cz.make_compressor("dynamic", 25, residual=residual)
    taus = [c.compress(g).threshold for g in gs]
    assert all(b <= a + 1e-7 for a, b in zip(taus, taus[1:], strict=False))


def test_sum_sparse_in_rank_order_and_byte_accounting():
    parts = [
        (np.array([0, 3], np.int32), np.array([1.0, 2.0], np.float32)),
        (np.array([3, 4], np.int32), np.array([0.5, -1.0], np.float32)),
    ]
    np.testing.assert_array_equal(cz.sum_sparse(parts, 5), [1.0, 0, 0, 2.5, -1.0])
    assert cz.sparse_bytes(0) == 4 and cz.sparse_bytes(10) == 84  # count + 4 B index + 4 B value
    assert cz.dense_bytes(10) == 40
    assert cz.ring_allreduce_bytes(10, 2) == 40 and cz.ring_allreduce_bytes(10, 4) == 60
    assert cz.wire_seconds(125_000_000) == pytest.approx(1.0)  # 1 Gbit/s
    assert 4e9 / 8 / cz.wire_seconds(4e9 / 8) / 4 == pytest.approx(31.25e6)  # ~32 M floats/s
    assert cz.expected_fraction(1) == pytest.approx(0.3173, abs=1e-4)


def test_errors_name_the_values():
    with pytest.raises(ValueError, match="'bogus'"):
        cz.make_compressor("bogus", 3)
    with pytest.raises(ValueError, match="fraction=1.5"):
        cz.make_compressor("topk", 3, topk_fraction=1.5)
    with pytest.raises(ValueError, match=r"\(4,\) != \(3,\)"):
        cz.make_compressor("std1", 3).compress(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        cz.make_compressor("std1", 2).compress(np.array([np.nan, 1], np.float32))
    with pytest.raises(ValueError, match="size=0"):
        cz.make_compressor("none", 0)
