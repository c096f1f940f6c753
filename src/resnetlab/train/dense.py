"""Detection and segmentation as tasks of the one training engine (:mod:`resnetlab.train.engine`).

The engine keeps the loop — steps, checkpoints, exact resume, progress, TensorBoard, DDP, bad files — and asks a
:class:`DenseTask` for what differs from classification: the data (:mod:`resnetlab.data.dense`), the model
(torchvision's heads on a zoo trunk), the loss (the detector's own sum of RPN and RoI losses; per-pixel cross-
entropy for a segmenter, padding ignored) and the validation metrics (COCO box AP, or mIoU).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.dense import IGNORE_INDEX, DenseBatches, dense_splits, open_dense_split
from ..data.detection import DetectionDataset
from ..data.preprocess import Preprocess
from ..eval.dense import DENSE_SCORES, dense_metrics
from ..models.dense import create_dense, dense_backbone, dense_kind
from .config import TrainConfig
from .distributed import DistInfo
from .finetune import starting_weights
from .loaders import AUTO_VAL_SPLIT, DataBundle
from .task import Step, TaskPlugin, refuse_classification_settings

__all__ = ["DenseTask"]

log = logging.getLogger("resnetlab")


class DenseTask(TaskPlugin):
    """What the engine needs to train ``cfg.model`` when it is a detector or a segmenter."""

    def __init__(self, cfg: TrainConfig) -> None:
        kind = dense_kind(cfg.model)
        if kind is None:
            raise ValueError(f"{cfg.model!r} is neither a detector nor a segmenter")
        self.kind = kind
        refuse_classification_settings(cfg, f"{cfg.model} ({kind})")
        self.scores = scores = DENSE_SCORES[kind]
        self.select = cfg.select_metric if cfg.select_metric in scores else scores[0]
        if kind == "segmentation" and cfg.batch_size < 2:
            raise ValueError(f"batch_size {cfg.batch_size}: a segmenter trains its BatchNorm (and DeepLab's ASPP "
                             "image pooling) on the batch, which needs at least 2 images")

    # --- data --------------------------------------------------------------------------------------
    def build_data(self, cfg: TrainConfig, info: DistInfo) -> DataBundle:
        """train / val / test of the data folder; without a val split, a seeded part of train is held out."""
        root = Path(cfg.data).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data: {cfg.data!r} is not a folder (a {self.kind} data set is a folder with "
                                    "train/ and optional val/ and test/ sub-folders)")
        splits = dense_splits(root)
        train = open_dense_split(root, "train", self.kind, masks=cfg.masks)
        classes = train.classes
        val_split = 0.0
        if "val" in splits and not cfg.val_split:
            val = open_dense_split(root, "val", self.kind, masks=cfg.masks, classes=classes)
        else:
            val_split = cfg.val_split or AUTO_VAL_SPLIT
            train, val = _hold_out(train, val_split, cfg.seed)
        test = open_dense_split(root, "test", self.kind, masks=cfg.masks, classes=classes) if "test" in splits \
            else None
        pre = Preprocess.for_data("imagenet", cfg.image_size or 512, 3)
        log.info("%s data %s: %d train, %d val, %s test images; classes %s", self.kind, root, len(train), len(val),
                 len(test) if test is not None else "no", classes[1:])
        return DataBundle(train, val, list(classes), pre, str(root), test, val_split, cfg.seed)

    def batches(self, bundle: DataBundle, cfg: TrainConfig, info: DistInfo, split: str) -> DenseBatches | None:
        ds = {"train": bundle.train, "val": bundle.val, "test": bundle.test}[split]
        if ds is None:
            return None
        train = split == "train"
        pre = bundle.preprocess
        return DenseBatches(ds, cfg.batch_size if train else cfg.eval_batch_size, kind=self.kind, train=train,
                            seed=cfg.seed, rank=info.rank if train else 0, world_size=info.world_size if train else 1,
                            workers=cfg.workers, limit=cfg.limit_train_batches if train else cfg.limit_eval_batches,
                            flip=cfg.flip, mean=pre.mean, std=pre.std)

    # --- model -------------------------------------------------------------------------------------
    def build_model(self, cfg: TrainConfig, num_classes: int, resuming: bool
                    ) -> tuple[nn.Module, dict[str, Any] | None]:
        """The model, and the record of the backbone weights it started from (None: random, or a resume)."""
        kwargs = dict(cfg.model_kwargs)
        net = dense_backbone(cfg.model, kwargs.get("backbone"))
        start = cfg.pretrained or cfg.weights
        # the trainable stages follow the *configured* start, so a resume builds the same parameter groups
        kwargs.setdefault("trainable_layers", 3 if start and self.kind == "detection" else 5)
        path, record = (None, None) if resuming else starting_weights(cfg.replace(model=net))
        model = create_dense(cfg.model, num_classes, backbone_weights=path, **kwargs)
        if path is not None:
            log.info("backbone %s from %s (its classifier left out)", net, path)
        return model, record

    # --- one step, one evaluation ------------------------------------------------------------------
    def loss(self, net: nn.Module, x: Any, y: Any, device: torch.device, where: Step) -> torch.Tensor:
        if self.kind == "detection":
            images = [img.to(device, non_blocking=True) for img in x]
            targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in y]
            return sum(net(images, targets).values())
        out = net(x.to(device, non_blocking=True))
        y = y.to(device, non_blocking=True)
        loss = F.cross_entropy(out["out"].float(), y, ignore_index=IGNORE_INDEX)
        if "aux" in out:  # torchvision's reference weighs the auxiliary FCN head's loss by 0.5
            loss = loss + 0.5 * F.cross_entropy(out["aux"].float(), y, ignore_index=IGNORE_INDEX)
        return loss

    def evaluate(self, model: nn.Module, batches: DenseBatches, num_classes: int, device: torch.device,
                 amp: str) -> dict[str, Any]:
        return dense_metrics(model, batches.epoch(0), self.kind, num_classes, device=device, amp=amp)

    def row(self, metrics: dict[str, Any], prefix: str) -> dict[str, Any]:
        """``val_map``... / ``test_miou``...: the scores of ``metrics`` under the split's prefix."""
        return {f"{prefix}_{k}": metrics[k] for k in DENSE_SCORES[self.kind]}


def _hold_out(ds: DetectionDataset, fraction: float, seed: int) -> tuple[DetectionDataset, DetectionDataset]:
    """A seeded ``fraction`` of ``ds`` (at least one image) as validation, the rest for training."""
    n = len(ds)
    k = max(1, int(round(fraction * n)))
    if n - k < 1:
        raise ValueError(f"{ds.source}: {n} image(s) cannot be split into training and validation; add a val/ "
                         "split or more images")
    order = np.random.default_rng(seed).permutation(n)
    pick = lambda idx: DetectionDataset([ds.samples[i] for i in sorted(idx)], ds.classes, ds.source)  # noqa: E731
    return pick(order[k:]), pick(order[:k])
