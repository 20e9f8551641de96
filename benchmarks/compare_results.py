"""Are two results folders the same, timing aside? Proof that a refactor left a study's rows and
tables as they were.

    python benchmarks/compare_results.py OLD_DIR NEW_DIR [--ignore KEY ...] [--mask REGEX ...]

Every ``*.jsonl`` under OLD_DIR must be under NEW_DIR too, with the same rows in the same order
once the ``--ignore`` keys are dropped (at any depth; shell-style patterns: ``predict_*_s``).
Every ``*_table.md`` must be byte-identical, or equal cell by cell with the ``--ignore``
columns dropped (a column is named by its header), the rule rows read as alignments
(``|---|`` and ``| --- |`` are one left-aligned column) and every ``--mask`` match blanked
(for timings inside a cell: ``--mask '[0-9.]+ ms'``). One line per file; exit status 1 when a
file differs or is missing, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from fnmatch import fnmatch
from pathlib import Path
from typing import Any


def dropped(value: Any, ignore: list[str]) -> Any:
    """``value`` without the keys matching ``ignore``, at any depth."""
    if isinstance(value, dict):
        return {
            k: dropped(v, ignore)
            for k, v in value.items()
            if not any(fnmatch(k, p) for p in ignore)
        }
    if isinstance(value, list):
        return [dropped(v, ignore) for v in value]
    return value


def rows_of(path: Path) -> list[dict]:
    """The complete rows of a JSON Lines file (a torn last line is not a row)."""
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line.strip()]


def compare_rows(old: Path, new: Path, ignore: list[str]) -> str | None:
    a, b = ([dropped(r, ignore) for r in rows_of(p)] for p in (old, new))
    if len(a) != len(b):
        return f"{len(a)} rows before, {len(b)} after"
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            keys = sorted(k for k in x.keys() | y.keys() if x.get(k, "<absent>") != y.get(k))
            before, after = [x.get(k) for k in keys], [y.get(k) for k in keys]
            return f"row {i} differs at {keys}: {before} vs {after}"
    return None


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def is_rule(line: str) -> bool:
    return line.startswith("|") and all(re.fullmatch(r":?-{3,}:?", c) for c in cells(line))


def table_lines(text: str, ignore: list[str], masks: list[str]) -> list[Any]:
    """Every line as comparable: a table row as its cells (ignored columns dropped), a rule row
    as its alignments, any other line as it is; masks applied first."""
    for m in masks:
        text = re.sub(m, "<masked>", text)
    out: list[Any] = []
    keep: list[bool] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            keep = None
            out.append(line.rstrip())
            continue
        row = cells(line)
        if keep is None:  # a header: the columns to keep
            keep = [not any(fnmatch(c, p) for p in ignore) for c in row]
        row = [c for c, k in zip(row, keep, strict=False) if k]
        out.append(["r" if c.endswith(":") else "l" for c in row] if is_rule(line) else row)
    return out


def compare_table(old: Path, new: Path, ignore: list[str], masks: list[str]) -> str | None:
    a, b = (table_lines(p.read_text(), ignore, masks) for p in (old, new))
    if len(a) != len(b):
        return f"{len(a)} lines before, {len(b)} after"
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            return f"line {i + 1} differs: {x!r} vs {y!r}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--ignore", nargs="*", default=[], help="row keys and table columns to drop")
    ap.add_argument("--mask", nargs="*", default=[], help="regexes blanked in tables")
    args = ap.parse_args(argv)
    files = sorted(
        p.relative_to(args.old)
        for p in args.old.rglob("*")
        if p.suffix == ".jsonl" or p.name.endswith("_table.md")
    )
    if not files:
        print(f"no .jsonl or _table.md files under {args.old}", file=sys.stderr)
        return 1
    bad = 0
    for rel in files:
        old, new = args.old / rel, args.new / rel
        if not new.exists():
            verdict = "MISSING after"
        elif old.read_bytes() == new.read_bytes():
            verdict = "identical"
        else:
            diff = (
                compare_rows(old, new, args.ignore)
                if rel.suffix == ".jsonl"
                else compare_table(old, new, args.ignore, args.mask)
            )
            verdict = f"DIFFERENT: {diff}" if diff else "equal with the ignored keys dropped"
        bad += not verdict.startswith(("identical", "equal"))
        print(f"{rel}: {verdict}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
