"""What the study scripts in ``experiments/<study>/run.py`` share: their command line, the TOML
loader, where results and figures go, resuming a rows file, saving figures.

    python experiments/<study>/run.py experiments/<study>/config.toml [--plot-only] [--figures]

Rows go to ``results/<study>/`` (appended as they complete; a rerun skips what is recorded, or
the study says it does not resume). Figures and tables go there too, unless ``--figures`` asks
to refresh the committed ones in ``figures/``: following the README never rewrites committed
files by accident. A bad TOML, an unknown key or a value of the wrong type is a one-line
message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .results import (  # noqa: E402
    Layout,
    ResultsFile,
    check_config,
    config_hash,
    open_results,
    read_rows,
    read_sidecar,
)

RESULTS = Path("results")
FIGURES = Path("figures")


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
    """``defaults`` updated by the TOML at ``path``.

    ValueError, naming the file, for an unreadable file, a file that is not TOML, an unknown
    key or a value whose type is not the default's.
    """
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"cannot read study config {str(path)!r}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"study config {str(path)!r} is not valid TOML: {e}") from None
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
    defaults: dict[str, Any],
    argv: Sequence[str] | None = None,
    *,
    check: Callable[[dict[str, Any], argparse.Namespace], dict[str, Any]] | None = None,
    options: Sequence[tuple[str, dict[str, Any]]] = (),
) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Parse ``CONFIG [--plot-only] [--figures] [options]`` and load the study's TOML.

    ``check(cfg, args)`` validates the loaded dict further (raising ValueError); ``options`` are
    more ``(--flag, add_argument keywords)``. A ValueError is one line and exit status 2.
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
        cfg = load_study(args.config, defaults)
        if check is not None:
            cfg = check(cfg, args)
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


STUDY_ROWS = Layout(key=(), require="config_hash")  # until a study names its rows' key


def recorded(path: Path, cfg: dict[str, Any], layout: Layout = STUDY_ROWS) -> list[dict[str, Any]]:
    """The rows of ``path`` for ``--plot-only`` (read only), refused as ``open_results`` would
    refuse to resume them: rows or a sidecar of another config."""
    rows = read_rows(path, layout)
    if not rows:
        raise ValueError(f"no rows in {str(path)!r} yet: run without --plot-only first")
    check_config(rows, config_hash(cfg), path)
    read_sidecar(path, cfg)
    return rows


def rows_file(
    name: str,
    path: Path,
    cfg: dict[str, Any],
    *,
    plot_only: bool,
    resumable: bool = True,
    layout: Layout = STUDY_ROWS,
) -> tuple[ResultsFile | None, list[dict[str, Any]]]:
    """A study's rows: ``(writer, rows so far)`` from ``results.open_results`` (locked, checked,
    the study config in the sidecar, rows stamped with its ``config_hash``), or ``(None, rows)``
    for ``--plot-only``. A study that does not resume starts the file anew. A file of another
    config, a second writer, or no rows to plot, is ``fail`` (exit 2)."""
    try:
        if plot_only:
            return None, recorded(path, cfg, layout)
        mode = "resume" if resumable else "replace"
        writer = open_results(path, cfg, layout, mode=mode)
        return writer, writer.rows
    except (ValueError, OSError) as e:
        fail(name, str(e))


def table_study(
    name: str,
    doc: str,
    defaults: dict[str, Any],
    argv: Sequence[str] | None,
    *,
    check: Callable[[dict[str, Any], argparse.Namespace], dict[str, Any]],
    run: Callable[[dict[str, Any], BinaryIO, list[dict[str, Any]]], list[dict[str, Any]]],
    plot: Callable[[list[dict[str, Any]], Path], None],
    table: Callable[[list[dict[str, Any]]], str],
    resumable: bool = True,
) -> int:
    """The whole life of a study with one rows file, one figure and one table.

    ``run(cfg, f, rows)`` appends to ``f`` the rows not among ``rows`` (the recorded ones; none
    when ``resumable=False``) and returns them all; ``--plot-only`` rereads them instead. Then
    ``plot`` to ``<name>.png``, and ``table`` written to ``<name>_table.md`` and printed.
    """
    args, cfg = cli(name, doc, defaults, argv, check=check)
    out, figs = output_dirs(name, args.figures)
    path = out / f"{name}.jsonl"
    writer, rows = rows_file(name, path, cfg, plot_only=args.plot_only, resumable=resumable)
    if writer is not None:
        with writer:
            rows = run(cfg, writer.file, rows)
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
