"""Metrics of detection and segmentation: COCO mAP / AP50 / AP75 through pycocotools (the reference the field
reports with), and mean IoU / pixel accuracy from a confusion matrix accumulated over batches."""

from __future__ import annotations

import contextlib
import io
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["coco_map", "SegmentationMeter"]


def coco_map(predictions: Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Tensor]],
             num_classes: int | None = None) -> dict[str, float]:
    """COCO box AP over images: ``predictions`` (boxes xyxy, scores, labels) and ``targets`` (boxes xyxy,
    labels) per image, torchvision's format. Returns map (AP@[.5:.95]), map_50, map_75 and mar_100."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} images")
    labels = sorted({int(v) for t in targets for v in t["labels"].tolist()} |
                    set(range(1, (num_classes or 0))))
    images, gts, dets = [], [], []
    for i, (p, t) in enumerate(zip(predictions, targets)):
        images.append({"id": i, "width": 1, "height": 1})
        for box, label in zip(t["boxes"].tolist(), t["labels"].tolist()):
            x0, y0, x1, y1 = box
            gts.append({"id": len(gts) + 1, "image_id": i, "category_id": int(label), "iscrowd": 0,
                        "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
        for box, score, label in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            x0, y0, x1, y1 = box
            dets.append({"image_id": i, "category_id": int(label), "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "score": float(score)})
    if not gts:
        raise ValueError("no ground-truth boxes: AP is undefined")
    gt = COCO()
    gt.dataset = {"images": images, "annotations": gts, "categories": [{"id": c} for c in labels]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt.createIndex()
        dt = gt.loadRes(dets) if dets else COCO()
        if not dets:
            return {"map": 0.0, "map_50": 0.0, "map_75": 0.0, "mar_100": 0.0}
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = [max(float(v), 0.0) for v in ev.stats]  # -1: no ground truth of that size; reported as 0
    return {"map": s[0], "map_50": s[1], "map_75": s[2], "mar_100": s[8]}


class SegmentationMeter:
    """Confusion matrix of pixel labels over batches; ``ignore_index`` pixels (255, VOC's border) skipped."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, logits_or_pred: Tensor, target: Tensor) -> None:
        pred = logits_or_pred.argmax(1) if logits_or_pred.dim() == target.dim() + 1 else logits_or_pred
        if pred.shape != target.shape:
            raise ValueError(f"predictions of shape {tuple(pred.shape)} for targets of shape {tuple(target.shape)}")
        keep = target != self.ignore_index
        t, p = target[keep].long(), pred[keep].long()
        if t.numel() and (int(t.max()) >= self.num_classes or int(t.min()) < 0):
            raise ValueError(f"target labels must be in 0..{self.num_classes - 1} (or {self.ignore_index}), got "
                             f"{int(t.min())}..{int(t.max())}")
        self.confusion += torch.bincount(t * self.num_classes + p, minlength=self.num_classes ** 2).view(
            self.num_classes, self.num_classes).cpu()

    def compute(self) -> dict[str, float | list[float]]:
        c = self.confusion.double()
        tp, gt, pr = c.diag(), c.sum(1), c.sum(0)
        union = gt + pr - tp
        present = union > 0  # classes neither in the truth nor predicted do not count
        iou = torch.where(present, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        return {"miou": float(iou[present].mean()) if present.any() else 0.0,
                "pixel_acc": float(tp.sum() / c.sum().clamp(min=1)), "iou": [float(v) for v in iou]}
