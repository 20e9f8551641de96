"""IST's BatchNorm architecture (model.norm = "batch"): pieces carry the BatchNorm parameters and
running statistics of their neurons, recombination is defined for them, and everything that
trains or evaluates one agrees with torch's own ``nn.BatchNorm1d``.

The reference for cut and recombine is a re-statement of Independent Subnet Training's released
code (github.com/BinhangYuan/IST_Release, ``partition_to_list`` / ``flush``): a shuffled index
list cut into k equal parts; fc rows, bn weight/bias by those indices, the next fc's columns;
after training every part written back to its indices.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import driver_on_one_and_two_ranks
from torch import nn

from splitnet import config, experiment
from splitnet.combinations import paths
from splitnet.engines import PieceJob, train_pieces
from splitnet.model import MLP, build_mlp
from splitnet.pieces import (
    as_mlp,
    extract,
    fold,
    forward,
    inference_net,
    layout_of,
    pack,
    params_of,
    piece_neurons,
    piece_params,
    recombine,
    restat,
    unpack,
)
from splitnet.rounds import train_rounds
from splitnet.sgd import minibatches, sgd
from splitnet.split import random_split
from splitnet.stitch import stitch

SIZES = [6, 8, 6, 3]


def trained_bn(seed=0, sizes=SIZES) -> tuple[MLP, torch.Tensor, torch.Tensor]:
    """A BatchNorm MLP after a few SGD steps (non-trivial g, beta and running statistics)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(64, sizes[0], generator=g)
    y = torch.randint(0, sizes[-1], (64,), generator=g)
    net = build_mlp(sizes, seed=seed, norm="batch")
    sgd(net, X, y, minibatches(64, 16, seed, steps=8), lr=0.1)
    return net, X, y


def test_the_architecture_is_ist_s():
    net = build_mlp(SIZES, norm="batch")
    lins, bns = net.linears, net.norms
    assert all(lin.bias is None for lin in lins)  # bias-free Linear
    assert [bn.num_features for bn in bns] == SIZES[1:]
    assert all(bn.affine for bn in bns[:-1]) and not bns[-1].affine  # affine-free on the logits
    # the layout is the state_dict without the batch counters, in order
    keys = [k for k in net.state_dict() if "num_batches" not in k]
    assert [e.name for e in layout_of(net)] == keys
    plain = build_mlp(SIZES)
    assert [e.name for e in layout_of(plain)] == list(plain.state_dict())
    with pytest.raises(ValueError, match="norm='layer'"):
        MLP(SIZES, norm="layer")


def test_hidden_activations_are_after_the_nonlinearity():
    net, X, _ = trained_bn()
    acts = net.hidden_activations(X)
    assert [a.shape[1] for a in acts] == SIZES[1:-1]
    assert all((a >= 0).all() for a in acts)  # relu outputs, not BatchNorm outputs


@pytest.mark.parametrize("variant", ["straight", "alternating", "all-paths"])
def test_split_then_recombine_without_training_is_identity(variant):
    net, _, _ = trained_bn()
    split = random_split(tuple(SIZES[1:-1]), 2, seed=1)
    P = paths(variant, 2, 2)
    pieces = [extract(net, split, p) for p in P]
    out = recombine(net, split, P, pieces)
    for (k, a), b in zip(net.state_dict().items(), out.state_dict().values(), strict=True):
        if "num_batches" not in k:
            assert torch.equal(a, b), k


def test_a_piece_carries_the_statistics_of_its_neurons():
    net, _, _ = trained_bn()
    split = random_split(tuple(SIZES[1:-1]), 2, seed=2)
    S = piece_neurons(split, (1, 1))
    piece = extract(net, split, (1, 1))
    for bn_piece, bn, rows in zip(piece.norms[:-1], net.norms[:-1], S, strict=True):
        for name in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(getattr(bn_piece, name), getattr(bn, name)[torch.as_tensor(rows)])
    for name in ("running_mean", "running_var"):  # the logits' statistics: all of them
        assert torch.equal(getattr(piece.norms[-1], name), getattr(net.norms[-1], name))
    back = unpack(piece.sizes, pack(piece), "batch")
    assert all(torch.equal(a, b) for a, b in zip(params_of(piece), back, strict=True))
    with pytest.raises(ValueError, match="has"):
        unpack(piece.sizes, pack(piece)[:-1], "batch")


# --- IST's released partition and flush, re-stated ------------------------------------------


def ist_partition(net: MLP, index_lists: list[torch.Tensor]) -> list[dict]:
    """partition_FC_layer_by_output_dim_0 / partition_BN_layer / ..._by_input_dim_1, per part
    (one hidden layer: IST's DNNGoogleSpeechBatchNorm2Layer)."""
    fc1, bn1, fc2 = net[0], net[1], net[3]
    return [
        {
            "fc1": fc1.weight.data[idx].clone(),
            "bn1_w": bn1.weight.data[idx].clone(),
            "bn1_b": bn1.bias.data[idx].clone(),
            "fc2": fc2.weight.data[:, idx].clone(),
        }
        for idx in index_lists
    ]


def ist_flush(net: MLP, parts: list[dict], index_lists: list[torch.Tensor]) -> None:
    """update_tensor_by_update_lists_dim_0 / _dim_1: every part written back to its indices."""
    fc1, bn1, fc2 = net[0], net[1], net[3]
    for part, idx in zip(parts, index_lists, strict=True):
        fc1.weight.data[idx] = part["fc1"]
        bn1.weight.data[idx] = part["bn1_w"]
        bn1.bias.data[idx] = part["bn1_b"]
        fc2.weight.data[:, idx] = part["fc2"]


def test_cut_and_recombine_equal_ist_s_partition_and_flush():
    sizes, k = [6, 12, 3], 3
    net, X, y = trained_bn(seed=4, sizes=sizes)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(7))
    index_lists = [perm[i * 4 : (i + 1) * 4] for i in range(k)]  # IST: shuffled, k equal parts
    labels = np.empty(12, np.int64)
    for g, idx in enumerate(index_lists):
        labels[idx.numpy()] = g
    split, P = [labels], paths("straight", 1, k)
    # our pieces keep the neurons sorted, IST's parts the shuffled order: compare by neuron
    ours = [piece_params(net, piece_neurons(split, p)) for p in P]
    for p, part, idx in zip(ours, ist_partition(net, index_lists), index_lists, strict=True):
        order = torch.argsort(idx)  # IST's part rows -> sorted neuron order
        W1, g1, b1, _, _, W2, _, _ = p
        assert torch.equal(W1, part["fc1"][order]) and torch.equal(W2, part["fc2"][:, order])
        assert torch.equal(g1, part["bn1_w"][order]) and torch.equal(b1, part["bn1_b"][order])
    # train every piece (IST: each on its worker), then flush vs recombine
    trained = []
    for g, p in enumerate(ours):
        piece = as_mlp(p, "relu", "batch")
        sgd(piece, X, y, minibatches(64, 16, 10 + g, steps=5), lr=0.1)
        trained.append(piece)
    ist = copy.deepcopy(net)
    parts = []
    for piece, idx in zip(trained, index_lists, strict=True):
        rank = torch.argsort(torch.argsort(idx))  # sorted order -> IST's part order
        parts.append(
            {
                "fc1": piece[0].weight.data[rank],
                "bn1_w": piece[1].weight.data[rank],
                "bn1_b": piece[1].bias.data[rank],
                "fc2": piece[3].weight.data[:, rank],
            }
        )
    ist_flush(ist, parts, index_lists)
    out = recombine(net, split, P, trained)  # output "sum": IST's fc2 column write-back
    for a, b in zip(ist.parameters(), out.parameters(), strict=True):
        assert torch.equal(a, b)


# --- evaluation, statistics, training ---------------------------------------------------------


def test_folded_forward_is_torch_s_eval_mode_batchnorm():
    net, X, _ = trained_bn()
    net.eval()
    with torch.no_grad():
        ref = net(X)
    ours = forward(params_of(net), "relu", X, "batch")
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.equal(ours.argmax(1), ref.argmax(1))
    assert len(fold(params_of(net), "batch")) == 2 * len(net.linears)


def test_restat_gives_the_statistics_of_the_data():
    net, X, _ = trained_bn()
    out = restat(net, X)
    z = X
    for lin, bn, bn_ref in zip(out.linears, out.norms, net.norms, strict=True):
        z = z @ lin.weight.T
        assert torch.allclose(bn.running_mean, z.mean(0), atol=1e-6)
        assert torch.allclose(bn.running_var, z.var(0, unbiased=True), atol=1e-5)
        z = nn.functional.batch_norm(z, None, None, bn.weight, bn.bias, training=True)
        z = torch.relu(z) if bn.affine else z
        assert bn.momentum == bn_ref.momentum  # restored
    for a, b in zip(net.parameters(), out.parameters(), strict=True):
        assert torch.equal(a, b)  # parameters untouched
    assert inference_net(net, X, "average") is net
    plain = build_mlp(SIZES)
    assert inference_net(plain, X, "reestimate") is plain


def test_the_loop_engine_trains_a_bn_piece_as_sgd_does():
    net, X, y = trained_bn()
    split = random_split(tuple(SIZES[1:-1]), 2, seed=5)
    neurons = tuple(piece_neurons(split, (0, 0)))
    streams = {3: minibatches(64, 16, 3, steps=6)}
    (tp,) = train_pieces([PieceJob(net, neurons, 3)], X, y, streams, steps=(0, 6), lr=0.1,
                         engine="loop")  # fmt: skip
    ref = extract(net, split, (0, 0))
    sgd(ref, X, y, streams[3], lr=0.1)
    assert all(torch.equal(a, b) for a, b in zip(tp.params, params_of(ref), strict=True))


def test_stitch_leaves_gamma_and_beta_alone():
    net, X, y = trained_bn()
    split = random_split(tuple(SIZES[1:-1]), 2, seed=6)
    P = paths("straight", 2, 2)
    out = stitch(net, split, P, (X, y), steps=4, lr=0.1, seed=0, batch_size=16)
    for bn, ref in zip(out.norms[:-1], net.norms[:-1], strict=True):
        assert torch.equal(bn.weight, ref.weight) and torch.equal(bn.bias, ref.bias)
    assert not torch.equal(out.linears[-1].weight, net.linears[-1].weight)


# --- the config and the pipeline ------------------------------------------------------------

TINY = [
    "model.hidden=[4,4]",
    "model.norm=batch",
    "train.engine=loop",
    "train.pretrain_epochs=2",
    "train.piece_epochs=1",
]


def test_bad_norm_settings_are_named():
    with pytest.raises(ValueError, match="model.norm='layer'"):
        config.load(None, ["model.norm=layer"])
    with pytest.raises(ValueError, match="train.engine='batched'"):
        config.load(None, ["model.norm=batch"])  # the batched kernel has no BatchNorm
    with pytest.raises(ValueError, match="split.norm_stats='mean'"):
        config.load(None, ["split.norm_stats=mean"])
    assert config.Config().hash() == "7050a60695148db9"  # old files still resume


@pytest.mark.parametrize("extra", [[], ["train.momentum=0.9", "split.resplit_every=7"]])
def test_one_piece_rounds_reproduce_the_baseline_exactly(extra):
    """k = 1: one-shot, and rounds whose momentum buffers travel through recombination."""
    cfg = config.load(None, [*TINY, "split.groups=1", "split.norm_stats=average", *extra])
    prep = experiment.prepare(cfg)
    (res,) = train_rounds(prep.pretrained, prep.data, cfg, [0])
    base = experiment.baseline(cfg, prep.data, prep.pretrained)
    for (k, a), b in zip(base.state_dict().items(), res.net.state_dict().values(), strict=True):
        if "num_batches" not in k:
            assert torch.equal(a, b), k
    assert res.accuracy_before_stitch == prep.baseline_accuracy


def test_driver_rows_with_batchnorm():
    cfg = config.load(None, [*TINY, "split.resplit_every=10"])
    prep = experiment.prepare(cfg)
    rows = experiment.run_combinations(prep, [0, 5])
    assert [r["combination"] for r in rows] == [0, 5]
    for r in rows:
        assert 0 < r["accuracy"] <= 1 and len(r["piece_accuracies"]) == 2
        assert r["rounds"] == 3  # 24 steps in rounds of 10
    again = experiment.run_combinations(prep, [5])
    assert again[0]["accuracy"] == rows[1]["accuracy"]  # a combination's row alone


def test_a_minibatch_of_one_is_refused_before_training():
    # digits: 943 remaining samples; 943 = 2 * 471 + 1
    cfg = config.load(None, [*TINY, "train.batch_size=471"])
    with pytest.raises(ValueError, match="train.batch_size=471 leaves a minibatch of 1"):
        experiment.prepare(cfg)


@pytest.mark.mpi
def test_the_driver_writes_the_same_batchnorm_rows_on_one_and_two_ranks(tmp_path):
    """Rank 0 pretrains and broadcasts the state (BatchNorm statistics included)."""
    args = [x for s in [*TINY, "split.resplit_every=10"] for x in ("--set", s)] + ["--quiet"]
    args += ["--stop", "6"]
    one, two = driver_on_one_and_two_ranks(tmp_path, args)
    assert one == two and len(one) == 6
    assert one[0]["config"]["model"]["norm"] == "batch"


def test_copies_are_in_eval_mode_and_inspecting_them_changes_nothing():
    net, X, _ = trained_bn()
    piece = extract(net, random_split(tuple(SIZES[1:-1]), 2, seed=8), (0, 0))
    assert not piece.training
    before = [t.clone() for t in params_of(piece)]
    piece.hidden_activations(X)  # what the activations split does to a recombined net
    assert all(torch.equal(a, b) for a, b in zip(before, params_of(piece), strict=True))
