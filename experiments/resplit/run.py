"""Beyond one-shot: re-split period, stitch, bytes moved; and does "independence" predict anything?

    python experiments/resplit/run.py experiments/resplit/config.toml            # ~5 min, 2 cores
    python experiments/resplit/run.py experiments/resplit/config.toml --figures  # refresh figures/
    python experiments/resplit/run.py experiments/resplit/config.toml --plot-only

Part 1, rounds (``splitnet.rounds``). For every seed, k and strategy (``random``: re-drawn every
round, IST; ``fixed``: the poster's weight-based split of the pretrained net, kept; a
``-dropout`` suffix sets ``split.piece_scale = "dropout"``) and every re-split period E, every
piece trains the baseline's T steps in ceil(T/E) rounds; one run gives the accuracy before and
after a ``stitch_steps`` stitch. References per (k, seed):

    baseline       the unsplit net, the same T steps on the same minibatches
    dp             data-parallel with the global minibatch split over N = k workers: the same
                   arithmetic as the baseline (so its accuracy), 8(N-1) n_params bytes per step
    dp-equal-data  data-parallel where each worker takes a minibatch of the usual size: global
                   batch N*32, the same epochs (T/N steps), same lr, 8(N-1) n_params per step

Every cell runs once per architecture in ``norms``: ``"none"`` (the BatchNorm-free MLP) and
``"batch"`` (IST's released architecture, ``model.norm = "batch"``: bias-free Linear + BatchNorm1d,
an affine-free BatchNorm on the logits; its pieces train with the loop engine and a recombined
net's running statistics are re-estimated on the remaining data before it is evaluated).

A one-shot table compares recombinations of the same trained pieces (plain sum, shared rescale,
logit-sum ensemble, stitch) for straight and alternating paths.

Part 2, independence. The exhaustive enumeration of ``[independence] config`` (run here with the
driver into this study's own file, resumable) gives Spearman's rho of the cut fraction and of the
activation score (``split.activation_score`` on the pretrain data) against the accuracy lost to
the split, baseline - accuracy.

Resumable: rows are appended per cell and a rerun skips recorded cells (keyed by config hash,
kind, strategy, period); the figures and the table are drawn from the files alone.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

from splitnet import config as config_mod  # noqa: E402
from splitnet import enumerate as driver  # noqa: E402
from splitnet import experiment, study  # noqa: E402
from splitnet.analysis import mean_ci  # noqa: E402
from splitnet.combinations import Space  # noqa: E402
from splitnet.pieces import inference_net, n_params, recombine  # noqa: E402
from splitnet.results import (  # noqa: E402
    Layout,
    append_rows,
    encode_row,
    open_for_append,
    read_rows,
)
from splitnet.rounds import RoundsResult, dp_step_bytes, train_rounds  # noqa: E402
from splitnet.seeds import remaining_order_seed, stitch_seed  # noqa: E402
from splitnet.sgd import accuracy, steps_per_epoch, train  # noqa: E402
from splitnet.split import activation_affinity, activation_score, split_for  # noqa: E402
from splitnet.stitch import stitch  # noqa: E402

LABELS = {
    "random": "IST (random re-split)",
    "random-dropout": "IST, dropout-scaled pieces",
    "fixed": "poster split, fixed",
    "fixed-dropout": "poster split, dropout-scaled",
}
DEFAULTS = {
    "seeds": [0],
    "groups": [2],
    "norms": ["none"],
    "config": {},
    "rounds": {},
    "independence": {},
}
NORM_TITLES = {
    "none": "BatchNorm-free MLP (Linear + bias)",
    "batch": "IST's BatchNorm MLP (bias-free Linear + BatchNorm1d, affine-free BN on the logits)",
}
ROUNDS = {
    "resplit_every": [1, 10, 100],
    "strategies": ["random", "fixed"],
    "stitch_steps": 0,
    "stitch_lr": 0.0,
    "recombination_variants": [],
}
STRATEGIES = ("random", "fixed", "random-dropout", "fixed-dropout")


def check(raw: dict, _args: object = None) -> dict:
    """Validate the study's own tables (unknown keys and bad values are errors, not tracebacks)."""
    config_mod.from_dict(raw["config"])
    unknown = sorted(set(raw["rounds"]) - set(ROUNDS))
    if unknown:
        raise ValueError(f"unknown keys {unknown} in [rounds]; known: {sorted(ROUNDS)}")
    r = raw["rounds"] = {**ROUNDS, **raw["rounds"]}
    if any(int(e) < 1 for e in r["resplit_every"]):
        raise ValueError(f"rounds.resplit_every={r['resplit_every']} must all be >= 1")
    bad = sorted(set(r["strategies"]) - set(STRATEGIES))
    if bad:
        raise ValueError(f"rounds.strategies {bad} are not among {list(STRATEGIES)}")
    if not raw["seeds"]:
        raise ValueError("seeds=[] must name at least one seed")
    bad = [n for n in raw["norms"] if n not in NORM_TITLES] or ([] if raw["norms"] else [[]])
    if bad:
        raise ValueError(f"norms={raw['norms']!r}: {bad[0]!r} is not one of none, batch")
    unknown = sorted(set(raw["independence"]) - {"config"})
    if unknown:
        raise ValueError(f"unknown keys {unknown} in [independence]; known: ['config']")
    for k in raw["groups"]:
        for norm in raw["norms"]:
            cell_config(raw, raw["seeds"][0], k, norm)  # every k fits every layer
    return raw


def cell_config(s: dict, seed: int, groups: int, norm: str = "none") -> config_mod.Config:
    raw = copy.deepcopy(s["config"])
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


def cells(s: dict) -> list[tuple]:
    """(seed, groups, cell config, kind, strategy, period, key) of every cell of this study
    (the config hash in the key tells the architectures apart)."""
    r = s["rounds"]
    kinds = [("ref", None, None)]
    kinds += [("rounds", st, int(e)) for st in r["strategies"] for e in r["resplit_every"]]
    kinds += [("recombination", v, None) for v in r["recombination_variants"]]
    out = []
    for norm in s["norms"]:
        for seed in s["seeds"]:
            for k in s["groups"]:
                cfg = cell_config(s, seed, k, norm)
                for kind, strategy, period in kinds:
                    key = f"{cfg.hash()}|{kind}|{strategy}|{period}|{r['stitch_steps']}"
                    out.append((seed, k, cfg, kind, strategy, period, key))
    return out


def this_study(s: dict, rows: list[dict]) -> list[dict]:
    """The rows of this study's cells only: a file may also hold an edited config's cells,
    which stay recorded (and are skipped again if the edit is undone) but are never mixed in."""
    keys = {c[-1] for c in cells(s)}
    return [row for row in rows if row["key"] in keys]


def run_rounds(s: dict, path: Path) -> list[dict]:
    r = s["rounds"]
    f, rows = open_for_append(path, require="key", prefix=b"{")
    done = {row["key"] for row in rows}
    preps: dict[str, experiment.Prepared] = {}
    with f:
        for seed, k, cfg, kind, strategy, period, key in cells(s):
            if key in done:
                continue
            prep = preps.get(cfg.hash()) or preps.setdefault(cfg.hash(), experiment.prepare(cfg))
            t0 = time.perf_counter()
            new = CELLS[kind](prep, r, strategy, period)
            for row in new:
                row.update(
                    key=key,
                    seed=seed,
                    groups=k,
                    norm=cfg.model.norm,
                    config_hash=cfg.hash(),
                    config=cfg.to_dict(),
                    seconds=time.perf_counter() - t0,
                )
            append_rows(f, new)
            rows += new
            print(
                f"norm={cfg.model.norm} seed={seed} groups={k} {kind} {strategy or ''} "
                f"{period or ''}: "
                + ", ".join(f"{x['kind']}={x['accuracy']:.4f}" for x in new)
                + f" ({time.perf_counter() - t0:.1f}s)",
                flush=True,
            )
    return this_study(s, rows)


def ref_rows(prep: experiment.Prepared, r: dict, _strategy, _period) -> list[dict]:
    cfg, t = prep.config, prep.config.train
    n = len(prep.data.remaining[0])
    k = cfg.split.groups
    T, T_big = (t.piece_epochs * steps_per_epoch(n, b) for b in (t.batch_size, k * t.batch_size))
    step = dp_step_bytes(prep.pretrained, k)
    net = copy.deepcopy(prep.pretrained)
    train(
        net,
        *prep.data.remaining,
        epochs=t.piece_epochs,
        batch_size=k * t.batch_size,
        lr=t.lr,
        momentum=t.momentum,
        seed=remaining_order_seed(cfg),
    )
    return [
        {
            "kind": "baseline",
            "accuracy": prep.baseline_accuracy,
            "total_steps": T,
            "bytes_total": 0,
            "pretrained_accuracy": prep.pretrained_accuracy,
        },
        {
            "kind": "dp",
            "accuracy": prep.baseline_accuracy,
            "total_steps": T,
            "bytes_total": step * T,
            "n_params": n_params(prep.pretrained),
        },
        {
            "kind": "dp-equal-data",
            "accuracy": accuracy(net, *prep.data.test),
            "total_steps": T_big,
            "bytes_total": step * T_big,
        },
    ]


def rounds_rows(prep: experiment.Prepared, r: dict, strategy: str, period: int) -> list[dict]:
    base = strategy.removesuffix("-dropout")
    scale = "dropout" if strategy.endswith("-dropout") else "none"
    if base == "fixed":
        cfg, combination = poster_combination(prep)
    else:
        cfg, combination = with_split(prep.config, strategy="random"), 0
    cfg = with_split(
        cfg,
        resplit_every=period,
        piece_scale=scale,
        stitch_steps=int(r["stitch_steps"]),
        stitch_lr=float(r["stitch_lr"]),
    )
    res = train_rounds(prep.pretrained, prep.data, cfg, [combination])[0]
    test = prep.data.test
    common = {
        "kind": "rounds",
        "strategy": strategy,
        "resplit_every": period,
        "effective_resplit_every": res.resplit_every,
        "rounds": res.rounds,
        "total_steps": res.total_steps,
        "bytes_total": res.bytes_total,
        "dp_bytes_total": res.dp_bytes_total,
        "ensemble_accuracy": res.ensemble_accuracy(*test),
        "piece_accuracies": res.piece_accuracies(*test),
        "curve": res.curve[-50:],
        "mean_cut_fraction": float(np.mean([c for c in res.cut_fractions if c is not None])),
    }
    return [
        {**common, "stitch": False, "accuracy": res.accuracy_before_stitch},
        {
            **common,
            "stitch": True,
            "accuracy": accuracy(res.net, *test),
            "stitch_steps": int(r["stitch_steps"]),
        },
    ]


def recombination_rows(prep: experiment.Prepared, r: dict, variant: str, _period) -> list[dict]:
    """One-shot, poster split: the same trained pieces recombined four ways."""
    cfg, combination = poster_combination(prep, variant)
    res: RoundsResult = train_rounds(prep.pretrained, prep.data, cfg, [combination])[0]
    test, s = prep.data.test, cfg.split
    X = prep.data.remaining[0]
    plain = recombine(prep.pretrained, res.split, res.paths, res.pieces, unheld=s.unheld)
    shared = recombine(
        prep.pretrained, res.split, res.paths, res.pieces, unheld=s.unheld, output="shared-rescale"
    )
    shared = inference_net(shared, X, s.norm_stats)
    stitched = stitch(
        plain,
        res.split,
        res.paths,
        prep.data.remaining,
        steps=int(r["stitch_steps"]),
        lr=float(r["stitch_lr"]) or cfg.train.lr,
        seed=stitch_seed(cfg),
        batch_size=cfg.train.batch_size,
    )
    accs = {
        "sum": accuracy(inference_net(plain, X, s.norm_stats), *test),
        "shared-rescale": accuracy(shared, *test),
        "ensemble": res.ensemble_accuracy(*test),
        "stitch": accuracy(inference_net(stitched, X, s.norm_stats), *test),
    }
    return [
        {
            "kind": "recombination",
            "variant": variant,
            "method": m,
            "accuracy": a,
            "pieces": len(res.paths),
        }
        for m, a in accs.items()
    ]


CELLS = {"ref": ref_rows, "rounds": rounds_rows, "recombination": recombination_rows}


# --- part 2: independence ----------------------------------------------------------------------


def run_independence(s: dict, enumeration: Path, path: Path) -> list[dict]:
    source = s["independence"].get("config", "experiments/resplit/independence.toml")
    code = driver.main(["--config", source, "--out", str(enumeration), "--quiet"])  # resumes
    if code:
        raise SystemExit(code)
    rows = read_rows(enumeration)
    cfg = config_mod.from_dict(rows[0]["config"])
    prep = experiment.prepare(cfg)
    A = activation_affinity(prep.pretrained, prep.data.pretrain[0])
    _, weights_index = poster_combination(prep, cfg.split.variant)
    out = [
        {
            "combination": r["combination"],
            "accuracy": r["accuracy"],
            "baseline_accuracy": r["baseline_accuracy"],
            "lost": r["baseline_accuracy"] - r["accuracy"],
            "cut_fraction": r["cut_fraction"],
            "activation_score": activation_score(A, r["split"]),
            "weights_split": r["combination"] == weights_index,
            "source": str(enumeration),
            "hidden": list(cfg.model.hidden),
            "groups": cfg.split.groups,
        }
        for r in rows
    ]
    # derived from the enumeration: rewritten whole, never appended twice
    path.write_bytes(b"".join(encode_row(r) for r in out))
    return out


def independence_summary(rows: list[dict]) -> dict:
    lost = np.array([r["lost"] for r in rows])
    s = {
        "n": len(rows),
        "source": rows[0]["source"],
        "hidden": rows[0]["hidden"],
        "groups": rows[0]["groups"],
        "baseline": rows[0]["baseline_accuracy"],
        "lost_mean": float(lost.mean()),
        "lost_min": float(lost.min()),
        "lost_max": float(lost.max()),
        "reached_baseline": int((lost <= 0).sum()),
    }
    for name in ("cut_fraction", "activation_score"):
        rho, p = stats.spearmanr([r[name] for r in rows], lost)
        s[f"rho_{name}"], s[f"p_{name}"] = float(rho), float(p)
    w = [r for r in rows if r["weights_split"]]
    if w:  # where the poster's weight-based split ranks among all combinations
        s["weights_split_lost"] = w[0]["lost"]
        s["weights_split_percentile"] = float((lost < w[0]["lost"]).mean() * 100)
    return s


def _group(rows, **match):
    return [r for r in rows if all(r.get(a) == b for a, b in match.items())]


def series(rows, k, strategy, stitch):
    """[(period, mean, ci, mean bytes, mean ensemble)] over seeds, by period."""
    out = []
    sel = _group(rows, kind="rounds", groups=k, strategy=strategy, stitch=stitch)
    for e in sorted({r["resplit_every"] for r in sel}):
        rs = [r for r in sel if r["resplit_every"] == e]
        m, ci = mean_ci([r["accuracy"] for r in rs])
        out.append(
            (
                e,
                m,
                ci,
                float(np.mean([r["bytes_total"] for r in rs])),
                float(np.mean([r["ensemble_accuracy"] for r in rs])),
                len(rs),
                rs[0]["rounds"],
            )
        )
    return out


def norms_of(rows) -> list[str]:
    """The architectures in ``rows``, BatchNorm-free first (rows before them have no key)."""
    present = {r.get("norm", "none") for r in rows}
    return [n for n in NORM_TITLES if n in present]


def of_norm(rows, norm: str) -> list[dict]:
    return [r for r in rows if r.get("norm", "none") == norm]


def table(rows, ind: dict | None) -> str:
    L = ["# Re-split period study (digits)", ""]
    for norm in norms_of(rows):
        L += [f"# {NORM_TITLES[norm]}", ""] + period_tables(of_norm(rows, norm))
    L += independence_lines(ind)
    return "\n".join(L)


def period_tables(rows) -> list[str]:
    """The per-k tables of one architecture's rows."""
    L = []
    for k in sorted({r["groups"] for r in rows}):
        c = rows[0]["config"]
        L += [
            f"## k = {k}, hidden {c['model']['hidden']}, straight, T = "
            f"{_group(rows, kind='baseline', groups=k)[0]['total_steps']} steps per piece",
            "",
            "| method | re-split every (steps) | rounds | test acc. (mean ± 95% CI) | "
            "+ stitch | ensemble | MB moved |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for kind, name in (
            ("baseline", "baseline (unsplit)"),
            ("dp", "data-parallel (= baseline)"),
            ("dp-equal-data", f"data-parallel, global batch {k}x32"),
        ):
            rs = _group(rows, kind=kind, groups=k)
            m, ci = mean_ci([r["accuracy"] for r in rs])
            mb = np.mean([r["bytes_total"] for r in rs]) / 1e6
            L.append(
                f"| {name} | {'every step' if kind != 'baseline' else '-'} | - | "
                f"{m:.4f} ± {ci:.4f} | | | {mb:.2f} |"
            )
        for strategy in sorted({r["strategy"] for r in _group(rows, kind="rounds", groups=k)}):
            plain = series(rows, k, strategy, False)
            st = {e: (m, ci) for e, m, ci, *_ in series(rows, k, strategy, True)}
            label = LABELS.get(strategy, strategy)
            for e, m, ci, b, ens, _n, R in plain:
                sm, sci = st.get(e, (np.nan, np.nan))
                L.append(
                    f"| {label} | {e} | {R} | {m:.4f} ± {ci:.4f} | {sm:.4f} ± {sci:.4f} | "
                    f"{ens:.4f} | {b / 1e6:.3f} |"
                )
        rec = _group(rows, kind="recombination", groups=k)
        if rec:
            L += [
                "",
                f"One-shot, poster split, k = {k}: the same trained pieces recombined "
                "(mean ± 95% CI over seeds)",
                "",
                "| paths | pieces | sum (plain) | shared rescale | stitch | ensemble |",
                "| --- | ---: | ---: | ---: | ---: | ---: |",
            ]
            for v in sorted({r["variant"] for r in rec}, reverse=True):
                cells = []
                for meth in ("sum", "shared-rescale", "stitch", "ensemble"):
                    m, ci = mean_ci([r["accuracy"] for r in _group(rec, variant=v, method=meth)])
                    cells.append(f"{m:.4f} ± {ci:.4f}")
                L.append(
                    f"| {v} | {_group(rec, variant=v)[0]['pieces']} | " + " | ".join(cells) + " |"
                )
        L.append("")
    return L


def independence_lines(ind: dict | None) -> list[str]:
    L = []
    if ind:
        L += [
            "## Independence: does the split's structure predict the accuracy lost?",
            "",
            f"{ind['n']} combinations (exhaustive, hidden {ind['hidden']}, k = {ind['groups']}, "
            f"`{ind['source']}`); lost = baseline ({ind['baseline']:.4f}) - recombined "
            f"accuracy: mean {ind['lost_mean']:.4f}, range [{ind['lost_min']:.4f}, "
            f"{ind['lost_max']:.4f}], {ind['reached_baseline']} reach the baseline.",
            "",
            "| predictor | Spearman rho vs lost | p-value |",
            "| --- | ---: | ---: |",
            f"| cut fraction (abs W crossing groups) | {ind['rho_cut_fraction']:.3f} | "
            f"{ind['p_cut_fraction']:.3g} |",
            f"| activation score (within - across mean abs corr) | "
            f"{ind['rho_activation_score']:.3f} | {ind['p_activation_score']:.3g} |",
        ]
        if "weights_split_lost" in ind:
            L += [
                "",
                f"The poster's weight-based split loses {ind['weights_split_lost']:.4f}; "
                f"{ind['weights_split_percentile']:.0f}% of all combinations lose less.",
            ]
        L.append("")
    return L


def panels(rows):
    """(figure, [(axes, rows of one architecture, k)]): a row of panels per architecture."""
    ks, norms = sorted({r["groups"] for r in rows}), norms_of(rows)
    fig, axes = plt.subplots(
        len(norms), len(ks), figsize=(6 * len(ks), 4.2 * len(norms)), squeeze=False
    )
    cells = [
        (axes[i][j], of_norm(rows, norm), k, norm)
        for i, norm in enumerate(norms)
        for j, k in enumerate(ks)
    ]
    return fig, cells


def plot_accuracy(rows, path) -> None:
    fig, cells = panels(rows)
    for ax, rows, k, norm in cells:  # rows: one architecture's
        base = mean_ci([r["accuracy"] for r in _group(rows, kind="baseline", groups=k)])
        ax.axhline(base[0] * 100, color="C3", lw=1.5, label=f"baseline {base[0] * 100:.1f}%")
        ax.axhspan((base[0] - base[1]) * 100, (base[0] + base[1]) * 100, color="C3", alpha=0.1)
        fixed = series(rows, k, "fixed", False)
        if fixed:
            one = fixed[-1][1] * 100
            ax.axhline(
                one, color="0.3", ls="--", lw=1.2, label=f"one-shot, poster split {one:.1f}%"
            )
        styles = {
            ("random", False): ("C0", "-", "IST: random re-split"),
            ("random", True): ("C0", ":", "IST + stitch"),
            ("random-dropout", False): ("C1", "-", "IST, dropout-scaled pieces"),
            ("random-dropout", True): ("C1", ":", "IST dropout-scaled + stitch"),
            ("fixed", False): ("C2", "-", "poster split, fixed"),
            ("fixed", True): ("C2", ":", "poster split + stitch"),
        }
        for (strategy, st), (color, ls, label) in styles.items():
            s = series(rows, k, strategy, st)
            if not s:
                continue
            e, m, ci = (np.array([x[i] for x in s]) for i in range(3))
            ax.plot(e, m * 100, ls, marker="o", ms=4, color=color, label=label)
            ax.fill_between(e, (m - ci) * 100, (m + ci) * 100, color=color, alpha=0.15)
        n = len({r["seed"] for r in rows})
        periods = sorted({r["resplit_every"] for r in _group(rows, kind="rounds", groups=k)})
        ax.set_xscale("log")
        ax.set_xticks(periods, [str(e) for e in periods])
        ax.minorticks_off()
        ax.set(
            xscale="log",
            xlabel="re-split period (SGD steps per round; right end = one-shot)",
            ylabel="test accuracy (%)",
            title=f"{'BatchNorm MLP' if norm == 'batch' else 'MLP'}, k = {k}: "
            f"mean ± 95% CI over {n} seeds",
        )
        ax.legend(fontsize=7, loc="lower left")
    study.save_figure(fig, path)


def plot_bytes(rows, path) -> None:
    fig, cells = panels(rows)
    for ax, rows, k, norm in cells:  # rows: one architecture's
        for strategy, color, label in (
            ("random", "C0", "IST (random re-split)"),
            ("random-dropout", "C1", "IST, dropout-scaled pieces"),
            ("fixed", "C2", "poster split, fixed"),
        ):
            s = series(rows, k, strategy, False)
            if not s:
                continue
            b = np.array([x[3] for x in s])
            m, ci = np.array([x[1] for x in s]), np.array([x[2] for x in s])
            ax.errorbar(b, m * 100, ci * 100, fmt="o-", color=color, ms=4, capsize=3, label=label)
            for x in s:
                ax.annotate(
                    f"E={x[0]}",
                    (x[3], x[1] * 100),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        for kind, marker, color, label in (
            ("dp", "s", "C3", "data-parallel (= baseline)"),
            ("dp-equal-data", "^", "C1", f"data-parallel, batch {k}x32"),
        ):
            rs = _group(rows, kind=kind, groups=k)
            if rs:
                m, ci = mean_ci([r["accuracy"] for r in rs])
                ax.errorbar(
                    [rs[0]["bytes_total"]],
                    [m * 100],
                    [ci * 100],
                    fmt=marker,
                    color=color,
                    ms=7,
                    capsize=3,
                    label=label,
                )
        ax.set(
            xscale="log",
            xlabel="bytes moved in training (all workers, float32)",
            ylabel="test accuracy (%)",
            title=f"{'BatchNorm MLP' if norm == 'batch' else 'MLP'}, k = {k} workers: "
            "accuracy vs communication",
        )
        ax.legend(fontsize=7, loc="lower right")
    study.save_figure(fig, path)


def plot_independence(rows, s, path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    lost = np.array([r["lost"] for r in rows]) * 100
    w = np.array([r["weights_split"] for r in rows])
    for ax, name, label in (
        (axes[0], "cut_fraction", "cut fraction (|W| crossing groups)"),
        (axes[1], "activation_score", "activation score (within - across mean |corr|)"),
    ):
        x = np.array([r[name] for r in rows])
        ax.plot(x[~w], lost[~w], ".", ms=4, color="C4", alpha=0.7, label="combination")
        if w.any():
            ax.plot(x[w], lost[w], "*", ms=12, color="C3", label="poster's weight-based split")
        ax.axhline(0, color="0.5", lw=1)
        ax.set(
            xlabel=label,
            ylabel="accuracy lost to the split (pp)",
            title=f"Spearman rho = {s[f'rho_{name}']:.2f} (p = {s[f'p_{name}']:.2g})",
        )
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Independence vs accuracy lost: {s['n']} combinations, hidden {s['hidden']}, "
        f"k = {s['groups']}"
    )
    study.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    args, s = study.cli(
        "resplit",
        __doc__,
        DEFAULTS,
        argv,
        check=check,
        options=[("--skip-independence", {"action": "store_true", "help": "part 1 (rounds) only"})],
    )
    torch.set_num_threads(1)
    out, figs = study.output_dirs("resplit", args.figures)
    t0 = time.perf_counter()
    rounds = out / "resplit.jsonl"
    rows = (
        this_study(s, read_rows(rounds, Layout(("key",), require="key")))
        if args.plot_only
        else run_rounds(s, rounds)
    )
    ind = ind_rows = None
    if not args.skip_independence:
        path = out / "independence.jsonl"
        ind_rows = (
            read_rows(path)
            if args.plot_only
            else run_independence(s, out / "independence-exhaustive.jsonl", path)
        )
        ind = independence_summary(ind_rows) if ind_rows else None
    plot_accuracy(rows, figs / "resplit_accuracy.png")
    plot_bytes(rows, figs / "resplit_bytes.png")
    if ind:
        plot_independence(ind_rows, ind, figs / "independence.png")
    text = table(rows, ind)
    (figs / "resplit_table.md").write_text(text)
    print(text)
    print(f"({time.perf_counter() - t0:.0f}s; rows in {out}, figures in {figs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
