"""Results files: JSON Lines, one object per combination, appended and flushed as they complete.

A run killed at any moment leaves at worst one torn last line: ``open_for_append`` cuts it off
before appending, and readers skip it, so a resumed run recomputes that combination and the file
ends with exactly one row per combination. Rows of another config (``config_hash``) are refused.

    python -m splitnet.results merge -o ALL.jsonl SHARD1.jsonl SHARD2.jsonl ...
    python -m splitnet.results check ALL.jsonl      # counts, missing combinations, duplicates
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np
from scipy import stats


def read_rows(path: str | Path) -> list[dict]:
    """All complete rows of a results file ([] if absent); a torn last line is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # tail: bytes after the last newline (torn or empty)
    rows = []
    for n, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise ValueError(
                f"{str(path)!r} line {n} is not valid JSON (not a torn last line: "
                "the file was edited or two writers mixed)"
            ) from None
    del tail  # a row is only complete once its newline is written
    return rows


def check_config(rows: list[dict], config_hash: str, path: str | Path) -> None:
    others = {r.get("config_hash") for r in rows} - {config_hash}
    if others:
        raise ValueError(
            f"{str(path)!r} holds rows of another experiment (config_hash {sorted(others)[0]}, "
            f"this run is {config_hash}); pass a different --out or remove the file"
        )


def open_for_append(path: str | Path) -> BinaryIO:
    """Open for appending after cutting any torn last line; creates parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "ab+")
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if size:
        f.seek(max(0, size - 65536))
        chunk = f.read()
        last_nl = chunk.rfind(b"\n")
        keep = size - len(chunk) + last_nl + 1 if last_nl >= 0 else 0
        if last_nl < 0 and size > 65536:  # a line longer than 64 KiB: find its start the slow way
            keep = path.read_bytes().rfind(b"\n") + 1
        if keep < size:
            f.truncate(keep)
    return f


def encode_row(row: dict) -> bytes:
    """One JSON line (encoded where the row is made, so the writing rank only writes)."""
    return json.dumps(row, sort_keys=True).encode() + b"\n"


def append_lines(f: BinaryIO, lines: list[bytes]) -> None:
    """Write whole lines, then flush and fsync: a row on disk is a row that survives a kill."""
    if lines:
        f.write(b"".join(lines))
        f.flush()
        os.fsync(f.fileno())


def append_rows(f: BinaryIO, rows: list[dict]) -> None:
    append_lines(f, [encode_row(r) for r in rows])


def row_key(row: dict) -> tuple[int, int]:
    """A row is one (seed, combination): multi-seed experiments hold one row per pair."""
    return row.get("seed", 0), row["combination"]


def merge(inputs: list[str | Path], out: str | Path) -> int:
    """Union of shard files, one row per combination, sorted; all of one config. Returns rows."""
    by_combination: dict[tuple[int, int], dict] = {}
    hashes = set()
    for p in inputs:
        for r in read_rows(p):
            hashes.add(r.get("config_hash"))
            by_combination.setdefault(row_key(r), r)
    if len(hashes) > 1:
        raise ValueError(f"the inputs mix {len(hashes)} configs: {sorted(hashes)}")
    tmp = Path(str(out) + ".tmp")
    with open(tmp, "wb") as f:
        append_rows(f, [by_combination[c] for c in sorted(by_combination)])
    os.replace(tmp, out)  # atomic: a killed merge leaves the old file intact
    return len(by_combination)


def mean_ci(values: list[float] | np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval over seeds (0 for one value)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), 0.0
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(half)


def run_seeds_of(rows: list[dict]) -> list[int]:
    """The run seeds a file's config promises (``seeds``, or ``[seed]``), else those present."""
    for r in rows:
        cfg = r.get("config")
        if isinstance(cfg, dict) and "seed" in cfg:
            return list(cfg.get("seeds") or [cfg["seed"]])
    return sorted({row_key(r)[0] for r in rows})


def summary(rows: list[dict], expected: int | None = None) -> dict:
    """Rows and distinct (seed, combination) keys; with ``expected`` combinations (per seed),
    the rows expected (combinations x seeds), missing and extra (outside [0, expected)) rows."""
    keys = [row_key(r) for r in rows]
    seeds = run_seeds_of(rows)
    out = {
        "rows": len(rows),
        "seeds": seeds,
        "combinations": len({c for _, c in keys}),
        "distinct_rows": len(set(keys)),
        "duplicates": len(keys) - len(set(keys)),
    }
    if expected is not None:
        want = {(s, c) for s in seeds for c in range(expected)}
        out["expected_rows"] = expected * len(seeds)
        out["missing"] = len(want - set(keys))
        out["extra"] = len(set(keys) - want)
    return out


def describe(s: dict) -> str:
    """One human line for ``summary``'s dict."""
    text = (
        f"{s['rows']} rows: {s['combinations']} combinations x {len(s['seeds'])} seed(s) "
        f"{s['seeds']}, {s['duplicates']} duplicated"
    )
    if "expected_rows" in s:
        text += (
            f"; expected {s['expected_rows']} rows, {s['missing']} missing, "
            f"{s['extra']} extra (combination outside the expected range or another seed)"
        )
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m splitnet.results",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge", help="merge shard files into one")
    m.add_argument("inputs", nargs="+")
    m.add_argument("-o", "--out", required=True)
    c = sub.add_parser("check", help="count rows, duplicates and missing combinations")
    c.add_argument("path")
    c.add_argument(
        "--expected",
        type=int,
        help="the number of combinations per seed (see "
        "enumerate --count); rows expected = combinations x the config's seeds",
    )
    args = ap.parse_args(argv)
    try:
        if args.cmd == "merge":
            print(f"merged {merge(args.inputs, args.out)} combinations into {args.out}")
            return 0
        s = summary(read_rows(args.path), args.expected)
        print(json.dumps(s))
        print(describe(s), file=sys.stderr)
        return 0 if s["duplicates"] == s.get("missing", 0) == s.get("extra", 0) == 0 else 1
    except (ValueError, OSError) as e:
        print(f"splitnet.results: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
