"""The pictures of a clinical report: ROC and precision-recall curves with the operating points marked,
and a reliability diagram (Guo et al. 2017) from the calibration table ``classification_metrics`` gives."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..utils.plot import save_figure
from .clinical import binary_rates, pr_curve, roc_curve

__all__ = ["save_roc_pr", "save_reliability"]


def _rates_at(scores: np.ndarray, labels: np.ndarray, decided: np.ndarray) -> tuple[float, float, float]:
    """(false-positive rate, sensitivity, precision) of one decision rule, for marking it on the curves."""
    y = labels.astype(bool)
    r = binary_rates((decided & y).sum(), (decided & ~y).sum(), (~decided & ~y).sum(), (~decided & y).sum())
    return 1 - float(r["specificity"]), float(r["sensitivity"]), float(r["ppv"])


def save_roc_pr(scores: Sequence[float], labels: Sequence[int], path: str | os.PathLike, *, positive: str,
                report: dict[str, Any], argmax: Sequence[bool]) -> None:
    """ROC (left) and precision-recall (right) of the positive class's probability, the argmax decision and
    the stored operating point marked on both; AUCs in the legends."""
    import matplotlib.pyplot as plt  # after utils.plot, which selects the Agg backend

    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    roc, pr = roc_curve(s, y), pr_curve(s, y)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4))
    auc, ap = report["argmax"]["roc_auc"], report["argmax"]["pr_auc"]
    left.plot(roc["fpr"], roc["tpr"], color="tab:blue", label=f"ROC, AUC {auc:.3f}" if auc is not None else "ROC")
    left.plot([0, 1], [0, 1], color="tab:gray", lw=0.8, ls=":", label="chance")
    right.step([0.0, *pr["recall"]], [1.0, *pr["precision"]], where="post", color="tab:blue",
               label=f"PR, average precision {ap:.3f}" if ap is not None else "PR")
    right.axhline(y.mean(), color="tab:gray", lw=0.8, ls=":", label=f"prevalence {y.mean():.3f}")
    marks = [("argmax", np.asarray(argmax).astype(bool), "tab:red", "o")]
    if report.get("operating_point"):
        t = report["operating_point"]["threshold"]
        marks.append((f"operating point p >= {t:.3g}", s >= t, "tab:green", "D"))
    for name, decided, colour, marker in marks:
        fpr, tpr, ppv = _rates_at(s, y, decided)
        left.plot(fpr, tpr, marker, color=colour, ms=8, label=f"{name}: sens {tpr:.2f}, spec {1 - fpr:.2f}")
        if np.isfinite(ppv):
            right.plot(tpr, ppv, marker, color=colour, ms=8, label=f"{name}: recall {tpr:.2f}, precision {ppv:.2f}")
    for ax, (xl, yl) in ((left, ("1 - specificity", "sensitivity")), (right, ("recall (sensitivity)", "precision"))):
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if ax is left else "lower left")
    fig.suptitle(f"positive class: {positive} ({int(y.sum())} of {len(y)} cases)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def save_reliability(calibration: Sequence[dict[str, Any]], ece: float, path: str | os.PathLike) -> None:
    """Accuracy against confidence per bin (bars) with the gap to perfect calibration shaded, and below it
    how many samples each bin holds, as in Guo et al. 2017, Fig. 1."""
    import matplotlib.pyplot as plt

    bins = [b for b in calibration if b["count"]]
    width = calibration[0]["upper"] - calibration[0]["lower"]
    lows = [b["lower"] for b in bins]
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.2, 5.6), sharex=True, height_ratios=(3, 1))
    ax.bar(lows, [b["accuracy"] for b in bins], width=width, align="edge", color="tab:blue", edgecolor="white",
           label="accuracy in the bin")
    gap_bottom = [min(b["accuracy"], b["confidence"]) for b in bins]
    gap = [abs(b["confidence"] - b["accuracy"]) for b in bins]
    ax.bar(lows, gap, bottom=gap_bottom, width=width, align="edge", color="tab:red", alpha=0.25,
           edgecolor="tab:red", hatch="//", lw=0.5, label="gap to the bin's mean confidence")
    ax.plot([0, 1], [0, 1], color="tab:gray", ls="--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram: expected calibration error {ece:.3f}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    hist.bar(lows, [b["count"] for b in bins], width=width, align="edge", color="tab:gray", edgecolor="white")
    hist.set_ylabel("samples")
    hist.set_xlabel("confidence (the top class's probability)")
    hist.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    save_figure(fig, path)
