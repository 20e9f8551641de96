"""Iterated split rounds and the recombination options: one-shot is one round, k = 1 is the
baseline for any period, bytes in closed form, stitch moves only its entries, shared rescale in
closed form, random re-splits differ per draw."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from splitnet import config, experiment
from splitnet.combinations import paths
from splitnet.model import build_mlp
from splitnet.pieces import (
    dropout_factors,
    ensemble_logits,
    extract,
    held_counts,
    params_of,
    piece_neurons,
    recombine,
    scale_for_dropout,
    unscale_recombined,
)
from splitnet.rounds import dp_step_bytes, round_bytes, schedule, train_rounds
from splitnet.seeds import remaining_order_seed, split_seed
from splitnet.sgd import train
from splitnet.split import random_split, split_for
from splitnet.stitch import stitch, stitch_masks

FAST = ["model.hidden=[4,4]", "train.pretrain_epochs=5", "train.piece_epochs=2"]


@pytest.fixture(scope="module")
def prep():
    torch.set_num_threads(1)
    return experiment.prepare(config.load(None, FAST))


def _with(prep, **split):
    cfg = dataclasses.replace(prep.config, split=dataclasses.replace(prep.config.split, **split))
    return cfg


def _state_equal(a, b) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def _rounds(prep, combos, **split):
    return train_rounds(prep.pretrained, prep.data, _with(prep, **split), combos, space=prep.space)


def _prep_with(prep, **split):
    """``prep`` with other split.* settings (same pretrained net and data), for rows."""
    cfg = _with(prep, **split)
    space = prep.space if cfg.split.strategy == "exhaustive" else None
    return dataclasses.replace(prep, config=cfg, experiment=cfg, space=space, _identity=None)


def test_one_shot_is_one_round_of_the_whole_budget(prep):
    T = 2 * 30  # 2 epochs of 30 minibatches of the remaining data
    one = _rounds(prep, [0, 7], resplit_every=0)
    for every in (T, T + 1, 10**6):
        long = _rounds(prep, [0, 7], resplit_every=every)
        for a, b in zip(one, long, strict=True):
            assert a.rounds == b.rounds == 1 and a.total_steps == T and a.curve == b.curve
            assert a.curve[0][0] == T and b.resplit_every == a.resplit_every == T
            assert _state_equal(a.net, b.net)
            assert all(
                map(torch.equal, (t for p in a.pieces for t in p), (t for p in b.pieces for t in p))
            )
    # a period one step short of the budget: two rounds, the second of one step
    two = _rounds(prep, [0], resplit_every=T - 1)[0]
    assert two.rounds == 2 and [s for s, _ in two.curve] == [T - 1, T]
    n = len(prep.data.remaining[0])
    assert schedule(_with(prep, resplit_every=7), n) == (T, 7, 9)
    assert schedule(_with(prep, resplit_every=0), n, total_steps=0) == (0, 0, 1)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_k1_equals_the_baseline_for_any_period(momentum):
    cfg = config.load(
        None, [*FAST, "split.groups=1", f"train.momentum={momentum}", "split.strategy=random"]
    )
    p1 = experiment.prepare(cfg)
    ref = copy.deepcopy(p1.pretrained)
    t = cfg.train
    train(
        ref,
        *p1.data.remaining,
        epochs=t.piece_epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        momentum=t.momentum,
        seed=remaining_order_seed(cfg),
    )
    for period, scale in ((1, "none"), (7, "dropout"), (60, "none")):
        for engine in ("loop", "batched"):
            c = dataclasses.replace(
                cfg,
                split=dataclasses.replace(cfg.split, resplit_every=period, piece_scale=scale),
                train=dataclasses.replace(cfg.train, engine=engine),
            )
            res = train_rounds(p1.pretrained, p1.data, c, [0])[0]
            if engine == "loop":  # the loop engine is torch's SGD: bit for bit
                assert _state_equal(res.net, ref), period
                assert res.accuracy_before_stitch == p1.baseline_accuracy
            else:  # the batched twin: float rounding
                for u, v in zip(res.net.parameters(), ref.parameters(), strict=True):
                    torch.testing.assert_close(u, v, atol=1e-4, rtol=0)


def test_bytes_closed_form():
    torch.set_num_threads(1)
    cfg = config.load(
        None,
        [
            "model.hidden=[4,6]",
            "train.pretrain_epochs=1",
            "train.piece_epochs=1",
            "split.strategy=random",
            "split.resplit_every=7",
        ],
    )
    p = experiment.prepare(cfg)
    d, c = p.pretrained.sizes[0], p.pretrained.sizes[-1]  # 64 inputs, 10 classes
    piece = d * 2 + 2 + 2 * 3 + 3 + 3 * c + c  # a straight k=2 piece: [64, 2, 3, 10]
    full = d * 4 + 4 + 4 * 6 + 6 + 6 * c + c
    res = train_rounds(p.pretrained, p.data, cfg, [0])[0]
    T = res.total_steps
    assert res.rounds == -(-T // 7) == len(res.curve) == len(res.cut_fractions)
    assert res.bytes_per_round == [2 * 4 * 2 * piece] * res.rounds
    assert res.bytes_total == res.rounds * 16 * piece
    assert res.dp_bytes_per_step == 8 * (2 - 1) * full and res.dp_bytes_total == T * 8 * full
    assert round_bytes([params_of(p.pretrained)], momentum=0.9) == 2 * 4 * 2 * full
    assert dp_step_bytes(p.pretrained, 4) == 8 * 3 * full


def test_random_resplits_differ_per_draw_and_per_round(prep):
    """Every draw (combination) and every round of the random strategy splits anew: the round
    seed derives from the combination and the round."""
    res = _rounds(prep, [0, 1, 2], strategy="random", resplit_every=13)
    finals = [tuple(np.concatenate(r.split)) for r in res]
    assert len(set(finals)) == 3
    cfg = _with(prep, strategy="random", resplit_every=13)
    for r in res:  # the last round's split is draw c of round R - 1, whatever the net
        want = random_split((4, 4), 2, split_seed(cfg, r.combination, r.rounds - 1))
        assert all(np.array_equal(a, b) for a, b in zip(r.split, want, strict=True))
    # 3 draws x 5 rounds of a wider net: 15 different splits (4 + 4 neurons have only 36)
    wide = build_mlp([3, 10, 10, 2], seed=0)
    drawn = {
        tuple(np.concatenate(split_for(cfg, wide, c, rd))) for c in range(3) for rd in range(5)
    }
    assert len(drawn) == 15 and res[0].rounds == 5
    # round 0 of draw i is the one-shot split of draw i; later rounds re-draw
    one_shot = _rounds(prep, [1], strategy="random")[0]
    again = _rounds(prep, [1], strategy="random", resplit_every=10**6)[0]
    assert all(np.array_equal(a, b) for a, b in zip(one_shot.split, again.split, strict=True))
    assert res[1].rounds > 1
    # and through the rows: every draw is its own run
    rows = experiment.run_combinations(
        _prep_with(prep, strategy="random", resplit_every=13), [0, 1, 2]
    )
    assert len({json.dumps(r["split"]) for r in rows}) == 3
    assert len({json.dumps(r["curve"]) for r in rows}) > 1
    assert [r["rounds"] for r in rows] == [5, 5, 5]


def test_momentum_rounds_batched_rows_match_the_loop(prep):
    """Momentum buffers carried through re-split rounds: the batched twin = the loop, to a flip."""
    settings = dict(strategy="random", resplit_every=9, variant="alternating")
    rows, results = {}, {}
    for engine in ("loop", "batched"):
        p = _prep_with(prep, **settings)
        cfg = dataclasses.replace(
            p.config, train=dataclasses.replace(p.config.train, momentum=0.9, engine=engine)
        )
        p = dataclasses.replace(p, config=cfg, experiment=cfg)
        rows[engine] = experiment.run_combinations(p, [0, 1, 2])
        results[engine] = train_rounds(p.pretrained, p.data, cfg, [0, 1, 2])
    flip = 1 / len(prep.data.test[1]) + 1e-12
    for a, b in zip(rows["loop"], rows["batched"], strict=True):
        assert a["rounds"] == b["rounds"] == 7 and a["split"] == b["split"]
        assert abs(a["accuracy"] - b["accuracy"]) <= flip
        assert abs(a["ensemble_accuracy"] - b["ensemble_accuracy"]) <= flip
        for (s, u), (t, v) in zip(a["curve"], b["curve"], strict=True):
            assert s == t and abs(u - v) <= flip
    for a, b in zip(results["loop"], results["batched"], strict=True):
        for x, y in zip(a.net.parameters(), b.net.parameters(), strict=True):
            torch.testing.assert_close(y, x, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("variant", "k"), [("straight", 4), ("all-paths", 2)])
def test_dropout_scaling_round_trip_is_exact(variant, k):
    net = build_mlp([5, 8, 8, 3], seed=2)
    sp = (np.arange(8) % k, (np.arange(8) // 2) % k)
    P = paths(variant, 2, k)
    pieces = []
    for p in P:
        params = params_of(extract(net, sp, p))
        scale_for_dropout(params, dropout_factors(net, piece_neurons(sp, p)))
        pieces.append(params)
    plain = params_of(extract(net, sp, P[0]))
    assert torch.equal(pieces[0][0], plain[0])  # first layer: factor 1
    for m in (2, 4):  # 8 inputs, the piece sees 8/k: factor k
        assert torch.equal(pieces[0][m], plain[m] * k)
    out = recombine(net, sp, P, pieces)
    unscale_recombined(out, sp, P)
    assert _state_equal(out, net)


def test_bad_settings_are_named(prep):
    with pytest.raises(ValueError, match="split.resplit_every=-1"):
        config.load(None, [*FAST, "split.resplit_every=-1"])
    with pytest.raises(ValueError, match="split.strategy='nope'"):
        config.load(None, [*FAST, "split.strategy=nope", "split.resplit_every=5"])
    with pytest.raises(ValueError, match="total_steps=-1"):
        train_rounds(prep.pretrained, prep.data, prep.config, [0], total_steps=-1)
    with pytest.raises(ValueError, match="split.strategy='nope'"):
        train_rounds(prep.pretrained, prep.data, _with(prep, strategy="nope"), [0])
    with pytest.raises(ValueError, match="split.piece_scale='nope'"):
        config.load(None, [*FAST, "split.piece_scale=nope"])
    with pytest.raises(ValueError, match="combination 99 is outside"):
        experiment.run_combinations(prep, [99])


def test_stitch_changes_only_unheld_weights_and_the_output(prep):
    net = prep.pretrained
    sp = prep.space.split_at(3)
    P = paths("straight", 2, 2)
    data = prep.data.remaining
    for output in (True, False):
        out = stitch(net, sp, P, data, steps=5, lr=0.1, seed=1, output=output)
        masks = stitch_masks(net, sp, P, output=output)  # weight, bias of every Linear
        params = list(zip(net.parameters(), out.parameters(), strict=True))
        for (pa, pb), mask in zip(params, masks, strict=True):
            keep = mask == 0
            assert torch.equal(pa[keep], pb[keep])
            if mask.any():
                assert not torch.equal(pa[~keep], pb[~keep])
        # unheld = the cross-group hidden-to-hidden weights, exactly
        cross = torch.as_tensor(sp[1][:, None] != sp[0][None, :]).float()
        assert torch.equal(masks[2], cross)
        assert masks[0].sum() == 0 and masks[3].sum() == 0
        assert bool(masks[4].all()) == output
    # nothing is unheld under all-paths: only the output layer may move
    Pa = paths("all-paths", 2, 2)
    assert all(m.sum() == 0 for m in stitch_masks(net, sp, Pa)[:-2])


def test_shared_rescale_closed_form_all_paths():
    """Untrained pieces, all-paths k=2: W_1 kept, W_2 and W_out halved, biases kept."""
    net = build_mlp([5, 4, 4, 3], seed=3)
    sp = (np.array([0, 1, 0, 1]), np.array([1, 1, 0, 0]))
    P = paths("all-paths", 2, 2)
    out = recombine(
        net, sp, P, [extract(net, sp, p) for p in P], unheld="zero", output="shared-rescale"
    )
    a, b = net.linears, out.linears
    assert torch.equal(b[0].weight, a[0].weight)
    assert torch.allclose(b[1].weight, a[1].weight / 2)
    assert torch.allclose(b[2].weight, a[2].weight / 2)
    for la, lb in zip(a, b, strict=True):
        assert torch.equal(la.bias, lb.bias)
    cw, cb = held_counts(net, sp, P)[2]
    assert (cw == 2).all() and (cb == 4).all()


def test_shared_rescale_straight_is_the_mean_of_the_pieces():
    net = build_mlp([5, 6, 6, 3], seed=4)
    sp = (np.array([0, 1, 2, 0, 1, 2]), np.array([2, 1, 0, 0, 1, 2]))
    P = paths("straight", 2, 3)
    pieces = [extract(net, sp, p) for p in P]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for piece in pieces:  # stand-in for training: every piece moves differently
            for q in piece.parameters():
                q.add_(0.3 * torch.randn(q.shape, generator=g))
    out = recombine(net, sp, P, pieces, unheld="zero", output="shared-rescale")
    x = torch.randn(7, 5, generator=g)
    with torch.no_grad():
        assert torch.allclose(out(x), ensemble_logits(pieces, "relu", x) / 3, atol=1e-5)
    # straight + pretrained unheld: the same as output="rescale"
    same = recombine(net, sp, P, pieces, unheld="pretrained", output="shared-rescale")
    ref = recombine(net, sp, P, pieces, unheld="pretrained", output="rescale")
    for u, v in zip(same.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.allclose(u, v)


def test_ensemble_of_one_piece_is_the_net():
    net = build_mlp([5, 4, 3], seed=1)
    x = torch.randn(4, 5)
    with torch.no_grad():
        assert torch.equal(ensemble_logits([net], "relu", x), net(x))
