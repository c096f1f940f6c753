"""Multi-label tasks (several independent yes/no findings per image, as MedMNIST's ChestMNIST with its 14
thoracic findings): sigmoid per label, per-label AUC and thresholds, and accuracy as MedMNIST defines it.

MedMNIST v2 (Yang et al. 2023, and its ``medmnist.Evaluator``) scores a multi-label task by the mean of
the per-label ROC AUCs and by ACC, the mean over labels of the per-label accuracy of ``p > 0.5``; both
are reported here under those definitions, so numbers compare with the paper's table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .clinical import binary_report, choose_threshold, clinical_report
from .metrics import binary_auc, classification_metrics

__all__ = ["check_multilabel", "multilabel_metrics", "multilabel_thresholds", "multilabel_report", "task_metrics",
           "task_report"]


def check_multilabel(logits: Tensor, targets: Tensor) -> None:
    if logits.dim() != 2 or targets.shape != logits.shape:
        raise ValueError(f"multi-label logits and targets must both be (N, L), got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("no samples: logits has shape (0, L)")
    if not torch.isfinite(logits).all():
        raise ValueError(f"logits must be finite; {int((~torch.isfinite(logits)).sum())} entries are not")
    if not ((targets == 0) | (targets == 1)).all():
        raise ValueError("multi-label targets must be 0/1 per label")


def multilabel_metrics(logits: Tensor, targets: Tensor, *, class_names: Sequence[str] | None = None) -> dict:
    """The fields :func:`resnetlab.eval.classification_metrics` gives, for a multi-label task.

    ``top1`` is MedMNIST's ACC (mean per-label accuracy at p > 0.5), ``auc`` the mean per-label AUC (over
    labels with both positives and negatives), ``nll`` the mean binary cross-entropy, ``balanced_accuracy``
    the mean per-label balanced accuracy at p > 0.5; ``top5`` does not apply (None).
    """
    check_multilabel(logits, targets)
    logits, y = logits.detach().double().cpu(), targets.detach().double().cpu()
    n, c = logits.shape
    names = [str(i) for i in range(c)] if class_names is None else list(class_names)
    probs = logits.sigmoid()
    pred = probs > 0.5
    acc = (pred == y.bool()).double().mean(0)
    aucs = [binary_auc(probs[:, j].numpy(), y[:, j].numpy()) for j in range(c)]
    defined = [a for a in aucs if a is not None]
    pos, neg = y.bool(), ~y.bool()
    sens = (pred & pos).sum(0) / pos.sum(0).clamp(min=1)
    spec = (~pred & neg).sum(0) / neg.sum(0).clamp(min=1)
    both = (pos.sum(0) > 0) & (neg.sum(0) > 0)
    return {
        "task": "multilabel", "num_samples": n, "num_classes": c, "class_names": names,
        "top1": float(acc.mean()), "top5": None, "top5_k": None,
        "nll": float(F.binary_cross_entropy_with_logits(logits, y)),
        "auc": float(np.mean(defined)) if defined else None,
        "balanced_accuracy": float(((sens + spec) / 2)[both].mean()) if both.any() else None,
        "auc_per_class": dict(zip(names, aucs)),
        "per_class_accuracy": dict(zip(names, acc.tolist())),
        "per_class_support": dict(zip(names, pos.sum(0).long().tolist())),
        "ece": None,
    }


def multilabel_thresholds(logits: Tensor, targets: Tensor, class_names: Sequence[str], metric: str,
                          chosen_on: str) -> dict[str, Any]:
    """One threshold per label, each chosen on its own scores as :func:`choose_threshold` does (0.5 for a
    label that lacks positives or negatives on this data, said so in ``unchosen``)."""
    probs, y = logits.detach().double().sigmoid().numpy(), targets.detach().numpy().astype(bool)
    thresholds, unchosen = [], []
    for j, name in enumerate(class_names):
        if y[:, j].all() or not y[:, j].any():
            thresholds.append(0.5)
            unchosen.append(name)
        else:
            thresholds.append(choose_threshold(probs[:, j], y[:, j], metric).threshold)
    return {"thresholds": thresholds, "metric": str(metric), "chosen_on": chosen_on, "unchosen": unchosen,
            "classes": list(class_names)}


def multilabel_report(logits: Tensor, targets: Tensor, class_names: Sequence[str], point: dict | None, *,
                      bootstrap: int = 0, seed: int = 0) -> dict[str, Any]:
    """Per label: sensitivity, specificity, PPV, NPV, F1, AUCs at p > 0.5 (as MedMNIST) and, with ``point``,
    at the label's own threshold; ``bootstrap`` intervals when asked (14 labels x 2 rules: not free)."""
    probs, y = logits.detach().double().sigmoid().numpy(), targets.detach().numpy().astype(bool)
    per_label = {}
    for j, name in enumerate(class_names):
        entry = {"default": binary_report(probs[:, j], y[:, j], pred=probs[:, j] > 0.5, bootstrap=bootstrap,
                                          seed=seed, rule="p > 0.5")}
        if point:
            entry["operating_point"] = binary_report(probs[:, j], y[:, j], threshold=point["thresholds"][j],
                                                     bootstrap=bootstrap, seed=seed)
        per_label[name] = entry
    mean = {}
    for rule in ("default", "operating_point") if point else ("default",):
        values = [e[rule]["balanced_accuracy"] for e in per_label.values() if e[rule]["balanced_accuracy"] is not None]
        mean[rule] = float(np.mean(values)) if values else None  # None, not NaN: metrics.json stays valid JSON
    return {"task": "multilabel", "per_label": per_label, "mean_balanced_accuracy": mean}


def task_metrics(logits: Tensor, targets: Tensor, class_names: Sequence[str] | None = None) -> dict:
    """:func:`classification_metrics` for class-index targets (N,), :func:`multilabel_metrics` for (N, L)."""
    if targets.dim() == 2:
        return multilabel_metrics(logits, targets, class_names=class_names)
    return classification_metrics(logits, targets, class_names=class_names)


def task_report(logits: Tensor, targets: Tensor, class_names: Sequence[str], point: dict | None, *,
                positive: int = 1, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The clinical report of either task. Multi-label reports carry no intervals: a bootstrap per label and
    rule (28 on ChestMNIST's 22k test images) costs minutes; ask :func:`multilabel_report` for them."""
    if targets.dim() == 2:
        return multilabel_report(logits, targets, class_names, point, bootstrap=0, seed=seed)
    return clinical_report(logits, targets, class_names, point, positive=positive, bootstrap=bootstrap, seed=seed)
