"""The article's comparison models that torchvision defines: reused, not copied.

Each class subclasses torchvision's own, so its module names, initialisation and state dicts
are torchvision's; only the shared interface (trunk, head, ``reset_classifier``, ``in_chans``,
``feature_info``) is added on top.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torchvision.models import densenet as tv_densenet
from torchvision.models import inception as tv_inception
from torchvision.models import vgg as tv_vgg

from .base import ClassifierMixin, FeatureInfo, FeatureSpec, linear_or_identity
from .registry import build, register_model

__all__ = ["VGG", "InceptionV3", "DenseNet"]


def _replace_first_conv(model: nn.Module, path: str, in_chans: int) -> None:
    """Swap the first conv for one with ``in_chans`` inputs (same init as torchvision's)."""
    if in_chans == 3:
        return
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans!r}")
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old: nn.Conv2d = getattr(parent, attr)
    new = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, old.padding,
                    bias=old.bias is not None)
    with torch.no_grad():  # keep the spread of torchvision's initialisation for the new width
        new.weight.normal_(0.0, float(old.weight.std()))
        if new.bias is not None:
            new.bias.zero_()
    setattr(parent, attr, new)


class VGG(ClassifierMixin, tv_vgg.VGG):
    """VGG-16 (Simonyan & Zisserman 2015), torchvision's definition."""

    def __init__(self, cfg: str = "D", num_classes: int = 1000, in_chans: int = 3, batch_norm: bool = False,
                 dropout: float = 0.5) -> None:
        if cfg not in tv_vgg.cfgs:
            raise ValueError(f"cfg must be one of {sorted(tv_vgg.cfgs)}, got {cfg!r}")
        super().__init__(tv_vgg.make_layers(tv_vgg.cfgs[cfg], batch_norm=batch_norm), num_classes=max(num_classes, 1),
                         init_weights=True, dropout=dropout)
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, 4096
        self.first_conv, self.classifier_name, self.min_input_size = "features.0", "classifier.6", 32
        _replace_first_conv(self, "features.0", in_chans)
        if num_classes == 0:
            self.classifier[6] = nn.Identity()
        self.feature_info, chans = FeatureInfo(), in_chans
        for i, m in enumerate(self.features):  # one map after each max-pool: strides 2..32
            chans = m.out_channels if isinstance(m, nn.Conv2d) else chans
            if isinstance(m, nn.MaxPool2d):
                self.feature_info.append(FeatureSpec(f"features.{i}", chans, 2 ** (len(self.feature_info) + 1)))

    def trunk(self) -> list[tuple[str, nn.Module]]:
        return [(f"features.{i}", m) for i, m in enumerate(self.features)]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier[6] = linear_or_identity(4096, num_classes)


class _Call(nn.Module):
    """Wrap a parameter-free function as a trunk stage (e.g. Inception's ``transform_input``)."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class InceptionV3(ClassifierMixin, tv_inception.Inception3):
    """Inception-v3 (Szegedy et al. 2016), torchvision's definition.

    ``aux_logits`` defaults to False here (timm's choice) so training code gets plain logits;
    torchvision state dicts with the auxiliary head still load (its keys are dropped with a note).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = False,
                 transform_input: bool = False, dropout: float = 0.5) -> None:
        super().__init__(num_classes=max(num_classes, 1), aux_logits=aux_logits, transform_input=transform_input,
                         init_weights=True, dropout=dropout)
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, 2048
        self.first_conv, self.classifier_name, self.min_input_size = "Conv2d_1a_3x3.conv", "fc", 75
        _replace_first_conv(self, "Conv2d_1a_3x3.conv", in_chans)
        if num_classes == 0:
            self.fc = nn.Identity()
        self.feature_info = FeatureInfo([
            FeatureSpec("Conv2d_2b_3x3", 64, 2), FeatureSpec("Conv2d_4a_3x3", 192, 4),
            FeatureSpec("Mixed_5d", 288, 8), FeatureSpec("Mixed_6e", 768, 16), FeatureSpec("Mixed_7c", 2048, 32)])
        self._aux: Tensor | None = None

    def trunk(self) -> list[tuple[str, nn.Module]]:
        skip = {"AuxLogits", "avgpool", "dropout", "fc"}
        stages = [(n, m) for n, m in self.named_children() if n not in skip]
        return ([("transform_input", _Call(self._transform_input))] if self.transform_input else []) + stages

    def forward_features(self, x: Tensor) -> Tensor:
        for name, module in self.trunk():
            x = module(x)
            if name == "Mixed_6e" and self.AuxLogits is not None and self.training:
                self._aux = self.AuxLogits(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = torch.flatten(self.dropout(self.avgpool(x)), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor):  # type: ignore[override]
        out = ClassifierMixin.forward(self, x)
        aux, self._aux = self._aux, None
        if self.training and aux is not None:  # torchvision's training-mode output
            return tv_inception.InceptionOutputs(out, aux)
        return out

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = linear_or_identity(2048, num_classes)

    def adapt_state_dict(self, state_dict: dict[str, Tensor]) -> list[str]:
        aux = [k for k in state_dict if k.startswith("AuxLogits.")]
        if self.AuxLogits is None and aux:
            for k in aux:
                del state_dict[k]
            return [f"dropped the auxiliary classifier ({len(aux)} AuxLogits.* tensors): aux_logits=False"]
        return []


class DenseNet(ClassifierMixin, tv_densenet.DenseNet):
    """DenseNet-121 (Huang et al. 2017), torchvision's definition."""

    has_shortcuts = "dense"

    def __init__(self, growth_rate: int = 32, block_config: tuple[int, ...] = (6, 12, 24, 16),
                 num_init_features: int = 64, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 memory_efficient: bool = False) -> None:
        super().__init__(growth_rate, tuple(block_config), num_init_features, num_classes=max(num_classes, 1),
                         drop_rate=drop_rate, memory_efficient=memory_efficient)
        self.num_classes, self.in_chans = num_classes, in_chans
        self.num_features = self.classifier.in_features
        self.first_conv, self.classifier_name, self.min_input_size = "features.conv0", "classifier", 32
        _replace_first_conv(self, "features.conv0", in_chans)
        if num_classes == 0:
            self.classifier = nn.Identity()
        self.final_act = nn.ReLU(inplace=True)
        info, chans = [FeatureSpec("features.relu0", num_init_features, 2)], num_init_features
        for i, n in enumerate(block_config):
            chans += n * growth_rate
            last = i == len(block_config) - 1
            info.append(FeatureSpec("final_act" if last else f"features.denseblock{i + 1}", chans, 2 ** (i + 2)))
            chans = chans if last else chans // 2
        self.feature_info = FeatureInfo(info)

    def trunk(self) -> list[tuple[str, nn.Module]]:
        return [(f"features.{n}", m) for n, m in self.features.named_children()] + [("final_act", self.final_act)]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = linear_or_identity(self.num_features, num_classes)


_TV = "torchvision's definition"
@register_model(torchvision="vgg16", paper="Simonyan & Zisserman 2015, VGG (arXiv:1409.1556); " + _TV)
def vgg16(**kwargs: Any) -> VGG:
    return build(VGG, kwargs, cfg="D")


@register_model(input_size=(3, 299, 299), torchvision="inception_v3",
                paper="Szegedy et al. 2016, Inception-v3 (arXiv:1512.00567); " + _TV)
def inception_v3(**kwargs: Any) -> InceptionV3:
    return build(InceptionV3, kwargs)


@register_model(torchvision="densenet121", paper="Huang et al. 2017, DenseNet (arXiv:1608.06993); " + _TV)
def densenet121(**kwargs: Any) -> DenseNet:
    return build(DenseNet, kwargs)
