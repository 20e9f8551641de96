"""Iterated split rounds and the recombination options: one-shot = the driver's row, k = 1 = the
baseline for any period, bytes in closed form, stitch moves only its entries, shared rescale in
closed form, results independent of the rank count."""

import copy
import json
import textwrap

import numpy as np
import pytest
import torch
from conftest import run_mpi

from splitnet import config, experiment
from splitnet.combinations import paths
from splitnet.model import build_mlp
from splitnet.rounds import (
    batch_stream,
    dp_step_bytes,
    round_bytes,
    scale_piece,
    train_rounds,
    unscale_recombined,
)
from splitnet.stitch import (
    ensemble_logits,
    held_counts,
    recombine_shared_rescale,
    stitch,
    stitch_masks,
)
from splitnet.subnet import extract, recombine
from splitnet.train import train

FAST = ["model.hidden=[4,4]", "train.pretrain_epochs=5", "train.piece_epochs=2"]


@pytest.fixture(scope="module")
def prep():
    torch.set_num_threads(1)
    return experiment.prepare(config.load(None, FAST))


def _state_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))


def test_one_round_equals_the_one_shot_row(prep):
    for i in (0, 7):
        row = experiment.run_combination(prep, i)
        res = train_rounds(prep, strategy="exhaustive", combination=i, resplit_every=10**9)
        assert res.rounds == 1 and res.total_steps == 2 * 30
        assert res.accuracy == row["accuracy"]
        assert res.piece_accuracies == row["piece_accuracies"]


def test_batch_stream_is_trains_order(prep):
    X, _ = prep.data.remaining
    seed = experiment.remaining_order_seed(prep.config)
    stream = batch_stream(len(X), 61, 32, seed)
    assert len(stream) == 61 and len(stream[29]) == len(X) - 29 * 32  # short last batch
    assert torch.equal(torch.cat(stream[:30]).sort().values, torch.arange(len(X)))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_k1_equals_the_baseline_for_any_period(momentum):
    cfg = config.load(None, [*FAST, "split.groups=1", f"train.momentum={momentum}"])
    p1 = experiment.prepare(cfg)
    ref = copy.deepcopy(p1.pretrained)
    t = cfg.train
    train(ref, *p1.data.remaining, epochs=t.piece_epochs, batch_size=t.batch_size, lr=t.lr,
          momentum=t.momentum, seed=experiment.remaining_order_seed(cfg))
    for period, scale in ((1, "none"), (7, "dropout"), (60, "none")):
        res = train_rounds(p1, strategy="random", resplit_every=period, piece_scale=scale)
        assert _state_equal(res.net, ref), period
        assert res.accuracy == p1.baseline_accuracy


def test_bytes_closed_form():
    torch.set_num_threads(1)
    cfg = config.load(None, ["model.hidden=[4,6]", "train.pretrain_epochs=1",
                             "train.piece_epochs=1"])
    p = experiment.prepare(cfg)
    d, c = p.pretrained.sizes[0], p.pretrained.sizes[-1]  # 64 inputs, 10 classes
    piece = d * 2 + 2 + 2 * 3 + 3 + 3 * c + c  # a straight k=2 piece: [64, 2, 3, 10]
    full = d * 4 + 4 + 4 * 6 + 6 + 6 * c + c
    res = train_rounds(p, strategy="random", k=2, variant="straight", resplit_every=7)
    T = res.total_steps
    assert res.rounds == -(-T // 7)
    assert res.bytes_per_round == [2 * 4 * 2 * piece] * res.rounds
    assert res.bytes_total == res.rounds * 16 * piece
    assert res.dp_bytes_per_step == 8 * (2 - 1) * full and res.dp_bytes_total == T * 8 * full
    assert round_bytes([p.pretrained], momentum=0.9) == 2 * 4 * 2 * full
    assert dp_step_bytes(p.pretrained, 4) == 8 * 3 * full


@pytest.mark.parametrize(("variant", "k"), [("straight", 4), ("all-paths", 2)])
def test_dropout_scaling_round_trip_is_exact(variant, k):
    net = build_mlp([5, 8, 8, 3], seed=2)
    sp = (np.arange(8) % k, (np.arange(8) // 2) % k)
    P = paths(variant, 2, k)
    pieces = [extract(net, sp, p) for p in P]
    for piece in pieces:
        scale_piece(piece, net)
    plain = extract(net, sp, P[0])
    assert torch.equal(pieces[0].linears[0].weight, plain.linears[0].weight)  # first layer: 1
    for m in (1, 2):  # 8 inputs, the piece sees 8/k: factor k
        assert torch.equal(pieces[0].linears[m].weight, plain.linears[m].weight * k)
    out = recombine(net, sp, P, pieces)
    unscale_recombined(out, sp, P)
    assert _state_equal(out, net)


def test_errors(prep):
    with pytest.raises(ValueError, match="resplit_every"):
        train_rounds(prep, resplit_every=0)
    with pytest.raises(ValueError, match="strategy"):
        train_rounds(prep, strategy="nope", resplit_every=5)
    with pytest.raises(ValueError, match="piece_scale"):
        train_rounds(prep, resplit_every=5, piece_scale="nope")
    with pytest.raises(ValueError, match="combination"):
        train_rounds(prep, strategy="exhaustive", resplit_every=5)


def test_stitch_changes_only_unheld_weights_and_the_output(prep):
    net = prep.pretrained
    sp = prep.space.split_at(3)
    P = paths("straight", 2, 2)
    data = prep.data.remaining
    for output in (True, False):
        out = stitch(net, sp, P, data, steps=5, lr=0.1, seed=1, output=output)
        masks = stitch_masks(net, sp, P, output=output)
        for m, (a, b) in enumerate(zip(net.linears, out.linears, strict=True)):
            for pa, pb, mask in ((a.weight, b.weight, masks[m][0]), (a.bias, b.bias, masks[m][1])):
                keep = mask == 0
                assert torch.equal(pa[keep], pb[keep])
                if mask.any():
                    assert not torch.equal(pa[~keep], pb[~keep])
        # unheld = the cross-group hidden-to-hidden weights, exactly
        cross = torch.as_tensor(sp[1][:, None] != sp[0][None, :]).float()
        assert torch.equal(masks[1][0], cross)
        assert masks[0][0].sum() == 0 and masks[1][1].sum() == 0
        assert masks[2][0].all() == output
    # nothing is unheld under all-paths: only the output layer may move
    Pa = paths("all-paths", 2, 2)
    assert all(m.sum() == 0 for pair in stitch_masks(net, sp, Pa)[:-1] for m in pair)


def test_shared_rescale_closed_form_all_paths():
    """Untrained pieces, all-paths k=2: W_1 kept, W_2 and W_out halved, biases kept."""
    net = build_mlp([5, 4, 4, 3], seed=3)
    sp = (np.array([0, 1, 0, 1]), np.array([1, 1, 0, 0]))
    P = paths("all-paths", 2, 2)
    out = recombine_shared_rescale(net, sp, P, [extract(net, sp, p) for p in P])
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
    out = recombine_shared_rescale(net, sp, P, pieces, unheld="zero")
    x = torch.randn(7, 5, generator=g)
    with torch.no_grad():
        assert torch.allclose(out(x), ensemble_logits(pieces, x) / 3, atol=1e-5)
    # straight + pretrained unheld: the same as the existing output="rescale"
    same = recombine_shared_rescale(net, sp, P, pieces, unheld="pretrained")
    ref = recombine(net, sp, P, pieces, unheld="pretrained", output="rescale")
    for u, v in zip(same.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.allclose(u, v)


def test_ensemble_of_one_piece_is_the_net():
    net = build_mlp([5, 4, 3], seed=1)
    x = torch.randn(4, 5)
    with torch.no_grad():
        assert torch.equal(ensemble_logits([net], x), net(x))


SCRIPT = textwrap.dedent("""
    import hashlib, json
    import torch
    from splitnet import config, experiment
    from splitnet.mpi import world
    from splitnet.rounds import train_rounds
    comm = world()
    prep = experiment.prepare(config.load(None, {fast!r}))
    res = train_rounds(prep, strategy="random", k=2, variant="alternating", resplit_every=13,
                       comm=comm)
    h = hashlib.sha256(b"".join(v.numpy().tobytes() for v in res.net.state_dict().values()))
    if comm.Get_rank() == 0:
        print("RESULT " + json.dumps([res.accuracy, h.hexdigest()]))
""")


def test_rank_count_independence(tmp_path, prep):
    import hashlib

    script = tmp_path / "rounds_check.py"
    script.write_text(SCRIPT.format(fast=FAST))
    proc = run_mpi(2, [str(script)])
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    acc, digest = json.loads(line[7:])
    res = train_rounds(prep, strategy="random", k=2, variant="alternating", resplit_every=13)
    h = hashlib.sha256(b"".join(v.numpy().tobytes() for v in res.net.state_dict().values()))
    assert acc == res.accuracy and digest == h.hexdigest()


def test_activation_score_by_hand():
    from splitnet.studies.resplit import activation_score, mean_ci

    # neurons: layer 1 = [a, b], layer 2 = [c, d]; groups {a, c} and {b, d}
    A = np.array([[0, .2, .9, .1],
                  [.2, 0, .3, .7],
                  [.9, .3, 0, .4],
                  [.1, .7, .4, 0]])
    within = (.9 + .7) / 2
    across = (.2 + .1 + .3 + .4) / 4
    assert activation_score(A, (np.array([0, 1]), np.array([0, 1]))) == pytest.approx(
        within - across)
    m, ci = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and ci == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)
