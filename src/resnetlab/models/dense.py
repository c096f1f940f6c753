"""Dense-prediction models by name: which task a name belongs to, and one builder for both kinds, so the
training engine, evaluation and export can rebuild a detector or segmenter from a checkpoint's record."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from .detection import DETECTORS, create_detector
from .segmentation import SEGMENTERS, create_segmenter

__all__ = ["DENSE_TASKS", "dense_kind", "dense_backbone", "create_dense"]

DENSE_TASKS = ("detection", "segmentation")


def dense_kind(name: str) -> str | None:
    """"detection" for <fasterrcnn|retinanet|fcos>_<net>_fpn, "segmentation" for <deeplabv3|fcn>_<net>, else None
    (a classifier of the zoo)."""
    head, _, rest = str(name).partition("_")
    if head in DETECTORS and rest.endswith("_fpn"):
        return "detection"
    if head in SEGMENTERS and rest:
        return "segmentation"
    return None


def dense_backbone(name: str, backbone: str | None = None) -> str:
    """The zoo network under a detector or segmenter: ``backbone`` if given, else the one its name says."""
    if dense_kind(name) is None:
        raise ValueError(f"{name!r} is not a detector or segmenter name")
    net = name.partition("_")[2]
    return backbone or (net[: -len("_fpn")] if dense_kind(name) == "detection" else net)


def create_dense(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """:func:`create_detector` or :func:`create_segmenter`, as ``name`` says; ``kwargs`` go to it."""
    kind = dense_kind(name)
    if kind == "detection":
        return create_detector(name, num_classes, **kwargs)
    if kind == "segmentation":
        return create_segmenter(name, num_classes, **kwargs)
    raise ValueError(f"{name!r} is not a detector (<{'|'.join(DETECTORS)}>_<net>_fpn) or a segmenter "
                     f"(<{'|'.join(SEGMENTERS)}>_<net>)")
