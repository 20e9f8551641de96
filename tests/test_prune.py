"""Pruning against torch.nn.utils.prune (masks bit for bit) and the shrunk-net semantics."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.utils.prune as tprune
from conftest import run_study
from torch import nn

from splitnet.model import build_mlp
from splitnet.parallel.prune import (
    connection_masks,
    csr_predictor,
    finetune,
    neurons_to_keep,
    prune_by,
    prune_connections,
    prune_neurons,
    sparsity,
)
from splitnet.parallel.tensor_parallel import ChunkedMLP


def linears(m):
    return [x for x in m if isinstance(x, nn.Linear)]


def tied_mlp(seed=0, activation="relu"):
    """Weights on a coarse grid, so many |w| tie and the tie-breaking is exercised."""
    net = build_mlp([6, 9, 7, 4], activation=activation, seed=seed)
    with torch.no_grad():
        for lin in linears(net):
            lin.weight.copy_(torch.round(lin.weight * 8) / 8)
    return net


@pytest.mark.parametrize("amount", [0.0, 0.3, 0.5, 0.77, 1.0, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_layer_masks_equal_l1_unstructured(amount, seed):
    net = tied_mlp(seed)
    ref = copy.deepcopy(net)
    for lin in linears(ref):
        tprune.l1_unstructured(lin, "weight", amount=amount)
    ours = connection_masks(net, amount, scope="layer")
    for mask, lin in zip(ours, linears(ref), strict=True):
        assert torch.equal(mask, lin.weight_mask)
    pruned = prune_connections(net, amount, scope="layer")
    for a, lin in zip(linears(pruned), linears(ref), strict=True):
        assert torch.equal(a.weight, lin.weight)


@pytest.mark.parametrize("amount", [0.0, 0.25, 0.6, 0.9, 40])
def test_global_masks_equal_global_unstructured(amount):
    net = tied_mlp(2)
    ref = copy.deepcopy(net)
    tprune.global_unstructured(
        [(lin, "weight") for lin in linears(ref)],
        pruning_method=tprune.L1Unstructured,
        amount=amount,
    )
    for mask, lin in zip(connection_masks(net, amount, scope="global"), linears(ref), strict=True):
        assert torch.equal(mask, lin.weight_mask)
    n = sum(lin.weight.numel() for lin in linears(net))
    expected = amount if isinstance(amount, int) else round(amount * n)
    assert sum(int((m == 0).sum()) for m in connection_masks(net, amount, "global")) == expected


def test_threshold_and_output_layer_option():
    net = build_mlp([5, 8, 3], seed=0)
    pruned = prune_connections(net, threshold=0.2, include_output=False)
    (w0, w1), (p0, p1) = [lin.weight for lin in linears(net)], [x.weight for x in linears(pruned)]
    assert torch.equal(p0, torch.where(w0.abs() < 0.2, torch.zeros_like(w0), w0))
    assert torch.equal(p1, w1)  # output layer left alone
    assert 0 < sparsity(pruned) < 1 and sparsity(net) == 0
    assert torch.equal(linears(net)[0].weight, w0)  # the input module is not modified


@pytest.mark.parametrize("amount", [0.0, 0.34, 0.5, 3])
def test_neuron_selection_equals_ln_structured(amount):
    net = tied_mlp(3)
    for lin, kept in zip(linears(net)[:-1], neurons_to_keep(net, amount, "l2"), strict=True):
        ref = copy.deepcopy(lin)
        tprune.ln_structured(ref, "weight", amount=amount, n=2, dim=0)
        rows = torch.nonzero(ref.weight_mask.any(dim=1)).flatten()
        assert torch.equal(kept, rows)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_shrunk_net_equals_torch_masked_net(activation):
    """fold_bias=True: the smaller net computes exactly torch's masked net (bias kept)."""
    net = build_mlp([6, 10, 8, 3], activation=activation, seed=4).double()
    with torch.no_grad():
        for lin in linears(net):
            lin.bias.uniform_(-1, 1)  # biases large enough to matter
    masked = copy.deepcopy(net)
    for lin in linears(masked)[:-1]:
        tprune.ln_structured(lin, "weight", amount=0.4, n=2, dim=0)
    small = prune_neurons(net, 0.4)
    assert small.sizes == (6, 6, 5, 3) and [x.out_features for x in linears(small)] == [6, 5, 3]
    x = torch.randn(32, 6, dtype=torch.float64)
    torch.testing.assert_close(small(x), masked(x), atol=1e-12, rtol=0)
    if activation != "relu":  # the fold is what makes them equal
        unfolded = prune_neurons(net, 0.4, fold_bias=False)
        assert (unfolded(x) - masked(x)).abs().max() > 1e-3


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_unfolded_removal_equals_zeroed_outgoing_columns(activation):
    net = build_mlp([5, 7, 6, 2], activation=activation, seed=5).double()
    keep = neurons_to_keep(net, 0.5)
    ref = copy.deepcopy(net)
    with torch.no_grad():
        for l, kept in enumerate(keep):
            gone = torch.ones(linears(ref)[l].out_features, dtype=torch.bool)
            gone[kept] = False
            linears(ref)[l + 1].weight[:, gone] = 0
    small = prune_neurons(net, 0.5, fold_bias=False)
    x = torch.randn(16, 5, dtype=torch.float64)
    torch.testing.assert_close(small(x), ref(x), atol=1e-12, rtol=0)


def test_activity_criterion_and_at_least_one_neuron():
    net = build_mlp([4, 6, 2], seed=6)
    X = torch.randn(50, 4)
    with torch.no_grad():
        act = torch.relu(linears(net)[0](X)).abs().mean(0)
    kept = neurons_to_keep(net, 0.5, "activity", X)[0]
    assert set(kept.tolist()) == set(torch.topk(act, 3).indices.tolist())
    assert linears(prune_neurons(net, 1.0))[0].out_features == 1  # never empty a layer


def test_finetune_keeps_pruned_weights_at_zero():
    net = prune_connections(build_mlp([4, 8, 3], seed=7), 0.5, scope="global")
    zeros = [lin.weight == 0 for lin in linears(net)]
    before = [lin.weight.clone() for lin in linears(net)]
    X, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    finetune(net, X, y, epochs=2, lr=0.1)
    for z, b, lin in zip(zeros, before, linears(net), strict=True):
        assert (lin.weight[z] == 0).all() and not torch.equal(lin.weight, b)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_finetune_is_the_seeds_remasking_torch_loop(activation):
    """``finetune`` (sgd with gradient masks w != 0) equals the seeds' loop exactly: a
    torch.optim.SGD step, then the pruned weights multiplied back to 0, on one randperm of
    ``Generator().manual_seed(seed)`` per epoch (a partial last batch included)."""
    net = prune_connections(build_mlp([6, 9, 7, 4], activation, seed=3), 0.6, scope="global")
    ref = copy.deepcopy(net)
    X, y = torch.randn(50, 6), torch.randint(0, 4, (50,))
    finetune(net, X, y, epochs=3, lr=0.1, batch_size=8, seed=5)
    masks = [(lin.weight != 0).float() for lin in linears(ref)]
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(5)
    for _ in range(3):
        order = torch.randperm(50, generator=gen)
        for i in range(0, 50, 8):
            idx = order[i : i + 8]
            opt.zero_grad()
            nn.functional.cross_entropy(ref(X[idx]), y[idx]).backward()
            opt.step()
            with torch.no_grad():
                for lin, m in zip(linears(ref), masks, strict=True):
                    lin.weight.mul_(m)
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)  # equal values (a re-zeroed weight may be -0.0 there)
    assert not net.training


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda n: connection_masks(n, 1.5), "amount=1.5"),
        (lambda n: connection_masks(n, 0.5, scope="row"), "scope='row'"),
        (lambda n: connection_masks(n, 0.5, threshold=0.1), "exactly one"),
        (lambda n: connection_masks(n, 999), "amount=999"),
        (lambda n: prune_neurons(n, 0.5, criterion="l3"), "criterion='l3'"),
        (lambda n: prune_neurons(n, 0.5, criterion="activity"), "needs data X"),
        (lambda n: prune_neurons(n, True), "amount=True"),
    ],
)
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call(build_mlp([3, 4, 2], seed=0))


def test_pruned_net_runs_tensor_parallel():
    """A neuron-pruned net is a plain Sequential again: ChunkedMLP takes it as is."""
    small = prune_neurons(build_mlp([8, 16, 16, 4], seed=8), 0.75)
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    out = ChunkedMLP.from_torch(small).forward(x)
    np.testing.assert_allclose(out, small(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_csr_forward_equals_the_dense_forward(activation):
    """The CSR predictor of a pruned net computes the dense torch forward, feature-major."""
    net = prune_connections(tied_mlp(activation=activation), 0.6, scope="global")
    X = torch.randn(7, net.sizes[0])
    with torch.no_grad():
        dense = net(X).numpy().T
    sparse = csr_predictor(net)(np.ascontiguousarray(X.numpy().T))
    assert sparse.shape == dense.shape == (net.sizes[-1], 7)
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-6)


def test_csr_predictor_refuses_a_layer_it_cannot_run():
    with pytest.raises(ValueError, match="csr_predictor takes Linear .with bias."):
        csr_predictor(build_mlp([4, 3, 2], norm="batch"))


def test_prune_by_names_the_method():
    net = tied_mlp()
    assert prune_by(net, "neurons-l2", 0.5).sizes == prune_neurons(net, 0.5, "l2").sizes
    with pytest.raises(ValueError, match="method='neurons-l3' is not one of"):
        prune_by(net, "neurons-l3", 0.5)


def test_pruning_study_smoke(tmp_path):
    """The study writes one row per (method, fraction, finetuned) and the figure, under
    results/pruning/ of the directory it runs in (never into the committed figures/)."""
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        "hidden = [16, 16]\nepochs = 1\nfractions = [0.0, 0.5]\nfinetune_epochs = 1\n"
        'methods = ["connections-global", "neurons-l2"]\n'
        "timing_min_time = 0.0001\ntiming_repeats = 1\n"
    )
    proc = run_study("pruning", [str(cfg)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "results" / "pruning"
    rows = [json.loads(line) for line in (out / "pruning.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 2 and (out / "pruning.png").stat().st_size > 0
    assert not (tmp_path / "figures").exists()
    shrunk = [r for r in rows if r["method"] == "neurons-l2" and r["fraction"] == 0.5]
    assert shrunk[0]["sizes"] == [64, 8, 8, 10]
    dense = [r for r in rows if r["method"] == "connections-global" and r["fraction"] == 0.5]
    assert abs(dense[0]["weight_sparsity"] - 0.5) < 1e-3 and dense[0]["params"] == rows[0]["params"]
