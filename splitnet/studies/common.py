"""What study runners share: their TOML (defaults + unknown keys), saving figures, a CLI."""

from __future__ import annotations

import tomllib
from pathlib import Path


def load_study(path: str | Path, defaults: dict) -> dict:
    """``defaults`` updated by the TOML at ``path``; an unknown key is a ValueError naming it."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"cannot read study config {str(path)!r}: {e.strerror}") from None
    unknown = sorted(set(raw) - set(defaults))
    if unknown:
        raise ValueError(f"unknown keys {unknown} in {str(path)!r}; known: {sorted(defaults)}")
    return {**defaults, **raw}


def save_figure(fig, path: str | Path, dpi: int = 120) -> None:
    """tight_layout, create the folder, save, close (figures are written, never shown)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def table_study_main(argv, doc: str, example: str, load_config, run, plot, table,
                     read_rows) -> None:
    """``python -m splitnet.studies.X CONFIG [--plot-only]``: run (or reread), plot, table."""
    import argparse

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("config", help=f"TOML, e.g. {example}")
    p.add_argument("--plot-only", action="store_true", help="redraw from the existing JSONL")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    rows = read_rows(cfg["out"]) if args.plot_only else run(cfg)
    plot(rows, cfg["figure"])
    Path(cfg["table"]).write_text(table(rows))
    print(table(rows))
