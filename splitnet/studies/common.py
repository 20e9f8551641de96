"""What every study runner shares: its TOML (defaults + unknown-key check) and saving a figure."""

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
