"""splitnet.race: every method against single-process SGD, bytes against closed forms, rows that
do not depend on timing, bad input stopping every rank with exit status 2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import run_mpi

from splitnet import race, race_tables
from splitnet.parallel.collectives import bytes_sent
from splitnet.partition import bounds, sizes
from splitnet.race_methods import Variant

TINY = """\
seed = 0
[data]
name = "digits"
[model]
hidden = [15, 16]
[train]
batch_size = 20
lr = 0.1
[race]
epochs = 2
E = 7
topk_ratio = 0.05
"""
TIMING = {"wall_s", "compute_s", "comm_s"}


def run_race(tmp_path, n: int, name: str, extra: list[str] = (), check: bool = True):
    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY)
    out = tmp_path / f"{name}.jsonl"
    argv = ["-m", "splitnet.race", "--config", str(toml), "--out", str(out), "--quiet", *extra]
    proc = run_mpi(n, argv, timeout=180, check=check)
    return proc, out


def read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2])
def test_methods_equal_single_process_training(n):
    proc = run_mpi(n, ["tests/mpi_scripts/race_check.py"], timeout=180)
    want = (
        ["split_one-shot_k1_equals_single", "split_E=5_k1_equals_single"]
        if n == 1
        else [f"{m}_equals_single_process" for m in ("dp_mpi", "dp_ring", "tensor")]
    )
    for name in want:
        assert f"OK {name}" in proc.stdout, proc.stdout + proc.stderr


def n_params(widths: list[int]) -> int:
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))


def expected_bytes(row: dict, N: int, T: int, batches: list[int]) -> list[int]:
    """What each rank sends, in closed form (the payload handed to MPI for other ranks)."""
    d_in, hidden, d_out = 64, [15, 16], 10
    n = n_params([d_in, *hidden, d_out])
    m, o = row["method"], row["options"]
    if m == "single" or N == 1:
        return [0] * N
    if m == "dataparallel":
        if o["exchange"] == "ring":  # the ring's exact schedule (collectives.bytes_sent)
            return [T * bytes_sent("ring", N, 4 * n, r, itemsize=4) for r in range(N)]
        if o["exchange"] == "mpi":  # MPI's Allreduce: the 4n-byte vector
            return [T * 4 * n] * N
        k = max(1, round(o["topk_ratio"] * n))  # count + k indices + k values
        return [T * (4 + 8 * k)] * N
    if m == "split":  # per round: Scatter of shapes + Scatterv of pieces, Gatherv back
        R = 1 if o["mode"] == "one-shot" else math.ceil(T / o["E"])
        piece = [n_params([d_in, *(sizes(h, N)[p] for h in hidden), d_out]) for p in range(N)]
        root = (N - 1) * 8 * len(hidden) + 4 * sum(piece[1:])
        return [R * root] + [R * 4 * piece[p] for p in range(1, N)]
    # tensor, per step of b samples: Allgatherv of my rows of every layer (forward),
    # Reduce_scatter of the other ranks' rows of every hidden layer (backward)
    widths = [*hidden, d_out]
    own = [[bounds(w, N)[r + 1] - bounds(w, N)[r] for w in widths] for r in range(N)]
    backward = [sum(h - c for h, c in zip(hidden, own[r][:-1], strict=True)) for r in range(N)]
    return [4 * sum(batches) * (sum(own[r]) + backward[r]) for r in range(N)]


@pytest.mark.mpi
def test_rows_bytes_in_closed_form_and_independent_of_timing(tmp_path):
    _, out_a = run_race(tmp_path, 2, "a")
    _, out_b = run_race(tmp_path, 2, "b")
    a, b = read(out_a), read(out_b)
    assert len(a) == len(b) == 7 * 3  # 7 methods x (step 0 + 2 epochs)
    for x, y in zip(a, b, strict=True):
        assert {k: v for k, v in x.items() if k not in TIMING} == {
            k: v for k, v in y.items() if k not in TIMING
        }
        assert TIMING <= x.keys() and x["wall_s"] >= 0
    n_train, B = 1347, 20  # digits: 1,797 images, 25% test
    per_epoch = -(-n_train // B)
    T = 2 * per_epoch
    batches = [B] * (per_epoch - 1) + [n_train - B * (per_epoch - 1)]
    finals = [r for r in a if r["step"] == T]
    assert [r["label"] for r in finals] == [
        "single", "split one-shot", "split E=7", "dp mpi", "dp ring", "dp top-0.05", "tensor",
    ]  # fmt: skip
    for r in finals:
        assert r["samples"] == 2 * n_train and r["epoch"] == 2.0
        assert r["bytes"] == expected_bytes(r, 2, T, batches * 2), r["label"]
    single = finals[0]
    for r in finals:  # the same SGD, exactly or up to rounding
        if r["label"] in ("dp mpi", "dp ring", "tensor"):
            assert abs(r["test_accuracy"] - single["test_accuracy"]) < 1e-9
            assert abs(r["train_loss"] - single["train_loss"]) < 1e-4


@pytest.mark.mpi
@pytest.mark.parametrize(
    "norm", [[], ["--set", "model.norm=batch", "--set", "split.norm_stats=average"]]
)
def test_one_rank_split_rows_equal_single_rows(tmp_path, norm):
    _, out = run_race(tmp_path, 1, "one", ["--set", 'race.methods=["single", "split"]', *norm])
    rows = read(out)
    by = {}
    for r in rows:
        by.setdefault(r["label"], []).append((r["step"], r["train_loss"], r["test_accuracy"]))
    assert by["split one-shot"] == by["single"] == by["split E=7"]
    assert all(r["bytes"] == [0] for r in rows)


@pytest.mark.mpi
@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--set", 'race.methods=["single", "pipeline"]'], "'pipeline' is not one of"),
        (["--set", "model.hidden=[4, 1]"], "needs N=2 ranks <= every hidden width"),
        (["--set", "race.E=0"], "race.E=0 must be >= 1"),
        (["--out", "FILE/r.jsonl"], "Not a directory"),
        (["--set", "race.colour=1"], "unknown key race.colour"),
    ],
)
def test_bad_input_exits_2_on_every_rank_with_the_value(tmp_path, extra, needle):
    (tmp_path / "a_file").write_text("")  # --out under a regular file
    extra = [x.replace("FILE", str(tmp_path / "a_file")) for x in extra]
    proc, out = run_race(tmp_path, 2, "bad", extra, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("splitnet.race: error:") == 1


def test_batchnorm_is_refused_by_the_methods_that_cannot_train_it():
    # in process: the same race.load every rank's verdict comes from (mpiexec cases above)
    with pytest.raises(ValueError, match="race method 'dataparallel' cannot train model.norm"):
        race.load(None, ["model.norm=batch"], 2)
    with pytest.raises(ValueError, match="race method 'tensor' cannot train"):
        race.load(None, ["model.norm=batch", 'race.methods=["single", "tensor"]'], 2)
    with pytest.raises(ValueError, match="model.norm='group' is not one of"):
        race.load(None, ["model.norm=group", 'race.methods=["single"]'], 2)
    cfg, _ = race.load(None, ["model.norm=batch", 'race.methods=["single", "split"]'], 2)
    assert cfg.model.norm == "batch" and cfg.train.engine == "loop"


def test_parse_race_names_the_value():
    assert race.parse_race({"E": 3}).E == 3
    for raw, needle in (
        ({"methods": "single"}, "race.methods must be a non-empty list"),
        ({"exchanges": ["gossip"]}, "'gossip' is not one of mpi, ring, topk"),
        ({"strategy": "spectral"}, "race.strategy='spectral'"),
        ({"topk_ratio": 0.0}, "race.topk_ratio=0.0"),
        ({"epochs": "3"}, "race.epochs must be of type int"),
        ({"split_modes": []}, "race.split_modes must be a non-empty list"),
        ({"methods": ["single", 3]}, "race.methods must be a non-empty list of names"),
        ({"target": 1.5}, r"race.target=1.5 must lie in \(0, 1\]"),
        ({"combination": -1}, "race.combination=-1 must be >= 0"),
        ([1], r"\[race\] must be a table"),
    ):
        with pytest.raises(ValueError, match=needle):
            race.parse_race(raw)


def test_time_to_target_table_marks_targets_not_reached():
    rows = []
    for label, accs in (("single", [0.5, 0.9, 0.95]), ("split one-shot", [0.5, 0.6, 0.7])):
        for step, acc in enumerate(accs):
            rows.append(
                {"label": label, "ranks": 2, "step": step, "epoch": step, "test_accuracy": acc,
                 "wall_s": 2.0 * step, "bytes_max": 0, "method": label.split()[0]}
            )  # fmt: skip
    text = race_tables.table(rows, target=0.97)
    assert "| single | 2 | 0.9500 | 4.00 / 4.00 | 1.00x |" in text
    assert "not reached" in text


@pytest.mark.mpi
def test_batchnorm_pieces_travel_with_their_statistics(tmp_path):
    """N = 2, model.norm = "batch": split sends every piece's weights, g, beta and running
    statistics (``pieces.layout``), and nothing else."""
    extra = ["--set", 'race.methods=["single", "split"]', "--set", "model.norm=batch"]
    _, out = run_race(tmp_path, 2, "bn", extra)
    rows = read(out)
    d_in, hidden, d_out, N = 64, [15, 16], 10, 2
    widths = [[sizes(h, N)[p] for h in hidden] for p in range(N)]
    # per piece: W_1, g, beta, mu, var of each hidden layer, W_out, mu and var of the logits
    vals = [
        d_in * w[0] + 4 * w[0] + w[0] * w[1] + 4 * w[1] + w[1] * d_out + 2 * d_out for w in widths
    ]
    T = 2 * -(-1347 // 20)
    for r in rows:
        if r["label"] == "split one-shot" and r["step"] == T:
            assert r["bytes"] == [(N - 1) * 8 * len(hidden) + 4 * vals[1], 4 * vals[1]]
        if r["step"] == T:
            assert r["test_accuracy"] > 0.5, r["label"]


def race_file(tmp_path, rows: int) -> Path:
    """A race's results file holding ``rows`` rows of the default config (and its sidecar)."""
    from splitnet import results

    cfg, r = race.load(None, [], 1)
    out = tmp_path / "race.jsonl"
    with results.open_results(out, race.config_dict(cfg, r), race.ROWS, mode="new") as f:
        f.write([{"label": "single", "seed": 0, "step": s, "epoch": 0} for s in range(rows)])
    return out


def test_a_rerun_refuses_to_overwrite_a_results_file(tmp_path, capsys):
    """In process (the verdict every rank gets): rows already in --out are kept unless
    --overwrite says otherwise; an empty file is no result and is reused."""
    from splitnet.mpi import SerialComm

    out = race_file(tmp_path, 2)
    before = out.read_bytes()
    (verdict, _), f = race.setup(["--out", str(out), "--quiet"], SerialComm())
    assert verdict == "exit" and f is None
    assert "already holds 2 row(s)" in capsys.readouterr().err
    assert out.read_bytes() == before  # untouched
    (verdict, _), f = race.setup(["--out", str(out), "--overwrite", "--quiet"], SerialComm())
    assert verdict == "run" and out.read_bytes() == b""
    f.close()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    (verdict, _), f = race.setup(["--out", str(empty), "--quiet"], SerialComm())
    assert verdict == "run"
    f.close()


def test_the_race_refuses_a_fifo_a_foreign_file_and_a_second_writer(tmp_path, capsys):
    """--out goes through the one results path: a FIFO is refused at once (never waited on), a
    file that is no race's results is left alone even with --overwrite, and a second run on
    the same file, through a symlink, is refused while the first holds it."""
    import os
    import time

    from splitnet.mpi import SerialComm

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    t = time.perf_counter()
    (verdict, code), _ = race.setup(["--out", str(fifo), "--quiet"], SerialComm())
    assert (verdict, code) == ("exit", 2) and time.perf_counter() - t < 10
    assert "pipe" in capsys.readouterr().err
    notes = tmp_path / "notes.jsonl"
    notes.write_text("my notes\n")
    (verdict, code), _ = race.setup(["--out", str(notes), "--overwrite"], SerialComm())
    assert (verdict, code) == ("exit", 2) and notes.read_text() == "my notes\n"
    capsys.readouterr()
    out = tmp_path / "race.jsonl"
    (tmp_path / "link.jsonl").symlink_to(out)
    (verdict, _), first = race.setup(["--out", str(out), "--quiet"], SerialComm())
    assert verdict == "run"
    try:
        (verdict, code), _ = race.setup(["--out", str(tmp_path / "link.jsonl")], SerialComm())
        assert (verdict, code) == ("exit", 2)
        assert "pid" in capsys.readouterr().err  # the holder is named
    finally:
        first.close()


def test_a_race_too_big_for_memory_is_refused_before_training(tmp_path, capsys):
    from splitnet.mpi import SerialComm

    out = tmp_path / "race.jsonl"
    argv = ["--set", "model.hidden=[200000, 200000]", "--out", str(out)]
    (verdict, code), f = race.setup(argv, SerialComm())
    err = capsys.readouterr().err
    assert (verdict, code, f) == ("exit", 2, None) and not out.exists()
    assert "model.hidden=[200000, 200000] needs at least" in err and "GiB" in err, err


def test_variants_are_the_methods_in_order_with_the_options_they_read():
    r = race.parse_race({"E": 7, "topk_ratio": 0.05})
    vs = race.variants(r)
    assert [v.label for v in vs] == [
        "single", "split one-shot", "split E=7", "dp mpi", "dp ring", "dp top-0.05", "tensor",
    ]  # fmt: skip
    split = {"strategy": "random", "shuffle": "shared"}
    assert [v.options for v in vs] == [
        {},
        {"mode": "one-shot", "E": None, **split},
        {"mode": "rounds", "E": 7, **split},
        {"exchange": "mpi"},
        {"exchange": "ring"},
        {"exchange": "topk", "topk_ratio": 0.05},
        {},
    ]
    assert [v.label for v in vs if v.exact] == ["dp mpi", "dp ring", "tensor"]
    assert [v.steps_per_sync(100) for v in vs[1:3]] == [100, 7]
    assert Variant("split", "rounds", 7, "random", "shared") == vs[2]  # frozen, comparable
