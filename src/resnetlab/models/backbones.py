"""A zoo network as the backbone of a detector or segmenter: its weights from a resnetlab checkpoint or file
(the classifier dropped), torchvision's ``trainable_layers`` freezing, and an FPN on its feature maps."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import torch.nn as nn
from torch import Tensor

from .base import FeatureExtractor
from .factory import create_model
from .weights import load_weights, read_state_dict

__all__ = ["build_backbone", "FPNBackbone", "freeze_backbone", "STAGES"]

STAGES = ("layer4", "layer3", "layer2", "layer1", "conv1")  # torchvision's order for trainable_layers


def _weights_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():  # a run directory: its best checkpoint, else the last
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"{p} holds no best.pt or last.pt checkpoint")
    if not p.is_file():
        raise FileNotFoundError(f"backbone_weights: {p} does not exist")
    return p


def build_backbone(name: str, *, weights: str | os.PathLike | None = None, out_indices: Sequence[int],
                   **options: Any) -> FeatureExtractor:
    """``create_model(name, features_only=True)`` with a classifier's weights loaded into the trunk (its
    ``fc`` / classifier tensors are left out: a detector has no use for them)."""
    model = create_model(name, num_classes=0, **options)
    if weights is not None:
        path = _weights_file(weights)
        state = read_state_dict(path)
        head = getattr(model, "classifier_name", "fc") + "."
        load_weights(model, {k: v for k, v in state.items() if not k.startswith(head)})
    extractor = FeatureExtractor(model, out_indices)
    extractor.model_name = name  # type: ignore[assignment]
    return extractor


def freeze_backbone(body: nn.Module, trainable_layers: int) -> None:
    """Freeze all but the last ``trainable_layers`` stages (0..5, torchvision's meaning: 5 trains the stem)."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be 0..5, got {trainable_layers!r}")
    train = set(STAGES[:trainable_layers]) | ({"bn1"} if trainable_layers == 5 else set())
    for name, p in body.named_parameters():
        if not any(name == t or name.startswith(t + ".") for t in train):
            p.requires_grad_(False)


class FPNBackbone(nn.Module):
    """``body`` (a feature extractor) followed by torchvision's FeaturePyramidNetwork: an OrderedDict of
    ``out_channels``-wide maps, what torchvision's detectors take."""

    def __init__(self, body: FeatureExtractor, out_channels: int = 256, extra_blocks: nn.Module | None = None,
                 from_level: int = 0) -> None:
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        super().__init__()
        self.body, self.from_level, self.out_channels = body, from_level, out_channels
        channels = body.feature_info.channels()[from_level:]
        self.fpn = FeaturePyramidNetwork(channels, out_channels, extra_blocks=extra_blocks or LastLevelMaxPool())

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        feats = self.body(x)[self.from_level:]
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))
