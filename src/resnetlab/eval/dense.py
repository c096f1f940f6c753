"""Evaluating detectors and segmenters: their outputs over a split's batches, then COCO box AP (detection) or
mean IoU and pixel accuracy (segmentation) — the numbers the training log, ``resnetlab eval`` and the benchmarks
all report, from this one place."""

from __future__ import annotations

import os
from typing import Any, Iterable

import torch
import torch.nn as nn

from ..data.dense import DenseBatches, open_dense_split
from .dense_metrics import SegmentationMeter, coco_map

__all__ = ["dense_metrics", "format_dense", "evaluate_dense", "DENSE_SCORES", "DENSE_BATCH"]

DENSE_BATCH = 8  # images per evaluation batch at most: a detector's activations at 800 px are large
DENSE_SCORES = {"detection": ("map", "map_50", "map_75", "mar_100"), "segmentation": ("miou", "pixel_acc")}


@torch.no_grad()
def dense_metrics(model: nn.Module, batches: Iterable, kind: str, num_classes: int, *,
                  device: torch.device | str = "cpu", amp: str = "off") -> dict[str, Any]:
    """``model`` (eval mode) over ``batches`` of :class:`DenseBatches`; COCO AP or mIoU, and the image count."""
    device = torch.device(device)
    model.eval()
    on = amp not in ("none", "off")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    preds: list[dict] = []
    truths: list[dict] = []
    meter = SegmentationMeter(num_classes)
    n = 0
    for x, y, *_ in batches:
        with torch.autocast(device.type, dtype=dtype, enabled=on):
            if kind == "detection":
                out = model([img.to(device) for img in x])
                preds += [{k: v.float().cpu() for k, v in o.items()} for o in out]
                truths += [{k: v.cpu() for k, v in t.items()} for t in y]
            else:
                meter.update(model(x.to(device))["out"].float().cpu(), y)
        n += len(x)
    if not n:
        raise ValueError("no evaluation batches: the split is empty")
    if kind == "detection":
        return {**coco_map(preds, truths, num_classes), "num_images": n}
    return {**meter.compute(), "num_images": n}


def format_dense(metrics: dict[str, Any]) -> str:
    """One line for a terminal or a log."""
    if "map" in metrics:
        return (f"box AP {metrics['map']:.4f}  AP50 {metrics['map_50']:.4f}  AP75 {metrics['map_75']:.4f}  "
                f"AR100 {metrics['mar_100']:.4f}  ({metrics['num_images']} images)")
    ious = ", ".join(f"{v:.3f}" for v in metrics["iou"])
    return (f"mIoU {metrics['miou']:.4f}  pixel accuracy {metrics['pixel_acc']:.4f}  per-class IoU [{ious}]  "
            f"({metrics['num_images']} images)")


def evaluate_dense(trained: Any, data: str | os.PathLike | None, split: str, *, batch_size: int = 4,
                   limit_batches: int | None = None, device: str = "cpu", amp: str = "off") -> dict[str, Any]:
    """A trained detector or segmenter (a :class:`TrainedModel`) on ``split`` of ``data`` (default: the run's)."""
    cfg = trained.config
    root = data or cfg.get("data")
    if not root:
        raise ValueError(f"{trained.path}: the run recorded no data folder; pass data=")
    ds = open_dense_split(root, split, trained.task, masks=cfg.get("masks", "auto"), classes=trained.classes)
    pre = trained.preprocess
    batches = DenseBatches(ds, batch_size, kind=trained.task, train=False, seed=cfg.get("seed", 0),
                           limit=limit_batches, mean=pre.mean, std=pre.std)
    metrics = dense_metrics(trained.model.to(device), batches.epoch(0), trained.task, len(trained.classes),
                            device=device, amp=amp)
    metrics.update(task=trained.task, classes=list(trained.classes), split=split, data=str(root),
                   checkpoint=str(trained.path), skipped_files=batches.epoch_bad, amp=amp)
    return metrics
