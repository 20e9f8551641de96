"""LightRNN vs a standard embedding on the Python documentation (the lecture notes' LightRNN).

    python experiments/lightrnn/run.py experiments/lightrnn/config.toml   # ~3 min, one core
    python experiments/lightrnn/run.py experiments/lightrnn/config.toml --figures

Trains, on the same token streams and with the same GRU, (1) ``standard``: V x d embedding and a
V-way softmax, (2) ``lightrnn``: the 2-component B x B table (B = ceil(sqrt(V))) with the
frequency-ordered allocation kept fixed, (3) ``lightrnn+realloc``: the same, with the words
reallocated to cells (min-cost assignment) after the epochs in ``reallocate_after``.
Perplexity = exp(mean NLL) over the same test tokens, with P(w) = P_r(r(w)) * P_c(c(w)) for
LightRNN; the test uses the weights (and allocation) of the best validation epoch.
Resumable: a model's rows (one per epoch, then its test row) are written to
``results/lightrnn/lightrnn.jsonl`` when it finishes, and a rerun skips the models recorded (each
model depends on the config only); a model cut short is trained again from scratch. The figure
and the table are drawn from that file alone.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from splitnet import study
from splitnet.analysis import markdown_table
from splitnet.nets import lightrnn as L
from splitnet.nets.lightrnn import closed_form_params, evaluate, train_epoch
from splitnet.results import Layout, ResultsFile
from splitnet.validation import Each, Interval, OneOf

MODELS = ("standard", "lightrnn", "lightrnn+realloc")
# the corpus row, a model's epoch rows, its final (test) row
ROWS = Layout(key=("kind", "model", "epoch"), key_defaults={"model": None, "epoch": None})


@dataclass(frozen=True)
class LightRNNConfig:
    """The study's TOML (experiments/lightrnn/config.toml says what each key does)."""

    seed: int = 0
    vocab_size: int = 2000
    dim: int = 64
    hidden: int = 128
    dropout: float = 0.2
    epochs: int = 6
    batch_size: int = 20
    eval_batch_size: int = 10
    bptt: int = 35
    lr: float = 3e-3
    clip: float = 1.0
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    reallocate_after: tuple[int, ...] = (2, 4)
    models: tuple[str, ...] = MODELS


CONSTRAINTS = {
    "vocab_size": Interval(2),
    **dict.fromkeys(
        ("dim", "hidden", "epochs", "batch_size", "eval_batch_size", "bptt"), Interval(1)
    ),
    "dropout": Interval(0, 1),
    "lr": Interval(0, None, "neither"),
    "valid_fraction": Interval(0, 1, "neither"),
    "test_fraction": Interval(0, 1, "neither"),
    "reallocate_after": Each(Interval(1)),
    "models": Each(OneOf(MODELS)),
}


STUDY = study.TableStudy("lightrnn", LightRNNConfig, ROWS, CONSTRAINTS)


def train_model(kind: str, streams: dict[str, torch.Tensor], cfg: LightRNNConfig) -> list[dict]:
    """Train one model; its rows: one per epoch, then the test row (best validation epoch)."""
    torch.manual_seed(cfg.seed)
    cls = L.StandardLM if kind == "standard" else L.LightRNNLM
    model = cls(cfg.vocab_size, cfg.dim, cfg.hidden, cfg.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    best, best_state, best_epoch, t_total = math.inf, None, 0, 0.0
    rows = []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_nll = train_epoch(model, streams["train"], opt, bptt=cfg.bptt, clip=cfg.clip)
        valid_nll, _ = evaluate(model, streams["valid"], cfg.bptt)
        row = {
            "kind": "epoch",
            "model": kind,
            "epoch": epoch,
            "train_ppl": math.exp(train_nll),
            "valid_ppl": math.exp(valid_nll),
            "realloc": None,
        }
        if valid_nll < best:
            best, best_state, best_epoch = valid_nll, copy.deepcopy(model.state_dict()), epoch
        if kind == "lightrnn+realloc" and epoch in cfg.reallocate_after:
            row["realloc"] = reallocate_step(model, streams["train"], streams["valid"], cfg)
        t_total += time.perf_counter() - t0
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        show(row)
    model.load_state_dict(best_state)  # weights and (buffers) allocation of the best epoch
    test_nll, n_test = evaluate(model, streams["test"], cfg.bptt)
    rows.append(
        {
            "kind": "final",
            "model": kind,
            "test_ppl": math.exp(test_nll),
            "test_tokens": n_test,
            "best_valid_ppl": math.exp(best),
            "best_epoch": best_epoch,
            "train_seconds": t_total,
            "params": L.embedding_softmax_params(model),
            "params_closed_form": closed_form_params(kind, cfg.vocab_size, cfg.dim, cfg.hidden),
        }
    )
    show(rows[-1])
    return rows


def show(row: dict) -> None:
    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)


def reallocate_step(model, train, valid, cfg) -> dict:
    """Move words to the cells of least training loss; the row records the assignment costs."""
    model.eval()
    t0 = time.perf_counter()
    l_r, l_c = model.cell_losses(train, cfg.bptt)
    emb = model.embedding
    before = L.assignment_cost(l_r, l_c, emb.row_of, emb.col_of)
    rows, cols = L.reallocate(l_r, l_c, emb.row_of, emb.col_of)
    moved = int(((rows != emb.row_of) | (cols != emb.col_of)).sum())
    emb.set_allocation(rows, cols)
    after = L.assignment_cost(l_r, l_c, rows, cols)
    seconds = time.perf_counter() - t0
    n = int(train[:, 1:].numel())  # train tokens scored: the costs per token are log-ppls
    # the assignment cost ignores that moving a word also changes the inputs (and so the states)
    # after it; the validation perplexity right after the move shows what that costs
    valid_nll, _ = evaluate(model, valid, cfg.bptt)
    costs = {"cost_before": before, "cost_after": after, "words_moved": moved}
    ppls = {"train_ppl_before": math.exp(before / n), "train_ppl_after": math.exp(after / n)}
    return {**costs, **ppls, "valid_ppl_after": math.exp(valid_nll), "seconds": seconds}


def run(cfg: LightRNNConfig, out: ResultsFile) -> list[dict]:
    """The corpus row and every model not yet in ``out``, written as each finishes; all rows."""
    torch.set_num_threads(1)
    tokens = L.load_corpus()
    n = len(tokens)
    cut = int(n * (1 - cfg.valid_fraction - cfg.test_fraction))
    vocab = L.build_vocab(tokens[:cut], cfg.vocab_size)  # counted on the train chunk only
    train, valid, test = L.contiguous_split(
        L.encode(tokens, vocab), cfg.valid_fraction, cfg.test_fraction
    )
    parts = {"train": (train, cfg.batch_size), "valid": (valid, cfg.eval_batch_size)}
    parts["test"] = (test, cfg.eval_batch_size)  # the same test tokens for every model
    streams = {k: L.batchify(x, b) for k, (x, b) in parts.items()}
    rows = out.rows
    if ("corpus", None, None) not in out.done:
        parts = {"tokens": n, "train": len(train), "valid": len(valid), "test": len(test)}
        corpus = {"kind": "corpus", **parts, "vocab_size": len(vocab)}
        corpus["side"] = L.table_side(len(vocab))
        corpus["test_unk_rate"] = float((test == vocab.index(L.UNK)).float().mean())
        corpus["config"] = study.as_dict(cfg)
        out.write([corpus])
        rows.append(corpus)
    for kind in cfg.models:
        if ("final", kind, None) in out.done:
            print(f"{kind}: recorded, skipped", flush=True)
            continue
        # epoch rows of a model whose final row a kill cut off are recorded already
        new = [r for r in train_model(kind, streams, cfg) if ROWS.key_of(r) not in out.done]
        out.write(new)
        rows += new
    return rows


def table(rows: list[dict]) -> str:
    corpus = next(r for r in rows if r["kind"] == "corpus")
    header = (
        "model|embedding params|softmax params|emb + softmax (closed form)|GRU params|total|"
        "best valid ppl (epoch)|test ppl|train s"
    ).split("|")
    body = [
        (
            f"{r['model']}|{p['embedding']:,}|{p['softmax']:,}|{p['embedding'] + p['softmax']:,} "
            f"({c['embedding'] + c['softmax']:,})|{p['rnn']:,}|{p['total']:,}|"
            f"{r['best_valid_ppl']:.1f} ({r['best_epoch']})|{r['test_ppl']:.1f}|"
            f"{r['train_seconds']:.0f}"
        ).split("|")
        for r in rows
        if r["kind"] == "final"
        for p, c in [(r["params"], r["params_closed_form"])]
    ]
    return (
        f"V = {corpus['vocab_size']} (B = {corpus['side']}), {corpus['train']:,} / "
        f"{corpus['valid']:,} / {corpus['test']:,} train / valid / test tokens, "
        f"test <unk> rate {corpus['test_unk_rate']:.1%}\n\n"
        + markdown_table(header, body, "lrrrrrrrr")
        + "\n"
    )


def plot(rows: list[dict], path: str | Path) -> None:
    """Validation perplexity per epoch (reallocations marked); V-dependent parameters."""
    finals = [r for r in rows if r["kind"] == "final"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, f in enumerate(finals):
        ep = [r for r in rows if r["kind"] == "epoch" and r["model"] == f["model"]]
        ax.plot(
            [r["epoch"] for r in ep],
            [r["valid_ppl"] for r in ep],
            "o-",
            color=f"C{i}",
            label=f"{f['model']} (test {f['test_ppl']:.1f})",
        )
        for r in ep:
            if r["realloc"]:  # x: validation right after the move, before more training
                ax.axvline(r["epoch"] + 0.5, color=f"C{i}", ls=":", lw=1)
                ax.plot([r["epoch"] + 0.5], [r["realloc"]["valid_ppl_after"]], "x", color=f"C{i}")
    ax.set_xlabel("epoch (dotted: reallocation, x: valid ppl just after it)")
    ax.set_ylabel("validation perplexity")
    ax.legend(fontsize=8)
    names = [f["model"] for f in finals]
    bottom = [0] * len(finals)
    for j, part in enumerate(("embedding", "softmax", "rnn")):
        vals = [f["params"][part] for f in finals]
        bx.bar(names, vals, bottom=bottom, label=part, color=f"C{j + 3}")
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    for i, b in enumerate(bottom):
        bx.text(i, b, f"{b:,}", ha="center", va="bottom", fontsize=8)
    bx.set_ylabel("parameters")
    bx.set_title("parameters: embedding + softmax + GRU")
    bx.legend(fontsize=8)
    study.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    return study.table_study(STUDY, __doc__, argv, run=run, plot=plot, table=table)


if __name__ == "__main__":
    sys.exit(main())
