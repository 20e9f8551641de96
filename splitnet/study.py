"""What the study scripts in ``experiments/<study>/run.py`` share: their command line, the TOML
loader, where results and figures go, saving figures.

    python experiments/<study>/run.py experiments/<study>/config.toml [--plot-only] [--figures]

Rows go to ``results/<study>/`` (appended as they complete; a rerun skips what is recorded, or
the study says it does not resume). Figures and tables go there too, unless ``--figures`` asks
to refresh the committed ones in ``figures/``: following the README never rewrites committed
files by accident. A bad TOML or an unknown key is a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .results import read_rows  # noqa: E402

RESULTS = Path("results")
FIGURES = Path("figures")


def load_study(path: str | Path, defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated by the TOML at ``path``; an unknown key is a ValueError naming it."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"cannot read study config {str(path)!r}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"study config {str(path)!r} is not valid TOML: {e}") from None
    unknown = sorted(set(raw) - set(defaults))
    if unknown:
        raise ValueError(f"unknown keys {unknown} in {str(path)!r}; known: {sorted(defaults)}")
    return {**defaults, **raw}


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
        prog=f"experiments/{name}/run.py", description=doc.strip().splitlines()[0]
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
    except ValueError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return args, cfg


def output_dirs(name: str, figures: bool) -> tuple[Path, Path]:
    """(where the rows go, where figures and tables go), both created."""
    rows = RESULTS / name
    figs = FIGURES if figures else rows
    rows.mkdir(parents=True, exist_ok=True)
    figs.mkdir(parents=True, exist_ok=True)
    return rows, figs


def table_study(
    name: str,
    doc: str,
    defaults: dict[str, Any],
    argv: Sequence[str] | None,
    *,
    check: Callable[[dict[str, Any], argparse.Namespace], dict[str, Any]],
    run: Callable[[dict[str, Any], Path], list[dict]],
    plot: Callable[[list[dict], Path], None],
    table: Callable[[list[dict]], str],
) -> int:
    """The whole life of a study with one rows file, one figure and one table:
    ``run(cfg, rows_path)`` (or reread with ``--plot-only``), ``plot``, write and print ``table``.
    """
    args, cfg = cli(name, doc, defaults, argv, check=check)
    out, figs = output_dirs(name, args.figures)
    path = out / f"{name}.jsonl"
    rows = read_rows(path, require=None) if args.plot_only else run(cfg, path)
    plot(rows, figs / f"{name}.png")
    text = table(rows)
    (figs / f"{name}_table.md").write_text(text)
    print(text)
    return 0


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 120) -> None:
    """tight_layout, create the folder, save, close (figures are written, never shown)."""
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
