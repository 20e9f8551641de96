"""The batched engine against the trusted loop engine (``sgd.sgd``): the same pieces and rows."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import run_mpi

from splitnet import config, experiment
from splitnet.combinations import space_of
from splitnet.engines import PieceJob, train_pieces
from splitnet.model import build_mlp
from splitnet.pieces import as_mlp, params_of, piece_neurons, piece_params
from splitnet.rounds import train_rounds
from splitnet.sgd import minibatches

FAST = ["train.pretrain_epochs=3", "train.piece_epochs=2"]
N_COMBOS = 6


@pytest.fixture(scope="module")
def preps():
    """One pretrained net per model shape (pretraining is the slow part of a test)."""
    cache = {}

    def get(hidden, activation):
        key = (hidden, activation)
        if key not in cache:
            cache[key] = experiment.prepare(
                config.load(
                    None, [*FAST, f"model.hidden={hidden}", f"model.activation={activation}"]
                )
            )
        return cache[key]

    return get


def with_settings(prep, split=None, **train):
    """``prep`` with other split.* / train.* settings (same pretrained net and data)."""
    cfg = prep.config
    cfg = dataclasses.replace(
        cfg,
        split=dataclasses.replace(cfg.split, **(split or {})),
        train=dataclasses.replace(cfg.train, **train),
    )
    space = space_of(cfg)
    return dataclasses.replace(prep, config=cfg, space=space, experiment=cfg, _identity=None)


def results(prep, n=N_COMBOS):
    return train_rounds(prep.pretrained, prep.data, prep.config, list(range(n)), space=prep.space)


CASES = [  # (hidden, activation, variant, shuffle, momentum, resplit_every)
    ("[5,3]", "relu", "straight", "shared", 0.0, 0),  # uneven groups: several stacks
    ("[5,3]", "tanh", "alternating", "per-piece", 0.5, 0),
    ("[4,4]", "sigmoid", "alternating", "shared", 0.9, 0),
    ("[4,4]", "relu", "straight", "per-piece", 0.0, 0),
    ("[4,4]", "relu", "straight", "shared", 0.9, 7),  # momentum buffers carried into rounds
    ("[5,3]", "tanh", "straight", "per-piece", 0.5, 11),
]


@pytest.mark.parametrize("hidden,activation,variant,shuffle,momentum,every", CASES)
def test_batched_pieces_and_rows_match_the_loop(
    preps, hidden, activation, variant, shuffle, momentum, every
):
    base = preps(hidden, activation)
    split = {"variant": variant, "resplit_every": every}
    loop = with_settings(base, split, engine="loop", shuffle=shuffle, momentum=momentum)
    fast = with_settings(base, split, engine="batched", shuffle=shuffle, momentum=momentum)
    one_flip = 1.0 / len(base.data.test[1]) + 1e-12
    for a, b in zip(results(loop), results(fast), strict=True):
        assert a.rounds == b.rounds == (1 if not every else -(-a.total_steps // every))
        for pa, pb in zip(a.pieces, b.pieces, strict=True):
            for x, y in zip(pa, pb, strict=True):
                torch.testing.assert_close(y, x, atol=1e-4, rtol=0)
        for (_, u), (_, v) in zip(a.curve, b.curve, strict=True):
            assert abs(u - v) <= one_flip
    rows_loop = experiment.run_combinations(loop, list(range(N_COMBOS)))
    rows_fast = experiment.run_combinations(fast, list(range(N_COMBOS)))
    flips = {"accuracy", "ensemble_accuracy", "piece_accuracies", "curve"}
    skip = {*flips, "seconds", "config", "config_hash"}
    for a, b in zip(rows_loop, rows_fast, strict=True):
        assert abs(a["accuracy"] - b["accuracy"]) <= one_flip
        assert abs(a["ensemble_accuracy"] - b["ensemble_accuracy"]) <= one_flip
        for u, v in zip(a["piece_accuracies"], b["piece_accuracies"], strict=True):
            assert abs(u - v) <= one_flip
        if every:
            for (s, u), (t, v) in zip(a["curve"], b["curve"], strict=True):
                assert s == t and abs(u - v) <= one_flip
        assert {k: v for k, v in a.items() if k not in skip} == {
            k: v for k, v in b.items() if k not in skip
        }


def _jobs(prep, combos, seed_of=lambda c, p: 0):
    space = prep.space
    return [
        PieceJob(prep.pretrained, tuple(piece_neurons(space.split_at(c), p)), seed_of(c, p))
        for c in combos
        for p in prep.paths
    ]


def _train(prep, jobs, engine="batched", max_stack=1024, steps=None, shared=False, momentum=0.0):
    X, y = (torch.as_tensor(a) for a in prep.data.remaining)
    T = steps if steps is not None else 40
    streams = {s: minibatches(len(X), 32, s, steps=T) for s in {j.order_seed for j in jobs}}
    return train_pieces(
        jobs,
        X,
        y,
        streams,
        steps=(0, T),
        lr=0.05,
        momentum=momentum,
        engine=engine,
        max_stack=max_stack,
        shared_order=shared,
    )


def test_uneven_groups_give_several_shapes_in_job_order(preps):
    prep = with_settings(preps("[5,3]", "relu"))
    jobs = _jobs(prep, range(8))
    out = _train(prep, jobs)
    shapes = [tuple(len(s) for s in j.neurons) for j in jobs]
    assert [tuple(W.shape[0] for W in t.params[0:-2:2]) for t in out] == shapes
    assert len(set(shapes)) > 1 and all(t.seconds > 0 for t in out)


@pytest.mark.parametrize("per_piece", [False, True])
def test_a_piece_does_not_depend_on_its_stack_mates(preps, per_piece):
    """Bitwise: what a piece becomes is independent of stack size and company (any rank count)."""
    prep = with_settings(preps("[4,4]", "relu"))
    jobs = _jobs(prep, range(18), (lambda c, p: 100 * c + p[0]) if per_piece else (lambda c, p: 0))
    together = _train(prep, jobs, shared=not per_piece)
    alone = _train(prep, jobs[3:9], max_stack=1, shared=not per_piece)
    odd = _train(prep, jobs[1::2], max_stack=7, shared=not per_piece)
    pairs = [*zip(together[3:9], alone, strict=True), *zip(together[1::2], odd, strict=True)]
    for a, b in pairs:
        assert all(map(torch.equal, a.params, b.params))


@pytest.mark.parametrize("shared", [False, True])
def test_pieces_of_different_nets_in_one_call(preps, shared):
    prep = with_settings(preps("[4,4]", "relu"))
    other = build_mlp(prep.pretrained.sizes, seed=7)
    jobs = _jobs(prep, range(3))
    mixed = [dataclasses.replace(j, source=other) if i % 2 else j for i, j in enumerate(jobs)]
    together = _train(prep, mixed, shared=shared)
    one_by_one = [_train(prep, [j], shared=shared)[0] for j in mixed]
    for a, b in zip(together, one_by_one, strict=True):
        assert all(map(torch.equal, a.params, b.params))
    # each job trains its own source: the same neurons cut from the pretrained net end elsewhere
    own = _train(prep, [jobs[1]], shared=shared)[0]
    assert not torch.equal(own.params[0], together[1].params[0])
    loop = _train(prep, mixed, engine="loop")
    for a, b in zip(together, loop, strict=True):
        for x, y in zip(a.params, b.params, strict=True):
            torch.testing.assert_close(x, y, atol=1e-4, rtol=0)


def test_a_shared_order_needs_one_stream(preps):
    prep = with_settings(preps("[4,4]", "relu"))
    jobs = _jobs(prep, [0], lambda c, p: p[0])
    with pytest.raises(ValueError, match="different streams"):
        _train(prep, jobs, shared=True)


@pytest.mark.parametrize("engine", ["loop", "batched"])
def test_buffers_passed_in_continue_the_optimizer(preps, engine):
    """Steps [0, 13) then [13, 40) with the momentum buffers handed on = steps [0, 40) at once
    (the whole net as one piece, so the buffers can be given back as a net of the same shape)."""
    prep = with_settings(preps("[5,3]", "tanh"))
    net = prep.pretrained
    whole = PieceJob(net, tuple(np.arange(h) for h in net.hidden), 3)
    X, y = (torch.as_tensor(a) for a in prep.data.remaining)
    streams = {3: minibatches(len(X), 32, 3, steps=40)}
    kw = dict(lr=0.05, momentum=0.9, engine=engine)
    once = train_pieces([whole], X, y, streams, steps=(0, 40), **kw)[0]
    first = train_pieces([whole], X, y, streams, steps=(0, 13), **kw)[0]
    mid, bufs = as_mlp(first.params, net.activation), as_mlp(first.buffers, net.activation)
    job = PieceJob(mid, whole.neurons, 3, buffers=bufs)
    second = train_pieces([job], X, y, streams, steps=(13, 40), **kw)[0]
    exact = engine == "loop"  # the loop is torch's SGD: bit for bit
    for u, v in zip([*once.params, *once.buffers], [*second.params, *second.buffers], strict=True):
        torch.testing.assert_close(v, u, atol=0 if exact else 1e-5, rtol=0)
    # without the buffers the second phase restarts the optimizer: another result
    fresh = train_pieces(
        [dataclasses.replace(job, buffers=None)], X, y, streams, steps=(13, 40), **kw
    )
    assert not torch.equal(fresh[0].params[0], second.params[0])


@pytest.mark.parametrize("engine", ["loop", "batched"])
def test_zero_steps_returns_the_cut_pieces(preps, engine):
    prep = with_settings(preps("[4,4]", "relu"))
    jobs = _jobs(prep, [2])
    for job, t in zip(jobs, _train(prep, jobs, engine=engine, steps=0), strict=True):
        assert all(map(torch.equal, t.params, piece_params(prep.pretrained, job.neurons)))


def test_unknown_engine_is_named(preps):
    prep = with_settings(preps("[4,4]", "relu"))
    with pytest.raises(ValueError, match="train.engine='fast'"):
        _train(prep, _jobs(prep, [0]), engine="fast")


def test_loop_engine_is_sgd_on_the_cut_piece(preps):
    """The reference itself: one job of the loop engine = torch.optim.SGD on the extracted net."""
    prep = with_settings(preps("[4,4]", "relu"))
    job = _jobs(prep, [5])[0]
    X, y = (torch.as_tensor(a) for a in prep.data.remaining)
    got = _train(prep, [job], engine="loop")[0]
    ref = experiment.MLP(prep.pretrained.sizes[:1] + (2, 2) + prep.pretrained.sizes[-1:])
    with torch.no_grad():
        for p, v in zip(ref.parameters(), piece_params(prep.pretrained, job.neurons), strict=True):
            p.copy_(v)
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    for idx in minibatches(len(X), 32, 0, steps=40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(X[idx]), y[idx]).backward()
        opt.step()
    assert all(map(torch.equal, got.params, params_of(ref)))


@pytest.mark.mpi
@pytest.mark.parametrize("extra", [[], ["--set", "split.resplit_every=5"]])
def test_mpi_two_ranks_give_the_one_rank_rows(tmp_path, extra):
    args = [
        "-m",
        "splitnet.enumerate",
        "--quiet",
        "--stop",
        "16",
        "--chunk",
        "5",
        "--set",
        "model.hidden=[5,3]",
        "--set",
        "train.pretrain_epochs=1",
        "--set",
        "train.piece_epochs=2",
        *extra,
    ]
    got = {}
    for n in (1, 2):
        out = tmp_path / f"n{n}.jsonl"
        run_mpi(n, [*args, "--out", str(out)], timeout=180)
        got[n] = [json.loads(line) for line in out.read_text().splitlines()]
        for r in got[n]:
            r.pop("seconds")
    assert len(got[1]) == 16 and got[1] == got[2]
    if extra:
        assert all(r["rounds"] > 1 for r in got[1])
    assert np.unique([r["accuracy"] for r in got[1]]).size > 1
