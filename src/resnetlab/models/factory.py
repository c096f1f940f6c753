"""``create_model``: name -> model, with weights and the ``features_only`` backbone view."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch.nn as nn

from .weights import load_weights, read_state_dict
from .base import FeatureExtractor
from .registry import build_model, get_entry
from .widths import apply_widths, check_widths, read_widths

__all__ = ["create_model"]


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int = 3,
    weights: str | os.PathLike | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    strict: bool = True,
    layer_widths: Mapping[str, Any] | None = None,
    **options: Any,
) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: one of :func:`resnetlab.list_models`.
        num_classes: classifier outputs; None keeps the model's own default (1000 for ImageNet
            models, 10 for the CIFAR networks); 0 removes the classifier.
        in_chans: input channels; pretrained first convs are adapted (summed over RGB for 1).
        weights: a torchvision-style state dict (.pth/.pt), a safetensors file or a resnetlab
            checkpoint; loaded with ``weights_only=True``, never unpickled.
        features_only: return a backbone giving the feature maps at ``out_indices``
            (default C2..C5, i.e. indices 1..4) with ``feature_info`` (channels, stride).
        strict: refuse weights with missing, unexpected or mis-shaped tensors.
        layer_widths: per-layer widths of a pruned model (:func:`resnetlab.models.widths.layer_widths`);
            read from ``weights`` when that file carries them (a pruned safetensors file or checkpoint).
        **options: model options (``shortcut``, ``stem``, ``drop_path_rate``...); an unknown
            one raises a ValueError listing what the model takes.
    """
    if out_indices is not None and not features_only:
        raise ValueError("out_indices is only used with features_only=True")
    kwargs = dict(options, in_chans=in_chans)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = build_model(name, **kwargs)
    state, widths, saved_from = None, layer_widths, None
    if weights is not None and widths is None:
        widths, saved_from = read_widths(weights)
        if saved_from and saved_from != name:
            widths = None  # another model's widths: load as is, and say whose file it is if it does not fit
        elif widths is not None:
            state = read_state_dict(weights)
            check_widths(widths, state, str(weights))
    if widths is not None:
        size = get_entry(name).input_size
        apply_widths(model, widths, source=str(weights or "widths"), input_size=(in_chans, *size[1:]))
    if weights is not None:
        try:
            load_weights(model, state if state is not None else weights, strict=strict)
        except ValueError as e:
            if saved_from and saved_from != name:
                raise ValueError(f"{e}\n(the file was saved from a {saved_from!r} model: "
                                 f"create_model({saved_from!r}, weights=...) rebuilds it)") from None
            raise
    if features_only:
        model = FeatureExtractor(model, out_indices)
        model.model_name = name  # type: ignore[assignment]
    return model
