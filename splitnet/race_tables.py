"""The race's rows read back: curves per (label, N, run), time to a target accuracy, and the
table of time to target and per-epoch wall-clock (``experiments/race/run.py`` writes it).

A target is a fraction of single's best final test accuracy over its runs; a variant reaches it
at its first evaluation at or above it. Timings are given as min / median over the runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from .race_methods import Variant

Curves = dict[tuple[str, int, int], list[dict[str, Any]]]  # (label, ranks, run) -> rows


def reach(curve: list[dict], goal: float) -> dict | None:
    """The first evaluation at or above ``goal``."""
    return next((x for x in curve if x["test_accuracy"] >= goal), None)


def curves(rows: list[dict]) -> Curves:
    """(label, ranks, run) -> its rows in step order."""
    out: Curves = {}
    for x in rows:
        out.setdefault((x["label"], x["ranks"], x.get("run", 0)), []).append(x)
    return {k: sorted(v, key=lambda x: x["step"]) for k, v in out.items()}


def order(rows: list[dict]) -> dict[str, int]:
    """Each label's place in the race (the order its rows were written in): table rows, colours."""
    return {lab: i for i, lab in enumerate(dict.fromkeys(x["label"] for x in rows))}


def _mm(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f}" if values else "-"


def table(rows: list[dict], target: float) -> str:
    """Time to target and per-epoch wall-clock, min / median over runs, per (method, N)."""
    cs, place = curves(rows), order(rows)
    goal = target_accuracy(cs, target)
    keys = sorted({(k[0], k[1]) for k in cs}, key=lambda k: (k[1], place[k[0]]))
    runs = {key: [v for (lab, n, _), v in cs.items() if (lab, n) == key] for key in keys}
    t_single = {
        n: statistics.median(reach(v, goal)["wall_s"] for v in runs[(lab, n)])
        for lab, n in keys
        if lab == "single"
    }
    ref_t = t_single.get(1, next(iter(t_single.values()), None))
    lines = [
        f"Target: {target:g} x single's final accuracy = {goal:.4f}. Times in seconds, "
        "min / median over runs; speed-ups are median single (N = 1) / median method.",
        "",
        "| method | N | final accuracy | time to target | speed-up | s per epoch | "
        "per-epoch time / single's, same run | MB sent per rank per epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lab, n in keys:
        hit = [reach(v, goal) for v in runs[(lab, n)]]
        per_epoch = [v[-1]["wall_s"] / v[-1]["epoch"] for v in runs[(lab, n)]]
        last = runs[(lab, n)][0][-1]
        if all(h is not None for h in hit):
            tt = [h["wall_s"] for h in hit]
            ttt, speed = _mm(tt), f"{ref_t / statistics.median(tt):.2f}x"
        else:
            ttt, speed = "not reached", "-"
        same = [  # per-epoch time over single's in the same run (same N, same repeat)
            v[-1]["wall_s"] / cs[("single", n, run)][-1]["wall_s"]
            for (l2, n2, run), v in cs.items()
            if (l2, n2) == (lab, n) and ("single", n, run) in cs
        ]
        mb = last["bytes_max"] / last["epoch"] / 1e6
        lines.append(
            f"| {lab} | {n} | {last['test_accuracy']:.4f} | {ttt} | {speed} | "
            f"{_mm(per_epoch)} | {_mm(same)} | {mb:.1f} |"
        )
    return "\n".join(lines) + "\n"


def target_accuracy(cs: Curves, target: float) -> float:
    """``target`` times single's best final test accuracy (over every N and run)."""
    return target * max(v[-1]["test_accuracy"] for (lab, _, _), v in cs.items() if lab == "single")


def steps_to_target(
    cs: Curves, variants: Sequence[Variant], goal: float
) -> dict[str, float | None]:
    """Median steps to ``goal`` per variant (single: at N = 1, the others at N = 2); None where
    a run never reaches it."""
    steps: dict[str, float | None] = {}
    for v in variants:
        at = 1 if v.method == "single" else 2
        hits = [reach(x, goal) for (lab, n, _), x in cs.items() if (lab, n) == (v.label, at)]
        steps[v.label] = statistics.median(h["step"] for h in hits) if all(hits) else None
    return steps
