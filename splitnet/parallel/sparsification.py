"""The progress report's sparsification study as runs of the data-parallel program: its config
(top-level keys, then a table of ``DPConfig`` fields per dataset), every (dataset, compressor,
residual) run it makes, where each writes, and reading them back.

A run is the dataset's table with the study's own options set (``dataset``, ``compressor``,
``residual``, ``out``, ``quiet``); ``none`` runs once (it leaves nothing unsent, so a residual
means nothing). ``experiments/sparsification/run.py`` launches the runs and draws.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..results import ANY_ROWS, read_rows
from ..validation import Each, Interval, OneOf
from ..validation import check as validate
from . import dataparallel as program
from .compress import COMPRESSORS
from .dataparallel import DPConfig

RUN_OPTIONS = ("dataset", "compressor", "residual", "out", "quiet")  # set by the study, per run


@dataclass(frozen=True)
class SparsificationConfig:
    """The study's TOML: the top-level keys, then a table of ``DPConfig`` fields per dataset
    (the ``--dataset`` values; a dataset without a table runs ``DPConfig``'s defaults, the
    report's; experiments/sparsification/config.toml says what each key does)."""

    ranks: int = 2
    datasets: tuple[str, ...] = ("digits",)
    compressors: tuple[str, ...] = tuple(COMPRESSORS)
    residual: tuple[bool, ...] = (True, False)
    histogram_run: str = "none"
    digits: DPConfig = field(default_factory=DPConfig)  # each DPConfig(dataset=its name)
    mnist: DPConfig = field(default_factory=lambda: DPConfig(dataset="mnist"))
    idx: DPConfig = field(default_factory=lambda: DPConfig(dataset="idx"))


CONSTRAINTS = {
    "ranks": Interval(1),
    "datasets": Each(OneOf(program.DATASETS)),
    "compressors": Each(OneOf(tuple(COMPRESSORS))),
    **dict.fromkeys(program.DATASETS, program.CONSTRAINTS),
}


def check(cfg: SparsificationConfig, out: Path) -> None:
    """The rules tying keys together: ``histogram_run`` names a run; no dataset table sets an
    option the study sets per run (a value other than ``DPConfig``'s default for it); every
    run's DPConfig, writing under ``out``, valid (``dataparallel.validate``)."""
    labels = [label(comp, res) for _, comp, res in run_names(cfg)]
    if cfg.histogram_run not in labels:
        raise ValueError(f"histogram_run={cfg.histogram_run!r} is not among the runs {labels}")
    for ds in cfg.datasets:
        mine, default = getattr(cfg, ds), DPConfig(dataset=ds)
        taken = sorted(k for k in RUN_OPTIONS if getattr(mine, k) != getattr(default, k))
        if taken:
            raise ValueError(f"[{ds}] sets {taken}, which the study sets for every run")
    for run in run_names(cfg):
        run_config(cfg, *run, out)


def with_datasets(cfg: SparsificationConfig, datasets: str, out: Path) -> SparsificationConfig:
    """``cfg`` with the command line's ``--datasets a,b`` (when given), then ``check``ed."""
    if datasets:
        cfg = dataclasses.replace(cfg, datasets=tuple(datasets.split(",")))
        validate(cfg, {"datasets": CONSTRAINTS["datasets"]}, "")
    check(cfg, out)
    return cfg


def run_names(cfg: SparsificationConfig) -> list[tuple[str, str, bool]]:
    """(dataset, compressor, residual) for every run; ``none`` once (nothing is left unsent)."""
    return [
        (ds, c, bool(res))
        for ds in cfg.datasets
        for c in cfg.compressors
        for res in ([True] if c == "none" else cfg.residual)
    ]


def result_path(out: Path, ds: str, comp: str, res: bool) -> Path:
    """``out/<dataset>_<compressor>[_res|_nores].jsonl``: the rows file of one run."""
    tail = "" if comp == "none" else ("_res" if res else "_nores")
    return Path(out) / f"{ds}_{comp}{tail}.jsonl"


def run_config(cfg: SparsificationConfig, ds: str, comp: str, res: bool, out: Path) -> DPConfig:
    """One run: the dataset's table with the run's own options, validated (a refusal names the
    key under the dataset: ``digits.channels=[16] must be two integers``)."""
    path = str(result_path(out, ds, comp, res))
    run = dataclasses.replace(
        getattr(cfg, ds), dataset=ds, compressor=comp, residual=res, out=path, quiet=True
    )
    program.validate(run, ds)
    return run


def load_runs(cfg: SparsificationConfig, out: Path, ds: str) -> dict[str, list[dict]]:
    """label -> the rows of every recorded run of ``ds`` (its summary row last)."""
    paths = {label(c, r): result_path(out, d, c, r) for d, c, r in run_names(cfg) if d == ds}
    return {k: read_rows(p, ANY_ROWS) for k, p in paths.items() if p.exists()}


def label(comp: str, res: bool) -> str:
    """A run's name in figures and ``histogram_run``: ``topk``, ``topk (no residual)``."""
    return comp if comp == "none" else f"{comp}{'' if res else ' (no residual)'}"
