"""The re-split study's rows read back: selections, per-period series over seeds, and the
markdown table (``analysis.markdown_table``). Reads rows only; never trains."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import independence
from .analysis import markdown_table, mean_ci

LABELS = {
    "random": "IST (random re-split)",
    "random-dropout": "IST, dropout-scaled pieces",
    "fixed": "poster split, fixed",
    "fixed-dropout": "poster split, dropout-scaled",
}
NORM_TITLES = {
    "none": "BatchNorm-free MLP (Linear + bias)",
    "batch": "IST's BatchNorm MLP (bias-free Linear + BatchNorm1d, affine-free BN on the logits)",
}
REFERENCES = {
    "baseline": "baseline (unsplit)",
    "dp": "data-parallel (= baseline)",
    "dp-equal-data": "data-parallel, global batch {k}x32",
}
METHODS = ("sum", "shared-rescale", "stitch", "ensemble")  # of the one-shot table


def group(rows: Sequence[dict], **match: Any) -> list[dict]:
    """The rows whose every key of ``match`` has that value."""
    return [r for r in rows if all(r.get(a) == b for a, b in match.items())]


def series(rows: Sequence[dict], k: int, strategy: str, stitch: bool) -> list[tuple]:
    """Rounds rows of (k, strategy, stitch) by period: [(period, mean accuracy, 95% CI
    half-width, mean bytes, mean ensemble accuracy, rounds)], the means over seeds."""
    out, sel = [], group(rows, kind="rounds", groups=k, strategy=strategy, stitch=stitch)
    for e in sorted({r["resplit_every"] for r in sel}):
        rs = group(sel, resplit_every=e)
        means = (float(np.mean([r[x] for r in rs])) for x in ("bytes_total", "ensemble_accuracy"))
        out.append((e, *mean_ci([r["accuracy"] for r in rs]), *means, rs[0]["rounds"]))
    return out


def by_norm(rows: Sequence[dict]) -> list[tuple[str, list[dict]]]:
    """(architecture, its rows) for each architecture present, BatchNorm-free first."""
    present = {r["norm"] for r in rows}
    return [(n, group(rows, norm=n)) for n in NORM_TITLES if n in present]


def ci(values: Sequence[float]) -> str:
    """``mean ± 95% CI half-width`` to four places."""
    return "{:.4f} ± {:.4f}".format(*mean_ci(values))


def table(rows: Sequence[dict], ind: dict | None) -> str:
    """The study's markdown: per architecture and k, the period table (and the one-shot
    recombination table), then the independence section of ``ind`` (``independence.summary``)."""
    lines = ["# Re-split period study (digits)", ""]
    for norm, rs in by_norm(rows):
        lines += [f"# {NORM_TITLES[norm]}", ""]
        for k in sorted({r["groups"] for r in rs}):
            lines += period_table(rs, k)
    return "\n".join(lines + independence.table_lines(ind))


def period_table(rows: Sequence[dict], k: int) -> list[str]:
    """Lines for k: the references, then a row per (strategy, period) with the accuracy before
    and after the stitch, the ensemble's and the MB moved; the recombination table if any."""
    T = group(rows, kind="baseline", groups=k)[0]["total_steps"]
    head = (
        "method|re-split every (steps)|rounds|test acc. (mean ± 95% CI)|+ stitch|ensemble|MB moved"
    )
    body = []
    for kind, name in REFERENCES.items():
        rs = group(rows, kind=kind, groups=k)
        every = "every step" if kind != "baseline" else "-"
        mb = np.mean([r["bytes_total"] for r in rs]) / 1e6
        body.append(
            [name.format(k=k), every, "-", ci([r["accuracy"] for r in rs]), "", "", f"{mb:.2f}"]
        )
    for strategy in sorted({r["strategy"] for r in group(rows, kind="rounds", groups=k)}):
        stitched = {e: (m, c) for e, m, c, *_ in series(rows, k, strategy, True)}
        for e, m, c, b, ens, R in series(rows, k, strategy, False):
            sm, sc = stitched.get(e, (np.nan, np.nan))
            cells = [f"{m:.4f} ± {c:.4f}", f"{sm:.4f} ± {sc:.4f}", f"{ens:.4f}", f"{b / 1e6:.3f}"]
            body.append([LABELS.get(strategy, strategy), str(e), str(R), *cells])
    hidden = rows[0]["config"]["model"]["hidden"]
    lines = [f"## k = {k}, hidden {hidden}, straight, T = {T} steps per piece", ""]
    lines.append(markdown_table(head.split("|"), body, "lrrrrrr"))
    if rec := group(rows, kind="recombination", groups=k):
        lines += [
            "",
            f"One-shot, poster split, k = {k}: the same trained pieces recombined "
            "(mean ± 95% CI over seeds)",
            "",
        ]
        body = [
            [v, str(group(rec, variant=v)[0]["pieces"])]
            + [ci([r["accuracy"] for r in group(rec, variant=v, method=m)]) for m in METHODS]
            for v in sorted({r["variant"] for r in rec}, reverse=True)
        ]
        head = "paths|pieces|sum (plain)|shared rescale|stitch|ensemble"
        lines.append(markdown_table(head.split("|"), body, "lrrrrr"))
    return lines + [""]
