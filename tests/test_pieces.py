"""Pieces and recombination: exact invariants against the full net, and the wire format."""

import numpy as np
import pytest
import torch

from splitnet.combinations import Space, paths
from splitnet.model import build_mlp
from splitnet.pieces import (
    as_mlp,
    extract,
    forward,
    hidden_held_counts,
    masked_forward,
    pack,
    params_of,
    piece_neurons,
    piece_params,
    recombine,
    unpack,
)
from splitnet.split import contiguous_split, random_split


@pytest.fixture
def net():
    return build_mlp([5, 6, 7, 4, 3], seed=1)


SPLIT_K2 = random_split((6, 7, 4), 2, seed=3)


@pytest.mark.parametrize("variant", ["straight", "alternating", "all-paths"])
@pytest.mark.parametrize("unheld", ["pretrained", "zero"])
def test_split_then_recombine_without_training_is_identity(net, variant, unheld):
    P = paths(variant, 3, 2)
    pieces = [extract(net, SPLIT_K2, p) for p in P]
    out = recombine(net, SPLIT_K2, P, pieces, unheld=unheld)
    full_cover = variant != "straight"
    for a, b in zip(net.parameters(), out.parameters(), strict=True):
        if unheld == "pretrained" or full_cover:
            assert torch.equal(a, b)
    if unheld == "zero" and variant == "straight":  # cross-group weights zeroed, the rest exact
        W, W2 = net.linears[1].weight, out.linears[1].weight
        same = torch.as_tensor(SPLIT_K2[1][:, None] == SPLIT_K2[0][None, :])
        assert torch.equal(W[same], W2[same]) and torch.all(W2[~same] == 0)


def test_three_way_mean_is_exact(net):
    split = random_split((6, 6, 3), 3, seed=0)
    P = paths("all-paths", 3, 3)
    net = build_mlp([5, 6, 6, 3, 2], seed=4)
    out = recombine(net, split, P, [extract(net, split, p) for p in P])
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), out.parameters(), strict=True))


@pytest.mark.parametrize("variant,unheld", [("all-paths", "zero"), ("straight", "pretrained")])
def test_recombine_is_the_entrywise_mean_by_brute_force(variant, unheld):
    """Trained (here: perturbed) pieces, k = 3: every entry = the mean of the pieces holding it,
    found by walking each piece's entries back to the full net one by one."""
    net = build_mlp([4, 6, 5, 3], seed=5)
    split = random_split((6, 5), 3, seed=2)
    P = paths(variant, 2, 3)
    gen = torch.Generator().manual_seed(1)
    pieces = [
        [
            t + torch.randn(t.shape, generator=gen)
            for t in piece_params(net, piece_neurons(split, p))
        ]
        for p in P
    ]
    got = recombine(net, split, P, pieces, unheld=unheld)
    full = [p.detach().double().numpy() for p in net.parameters()]
    sums = [np.zeros_like(f) for f in full]
    counts = [np.zeros(f.shape, int) for f in full]
    for path, piece in zip(P, pieces, strict=True):
        S = [*(np.flatnonzero(a == g) for a, g in zip(split, path, strict=True)), np.arange(3)]
        ins = [np.arange(4), *S[:-1]]
        for m in range(3):
            W, b = piece[2 * m].double().numpy(), piece[2 * m + 1].double().numpy()
            for r, i in enumerate(S[m]):
                sums[2 * m + 1][i] += b[r]
                counts[2 * m + 1][i] += 1
                for c, j in enumerate(ins[m]):
                    sums[2 * m][i, j] += W[r, c]
                    counts[2 * m][i, j] += 1
    for f, s_, c, g in zip(full, sums, counts, got.parameters(), strict=True):
        want = np.where(c > 0, s_ / np.maximum(c, 1), f if unheld == "pretrained" else 0.0)
        np.testing.assert_allclose(g.detach().double().numpy(), want, rtol=0, atol=1e-6)
    assert max(c.max() for c in counts) >= 3  # real means: entries held by 3 (or 9) pieces
    assert (counts[2] == 0).any() == (variant == "straight")  # unheld: cross-group weights


@pytest.mark.parametrize("path", paths("all-paths", 3, 2))
def test_piece_forward_equals_masked_full_net(net, path):
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(0))
    piece = extract(net, SPLIT_K2, path)
    assert piece.hidden == tuple(int((a == g).sum()) for a, g in zip(SPLIT_K2, path, strict=True))
    torch.testing.assert_close(piece(x), masked_forward(net, SPLIT_K2, path, x), rtol=0, atol=1e-6)


def test_coverage_of_variants(net):
    straight = hidden_held_counts(net, SPLIT_K2, paths("straight", 3, 2))
    for l, c in enumerate(straight):  # exactly the diagonal blocks
        same = SPLIT_K2[l + 1][:, None] == SPLIT_K2[l][None, :]
        assert np.array_equal(c, same.astype(int))
    for c in hidden_held_counts(net, SPLIT_K2, paths("alternating", 3, 2)):
        assert np.all(c == 1)  # every hidden-to-hidden weight trained by exactly one piece
    for c in hidden_held_counts(net, SPLIT_K2, paths("all-paths", 3, 2)):
        assert np.all(c >= 1)


def test_alternating_covers_every_weight_exactly_once_for_k3():
    net = build_mlp([4, 6, 6, 6, 2], seed=0)
    split = Space((6, 6, 6), 3, "alternating").split_at(123)
    for c in hidden_held_counts(net, split, paths("alternating", 3, 3)):
        assert np.all(c == 1)


def test_averaging_and_output_modes(net):
    split = contiguous_split((6, 7, 4), 2)
    P = paths("straight", 3, 2)
    pieces = [extract(net, split, p) for p in P]
    with torch.no_grad():
        pieces[0].linears[-1].bias.fill_(1.0)
        pieces[1].linears[-1].bias.fill_(3.0)
    out = recombine(net, split, P, pieces, unheld="zero", output="rescale")
    assert torch.allclose(out.linears[-1].bias, torch.full((3,), 2.0))
    # straight + zeroed cross weights + rescale = the mean of the pieces' logits
    x = torch.randn(8, 5)
    mean_logits = torch.stack([p(x) for p in pieces]).mean(0)
    torch.testing.assert_close(out(x), mean_logits, rtol=1e-5, atol=1e-5)


def test_recombine_rejects_bad_options(net):
    P = paths("straight", 3, 2)
    pieces = [extract(net, SPLIT_K2, p) for p in P]
    with pytest.raises(ValueError, match="unheld='mean'"):
        recombine(net, SPLIT_K2, P, pieces, unheld="mean")
    with pytest.raises(ValueError, match="1 pieces"):
        recombine(net, SPLIT_K2, P, pieces[:1])


def test_recombine_rejects_a_bad_output_naming_it(net):
    P = paths("straight", 3, 2)
    pieces = [extract(net, SPLIT_K2, p) for p in P]
    with pytest.raises(ValueError, match="split.output='mean'"):
        recombine(net, SPLIT_K2, P, pieces, output="mean")


@pytest.mark.parametrize("path", paths("all-paths", 3, 2))
def test_functional_forward_is_the_modules_forward_bitwise(net, path):
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
    piece = extract(net, SPLIT_K2, path)
    params = piece_params(net, piece_neurons(SPLIT_K2, path))
    assert all(map(torch.equal, params, params_of(piece)))
    with torch.no_grad():
        assert torch.equal(forward(params, net.activation, x), piece(x))
    rebuilt = as_mlp(params, net.activation)
    assert rebuilt.sizes == piece.sizes and rebuilt is not piece
    with torch.no_grad():
        params[0].zero_()  # as_mlp copies: the module does not share storage with the list
    assert not torch.equal(rebuilt.linears[0].weight, params[0])


@pytest.mark.parametrize("variant", ["straight", "alternating"])
@pytest.mark.parametrize(
    "unheld,output", [("pretrained", "sum"), ("zero", "rescale"), ("zero", "shared-rescale")]
)
def test_pack_roundtrip_and_recombine_of_unpacked_pieces(net, variant, unheld, output):
    P = paths(variant, 3, 2)
    gen = torch.Generator().manual_seed(0)
    pieces = [extract(net, SPLIT_K2, p) for p in P]
    with torch.no_grad():
        for piece in pieces:
            for q in piece.parameters():
                q.add_(torch.randn(q.shape, generator=gen))
    ref = recombine(net, SPLIT_K2, P, pieces, unheld=unheld, output=output)
    backs = [unpack(piece.sizes, pack(piece)) for piece in pieces]
    for back, piece in zip(backs, pieces, strict=True):
        assert all(map(torch.equal, back, params_of(piece)))
    got = recombine(net, SPLIT_K2, P, backs, unheld=unheld, output=output)
    assert all(map(torch.equal, got.parameters(), ref.parameters()))
    with pytest.raises(ValueError, match="got 5"):
        unpack(pieces[0].sizes, np.zeros(5, np.float32))
