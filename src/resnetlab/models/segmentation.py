"""Segmenters on a resnetlab backbone: torchvision's DeepLabV3 (ASPP; Chen et al. 2017) and FCN heads over any
ResNet-family trunk of the zoo, at output stride 8, 16 or 32 — by dilating the last stages, which resnetlab's
BasicBlock allows and torchvision's refuses (vision#2121), so ResNet-18 runs DeepLab."""

from __future__ import annotations

import os
from typing import Any

import torch.nn as nn
from torch import Tensor

from .backbones import build_backbone, freeze_backbone

__all__ = ["create_segmenter", "SEGMENTERS"]

SEGMENTERS = ("deeplabv3", "fcn")
DILATE = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}


class _OutAux(nn.Module):
    """The trunk's last two stages as torchvision's segmentation models read them: {"out": C5, "aux": C4}."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        c4, c5 = self.body(x)
        return {"out": c5, "aux": c4}


def create_segmenter(name: str, num_classes: int, *, output_stride: int = 16, backbone: str | None = None,
                     backbone_weights: str | os.PathLike | None = None, aux_loss: bool = False,
                     trainable_layers: int = 5, **kwargs: Any) -> nn.Module:
    """``"deeplabv3_resnet18"`` or ``"fcn_resnet18"`` (any zoo ResNet after the underscore) for ``num_classes``
    classes (background included), at ``output_stride`` 8, 16 or 32; returns torchvision's model, whose
    forward gives {"out": (N, classes, H, W)} (+ "aux" with ``aux_loss``)."""
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    kind, _, net = name.partition("_")
    if kind not in SEGMENTERS or not net:
        raise ValueError(f"segmenter names are <{'|'.join(SEGMENTERS)}>_<backbone>, e.g. 'deeplabv3_resnet18'; "
                         f"got {name!r}")
    if output_stride not in DILATE:
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    net = backbone or net
    body = build_backbone(net, weights=backbone_weights, out_indices=(3, 4),
                          replace_stride_with_dilation=DILATE[output_stride])
    freeze_backbone(body, trainable_layers)
    c4, c5 = body.feature_info.channels()
    aux = FCNHead(c4, num_classes) if aux_loss else None
    if kind == "deeplabv3":
        model = DeepLabV3(_OutAux(body), DeepLabHead(c5, num_classes, **kwargs), aux)
    else:
        model = FCN(_OutAux(body), FCNHead(c5, num_classes), aux)
    model.segmenter_name, model.backbone_name, model.output_stride = name, net, output_stride
    return model
