"""Beyond one-shot: re-split period, stitch, bytes moved; and does "independence" predict anything?

    python experiments/resplit/run.py experiments/resplit/config.toml            # ~5 min, 2 cores
    python experiments/resplit/run.py experiments/resplit/config.toml --figures  # refresh figures/
    python experiments/resplit/run.py experiments/resplit/config.toml --plot-only

Part 1, rounds (``splitnet.rounds``). For every architecture of ``norms`` ("none": the
BatchNorm-free MLP; "batch": IST's, bias-free Linear + BatchNorm1d, its pieces trained by the loop
engine, a recombined net's statistics re-estimated on the remaining data), seed, k, strategy
(``random``: re-drawn every round, IST; ``fixed``: the poster's weight-based split of the
pretrained net, kept; a ``-dropout`` suffix sets ``split.piece_scale = "dropout"``) and re-split
period E, every piece trains the baseline's T steps in ceil(T/E) rounds; one run gives the
accuracy before and after a ``stitch_steps`` stitch. References per (k, seed): ``baseline``, the
unsplit net on the same T minibatches; ``dp``, data-parallel over N = k workers splitting the
global minibatch (the baseline's arithmetic, 8(N-1) n_params bytes per step); ``dp-equal-data``,
each worker a minibatch of the usual size (global batch N*32, the same epochs: T/N steps). A
one-shot table recombines the same trained pieces four ways (``rounds.recombined_net`` with
``split.output`` "sum" or "shared-rescale", with a stitch; the logit-sum ensemble).

Part 2, independence. The exhaustive enumeration of ``[independence] config`` (the driver, into
this study's own file, resumable) gives Spearman's rho of the cut fraction and of the activation
score (``split.activation_score`` on the pretrain data) against the accuracy lost to the split.

Resumable: rows are written per cell (one row per cell, kind, stitch and method) and a rerun
skips the recorded cells; a rows file of another config is refused. The figures and the table
are drawn from the files alone.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from splitnet import config as config_mod
from splitnet import experiment, study
from splitnet.analysis import markdown_table, mean_ci, percent_below, reaches_baseline, spearman
from splitnet.combinations import Space
from splitnet.pieces import n_params
from splitnet.results import Layout, ResultsFile
from splitnet.rounds import dp_step_bytes, recombined_net, train_rounds
from splitnet.sgd import accuracy, steps_per_epoch
from splitnet.split import activation_affinity, activation_score, split_for
from splitnet.validation import Each, Interval, OneOf

NAME = "resplit"
LABELS = {
    "random": "IST (random re-split)",
    "random-dropout": "IST, dropout-scaled pieces",
    "fixed": "poster split, fixed",
    "fixed-dropout": "poster split, dropout-scaled",
}
NORM_TITLES = {
    "none": "BatchNorm-free MLP (Linear + bias)",
    "batch": "IST's BatchNorm MLP (bias-free Linear + BatchNorm1d, affine-free BN on the logits)",
}
REFERENCES = {
    "baseline": "baseline (unsplit)",
    "dp": "data-parallel (= baseline)",
    "dp-equal-data": "data-parallel, global batch {k}x32",
}
CURVES = {  # (strategy, stitched): (colour, line, label)
    ("random", False): ("C0", "-", "IST: random re-split"),
    ("random", True): ("C0", ":", "IST + stitch"),
    ("random-dropout", False): ("C1", "-", "IST, dropout-scaled pieces"),
    ("random-dropout", True): ("C1", ":", "IST dropout-scaled + stitch"),
    ("fixed", False): ("C2", "-", "poster split, fixed"),
    ("fixed", True): ("C2", ":", "poster split + stitch"),
}
METHODS = ("sum", "shared-rescale", "stitch", "ensemble")  # of the one-shot table
PREDICTORS = {
    "cut_fraction": "cut fraction (abs W crossing groups)",
    "activation_score": "activation score (within - across mean abs corr)",
}
FIGURE_PREDICTORS = {
    "cut_fraction": "cut fraction (|W| crossing groups)",
    "activation_score": "activation score (within - across mean |corr|)",
}
STRATEGIES = tuple(LABELS)
ROWS = Layout(
    key=("key", "kind", "stitch", "method"), key_defaults={"stitch": None, "method": None}
)
INDEPENDENCE = Layout(key=("combination",))


@dataclass(frozen=True)
class Rounds:
    """[rounds]: re-split periods (steps) and strategies of every cell, the stitch, and the
    path variants of the one-shot recombination table."""

    resplit_every: tuple[int, ...] = (1, 10, 100)
    strategies: tuple[str, ...] = ("random", "fixed")
    stitch_steps: int = 0
    stitch_lr: float = 0.0
    recombination_variants: tuple[str, ...] = ()


@dataclass(frozen=True)
class Independence:
    """[independence]: the splitnet config whose every combination is enumerated."""

    config: str = "experiments/resplit/independence.toml"


@dataclass(frozen=True)
class ResplitConfig:
    """The study's TOML; ``config`` holds the splitnet config tables every cell shares."""

    seeds: tuple[int, ...] = (0,)
    groups: tuple[int, ...] = (2,)
    norms: tuple[str, ...] = ("none",)
    config: dict = field(default_factory=dict)
    rounds: Rounds = field(default_factory=Rounds)
    independence: Independence = field(default_factory=Independence)


CONSTRAINTS = {
    "seeds": Each(Interval(0)),
    "groups": Each(Interval(1)),
    "norms": Each(OneOf(tuple(NORM_TITLES))),
    "rounds": {
        "resplit_every": Each(Interval(1)),
        "strategies": Each(OneOf(STRATEGIES)),
        "stitch_steps": Interval(0),
        "stitch_lr": Interval(0),
        "recombination_variants": Each(OneOf(config_mod.VARIANTS)),
    },
}


def check(s: ResplitConfig) -> None:
    """At least one seed and architecture; every cell's splitnet config valid (every k fits)."""
    if not s.seeds or not s.norms:
        raise ValueError(f"seeds={list(s.seeds)} and norms={list(s.norms)} must not be empty")
    for k in s.groups:
        for norm in s.norms:
            cell_config(s, s.seeds[0], k, norm)


def cell_config(s: ResplitConfig, seed: int, groups: int, norm: str) -> config_mod.Config:
    raw = copy.deepcopy(s.config)
    raw["seed"] = seed
    raw.setdefault("split", {})["groups"] = groups
    if norm != "none":  # the batched kernel has no BatchNorm: its pieces train one by one
        raw.setdefault("model", {})["norm"] = norm
        raw.setdefault("train", {})["engine"] = "loop"
    return config_mod.from_dict(raw)


def with_split(cfg: config_mod.Config, **split) -> config_mod.Config:
    return dataclasses.replace(cfg, split=dataclasses.replace(cfg.split, **split))


def poster_combination(prep: experiment.Prepared, variant: str = "straight") -> tuple:
    """(config, combination) of the poster's weight-based split of the pretrained net, as a fixed
    exhaustive combination (``split_for``'s one-shot weights split, located in the space)."""
    cfg = prep.config
    weights = split_for(with_split(cfg, strategy="weights"), prep.pretrained, 0)
    fixed = with_split(cfg, strategy="exhaustive", variant=variant)
    return fixed, Space(cfg.model.hidden, cfg.split.groups, variant).index_of(weights)


# --- part 1: rounds ---------------------------------------------------------------------------


def cells(s: ResplitConfig) -> list[tuple]:
    """(seed, groups, cell config, kind, strategy, period, key) of every cell."""
    r = s.rounds
    kinds = [("ref", None, None)]
    kinds += [("rounds", st, e) for st in r.strategies for e in r.resplit_every]
    kinds += [("recombination", v, None) for v in r.recombination_variants]
    return [
        (seed, k, cfg, kind, st, e, f"{cfg.hash()}|{kind}|{st}|{e}|{r.stitch_steps}")
        for norm in s.norms
        for seed in s.seeds
        for k in s.groups
        for cfg in [cell_config(s, seed, k, norm)]
        for kind, st, e in kinds
    ]


def run_rounds(s: ResplitConfig, out: ResultsFile) -> list[dict]:
    """Every cell not yet in ``out``, its rows written as it completes; all rows."""
    rows, done, preps = out.rows, {key[0] for key in out.done}, {}
    for seed, k, cfg, kind, strategy, period, key in cells(s):
        if key in done:
            continue
        prep = preps.get(cfg.hash()) or preps.setdefault(cfg.hash(), experiment.prepare(cfg))
        t0 = time.perf_counter()
        new = MEASURE[kind](prep, s.rounds, strategy, period)
        stamp = {"key": key, "seed": seed, "groups": k, "norm": cfg.model.norm}
        stamp |= {"config": cfg.to_dict(), "seconds": time.perf_counter() - t0}
        out.write(new := [{**row, **stamp} for row in new])
        rows += new
        what = ", ".join(f"{x['kind']}={x['accuracy']:.4f}" for x in new)
        cell = (
            f"norm={cfg.model.norm} seed={seed} groups={k} {kind} {strategy or ''} {period or ''}"
        )
        print(f"{cell}: {what} ({stamp['seconds']:.1f}s)", flush=True)
    return rows


def references(prep: experiment.Prepared, r: Rounds, _strategy, _period) -> list[dict]:
    """The baseline, data-parallel (= the baseline) and data-parallel with equal data each."""
    cfg, t = prep.config, prep.config.train
    k, n = cfg.split.groups, len(prep.data.remaining[0])
    T, T_big = (t.piece_epochs * steps_per_epoch(n, b) for b in (t.batch_size, k * t.batch_size))
    step = dp_step_bytes(prep.pretrained, k)
    big = dataclasses.replace(cfg, train=dataclasses.replace(t, batch_size=k * t.batch_size))
    net = experiment.baseline(big, prep.data, prep.pretrained)  # the baseline, batch k x b
    base = {"kind": "baseline", "accuracy": prep.baseline_accuracy, "total_steps": T}
    dp = {"kind": "dp", "accuracy": prep.baseline_accuracy, "total_steps": T}
    equal = {"kind": "dp-equal-data", "accuracy": accuracy(net, *prep.data.test)}
    return [
        {**base, "bytes_total": 0, "pretrained_accuracy": prep.pretrained_accuracy},
        {**dp, "bytes_total": step * T, "n_params": n_params(prep.pretrained)},
        {**equal, "total_steps": T_big, "bytes_total": step * T_big},
    ]


def rounds(prep: experiment.Prepared, r: Rounds, strategy: str, period: int) -> list[dict]:
    """One run of rounds: the accuracy before and after the stitch."""
    if strategy.startswith("fixed"):
        cfg, combination = poster_combination(prep)
    else:
        cfg, combination = with_split(prep.config, strategy="random"), 0
    scale = "dropout" if strategy.endswith("-dropout") else "none"
    stitch = {"stitch_steps": r.stitch_steps, "stitch_lr": r.stitch_lr}
    cfg = with_split(cfg, resplit_every=period, piece_scale=scale, **stitch)
    res = train_rounds(prep.pretrained, prep.data, cfg, [combination])[0]
    test = prep.data.test
    cut = float(np.mean([c for c in res.cut_fractions if c is not None]))
    common = {"kind": "rounds", "strategy": strategy, "resplit_every": period}
    common |= {"effective_resplit_every": res.resplit_every, "rounds": res.rounds}
    common |= {"total_steps": res.total_steps, "bytes_total": res.bytes_total}
    common |= {
        "dp_bytes_total": res.dp_bytes_total,
        "ensemble_accuracy": res.ensemble_accuracy(*test),
    }
    common |= {"piece_accuracies": res.piece_accuracies(*test), "curve": res.curve[-50:]}
    common["mean_cut_fraction"] = cut
    after = {"stitch": True, "accuracy": accuracy(res.net, *test), "stitch_steps": r.stitch_steps}
    return [
        {**common, "stitch": False, "accuracy": res.accuracy_before_stitch},
        {**common, **after},
    ]


def recombinations(prep: experiment.Prepared, r: Rounds, variant: str, _period) -> list[dict]:
    """One-shot, poster split: the same trained pieces recombined four ways."""
    cfg, combination = poster_combination(prep, variant)
    res = train_rounds(prep.pretrained, prep.data, cfg, [combination])[0]
    test, data = prep.data.test, prep.data.remaining
    stitch = {"stitch_steps": r.stitch_steps, "stitch_lr": r.stitch_lr}

    def recombined(**split) -> float:
        c = with_split(cfg, **split)
        net = recombined_net(prep.pretrained, res.split, res.paths, res.pieces, c, data=data)
        return accuracy(net, *test)

    accs = {
        "sum": recombined(output="sum", stitch_steps=0),
        "shared-rescale": recombined(output="shared-rescale", stitch_steps=0),
        "ensemble": res.ensemble_accuracy(*test),
        "stitch": recombined(output="sum", **stitch),
    }
    one = {"kind": "recombination", "variant": variant, "pieces": len(res.paths)}
    return [{**one, "method": m, "accuracy": a} for m, a in accs.items()]


MEASURE = {"ref": references, "rounds": rounds, "recombination": recombinations}


# --- part 2: independence ----------------------------------------------------------------------


def run_independence(s: ResplitConfig, out: Path, plot_only: bool) -> list[dict] | None:
    """The enumeration's rows with their predictors (``independence.jsonl``, derived from the
    enumeration: rewritten whole); with ``plot_only`` read back (None if never run)."""
    path = out / "independence.jsonl"
    if plot_only:
        return study.recorded(path, s, INDEPENDENCE) if path.exists() else None
    source = out / "independence-exhaustive.jsonl"
    rows = study.driver_rows(NAME, source, config=s.independence.config)  # resumes
    cfg = config_mod.from_dict(rows[0]["config"])
    prep = experiment.prepare(cfg)
    A = activation_affinity(prep.pretrained, prep.data.pretrain[0])
    _, weights_index = poster_combination(prep, cfg.split.variant)
    new = [
        {
            **{k: r[k] for k in ("combination", "accuracy", "baseline_accuracy", "cut_fraction")},
            "lost": r["baseline_accuracy"] - r["accuracy"],
            "activation_score": activation_score(A, r["split"]),
            "weights_split": r["combination"] == weights_index,
            "source": str(source),
            "hidden": list(cfg.model.hidden),
            "groups": cfg.split.groups,
        }
        for r in rows
    ]
    writer, _ = study.rows_file(NAME, path, s, INDEPENDENCE, plot_only=False, resumable=False)
    with writer:
        writer.write(new)
    return new


def independence_summary(rows: list[dict]) -> dict:
    """The accuracy lost over the space, who reaches the baseline, Spearman's rho of each
    predictor against the loss, and where the poster's weight-based split ranks."""
    lost = np.array([r["lost"] for r in rows])
    acc, base = (np.array([r[k] for r in rows]) for k in ("accuracy", "baseline_accuracy"))
    s = {k: rows[0][k] for k in ("source", "hidden", "groups")}
    s |= {"n": len(rows), "baseline": rows[0]["baseline_accuracy"], "lost_mean": float(lost.mean())}
    s |= {"lost_min": float(lost.min()), "lost_max": float(lost.max())}
    s["reached_baseline"] = int(reaches_baseline(acc, base).sum())
    for name in ("cut_fraction", "activation_score"):
        s[f"rho_{name}"], s[f"p_{name}"] = spearman([r[name] for r in rows], lost)
    if w := [r for r in rows if r["weights_split"]]:
        s["weights_split_lost"] = w[0]["lost"]
        s["weights_split_percentile"] = percent_below(lost, w[0]["lost"])
    return s


# --- tables and figures (from the rows alone) ------------------------------------------------


def group(rows: list[dict], **match) -> list[dict]:
    return [r for r in rows if all(r.get(a) == b for a, b in match.items())]


def series(rows: list[dict], k: int, strategy: str, stitch: bool) -> list[tuple]:
    """[(period, mean, ci, mean bytes, mean ensemble, rounds)] over seeds, by period."""
    out, sel = [], group(rows, kind="rounds", groups=k, strategy=strategy, stitch=stitch)
    for e in sorted({r["resplit_every"] for r in sel}):
        rs = group(sel, resplit_every=e)
        means = (float(np.mean([r[x] for r in rs])) for x in ("bytes_total", "ensemble_accuracy"))
        out.append((e, *mean_ci([r["accuracy"] for r in rs]), *means, rs[0]["rounds"]))
    return out


def by_norm(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """(architecture, its rows), BatchNorm-free first."""
    present = {r["norm"] for r in rows}
    return [(n, group(rows, norm=n)) for n in NORM_TITLES if n in present]


def ci(values) -> str:
    return "{:.4f} ± {:.4f}".format(*mean_ci(values))


def table(rows: list[dict], ind: dict | None) -> str:
    lines = ["# Re-split period study (digits)", ""]
    for norm, rs in by_norm(rows):
        lines += [f"# {NORM_TITLES[norm]}", ""]
        for k in sorted({r["groups"] for r in rs}):
            lines += period_table(rs, k)
    return "\n".join(lines + independence_lines(ind))


def period_table(rows: list[dict], k: int) -> list[str]:
    T = group(rows, kind="baseline", groups=k)[0]["total_steps"]
    head = (
        "method|re-split every (steps)|rounds|test acc. (mean ± 95% CI)|+ stitch|ensemble|MB moved"
    )
    body = []
    for kind, name in REFERENCES.items():
        rs = group(rows, kind=kind, groups=k)
        every = "every step" if kind != "baseline" else "-"
        mb = np.mean([r["bytes_total"] for r in rs]) / 1e6
        body.append(
            [name.format(k=k), every, "-", ci([r["accuracy"] for r in rs]), "", "", f"{mb:.2f}"]
        )
    for strategy in sorted({r["strategy"] for r in group(rows, kind="rounds", groups=k)}):
        stitched = {e: (m, c) for e, m, c, *_ in series(rows, k, strategy, True)}
        for e, m, c, b, ens, R in series(rows, k, strategy, False):
            sm, sc = stitched.get(e, (np.nan, np.nan))
            cells = [f"{m:.4f} ± {c:.4f}", f"{sm:.4f} ± {sc:.4f}", f"{ens:.4f}", f"{b / 1e6:.3f}"]
            body.append([LABELS.get(strategy, strategy), str(e), str(R), *cells])
    hidden = rows[0]["config"]["model"]["hidden"]
    lines = [f"## k = {k}, hidden {hidden}, straight, T = {T} steps per piece", ""]
    lines.append(markdown_table(head.split("|"), body, "lrrrrrr"))
    if rec := group(rows, kind="recombination", groups=k):
        lines += [
            "",
            f"One-shot, poster split, k = {k}: the same trained pieces recombined "
            "(mean ± 95% CI over seeds)",
            "",
        ]
        body = [
            [v, str(group(rec, variant=v)[0]["pieces"])]
            + [ci([r["accuracy"] for r in group(rec, variant=v, method=m)]) for m in METHODS]
            for v in sorted({r["variant"] for r in rec}, reverse=True)
        ]
        head = "paths|pieces|sum (plain)|shared rescale|stitch|ensemble"
        lines.append(markdown_table(head.split("|"), body, "lrrrrr"))
    return lines + [""]


def independence_lines(ind: dict | None) -> list[str]:
    if not ind:
        return []
    head = ["predictor", "Spearman rho vs lost", "p-value"]
    body = [
        [name, f"{ind[f'rho_{key}']:.3f}", f"{ind[f'p_{key}']:.3g}"]
        for key, name in PREDICTORS.items()
    ]
    lines = [
        "## Independence: does the split's structure predict the accuracy lost?",
        "",
        f"{ind['n']} combinations (exhaustive, hidden {ind['hidden']}, k = {ind['groups']}, "
        f"`{ind['source']}`); lost = baseline ({ind['baseline']:.4f}) - recombined "
        f"accuracy: mean {ind['lost_mean']:.4f}, range [{ind['lost_min']:.4f}, "
        f"{ind['lost_max']:.4f}], {ind['reached_baseline']} reach the baseline.",
        "",
        markdown_table(head, body, "lrr"),
    ]
    if "weights_split_lost" in ind:
        lines += [
            "",
            f"The poster's weight-based split loses {ind['weights_split_lost']:.4f}; "
            f"{ind['weights_split_percentile']:.0f}% of all combinations lose less.",
        ]
    return lines + [""]


def panels(rows: list[dict], path: Path, draw, xlabel: str, what: str) -> None:
    """A panel per (architecture, k): ``draw(ax, rows of the architecture, k)``."""
    ks, norms = sorted({r["groups"] for r in rows}), by_norm(rows)
    fig, axes = plt.subplots(
        len(norms), len(ks), figsize=(6 * len(ks), 4.2 * len(norms)), squeeze=False
    )
    for i, (norm, rs) in enumerate(norms):
        for j, k in enumerate(ks):
            title = f"{'BatchNorm MLP' if norm == 'batch' else 'MLP'}, k = {k}{what(rs, k)}"
            draw(axes[i][j], rs, k)
            axes[i][j].set(xscale="log", xlabel=xlabel, ylabel="test accuracy (%)", title=title)
    study.save_figure(fig, path)


def plot_accuracy(rows: list[dict], path: Path) -> None:
    def draw(ax, rows, k):
        base, half = mean_ci([r["accuracy"] for r in group(rows, kind="baseline", groups=k)])
        ax.axhline(base * 100, color="C3", lw=1.5, label=f"baseline {base * 100:.1f}%")
        ax.axhspan((base - half) * 100, (base + half) * 100, color="C3", alpha=0.1)
        if fixed := series(rows, k, "fixed", False):
            one = fixed[-1][1] * 100
            ax.axhline(
                one, color="0.3", ls="--", lw=1.2, label=f"one-shot, poster split {one:.1f}%"
            )
        for (strategy, stitch), (color, ls, label) in CURVES.items():
            if s := series(rows, k, strategy, stitch):
                e, m, c = (np.array([x[i] for x in s]) for i in range(3))
                ax.plot(e, m * 100, ls, marker="o", ms=4, color=color, label=label)
                ax.fill_between(e, (m - c) * 100, (m + c) * 100, color=color, alpha=0.15)
        periods = sorted({r["resplit_every"] for r in group(rows, kind="rounds", groups=k)})
        ax.set_xscale("log")
        ax.set_xticks(periods, [str(e) for e in periods])
        ax.minorticks_off()
        ax.legend(fontsize=7, loc="lower left")

    seeds = lambda rs, k: f": mean ± 95% CI over {len({r['seed'] for r in rs})} seeds"  # noqa: E731
    xlabel = "re-split period (SGD steps per round; right end = one-shot)"
    panels(rows, path, draw, xlabel, seeds)


def plot_bytes(rows: list[dict], path: Path) -> None:
    def draw(ax, rows, k):
        for strategy in ("random", "random-dropout", "fixed"):
            if s := series(rows, k, strategy, False):
                b, m, c = (np.array([x[i] for x in s]) for i in (3, 1, 2))
                color = CURVES[strategy, False][0]
                ax.errorbar(
                    b,
                    m * 100,
                    c * 100,
                    fmt="o-",
                    color=color,
                    ms=4,
                    capsize=3,
                    label=LABELS[strategy],
                )
                for x in s:
                    ax.annotate(
                        f"E={x[0]}",
                        (x[3], x[1] * 100),
                        fontsize=6,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
        dp = (
            ("dp", "s", "C3", REFERENCES["dp"]),
            ("dp-equal-data", "^", "C1", f"data-parallel, batch {k}x32"),
        )
        for kind, marker, color, label in dp:
            if rs := group(rows, kind=kind, groups=k):
                m, c = mean_ci([r["accuracy"] for r in rs])
                ax.errorbar(
                    [rs[0]["bytes_total"]],
                    [m * 100],
                    [c * 100],
                    fmt=marker,
                    color=color,
                    ms=7,
                    capsize=3,
                    label=label,
                )
        ax.legend(fontsize=7, loc="lower right")

    xlabel = "bytes moved in training (all workers, float32)"
    panels(rows, path, draw, xlabel, lambda rs, k: " workers: accuracy vs communication")


def plot_independence(rows: list[dict], s: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    lost = np.array([r["lost"] for r in rows]) * 100
    w = np.array([r["weights_split"] for r in rows])
    for ax, (name, label) in zip(axes, FIGURE_PREDICTORS.items(), strict=True):
        x = np.array([r[name] for r in rows])
        ax.plot(x[~w], lost[~w], ".", ms=4, color="C4", alpha=0.7, label="combination")
        if w.any():
            ax.plot(x[w], lost[w], "*", ms=12, color="C3", label="poster's weight-based split")
        ax.axhline(0, color="0.5", lw=1)
        title = f"Spearman rho = {s[f'rho_{name}']:.2f} (p = {s[f'p_{name}']:.2g})"
        ax.set(xlabel=label, ylabel="accuracy lost to the split (pp)", title=title)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Independence vs accuracy lost: {s['n']} combinations, hidden {s['hidden']}, "
        f"k = {s['groups']}"
    )
    study.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    skip = ("--skip-independence", {"action": "store_true", "help": "part 1 (rounds) only"})
    spec = {"constraints": CONSTRAINTS, "check": check, "options": [skip]}
    args, s = study.cli(NAME, __doc__, ResplitConfig, argv, **spec)
    torch.set_num_threads(1)
    out, figs = study.output_dirs(NAME, args.figures)
    t0 = time.perf_counter()
    writer, rows = study.rows_file(NAME, out / "resplit.jsonl", s, ROWS, plot_only=args.plot_only)
    if writer is not None:
        with writer:
            rows = run_rounds(s, writer)
    ind_rows = None if args.skip_independence else run_independence(s, out, args.plot_only)
    ind = independence_summary(ind_rows) if ind_rows else None
    plot_accuracy(rows, figs / "resplit_accuracy.png")
    plot_bytes(rows, figs / "resplit_bytes.png")
    if ind:
        plot_independence(ind_rows, ind, figs / "independence.png")
    (figs / "resplit_table.md").write_text(text := table(rows, ind))
    print(text)
    print(f"({time.perf_counter() - t0:.0f}s; rows in {out}, figures in {figs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
