"""One parameterised ResNet (He et al. 2015, arXiv:1512.03385) and its blocks.

Module names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``,
``fc``) so torchvision state dicts load unchanged and pruning masks / exports can be diffed.
The same class builds the paper's plain twins (``shortcut=None``), its shortcut options A/B/C,
the CIFAR networks of §4.2, SE, ResNeXt, Wide ResNet, pre-activation blocks and ResNet-D.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch.nn as nn
from torch import Tensor

from .base import ClassifierMixin, FeatureInfo, FeatureSpec, linear_or_identity
from .layers import NORMS, SHORTCUTS, DropPath, ResidualAdd, SqueezeExcite, conv1x1, conv3x3, make_shortcut

__all__ = ["BasicBlock", "Bottleneck", "PreActBlock", "ResNet"]


class _Block(nn.Module):
    """Common tail of every block: optional SE, stochastic depth, the residual addition (``self.add``)."""

    expansion = 1
    shortcut_kind: str | None  # None (plain), "identity", "A" or "projection"
    add: ResidualAdd

    def _add_shortcut(self, out: Tensor, x: Tensor) -> Tensor:
        if self.shortcut_kind is None:  # plain network: no addition at all
            return self.add(out, None)
        identity = x if self.downsample is None else self.downsample(x)
        return self.add(self.drop_path(out), identity)


class BasicBlock(_Block):
    """Two 3x3 convolutions (ResNet-18/34, CIFAR ResNets)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, *, shortcut: str | None = "B",
                 avg_down: bool = False, groups: int = 1, base_width: int = 64, dilation: int = 1,
                 first_dilation: int | None = None, se_reduction: int | None = None,
                 drop_path: float = 0.0, norm: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError(f"BasicBlock takes groups=1 and width_per_group=64, got {groups}, {base_width}")
        self.conv1 = conv3x3(inplanes, planes, stride, dilation=first_dilation or dilation)
        self.bn1 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = norm(planes)
        self.se = SqueezeExcite(planes, se_reduction) if se_reduction else None
        self.downsample, self.shortcut_kind = make_shortcut(shortcut, inplanes, planes, stride, avg_down=avg_down,
                                                            norm=norm)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.add = ResidualAdd(self.shortcut_kind)
        self.stride = stride

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        return self.relu(self._add_shortcut(out, x))


class Bottleneck(_Block):
    """1x1 reduce, 3x3 (stride here, as torchvision's "ResNet v1.5"), 1x1 expand (ResNet-50+)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, *, shortcut: str | None = "B",
                 avg_down: bool = False, groups: int = 1, base_width: int = 64, dilation: int = 1,
                 first_dilation: int | None = None, se_reduction: int | None = None,
                 drop_path: float = 0.0, norm: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        outplanes = planes * self.expansion
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm(width)
        self.conv2 = conv3x3(width, width, stride, groups, first_dilation or dilation)
        self.bn2 = norm(width)
        self.conv3 = conv1x1(width, outplanes)
        self.bn3 = norm(outplanes)
        self.relu = nn.ReLU(inplace=True)
        self.se = SqueezeExcite(outplanes, se_reduction) if se_reduction else None
        self.downsample, self.shortcut_kind = make_shortcut(shortcut, inplanes, outplanes, stride,
                                                            avg_down=avg_down, norm=norm)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.add = ResidualAdd(self.shortcut_kind)
        self.stride = stride

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        return self.relu(self._add_shortcut(out, x))


class PreActBlock(_Block):
    """Pre-activation basic block (He et al. 2016, "Identity Mappings"), as in Wide ResNets.

    BN-ReLU comes before each conv; a projection (conv only, no BN) sees the pre-activated input.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, *, shortcut: str | None = "B",
                 avg_down: bool = False, groups: int = 1, base_width: int = 64, dilation: int = 1,
                 first_dilation: int | None = None, se_reduction: int | None = None,
                 drop_path: float = 0.0, norm: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        if groups != 1 or base_width != 64 or se_reduction:
            raise ValueError("PreActBlock takes no groups, width_per_group or SE")
        self.bn1 = norm(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(inplanes, planes, stride, dilation=first_dilation or dilation)
        self.bn2 = norm(planes)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.downsample, self.shortcut_kind = make_shortcut(
            shortcut, inplanes, planes, stride, avg_down=avg_down, norm=None)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.add = ResidualAdd(self.shortcut_kind)
        self.stride = stride

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        # The projection sees the pre-activated input; the identity path stays untouched.
        return self._add_shortcut(out, pre if self.downsample is not None else x)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck, "preact": PreActBlock}
STEMS = ("imagenet", "cifar", "deep")


def _stem(kind: str, in_chans: int, width: int, preact: bool, norm: Callable[[int], nn.Module],
          pool: str = "torchvision") -> dict[str, nn.Module]:
    """The stem's modules by torchvision name (``conv1``, ``bn1``, ``relu``, ``maxpool``); ``pool="caffe"``:
    Caffe's max-pool (no padding, output rounded up: same size, windows shifted by one pixel)."""
    if kind == "imagenet":
        conv: nn.Module = nn.Conv2d(in_chans, width, 7, 2, 3, bias=False)
    elif kind == "cifar":  # He et al. 2015 §4.2: 3x3 stride 1, no max-pool
        conv = conv3x3(in_chans, width)
    else:  # "deep": ResNet-C/D stem, three 3x3 convs; timm's names (conv1.0 .. conv1.6)
        mid = width // 2
        conv = nn.Sequential(
            conv3x3(in_chans, mid, 2), norm(mid), nn.ReLU(inplace=True),
            conv3x3(mid, mid), norm(mid), nn.ReLU(inplace=True), conv3x3(mid, width))
    mods: dict[str, nn.Module] = {"conv1": conv}
    if not preact:  # a pre-activation net starts its first block with BN-ReLU instead
        mods.update(bn1=norm(width), relu=nn.ReLU(inplace=True))
    if kind != "cifar":
        mods["maxpool"] = nn.MaxPool2d(3, 2, 0, ceil_mode=True) if pool == "caffe" else nn.MaxPool2d(3, 2, 1)
    return mods


class ResNet(ClassifierMixin, nn.Module):
    """Residual network of any depth, width, block and shortcut type.

    Args (each has the default of torchvision's ResNet-18/50 where one exists):
        block: "basic", "bottleneck" or "preact".
        layers: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18, (3, 3, 3) for ResNet-20.
        num_classes: classifier outputs; 0 keeps the pooled features (no classifier).
        in_chans: input channels (1 for grayscale).
        widths: base channels per stage (x4 for bottleneck outputs).
        stem: "imagenet" (7x7/2 + max-pool), "cifar" (3x3/1, no pool) or "deep" (3 x 3x3, ResNet-D).
        stem_width: channels out of the stem (default: widths[0]).
        shortcut: He et al. 2015 option "A" (zero-pad), "B" (project on shape change) or "C"
            (project always); "first": project in the first block of every stage, stage 1 included (the
            Caffe ResNet prototxts' ``res2a_branch1``); None builds the plain network with no shortcuts.
        stem_pool: "torchvision" (max-pool 3/2, pad 1) or "caffe" (pad 0, rounded up), for converted models.
        avg_down: ResNet-D shortcut (average-pool, then stride-1 projection).
        groups, width_per_group: ResNeXt cardinality / Wide ResNet width.
        se_reduction: add Squeeze-and-Excitation with this reduction (16 in Hu et al.).
        replace_stride_with_dilation: per stage after the first, dilate instead of stride
            (for DeepLabV3); allowed for BasicBlock nets too, unlike torchvision.
        drop_rate: dropout before the classifier. drop_path_rate: stochastic depth, linear rule.
        zero_init_residual: start each residual branch at zero (Goyal et al. 2017).
        norm_layer: "batch" (BatchNorm, the paper's), "group" (GroupNorm, batch-independent) or
            "none" (no normalisation: the control of the batch-norm experiment).
    """

    def __init__(self, block: str = "basic", layers: Sequence[int] = (2, 2, 2, 2), num_classes: int = 1000,
                 in_chans: int = 3, widths: Sequence[int] = (64, 128, 256, 512), stem: str = "imagenet",
                 stem_width: int | None = None, shortcut: str | None = "B", avg_down: bool = False,
                 groups: int = 1, width_per_group: int = 64, se_reduction: int | None = None,
                 replace_stride_with_dilation: Sequence[bool] | None = None, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, zero_init_residual: bool = False, norm_layer: str = "batch",
                 stem_pool: str = "torchvision") -> None:
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
        if norm_layer not in NORMS:
            raise ValueError(f"norm_layer must be one of {sorted(NORMS)}, got {norm_layer!r}")
        norm = NORMS[norm_layer]
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if shortcut == "none":
            shortcut = None
        if shortcut not in SHORTCUTS + ("first",):
            raise ValueError(f"shortcut must be 'A', 'B', 'C', 'first' or None (plain net), got {shortcut!r}")
        if stem_pool not in ("torchvision", "caffe"):
            raise ValueError(f"stem_pool must be 'torchvision' or 'caffe', got {stem_pool!r}")
        if len(widths) != len(layers) or not layers:
            raise ValueError(f"widths and layers need one entry per stage, got {widths!r} and {layers!r}")
        if shortcut is None and drop_path_rate > 0:
            raise ValueError("drop_path_rate drops residual branches; a plain net (shortcut=None) has none")
        if in_chans < 1 or num_classes < 0:
            raise ValueError(f"in_chans must be >= 1 and num_classes >= 0, got {in_chans!r}, {num_classes!r}")
        dil = list(replace_stride_with_dilation or [False] * (len(layers) - 1))
        if len(dil) != len(layers) - 1:
            raise ValueError(f"replace_stride_with_dilation needs {len(layers) - 1} entries, got {dil!r}")
        blk = BLOCKS[block]
        preact = blk is PreActBlock
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.has_shortcuts = "no" if shortcut is None else f"yes ({shortcut})"
        self.first_conv = "conv1.0" if stem == "deep" else "conv1"
        stem_width = stem_width or widths[0]
        for name, module in _stem(stem, in_chans, stem_width, preact, norm, stem_pool).items():
            self.add_module(name, module)

        reduction = 1 if stem == "cifar" else 2
        info = [FeatureSpec("conv1" if preact else "relu", stem_width, reduction)]
        reduction *= 1 if stem == "cifar" else 2  # max-pool
        n_blocks, idx, dilation, inplanes = sum(layers), 0, 1, stem_width
        for i, (n, w) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            first_dilation = dilation
            if i > 0 and dil[i - 1]:
                dilation, stride = dilation * stride, 1
            blocks = []
            for j in range(n):
                dpr = drop_path_rate * idx / max(n_blocks - 1, 1)
                kind = ("C" if j == 0 else "B") if shortcut == "first" else shortcut
                blocks.append(blk(inplanes, w, stride if j == 0 else 1, shortcut=kind, avg_down=avg_down,
                                  groups=groups, base_width=width_per_group, dilation=dilation,
                                  first_dilation=first_dilation if j == 0 else dilation,
                                  se_reduction=se_reduction, drop_path=dpr, norm=norm))
                inplanes, idx = w * blk.expansion, idx + 1
            reduction *= stride
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            info.append(FeatureSpec(f"layer{i + 1}", inplanes, reduction))
        self.final_norm = nn.Sequential(norm(inplanes), nn.ReLU(inplace=True)) if preact else None
        if preact:
            info[-1] = FeatureSpec("final_norm", inplanes, reduction)
        self.feature_info = FeatureInfo(info)
        self.num_features = inplanes
        self.min_input_size = reduction  # smaller inputs leave the last stage nothing but padding
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier_name = "fc"
        self.fc = linear_or_identity(inplanes, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """torchvision's initialisation: He-normal convs, unit BN; optionally zero last BN."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.bias is None:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, _Block):
                    m.zero_init_last()

    def trunk(self) -> list[tuple[str, nn.Module]]:
        names = ["conv1", "bn1", "relu", "maxpool"] + [n for n, _ in self.named_children() if n.startswith("layer")]
        names.append("final_norm")
        return [(n, getattr(self, n)) for n in names if getattr(self, n, None) is not None]
