"""LightRNN (Li et al., NeurIPS 2016; lecture notes): a 2-component shared embedding for LMs.

Every word w of a vocabulary of V words sits in one cell (r(w), c(w)) of a B x B table,
B = ceil(sqrt(V)). Words in row i share the row vector R[i], words in column j share C[j]::

    standard:  embedding V x d,        softmax  h -> V          params V*d + (h+1)*V
    LightRNN:  embeddings R, C: B x d, softmaxes h -> B (twice) params 2*B*d + 2*(h+1)*B

The recurrent net reads a word as two steps, its row vector then its column vector. The state
after the column vector of x_t predicts the row of the next word y_t; the state after R[r(y_t)]
predicts its column, so the next-word probability factorises exactly::

    P(y_t = w) = P_r(r(w) | h^c_t) * P_c(c(w) | h^r_t),   h^r_t = GRU(R[r(w)], h^c_t)

Empty cells (B^2 - V of them, or any after reallocation) are masked out of both softmaxes
(rows with no word, and cells of the chosen row with no word), so P sums to 1 over exactly the V
words. Reallocation (the paper's bootstrap step) moves words to the cells where the trained model
gives them the lowest loss, as a min-cost perfect assignment of words to cells.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

UNK = "<unk>"
# words (with an inner apostrophe), numbers, one punctuation character; runs of the same
# punctuation ("-----", "*****" rules under RST headings) become one token of at most 3 chars
_TOKEN = re.compile(r"[a-z]+(?:['’][a-z]+)?|[0-9]+|([^\sa-z0-9])\1*")


def tokenize(text: str) -> list[str]:
    return [m.group(0)[:3] if m.group(1) else m.group(0) for m in _TOKEN.finditer(text.lower())]


def load_corpus() -> list[str]:
    """Tokens of the Python documentation that ships with the interpreter (``pydoc_data``).

    ~465k characters of English prose with grammar snippets; topics in sorted order so the
    contiguous train/valid/test chunks are the same on every machine with the same Python.
    """
    from pydoc_data.topics import topics  # ~0.5 MB of text: loaded only by the study

    return tokenize("\n".join(topics[k] for k in sorted(topics)))


def build_vocab(train_tokens: list[str], size: int) -> list[str]:
    """``size`` words in decreasing train frequency (ties by spelling); ``<unk>`` takes the
    count of every word left out and is ranked by it like any other word."""
    if size < 2:
        raise ValueError(f"vocab size={size} must be >= 2 (at least one word and <unk>)")
    counts = Counter(train_tokens)
    kept = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: size - 1]
    unk = len(train_tokens) - sum(n for _, n in kept)
    return [w for w, _ in sorted(kept + [(UNK, unk)], key=lambda kv: (-kv[1], kv[0] != UNK))]


def encode(tokens: list[str], vocab: list[str]) -> torch.Tensor:
    index = {w: i for i, w in enumerate(vocab)}
    unk = index[UNK]
    return torch.tensor([index.get(t, unk) for t in tokens], dtype=torch.long)


def contiguous_split(
    ids: torch.Tensor, valid: float, test: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, valid, test) as consecutive chunks: no sentence is shared between them."""
    if not (0 < valid < 1 and 0 < test < 1 and valid + test < 1):
        raise ValueError(f"valid={valid}, test={test} must be in (0, 1) with sum < 1")
    n = len(ids)
    a, b = int(n * (1 - valid - test)), int(n * (1 - test))
    return ids[:a], ids[a:b], ids[b:]


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(batch_size, n // batch_size): row b is the b-th contiguous stream of the text."""
    n = len(ids) // batch_size
    return ids[: n * batch_size].view(batch_size, n)


def table_side(vocab_size: int) -> int:
    if vocab_size < 1:
        raise ValueError(f"vocab_size={vocab_size} must be >= 1")
    return math.isqrt(vocab_size - 1) + 1  # ceil(sqrt(V)) without float rounding


def frequency_allocation(
    counts: Sequence[int] | torch.Tensor, side: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cells in row-major frequency order: the k-th most frequent word goes to (k // B, k % B).

    Row 0 holds the B most frequent words, row 1 the next B, ...; the B^2 - V empty cells are the
    tail of the last row(s). Ties keep word order (stable sort).
    """
    counts = torch.as_tensor(counts)
    side = side or table_side(len(counts))
    if side * side < len(counts):
        raise ValueError(f"a {side}x{side} table cannot hold V={len(counts)} words")
    rank = torch.empty(len(counts), dtype=torch.long)
    rank[torch.argsort(-counts.double(), stable=True)] = torch.arange(len(counts))
    return rank // side, rank % side


def check_allocation(rows: torch.Tensor, cols: torch.Tensor, side: int) -> None:
    """ValueError unless word -> cell is injective and inside the side x side table."""
    if rows.shape != cols.shape or rows.dim() != 1:
        raise ValueError(f"rows {tuple(rows.shape)} and cols {tuple(cols.shape)} must be (V,)")
    bad = (rows < 0) | (rows >= side) | (cols < 0) | (cols >= side)
    if bad.any():
        raise ValueError(f"words {bad.nonzero().flatten().tolist()[:5]} lie outside {side}x{side}")
    cells = rows * side + cols
    if len(torch.unique(cells)) != len(cells):
        raise ValueError(f"{len(cells) - len(torch.unique(cells))} words share a cell")


class LightRNNEmbedding(nn.Module):
    """Row table R (B x d) and column table C (B x d); word w -> (R[r(w)], C[c(w)])."""

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        rows: torch.Tensor | None = None,
        cols: torch.Tensor | None = None,
    ):
        super().__init__()
        self.vocab_size, self.side = vocab_size, table_side(vocab_size)
        self.row = nn.Embedding(self.side, dim)
        self.col = nn.Embedding(self.side, dim)
        if rows is None:  # ids are usually frequency ranks already: id k -> cell k
            rows, cols = frequency_allocation(-torch.arange(vocab_size), self.side)
        self.register_buffer("row_of", torch.zeros(vocab_size, dtype=torch.long))
        self.register_buffer("col_of", torch.zeros(vocab_size, dtype=torch.long))
        self.register_buffer("occupied", torch.zeros(self.side, self.side, dtype=torch.bool))
        self.set_allocation(rows, cols)

    def set_allocation(self, rows: torch.Tensor, cols: torch.Tensor) -> None:
        rows, cols = torch.as_tensor(rows).long(), torch.as_tensor(cols).long()
        if len(rows) != self.vocab_size:
            raise ValueError(f"allocation of {len(rows)} words for V={self.vocab_size}")
        check_allocation(rows, cols, self.side)
        self.row_of.copy_(rows)
        self.col_of.copy_(cols)
        self.occupied.zero_()
        self.occupied[rows, cols] = True

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.row(self.row_of[ids]), self.col(self.col_of[ids])


class LightRNNLM(nn.Module):
    """GRU language model over the 2-component embedding, with the factorised softmax."""

    def __init__(self, vocab_size: int, dim: int = 64, hidden: int = 128, dropout: float = 0.0):
        super().__init__()
        self.embedding = LightRNNEmbedding(vocab_size, dim)
        self.rnn = nn.GRU(dim, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        b = self.embedding.side
        self.row_out, self.col_out = nn.Linear(hidden, b), nn.Linear(hidden, b)

    def _row_logits(
        self, h: torch.Tensor
    ) -> torch.Tensor:  # (..., B); rows without any word get probability 0
        return self.row_out(h).masked_fill(~self.embedding.occupied.any(1), -math.inf)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token NLL -log P(y_t | x_<=t) of shape (n, T), and the state to carry on.

        The GRU runs on [C c(x_1), R r(y_1), C c(x_2), R r(y_2), ...] (y_t = x_{t+1}), so the
        carried state has already read the row of the next chunk's first input.
        """
        emb = self.embedding
        (rx, cx), (ry, _) = emb(x), emb(y)
        if state is None:  # stream start: read the first word's row before its column
            _, state = self.rnn(self.drop(rx[:, :1]), None)
        n, t, d = cx.shape
        seq = torch.stack([cx, ry], 2).reshape(n, 2 * t, d)
        out, state = self.rnn(self.drop(seq), state)
        out = self.drop(out)
        row_lp = F.log_softmax(self._row_logits(out[:, 0::2]), -1)  # after C c(x_t): r(y_t)
        col_logits = self.col_out(out[:, 1::2])  # after R r(y_t): c(y_t)
        col_lp = F.log_softmax(col_logits.masked_fill(~emb.occupied[emb.row_of[y]], -math.inf), -1)
        nll = -(row_lp.gather(-1, emb.row_of[y, None]) + col_lp.gather(-1, emb.col_of[y, None]))
        return nll.squeeze(-1), state

    @torch.no_grad()
    def next_word_log_probs(self, x_last: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """log P(w | history) for all V words, (n, V): every row's column softmax evaluated."""
        emb = self.embedding
        rx, cx = emb(x_last[:, None])
        if state is None:  # as in forward: a stream starts with the first word's row
            _, state = self.rnn(rx, None)
        h, state = self.rnn(cx, state)  # read the last word's column
        row_lp = F.log_softmax(self._row_logits(h[:, 0]), -1)  # (n, B)
        cell_lp = torch.full((len(x_last), emb.side, emb.side), -math.inf)
        for i in torch.nonzero(emb.occupied.any(1)).flatten().tolist():
            hr, _ = self.rnn(emb.row.weight[i].expand(len(x_last), 1, -1), state)
            col = self.col_out(hr[:, 0]).masked_fill(~emb.occupied[i], -math.inf)
            cell_lp[:, i] = row_lp[:, i, None] + F.log_softmax(col, -1)
        return cell_lp[:, emb.row_of, emb.col_of]

    @torch.no_grad()
    def cell_losses(self, data: torch.Tensor, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
        """l_r (V, B), l_c (V, B): summed -log P_r(i) and -log P_c(j) over the occurrences of
        each word in ``data`` (n, L), in the contexts of the current allocation and without the
        masks (any cell may receive the word). Allocation cost: l(w, (i, j)) = l_r + l_c."""
        emb, v, b = self.embedding, self.embedding.vocab_size, self.embedding.side
        l_r, l_c = torch.zeros(v, b), torch.zeros(v, b)
        state = None
        for s in range(0, data.shape[1] - 1, bptt):
            x, y = data[:, s : s + bptt], data[:, s + 1 : s + 1 + bptt]
            x = x[:, : y.shape[1]]
            (rx, cx), (ry, _) = emb(x), emb(y)
            if state is None:
                _, state = self.rnn(rx[:, :1], None)
            seq = torch.stack([cx, ry], 2).reshape(len(x), -1, cx.shape[-1])
            out, state = self.rnn(seq, state)
            l_r.index_add_(
                0, y.flatten(), -F.log_softmax(self.row_out(out[:, 0::2]), -1).reshape(-1, b)
            )
            l_c.index_add_(
                0, y.flatten(), -F.log_softmax(self.col_out(out[:, 1::2]), -1).reshape(-1, b)
            )
        return l_r, l_c


def assignment_cost(
    l_r: torch.Tensor, l_c: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> float:
    """sum_w l_r[w, r(w)] + l_c[w, c(w)]: the training loss the allocation would have."""
    w = torch.arange(len(rows))
    return float(l_r[w, rows].sum() + l_c[w, cols].sum())


def reallocate(
    l_r: torch.Tensor,
    l_c: torch.Tensor,
    rows: torch.Tensor | None = None,
    cols: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The allocation minimising ``assignment_cost``: a V x B^2 min-cost assignment.

    cost[w, i*B + j] = l_r[w, i] + l_c[w, j]; every word gets its own cell. Exact (scipy's
    LAPJV), so its cost is never above the current allocation's (rows, cols), which is feasible.
    Given the current allocation, ties are broken towards staying put (a 1e-9 bonus), so words
    the data never scores (cost 0 everywhere) do not move. Dense: fine for V up to a few
    thousand (the paper uses an approximate min-cost flow for 10^6 words).
    """
    v, b = l_r.shape
    cost = (l_r[:, :, None] + l_c[:, None, :]).reshape(v, b * b).double()
    if rows is not None:
        cost[torch.arange(v), rows * b + cols] -= 1e-9 * (1 + cost.abs().max())
    cost = cost.numpy()
    words, cells = linear_sum_assignment(cost)
    order = np.argsort(words)
    cells = torch.as_tensor(cells[order], dtype=torch.long)
    return cells // b, cells % b


class StandardLM(nn.Module):
    """The baseline: V x d embedding, the same GRU, a V-way softmax."""

    def __init__(self, vocab_size: int, dim: int = 64, hidden: int = 128, dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim)
        self.rnn = nn.GRU(dim, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, state = self.rnn(self.drop(self.embedding(x)), state)
        logits = self.out(self.drop(h))
        nll = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")
        return nll, state

    @torch.no_grad()
    def next_word_log_probs(self, x_last: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        h, _ = self.rnn(self.embedding(x_last[:, None]), state)
        return F.log_softmax(self.out(h[:, 0]), -1)


def embedding_softmax_params(model: nn.Module) -> dict[str, int]:
    """Parameters that depend on V (embedding, output layers) and the rest (the GRU)."""
    count = lambda mods: sum(p.numel() for m in mods for p in m.parameters())  # noqa: E731
    outs = [model.out] if isinstance(model, StandardLM) else [model.row_out, model.col_out]
    return {
        "embedding": count([model.embedding]),
        "softmax": count(outs),
        "rnn": count([model.rnn]),
        "total": count([model]),
    }


# --- training and evaluation of the language models (truncated BPTT) -----------------------------


def windows(data: torch.Tensor, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Truncated BPTT: (x, y) chunks of at most bptt steps, y = x shifted by one token."""
    for s in range(0, data.shape[1] - 1, bptt):
        y = data[:, s + 1 : s + 1 + bptt]
        yield data[:, s : s + y.shape[1]], y


def detach(state: torch.Tensor | None) -> torch.Tensor | None:
    return None if state is None else state.detach()


def train_epoch(
    model: nn.Module,
    data: torch.Tensor,
    opt: torch.optim.Optimizer,
    *,
    bptt: int,
    clip: float | None = None,
) -> float:
    """One epoch of truncated BPTT, the state carried across windows (detached), gradients
    clipped to norm ``clip``; returns the mean NLL per token.

    Not ``splitnet.sgd``: a language model's step carries a recurrent state and scores every
    token of a window, which the classifier loop (one label per row) does not.
    """
    model.train()
    state, total, count = None, 0.0, 0
    for x, y in windows(data, bptt):
        nll, state = model(x, y, detach(state))
        loss = nll.mean()
        opt.zero_grad()
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        total, count = total + nll.sum().item(), count + nll.numel()
    return total / count


@torch.no_grad()
def evaluate(model: nn.Module, data: torch.Tensor, bptt: int) -> tuple[float, int]:
    """(mean NLL per token, number of tokens): the same tokens for every model."""
    model.eval()
    state, total, count = None, 0.0, 0
    for x, y in windows(data, bptt):
        nll, state = model(x, y, state)
        total, count = total + nll.sum().item(), count + nll.numel()
    return total / count, count


def closed_form_params(kind: str, v: int, d: int, h: int) -> dict[str, int]:
    """Embedding and softmax parameters: V*d and (h+1)*V; LightRNN 2*B*d and 2*(h+1)*B."""
    if kind == "standard":
        return {"embedding": v * d, "softmax": (h + 1) * v}
    b = table_side(v)
    return {"embedding": 2 * b * d, "softmax": 2 * (h + 1) * b}
