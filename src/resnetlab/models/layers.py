"""Small building blocks shared by the model files: shortcuts, SE, stochastic depth."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ResidualAdd", "ShortcutA", "SqueezeExcite", "DropPath", "conv3x3", "conv1x1", "make_shortcut", "group_norm",
           "NORMS"]


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, padding=dilation, groups=groups, bias=False, dilation=dilation)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class ResidualAdd(nn.Module):
    """The residual addition ``branch + shortcut`` as a named submodule (``layer1.0.add``) of every block.

    Being a module, it is where forward hooks see a block's two paths and their sum: gradient-flow
    analysis, summaries and explanations hook it instead of patching the blocks. In a plain network
    (``kind=None``) there is no shortcut and it passes the branch through.
    """

    def __init__(self, kind: str | None = "identity") -> None:
        super().__init__()
        self.kind = kind  # None (plain), "identity", "A" (zero-pad) or "projection"

    def forward(self, branch: Tensor, shortcut: Tensor | None) -> Tensor:
        return branch if shortcut is None else branch + shortcut

    def extra_repr(self) -> str:
        return f"shortcut={self.kind}"


class ShortcutA(nn.Module):
    """He et al. 2015 option A: identity with strided subsampling and zero-padded extra channels.

    It has no parameters, which is the point of option A (paper §3.3 and Table 3). After structured
    pruning the identity is no longer "the first ``in_chs`` channels": ``channel_map[j]`` says which
    input channel output ``j`` carries (-1: zeros), so both sides of the addition can lose channels
    independently (:mod:`resnetlab.compress.prune`).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, channel_map: Sequence[int] | None = None) -> None:
        super().__init__()
        if out_chs < in_chs:
            raise ValueError(f"option A shortcut cannot reduce channels ({in_chs} -> {out_chs})")
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride
        self.mapped = False
        if channel_map is not None:
            self.set_channel_map(channel_map, in_chs)

    def channel_map(self) -> list[int]:
        """Output channel j carries input channel ``map[j]``; -1 is a zero channel."""
        if self.mapped:
            return [-1 if v == self.in_chs else int(v) for v in self.index.tolist()]
        return list(range(self.in_chs)) + [-1] * (self.out_chs - self.in_chs)

    def set_channel_map(self, channel_map: Sequence[int], in_chs: int) -> None:
        cmap = [int(v) for v in channel_map]
        used = [v for v in cmap if v != -1]
        if not cmap or any(not 0 <= v < in_chs for v in used) or len(set(used)) != len(used):
            raise ValueError(f"a channel map lists distinct input channels in [0, {in_chs}) or -1 (zeros), "
                             f"got {cmap!r}")
        self.in_chs, self.out_chs, self.mapped = in_chs, len(cmap), True
        # index in_chs is the zero channel appended in forward; a buffer, so it moves with .to(device)
        index = torch.tensor([v if v != -1 else in_chs for v in cmap], dtype=torch.long)
        self.register_buffer("index", index, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.mapped:
            return F.pad(x, (0, 0, 0, 0, 0, 1)).index_select(1, self.index)
        if self.out_chs != self.in_chs:
            x = F.pad(x, (0, 0, 0, 0, 0, self.out_chs - self.in_chs))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_chs}, {self.out_chs}, stride={self.stride}" + (", mapped" if self.mapped else "")


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al. 2018): channel gates from globally pooled features."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.relu(self.fc1(s))))


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a residual branch per sample while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p!r}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm (Wu & He 2018): 32 groups, or fewer where they do not divide the channels.

    Independent of the batch, so small per-GPU batches and DDP ranks see the same statistics.
    """
    return nn.GroupNorm(math.gcd(32, channels), channels)


def no_norm(channels: int) -> nn.Identity:
    """No normalisation: the control for the batch-norm experiment."""
    return nn.Identity()


NORMS = {"batch": nn.BatchNorm2d, "group": group_norm, "none": no_norm}
SHORTCUTS = ("A", "B", "C", None)


def make_shortcut(
    kind: str | None,
    in_chs: int,
    out_chs: int,
    stride: int,
    *,
    avg_down: bool = False,
    norm: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
) -> tuple[nn.Module | None, str | None]:
    """The shortcut of one block and its kind for reports.

    A projection is needed whenever the shape changes — a stride other than 1 *or* a change of
    channels; checking channels alone breaks a stride-2 block with equal widths.
    Returns ``(module or None, kind)`` where kind is None (no shortcut: plain net),
    ``"identity"``, ``"A"`` (zero-pad) or ``"projection"``.
    """
    if kind is None:
        return None, None
    reshape = stride != 1 or in_chs != out_chs
    if kind == "A":
        return (ShortcutA(in_chs, out_chs, stride), "A") if reshape else (None, "identity")
    if kind == "B" and not reshape:
        return None, "identity"
    layers: list[nn.Module] = []
    if avg_down and stride != 1:  # ResNet-D (He et al. 2019): pool, then a stride-1 projection
        layers.append(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False))
        stride = 1
    layers.append(conv1x1(in_chs, out_chs, stride))
    if norm is not None:
        layers.append(norm(out_chs))
    if len(layers) == 1:
        return layers[0], "projection"
    return nn.Sequential(*layers), "projection"
