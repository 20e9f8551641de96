"""Results files: JSON Lines, one object per (seed, combination), appended as they complete.

One writer per file: ``open_results`` takes an exclusive lock (a ``<file>.lock`` sidecar naming
the holder) for the whole run, so a resubmitted job cannot write the rows a second time. It
checks the file before changing a byte: a regular file whose every complete line is a row of
this config, with no (seed, combination) twice; only then is a torn last line (a run killed
mid-write; every row starts with ``{"accuracy": ``) cut off. A resumed run recomputes that
combination and the file ends with exactly one row per (seed, combination).

    python -m splitnet.results merge -o ALL.jsonl SHARD1.jsonl SHARD2.jsonl ...
    python -m splitnet.results check ALL.jsonl --expected N   # rows vs combinations x seeds
    python -m splitnet.results summary ALL.jsonl [--alpha 0.05]

Layout: the config is written once, to a sidecar ``<file>.config.json`` (``{"config_hash",
"config", "row"}``, "row" holding the keys every row of the file shares), and a row carries
only what differs between rows plus ``config_hash``. ``read_rows`` puts the shared keys back,
so readers see whole rows; files written before the sidecar (the config in every row) read
as they are, and a run resumed on one appends compact rows beside them. The file itself stays
plain JSON Lines: ``pandas.read_json(path, lines=True)`` is one row per (seed, combination).

``summary`` says what a file tells about the whole combination space: the test-accuracy
quantiles (exact for a full enumeration; with a distribution-free DKW band for a uniform sample;
none for a prefix or shard of an enumeration, which is not a sample), the fraction at or above
the baseline with its exact (Clopper-Pearson) interval, and, with validation data, the
combination picked on validation accuracy (and a search's result) with its test accuracy.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

ROW_PREFIX = b'{"accuracy": '  # rows are encoded with sorted keys: "accuracy" comes first
SIDECAR = ".config.json"
# keys a file's rows share, kept in the sidecar's "row" (``experiment.file_constants``);
# "piece_seeds" is not stored: it is seeds.piece_order_seed(config, combination, path)
SHARED_KEYS = ("config", "strategy", "variant", "groups", "paths", "recombination")
DROPPED_KEYS = ("piece_seeds",)


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR)


def read_sidecar(path: str | Path) -> dict | None:
    """The sidecar of results file ``path`` (None if it has none)."""
    side = sidecar_path(path)
    if not side.exists():
        return None
    try:
        meta = json.loads(side.read_text())
    except (ValueError, OSError) as e:
        raise ValueError(f"{str(side)!r} is not a results sidecar (JSON): {e}") from None
    if not isinstance(meta, dict) or not {"config_hash", "config", "row"} <= meta.keys():
        raise ValueError(f"{str(side)!r} is not a results sidecar (config_hash, config, row)")
    return meta


def write_sidecar(
    path: str | Path, config_hash: str, config: dict, shared: dict, *, replace: bool = False
) -> None:
    """Write (atomically) or check the sidecar of ``path``: one config per file.

    ``replace``: the results file holds no rows, so an old sidecar left beside it is stale.
    """
    old = None if replace else read_sidecar(path)
    if old is not None:
        if old["config_hash"] != config_hash:
            raise ValueError(
                f"{str(sidecar_path(path))!r} is of another experiment (config_hash "
                f"{old['config_hash']}, expected {config_hash}); pass a different --out"
            )
        return
    side = sidecar_path(path)
    tmp = side.with_name(side.name + ".tmp")
    meta = {"config_hash": config_hash, "config": config, "row": shared}
    tmp.write_text(json.dumps(meta, sort_keys=True, indent=1) + "\n")
    os.replace(tmp, side)


def compact_row(row: dict) -> dict:
    """The row as a file stores it beside a sidecar: shared and derivable keys left out, a
    ``None`` stitch accuracy omitted, seconds to the microsecond."""
    out = {
        k: v
        for k, v in row.items()
        if k not in SHARED_KEYS
        and k not in DROPPED_KEYS
        and not (v is None and k == "accuracy_before_stitch")
    }
    if "seconds" in out:
        out["seconds"] = round(out["seconds"], 6)
    return out


def _attach(rows: list[dict], meta: dict | None) -> list[dict]:
    """Whole rows: the sidecar's shared keys under each row of its config."""
    if meta is None:
        return rows
    base = {"accuracy_before_stitch": None, **meta["row"], "config": meta["config"]}
    want = meta["config_hash"]
    return [{**base, **r} if r.get("config_hash") == want else r for r in rows]


def row_key(row: dict) -> tuple[int, int]:
    """A row is one (seed, combination): multi-seed experiments hold one row per pair."""
    return row.get("seed", 0), row["combination"]


def _lines(path: Path) -> tuple[list[bytes], bytes]:
    """(complete lines, the bytes after the last newline) of a regular file."""
    check_regular(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    return lines[:-1], lines[-1]


def check_regular(path: Path) -> None:
    """A results path must be a regular file (or absent): a FIFO or a device would block."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        kind = (
            "a directory"
            if stat.S_ISDIR(mode)
            else "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a file"
        )
        raise ValueError(f"{str(path)!r} is {kind}, not a regular results file")


def parse_rows(path: Path, lines: list[bytes], require: str | None = "combination") -> list[dict]:
    """The rows of ``lines``; anything that is not a row (a JSON object with the key
    ``require``) is an error naming file and line."""
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:  # JSONDecodeError, or UnicodeDecodeError of a binary file
            raise ValueError(
                f"{str(path)!r} line {n} is not valid JSON: not a results file, or it was "
                "edited (a torn line can only be the last one)"
            ) from None
        if not isinstance(row, dict) or (require is not None and require not in row):
            what = f"an object with a {require!r}" if require else "an object"
            raise ValueError(f"{str(path)!r} line {n} is JSON but not a results row ({what})")
        rows.append(row)
    return rows


def read_rows(path: str | Path, require: str | None = "combination") -> list[dict]:
    """All complete rows of a results file ([] if absent); a torn last line is skipped.

    ``require``: the key every row must have (None for a study's rows of several kinds).
    """
    path = Path(path)
    if not path.exists():
        return []
    complete, _tail = _lines(path)  # a row is only complete once its newline is written
    return _attach(parse_rows(path, complete, require), read_sidecar(path))


def check_config(rows: list[dict], config_hash: str | None, path: str | Path) -> None:
    """All rows of one config (``config_hash``, or the first row's when None)."""
    hashes = {r.get("config_hash") for r in rows}
    want = (
        config_hash if config_hash is not None else (rows[0].get("config_hash") if rows else None)
    )
    others = hashes - {want}
    if others:
        raise ValueError(
            f"{str(path)!r} holds rows of another experiment (config_hash "
            f"{sorted(map(str, others))[0]}, expected {want}); pass a different --out or "
            "remove the file"
        )


def check_unique(rows: list[dict], path: str | Path) -> None:
    seen: set[tuple[int, int]] = set()
    dups = []
    for r in rows:
        k = row_key(r)
        if k in seen:
            dups.append(k)
        seen.add(k)
    if dups:
        raise ValueError(
            f"{str(path)!r} holds {len(dups)} duplicated row(s) (first: seed {dups[0][0]}, "
            f"combination {dups[0][1]}), e.g. from two runs writing it at once; keep one of "
            f"each with: python -m splitnet.results merge -o NEW.jsonl {path}"
        )


@dataclass
class ResultsFile:
    """An open results file of one run: locked, checked, ready for appending."""

    path: Path
    file: BinaryIO
    lock: BinaryIO
    done: set[tuple[int, int]]  # (seed, combination) already recorded

    def append(self, lines: list[bytes]) -> None:
        append_lines(self.file, lines)

    @staticmethod
    def encode(row: dict) -> bytes:
        """A row as this file stores it (beside its sidecar): ``encode_row(compact_row(row))``."""
        return encode_row(compact_row(row))

    def close(self) -> None:
        self.file.close()
        self.lock.close()  # releases the lock


def acquire_lock(path: Path) -> BinaryIO:
    """An exclusive lock on ``<path>.lock`` (released when the process ends, even by SIGKILL)."""
    lock_path = path.with_name(path.name + ".lock")
    f = open(lock_path, "a+b")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().decode(errors="replace").strip() or "another process"
        f.close()
        raise ValueError(
            f"{str(path)!r} is being written by {holder} (lock {str(lock_path)!r}); "
            "one writer per results file: wait for it, or pass another --out"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(
        f"pid {os.getpid()} on {socket.gethostname()} since "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode()
    )
    f.flush()
    return f


def open_for_append(
    path: str | Path,
    *,
    require: str | None = "combination",
    prefix: bytes = ROW_PREFIX,
    check: Callable[[list[dict]], None] | None = None,
) -> tuple[BinaryIO, list[dict]]:
    """(file opened for appending, its rows), after checking it before changing a byte.

    Every complete line must be a JSON object (with the key ``require``), ``check(rows)`` must
    pass, and bytes after the last newline must begin like a line of this file (``prefix``);
    only then is that torn line cut. Creates parent directories.
    """
    path = Path(path)
    check_regular(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    complete, tail = _lines(path) if path.exists() else ([], b"")
    rows = parse_rows(path, complete, require)
    if check is not None:
        check(rows)
    if tail and check is not None:  # a last line without its newline is judged like the others
        try:
            last = parse_rows(path, [tail], require)
        except ValueError:
            last = []  # torn mid-row: it does not parse
        check(rows + last)
    if tail and not prefix.startswith(tail[: len(prefix)]) and not tail.startswith(prefix):
        raise ValueError(
            f"{str(path)!r} does not end with a newline and its last line is not a torn "
            "row: not a results file of this run (pass another path)"
        )
    f = open(path, "ab")
    if tail:  # a line cut by a kill: every complete line is ours, so it is ours too
        f.truncate(path.stat().st_size - len(tail))
    return f, rows


def open_results(
    path: str | Path, config_hash: str, config: dict | None = None, shared: dict | None = None
) -> ResultsFile:
    """Lock ``path``, check it is this config's results file, cut a torn last row, open it;
    with ``config`` (and the rows' ``shared`` keys), write or check its sidecar."""
    path = Path(path)
    check_regular(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(path)
    try:

        def ours(rows: list[dict]) -> None:
            check_config(rows, config_hash, path)
            check_unique(rows, path)

        f, rows = open_for_append(path, check=ours)
        if config is not None:
            try:
                write_sidecar(path, config_hash, config, shared or {}, replace=not rows)
            except BaseException:
                f.close()
                raise
        return ResultsFile(path, f, lock, {row_key(r) for r in rows})
    except BaseException:
        lock.close()
        raise


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


def merge(inputs: list[str | Path], out: str | Path) -> int:
    """Union of shard files, one row per (seed, combination), sorted; all of one config.

    Every input must exist (a missing shard is named, not skipped); ``out`` is replaced
    atomically, so a killed merge leaves the old file intact. Returns the number of rows.
    """
    out = Path(out)
    check_regular(out)
    if out.is_dir():
        raise ValueError(f"-o {str(out)!r} is a directory; name the merged file")
    missing = [str(p) for p in inputs if not Path(p).exists()]
    if missing:
        raise ValueError(f"missing input file(s): {', '.join(missing)}")
    by_key: dict[tuple[int, int], dict] = {}
    hashes = set()
    metas = [m for m in map(read_sidecar, inputs) if m is not None]
    for p in inputs:
        for r in read_rows(p):
            hashes.add(r.get("config_hash"))
            by_key.setdefault(row_key(r), r)
    hashes |= {m["config_hash"] for m in metas}
    if len(hashes) > 1:
        raise ValueError(f"the inputs mix {len(hashes)} configs: {sorted(map(str, hashes))}")
    meta = metas[0] if metas else None  # inputs of today's layout: the output gets it too
    # no run may be writing an input or the output while it is replaced (a running writer would
    # go on appending to the replaced, deleted file)
    locks = [acquire_lock(Path(p)) for p in dict.fromkeys([*map(str, inputs), str(out)])]
    tmp = out.with_name(out.name + ".tmp")
    try:
        if meta is not None:
            write_sidecar(out, meta["config_hash"], meta["config"], meta["row"])
        with open(tmp, "wb") as f:
            rows = [by_key[k] for k in sorted(by_key)]
            append_lines(f, [ResultsFile.encode(r) if meta else encode_row(r) for r in rows])
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        for lock in locks:
            lock.close()
    return len(by_key)


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
        if expected < 0:
            raise ValueError(f"--expected {expected} must be >= 0")
        distinct = set(keys)
        inside = {k for k in distinct if k[0] in seeds and 0 <= k[1] < expected}
        n_seeds = max(1, len(seeds))  # an empty file still owes one seed's rows
        out["expected_rows"] = expected * n_seeds
        out["missing"] = expected * n_seeds - len(inside)
        out["extra"] = len(distinct) - len(inside)
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


def _json_int(n: int) -> int | str:
    return n if n <= 2**53 else str(n)


def distribution(rows: list[dict], alpha: float = 0.05) -> dict:
    """What the rows say about the whole space (see the module docstring); averaged over seeds
    per combination, like the plots."""
    from .combinations import Space  # numpy and scipy load here, not for merge / check
    from .confidence import clopper_pearson, quantile_bands

    if not rows:
        raise ValueError("no rows to summarise")
    cfg = rows[0].get("config") or {}
    split = cfg.get("split", {})
    strategy = split.get("strategy", rows[0].get("strategy"))
    by_c: dict[int, list[dict]] = {}
    for r in rows:
        by_c.setdefault(r["combination"], []).append(r)

    def mean(rs: list[dict], key: str) -> float:
        return sum(r[key] for r in rs) / len(rs)

    acc = sorted(mean(rs, "accuracy") for rs in by_c.values())
    base = mean(rows, "baseline_accuracy")
    n = len(acc)
    count = None
    if strategy in ("exhaustive", "sample", "search") and "model" in cfg:
        count = Space(cfg["model"]["hidden"], split["groups"], split["variant"]).count
    if strategy == "exhaustive":
        kind = "full enumeration" if n == count and set(by_c) == set(range(n)) else "partial"
    else:
        kind = {"sample": "uniform sample", "search": "search"}.get(strategy, strategy)
    out: dict = {
        "kind": kind,
        "combinations": n,
        "space": None if count is None else _json_int(count),
    }
    k = sum(a >= base for a in acc)
    reached = {"k": k, "n": n, "fraction": k / n, "baseline": base}
    if kind == "full enumeration":
        bands = quantile_bands(acc, alpha=alpha)
        for b in bands:  # the population itself: the quantiles are exact
            b["lower"] = b["upper"] = b["estimate"]
        out["quantiles"] = bands
        reached["interval"] = [k / n, k / n]
    elif kind == "uniform sample":
        out["quantiles"] = quantile_bands(acc, alpha=alpha)
        reached["interval"] = list(clopper_pearson(k, n, alpha))
    else:
        out["note"] = (
            "not a uniform sample of the space: no statement about the whole space"
            if kind != "full enumeration"
            else ""
        )
    out["alpha"] = alpha
    out["at_or_above_baseline"] = reached
    out["max_test_accuracy"] = acc[-1]  # a maximum over test scores: optimistic as a pick
    if all("validation_accuracy" in r for r in rows):
        pick = max(by_c, key=lambda c: (mean(by_c[c], "validation_accuracy"), -c))
        out["picked_on_validation"] = {
            "combination": pick,
            "validation_accuracy": mean(by_c[pick], "validation_accuracy"),
            "test_accuracy": mean(by_c[pick], "accuracy"),
        }
    if strategy == "search":
        last = max(rows, key=lambda r: r["combination"])
        best = by_c[last["search"]["best"]]
        out["search_result"] = {
            "combination": best[0]["combination"],
            "index": best[0].get("index"),
            "validation_accuracy": mean(best, "validation_accuracy"),
            "test_accuracy": mean(best, "accuracy"),
        }
    return out


def describe_distribution(d: dict) -> str:
    """Human lines for ``distribution``'s dict."""
    pct = 100 * (1 - d["alpha"])
    lines = [f"{d['kind']}: {d['combinations']} combinations of {d['space'] or '?'}"]
    for b in d.get("quantiles", []):

        def f(v: float | None) -> str:
            return "unbounded" if v is None else f"{100 * v:.1f}%"

        lines.append(
            f"  q{round(100 * b['q']):02d} test accuracy {f(b['estimate'])}"
            + (
                ""
                if b["lower"] == b["upper"]
                else f"  ({pct:.0f}% band {f(b['lower'])} .. {f(b['upper'])})"
            )
        )
    r = d["at_or_above_baseline"]
    text = f"  at or above the baseline ({100 * r['baseline']:.1f}%): {r['k']} of {r['n']}"
    if "interval" in r and d["kind"] == "uniform sample":
        lo, hi = r["interval"]
        text += f"; of the space {100 * lo:.2f}% .. {100 * hi:.2f}% (Clopper-Pearson {pct:.0f}%)"
    lines.append(text)
    if d.get("note"):
        lines.append(f"  {d['note']}")
    for key in ("picked_on_validation", "search_result"):
        if key in d:
            p = d[key]
            lines.append(
                f"  {key.replace('_', ' ')}: combination {p['combination']}, validation "
                f"{100 * p['validation_accuracy']:.1f}%, test {100 * p['test_accuracy']:.1f}%"
            )
    return "\n".join(lines)


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
    d = sub.add_parser("summary", help="what the rows say about the whole combination space")
    d.add_argument("path")
    d.add_argument("--alpha", type=float, default=0.05, help="1 - confidence (default 0.05)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "summary":
            rows = read_rows(args.path)
            if not rows:
                raise ValueError(f"{args.path!r} holds no rows")
            check_config(rows, None, args.path)
            dist = distribution(rows, args.alpha)
            print(json.dumps(dist))
            print(describe_distribution(dist), file=sys.stderr)
            return 0
        if args.cmd == "merge":
            print(f"merged {merge(args.inputs, args.out)} rows (seed, combination) into {args.out}")
            return 0
        rows = read_rows(args.path)
        if not Path(args.path).exists():
            raise ValueError(f"{args.path!r} does not exist")
        check_config(rows, None, args.path)  # one experiment per file
        s = summary(rows, args.expected)
        print(json.dumps(s))
        print(describe(s), file=sys.stderr)
        return 0 if s["duplicates"] == s.get("missing", 0) == s.get("extra", 0) == 0 else 1
    except (ValueError, OSError) as e:
        print(f"splitnet.results: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
