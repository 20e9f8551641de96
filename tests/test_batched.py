"""The batched engine against the trusted loop: the same pieces and rows, on 1 or 2 ranks."""

import dataclasses
import json

import pytest
import torch
from conftest import run_mpi

from splitnet import batched, config, experiment
from splitnet.combinations import Space, paths
from splitnet.subnet import extract, recombine

FAST = ["train.pretrain_epochs=3", "train.piece_epochs=2"]
N_COMBOS = 6


@pytest.fixture(scope="module")
def preps():
    """One pretrained net per model shape (pretraining is the slow part of a test)."""
    cache = {}

    def get(hidden, activation):
        key = (hidden, activation)
        if key not in cache:
            cache[key] = experiment.prepare(config.load(
                None, [*FAST, f"model.hidden={hidden}", f"model.activation={activation}"]))
        return cache[key]
    return get


def with_train(prep, variant="straight", **train):
    """``prep`` with other split.variant / train.* settings (same pretrained net and data)."""
    cfg = prep.config
    cfg = dataclasses.replace(cfg, split=dataclasses.replace(cfg.split, variant=variant),
                              train=dataclasses.replace(cfg.train, **train))
    ps = paths(variant, len(cfg.model.hidden), cfg.split.groups)
    space = Space(cfg.model.hidden, cfg.split.groups, variant)
    return dataclasses.replace(prep, config=cfg, paths=ps, space=space)


def rows(prep, n=N_COMBOS):
    """Rows of combinations 0..n-1, all their pieces trained in one train_pieces call."""
    splits = [experiment.split_of(prep, c) for c in range(n)]
    jobs = [(c, splits[c], p) for c in range(n) for p in prep.paths]
    trained = experiment.train_pieces(prep, jobs)
    k = len(prep.paths)
    out = []
    for c in range(n):
        part = trained[c * k:(c + 1) * k]
        out.append((experiment.make_row(prep, c, splits[c], [p for p, _ in part], 0.0),
                    [p for p, _ in part]))
    return out


CASES = [  # (hidden, activation, variant, shuffle, momentum)
    ("[5,3]", "relu", "straight", "shared", 0.0),  # uneven groups: several stacks
    ("[5,3]", "tanh", "alternating", "per-piece", 0.5),
    ("[4,4]", "sigmoid", "alternating", "shared", 0.9),
    ("[4,4]", "relu", "straight", "per-piece", 0.0),
]


@pytest.mark.parametrize("hidden,activation,variant,shuffle,momentum", CASES)
def test_batched_rows_and_pieces_match_the_loop(preps, hidden, activation, variant, shuffle,
                                                momentum):
    base = preps(hidden, activation)
    loop = rows(with_train(base, variant, engine="loop", shuffle=shuffle, momentum=momentum))
    fast = rows(with_train(base, variant, engine="batched", shuffle=shuffle, momentum=momentum))
    one_flip = 1.0 / len(base.data.test[1])
    for (a, pa), (b, pb) in zip(loop, fast, strict=True):
        for net_a, net_b in zip(pa, pb, strict=True):
            assert net_a.sizes == net_b.sizes
            for x, y in zip(net_a.parameters(), net_b.parameters(), strict=True):
                torch.testing.assert_close(y, x, atol=1e-4, rtol=0)
        assert abs(a["accuracy"] - b["accuracy"]) <= one_flip + 1e-12
        assert abs(a["ensemble_accuracy"] - b["ensemble_accuracy"]) <= one_flip + 1e-12
        for u, v in zip(a["piece_accuracies"], b["piece_accuracies"], strict=True):
            assert abs(u - v) <= one_flip + 1e-12
        skip = {"accuracy", "ensemble_accuracy", "piece_accuracies", "config", "config_hash"}
        assert {k: v for k, v in a.items() if k not in skip} == \
               {k: v for k, v in b.items() if k not in skip}


def test_uneven_groups_give_several_shapes_in_job_order(preps):
    prep = with_train(preps("[5,3]", "relu"), engine="batched")
    jobs = [(c, experiment.split_of(prep, c), p) for c in range(8) for p in prep.paths]
    out = batched.train_pieces_batched(prep, jobs)
    shapes = [extract(prep.pretrained, s, p).sizes for _, s, p in jobs]
    assert [piece.sizes for piece, _ in out] == shapes
    assert len(set(shapes)) > 1
    assert all(sec > 0 for _, sec in out)


@pytest.mark.parametrize("shuffle", ["shared", "per-piece"])
def test_a_piece_does_not_depend_on_its_stack_mates(preps, shuffle):
    """Bitwise: what a piece becomes is independent of stack size and company (any rank count)."""
    prep = with_train(preps("[4,4]", "relu"), engine="batched", shuffle=shuffle, piece_epochs=1)
    jobs = [(c, experiment.split_of(prep, c), p) for c in range(18) for p in prep.paths]
    together = batched.train_pieces_batched(prep, jobs)
    alone = batched.train_pieces_batched(prep, jobs[3:9], max_stack=1)
    odd = batched.train_pieces_batched(prep, jobs[1::2], max_stack=7)
    pairs = [*zip(together[3:9], alone, strict=True), *zip(together[1::2], odd, strict=True)]
    for (a, _), (b, _) in pairs:
        assert all(map(torch.equal, a.parameters(), b.parameters()))


def test_zero_epochs_returns_the_extracted_pieces(preps):
    prep = with_train(preps("[4,4]", "relu"), engine="batched", piece_epochs=0)
    split = experiment.split_of(prep, 2)
    out = batched.train_pieces_batched(prep, [(2, split, p) for p in prep.paths])
    for (piece, _), path in zip(out, prep.paths, strict=True):
        ref = extract(prep.pretrained, split, path)
        assert all(map(torch.equal, piece.parameters(), ref.parameters()))


def test_built_pieces_are_independent_modules():
    Ws = [torch.randn(2, 3, 5), torch.randn(2, 4, 3)]
    bs = [torch.randn(2, 3), torch.randn(2, 4)]
    a = batched.make_mlp([5, 3, 4], "tanh", [W[0] for W in Ws], [b[0] for b in bs])
    b = batched.make_mlp([5, 3, 4], "tanh", [W[1] for W in Ws], [b[1] for b in bs])
    with torch.no_grad():
        a[0].weight.zero_()
    assert torch.equal(b[0].weight, Ws[0][1]) and not torch.equal(Ws[0][0], a[0].weight)
    x = torch.randn(7, 5)
    ref = torch.tanh(x @ Ws[0][1].T + bs[0][1]) @ Ws[1][1].T + bs[1][1]
    torch.testing.assert_close(b(x), ref)
    assert list(b.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert a.sizes == (5, 3, 4) and a.activation == "tanh"
    assert sum(1 for _ in b.parameters()) == 4 and all(p.requires_grad for p in b.parameters())


def test_mpi_two_ranks_give_the_one_rank_rows(tmp_path):
    args = ["-m", "splitnet.enumerate", "--quiet", "--stop", "16", "--chunk", "5",
            "--set", "train.engine=batched", "--set", "model.hidden=[5,3]",
            "--set", "train.pretrain_epochs=1", "--set", "train.piece_epochs=2"]
    got = {}
    for n in (1, 2):
        out = tmp_path / f"n{n}.jsonl"
        run_mpi(n, [*args, "--out", str(out)], timeout=180)
        got[n] = [json.loads(line) for line in out.read_text().splitlines()]
        for r in got[n]:
            r.pop("seconds")
    assert len(got[1]) == 16 and got[1] == got[2]


@pytest.mark.parametrize("variant", ["straight", "alternating"])
@pytest.mark.parametrize("unheld,output", [("pretrained", "sum"), ("zero", "rescale")])
def test_pack_roundtrip_and_recombine_of_packed_pieces(preps, variant, unheld, output):
    prep = with_train(preps("[5,3]", "relu"), variant, engine="batched")
    gen = torch.Generator().manual_seed(0)
    for c in (0, 7, 11):
        split = experiment.split_of(prep, c)
        pieces = [extract(prep.pretrained, split, p) for p in prep.paths]
        with torch.no_grad():
            for piece in pieces:
                for q in piece.parameters():
                    q.add_(torch.randn(q.shape, generator=gen))
        ref = recombine(prep.pretrained, split, prep.paths, pieces, unheld=unheld, output=output)
        # a piece survives the trip between ranks as a packed vector, bit for bit
        backs = []
        for piece, path in zip(pieces, prep.paths, strict=True):
            back = batched.unpack_piece(prep.pretrained, split, path, batched.pack_piece(piece))
            assert back.sizes == piece.sizes
            assert all(map(torch.equal, back.parameters(), piece.parameters()))
            backs.append(back)
        got = recombine(prep.pretrained, split, prep.paths, backs, unheld=unheld, output=output)
        assert all(map(torch.equal, got.parameters(), ref.parameters()))
