"""``evaluate()``: a trained model on one split of a data set, as a result object the CLI only prints."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..utils.fileio import atomic_write_text
from ..utils.hardware import resolve_amp
from .batches import collect_logits, eval_batches, open_split
from .confusion import save_confusion_matrix
from .loading import TrainedModel, load_trained
from .metrics import classification_metrics, format_metrics

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
        return format_metrics(self.metrics)


def run_precision(trained: TrainedModel, device: torch.device | str = "cpu") -> tuple[str, bool]:
    """(amp, channels_last) the run evaluated with: what its checkpoint recorded (``precision``), else its
    config's values resolved for ``device``."""
    saved, cfg = trained.precision, trained.config
    amp = saved.get("amp") or resolve_amp(str(cfg.get("amp", "off")), device)
    cl = saved.get("channels_last", cfg.get("channels_last"))
    return amp, bool(amp != "off" if cl in (None, "auto") else cl)


def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike | None = None, *, split: str = "test",
             batch_size: int = 256, ema: bool = False, limit_batches: int | None = None,
             out: str | os.PathLike | None = None, progress: bool = False, device: str = "cpu") -> EvalResult:
    """Evaluate a checkpoint (or run directory) on ``split`` of ``data`` (default: the run's own data).

    Runs in the precision the run evaluated in (its bf16 / channels_last), so the numbers match the
    training log. With ``out``, writes ``metrics.json``, ``confusion_matrix.csv`` and ``.png`` there.
    """
    trained = load_trained(checkpoint, ema=ema, device=device)
    ds = open_split(trained, data, split, progress=progress)
    batches = eval_batches(ds, trained.preprocess, batch_size=batch_size, limit_batches=limit_batches,
                           seed=trained.config.get("seed", 0))
    amp, channels_last = run_precision(trained, device)
    model = trained.model.to(memory_format=torch.channels_last) if channels_last else trained.model
    logits, targets = collect_logits(model, batches.epoch(0), device=device, channels_last=channels_last, amp=amp)
    metrics = classification_metrics(logits, targets, class_names=trained.classes)
    result = EvalResult(metrics, str(trained.path), split, str(getattr(ds, "source", data)), len(targets),
                        len(ds.skipped) + batches.epoch_bad, amp, channels_last)
    if out is not None:
        out = Path(out)
        files = {"metrics": out / "metrics.json", "confusion_csv": out / "confusion_matrix.csv",
                 "confusion_png": out / "confusion_matrix.png"}
        save_confusion_matrix(metrics["confusion_matrix"], trained.classes, files["confusion_csv"],
                              files["confusion_png"])
        result.files = {k: str(v) for k, v in files.items()}
        atomic_write_text(files["metrics"], json.dumps(result.to_dict(), indent=2))
    return result
