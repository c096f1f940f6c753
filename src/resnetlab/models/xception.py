"""Xception (Chollet 2017, arXiv:1610.02357): depthwise-separable convolutions with residual links.

torchvision has no Xception; this follows the paper's Fig. 5 (entry flow, 8 middle-flow blocks,
exit flow), 22,855,952 parameters with 1000 classes — the Keras reference's 22,910,480 minus its
54,528 BatchNorm running statistics, which PyTorch keeps as buffers, not parameters.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from torch import Tensor

from .base import ClassifierMixin, FeatureInfo, FeatureSpec, linear_or_identity
from .layers import ResidualAdd
from .registry import build, register_model

__all__ = ["SeparableConv2d", "XceptionBlock", "Xception"]


class SeparableConv2d(nn.Module):
    """A 3x3 depthwise convolution followed by a 1x1 pointwise one, no bias (BN follows)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """``reps`` x (ReLU, SeparableConv, BN), an optional stride-2 max-pool, plus a shortcut.

    The shortcut is a strided 1x1 projection where the shape changes, the identity elsewhere.
    """

    def __init__(self, cin: int, cout: int, reps: int, stride: int = 1, start_with_relu: bool = True,
                 grow_first: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        chans = [cin] + [cout if grow_first or i == reps - 1 else cin for i in range(reps)]
        for i in range(reps):
            if i > 0 or start_with_relu:
                layers.append(nn.ReLU(inplace=False))  # not in-place: the identity path reads x
            layers += [SeparableConv2d(chans[i], chans[i + 1]), nn.BatchNorm2d(chans[i + 1])]
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*layers)
        if stride != 1 or cin != cout:
            self.skip: nn.Module | None = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                        nn.BatchNorm2d(cout))
            self.shortcut_kind = "projection"
        else:
            self.skip, self.shortcut_kind = None, "identity"
        self.add = ResidualAdd(self.shortcut_kind)

    def forward(self, x: Tensor) -> Tensor:
        return self.add(self.rep(x), x if self.skip is None else self.skip(x))


class Xception(ClassifierMixin, nn.Module):
    """Xception with the shared interface; inputs of at least 71x71 (299x299 by default)."""

    has_shortcuts = "yes (B)"

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, middle_blocks: int = 8,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        if in_chans < 1 or num_classes < 0 or middle_blocks < 0:
            raise ValueError(f"bad Xception arguments: in_chans={in_chans!r}, num_classes={num_classes!r}, "
                             f"middle_blocks={middle_blocks!r}")
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.num_features, self.min_input_size = 2048, 71
        self.first_conv, self.classifier_name = "conv1", "fc"
        # Entry flow.
        self.conv1 = nn.Conv2d(in_chans, 32, 3, 2, 0, bias=False)
        self.bn1, self.act1 = nn.BatchNorm2d(32), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(32, 64, 3, bias=False)
        self.bn2, self.act2 = nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        blocks = [XceptionBlock(64, 128, 2, 2, start_with_relu=False), XceptionBlock(128, 256, 2, 2),
                  XceptionBlock(256, 728, 2, 2)]
        blocks += [XceptionBlock(728, 728, 3) for _ in range(middle_blocks)]  # middle flow
        blocks.append(XceptionBlock(728, 1024, 2, 2, grow_first=False))  # exit flow
        for i, block in enumerate(blocks):
            self.add_module(f"block{i + 1}", block)
        self.conv3, self.bn3, self.act3 = SeparableConv2d(1024, 1536), nn.BatchNorm2d(1536), nn.ReLU(inplace=True)
        self.conv4, self.bn4, self.act4 = SeparableConv2d(1536, 2048), nn.BatchNorm2d(2048), nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = linear_or_identity(2048, num_classes)
        n = len(blocks)
        self.feature_info = FeatureInfo([
            FeatureSpec("act2", 64, 2), FeatureSpec("block1", 128, 4), FeatureSpec("block2", 256, 8),
            FeatureSpec(f"block{n - 1}", 728, 16), FeatureSpec("act4", 2048, 32)])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def trunk(self) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in self.named_children() if n not in ("avgpool", "fc")]


@register_model(input_size=(3, 299, 299), paper="Chollet 2017, Xception (arXiv:1610.02357)")
def xception(**kwargs: Any) -> Xception:
    return build(Xception, kwargs)
