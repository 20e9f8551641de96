"""Results files: JSON Lines, one row per key, appended as they complete; the one writer, the
one resume path and the one sidecar of every program that writes rows.

A ``Layout`` says how a kind of file keys its rows: the driver's ``DRIVER`` is one row per
(seed, combination); the race might key by (label, seed, step), data-parallel by iteration, a
study by its own cell key. ``open_results(path, config, layout)`` resolves the path (a symlink
and its target are one file), takes an exclusive lock (``<file>.lock``, naming the holder) for
the whole run, and checks the file before changing a byte: a regular file (a FIFO is refused at
once) whose every complete line is a row of this config, no key twice, and a sidecar that is
this run's; only then is a torn last line (a run killed mid-write) cut. A resumed run skips the
keys in ``ResultsFile.done`` and the file ends with exactly one row per key.

    python -m splitnet.results merge -o ALL.jsonl SHARD1.jsonl SHARD2.jsonl ...
    python -m splitnet.results check ALL.jsonl --expected N   # rows vs combinations x seeds
    python -m splitnet.results summary ALL.jsonl [--alpha 0.05]

The config is written once, to the file's sidecar (``sidecar``: verified whenever read), and a
row carries what differs between rows plus ``config_hash`` (``config.config_hash``, the one
digest); ``read_rows`` puts the shared keys back. The statistics are in ``analysis``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .config import config_hash
from .rowfile import (
    acquire_lock,
    check_config,
    check_regular,
    lines_of,
    parse_rows,
    read_sidecar,
    resolve,
    sidecar_path,
    write_sidecar,
)

__all__ = [
    "acquire_lock",
    "check_config",
    "check_regular",
    "config_hash",
    "read_sidecar",
    "sidecar_path",
]

ROW_PREFIX = b'{"accuracy": '  # the driver's rows, keys sorted: "accuracy" comes first
# keys a driver file's rows share, kept in the sidecar's "row" (``experiment.file_constants``);
# "piece_seeds" is not stored: it is seeds.piece_order_seed(config, combination, path)
SHARED_KEYS = ("config", "strategy", "variant", "groups", "paths", "recombination")
DROPPED_KEYS = ("piece_seeds",)


@dataclass(frozen=True)
class Layout:
    """How a kind of results file keys and stores its rows.

    ``key``: the fields that name a row (one row per value; ``key_defaults`` for rows written
    before a field existed). ``require``: a field every row has (None: any JSON object).
    ``prefix``: how every line begins (a torn last line must too). ``shared``: keys kept once in
    the sidecar ("config" among them: the sidecar's config), ``dropped``: derivable keys not
    stored, ``none_omitted``: keys left out when None (read back as None), ``rounded``: seconds
    kept to the microsecond.
    """

    key: tuple[str, ...]
    require: str | None = "config_hash"
    prefix: bytes = b"{"
    shared: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    none_omitted: tuple[str, ...] = ()
    rounded: tuple[str, ...] = ()
    key_defaults: Mapping[str, Any] = field(default_factory=dict)

    def key_of(self, row: dict) -> tuple:
        """The row's key: its ``key`` fields, in order."""
        return tuple(row[k] if k in row else self.key_defaults[k] for k in self.key)

    def describe(self, key: tuple) -> str:
        """A key in words for messages: "seed 0, combination 3"."""
        return ", ".join(f"{name} {value!r}" for name, value in zip(self.key, key, strict=True))

    def compact(self, row: dict) -> dict:
        """The row as the file stores it beside its sidecar."""
        out = {
            k: v
            for k, v in row.items()
            if k not in self.shared
            and k not in self.dropped
            and not (v is None and k in self.none_omitted)
        }
        for k in self.rounded:
            if k in out:
                out[k] = round(out[k], 6)
        return out

    def encode(self, row: dict) -> bytes:
        """One line of this file (encoded where the row is made: the writing rank only writes)."""
        return encode_row(self.compact(row))


DRIVER = Layout(
    key=("seed", "combination"),
    require="combination",
    prefix=ROW_PREFIX,
    shared=SHARED_KEYS,
    dropped=DROPPED_KEYS,
    none_omitted=("accuracy_before_stitch",),
    rounded=("seconds",),
    key_defaults={"seed": 0},  # files of single-seed runs written before rows had "seed"
)
ANY_ROWS = Layout(key=(), require=None)  # for reading: every JSON object is a row


def _attach(rows: list[dict], meta: dict | None, layout: Layout) -> list[dict]:
    """Whole rows: the sidecar's shared keys under each row of its config."""
    if meta is None:
        return rows
    base = {**dict.fromkeys(layout.none_omitted), **meta["row"]}
    if "config" in layout.shared:
        base["config"] = meta["config"]
    want = meta["config_hash"]
    return [{**base, **r} if r.get("config_hash") == want else r for r in rows]


def read_rows(path: str | Path, layout: Layout = DRIVER) -> list[dict]:
    """All complete rows of a results file ([] if absent), whole (the sidecar's shared keys put
    back, the sidecar verified); a torn last line is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    complete, _tail = lines_of(path)  # a row is only complete once its newline is written
    return _attach(parse_rows(path, complete, layout.require), read_sidecar(path), layout)


def check_unique(rows: list[dict], path: str | Path, layout: Layout = DRIVER) -> None:
    """No key twice (two runs writing one file at once would double rows)."""
    if not layout.key:  # rows not keyed (a study's file before it names its key)
        return
    seen: set[tuple] = set()
    dups = []
    for r in rows:
        k = layout.key_of(r)
        if k in seen:
            dups.append(k)
        seen.add(k)
    if dups:
        raise ValueError(
            f"{str(path)!r} holds {len(dups)} duplicated row(s) (first: "
            f"{layout.describe(dups[0])}), e.g. from two runs writing it at once; keep one of "
            f"each with: python -m splitnet.results merge -o NEW.jsonl {path}"
        )


def _checked(
    path: Path, require: str | None, prefix: bytes, check: Callable[[list[dict]], None] | None
) -> tuple[list[dict], bytes]:
    """(rows, torn tail) of ``path``, judged before a byte changes: every complete line a JSON
    object (with ``require``), ``check(rows)`` passing, the bytes after the last newline the
    beginning of a line of this file (``prefix``)."""
    check_regular(path)
    complete, tail = lines_of(path) if path.exists() else ([], b"")
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
    return rows, tail


def _open_cut(path: Path, tail: bytes) -> BinaryIO:
    f = open(path, "ab")  # noqa: SIM115 - the caller closes it
    if tail:  # a line cut by a kill: every complete line is ours, so it is ours too
        f.truncate(path.stat().st_size - len(tail))
    return f


@dataclass
class ResultsFile:
    """An open results file of one run: locked, checked, ready for appending.

    ``done``: the keys already recorded (a resume skips them); ``rows``: those rows, whole
    (empty when opened with ``keep_rows=False``). Closing (or leaving ``with``) unlocks.
    """

    path: Path  # the resolved file
    layout: Layout
    config_hash: str
    file: BinaryIO
    lock: BinaryIO
    done: set[tuple]
    rows: list[dict]

    def write(self, rows: list[dict]) -> None:
        """Append ``rows`` (stamped with this file's config_hash), fsynced; a key already in the
        file, or twice among ``rows``, or a row of another config is a ValueError, nothing
        written."""
        keys, lines = [], []
        for r in rows:
            if r.setdefault("config_hash", self.config_hash) != self.config_hash:
                raise ValueError(
                    f"a row of config_hash {r['config_hash']} for {str(self.path)!r}, a file of "
                    f"config_hash {self.config_hash}"
                )
            k = self.layout.key_of(r)
            if k in self.done or k in keys:
                raise ValueError(
                    f"{str(self.path)!r} already holds the row {self.layout.describe(k)}"
                )
            keys.append(k)
            lines.append(self.layout.encode(r))
        self.append(lines)
        self.done.update(keys)

    def append(self, lines: list[bytes]) -> None:
        """Append lines already encoded by ``layout.encode`` (the driver's ranks encode them)."""
        append_lines(self.file, lines)

    def close(self) -> None:
        """Close the file and release the lock."""
        self.file.close()
        self.lock.close()  # releases the lock

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


MODES = ("resume", "new", "replace")


def open_results(
    path: str | Path,
    config: dict,
    layout: Layout,
    *,
    shared: dict | None = None,
    mode: str = "resume",
    keep_rows: bool = True,
) -> ResultsFile:
    """Lock the file at ``path`` (its real path), check it, write or verify its sidecar, cut a
    torn last row, open it for appending rows of ``config``.

    ``mode``: "resume" keeps the rows of this config (another config's rows, a doubled key or
    another sidecar is a ValueError); "new" refuses a file that holds rows; "replace" empties a
    results file (never a foreign one). ``shared``: the values of ``layout.shared`` (bar
    "config"), kept in the sidecar. Every refusal leaves the file untouched.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} must be one of {MODES}")
    check_regular(path)  # through the name: a pipe's "real path" is no file at all
    real = resolve(path)
    real.parent.mkdir(parents=True, exist_ok=True)
    want = config_hash(config)
    lock = acquire_lock(real)
    try:

        def ours(rows: list[dict]) -> None:
            check_config(rows, want, path)
            check_unique(rows, path, layout)

        check = ours if mode == "resume" else None
        rows, tail = _checked(real, layout.require, layout.prefix, check)
        if rows and mode == "new":
            raise ValueError(f"{str(path)!r} already holds {len(rows)} row(s): name another file")
        meta = read_sidecar(real, config) if rows and mode == "resume" else None
        f = _open_cut(real, tail)
        try:
            if mode == "replace":
                f.truncate(0)
                rows = []
            if meta is None:
                write_sidecar(real, config, shared or {})
                meta = read_sidecar(real)
        except BaseException:
            f.close()
            raise
        done = {layout.key_of(r) for r in rows}
        rows = _attach(rows, meta, layout) if keep_rows else []
        return ResultsFile(real, layout, want, f, lock, done, rows)
    except BaseException:
        lock.close()
        raise


def encode_row(row: dict) -> bytes:
    """One JSON line, keys sorted."""
    return json.dumps(row, sort_keys=True).encode() + b"\n"


def append_lines(f: BinaryIO, lines: list[bytes]) -> None:
    """Write whole lines, then flush and fsync: a row on disk is a row that survives a kill."""
    if lines:
        f.write(b"".join(lines))
        f.flush()
        os.fsync(f.fileno())


def append_rows(f: BinaryIO, rows: list[dict]) -> None:
    """``append_lines`` of whole rows, as they are (no sidecar layout, no key check)."""
    append_lines(f, [encode_row(r) for r in rows])


def merge(inputs: list[str | Path], out: str | Path, layout: Layout = DRIVER) -> int:
    """Union of shard files, one row per key, sorted; all of one config.

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
    by_key: dict[tuple, dict] = {}
    hashes = set()
    metas = [m for m in map(read_sidecar, inputs) if m is not None]
    for p in inputs:
        for r in read_rows(p, layout):
            hashes.add(r.get("config_hash"))
            by_key.setdefault(layout.key_of(r), r)
    hashes |= {m["config_hash"] for m in metas}
    if len(hashes) > 1:
        raise ValueError(f"the inputs mix {len(hashes)} configs: {sorted(map(str, hashes))}")
    meta = metas[0] if metas else None  # inputs of today's layout: the output gets it too
    # no run may be writing an input or the output while it is replaced (a running writer would
    # go on appending to the replaced, deleted file)
    names = dict.fromkeys(str(resolve(p)) for p in [*inputs, out])
    locks = [acquire_lock(p) for p in names]
    real = resolve(out)
    tmp = real.with_name(real.name + ".tmp")
    try:
        if meta is not None and read_sidecar(real, meta["config"]) is None:
            write_sidecar(real, meta["config"], meta["row"])
        with open(tmp, "wb") as f:
            rows = [by_key[k] for k in sorted(by_key)]
            append_lines(f, [layout.encode(r) if meta else encode_row(r) for r in rows])
        os.replace(tmp, real)
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
    return sorted({DRIVER.key_of(r)[0] for r in rows})


def main(argv: list[str] | None = None) -> int:
    """``python -m splitnet.results``: merge, check (``analysis.row_counts``), summary
    (``analysis.space_summary``); exit 2 with one line on bad input, 1 when check finds gaps."""
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
        if args.cmd == "merge":
            print(f"merged {merge(args.inputs, args.out)} rows (seed, combination) into {args.out}")
            return 0
        from . import analysis  # numpy (and, for summary, scipy) load here, not for merge

        rows = read_rows(args.path)
        if args.cmd == "summary" and not rows:
            raise ValueError(f"{args.path!r} holds no rows")
        if not Path(args.path).exists():
            raise ValueError(f"{args.path!r} does not exist")
        check_config(rows, None, args.path)  # one experiment per file
        if args.cmd == "summary":
            est = analysis.space_summary(rows, args.alpha)
            print(json.dumps(est))
            print(analysis.describe_space_summary(est), file=sys.stderr)
            return 0
        s = analysis.row_counts([DRIVER.key_of(r) for r in rows], run_seeds_of(rows), args.expected)
        print(json.dumps(s))
        print(analysis.describe_row_counts(s), file=sys.stderr)
        return 0 if s["duplicates"] == s.get("missing", 0) == s.get("extra", 0) == 0 else 1
    except (ValueError, OSError) as e:
        print(f"splitnet.results: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
