"""Metrics a clinician reads, and the decision threshold (operating point) chosen on validation.

Binary: sensitivity, specificity, PPV, NPV, F1, balanced accuracy, ROC AUC and PR AUC (average
precision), each with a seeded percentile-bootstrap 95 % confidence interval (Efron & Tibshirani
1993), and the confusion matrix at the operating point. Multi-class: balanced accuracy, macro and
weighted F1, per-class sensitivity and specificity (one-vs-rest).

Why not scikit-learn at run time: these are a few vectorised numpy lines each, the bootstrap needs
them over a (B, N) matrix of resamples at once, and a model directory should evaluate without an
extra install. The tests check every number against scikit-learn.

Convention: a case is called positive when the positive class's probability is ``>= threshold``;
"argmax" is the class with the highest logit, as today.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import Tensor

from .metrics import binary_auc

__all__ = ["THRESHOLD_METRICS", "OperatingPoint", "parse_threshold_metric", "binary_rates", "average_precision",
           "roc_curve", "pr_curve", "choose_threshold", "binary_report", "multiclass_report", "clinical_report",
           "RATES"]

RATES = ("sensitivity", "specificity", "ppv", "npv", "f1", "balanced_accuracy", "accuracy")
THRESHOLD_METRICS = ("youden", "balanced_accuracy", "f1", "sensitivity@X", "specificity@X")
_AT = re.compile(r"^(sensitivity|specificity)@(0?\.\d*[1-9]\d*|1(\.0*)?)$")  # X in (0, 1]


def parse_threshold_metric(name: str) -> tuple[str, float | None]:
    """``"youden"`` -> ("youden", None); ``"sensitivity@0.95"`` -> ("sensitivity", 0.95)."""
    name = str(name).strip().lower()
    if name in ("youden", "balanced_accuracy", "f1"):
        return name, None
    m = _AT.match(name)
    if m:
        return m.group(1), float(m.group(2))
    raise ValueError(f"threshold_metric must be one of youden, balanced_accuracy, f1, sensitivity@X or "
                     f"specificity@X with X in (0, 1] (e.g. sensitivity@0.95), got {name!r}")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def binary_rates(tp: Any, fp: Any, tn: Any, fn: Any) -> dict[str, np.ndarray]:
    """The :data:`RATES` from confusion counts (scalars or arrays); NaN where a denominator is zero."""
    tp, fp, tn, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, tn, fn))
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    return {"sensitivity": sens, "specificity": spec, "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn), "balanced_accuracy": (sens + spec) / 2,
            "accuracy": _ratio(tp + tn, tp + fp + tn + fn)}


def _as_binary(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have the same length, got {s.shape[0]} and {y.shape[0]}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores must be finite; {int((~np.isfinite(s)).sum())} are not")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0/1 (or bool), got values {sorted(set(np.unique(y).tolist()))[:5]}")
    return s, y.astype(bool)


def _descending(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores, high to low, with the cumulative true and false positives at each (score >= t)."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each run of equal scores
    tps = np.cumsum(y)[last].astype(np.float64)
    return s[last], tps, (last + 1) - tps


def roc_curve(scores: Any, labels: Any) -> dict[str, list[float]]:
    """False- and true-positive rates at every distinct score (``sklearn.metrics.roc_curve`` without
    dropping collinear points), starting at (0, 0) for a threshold of +inf."""
    s, y = _as_binary(scores, labels)
    thr, tps, fps = _descending(s, y)
    p, n = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return {"fpr": [0.0, *(fps / n).tolist()], "tpr": [0.0, *(tps / p).tolist()],
            "thresholds": [math.inf, *thr.tolist()]}


def pr_curve(scores: Any, labels: Any) -> dict[str, list[float]]:
    """Precision and recall at every distinct score, highest threshold first."""
    s, y = _as_binary(scores, labels)
    thr, tps, fps = _descending(s, y)
    return {"precision": (tps / (tps + fps)).tolist(), "recall": (tps / max(int(y.sum()), 1)).tolist(),
            "thresholds": thr.tolist()}


def average_precision(scores: Any, labels: Any) -> float | None:
    """PR AUC as average precision, sum_n (R_n - R_{n-1}) P_n (``sklearn.metrics.average_precision_score``,
    no interpolation); None without positives."""
    s, y = _as_binary(scores, labels)
    if not y.any():
        return None
    _, tps, fps = _descending(s, y)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * tps / (tps + fps)))


@dataclass(frozen=True)
class OperatingPoint:
    """A decision threshold on the positive class's probability, and how it was chosen."""

    threshold: float
    metric: str  # what it maximised ("youden", "f1", "sensitivity@0.95", ...) or "fixed"
    value: float | None  # that metric on the data it was chosen on
    sensitivity: float | None
    specificity: float | None
    chosen_on: str  # e.g. "val (5000 images)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OperatingPoint":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


def choose_threshold(scores: Any, labels: Any, metric: str = "youden", *, chosen_on: str = "") -> OperatingPoint:
    """The threshold on ``scores`` (probabilities of the positive class) that maximises ``metric``.

    youden: sensitivity + specificity - 1 (Youden 1950; the same threshold as balanced accuracy); f1;
    ``sensitivity@X``: the highest specificity with sensitivity >= X (``specificity@X`` likewise; among
    equals, the higher constrained rate). Candidates are every distinct score and "above them all" (no
    case positive). The threshold lies halfway between the chosen score and the next lower one, so the
    decisions on the data it was chosen on are exactly those counted; ties go to the threshold nearest 0.5.
    """
    kind, target = parse_threshold_metric(metric)
    s, y = _as_binary(scores, labels)
    p, n = int(y.sum()), int((~y).sum())
    if p == 0 or n == 0:
        raise ValueError(f"choosing a threshold needs both classes in {chosen_on or 'the data'}, got {p} positive "
                         f"and {n} negative cases")
    thr, tps, fps = _descending(s, y)
    if thr[0] < 1.0:  # "above every score" (nothing positive, specificity 1) is a candidate too: its cut is
        thr, tps, fps = np.r_[1.0, thr], np.r_[0.0, tps], np.r_[0.0, fps]  # halfway from the top score to 1
    rates = binary_rates(tps, fps, n - fps, p - tps)
    if kind in ("youden", "balanced_accuracy"):
        objective = rates["sensitivity"] + rates["specificity"] - (1 if kind == "youden" else 0)
        objective = objective if kind == "youden" else objective / 2
    elif kind == "f1":
        objective = rates["f1"]
    else:
        other = "specificity" if kind == "sensitivity" else "sensitivity"
        objective = np.where(rates[kind] >= target - 1e-12, rates[other], -np.inf)
    lower = np.r_[thr[1:], thr[-1] - 1e-6]  # the next lower distinct score (below the lowest: a hair under)
    cut = np.clip((thr + lower) / 2, 0.0, 1.0)
    if not np.isfinite(objective).any():
        raise ValueError(f"threshold_metric {metric!r} cannot be met on {chosen_on or 'the data'} ({p} positive, "
                         f"{n} negative cases)")
    best = np.flatnonzero(objective >= np.nanmax(objective) - 1e-12)
    if kind in ("sensitivity", "specificity"):  # equal objectives: the higher constrained rate first
        best = best[rates[kind][best] >= np.nanmax(rates[kind][best]) - 1e-12]
    i = int(best[np.argmin(np.abs(cut[best] - 0.5))])
    value = float(objective[i]) if np.isfinite(objective[i]) else None
    return OperatingPoint(float(cut[i]), str(metric), value, float(rates["sensitivity"][i]),
                          float(rates["specificity"][i]), chosen_on)


def _counts(pred: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Confusion counts along the last axis (pred and y bool, same shape)."""
    return {"tp": (pred & y).sum(-1), "fp": (pred & ~y).sum(-1), "tn": (~pred & ~y).sum(-1),
            "fn": (~pred & y).sum(-1)}


def _clean(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def binary_report(scores: Any, labels: Any, *, threshold: float | None = None, pred: Any = None,
                  bootstrap: int = 1000, seed: int = 0, level: float = 0.95, rule: str = "argmax") -> dict[str, Any]:
    """Every binary rate at one decision rule, ROC AUC and PR AUC, each with a bootstrap CI.

    The decision is ``scores >= threshold``, or ``pred`` when given (``rule`` names it: "argmax", "p > 0.5").
    Intervals: the (1-level)/2 and (1+level)/2 percentiles over ``bootstrap`` resamples of the cases, seeded with
    ``seed``; resamples where a rate is undefined (no positives, say) are left out of its interval.
    ``bootstrap=0``: no intervals.
    """
    s, y = _as_binary(scores, labels)
    if (threshold is None) == (pred is None):
        raise ValueError("give exactly one of threshold (a probability in [0, 1]) and pred (the decisions)")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a probability in [0, 1], got {threshold!r}")
    decided = s >= float(threshold) if threshold is not None else np.asarray(pred).reshape(-1).astype(bool)
    if decided.shape != y.shape:
        raise ValueError(f"pred has {decided.shape[0]} decisions for {y.shape[0]} labels")
    counts = {k: int(v) for k, v in _counts(decided, y).items()}
    point = {k: _clean(v) for k, v in binary_rates(**counts).items()}
    point["roc_auc"] = binary_auc(s, y)
    point["pr_auc"] = average_precision(s, y)
    out: dict[str, Any] = {
        "rule": rule if threshold is None else f"p >= {float(threshold):.4g}",
        "threshold": None if threshold is None else float(threshold),
        "num_samples": int(len(y)), "positives": int(y.sum()), "prevalence": float(y.mean()) if len(y) else None,
        "confusion": counts, **point, "ci_level": level, "bootstrap": int(bootstrap), "seed": int(seed),
    }
    if bootstrap:
        out["ci"] = _bootstrap_ci(s, y, decided, int(bootstrap), seed, level)
    return out


def _bootstrap_ci(s: np.ndarray, y: np.ndarray, decided: np.ndarray, b: int, seed: int,
                  level: float) -> dict[str, list[float | None]]:
    """Percentile intervals of every rate and of both AUCs over ``b`` seeded resamples of the cases."""
    if b < 0:
        raise ValueError(f"bootstrap must be >= 0 resamples, got {b!r}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(b, len(y)))
    rates = binary_rates(**_counts(decided[idx], y[idx]))
    aucs = np.full((2, b), np.nan)
    for r in range(b):  # rank statistics: one sort per resample
        yr = y[idx[r]]
        if yr.any() and not yr.all():
            aucs[0, r] = binary_auc(s[idx[r]], yr)
            aucs[1, r] = average_precision(s[idx[r]], yr)
    rates.update(roc_auc=aucs[0], pr_auc=aucs[1])
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for name, values in rates.items():
        v = values[np.isfinite(values)]
        out[name] = [float(np.percentile(v, lo)), float(np.percentile(v, hi))] if len(v) else [None, None]
    return out


def multiclass_report(pred: Any, targets: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Balanced accuracy, macro / weighted F1 and one-vs-rest sensitivity, specificity, PPV and F1 per class.

    Balanced accuracy is the mean recall over the classes present in ``targets``
    (``sklearn.metrics.balanced_accuracy_score``); macro F1 averages over every class, weighted F1
    weights each by its support (``f1_score(average=...)``, a class never predicted nor present: F1 0).
    """
    pred = np.asarray(pred, dtype=np.int64).reshape(-1)
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    c = len(class_names)
    onehot_p, onehot_t = pred[None, :] == np.arange(c)[:, None], t[None, :] == np.arange(c)[:, None]
    counts = _counts(onehot_p, onehot_t)
    rates = binary_rates(**counts)
    support = onehot_t.sum(1)
    f1 = np.nan_to_num(rates["f1"], nan=0.0)
    present = support > 0
    per_class = {name: {"sensitivity": _clean(rates["sensitivity"][i]), "specificity": _clean(rates["specificity"][i]),
                        "ppv": _clean(rates["ppv"][i]), "f1": float(f1[i]), "support": int(support[i])}
                 for i, name in enumerate(class_names)}
    return {
        "balanced_accuracy": float(np.mean(rates["sensitivity"][present])) if present.any() else None,
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * support).sum() / support.sum()) if support.sum() else None,
        "per_class": per_class,
    }


def clinical_report(logits: Tensor, targets: Tensor, classes: Sequence[str], point: dict | None, *,
                    positive: int = 1, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Binary: every clinical rate with bootstrap CIs at argmax and, when the run has one, at its operating
    point. Multi-class: balanced accuracy, macro / weighted F1, per-class sensitivity and specificity."""
    logits, targets = logits.detach().cpu(), targets.detach().cpu()
    pred = logits.argmax(1)
    if len(classes) != 2:
        return {"task": "multiclass", **multiclass_report(pred.numpy(), targets.numpy(), classes)}
    pos = point["positive_index"] if point else positive
    scores = logits.double().softmax(1)[:, pos].numpy()
    labels = (targets == pos).numpy()
    out: dict[str, Any] = {"task": "binary", "positive_class": classes[pos],
                           "argmax": binary_report(scores, labels, pred=(pred == pos).numpy(), bootstrap=bootstrap,
                                                   seed=seed)}
    if point:
        out["operating_point"] = binary_report(scores, labels, threshold=point["threshold"], bootstrap=bootstrap,
                                               seed=seed)
    return out
