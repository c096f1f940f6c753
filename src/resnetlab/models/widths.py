"""A model's architecture as its per-layer widths: what a pruned model is, saved without pickling a module.

Structured pruning (:mod:`resnetlab.compress.prune`) keeps every module name (``layer1.0.conv1``) and
changes only channel counts. So a pruned model is the registered model plus a JSON map of widths —
``{"layer1.0.conv1": ["conv", 48, 40, 1], "layer1.0.bn1": ["bn", 40], "fc": ["linear", 56, 10], ...}`` —
stored in a safetensors file's metadata (:data:`WIDTHS_KEY`) or a checkpoint's ``"widths"`` entry, and
applied to a freshly built model before its weights load. Torch-Pruning users otherwise save the whole
module with ``torch.save`` and load it back by unpickling, which resnetlab never does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
from torch import Tensor

from .base import FeatureInfo, FeatureSpec
from .layers import ShortcutA

__all__ = ["WIDTHS_KEY", "MODEL_KEY", "layer_widths", "apply_widths", "check_widths", "read_widths",
           "widths_metadata"]

WIDTHS_KEY = "resnetlab.widths"  # safetensors metadata: JSON of layer_widths(model)
MODEL_KEY = "resnetlab.model"  # safetensors metadata: the registered name the widths belong to


def _entry(m: nn.Module) -> list[Any] | None:
    if isinstance(m, nn.Conv2d):
        return ["conv", m.in_channels, m.out_channels, m.groups]
    if isinstance(m, nn.BatchNorm2d):
        return ["bn", m.num_features]
    if isinstance(m, nn.GroupNorm):
        return ["gn", m.num_groups, m.num_channels]
    if isinstance(m, nn.Linear):
        return ["linear", m.in_features, m.out_features]
    if isinstance(m, ShortcutA):
        return ["shortcut_a", m.in_chs, m.channel_map()]
    return None


def layer_widths(model: nn.Module) -> dict[str, list[Any]]:
    """Every width-carrying module by name: convs, norms, linears and option-A shortcuts."""
    return {name: e for name, m in model.named_modules() if (e := _entry(m)) is not None}


def widths_metadata(model: nn.Module) -> dict[str, str]:
    """The safetensors metadata that lets :func:`resnetlab.create_model` rebuild ``model``'s widths."""
    meta = {WIDTHS_KEY: json.dumps(layer_widths(model), separators=(",", ":"))}
    if getattr(model, "model_name", None):
        meta[MODEL_KEY] = str(model.model_name)
    return meta


def _rebuilt(old: nn.Module, spec: list[Any]) -> nn.Module:
    kind = spec[0]
    if kind == "conv":
        _, cin, cout, groups = spec
        new: nn.Module = nn.Conv2d(cin, cout, old.kernel_size, old.stride, old.padding, old.dilation, groups,
                                   bias=old.bias is not None, padding_mode=old.padding_mode)
    elif kind == "bn":
        new = nn.BatchNorm2d(spec[1], old.eps, old.momentum, old.affine, old.track_running_stats)
    elif kind == "gn":
        new = nn.GroupNorm(spec[1], spec[2], old.eps, old.affine)
    elif kind == "linear":
        new = nn.Linear(spec[1], spec[2], bias=old.bias is not None)
    else:
        old.set_channel_map(spec[2], spec[1])
        return old
    return new.to(next(old.parameters(), torch.empty(0)).device)


def apply_widths(model: nn.Module, widths: Mapping[str, Any], *, source: str = "widths",
                 input_size: tuple[int, int, int] | None = None) -> nn.Module:
    """Give ``model`` (freshly built, same registered name) the widths of ``widths``, in place.

    Modules whose width already matches are left alone, so an unpruned map is a no-op. The new
    modules are freshly initialised: load the weights afterwards. ``input_size`` (C, H, W) lets the
    model's ``feature_info`` and ``num_features`` follow the new widths.
    """
    own = layer_widths(model)
    extra = sorted(set(widths) - set(own))
    lacking = sorted(set(own) - set(widths))
    if extra or lacking:
        what = getattr(model, "model_name", type(model).__name__)
        raise ValueError(f"{source}: the widths do not describe this {what}"
                         f" (modules it lacks: {extra[:5]}, modules it does not list: {lacking[:5]})")
    changed = 0
    head, first = getattr(model, "classifier_name", None), getattr(model, "first_conv", None)
    for name, spec in widths.items():
        spec = list(spec)
        if not spec or spec[0] != own[name][0] or len(spec) != len(own[name]):
            raise ValueError(f"{source}: {name} is {own[name]!r} in the model, the widths say {spec!r}")
        if name == head and spec[0] == "linear":  # the model's classes win (the head is re-made for them)
            spec[2] = own[name][2]
        if name == first and spec[0] == "conv":  # and its input channels (load_weights adapts the weights)
            spec[1] = own[name][1]
        if spec == own[name]:
            continue
        if any(isinstance(v, int) and v < (0 if spec[0] == "shortcut_a" else 1) for v in spec[1:]):
            raise ValueError(f"{source}: {name} has widths {spec!r}; channel counts must be positive")
        parent, _, attr = name.rpartition(".")
        holder = model.get_submodule(parent) if parent else model
        setattr(holder, attr, _rebuilt(getattr(holder, attr), spec))
        changed += 1
    if changed and input_size is not None:
        _refresh_features(model, input_size)
    return model


def _refresh_features(model: nn.Module, input_size: tuple[int, int, int]) -> None:
    """Channels of ``feature_info`` and ``num_features`` measured by one forward pass at ``input_size``."""
    info = getattr(model, "feature_info", None)
    if not info or not hasattr(model, "forward_features"):
        return
    seen: dict[str, int] = {}
    hooks = [model.get_submodule(f.module).register_forward_hook(
        lambda _m, _i, out, name=f.module: seen.__setitem__(name, out.shape[1])) for f in info]
    was_training = model.training
    try:
        with torch.no_grad():
            feats = model.eval().forward_features(torch.zeros(1, *input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    model.feature_info = FeatureInfo(FeatureSpec(f.module, seen.get(f.module, f.num_chs), f.reduction) for f in info)
    if hasattr(model, "num_features"):
        model.num_features = int(feats.shape[1])


def check_widths(widths: Mapping[str, Any], state: Mapping[str, Tensor], source: str) -> None:
    """Refuse a file whose widths metadata does not match the shapes of its own tensors."""
    for name, spec in widths.items():
        w = state.get(f"{name}.weight")
        kind = spec[0]
        if kind == "conv":
            want = (spec[2], spec[1] // max(spec[3], 1))
        elif kind == "linear":
            want = (spec[2], spec[1])
        elif kind in ("bn", "gn"):
            want = (spec[-1],)
        else:
            continue
        if w is None:
            if kind in ("bn", "gn") and f"{name}.running_mean" not in state:
                continue  # a norm without affine weights
            raise ValueError(f"{source}: the widths metadata lists {name} ({spec!r}) but the file has no {name}.weight")
        if tuple(w.shape[:len(want)]) != want:
            raise ValueError(f"{source}: the widths metadata says {name} is {spec!r}, but {name}.weight has shape "
                             f"{tuple(w.shape)}: the metadata does not match the tensors")


def read_widths(path: str | os.PathLike) -> tuple[dict[str, Any] | None, str | None]:
    """``(widths, model name)`` stored with a safetensors file or a resnetlab checkpoint; ``(None, None)``
    for files that carry none (plain state dicts, torchvision weights)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
        if WIDTHS_KEY not in meta:
            return None, meta.get(MODEL_KEY)
        try:
            widths = json.loads(meta[WIDTHS_KEY])
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: metadata {WIDTHS_KEY} is not valid JSON ({e})") from None
        if not isinstance(widths, dict) or not all(isinstance(v, list) and v for v in widths.values()):
            raise ValueError(f"{path}: metadata {WIDTHS_KEY} must map module names to width lists")
        return widths, meta.get(MODEL_KEY)
    if path.is_file() and path.suffix in (".pt", ".pth"):  # a resnetlab checkpoint keeps them beside "model"
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            return None, None  # not ours to judge: read_state_dict reports unreadable files
        if isinstance(ck, dict) and isinstance(ck.get("widths"), dict):
            return ck["widths"], ck.get("model_name")
    return None, None
