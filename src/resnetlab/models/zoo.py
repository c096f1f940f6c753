"""The ResNet family as named builders over :class:`~resnetlab.models.resnet.ResNet`."""

from __future__ import annotations

from typing import Any

from .registry import build, register_model
from .resnet import ResNet

HE2015 = "He et al. 2015, Deep Residual Learning (arXiv:1512.03385)"
_SE = "Hu et al. 2018, Squeeze-and-Excitation Networks (arXiv:1709.01507)"
_WRN = "Zagoruyko & Komodakis 2016, Wide Residual Networks (arXiv:1605.07146)"
CIFAR = dict(stem="cifar", widths=(16, 32, 64), num_classes=10)
B18, B34, B50, B101, B152 = (2, 2, 2, 2), (3, 4, 6, 3), (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3)
C32 = (3, 32, 32)


# --- ImageNet ResNets: torchvision-compatible (module names, parameter counts, outputs) ---------------------
@register_model(paper=HE2015, torchvision="resnet18")
def resnet18(**kwargs: Any) -> ResNet:
    return build(ResNet, kwargs, layers=B18)


@register_model(paper=HE2015, torchvision="resnet34")
def resnet34(**kwargs: Any) -> ResNet:
    return build(ResNet, kwargs, layers=B34)


@register_model(paper=HE2015, torchvision="resnet50")
def resnet50(**kwargs: Any) -> ResNet:
    return build(ResNet, kwargs, block="bottleneck", layers=B50)


@register_model(paper=HE2015, torchvision="resnet101")
def resnet101(**kwargs: Any) -> ResNet:
    return build(ResNet, kwargs, block="bottleneck", layers=B101)


@register_model(paper=HE2015, torchvision="resnet152")
def resnet152(**kwargs: Any) -> ResNet:
    return build(ResNet, kwargs, block="bottleneck", layers=B152)


# --- plain twins: the same layers with every shortcut removed (the paper's control, Fig. 4 / Table 2) ------
@register_model(paper=HE2015 + ", plain baseline")
def plain18(**kwargs: Any) -> ResNet:
    return build(ResNet, kwargs, layers=B18, shortcut=None)


@register_model(paper=HE2015 + ", plain baseline")
def plain34(**kwargs: Any) -> ResNet:
    return build(ResNet, kwargs, layers=B34, shortcut=None)


# --- CIFAR-10 networks of §4.2: 6n+2 layers, 16/32/64 channels, option A shortcuts; and their plain twins --
def _cifar(kwargs: dict[str, Any], n: int, shortcut: str | None) -> ResNet:
    return build(ResNet, kwargs, layers=(n, n, n), shortcut=shortcut, **CIFAR)


@register_model(input_size=C32, paper=HE2015 + " §4.2")
def resnet20(**kwargs: Any) -> ResNet:
    return _cifar(kwargs, 3, "A")


@register_model(input_size=C32, paper=HE2015 + " §4.2")
def resnet32(**kwargs: Any) -> ResNet:
    return _cifar(kwargs, 5, "A")


@register_model(input_size=C32, paper=HE2015 + " §4.2")
def resnet44(**kwargs: Any) -> ResNet:
    return _cifar(kwargs, 7, "A")


@register_model(input_size=C32, paper=HE2015 + " §4.2")
def resnet56(**kwargs: Any) -> ResNet:
    return _cifar(kwargs, 9, "A")


@register_model(input_size=C32, paper=HE2015 + " §4.2")
def resnet110(**kwargs: Any) -> ResNet:
    return _cifar(kwargs, 18, "A")


@register_model(input_size=C32, paper=HE2015 + " §4.2, plain")
def plain20(**kwargs: Any) -> ResNet:
    return _cifar(kwargs, 3, None)


@register_model(input_size=C32, paper=HE2015 + " §4.2, plain")
def plain32(**kwargs: Any) -> ResNet:
    return _cifar(kwargs, 5, None)


@register_model(input_size=C32, paper=HE2015 + " §4.2, plain")
def plain44(**kwargs: Any) -> ResNet:
    return _cifar(kwargs, 7, None)


@register_model(input_size=C32, paper=HE2015 + " §4.2, plain")
def plain56(**kwargs: Any) -> ResNet:
    return _cifar(kwargs, 9, None)


@register_model(input_size=C32, paper=HE2015 + " §4.2, plain")
def plain110(**kwargs: Any) -> ResNet:
    return _cifar(kwargs, 18, None)


# --- improvements the article points to ------------------------------------------------------------------
@register_model(paper=_SE)
def se_resnet18(**kwargs: Any) -> ResNet:
    return build(ResNet, kwargs, layers=B18, se_reduction=16)


@register_model(paper=_SE)
def se_resnet34(**kwargs: Any) -> ResNet:
    return build(ResNet, kwargs, layers=B34, se_reduction=16)


@register_model(paper=_SE)
def se_resnet50(**kwargs: Any) -> ResNet:
    return build(ResNet, kwargs, block="bottleneck", layers=B50, se_reduction=16)


@register_model(paper="Xie et al. 2017, ResNeXt (arXiv:1611.05431)", torchvision="resnext50_32x4d")
def resnext50_32x4d(**kwargs: Any) -> ResNet:
    return build(ResNet, kwargs, block="bottleneck", layers=B50, groups=32, width_per_group=4)


@register_model(paper=_WRN, torchvision="wide_resnet50_2")
def wide_resnet50_2(**kwargs: Any) -> ResNet:
    return build(ResNet, kwargs, block="bottleneck", layers=B50, width_per_group=128)


@register_model(input_size=C32, paper="Zagoruyko & Komodakis 2016, WRN-28-10 (CIFAR)")
def wrn28_10(**kwargs: Any) -> ResNet:
    return build(ResNet, kwargs, block="preact", layers=(4, 4, 4), widths=(160, 320, 640), stem="cifar",
                 stem_width=16, num_classes=10)


@register_model(paper="He et al. 2019, Bag of Tricks (ResNet-D, arXiv:1812.01187)")
def resnet18d(**kwargs: Any) -> ResNet:
    return build(ResNet, kwargs, layers=B18, stem="deep", avg_down=True)
