"""LightRNN: exact factorised probabilities, parameter closed forms, allocation, reallocation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import load_study_script

from splitnet.nets import lightrnn as L
from splitnet.nets.lightrnn import closed_form_params, evaluate, windows


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: threads only add contention on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_tokenize_and_vocab():
    toks = L.tokenize("The object’s __init__ ------ Returns x=10; don't.")
    assert toks == [
        "the",
        "object’s",
        "__",
        "init",
        "__",
        "---",
        "returns",
        "x",
        "=",
        "10",
        ";",
        "don't",
        ".",
    ]
    vocab = L.build_vocab(["a", "b", "a", "c", "d", "e", "a"], 3)
    # kept: a (3), then b (1, first by spelling); <unk> takes c, d, e (3) and ties a (<unk> first)
    assert vocab == [L.UNK, "a", "b"]
    assert L.encode(["a", "zzz"], vocab).tolist() == [1, 0]
    with pytest.raises(ValueError, match="size=1"):
        L.build_vocab(["a"], 1)


@pytest.mark.parametrize(
    "v,b", [(1, 1), (2, 2), (4, 2), (5, 3), (2000, 45), (2025, 45), (2026, 46), (10**12, 10**6)]
)
def test_table_side_is_ceil_sqrt(v, b):
    assert L.table_side(v) == b


def test_frequency_allocation_is_row_major_bijection():
    counts = torch.tensor([5, 50, 1, 7, 7, 0, 3])  # V = 7, B = 3
    rows, cols = L.frequency_allocation(counts)
    L.check_allocation(rows, cols, 3)
    cells = (rows * 3 + cols).tolist()
    assert sorted(cells) == list(range(7))  # a bijection onto the first V cells
    # most frequent word (index 1) at (0, 0); tie 7, 7 keeps word order; count 0 last
    assert cells == [3, 0, 5, 1, 2, 6, 4]
    with pytest.raises(ValueError, match="share a cell"):
        L.check_allocation(torch.tensor([0, 0]), torch.tensor([1, 1]), 2)
    with pytest.raises(ValueError, match="outside"):
        L.check_allocation(torch.tensor([0, 2]), torch.tensor([1, 1]), 2)
    with pytest.raises(ValueError, match="cannot hold"):
        L.frequency_allocation(torch.ones(5), side=2)


@pytest.mark.parametrize("v,d,h", [(10, 8, 16), (2000, 64, 128), (4096, 100, 32)])
def test_parameter_counts_match_closed_forms(v, d, h):
    b = math.isqrt(v - 1) + 1
    light, std = L.LightRNNLM(v, d, h), L.StandardLM(v, d, h)
    pl, ps = L.embedding_softmax_params(light), L.embedding_softmax_params(std)
    assert pl["embedding"] == 2 * b * d and ps["embedding"] == v * d
    assert pl["softmax"] == 2 * (h + 1) * b and ps["softmax"] == (h + 1) * v
    assert pl["rnn"] == ps["rnn"]  # the same GRU: the comparison isolates the V-dependent part
    for kind, p in (("lightrnn", pl), ("standard", ps)):
        assert {k: p[k] for k in ("embedding", "softmax")} == closed_form_params(kind, v, d, h)
        assert p["total"] == p["embedding"] + p["softmax"] + p["rnn"]


def scattered_allocation(v: int, side: int, seed: int):
    """A random injective allocation: empty cells (and often whole empty rows) anywhere."""
    cells = torch.randperm(side * side, generator=torch.Generator().manual_seed(seed))[:v]
    return cells // side, cells % side


@pytest.mark.parametrize("v,scatter", [(7, False), (10, False), (16, False), (10, True), (5, True)])
def test_factorised_probabilities_sum_to_one_over_the_vocabulary(v, scatter):
    """Masking: rows with no word and empty cells of a row get probability 0, so the V words
    (and only they) share all the mass. V=10 row-major leaves row 3 empty; scattered
    allocations leave empty cells and rows anywhere."""
    torch.manual_seed(v)
    model = L.LightRNNLM(v, 6, 12).eval()
    if scatter:
        model.embedding.set_allocation(*scattered_allocation(v, model.embedding.side, v))
    x = torch.randint(0, v, (3, 4))
    y = torch.cat([x[:, 1:], torch.randint(0, v, (3, 1))], 1)
    _, state = model(x, y)
    logp = model.next_word_log_probs(y[:, -1], state)  # (3, V)
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(3, dtype=logp.dtype))
    # the training path scores each word with exactly these probabilities
    for w in range(v):
        nll, _ = model(y[:, -1:], torch.full((3, 1), w), state)
        torch.testing.assert_close(-nll[:, 0], logp[:, w])
    std = L.StandardLM(v, 6, 12).eval()
    _, s2 = std(x, y)
    torch.testing.assert_close(std.next_word_log_probs(y[:, -1], s2).exp().sum(1), torch.ones(3))


def brute_force_best(l_r, l_c):
    """min over every injective word -> cell map, enumerated (B^2! / (B^2 - V)! of them)."""
    v, b = l_r.shape
    cost = (l_r[:, :, None] + l_c[:, None, :]).reshape(v, b * b).double().numpy()
    perms = np.array(list(itertools.permutations(range(b * b), v)))  # (P, V)
    return float(cost[np.arange(v), perms].sum(1).min())


def test_reallocation_hand_made_case():
    # 3 words, 2 x 2 table; word 0 wants row 1, word 1 wants column 0 of row 1, word 2 row 0
    l_r = torch.tensor([[9.0, 1.0], [5.0, 1.0], [1.0, 6.0]])
    l_c = torch.tensor([[2.0, 2.0], [1.0, 8.0], [3.0, 1.0]])
    rows, cols = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0])  # current: a bad allocation
    before = L.assignment_cost(l_r, l_c, rows, cols)
    new_r, new_c = L.reallocate(l_r, l_c, rows, cols)
    L.check_allocation(new_r, new_c, 2)
    after = L.assignment_cost(l_r, l_c, new_r, new_c)
    assert before == 9 + 2 + 5 + 8 + 6 + 3
    assert after <= before
    assert after == brute_force_best(l_r, l_c) == 1 + 2 + 1 + 1 + 1 + 1
    assert (new_r * 2 + new_c).tolist() == [3, 2, 1]


def test_reallocation_never_increases_cost_and_keeps_unscored_words():
    g = torch.Generator().manual_seed(0)
    for trial in range(10):
        v, b = 4, 3
        l_r, l_c = torch.rand(v, b, generator=g) * 5, torch.rand(v, b, generator=g) * 5
        l_r[trial % v] = l_c[trial % v] = 0.0  # a word the data never scores
        rows, cols = scattered_allocation(v, b, trial)
        new_r, new_c = L.reallocate(l_r, l_c, rows, cols)
        after = L.assignment_cost(l_r, l_c, new_r, new_c)
        assert after <= L.assignment_cost(l_r, l_c, rows, cols) + 1e-9
        assert math.isclose(after, brute_force_best(l_r, l_c), abs_tol=1e-5)
    # all costs equal: nothing moves
    rows, cols = scattered_allocation(5, 3, 1)
    same = L.reallocate(torch.ones(5, 3), torch.ones(5, 3), rows, cols)
    assert same[0].tolist() == rows.tolist() and same[1].tolist() == cols.tolist()


def test_cell_losses_of_current_allocation_equal_the_model_loss():
    # V = B^2: no empty cell, so the unmasked softmaxes of cell_losses are the model's own
    torch.manual_seed(0)
    model = L.LightRNNLM(16, 6, 12).eval()
    data = torch.randint(0, 16, (2, 23))
    l_r, l_c = model.cell_losses(data, bptt=5)
    nll, count = evaluate(model, data, bptt=5)
    emb = model.embedding
    total = L.assignment_cost(l_r, l_c, emb.row_of, emb.col_of)
    assert count == 2 * 22
    assert math.isclose(total, nll * count, rel_tol=1e-5)


def test_windows_cover_every_next_token_once():
    data = torch.arange(2 * 12).view(2, 12)
    ys = torch.cat([y for _, y in windows(data, 5)], 1)
    xs = torch.cat([x for x, _ in windows(data, 5)], 1)
    assert torch.equal(ys, data[:, 1:]) and torch.equal(xs, data[:, :-1])


@pytest.mark.parametrize("cls", [L.LightRNNLM, L.StandardLM])
def test_tiny_training_run_lowers_the_loss(cls):
    torch.manual_seed(0)
    v = 12
    data = (torch.arange(6 * 40) % v).view(6, 40)  # a cyclic text: the next word is predictable
    data[:, ::7] = torch.randint(0, v, data[:, ::7].shape)  # with some noise
    model = cls(v, 8, 16)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    first = evaluate(model, data, 10)[0]
    for _ in range(10):
        L.train_epoch(model, data, opt, bptt=10, clip=5.0)
    last = evaluate(model, data, 10)[0]
    assert first > math.log(v) - 0.5  # starts near uniform
    assert last < 0.6 * first


def test_set_allocation_rejects_bad_tables():
    emb = L.LightRNNEmbedding(5, 4)
    with pytest.raises(ValueError, match="allocation of 4 words for V=5"):
        emb.set_allocation(torch.zeros(4), torch.arange(4))
    with pytest.raises(ValueError, match="share a cell"):
        emb.set_allocation(torch.zeros(5), torch.tensor([0, 1, 2, 0, 1]))


def test_the_study_refuses_an_unknown_model(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('models = ["lightrnn", "word2vec"]\n')
    with pytest.raises(SystemExit) as e:
        load_study_script("lightrnn").main([str(bad)])
    assert e.value.code == 2
    assert "models[1]='word2vec' is not one of" in capsys.readouterr().err
