"""Does the split's "independence" predict what a split costs? Predictors of an enumeration's
rows and how well they rank the accuracy lost.

For a split S of the pretrained net and its recombined test accuracy a(S), the loss is
``lost = baseline - a(S)``. Two predictors of the loss, computed from the pretrained net only:

- cut fraction (``split.cut_fraction``): sum of |W_ij| over the weights whose two neurons lie
  in different groups, over the sum of all |W_ij| of the hidden layers;
- activation score (``split.activation_score``): with C = |corr| of every pair of hidden
  neurons' activations on the pretrain data (``split.activation_affinity``), the mean of C over
  pairs in the same group minus its mean over pairs in different groups.

How well each ranks the loss is Spearman's rho over all combinations (``analysis.spearman``);
where the poster's weight-based split falls is the percentage of combinations that lose less.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .analysis import markdown_table, percent_below, reaches_baseline, spearman
from .config import Config
from .experiment import Prepared
from .split import activation_affinity, activation_score

PREDICTORS = {
    "cut_fraction": "cut fraction (abs W crossing groups)",
    "activation_score": "activation score (within - across mean abs corr)",
}
KEPT = ("combination", "accuracy", "baseline_accuracy", "cut_fraction")  # of the driver's rows


def predictor_rows(
    rows: Sequence[dict], prep: Prepared, weights_index: int, source: str
) -> list[dict[str, Any]]:
    """One row per enumerated combination (``rows``: the driver's, on ``prep``'s config): its
    accuracy, baseline and cut fraction, ``lost`` = baseline - accuracy, the activation score
    on the pretrain data, whether it is the poster's weight-based split (``weights_index``),
    and the run it came from (``source``, hidden, k)."""
    cfg: Config = prep.config
    A = activation_affinity(prep.pretrained, prep.data.pretrain[0])
    return [
        {
            **{k: r[k] for k in KEPT},
            "lost": r["baseline_accuracy"] - r["accuracy"],
            "activation_score": activation_score(A, r["split"]),
            "weights_split": r["combination"] == weights_index,
            "source": source,
            "hidden": list(cfg.model.hidden),
            "groups": cfg.split.groups,
        }
        for r in rows
    ]


def summary(rows: Sequence[dict]) -> dict[str, Any]:
    """Over the rows of ``predictor_rows``: the accuracy lost (mean, min, max), how many reach
    the baseline (``analysis.reaches_baseline``), Spearman's rho and p-value of each predictor
    against the loss (``rho_<name>``, ``p_<name>``), and the poster split's loss and the
    percentage of combinations losing strictly less (``weights_split_*``, when it is there)."""
    lost = np.array([r["lost"] for r in rows])
    acc, base = (np.array([r[k] for r in rows]) for k in ("accuracy", "baseline_accuracy"))
    s = {k: rows[0][k] for k in ("source", "hidden", "groups")}
    s |= {"n": len(rows), "baseline": rows[0]["baseline_accuracy"], "lost_mean": float(lost.mean())}
    s |= {"lost_min": float(lost.min()), "lost_max": float(lost.max())}
    s["reached_baseline"] = int(reaches_baseline(acc, base).sum())
    for name in PREDICTORS:
        s[f"rho_{name}"], s[f"p_{name}"] = spearman([r[name] for r in rows], lost)
    if w := [r for r in rows if r["weights_split"]]:
        s["weights_split_lost"] = w[0]["lost"]
        s["weights_split_percentile"] = percent_below(lost, w[0]["lost"])
    return s


def table_lines(s: dict[str, Any] | None) -> list[str]:
    """The markdown section of a ``summary``: the space's losses, a row per predictor (rho,
    p-value), where the poster's split ranks; no lines for no summary."""
    if not s:
        return []
    head = ["predictor", "Spearman rho vs lost", "p-value"]
    body = [
        [name, f"{s[f'rho_{key}']:.3f}", f"{s[f'p_{key}']:.3g}"] for key, name in PREDICTORS.items()
    ]
    lines = [
        "## Independence: does the split's structure predict the accuracy lost?",
        "",
        f"{s['n']} combinations (exhaustive, hidden {s['hidden']}, k = {s['groups']}, "
        f"`{s['source']}`); lost = baseline ({s['baseline']:.4f}) - recombined "
        f"accuracy: mean {s['lost_mean']:.4f}, range [{s['lost_min']:.4f}, "
        f"{s['lost_max']:.4f}], {s['reached_baseline']} reach the baseline.",
        "",
        markdown_table(head, body, "lrr"),
    ]
    if "weights_split_lost" in s:
        lines += [
            "",
            f"The poster's weight-based split loses {s['weights_split_lost']:.4f}; "
            f"{s['weights_split_percentile']:.0f}% of all combinations lose less.",
        ]
    return lines + [""]
