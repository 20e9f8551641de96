"""The race's modelled clock (``costmodel.RaceClock``) and its parts against closed forms, and
the one-rank microbenchmarks it is fed with (``race_bench.measure``)."""

from __future__ import annotations

import json
import math

import pytest

from splitnet import race, race_bench
from splitnet.parallel.costmodel import (
    CostParams,
    RaceClock,
    StepCompute,
    allgather,
    link,
    nearest,
    predict,
    reduce_scatter,
)
from splitnet.race_methods import Variant

P = CostParams(alpha=2e-6, beta=1e-9, gamma=3e-10, delta=0.0)
SIZES = (10, 8, 6, 3)  # d_in, h_1, h_2, d_out: 88 + 54 + 21 = 163 parameters
N_PARAMS = 10 * 8 + 8 + 8 * 6 + 6 + 6 * 3 + 3
COMPUTE = StepCompute(
    single=1e-3,
    compress=2e-4,
    sync=5e-3,
    dp={1: 1e-3, 2: 6e-4, 4: 4e-4},
    piece={1: 1e-3, 2: 4e-4, 4: 2e-4},
    tensor={1: 1e-3, 2: 5e-4, 4: 3e-4},
)
CLOCK = RaceClock(COMPUTE, SIZES, batch=16, steps=100, params=P)


@pytest.mark.parametrize("N", [1, 2, 3, 4, 8, 1024])
def test_allgather_and_reduce_scatter_closed_forms(N):
    lg = math.ceil(math.log2(N)) if N > 1 else 0
    m, K = 1000.0, 4096.0
    assert allgather(N, m, P) == pytest.approx(lg * P.alpha + (N - 1) * m * P.beta)
    assert reduce_scatter(N, K, P) == pytest.approx(
        lg * P.alpha + (N - 1) / N * K * (P.beta + P.gamma)
    )


def test_nearest_is_the_closest_measured_N_in_log_scale():
    table = {1: "a", 4: "b", 16: "c"}
    assert [nearest(table, N) for N in (1, 2, 3, 4, 7, 9, 16, 1024)] == list("aabbbccc")


def test_link_has_the_link_and_the_local_rates():
    p = link(10.0, 5e-6, like=P)
    assert (p.alpha, p.beta, p.gamma, p.delta) == (5e-6, 8 / 10e9, P.gamma, P.delta)


def test_step_compute_survives_json():
    back = StepCompute.from_json(json.loads(json.dumps(COMPUTE.to_json())))
    assert back == COMPUTE and all(isinstance(n, int) for n in back.dp)


def test_single_is_its_compute_at_every_N():
    assert CLOCK.step_time(Variant("single"), 1) == CLOCK.step_time(Variant("single"), 64) == 1e-3


@pytest.mark.parametrize("exchange", ["mpi", "ring"])
def test_dense_data_parallel_is_compute_plus_one_allreduce(exchange):
    v = Variant("dataparallel", exchange=exchange)
    for N in (2, 4, 64):
        want = COMPUTE.dp[min(N, 4)] + predict(exchange, N, 4 * N_PARAMS, P)
        assert CLOCK.step_time(v, N) == pytest.approx(want)


def test_topk_sends_a_count_and_k_indices_and_values_to_everyone():
    v = Variant("dataparallel", exchange="topk", topk_ratio=0.1)
    k = round(0.1 * N_PARAMS)
    N, lg = 4, 2
    gathers = 3 * lg * P.alpha + (N - 1) * (4 + 2 * 4 * k) * P.beta
    want = COMPUTE.dp[4] + COMPUTE.compress + gathers
    assert CLOCK.step_time(v, N) == pytest.approx(want)


def test_tensor_gathers_every_layer_and_reduce_scatters_every_hidden_one():
    N, B, lg = 2, 16, 1
    forward = sum(lg * P.alpha + (N - 1) * (w * B * 4 / N) * P.beta for w in SIZES[1:])
    backward = sum(lg * P.alpha + (N - 1) / N * h * B * 4 * (P.beta + P.gamma) for h in (8, 6))
    assert CLOCK.step_time(Variant("tensor"), N) == pytest.approx(
        COMPUTE.tensor[2] + forward + backward
    )


def test_split_spreads_one_sync_through_rank_0_over_E_steps():
    N = 2
    n_piece = 10 * 4 + 4 + 4 * 3 + 3 + 3 * 3 + 3  # widths ceil(8/2), ceil(6/2)
    sync = COMPUTE.sync + 2 * (N - 1) * (P.alpha + 4 * n_piece * P.beta)
    one_shot = Variant("split", "one-shot")
    rounds = Variant("split", "rounds", E=20)
    assert CLOCK.step_time(one_shot, N) == pytest.approx(COMPUTE.piece[2] + sync / 100)
    assert CLOCK.step_time(rounds, N) == pytest.approx(COMPUTE.piece[2] + sync / 20)


def test_speedup_is_single_time_to_target_over_the_method_s():
    v = Variant("tensor")
    want = 300 * COMPUTE.single / (200 * CLOCK.step_time(v, 4))
    assert CLOCK.speedup(v, 4, steps=200, single_steps=300) == pytest.approx(want)


def test_a_method_without_a_clock_is_refused_by_name():
    with pytest.raises(ValueError, match="no modelled clock for race method 'pipeline'"):
        CLOCK.step_time(Variant("pipeline"), 2)


def test_measure_times_every_method_at_every_N():
    cfg, rc = race.load(None, ["data.name=digits", "model.hidden=[6, 5]", "race.epochs=1"], 1)
    b = race_bench.measure(cfg, rc, [1, 2, 8], reps=1, steps=2)
    assert set(b.dp) == set(b.tensor) == {1, 2, 8} and set(b.piece) == {1, 2}  # 8 > 5 neurons
    values = [b.single, b.compress, b.sync, *b.dp.values(), *b.piece.values()]
    assert all(t > 0 for t in [*values, *b.tensor.values()])
