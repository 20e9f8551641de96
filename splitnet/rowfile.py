"""One results file on disk: its lines, and what belongs to the file, not to one of its names:
its lock and its config sidecar.

Every path is resolved first (``os.path.realpath``), so a symlink and its target share one lock
(``<file>.lock``, naming the holder) and one sidecar (``<file>.config.json``: ``{"config_hash",
"config", "row"}``). A sidecar is verified whenever it is read: its config must hash to its
``config_hash`` (``config.config_hash``), and on a resume it must be this run's config;
otherwise a ValueError names the sidecar and the first differing key. A results path must be a
regular file (a FIFO would block), every complete line a JSON row. ``results`` builds the
writer and the readers on these.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any, BinaryIO

from .config import config_hash

SIDECAR = ".config.json"


def resolve(path: str | Path) -> Path:
    """The file behind ``path``: locks and sidecars belong to the file, not to one of its names."""
    return Path(os.path.realpath(path))


def sidecar_path(path: str | Path) -> Path:
    """``<file>.config.json`` beside the resolved file."""
    path = resolve(path)
    return path.with_name(path.name + SIDECAR)


def first_difference(a: Any, b: Any, at: str = "") -> tuple[str, Any, Any] | None:
    """(dotted key, a's value, b's value) where two configs first differ; None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(a.keys() | b.keys(), key=str):
            if k not in a or k not in b:
                return f"{at}{k}", a.get(k, "(absent)"), b.get(k, "(absent)")
            if found := first_difference(a[k], b[k], f"{at}{k}."):
                return found
        return None
    return None if a == b else (at.rstrip(".") or "(the config)", a, b)


def read_sidecar(path: str | Path, config: dict | None = None) -> dict | None:
    """The verified sidecar of results file ``path`` (None if it has none).

    Its config must hash to its config_hash, and with ``config`` (a resume) it must be this
    run's config; otherwise a ValueError names the sidecar and the first differing key.
    """
    side = sidecar_path(path)
    if not side.exists():
        return None
    check_regular(side)
    try:
        meta = json.loads(side.read_text())
    except (ValueError, OSError) as e:
        raise ValueError(f"{str(side)!r} is not a results sidecar (JSON): {e}") from None
    if not isinstance(meta, dict) or not {"config_hash", "config", "row"} <= meta.keys():
        raise ValueError(f"{str(side)!r} is not a results sidecar (config_hash, config, row)")
    where = ""
    if config is not None and (diff := first_difference(meta["config"], config)):
        key, there, here = diff
        where = f": it differs from this run's config at {key!r} ({there!r} there, {here!r} here)"
    if not isinstance(meta["config"], dict) or config_hash(meta["config"]) != meta["config_hash"]:
        raise ValueError(
            f"{str(side)!r} was changed after its run wrote it: its config does not hash to its "
            f"config_hash {meta['config_hash']}{where}; restore it, or use another file"
        )
    if config is not None and meta["config_hash"] != config_hash(config):
        raise ValueError(
            f"{str(side)!r} is of another experiment (config_hash {meta['config_hash']}, "
            f"expected {config_hash(config)}){where}; pass a different --out"
        )
    return meta


def write_sidecar(path: str | Path, config: dict, shared: dict) -> None:
    """Write the sidecar of ``path`` atomically (a killed write leaves the old one)."""
    side = sidecar_path(path)
    tmp = side.with_name(side.name + ".tmp")
    meta = {"config_hash": config_hash(config), "config": config, "row": shared}
    tmp.write_text(json.dumps(meta, sort_keys=True, indent=1) + "\n")
    os.replace(tmp, side)


def check_regular(path: str | Path) -> None:
    """A results path must be a regular file (or absent): a FIFO or a device would block."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        return
    except NotADirectoryError as e:  # a file where a folder of the path should be
        raise ValueError(f"{str(path)!r} cannot be created: {e.strerror}") from None
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


def acquire_lock(path: str | Path) -> BinaryIO:
    """An exclusive lock on the file's ``<file>.lock`` (released when the process ends, even by
    SIGKILL); a second writer, through any name of the file, is a ValueError naming the holder."""
    real = resolve(path)
    lock_path = real.with_name(real.name + ".lock")
    f = open(lock_path, "a+b")  # noqa: SIM115 - held for the whole run
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
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    f.write(f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode())
    f.flush()
    return f


def lines_of(path: Path) -> tuple[list[bytes], bytes]:
    """(complete lines, the bytes after the last newline) of a regular file."""
    check_regular(path)
    lines = path.read_bytes().split(b"\n")
    return lines[:-1], lines[-1]


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


def check_config(rows: list[dict], config_hash: str | None, path: str | Path) -> None:
    """All rows of one config (``config_hash``, or the first row's when None)."""
    hashes = {r.get("config_hash") for r in rows}
    want = (
        config_hash if config_hash is not None else (rows[0].get("config_hash") if rows else None)
    )
    others = hashes - {want}
    if others:
        raise ValueError(
            f"{str(path)!r} holds rows of another config (another experiment: config_hash "
            f"{sorted(map(str, others))[0]}, expected {want}); pass a different --out, or move "
            "the file away to start anew (or restore the config the rows were made with)"
        )
