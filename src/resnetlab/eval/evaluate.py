"""``evaluate()``: a trained model on one split of a data set, as a result object the CLI only prints."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.dense import DENSE_TASKS
from ..utils.fileio import atomic_write_text
from ..utils.hardware import resolve_amp
from .batches import collect_logits, eval_batches, open_split
from .clinical_plots import save_reliability, save_roc_pr
from .confusion import save_confusion_matrix
from .dense import DENSE_BATCH, evaluate_dense, format_dense
from .loading import TrainedModel, load_trained
from .metrics import format_metrics
from .multilabel import task_metrics, task_report

__all__ = ["EvalResult", "evaluate", "run_precision"]


@dataclass
class EvalResult:
    """What one evaluation measured (``metrics``: see :func:`classification_metrics`) and where it wrote."""

    metrics: dict[str, Any]
    checkpoint: str
    split: str
    data: str
    num_samples: int
    skipped_files: int
    amp: str  # the precision it ran in: "off" (FP32), "bf16" or "fp16"
    channels_last: bool
    files: dict[str, str] = field(default_factory=dict)  # name -> path of what was written

    @property
    def top1(self) -> float:
        return self.metrics["top1"]

    @property
    def top5(self) -> float:
        return self.metrics["top5"]

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics, "checkpoint": self.checkpoint, "split": self.split, "data": self.data,
                "skipped_files": self.skipped_files, "amp": self.amp, "channels_last": self.channels_last,
                "files": dict(self.files)}

    def summary(self) -> str:
        return format_dense(self.metrics) if self.metrics.get("task") in DENSE_TASKS else format_metrics(self.metrics)


def run_precision(trained: TrainedModel, device: torch.device | str = "cpu") -> tuple[str, bool]:
    """(amp, channels_last) the run evaluated with: what its checkpoint recorded (``precision``), else its
    config's values resolved for ``device``."""
    saved, cfg = trained.precision, trained.config
    amp = saved.get("amp") or resolve_amp(str(cfg.get("amp", "off")), device)
    cl = saved.get("channels_last", cfg.get("channels_last"))
    return amp, bool(amp != "off" if cl in (None, "auto") else cl)


def _point(trained: TrainedModel, threshold: float | None) -> dict[str, Any] | None:
    """The operating point to report: ``threshold`` given here, else the checkpoint's, else none (argmax)."""
    stored = trained.operating_point
    if threshold is None:
        return stored
    if trained.task == "multilabel" and 0.0 <= float(threshold) <= 1.0:
        return {"thresholds": [float(threshold)] * len(trained.classes), "metric": "given"}
    if len(trained.classes) != 2:
        raise ValueError(f"threshold={threshold!r} needs a binary model; {trained.path} has {len(trained.classes)} "
                         f"classes")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a probability in [0, 1], got {threshold!r}")
    pos = trained.positive_index
    return {"threshold": float(threshold), "metric": "given", "positive_index": pos,
            "positive_class": trained.classes[pos]}


def _save_point_confusion(clinical: dict[str, Any], classes: list[str], pos: int, out: Path) -> dict[str, Path]:
    """The 2x2 confusion matrix at the operating point, in class order like the argmax one."""
    point, c = clinical["operating_point"], clinical["operating_point"]["confusion"]
    cm = np.zeros((2, 2), dtype=np.int64)
    neg = 1 - pos
    cm[pos, pos], cm[pos, neg], cm[neg, pos], cm[neg, neg] = c["tp"], c["fn"], c["fp"], c["tn"]
    files = {"confusion_point_csv": out / "confusion_matrix_operating_point.csv",
             "confusion_point_png": out / "confusion_matrix_operating_point.png"}
    save_confusion_matrix(cm, classes, files["confusion_point_csv"], files["confusion_point_png"],
                          rule=f"at p({classes[pos]}) >= {point['threshold']:.4g}")
    return files


def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike | None = None, *, split: str = "test",
             batch_size: int = 256, ema: bool = False, limit_batches: int | None = None,
             out: str | os.PathLike | None = None, progress: bool = False, device: str = "cpu",
             threshold: float | None = None, bootstrap: int = 1000, seed: int = 0) -> EvalResult:
    """Evaluate a checkpoint (or run directory) on ``split`` of ``data`` (default: the run's own data).

    Runs in the precision the run evaluated in (its bf16 / channels_last), so the numbers match the
    training log. ``metrics["clinical"]`` holds, for a binary task, every rate with ``bootstrap``
    seeded 95 % intervals at argmax and at the operating point (``threshold``, else the one the
    checkpoint stored); for more classes, balanced accuracy, F1s and per-class sensitivity and
    specificity. With ``out``, writes ``metrics.json``, ``confusion_matrix.csv`` and ``.png``,
    ``reliability.png`` and, for a binary task, ``roc_pr.png`` there.
    """
    trained = load_trained(checkpoint, ema=ema, device=device)
    if trained.task in DENSE_TASKS:  # a detector (COCO box AP) or a segmenter (mIoU)
        return _evaluate_dense(trained, data, split, min(batch_size, DENSE_BATCH), limit_batches, out, device)
    ds = open_split(trained, data, split, progress=progress)
    batches = eval_batches(ds, trained.preprocess, batch_size=batch_size, limit_batches=limit_batches,
                           seed=trained.config.get("seed", 0))
    amp, channels_last = run_precision(trained, device)
    model = trained.model.to(memory_format=torch.channels_last) if channels_last else trained.model
    logits, targets = collect_logits(model, batches.epoch(0), device=device, channels_last=channels_last, amp=amp)
    metrics = task_metrics(logits, targets, trained.classes)
    metrics["clinical"] = task_report(logits, targets, trained.classes, _point(trained, threshold),
                                      positive=trained.positive_index, bootstrap=bootstrap, seed=seed)
    result = EvalResult(metrics, str(trained.path), split, str(getattr(ds, "source", data)), len(targets),
                        len(ds.skipped) + batches.epoch_bad, amp, channels_last)
    if out is not None:
        out = Path(out)
        files = {"metrics": out / "metrics.json"}
        if "confusion_matrix" in metrics:  # one class per image (a multi-label task has a 2x2 per label)
            files.update(confusion_csv=out / "confusion_matrix.csv", confusion_png=out / "confusion_matrix.png",
                         reliability_png=out / "reliability.png")
            save_confusion_matrix(metrics["confusion_matrix"], trained.classes, files["confusion_csv"],
                                  files["confusion_png"], rule="at argmax")
            save_reliability(metrics["calibration"], metrics["ece"], files["reliability_png"])
        clinical = metrics["clinical"]
        if clinical.get("task") == "binary":
            files["roc_pr_png"] = out / "roc_pr.png"
            pos = trained.classes.index(clinical["positive_class"])
            save_roc_pr(logits.double().softmax(1)[:, pos].numpy(), (targets == pos).numpy(), files["roc_pr_png"],
                        positive=clinical["positive_class"], report=clinical,
                        argmax=(logits.argmax(1) == pos).numpy())
            if clinical.get("operating_point"):
                files.update(_save_point_confusion(clinical, trained.classes, pos, out))
        result.files = {k: str(v) for k, v in files.items()}
        atomic_write_text(files["metrics"], json.dumps(result.to_dict(), indent=2))
    return result


def _evaluate_dense(trained: TrainedModel, data: Any, split: str, batch_size: int, limit_batches: int | None,
                    out: str | os.PathLike | None, device: str) -> EvalResult:
    amp, _ = run_precision(trained, device)
    metrics = evaluate_dense(trained, data, split, batch_size=batch_size, limit_batches=limit_batches,
                             device=device, amp=amp)
    result = EvalResult(metrics, str(trained.path), split, metrics["data"], metrics["num_images"],
                        metrics["skipped_files"], amp, False)
    if out is not None:
        result.files = {"metrics": str(Path(out) / "metrics.json")}
        atomic_write_text(result.files["metrics"], json.dumps(result.to_dict(), indent=2))
    return result
