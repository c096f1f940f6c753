"""The interface every resnetlab model shares (after timm): a trunk, a head, and feature maps.

A model is a *trunk* — an ordered list of named modules whose sequential application is
``forward_features`` — followed by a head (pool, optional dropout, classifier). Because the
trunk is explicit, ``features_only`` backbones need no hooks and stay traceable for export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["FeatureSpec", "FeatureInfo", "ClassifierMixin", "FeatureExtractor", "check_input"]


@dataclass(frozen=True)
class FeatureSpec:
    """One feature map the trunk exposes: the module that produces it, channels, stride."""

    module: str  # trunk name after which the map is taken, e.g. "layer1"
    num_chs: int  # channels of the map
    reduction: int  # stride relative to the input


class FeatureInfo(list):
    """A list of :class:`FeatureSpec` with timm's helpers."""

    def channels(self) -> list[int]:
        return [f.num_chs for f in self]

    def reduction(self) -> list[int]:
        return [f.reduction for f in self]

    def module_name(self) -> list[str]:
        return [f.module for f in self]


def _is_fx_tracing() -> bool:
    mod = torch.fx._symbolic_trace
    fn = getattr(mod, "is_fx_symbolic_tracing", None) or getattr(mod, "is_fx_tracing", None)
    return bool(fn and fn())


def check_input(x: Tensor, in_chans: int, min_size: int, name: str) -> None:
    """Refuse an input the network cannot take, saying what it got and what it needs."""
    if _is_fx_tracing() or torch.jit.is_scripting() or torch.jit.is_tracing():
        return
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} expects a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} expects a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(
            f"{name} expects {in_chans} input channel(s), got {x.shape[1]} (input shape "
            f"{tuple(x.shape)}); build it with in_chans={x.shape[1]} or convert the images"
        )
    h, w = x.shape[-2:]
    if h < min_size or w < min_size:
        raise ValueError(
            f"{name} needs inputs of at least {min_size}x{min_size} pixels, got {h}x{w}"
        )


class ClassifierMixin:
    """Shared ``forward`` / ``forward_features`` / ``forward_head`` / ``reset_classifier``.

    A subclass sets ``num_classes``, ``in_chans``, ``num_features``, ``min_input_size``,
    ``feature_info``, ``first_conv`` and ``classifier_name`` and implements ``trunk()``,
    ``forward_head()`` and ``reset_classifier()``.
    """

    num_classes: int
    in_chans: int
    num_features: int  # width of the pooled features that feed the classifier
    min_input_size: int  # smallest H and W the net takes
    feature_info: FeatureInfo
    first_conv: str  # state-dict prefix of the first convolution (adapted for in_chans)
    classifier_name: str  # state-dict prefix of the classifier (re-initialised for num_classes)
    has_shortcuts: str = "no"  # "yes (B)", "yes (A)", "no", "dense": for tables

    def trunk(self) -> list[tuple[str, nn.Module]]:
        raise NotImplementedError

    def forward_features(self, x: Tensor) -> Tensor:
        for _, module in self.trunk():
            x = module(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Default head: ``avgpool``, optional dropout (``drop_rate``), ``fc``."""
        x = self.avgpool(x).flatten(1)
        if getattr(self, "drop_rate", 0.0) > 0:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the ``fc`` classifier (0: none, the head returns pooled features)."""
        self.num_classes = num_classes
        self.fc = linear_or_identity(self.num_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_chans, self.min_input_size, type(self).__name__)
        return self.forward_head(self.forward_features(x))

    def adapt_state_dict(self, state_dict: dict[str, Tensor]) -> list[str]:
        """Model-specific fix-ups of a foreign state dict; returns messages. Default: none."""
        return []


def linear_or_identity(in_features: int, num_classes: int) -> nn.Module:
    return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()


class FeatureExtractor(nn.Module):
    """A backbone returning the trunk's feature maps at ``out_indices`` (C2..C5 by default).

    The trunk's top-level modules are adopted under their own names, so the state dict keys are
    the classifier's minus its head: weights load unchanged. Stages past the last requested map
    are not run.
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        info = model.feature_info
        if out_indices is None:
            out_indices = tuple(range(1, len(info)))
        out_indices = tuple(out_indices)
        bad = [i for i in out_indices if not isinstance(i, int) or not 0 <= i < len(info)]
        if bad or not out_indices:
            raise ValueError(
                f"out_indices must be a non-empty sequence of ints in 0..{len(info) - 1} for "
                f"{type(model).__name__} ({', '.join(info.module_name())}), got {out_indices!r}"
            )
        self.out_indices = out_indices = tuple(sorted(set(out_indices)))
        self.feature_info = FeatureInfo(info[i] for i in out_indices)
        self.in_chans, self.min_input_size = model.in_chans, model.min_input_size
        self._name = type(model).__name__
        stages = model.trunk()
        names = [n for n, _ in stages]
        self._taps = {names.index(info[i].module) for i in out_indices}
        self._stages = stages[: max(self._taps) + 1]
        for name, child in model.named_children():
            if any(n == name or n.startswith(name + ".") for n, _ in self._stages):
                self.add_module(name, child)

    def forward(self, x: Tensor) -> list[Tensor]:
        check_input(x, self.in_chans, self.min_input_size, self._name)
        out = []
        for i, (_, module) in enumerate(self._stages):
            x = module(x)
            if i in self._taps:
                out.append(x)
        return out
