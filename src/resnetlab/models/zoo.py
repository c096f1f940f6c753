"""The ResNet family as one-line builders over :class:`~resnetlab.models.resnet.ResNet`."""

from __future__ import annotations

from .registry import register_model
from .resnet import ResNet

HE2015 = "He et al. 2015, Deep Residual Learning (arXiv:1512.03385)"
CIFAR = dict(stem="cifar", widths=(16, 32, 64), input_size=(3, 32, 32), num_classes=10)
B18, B34, B50, B101, B152 = (2, 2, 2, 2), (3, 4, 6, 3), (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3)

# ImageNet ResNets: torchvision-compatible (module names, parameter counts, outputs).
resnet18 = register_model("resnet18", ResNet, layers=B18, paper=HE2015, torchvision="resnet18")
resnet34 = register_model("resnet34", ResNet, layers=B34, paper=HE2015, torchvision="resnet34")
resnet50 = register_model("resnet50", ResNet, block="bottleneck", layers=B50, paper=HE2015, torchvision="resnet50")
resnet101 = register_model("resnet101", ResNet, block="bottleneck", layers=B101, paper=HE2015,
                           torchvision="resnet101")
resnet152 = register_model("resnet152", ResNet, block="bottleneck", layers=B152, paper=HE2015,
                           torchvision="resnet152")

# Plain twins: the same layers with every shortcut removed (the paper's control, Fig. 4 / Table 2).
plain18 = register_model("plain18", ResNet, layers=B18, shortcut=None, paper=HE2015 + ", plain baseline")
plain34 = register_model("plain34", ResNet, layers=B34, shortcut=None, paper=HE2015 + ", plain baseline")

# CIFAR-10 networks of §4.2: 6n+2 layers, 16/32/64 channels, option A shortcuts.
for _n in (3, 5, 7, 9, 18):
    _depth = 6 * _n + 2
    globals()[f"resnet{_depth}"] = register_model(
        f"resnet{_depth}", ResNet, layers=(_n,) * 3, shortcut="A", paper=HE2015 + " §4.2", **CIFAR)
    globals()[f"plain{_depth}"] = register_model(
        f"plain{_depth}", ResNet, layers=(_n,) * 3, shortcut=None, paper=HE2015 + " §4.2, plain", **CIFAR)

# Improvements the article points to.
_SE = "Hu et al. 2018, Squeeze-and-Excitation Networks (arXiv:1709.01507)"
se_resnet18 = register_model("se_resnet18", ResNet, layers=B18, se_reduction=16, paper=_SE)
se_resnet34 = register_model("se_resnet34", ResNet, layers=B34, se_reduction=16, paper=_SE)
se_resnet50 = register_model("se_resnet50", ResNet, block="bottleneck", layers=B50, se_reduction=16, paper=_SE)
resnext50_32x4d = register_model(
    "resnext50_32x4d", ResNet, block="bottleneck", layers=B50, groups=32, width_per_group=4,
    paper="Xie et al. 2017, ResNeXt (arXiv:1611.05431)", torchvision="resnext50_32x4d")
wide_resnet50_2 = register_model(
    "wide_resnet50_2", ResNet, block="bottleneck", layers=B50, width_per_group=128,
    paper="Zagoruyko & Komodakis 2016, Wide Residual Networks (arXiv:1605.07146)", torchvision="wide_resnet50_2")
wrn28_10 = register_model(
    "wrn28_10", ResNet, block="preact", layers=(4, 4, 4), widths=(160, 320, 640), stem="cifar", stem_width=16,
    input_size=(3, 32, 32), num_classes=10, paper="Zagoruyko & Komodakis 2016, WRN-28-10 (CIFAR)")
resnet18d = register_model(
    "resnet18d", ResNet, layers=B18, stem="deep", avg_down=True,
    paper="He et al. 2019, Bag of Tricks (ResNet-D, arXiv:1812.01187)")
