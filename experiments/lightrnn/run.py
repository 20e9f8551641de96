"""LightRNN vs a standard embedding on the Python documentation (the lecture notes' LightRNN).

    python experiments/lightrnn/run.py experiments/lightrnn/config.toml   # ~3 min, one core
    python experiments/lightrnn/run.py experiments/lightrnn/config.toml --figures

Trains, on the same token streams and with the same GRU, (1) ``standard``: V x d embedding and a
V-way softmax, (2) ``lightrnn``: the 2-component B x B table (B = ceil(sqrt(V))) with the
frequency-ordered allocation kept fixed, (3) ``lightrnn+realloc``: the same, with the words
reallocated to cells (min-cost assignment) after the epochs in ``reallocate_after``.
Perplexity = exp(mean NLL) over the same test tokens, with P(w) = P_r(r(w)) * P_c(c(w)) for
LightRNN; the test uses the weights (and allocation) of the best validation epoch.
Resumable: a model's rows (one per epoch, then its test row) are appended to
``results/lightrnn/lightrnn.jsonl`` when it finishes, and a rerun skips the models recorded (each
model depends on the config only); a model cut short is trained again from scratch. The figure
and the table are drawn from that file alone.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path
from typing import BinaryIO

import matplotlib.pyplot as plt
import torch

from splitnet import study
from splitnet.nets import lightrnn as L
from splitnet.nets.lightrnn import closed_form_params, evaluate, train_epoch
from splitnet.results import append_rows

DEFAULTS = {
    "seed": 0,
    "vocab_size": 2000,
    "dim": 64,
    "hidden": 128,
    "dropout": 0.2,
    "epochs": 6,
    "batch_size": 20,
    "eval_batch_size": 10,
    "bptt": 35,
    "lr": 3e-3,
    "clip": 1.0,
    "valid_fraction": 0.1,
    "test_fraction": 0.1,
    "reallocate_after": [2, 4],
    "models": ["standard", "lightrnn", "lightrnn+realloc"],
}
MODELS = ("standard", "lightrnn", "lightrnn+realloc")


def check(cfg: dict, _args: object = None) -> dict:
    bad = [m for m in cfg["models"] if m not in MODELS]
    if bad:
        raise ValueError(f"models={bad} not in {MODELS}")
    for key in ("epochs", "batch_size", "eval_batch_size", "bptt", "dim", "hidden"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key}={cfg[key]} must be >= 1")
    return cfg


def train_model(kind: str, streams: dict[str, torch.Tensor], cfg: dict) -> list[dict]:
    """Train one model; its rows: one per epoch, then the test row (best validation epoch)."""
    torch.manual_seed(cfg["seed"])
    cls = L.StandardLM if kind == "standard" else L.LightRNNLM
    model = cls(cfg["vocab_size"], cfg["dim"], cfg["hidden"], cfg["dropout"])
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    best, best_state, best_epoch, t_total = math.inf, None, 0, 0.0
    rows = []
    for epoch in range(1, cfg["epochs"] + 1):
        t0 = time.perf_counter()
        train_nll = train_epoch(model, streams["train"], opt, bptt=cfg["bptt"], clip=cfg["clip"])
        valid_nll, _ = evaluate(model, streams["valid"], cfg["bptt"])
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
        if kind == "lightrnn+realloc" and epoch in cfg["reallocate_after"]:
            row["realloc"] = reallocate_step(model, streams["train"], streams["valid"], cfg)
        t_total += time.perf_counter() - t0
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        show(row)
    model.load_state_dict(best_state)  # weights and (buffers) allocation of the best epoch
    test_nll, n_test = evaluate(model, streams["test"], cfg["bptt"])
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
            "params_closed_form": closed_form_params(
                kind, cfg["vocab_size"], cfg["dim"], cfg["hidden"]
            ),
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
    l_r, l_c = model.cell_losses(train, cfg["bptt"])
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
    valid_nll, _ = evaluate(model, valid, cfg["bptt"])
    return {
        "cost_before": before,
        "cost_after": after,
        "words_moved": moved,
        "train_ppl_before": math.exp(before / n),
        "train_ppl_after": math.exp(after / n),
        "valid_ppl_after": math.exp(valid_nll),
        "seconds": seconds,
    }


def run(cfg: dict, f: BinaryIO, rows: list[dict]) -> list[dict]:
    """The corpus row and every model not among ``rows``, appended to ``f``; returns all rows."""
    torch.set_num_threads(1)
    tokens = L.load_corpus()
    n = len(tokens)
    cut = int(n * (1 - cfg["valid_fraction"] - cfg["test_fraction"]))
    vocab = L.build_vocab(tokens[:cut], cfg["vocab_size"])  # counted on the train chunk only
    train, valid, test = L.contiguous_split(
        L.encode(tokens, vocab), cfg["valid_fraction"], cfg["test_fraction"]
    )
    streams = {
        "train": L.batchify(train, cfg["batch_size"]),
        "valid": L.batchify(valid, cfg["eval_batch_size"]),
        "test": L.batchify(test, cfg["eval_batch_size"]),
    }
    tag = {"config_hash": study.config_hash(cfg)}
    if not any(r["kind"] == "corpus" for r in rows):
        unk = vocab.index(L.UNK)
        corpus = {
            "kind": "corpus",
            "tokens": n,
            "train": len(train),
            "valid": len(valid),
            "test": len(test),
            "vocab_size": len(vocab),
            "side": L.table_side(len(vocab)),
            "test_unk_rate": float((test == unk).float().mean()),
            "config": cfg,
            **tag,
        }
        append_rows(f, [corpus])
        rows.append(corpus)
    done = {r["model"] for r in rows if r["kind"] == "final"}
    for kind in cfg["models"]:
        if kind in done:
            print(f"{kind}: recorded, skipped", flush=True)
            continue
        new = [{**r, **tag} for r in train_model(kind, streams, cfg)]
        append_rows(f, new)
        rows += new
    return rows


def table(rows: list[dict]) -> str:
    corpus = next(r for r in rows if r["kind"] == "corpus")
    lines = [
        f"V = {corpus['vocab_size']} (B = {corpus['side']}), {corpus['train']:,} / "
        f"{corpus['valid']:,} / {corpus['test']:,} train / valid / test tokens, "
        f"test <unk> rate {corpus['test_unk_rate']:.1%}\n",
        "| model | embedding params | softmax params | emb + softmax (closed form) | "
        "GRU params | total | best valid ppl (epoch) | test ppl | train s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in (r for r in rows if r["kind"] == "final"):
        p, c = r["params"], r["params_closed_form"]
        lines.append(
            f"| {r['model']} | {p['embedding']:,} | {p['softmax']:,} | "
            f"{p['embedding'] + p['softmax']:,} ({c['embedding'] + c['softmax']:,}) | "
            f"{p['rnn']:,} | {p['total']:,} | {r['best_valid_ppl']:.1f} "
            f"({r['best_epoch']}) | {r['test_ppl']:.1f} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


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
    return study.table_study(
        "lightrnn", __doc__, DEFAULTS, argv, check=check, run=run, plot=plot, table=table
    )


if __name__ == "__main__":
    sys.exit(main())
