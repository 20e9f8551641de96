"""Beyond one-shot: re-split period, stitch, bytes moved; and does "independence" predict anything?

Run: ``python -m splitnet.studies.resplit experiments/resplit.toml`` (``--plot-only`` redraws)

Part 1, rounds. For every seed, k and strategy (``random``: re-drawn every round, IST;
``fixed``: the poster's weight-based split of the pretrained net, kept; a ``-dropout`` suffix
trains dropout-scaled pieces, ``rounds.scale_piece``) and every re-split period
E, ``splitnet.rounds.train_rounds`` trains every piece the baseline's T steps in ceil(T/E) rounds;
one run gives the accuracy before and after a ``stitch_steps`` stitch. References per (k, seed):

    baseline       the unsplit net, the same T steps on the same minibatches
    dp             data-parallel with the global minibatch split over N = k workers: the same
                   arithmetic as the baseline (so its accuracy), 8(N-1) n_params bytes per step
    dp-equal-data  data-parallel where each worker takes a minibatch of the usual size: global
                   batch N*32, the same epochs (T/N steps), same lr, 8(N-1) n_params per step

A one-shot table compares recombinations of the same trained pieces (plain sum, shared rescale,
logit-sum ensemble, stitch) for straight and alternating paths.

Part 2, independence. Over an exhaustive enumeration (rows of ``python -m splitnet.enumerate``),
Spearman's rho of the cut fraction and of the activation score (mean |corr| of hidden
activations on the pretrain data within groups minus across groups, all hidden layers, the
pretrained net re-made by ``experiment.prepare`` from the rows' config) against the accuracy lost
to the split, baseline - accuracy.

Rows go to JSON Lines files (cached per cell: a rerun skips recorded cells); the figures and
``figures/resplit_table.md`` are drawn from those files alone.
"""

from __future__ import annotations

import argparse
import copy
import glob
import time
import tomllib
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from splitnet import config as config_mod
from splitnet import experiment
from splitnet.combinations import Space
from splitnet.results import append_rows, open_for_append, read_rows
from splitnet.rounds import dp_step_bytes, n_params, steps_per_epoch, train_rounds
from splitnet.split import activation_affinity, make_split
from splitnet.stitch import ensemble_accuracy, recombine_shared_rescale, stitch
from splitnet.subnet import recombine
from splitnet.train import accuracy, derive_seed, train

LABELS = {"random": "IST (random re-split)", "random-dropout": "IST, dropout-scaled pieces",
          "fixed": "poster split, fixed", "fixed-dropout": "poster split, dropout-scaled"}
TOP = {"seeds", "groups", "out", "config", "rounds", "independence", "figures"}


def load_study(path) -> dict:
    raw = tomllib.loads(Path(path).read_text())
    unknown = sorted(set(raw) - TOP)
    if unknown:
        raise ValueError(f"unknown keys {unknown} in {str(path)!r}; known: {sorted(TOP)}")
    config_mod.from_dict(raw.get("config", {}))  # validate early
    r = raw.setdefault("rounds", {})
    if any(int(e) < 1 for e in r.get("resplit_every", [])):
        raise ValueError(f"rounds.resplit_every={r['resplit_every']} must all be >= 1")
    if not raw.get("seeds"):
        raise ValueError("seeds=[] must name at least one seed")
    return raw


def cell_config(study: dict, seed: int, k: int) -> config_mod.Config:
    raw = copy.deepcopy(study.get("config", {}))
    raw["seed"] = seed
    raw.setdefault("split", {})["groups"] = k
    return config_mod.from_dict(raw)


def poster_split(prep, k: int):
    """The poster's weight-based split of the pretrained net (``experiment.split_of``'s seed)."""
    cfg = prep.config
    return make_split("weights", prep.pretrained, k, seed=derive_seed(cfg.seed, "split", 0))


# --- part 1: rounds ---------------------------------------------------------------------------

def run_rounds(study: dict) -> list[dict]:
    r = study["rounds"]
    out = Path(study["out"])
    rows = read_rows(out)
    done = {row["key"] for row in rows}
    f = open_for_append(out)
    try:
        for seed in study["seeds"]:
            for k in study["groups"]:
                cfg = cell_config(study, seed, k)
                prep = None
                cells = [("ref", None, None)]
                cells += [("rounds", s, int(e))
                          for s in r["strategies"] for e in r["resplit_every"]]
                cells += [("recombination", v, None) for v in r.get("recombination_variants", [])]
                for kind, strategy, period in cells:
                    key = f"{cfg.hash()}|{kind}|{strategy}|{period}|{r.get('stitch_steps', 0)}"
                    if key in done:
                        continue
                    if prep is None:
                        prep = experiment.prepare(cfg)
                    t0 = time.perf_counter()
                    new = {"ref": ref_rows, "rounds": rounds_rows,
                           "recombination": recombination_rows}[kind](prep, r, strategy, period)
                    for row in new:
                        row.update(key=key, seed=seed, k=k, config_hash=cfg.hash(),
                                   config=cfg.to_dict(), seconds=time.perf_counter() - t0)
                    append_rows(f, new)
                    rows += new
                    print(f"seed={seed} k={k} {kind} {strategy or ''} {period or ''}: "
                          + ", ".join(f"{x['kind']}={x['accuracy']:.4f}" for x in new)
                          + f" ({time.perf_counter() - t0:.1f}s)", flush=True)
    finally:
        f.close()
    return rows


def ref_rows(prep, r, _strategy, _period) -> list[dict]:
    cfg, t = prep.config, prep.config.train
    X, _ = prep.data.remaining
    T = t.piece_epochs * steps_per_epoch(len(X), t.batch_size)
    k = cfg.split.groups
    step = dp_step_bytes(prep.pretrained, k)
    net = copy.deepcopy(prep.pretrained)
    train(net, *prep.data.remaining, epochs=t.piece_epochs, batch_size=k * t.batch_size,
          lr=t.lr, momentum=t.momentum, seed=experiment.remaining_order_seed(cfg))
    T_big = t.piece_epochs * steps_per_epoch(len(X), k * t.batch_size)
    return [
        {"kind": "baseline", "accuracy": prep.baseline_accuracy, "total_steps": T,
         "bytes_total": 0, "pretrained_accuracy": prep.pretrained_accuracy},
        {"kind": "dp", "accuracy": prep.baseline_accuracy, "total_steps": T,
         "bytes_total": step * T, "n_params": n_params(prep.pretrained)},
        {"kind": "dp-equal-data", "accuracy": accuracy(net, *prep.data.test),
         "total_steps": T_big, "bytes_total": step * T_big},
    ]


def _strategy_args(prep, strategy: str, k: int) -> dict:
    """``random`` | ``fixed``, optionally ``-dropout`` (``piece_scale="dropout"``)."""
    if strategy.endswith("-dropout"):
        return {**_strategy_args(prep, strategy.removesuffix("-dropout"), k),
                "piece_scale": "dropout"}
    if strategy == "fixed":
        sp = poster_split(prep, k)
        return {"strategy": "exhaustive", "combination": Space(prep.config.model.hidden, k,
                                                               "straight").index_of(sp)}
    return {"strategy": strategy}


def rounds_rows(prep, r, strategy, period) -> list[dict]:
    k = prep.config.split.groups
    res = train_rounds(prep, k=k, variant="straight", resplit_every=period,
                       stitch_steps=int(r.get("stitch_steps", 0)), stitch_lr=r.get("stitch_lr"),
                       **_strategy_args(prep, strategy, k))
    common = {"kind": "rounds", "strategy": strategy, "resplit_every": period,
              "effective_resplit_every": res.resplit_every, "rounds": res.rounds,
              "total_steps": res.total_steps, "bytes_total": res.bytes_total,
              "dp_bytes_total": res.dp_bytes_total, "ensemble_accuracy": res.ensemble_accuracy,
              "piece_accuracies": res.piece_accuracies, "curve": res.curve[-50:],
              "mean_cut_fraction": float(np.mean([c for c in res.cut_fractions if c is not None]))}
    return [{**common, "stitch": False, "accuracy": res.accuracy_before_stitch},
            {**common, "stitch": True, "accuracy": res.accuracy,
             "stitch_steps": int(r.get("stitch_steps", 0))}]


def recombination_rows(prep, r, variant, _period) -> list[dict]:
    """One-shot, poster split: the same trained pieces recombined four ways."""
    cfg = prep.config
    k = cfg.split.groups
    sp = poster_split(prep, k)
    res = train_rounds(prep, k=k, variant=variant, strategy="fixed", split=sp,
                       resplit_every=10**9)
    test = prep.data.test
    shared = recombine_shared_rescale(prep.pretrained, sp, res.paths, res.pieces,
                                      unheld=cfg.split.unheld)
    plain = recombine(prep.pretrained, sp, res.paths, res.pieces, unheld=cfg.split.unheld)
    stitched = stitch(plain, sp, res.paths, prep.data.remaining,
                      steps=int(r.get("stitch_steps", 0)), lr=r.get("stitch_lr", cfg.train.lr),
                      seed=derive_seed(cfg.seed, "stitch", 0), batch_size=cfg.train.batch_size)
    accs = {"sum": accuracy(plain, *test), "shared-rescale": accuracy(shared, *test),
            "ensemble": ensemble_accuracy(res.pieces, *test), "stitch": accuracy(stitched, *test)}
    return [{"kind": "recombination", "variant": variant, "method": m, "accuracy": a,
             "pieces": len(res.paths)} for m, a in accs.items()]


# --- part 2: independence ----------------------------------------------------------------------

def activation_score(A: np.ndarray, split) -> float:
    """mean |corr| over pairs in the same group minus over pairs in different groups."""
    labels = np.concatenate([np.asarray(a) for a in split])
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(labels), dtype=bool)
    return float(A[same & off].mean() - A[~same].mean())


def enumeration_rows(ind: dict, study: dict) -> tuple[list[dict], str]:
    hits = sorted(glob.glob(ind.get("results", "")))
    if hits:
        return read_rows(hits[0]), hits[0]
    raw = copy.deepcopy(study.get("config", {}))
    raw.setdefault("model", {})["hidden"] = list(ind.get("fallback_hidden", [6, 6]))
    raw.setdefault("split", {}).update(strategy="exhaustive", groups=2, variant="straight")
    cfg = config_mod.from_dict(raw)
    path = Path(ind.get("fallback_out", "results/independence-exhaustive.jsonl"))
    rows = [r for r in read_rows(path) if r.get("config_hash") == cfg.hash()]
    done = {r["combination"] for r in rows}
    prep = experiment.prepare(cfg)
    print(f"independence: enumerating {prep.count} combinations of {cfg.model.hidden} "
          f"into {path} ({len(done)} recorded)", flush=True)
    with open_for_append(path) as f:
        for i in range(prep.count):
            if i not in done:
                row = experiment.run_combination(prep, i)
                append_rows(f, [row])
                rows.append(row)
    return rows, str(path)


def run_independence(study: dict) -> list[dict]:
    ind = study.get("independence", {})
    rows, source = enumeration_rows(ind, study)
    if not rows:
        raise ValueError(f"no enumeration rows in {source!r}")
    cfg = config_mod.from_dict(rows[0]["config"])
    prep = experiment.prepare(cfg)
    if cfg.hash() != rows[0]["config_hash"] or prep.baseline_accuracy != rows[0][
            "baseline_accuracy"]:
        raise ValueError(f"{source!r}: could not re-make the pretrained net of its config")
    A = activation_affinity(prep.pretrained, prep.data.pretrain[0])
    space = Space(cfg.model.hidden, cfg.split.groups, cfg.split.variant)
    weights_index = space.index_of(poster_split(prep, cfg.split.groups))
    out = [{"combination": r["combination"], "accuracy": r["accuracy"],
            "baseline_accuracy": r["baseline_accuracy"],
            "lost": r["baseline_accuracy"] - r["accuracy"], "cut_fraction": r["cut_fraction"],
            "activation_score": activation_score(A, r["split"]),
            "weights_split": r["combination"] == weights_index, "source": source,
            "hidden": list(cfg.model.hidden), "k": cfg.split.groups} for r in rows]
    path = Path(ind.get("out", "results/independence.jsonl"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    with open_for_append(path) as f:
        append_rows(f, out)
    return out


def independence_summary(rows: list[dict]) -> dict:
    lost = np.array([r["lost"] for r in rows])
    s = {"n": len(rows), "source": rows[0]["source"], "hidden": rows[0]["hidden"],
         "k": rows[0]["k"], "baseline": rows[0]["baseline_accuracy"],
         "lost_mean": float(lost.mean()), "lost_min": float(lost.min()),
         "lost_max": float(lost.max()), "reached_baseline": int((lost <= 0).sum())}
    for name in ("cut_fraction", "activation_score"):
        rho, p = stats.spearmanr([r[name] for r in rows], lost)
        s[f"rho_{name}"], s[f"p_{name}"] = float(rho), float(p)
    w = [r for r in rows if r["weights_split"]]
    if w:  # where the poster's weight-based split ranks among all combinations
        s["weights_split_lost"] = w[0]["lost"]
        s["weights_split_percentile"] = float((lost < w[0]["lost"]).mean() * 100)
    return s


# --- summaries, table, figures (from rows only) ------------------------------------------------

def mean_ci(values) -> tuple[float, float]:
    """Mean and the half-width of a 95% t-interval over seeds (0 for one seed)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def _group(rows, **match):
    return [r for r in rows if all(r.get(a) == b for a, b in match.items())]


def series(rows, k, strategy, stitch):
    """[(period, mean, ci, mean bytes, mean ensemble)] over seeds, by period."""
    out = []
    sel = _group(rows, kind="rounds", k=k, strategy=strategy, stitch=stitch)
    for e in sorted({r["resplit_every"] for r in sel}):
        rs = [r for r in sel if r["resplit_every"] == e]
        m, ci = mean_ci([r["accuracy"] for r in rs])
        out.append((e, m, ci, float(np.mean([r["bytes_total"] for r in rs])),
                    float(np.mean([r["ensemble_accuracy"] for r in rs])), len(rs),
                    rs[0]["rounds"]))
    return out


def table(rows, ind: dict | None) -> str:
    L = ["# Re-split period study (digits)", ""]
    for k in sorted({r["k"] for r in rows}):
        c = rows[0]["config"]
        L += [f"## k = {k}, hidden {c['model']['hidden']}, straight, T = "
              f"{_group(rows, kind='baseline', k=k)[0]['total_steps']} steps per piece", "",
              "| method | re-split every (steps) | rounds | test acc. (mean ± 95% CI) | "
              "+ stitch | ensemble | MB moved |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for kind, name in (("baseline", "baseline (unsplit)"), ("dp", "data-parallel (= baseline)"),
                           ("dp-equal-data", f"data-parallel, global batch {k}x32")):
            rs = _group(rows, kind=kind, k=k)
            m, ci = mean_ci([r["accuracy"] for r in rs])
            mb = np.mean([r["bytes_total"] for r in rs]) / 1e6
            L.append(f"| {name} | {'every step' if kind != 'baseline' else '-'} | - | "
                     f"{m:.4f} ± {ci:.4f} | | | {mb:.2f} |")
        for strategy in sorted({r["strategy"] for r in _group(rows, kind="rounds", k=k)}):
            plain = series(rows, k, strategy, False)
            st = {e: (m, ci) for e, m, ci, *_ in series(rows, k, strategy, True)}
            label = LABELS.get(strategy, strategy)
            for e, m, ci, b, ens, _n, R in plain:
                sm, sci = st.get(e, (np.nan, np.nan))
                L.append(f"| {label} | {e} | {R} | {m:.4f} ± {ci:.4f} | {sm:.4f} ± {sci:.4f} | "
                         f"{ens:.4f} | {b / 1e6:.3f} |")
        rec = _group(rows, kind="recombination", k=k)
        if rec:
            L += ["", f"One-shot, poster split, k = {k}: the same trained pieces recombined "
                  "(mean ± 95% CI over seeds)", "",
                  "| paths | pieces | sum (plain) | shared rescale | stitch | ensemble |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
            for v in sorted({r["variant"] for r in rec}, reverse=True):
                cells = []
                for meth in ("sum", "shared-rescale", "stitch", "ensemble"):
                    m, ci = mean_ci([r["accuracy"] for r in _group(rec, variant=v, method=meth)])
                    cells.append(f"{m:.4f} ± {ci:.4f}")
                L.append(f"| {v} | {_group(rec, variant=v)[0]['pieces']} | " + " | ".join(cells)
                         + " |")
        L.append("")
    if ind:
        L += ["## Independence: does the split's structure predict the accuracy lost?", "",
              f"{ind['n']} combinations (exhaustive, hidden {ind['hidden']}, k = {ind['k']}, "
              f"`{ind['source']}`); lost = baseline ({ind['baseline']:.4f}) - recombined "
              f"accuracy: mean {ind['lost_mean']:.4f}, range [{ind['lost_min']:.4f}, "
              f"{ind['lost_max']:.4f}], {ind['reached_baseline']} reach the baseline.", "",
              "| predictor | Spearman rho vs lost | p-value |", "| --- | ---: | ---: |",
              f"| cut fraction (abs W crossing groups) | {ind['rho_cut_fraction']:.3f} | "
              f"{ind['p_cut_fraction']:.3g} |",
              f"| activation score (within - across mean abs corr) | "
              f"{ind['rho_activation_score']:.3f} | {ind['p_activation_score']:.3g} |"]
        if "weights_split_lost" in ind:
            L += ["", f"The poster's weight-based split loses {ind['weights_split_lost']:.4f}; "
                  f"{ind['weights_split_percentile']:.0f}% of all combinations lose less."]
        L.append("")
    return "\n".join(L)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(rows, path) -> None:
    plt = _plt()
    ks = sorted({r["k"] for r in rows})
    fig, axes = plt.subplots(1, len(ks), figsize=(6 * len(ks), 4.2), squeeze=False)
    for ax, k in zip(axes[0], ks, strict=True):
        base = mean_ci([r["accuracy"] for r in _group(rows, kind="baseline", k=k)])
        ax.axhline(base[0] * 100, color="C3", lw=1.5, label=f"baseline {base[0] * 100:.1f}%")
        ax.axhspan((base[0] - base[1]) * 100, (base[0] + base[1]) * 100, color="C3", alpha=0.1)
        fixed = series(rows, k, "fixed", False)
        if fixed:
            one = fixed[-1][1] * 100
            ax.axhline(one, color="0.3", ls="--", lw=1.2,
                       label=f"one-shot, poster split {one:.1f}%")
        styles = {("random", False): ("C0", "-", "IST: random re-split"),
                  ("random", True): ("C0", ":", "IST + stitch"),
                  ("random-dropout", False): ("C1", "-", "IST, dropout-scaled pieces"),
                  ("random-dropout", True): ("C1", ":", "IST dropout-scaled + stitch"),
                  ("fixed", False): ("C2", "-", "poster split, fixed"),
                  ("fixed", True): ("C2", ":", "poster split + stitch")}
        for (strategy, st), (color, ls, label) in styles.items():
            s = series(rows, k, strategy, st)
            if not s:
                continue
            e, m, ci = (np.array([x[i] for x in s]) for i in range(3))
            ax.plot(e, m * 100, ls, marker="o", ms=4, color=color, label=label)
            ax.fill_between(e, (m - ci) * 100, (m + ci) * 100, color=color, alpha=0.15)
        n = len({r["seed"] for r in rows})
        periods = sorted({r["resplit_every"] for r in _group(rows, kind="rounds", k=k)})
        ax.set_xscale("log")
        ax.set_xticks(periods, [str(e) for e in periods])
        ax.minorticks_off()
        ax.set(xscale="log", xlabel="re-split period (SGD steps per round; right end = one-shot)",
               ylabel="test accuracy (%)", title=f"k = {k}: mean ± 95% CI over {n} seeds")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_bytes(rows, path) -> None:
    plt = _plt()
    ks = sorted({r["k"] for r in rows})
    fig, axes = plt.subplots(1, len(ks), figsize=(6 * len(ks), 4.2), squeeze=False)
    for ax, k in zip(axes[0], ks, strict=True):
        for strategy, color, label in (("random", "C0", "IST (random re-split)"),
                                       ("random-dropout", "C1", "IST, dropout-scaled pieces"),
                                       ("fixed", "C2", "poster split, fixed")):
            s = series(rows, k, strategy, False)
            if not s:
                continue
            b = np.array([x[3] for x in s])
            m, ci = np.array([x[1] for x in s]), np.array([x[2] for x in s])
            ax.errorbar(b, m * 100, ci * 100, fmt="o-", color=color, ms=4, capsize=3, label=label)
            for x in s:
                ax.annotate(f"E={x[0]}", (x[3], x[1] * 100), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
        for kind, marker, color, label in (("dp", "s", "C3", "data-parallel (= baseline)"),
                                           ("dp-equal-data", "^", "C1",
                                            f"data-parallel, batch {k}x32")):
            rs = _group(rows, kind=kind, k=k)
            if rs:
                m, ci = mean_ci([r["accuracy"] for r in rs])
                ax.errorbar([rs[0]["bytes_total"]], [m * 100], [ci * 100], fmt=marker,
                            color=color, ms=7, capsize=3, label=label)
        ax.set(xscale="log", xlabel="bytes moved in training (all workers, float32)",
               ylabel="test accuracy (%)", title=f"k = {k} workers: accuracy vs communication")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_independence(rows, s, path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    lost = np.array([r["lost"] for r in rows]) * 100
    w = np.array([r["weights_split"] for r in rows])
    for ax, name, label in ((axes[0], "cut_fraction", "cut fraction (|W| crossing groups)"),
                            (axes[1], "activation_score",
                             "activation score (within - across mean |corr|)")):
        x = np.array([r[name] for r in rows])
        ax.plot(x[~w], lost[~w], ".", ms=4, color="C4", alpha=0.7, label="combination")
        if w.any():
            ax.plot(x[w], lost[w], "*", ms=12, color="C3", label="poster's weight-based split")
        ax.axhline(0, color="0.5", lw=1)
        ax.set(xlabel=label, ylabel="accuracy lost to the split (pp)",
               title=f"Spearman rho = {s[f'rho_{name}']:.2f} (p = {s[f'p_{name}']:.2g})")
        ax.legend(fontsize=7)
    fig.suptitle(f"Independence vs accuracy lost: {s['n']} combinations, hidden {s['hidden']}, "
                 f"k = {s['k']}")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m splitnet.studies.resplit",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("config", help="TOML, e.g. experiments/resplit.toml")
    ap.add_argument("--plot-only", action="store_true", help="redraw from the existing JSONL")
    ap.add_argument("--skip-independence", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    study = load_study(args.config)
    figs = study.get("figures", {})
    t0 = time.perf_counter()
    rows = read_rows(study["out"]) if args.plot_only else run_rounds(study)
    ind_rows = None
    if not args.skip_independence:
        ind_path = study.get("independence", {}).get("out", "results/independence.jsonl")
        ind_rows = read_rows(ind_path) if args.plot_only else run_independence(study)
    ind = independence_summary(ind_rows) if ind_rows else None
    plot_accuracy(rows, figs.get("accuracy", "figures/resplit_accuracy.png"))
    plot_bytes(rows, figs.get("bytes", "figures/resplit_bytes.png"))
    if ind:
        plot_independence(ind_rows, ind, figs.get("independence", "figures/independence.png"))
    text = table(rows, ind)
    Path(figs.get("table", "figures/resplit_table.md")).write_text(text)
    print(text)
    print(f"({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
