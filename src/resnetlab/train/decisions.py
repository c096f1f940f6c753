"""What a run decides beyond the weights: its task, the loss for its class balance, which epoch is best, and
the operating point (decision thresholds) chosen on validation and reported once on test.

Tasks: "multiclass" (one class per image; binary is its two-class case) and "multilabel" (several 0/1
labels per image). Every check that needs the data runs here, before the first step, so a wrong
setting fails in seconds with the key and the data named, not after an hour of training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..eval.clinical import binary_report, choose_threshold
from ..eval.multilabel import multilabel_thresholds, task_metrics, task_report
from .config import TrainConfig, parse_threshold
from .objective import Objective, class_weights

__all__ = ["task_of", "class_counts", "check_task", "positive_index", "build_objective", "selection_score",
           "operating_point", "describe_point", "test_row"]


def task_of(ds: Any) -> str:
    return "multilabel" if getattr(ds, "multilabel", False) else "multiclass"


def class_counts(ds: Any, num_classes: int) -> np.ndarray:
    """Images per class (multi-label: positive images per label) of an ArrayDataset or FolderDataset."""
    targets = np.asarray(ds.targets, dtype=np.int64)
    return targets.sum(0) if targets.ndim == 2 else np.bincount(targets, minlength=num_classes)


def positive_index(cfg: TrainConfig, classes: Sequence[str]) -> int:
    """The positive class of a binary task: ``positive_class`` by name, else the second class."""
    if cfg.positive_class is None:
        return 1
    if cfg.positive_class not in classes:
        raise ValueError(f"positive_class {cfg.positive_class!r} is not a class of the data; classes are "
                         f"{list(classes)}")
    return list(classes).index(cfg.positive_class)


def _check_multilabel(cfg: TrainConfig) -> None:
    unsupported = {"positive_class": cfg.positive_class is not None, "sampler": cfg.sampler != "shuffle",
                   "focal_gamma": cfg.focal_gamma > 0, "logit_adjust": cfg.logit_adjust > 0,
                   "mixup": cfg.mixup > 0, "cutmix": cfg.cutmix > 0}
    bad = [k for k, used in unsupported.items() if used]
    if bad:
        raise ValueError(f"the data is multi-label (several 0/1 labels per image); {', '.join(bad)} "
                         f"{'is' if len(bad) == 1 else 'are'} for single-label tasks: leave "
                         f"{'it' if len(bad) == 1 else 'them'} unset (class_weights auto gives each label a "
                         f"positive weight; threshold auto chooses one threshold per label)")


def _check_declared(declared: str, task: str, classes: Sequence[str], source: str) -> None:
    """The task a user named (``--task``) against the one the labels show."""
    if declared == "auto":
        return
    c = len(classes)
    found = "multilabel" if task == "multilabel" else ("binary" if c == 2 else "multiclass")
    fits = {"binary": found == "binary", "multiclass": found in ("binary", "multiclass"),
            "ordinal": found in ("binary", "multiclass"), "multilabel": found == "multilabel"}[declared]
    if not fits:
        shape = (f"{c} 0/1 label columns per image" if found == "multilabel"
                 else f"one label per image, {c} classes")
        raise ValueError(f"task={declared!r}, but {source} has {shape} ({found}); give task='auto' or the data of "
                         f"a {declared} task" + (" (a binary task has 2 classes)" if declared == "binary" else ""))


def check_task(cfg: TrainConfig, classes: Sequence[str], splits: dict[str, tuple[str, np.ndarray]],
               task: str = "multiclass") -> None:
    """Refuse, before training, settings the data cannot honour. ``splits``: name -> (source, class counts)."""
    c = len(classes)
    _check_declared(cfg.task, task, classes, splits["train"][0] if "train" in splits else "the data")
    what = "positive images of label(s)" if task == "multilabel" else "images of class(es)"
    for name in ("train", "val"):
        if name not in splits:
            continue
        source, counts = splits[name]
        empty = [classes[i] for i in np.flatnonzero(counts == 0)]
        if empty:
            raise ValueError(f"{source}: the {name} split has no {what} {', '.join(empty)}; every "
                             f"{'label' if task == 'multilabel' else 'class'} needs "
                             f"{'training' if name == 'train' else 'validation'} examples")
    if task == "multilabel":
        return _check_multilabel(cfg)
    binary_only = {"threshold": parse_threshold(cfg.threshold) not in ("none", "auto-binary"),
                   "positive_class": cfg.positive_class is not None}
    for key, used in binary_only.items():
        if used and c != 2:
            raise ValueError(f"{key}={getattr(cfg, key)!r} needs a binary task (2 classes), but the data has {c} "
                             f"classes; multi-class tasks decide by argmax (see logit_adjust for prior correction)")
    if c == 2:
        positive_index(cfg, classes)


def build_objective(cfg: TrainConfig, train_counts: np.ndarray, classes: Sequence[str], device: torch.device,
                    *, task: str = "multiclass", num_train: int | None = None) -> Objective:
    multilabel = task == "multilabel"
    weight = class_weights(cfg.class_weights, train_counts, classes, multilabel_total=num_train if multilabel else None)
    priors = train_counts / max(train_counts.sum(), 1)
    return Objective(weight=weight, focal_gamma=cfg.focal_gamma, logit_adjust=cfg.logit_adjust, priors=priors,
                     multilabel=multilabel).to(device)


def selection_score(row: dict[str, Any], metric: str) -> float:
    """The validation score that ranks epochs for best.pt (an undefined AUC ranks last)."""
    value = row.get(f"val_{metric}")
    return -math.inf if value is None else float(value)


def threshold_setting(cfg: TrainConfig, classes: Sequence[str], task: str = "multiclass") -> str | float:
    """``cfg.threshold`` resolved for this task: ``auto-binary`` is ``auto`` on a two-class task, else ``none``."""
    setting = parse_threshold(cfg.threshold)
    if setting == "auto-binary":
        setting = "auto" if task == "multiclass" and len(classes) == 2 else "none"
    return setting


def operating_point(cfg: TrainConfig, logits: torch.Tensor, targets: torch.Tensor, classes: Sequence[str],
                    chosen_on: str, task: str = "multiclass") -> dict[str, Any] | None:
    """The decision rule the run stores: thresholds chosen on validation (``threshold: auto``) or the one
    given; None for the default rule (argmax; p > 0.5 per label for multi-label). ``auto-binary`` is
    ``auto`` on a two-class task and the default rule on any other."""
    setting = threshold_setting(cfg, classes, task)
    if setting == "none":
        return None
    if task == "multilabel":
        if setting == "auto":
            return multilabel_thresholds(logits, targets, classes, cfg.threshold_metric, chosen_on)
        return {"thresholds": [float(setting)] * len(classes), "metric": "fixed", "chosen_on": chosen_on,
                "unchosen": [], "classes": list(classes)}
    pos = positive_index(cfg, classes)
    scores = logits.double().softmax(1)[:, pos].numpy()
    labels = (targets == pos).numpy()
    if setting == "auto":
        point = choose_threshold(scores, labels, cfg.threshold_metric, chosen_on=chosen_on).to_dict()
    else:
        report = binary_report(scores, labels, threshold=float(setting), bootstrap=0)
        point = {"threshold": float(setting), "metric": "fixed", "value": None,
                 "sensitivity": report["sensitivity"], "specificity": report["specificity"], "chosen_on": chosen_on}
    return {**point, "positive_class": classes[pos], "positive_index": pos}


def describe_point(point: dict[str, Any], classes: Sequence[str]) -> str:
    """One log line for a stored operating point."""
    where = f"({point['metric']} on {point['chosen_on']})"
    if "threshold" in point:
        return (f"{point['positive_class']} when p >= {point['threshold']:.4f} {where}: sensitivity "
                f"{point['sensitivity']:.3f}, specificity {point['specificity']:.3f}")
    return f"per-label thresholds {where}: " + ", ".join(f"{c} {t:.3f}" for c, t in zip(classes, point["thresholds"]))


def test_row(cfg: TrainConfig, logits: torch.Tensor, targets: torch.Tensor, classes: Sequence[str],
             point: dict[str, Any] | None) -> dict[str, Any]:
    """The test split's numbers for the summary: top-1/5, AUC, balanced accuracy, and the clinical report
    (1000 seeded bootstrap resamples for a binary task)."""
    m = task_metrics(logits, targets, classes)
    report = task_report(logits, targets, classes, point, bootstrap=1000, seed=cfg.seed,
                         positive=positive_index(cfg, classes) if len(classes) == 2 else 1)
    return {"test_loss": m["nll"], "test_top1": m["top1"], "test_top5": m["top5"], "test_auc": m["auc"],
            "test_balanced_accuracy": m["balanced_accuracy"], "test_report": report}
