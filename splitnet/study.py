"""What the study scripts in ``experiments/<study>/run.py`` share: their command line, the
config loader, where results and figures go, the rows file, saving figures.

    python experiments/<study>/run.py experiments/<study>/config.toml [--plot-only] [--figures]

A study's config is a frozen dataclass built from its TOML by ``load_config`` (the project's
one validation style, ``splitnet.validation``: unknown keys and wrong types refused, then a
constraint table, then the rules tying keys together). A bad TOML, an unknown key or a bad
value is a one-line message naming the key and the value, and exit status 2, never a
traceback. Rows go to ``results/<study>/`` through ``results.open_results`` (one row per key
of the study's ``Layout``, written as they complete; a rerun skips the recorded keys, or the
study starts the file anew). Figures and tables go there too, unless ``--figures`` asks to
refresh the committed ones in ``figures/``: following the README never rewrites committed
files by accident.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import enumerate as driver  # noqa: E402
from .results import (  # noqa: E402
    Layout,
    ResultsFile,
    check_config,
    config_hash,
    open_results,
    read_rows,
    read_sidecar,
)
from .validation import Constraint, build  # noqa: E402
from .validation import check as validate  # noqa: E402

RESULTS = Path("results")
FIGURES = Path("figures")
T = TypeVar("T")


def read_toml(path: str | Path) -> dict[str, Any]:
    """The TOML at ``path``; ValueError naming the file when it cannot be read or parsed."""
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"cannot read study config {str(path)!r}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"study config {str(path)!r} is not valid TOML: {e}") from None


def load_config(
    path: str | Path,
    cls: type[T],
    constraints: Mapping[str, Any] | None = None,
    check: Callable[[T], None] | None = None,
) -> T:
    """A study's config: the frozen dataclass ``cls`` built from the TOML at ``path``
    (``validation.build``: unknown keys and wrong types refused), every key of ``constraints``
    satisfied (``validation.check``; a nested table for a nested section: ``{"rounds": {...}}``),
    then ``check(cfg)``, the rules tying keys together.
    Every refusal is a ValueError naming the key and the value."""
    cfg = build(cls, read_toml(path), "")
    _validate(cfg, constraints or {}, "")
    if check is not None:
        check(cfg)
    return cfg


def _validate(section: Any, constraints: Mapping[str, Any], prefix: str) -> None:
    """``validation.check`` of a section; a table under a key is the nested section's."""
    flat = {k: c for k, c in constraints.items() if not isinstance(c, Mapping)}
    validate(section, flat, prefix)
    for key, table in constraints.items():
        if isinstance(table, Mapping):
            _validate(getattr(section, key), table, f"{prefix}.{key}" if prefix else key)


def as_dict(cfg: Any) -> dict[str, Any]:
    """A study config as its rows, sidecar and hash hold it: plain JSON (lists, not tuples)."""
    d = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    return json.loads(json.dumps(d))


_KINDS = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a table",
}


def _same_type(value: Any, default: Any) -> bool:
    """TOML's types against the default's: an int is a float, a bool is not an int."""
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def load_study(path: str | Path, defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated by the TOML at ``path`` (the dict loader of the studies not yet on a
    ``load_config`` dataclass). ValueError, naming the file, for an unreadable file, a file that
    is not TOML, an unknown key or a value whose type is not the default's."""
    raw = read_toml(path)
    unknown = sorted(set(raw) - set(defaults))
    if unknown:
        raise ValueError(f"unknown keys {unknown} in {str(path)!r}; known: {sorted(defaults)}")
    for key, value in raw.items():
        if not _same_type(value, defaults[key]):
            kind = _KINDS.get(type(defaults[key]), type(defaults[key]).__name__)
            raise ValueError(
                f"{key}={value!r} in {str(path)!r} must be {kind}, like the default "
                f"{defaults[key]!r}"
            )
    return {**defaults, **raw}


def fail(name: str, message: str) -> NoReturn:
    """The one way a study stops on a bad input: ``<study>: error: ...`` and exit status 2."""
    print(f"{name}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def cli(
    name: str,
    doc: str,
    config: type | dict[str, Any],
    argv: Sequence[str] | None = None,
    *,
    constraints: Mapping[str, Constraint] | None = None,
    check: Callable[..., Any] | None = None,
    options: Sequence[tuple[str, dict[str, Any]]] = (),
) -> tuple[argparse.Namespace, Any]:
    """Parse ``CONFIG [--plot-only] [--figures] [options]`` and load the study's TOML.

    ``config``: the study's frozen config dataclass (``load_config`` with ``constraints`` and
    ``check(cfg)``), or a dict of defaults (``load_study``, then ``check(cfg, args)`` returns
    the config). ``options`` are more ``(--flag, add_argument keywords)``. A ValueError is one
    line and exit status 2.
    """
    p = argparse.ArgumentParser(
        prog=f"experiments/{name}/run.py",
        description=doc.strip().splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("config", help=f"the study's TOML, e.g. experiments/{name}/config.toml")
    p.add_argument(
        "--plot-only",
        action="store_true",
        help="redraw figures and tables from the recorded rows, train nothing",
    )
    p.add_argument(
        "--figures",
        action="store_true",
        help="write figures and tables into figures/ (the committed ones) instead "
        f"of results/{name}/",
    )
    for flag, kwargs in options:
        p.add_argument(flag, **kwargs)
    args = p.parse_args(argv)
    try:
        if isinstance(config, dict):
            cfg = load_study(args.config, config)
            if check is not None:
                cfg = check(cfg, args)
        else:
            cfg = load_config(args.config, config, constraints, check)
    except (ValueError, TypeError) as e:  # TypeError: a check met a value of another shape
        fail(name, str(e))
    return args, cfg


def output_dirs(name: str, figures: bool) -> tuple[Path, Path]:
    """(where the rows go, where figures and tables go), both created."""
    rows = RESULTS / name
    figs = FIGURES if figures else rows
    rows.mkdir(parents=True, exist_ok=True)
    figs.mkdir(parents=True, exist_ok=True)
    return rows, figs


def driver_rows(
    name: str,
    path: Path,
    sets: Mapping[str, Any] | None = None,
    *,
    config: str | None = None,
    plot_only: bool = False,
) -> list[dict[str, Any]]:
    """The rows of a driver run (``python -m splitnet.enumerate``, ``--config`` and a ``--set
    key=value`` per item of ``sets``) into ``path``: the driver resumes the file; with
    ``plot_only`` it is only read. A failed run or no rows to read is ``fail`` (exit 2)."""
    if not plot_only:
        args = ["--config", config] if config else []
        args += [x for k, v in (sets or {}).items() for x in ("--set", f"{k}={v}")]
        if code := driver.main([*args, "--out", str(path), "--quiet"]):
            fail(name, f"the driver run into {str(path)!r} exited {code}")
    if not (rows := read_rows(path)):
        fail(name, f"no rows in {str(path)!r}: run without --plot-only first")
    return rows


def recorded(path: Path, cfg: Any, layout: Layout) -> list[dict[str, Any]]:
    """The rows of ``path`` for ``--plot-only`` (read only), refused as ``open_results`` would
    refuse to resume them: rows or a sidecar of another config."""
    cfg = as_dict(cfg)
    rows = read_rows(path, layout)
    if not rows:
        raise ValueError(f"no rows in {str(path)!r} yet: run without --plot-only first")
    check_config(rows, config_hash(cfg), path)
    read_sidecar(path, cfg)
    return rows


def rows_file(
    name: str,
    path: Path,
    cfg: Any,
    layout: Layout,
    *,
    plot_only: bool,
    resumable: bool = True,
) -> tuple[ResultsFile | None, list[dict[str, Any]]]:
    """A study's rows: ``(writer, rows so far)`` from ``results.open_results`` (locked, checked,
    the study config in the sidecar, rows stamped with its ``config_hash``, one row per
    ``layout`` key), or ``(None, rows)`` for ``--plot-only``. A study that does not resume
    starts the file anew. A file of another config, a second writer, or no rows to plot, is
    ``fail`` (exit 2)."""
    try:
        if plot_only:
            return None, recorded(path, cfg, layout)
        mode = "resume" if resumable else "replace"
        writer = open_results(path, as_dict(cfg), layout, mode=mode)
        return writer, writer.rows
    except (ValueError, OSError) as e:
        fail(name, str(e))


@dataclass(frozen=True)
class TableStudy:
    """What a study with one rows file, one figure and one table declares: its ``name``, its
    config dataclass with the ``constraints`` on it and the rules ``check(cfg)`` tying keys
    together (``load_config``), its rows' ``layout``, whether a rerun resumes."""

    name: str
    config: type
    layout: Layout
    constraints: Mapping[str, Constraint] = dataclasses.field(default_factory=dict)
    check: Callable[[Any], None] | None = None
    resumable: bool = True


def table_study(
    spec: TableStudy,
    doc: str,
    argv: Sequence[str] | None,
    *,
    run: Callable[[Any, ResultsFile], list[dict[str, Any]]],
    plot: Callable[[list[dict[str, Any]], Path], None],
    table: Callable[[list[dict[str, Any]]], str],
) -> int:
    """The whole life of a ``TableStudy``.

    ``run(cfg, writer)`` writes (``writer.write``) the rows whose ``spec.layout`` key is not in
    ``writer.done`` (none are when not ``spec.resumable``) and returns all of them (the
    recorded ones are ``writer.rows``); ``--plot-only`` rereads them instead. Then ``plot`` to
    ``<name>.png``, and ``table`` written to ``<name>_table.md`` and printed.
    """
    name = spec.name
    args, cfg = cli(name, doc, spec.config, argv, constraints=spec.constraints, check=spec.check)
    out, figs = output_dirs(name, args.figures)
    path = out / f"{name}.jsonl"
    writer, rows = rows_file(
        name, path, cfg, spec.layout, plot_only=args.plot_only, resumable=spec.resumable
    )
    if writer is not None:
        with writer:
            rows = run(cfg, writer)
    plot(rows, figs / f"{name}.png")
    text = table(rows)
    (figs / f"{name}_table.md").write_text(text)
    print(text)
    return 0


def save_figure(
    fig: plt.Figure,
    path: str | Path,
    dpi: int = 120,
    rect: tuple[float, float, float, float] | None = None,
) -> None:
    """tight_layout (within ``rect``), create the folder, save, close (never shown)."""
    fig.tight_layout(rect=rect)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
