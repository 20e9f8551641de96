"""Issue 12 study: does splitting make training faster? Every method on N = 1, 2 real MPI ranks,
against the clock, then a cost-model projection to N = 1024.

    python experiments/race/run.py experiments/race/config.toml              # ~10 min, 2 cores
    python experiments/race/run.py experiments/race/config.toml --figures    # refresh figures/

Each run is ``mpiexec -n N python -m mpi4py -m splitnet.race --config RACE --out
results/race/n<N>_r<i>.jsonl`` (``repeats`` runs per N, for min and median); a rerun skips the
complete files of the same config. Then, on this machine: the alpha-beta fit
(``calibrate.py``, ping-pong between 2 ranks) and one-rank microbenchmarks of every method's
per-step compute at each projected N (``bench``). Outputs (results/race/, or figures/ with
--figures):

- ``race_accuracy_time.png``   test accuracy against wall-clock seconds (N = 2, first run)
- ``race_accuracy_bytes.png``  test accuracy against MB sent by the busiest rank (N = 2)
- ``race_projection.png``      predicted speed-up in time to target against N, 10 / 100 Gbit/s
- ``race_table.md``            time to target and per-epoch times (min / median), speed-ups, the
                               model's error at N = 2
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from splitnet import race, study
from splitnet.data import Splits
from splitnet.model import build_mlp
from splitnet.mpi import SerialComm
from splitnet.parallel import compress as cz
from splitnet.parallel import dp
from splitnet.parallel.costmodel import CostParams, predict
from splitnet.parallel.tensor_parallel import ChunkedMLP
from splitnet.partition import ceil_div
from splitnet.pieces import n_values, pack, piece_neurons, piece_params, recombine
from splitnet.rounds import train_rounds
from splitnet.sgd import sgd
from splitnet.split import random_split

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


def complete(path: Path, cfg: dict, n: int) -> bool:
    """A finished run of this config: every variant's last evaluation is there."""
    if not path.exists():
        return False
    c, r = race_cfg(cfg, n)
    want = race._hash(race.config_dict(c, r))
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    finals = {x["label"] for x in lines if x["epoch"] == r.epochs and x["config_hash"] == want}
    return finals == {race.label(v) for v in race.variants(r)}


def run_races(cfg: dict, rows: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    for i in range(cfg["repeats"]):  # interleaved: slow phases of the machine hit every N
        for n in cfg["ranks"]:
            path = run_path(rows, n, i)
            if complete(path, cfg, n):
                continue
            sets = [a for s in cfg["sets"] for a in ("--set", s)]
            cmd = [mpiexec, "-n", str(n), sys.executable, "-m", "mpi4py", "-m", "splitnet.race"]
            # an unfinished run (killed, or another config's) is replaced: a timed race restarts
            cmd += ["--config", cfg["race_config"], *sets, "--out", str(path), "--overwrite"]
            print(f"N={n} run {i}: {' '.join(cmd[5:])}  (load {os.getloadavg()[0]:.2f})")
            subprocess.run(cmd, check=True, env=env)
    cal = rows / "calibration.json"
    if not cal.exists():
        script = str(Path(__file__).parent / "calibrate.py")
        cmd = [mpiexec, "-n", "2", sys.executable, "-m", "mpi4py", script, str(cal)]
        subprocess.run(cmd, check=True, env=env)


# -- microbenchmarks: one rank, the per-step compute of every method at each N ----------------
class _Solo(SerialComm):
    """Rank 0 of a pretend N-rank world whose collectives do nothing: ChunkedMLP's compute."""

    def __init__(self, size: int):
        self.size = size

    def Get_size(self) -> int:
        return self.size

    def Allgatherv(self, *a) -> None:
        pass

    def Reduce_scatter(self, *a) -> None:
        pass


def _time(fn, reps: int, steps: int) -> float:
    """Seconds per call: the minimum over ``reps`` of the mean of ``steps`` calls."""
    fn()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def bench(cfg: dict, ns: list[int]) -> dict:
    """Per-step compute (s) of each method on the busiest rank of N, timed here on one core."""
    torch.set_num_threads(1)
    threadpool_limits(1)  # as every rank of the race: one BLAS thread (ChunkedMLP's products)
    c, r = race_cfg(cfg, 1)
    pb = race.problem(c, r)
    B, lr, sizes = c.train.batch_size, c.train.lr, pb.sizes
    hidden = sizes[1:-1]
    X, y = pb.X[: 4 * B], pb.y[: 4 * B]
    reps, steps = cfg["bench_reps"], cfg["bench_steps"]
    idx = [torch.arange(B)] * steps  # one sgd call of `steps` steps: as the race calls it
    net = pb.net()
    out = {"single": _time(lambda: sgd(net, X, y, idx, lr=lr), reps, 1) / steps}
    out["d_in"], out["d_out"] = sizes[0], sizes[-1]
    n = n_values(sizes)
    comp = cz.make_compressor("topk", n, True, topk_fraction=r.topk_ratio)
    g = dp.flat_grad(net)
    out["compress"] = _time(lambda: comp.compress(g), reps, max(3, steps // 4))
    split2 = random_split(hidden, 2, 0)
    paths = [(0,) * len(hidden), (1,) * len(hidden)]

    def sync() -> None:  # rank 0 per round: split, cut + pack, recombine
        pieces = [piece_params(net, piece_neurons(split2, q)) for q in paths]
        [pack(q) for q in pieces]
        recombine(net, split2, paths, pieces)

    out["sync"] = _time(sync, reps, 3)
    out["dp"], out["piece"], out["tensor"] = {}, {}, {}
    xn, yn = X[:B].numpy(), y[:B].numpy()
    for N in ns:
        b = ceil_div(B, N)  # the busiest rank's shard

        def dp_step(b: int = b) -> None:
            dp.local_step(net, X[:b], y[:b], B, None)
            dp.apply_update(net, dp.flat_grad(net), 0.0)

        out["dp"][N] = _time(dp_step, reps, steps)
        if N <= min(hidden):
            piece = build_mlp([sizes[0], *(ceil_div(h, N) for h in hidden), sizes[-1]])
            out["piece"][N] = _time(lambda p=piece: sgd(p, X, y, idx, lr=lr), reps, 1) / steps
        tp = ChunkedMLP.from_torch(pb.net(), _Solo(N), broadcast=False)
        plan = tp._plan(B)  # the rows other ranks would send: zeros, not uninitialised memory
        for a in [*plan.acts, *plan.delta, *plan.partial]:
            a.fill(0.0)
        out["tensor"][N] = _time(lambda tp=tp: tp.train_step(xn, yn, 0.0), reps, steps)
    return out


def split_curves(cfg: dict, ks: list[int]) -> dict:
    """Test accuracy of split with k pieces, trained in process (``rounds.train_rounds``, the
    batched engine: the race's algorithm, seeds and stream): one-shot after every 2 epochs, and
    the rounds mode's curve. {mode: {k: [(step, accuracy), ...]}}."""
    torch.set_num_threads(1)
    c, r = race_cfg(cfg, 1)
    pb = race.problem(c, r)
    train = (pb.X.numpy(), pb.y.numpy())
    data = Splits(train, train, (pb.X_test.numpy(), pb.y_test.numpy()), pb.sizes[-1])
    net0 = pb.net()
    out: dict = {"one-shot": {}, "rounds": {}}
    for k in ks:
        ck = replace(c, split=replace(c.split, groups=k), train=replace(c.train, engine="batched"))
        curve = []
        for e in range(2, r.epochs + 1, 2):
            res = train_rounds(net0, data, ck, [0], total_steps=e * pb.per_epoch)[0]
            curve.append((e * pb.per_epoch, res.curve[-1][1]))
        out["one-shot"][k] = curve
        ck = replace(ck, split=replace(ck.split, resplit_every=r.E))
        out["rounds"][k] = train_rounds(net0, data, ck, [0], total_steps=pb.T)[0].curve
        print(f"split k={k}: one-shot {curve[-1][1]:.4f}, rounds {out['rounds'][k][-1][1]:.4f}")
    return out


# -- the cost model ---------------------------------------------------------------------------
def allgather(N: int, m: float, p: CostParams) -> float:
    """N blocks of m bytes to everyone: lg N latencies (recursive doubling / Bruck), (N-1) m."""
    return 0.0 if N == 1 else math.ceil(math.log2(N)) * p.alpha + (N - 1) * m * p.beta


def reduce_scatter(N: int, K: float, p: CostParams) -> float:
    frac = (N - 1) / N
    return 0.0 if N == 1 else math.ceil(math.log2(N)) * p.alpha + frac * K * (p.beta + p.gamma)


def step_time(label: str, N: int, b: dict, p: CostParams, c: object, r: race.Race, T: int) -> float:
    """Predicted seconds per step of ``label`` on N ranks (b: the microbenchmarks)."""
    B = c.train.batch_size
    sizes = [b["d_in"], *c.model.hidden, b["d_out"]]
    n = n_values(sizes)
    N_dp = min(N, max(b["dp"]))  # beyond the largest benchmarked N: the 1-sample shard
    if label == "single":
        return b["single"]
    if label in ("dp mpi", "dp ring"):
        return b["dp"][_near(b["dp"], N_dp)] + predict(label[3:], N, 4 * n, p)
    if label.startswith("dp top"):
        k = max(1, round(r.topk_ratio * n))
        comm = allgather(N, 4, p) + 2 * allgather(N, 4 * k, p)
        return b["dp"][_near(b["dp"], N_dp)] + b["compress"] + comm
    if label == "tensor":
        fwd = sum(allgather(N, w * B * 4 / N, p) for w in sizes[1:])
        bwd = sum(reduce_scatter(N, h * B * 4, p) for h in c.model.hidden)
        return b["tensor"][_near(b["tensor"], N)] + fwd + bwd
    # split: E local steps, then a sync at rank 0 (Scatterv and Gatherv go through the root)
    E = T if label == "split one-shot" else r.E
    n_p = n_values([sizes[0], *(ceil_div(h, N) for h in c.model.hidden), sizes[-1]])
    sync = b["sync"] + 2 * (N - 1) * (p.alpha + 4 * n_p * p.beta)
    return b["piece"][_near(b["piece"], N)] + sync / E


def _near(table: dict, N: int) -> int:
    """The benchmarked N closest to N (in log scale)."""
    return min(table, key=lambda k: abs(math.log2(int(k)) - math.log2(N)))


# -- analysis ---------------------------------------------------------------------------------
def load_runs(rows: Path, cfg: dict) -> list[dict]:
    out = []
    for n in cfg["ranks"]:
        for i in range(cfg["repeats"]):
            path = run_path(rows, n, i)
            if path.exists():
                out += [dict(json.loads(x), run=i) for x in path.read_text().splitlines()]
    return out


def reach(curve: list[dict], goal: float) -> dict | None:
    """The first evaluation at or above ``goal``."""
    return next((x for x in curve if x["test_accuracy"] >= goal), None)


def curves(rows: list[dict]) -> dict[tuple, list[dict]]:
    """(label, ranks, run) -> its rows in step order."""
    out: dict[tuple, list[dict]] = {}
    for x in rows:
        out.setdefault((x["label"], x["ranks"], x.get("run", 0)), []).append(x)
    return {k: sorted(v, key=lambda x: x["step"]) for k, v in out.items()}


def _mm(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f}" if values else "-"


def table(rows: list[dict], target: float) -> str:
    """Time to target and per-epoch wall-clock, min / median over runs, per (method, N)."""
    cs = curves(rows)
    single_final = [v[-1]["test_accuracy"] for (lab, _, _), v in cs.items() if lab == "single"]
    goal = target * max(single_final)
    keys = sorted({(k[0], k[1]) for k in cs}, key=lambda k: (k[1], _order(k[0])))
    t_single = {}
    for lab, n in keys:
        if lab == "single":
            runs = [v for (l2, n2, _), v in cs.items() if (l2, n2) == (lab, n)]
            t_single[n] = statistics.median(reach(v, goal)["wall_s"] for v in runs)
    ref_t = t_single.get(1, next(iter(t_single.values()), None))
    lines = [
        f"Target: {target:g} x single's final accuracy = {goal:.4f}. Times in seconds, "
        "min / median over runs; speed-ups are median single (N = 1) / median method.",
        "",
        "| method | N | final accuracy | time to target | speed-up | s per epoch | "
        "per-epoch time / single's, same run | MB sent per rank per epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lab, n in keys:
        runs = [v for (l2, n2, _), v in cs.items() if (l2, n2) == (lab, n)]
        hit = [reach(v, goal) for v in runs]
        per_epoch = [v[-1]["wall_s"] / v[-1]["epoch"] for v in runs]
        last = runs[0][-1]
        if all(h is not None for h in hit):
            tt = [h["wall_s"] for h in hit]
            ttt, speed = _mm(tt), f"{ref_t / statistics.median(tt):.2f}x"
        else:
            ttt, speed = "not reached", "-"
        same = [  # per-epoch time over single's in the same run (same N, same repeat)
            v[-1]["wall_s"] / cs[("single", n, run)][-1]["wall_s"]
            for (l2, n2, run), v in cs.items()
            if (l2, n2) == (lab, n) and ("single", n, run) in cs
        ]
        mb = last["bytes_max"] / last["epoch"] / 1e6
        lines.append(
            f"| {lab} | {n} | {last['test_accuracy']:.4f} | {ttt} | {speed} | "
            f"{_mm(per_epoch)} | {_mm(same)} | {mb:.1f} |"
        )
    return "\n".join(lines) + "\n"


SHOWN = [2, 4, 8, 16, 64, 256, 1024]  # the projection table's columns
ORDER = ["single", "split one-shot", "split E=", "dp mpi", "dp ring", "dp top", "tensor"]


def _order(label: str) -> int:
    return next(i for i, p in enumerate(ORDER) if label.startswith(p))


def projection(rows: list[dict], cfg: dict, b: dict, cal: dict, splits: dict) -> tuple[str, dict]:
    """Model vs measured at N = 2 (local alpha-beta), and speed-ups to max_ranks on the links."""
    c, r = race_cfg(cfg, 2)
    cs = curves(rows)
    T = max(v[-1]["step"] for v in cs.values())
    local = CostParams(**cal["params"])
    single_final = max(v[-1]["test_accuracy"] for (lab, _, _), v in cs.items() if lab == "single")
    goal = r.target * single_final
    labels = sorted({k[0] for k in cs}, key=_order)
    lines = [
        "Model vs measured at N = 2 (per-step seconds; model: one-rank microbenchmarks + the "
        f"fitted alpha = {local.alpha * 1e6:.2f} us, 1/beta = {1 / local.beta / 1e9:.1f} GB/s):",
        "",
        "| method | measured (median) | model | error |",
        "|---|---|---|---|",
    ]
    errors = []
    for lab in labels:
        runs = [v for (l2, n2, _), v in cs.items() if (l2, n2) == (lab, 2)]
        if not runs:
            continue
        meas = statistics.median(v[-1]["wall_s"] / v[-1]["step"] for v in runs)
        pred = step_time(lab, 2, b, local, c, r, T)
        errors.append(abs(pred / meas - 1))
        lines.append(
            f"| {lab} | {meas * 1e3:.2f} ms | {pred * 1e3:.2f} ms | {pred / meas - 1:+.0%} |"
        )
    lines.append(f"\nMean absolute error: {np.mean(errors):.0%}.\n")
    # steps to the target: single's for the methods that compute the same SGD; measured at N = 2
    # for top-k and split (assumed to hold at every N: their accuracy at k > 2 is not measured)
    steps = {}
    for lab in labels:
        runs = [
            v for (l2, n2, _), v in cs.items() if l2 == lab and n2 == (1 if lab == "single" else 2)
        ]
        hits = [reach(v, goal) for v in runs]
        steps[lab] = statistics.median(h["step"] for h in hits) if all(hits) else None
    same = ("dp mpi", "dp ring", "tensor")

    def split_steps(lab: str, N: int) -> float | None:
        """Steps to the target of split with k = N pieces (nearest k trained in process)."""
        curve = splits["one-shot" if lab == "split one-shot" else "rounds"]
        hit = next((st for st, acc in curve[_near(curve, N)] if acc >= goal), None)
        return None if hit is None else float(hit)

    Ns = [2**e for e in range(1, int(math.log2(cfg["max_ranks"])) + 1)]
    proj: dict = {}
    for gbit in cfg["links_gbit"]:
        p = CostParams(cfg["link_alpha_us"] * 1e-6, 8 / (gbit * 1e9), local.gamma, local.delta)
        t_single = steps["single"] * b["single"]
        for lab in labels:
            if lab == "single":
                continue
            if lab.startswith("split"):
                n_to = {N: split_steps(lab, N) for N in Ns if N <= min(c.model.hidden)}
            else:
                n_to = {N: steps["single"] if lab in same else steps[lab] for N in Ns}
            ok = [N for N, st in n_to.items() if st is not None]
            speed = [t_single / (n_to[N] * step_time(lab, N, b, p, c, r, T)) for N in ok]
            proj[(gbit, lab)] = (ok, speed)
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
    missing = [lab for lab in labels if not lab.startswith("split") and steps[lab] is None]
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
    cs = curves(rows)
    for key, xlabel, scale, name in (
        ("wall_s", "wall-clock seconds (training only)", 1.0, "race_accuracy_time.png"),
        ("bytes_max", "MB sent by the busiest rank", 1e-6, "race_accuracy_bytes.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (lab, n, run), v in sorted(cs.items(), key=lambda kv: _order(kv[0][0])):
            if run != 0 or n != max(k[1] for k in cs):
                continue
            # log axes: step 0 (0 s) drawn at 0.05 s; single sends nothing: drawn at 1 kB
            xs = [max(x[key] * scale, 0.05 if key == "wall_s" else 1e-3) for x in v]
            ys = [x["test_accuracy"] for x in v]
            ax.plot(xs, ys, marker="o", ms=3, label=lab, color=f"C{_order(lab)}")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0.5, 1.0)
        ax.set_title(f"MNIST-5k, one net on N = {max(k[1] for k in cs)} ranks, every method")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        study.save_figure(fig, figs / name)
    if not proj:
        return
    links = sorted({g for g, _ in proj})
    fig, axes = plt.subplots(1, len(links), figsize=(5.5 * len(links), 4.2), sharey=True)
    for ax, gbit in zip(np.atleast_1d(axes), links, strict=True):
        for (g, lab), (ns, sp) in sorted(proj.items(), key=lambda kv: _order(kv[0][1])):
            if g == gbit:
                ax.plot(ns, sp, marker="o", ms=3, label=lab, color=f"C{_order(lab)}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("ranks N")
        ax.set_title(f"predicted, {gbit:g} Gbit/s links")
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
    bench_path = rows_dir / "bench.json"
    if not bench_path.exists() and not args.plot_only:
        b = bench(cfg, [2**e for e in range(int(math.log2(cfg["max_ranks"])) + 1)])
        bench_path.write_text(json.dumps(b, indent=1))
    split_path = rows_dir / "split_k.json"
    if not split_path.exists() and not args.plot_only:
        ks = [2**e for e in range(1, int(math.log2(cfg["max_ranks"])) + 1)]
        split_path.write_text(json.dumps(split_curves(cfg, ks)))
    text = table(rows, race_cfg(cfg, 1)[1].target)
    proj = {}
    cal_path = rows_dir / "calibration.json"
    if bench_path.exists() and cal_path.exists() and split_path.exists():
        b = json.loads(bench_path.read_text())
        for key in ("dp", "piece", "tensor"):
            b[key] = {int(k): v for k, v in b[key].items()}
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
