"""Detectors on a resnetlab backbone: torchvision's Faster R-CNN, RetinaNet and FCOS heads (no second copy of
them) over any ResNet-family trunk of the zoo with an FPN — ``create_detector("fasterrcnn_resnet18_fpn", ...)``.

Layouts follow torchvision's ``*_resnet50_fpn`` builders: Faster R-CNN reads C2..C5 (+ a max-pooled P6),
RetinaNet and FCOS read C3..C5 with P6/P7 from P5 (Lin et al. 2017; Tian et al. 2019).
"""

from __future__ import annotations

import os
from typing import Any

import torch.nn as nn

from .backbones import FPNBackbone, build_backbone, freeze_backbone

__all__ = ["create_detector", "DETECTORS"]

DETECTORS = ("fasterrcnn", "retinanet", "fcos")


def _parse(name: str) -> tuple[str, str]:
    """"fasterrcnn_resnet18_fpn" -> ("fasterrcnn", "resnet18")."""
    head, _, rest = name.partition("_")
    if head not in DETECTORS or not rest.endswith("_fpn"):
        raise ValueError(f"detector names are <{'|'.join(DETECTORS)}>_<backbone>_fpn, e.g. "
                         f"'fasterrcnn_resnet18_fpn'; got {name!r}")
    return head, rest[: -len("_fpn")]


def create_detector(name: str, num_classes: int, *, backbone: str | None = None,
                    backbone_weights: str | os.PathLike | None = None, trainable_layers: int | None = None,
                    min_size: int = 800, max_size: int = 1333, **kwargs: Any) -> nn.Module:
    """A torchvision detector on a resnetlab backbone.

    Args:
        name: "fasterrcnn_<net>_fpn", "retinanet_<net>_fpn" or "fcos_<net>_fpn" (<net>: any zoo ResNet).
        num_classes: object classes, background included for Faster R-CNN (torchvision's convention).
        backbone: overrides the <net> of the name (any ResNet-family model of the zoo).
        backbone_weights: a resnetlab checkpoint, run directory, safetensors or state dict of a classifier.
        trainable_layers: stages that train (0..5); default 3 with backbone weights, 5 without (torchvision).
        min_size, max_size: the detector's own image resizing (torchvision's GeneralizedRCNNTransform).
        **kwargs: passed to torchvision's FasterRCNN / RetinaNet / FCOS (e.g. ``box_score_thresh``).
    """
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    kind, net = _parse(name)
    net = backbone or net
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    trainable = trainable_layers if trainable_layers is not None else (3 if backbone_weights else 5)
    body = build_backbone(net, weights=backbone_weights, out_indices=(1, 2, 3, 4))
    freeze_backbone(body, trainable)
    if kind == "fasterrcnn":
        model = FasterRCNN(FPNBackbone(body), num_classes=num_classes, min_size=min_size, max_size=max_size,
                           **kwargs)
    else:
        fpn = FPNBackbone(body, extra_blocks=LastLevelP6P7(256, 256), from_level=1)
        cls = RetinaNet if kind == "retinanet" else FCOS
        model = cls(fpn, num_classes=num_classes, min_size=min_size, max_size=max_size, **kwargs)
    model.detector_name, model.backbone_name = name, net  # type: ignore[assignment]
    return model
