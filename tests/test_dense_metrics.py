"""COCO mAP through pycocotools, cross-checked against torchmetrics; mean IoU against scikit-learn."""

import numpy as np
import pytest
import torch

from extras_helpers import need
from resnetlab.eval.dense_metrics import SegmentationMeter, coco_map

need("pycocotools", "detection")


def _scene(rng, n_images=6, classes=3):
    preds, targets = [], []
    for _ in range(n_images):
        k = int(rng.integers(1, 5))
        xy = rng.uniform(0, 80, (k, 2))
        wh = rng.uniform(10, 40, (k, 2))
        boxes = torch.tensor(np.hstack([xy, xy + wh]), dtype=torch.float32)
        labels = torch.tensor(rng.integers(1, classes + 1, k))
        targets.append({"boxes": boxes, "labels": labels})
        jitter = torch.tensor(rng.normal(0, 4, (k, 4)), dtype=torch.float32)
        extra = torch.tensor(np.hstack([xy[:1] + 30, xy[:1] + 50]), dtype=torch.float32)  # a false positive
        preds.append({"boxes": torch.cat([boxes + jitter, extra]),
                      "scores": torch.tensor(rng.uniform(0.3, 1.0, k + 1), dtype=torch.float32),
                      "labels": torch.cat([labels, torch.tensor([1])])})
    return preds, targets


def test_coco_map_agrees_with_torchmetrics():
    need("torchmetrics", "detection")
    from torchmetrics.detection import MeanAveragePrecision

    preds, targets = _scene(np.random.default_rng(0))
    ours = coco_map(preds, targets)
    tm = MeanAveragePrecision(iou_type="bbox", backend="pycocotools")
    tm.update(preds, targets)
    theirs = {k: float(v) for k, v in tm.compute().items() if k in ("map", "map_50", "map_75", "mar_100")}
    assert 0.2 < ours["map"] < 0.95  # a scene that is neither trivial nor hopeless
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_perfect_detections_score_one_and_none_score_zero():
    _, targets = _scene(np.random.default_rng(1))
    perfect = [{"boxes": t["boxes"], "scores": torch.ones(len(t["labels"])), "labels": t["labels"]} for t in targets]
    assert coco_map(perfect, targets)["map"] == pytest.approx(1.0)
    empty = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
             for _ in targets]
    assert coco_map(empty, targets)["map_50"] == 0.0
    with pytest.raises(ValueError, match="2 predictions for 6 images"):
        coco_map(perfect[:2], targets)


def test_mean_iou_and_pixel_accuracy_match_scikit_learn():
    from sklearn.metrics import jaccard_score

    rng = np.random.default_rng(0)
    target = torch.tensor(rng.integers(0, 4, (3, 20, 24)))
    target[0, :2] = 255  # ignored pixels
    logits = torch.tensor(rng.normal(size=(3, 4, 20, 24)), dtype=torch.float32)
    logits.scatter_add_(1, target.clamp(max=3).unsqueeze(1), torch.full((3, 1, 20, 24), 1.5))  # mostly right
    meter = SegmentationMeter(4)
    meter.update(logits[:2], target[:2])
    meter.update(logits[2:], target[2:])
    got = meter.compute()
    keep = (target != 255).flatten()
    t, p = target.flatten()[keep].numpy(), logits.argmax(1).flatten()[keep].numpy()
    assert got["miou"] == pytest.approx(jaccard_score(t, p, average="macro"), abs=1e-9)
    assert got["pixel_acc"] == pytest.approx((t == p).mean(), abs=1e-12)
    with pytest.raises(ValueError, match="target labels must be in 0..3"):
        meter.update(logits[:1], torch.full((1, 20, 24), 7))
