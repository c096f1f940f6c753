"""``create_model``: name -> model, with weights and the ``features_only`` backbone view."""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch.nn as nn

from .weights import load_weights
from .base import FeatureExtractor
from .registry import build_model

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
        **options: model options (``shortcut``, ``stem``, ``drop_path_rate``...); an unknown
            one raises a ValueError listing what the model takes.
    """
    if out_indices is not None and not features_only:
        raise ValueError("out_indices is only used with features_only=True")
    kwargs = dict(options, in_chans=in_chans)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = build_model(name, **kwargs)
    if weights is not None:
        load_weights(model, weights, strict=strict)
    if features_only:
        model = FeatureExtractor(model, out_indices)
        model.model_name = name  # type: ignore[assignment]
    return model
