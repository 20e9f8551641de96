"""Does splitting make training faster? Every method on N = 1, 2 real MPI ranks, against the
clock, then a cost-model projection to N = 1024.

    python experiments/race/run.py experiments/race/config.toml              # ~10 min, 2 cores
    python experiments/race/run.py experiments/race/config.toml --figures    # refresh figures/

Each run is ``mpiexec -n N python -m mpi4py -m splitnet.race --config RACE --out
results/race/n<N>_r<i>.jsonl`` (``repeats`` runs per N, for min and median); a rerun skips the
complete files of the same config. Then, on this machine: the alpha-beta fit
(``calibrate.py``, ping-pong between 2 ranks), one-rank microbenchmarks of every method's
per-step compute at each projected N (``race_bench.measure``) and split's accuracy with k pieces
(``race_bench.split_curves``); the modelled clock is ``costmodel.RaceClock``. Outputs
(results/race/, or figures/ with --figures):

- ``race_accuracy_time.png``   test accuracy against wall-clock seconds (N = 2, first run)
- ``race_accuracy_bytes.png``  test accuracy against MB sent by the busiest rank (N = 2)
- ``race_projection.png``      predicted speed-up in time to target against N, 10 / 100 Gbit/s
- ``race_table.md``            time to target and per-epoch times (min / median), speed-ups, the
                               model's error at N = 2
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from splitnet import race, race_bench, study
from splitnet.mpi import launch
from splitnet.parallel.costmodel import CostParams, RaceClock, StepCompute, link, nearest
from splitnet.race_tables import curves, order, steps_to_target, table, target_accuracy

NAME = "race"
DEFAULTS = {
    "race_config": "experiments/race.toml",
    "ranks": [1, 2],
    "repeats": 3,  # runs per N: timings are reported as min and median
    "sets": [""],  # --set items for every run (e.g. "model.hidden=[512, 512]")
    "links_gbit": [10.0, 100.0],  # projected links
    "link_alpha_us": 5.0,  # their latency per message
    "max_ranks": 1024,
    "bench_reps": 3,
    "bench_steps": 20,
}
SHOWN = [2, 4, 8, 16, 64, 256, 1024]  # the projection table's columns


def check(cfg: dict, args: object = None) -> dict:
    cfg["sets"] = [s for s in cfg["sets"] if s]
    if not cfg["ranks"] or min(cfg["ranks"]) < 1 or cfg["repeats"] < 1:
        raise ValueError(f"ranks={cfg['ranks']} and repeats={cfg['repeats']} must be >= 1")
    for n in cfg["ranks"]:
        race.load(cfg["race_config"], cfg["sets"], n)  # every run's config, checked now
    return cfg


def race_cfg(cfg: dict, n: int) -> tuple:
    return race.load(cfg["race_config"], cfg["sets"], n)


def run_path(rows: Path, n: int, i: int) -> Path:
    return rows / f"n{n}_r{i}.jsonl"


def run_races(cfg: dict, rows: Path) -> None:
    for i in range(cfg["repeats"]):  # interleaved: slow phases of the machine hit every N
        for n in cfg["ranks"]:
            path = run_path(rows, n, i)
            if race.complete(path, *race_cfg(cfg, n)):
                continue
            sets = [a for s in cfg["sets"] for a in ("--set", s)]
            # an unfinished run (killed, or another config's) is replaced: a timed race restarts
            args = ["-m", "splitnet.race", "--config", cfg["race_config"], *sets]
            args += ["--out", str(path), "--overwrite"]
            print(f"N={n} run {i}: {' '.join(args[1:])}")
            launch(n, args, check=True)
    cal = rows / "calibration.json"
    if not cal.exists():
        launch(2, [str(Path(__file__).parent / "calibrate.py"), str(cal)], check=True)


def load_runs(rows: Path, cfg: dict) -> list[dict]:
    return [
        dict(x, run=i)
        for n in cfg["ranks"]
        for i in range(cfg["repeats"])
        for x in race.read_rows(run_path(rows, n, i))
    ]


def projection(rows: list[dict], cfg: dict, b: StepCompute, cal: dict, splits: dict) -> tuple:
    """Model vs measured at N = 2 (local alpha-beta), and speed-ups to max_ranks on the links."""
    c, r = race_cfg(cfg, 2)
    cs = curves(rows)
    local = CostParams(**cal["params"])
    pb = race.problem(c, r)
    clock = RaceClock(b, tuple(pb.sizes), c.train.batch_size, pb.T, local)
    goal = target_accuracy(cs, r.target)
    ran = {k[0] for k in cs}
    vs = [v for v in race.variants(r) if v.label in ran]
    lines = [
        "Model vs measured at N = 2 (per-step seconds; model: one-rank microbenchmarks + the "
        f"fitted alpha = {local.alpha * 1e6:.2f} us, 1/beta = {1 / local.beta / 1e9:.1f} GB/s):",
        "",
        "| method | measured (median) | model | error |",
        "|---|---|---|---|",
    ]
    errors = []
    for v in vs:
        runs = [x for (lab, n, _), x in cs.items() if (lab, n) == (v.label, 2)]
        if not runs:
            continue
        meas = statistics.median(x[-1]["wall_s"] / x[-1]["step"] for x in runs)
        pred = clock.step_time(v, 2)
        errors.append(abs(pred / meas - 1))
        lines.append(
            f"| {v.label} | {meas * 1e3:.2f} ms | {pred * 1e3:.2f} ms | {pred / meas - 1:+.0%} |"
        )
    lines.append(f"\nMean absolute error: {np.mean(errors):.0%}.\n")
    # steps to the target: single's for the methods that compute the same SGD; measured at N = 2
    # for top-k; split's from its k-piece curves (nearest k trained in process)
    steps = steps_to_target(cs, vs, goal)

    def steps_to(v: race.Variant, N: int) -> float | None:
        if v.method == "split":
            hit = next((st for st, acc in nearest(splits[v.mode], N) if acc >= goal), None)
            return None if hit is None else float(hit)
        return steps["single"] if v.exact else steps[v.label]

    Ns = [2**e for e in range(1, int(math.log2(cfg["max_ranks"])) + 1)]
    proj: dict = {}
    for gbit in cfg["links_gbit"]:
        at = replace(clock, params=link(gbit, cfg["link_alpha_us"] * 1e-6, local))
        for v in (v for v in vs if v.method != "single"):
            n_to = {
                N: steps_to(v, N) for N in Ns if v.method != "split" or N <= min(c.model.hidden)
            }
            ok = [N for N, st in n_to.items() if st is not None]
            proj[(gbit, v.label)] = (ok, [at.speedup(v, N, n_to[N], steps["single"]) for N in ok])
    lines += [
        f"Predicted speed-up in time to target over single ({cfg['link_alpha_us']:g} us per "
        "message):",
        "",
        "| link | method | " + " | ".join(f"N={N}" for N in SHOWN) + " |",
        "|---|---|" + "---|" * len(SHOWN),
    ]
    for (gbit, lab), (ok, sp) in proj.items():
        cells = [f"{sp[ok.index(N)]:.2f}" if N in ok else "-" for N in SHOWN]
        lines.append(f"| {gbit:g} Gbit/s | {lab} | " + " | ".join(cells) + " |")
    missing = [v.label for v in vs if v.method != "split" and steps[v.label] is None]
    if missing:
        lines.append(f"\nNot projected (target not reached at N = 2): {', '.join(missing)}.")
    lines += [
        "",
        "Split's final test accuracy with k pieces (in process: the same algorithm, seeds and "
        "stream; the projection takes its steps to the target from these curves):",
        "",
        "| k | " + " | ".join(str(k) for k in sorted(splits["one-shot"])) + " |",
        "|---|" + "---|" * len(splits["one-shot"]),
    ]
    for mode, curve in splits.items():
        cells = [f"{curve[k][-1][1]:.4f}" for k in sorted(curve)]
        lines.append(f"| split {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", proj


def plot(rows: list[dict], figs: Path, proj: dict) -> None:
    cs, place = curves(rows), order(rows)
    N = max(k[1] for k in cs)
    for key, xlabel, scale, name in (
        ("wall_s", "wall-clock seconds (training only)", 1.0, "race_accuracy_time.png"),
        ("bytes_max", "MB sent by the busiest rank", 1e-6, "race_accuracy_bytes.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (lab, n, run), v in sorted(cs.items(), key=lambda kv: place[kv[0][0]]):
            if run == 0 and n == N:
                # log axes: step 0 (0 s) drawn at 0.05 s; single sends nothing: drawn at 1 kB
                xs = [max(x[key] * scale, 0.05 if key == "wall_s" else 1e-3) for x in v]
                ys = [x["test_accuracy"] for x in v]
                ax.plot(xs, ys, marker="o", ms=3, label=lab, color=f"C{place[lab]}")
        ax.set(xscale="log", xlabel=xlabel, ylabel="test accuracy", ylim=(0.5, 1.0))
        ax.set_title(f"MNIST-5k, one net on N = {N} ranks, every method")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        study.save_figure(fig, figs / name)
    if not proj:
        return
    links = sorted({g for g, _ in proj})
    fig, axes = plt.subplots(1, len(links), figsize=(5.5 * len(links), 4.2), sharey=True)
    for ax, gbit in zip(np.atleast_1d(axes), links, strict=True):
        for (g, lab), (ns, sp) in sorted(proj.items(), key=lambda kv: place[kv[0][1]]):
            if g == gbit:
                ax.plot(ns, sp, marker="o", ms=3, label=lab, color=f"C{place[lab]}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set(yscale="log", xlabel="ranks N", title=f"predicted, {gbit:g} Gbit/s links")
        ax.grid(alpha=0.3, which="both")
    np.atleast_1d(axes)[0].set_ylabel("speed-up in time to target over single")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    study.save_figure(fig, figs / "race_projection.png")


def main(argv: list[str] | None = None) -> int:
    args, cfg = study.cli(NAME, __doc__, DEFAULTS, argv, check=check)
    rows_dir, figs = study.output_dirs(NAME, args.figures)
    if not args.plot_only:
        run_races(cfg, rows_dir)
    rows = load_runs(rows_dir, cfg)
    if not rows:
        study.fail(NAME, f"no rows in {str(rows_dir)!r} yet: run without --plot-only first")
    top = int(math.log2(cfg["max_ranks"]))
    bench_path, split_path = rows_dir / "bench.json", rows_dir / "split_k.json"
    if not bench_path.exists() and not args.plot_only:
        ns, reps, steps = [2**e for e in range(top + 1)], cfg["bench_reps"], cfg["bench_steps"]
        b = race_bench.measure(*race_cfg(cfg, 1), ns, reps, steps)
        bench_path.write_text(json.dumps(b.to_json(), indent=1))
    if not split_path.exists() and not args.plot_only:
        ks = [2**e for e in range(1, top + 1)]
        split_path.write_text(json.dumps(race_bench.split_curves(*race_cfg(cfg, 1), ks)))
    text = table(rows, race_cfg(cfg, 1)[1].target)
    proj = {}
    cal_path = rows_dir / "calibration.json"
    if bench_path.exists() and cal_path.exists() and split_path.exists():
        b = StepCompute.from_json(json.loads(bench_path.read_text()))
        splits = json.loads(split_path.read_text())
        splits = {m: {int(k): v for k, v in c.items()} for m, c in splits.items()}
        more, proj = projection(rows, cfg, b, json.loads(cal_path.read_text()), splits)
        text += "\n" + more
    plot(rows, figs, proj)
    (figs / "race_table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
