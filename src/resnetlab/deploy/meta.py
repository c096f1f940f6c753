"""What an inference artefact must carry besides its weights: class names and preprocessing.

Every exported artefact embeds this as JSON (ONNX metadata_props, OpenVINO rt_info, pt2 and
TorchScript extra files) so that a file alone is enough to predict correctly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch.nn as nn

from ..data.augment import MEAN_STD

__all__ = ["ModelMeta", "META_KEY"]

META_KEY = "resnetlab"  # key of the JSON blob inside every artefact


@dataclass(frozen=True)
class ModelMeta:
    """Class names and the eval preprocessing a model expects (the checkpoint's eval transform)."""

    classes: tuple[str, ...]  # index -> name
    preset: str = "imagenet"  # eval transform: "imagenet" (resize size/0.875, centre crop) or "cifar" (resize)
    image_size: int = 224  # H = W of the network input
    mean: tuple[float, ...] = MEAN_STD["imagenet"][0]
    std: tuple[float, ...] = MEAN_STD["imagenet"][1]
    in_chans: int = 3
    model: str = ""  # registry name, when known
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"precision": "int8", "calibration": ...}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "artefact") -> "ModelMeta":
        try:
            d = json.loads(text)
            return cls(classes=tuple(d["classes"]), preset=d["preset"], image_size=int(d["image_size"]),
                       mean=tuple(d["mean"]), std=tuple(d["std"]), in_chans=int(d["in_chans"]),
                       model=d.get("model", ""), extra=dict(d.get("extra", {})))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{where}: its resnetlab metadata is unreadable ({type(e).__name__}: {e})") from None

    @classmethod
    def from_trained(cls, trained: Any) -> "ModelMeta":
        """From a :class:`resnetlab.inference.TrainedModel` (a checkpoint's model, classes and transform)."""
        et = trained.eval_transform
        return cls(classes=tuple(trained.classes), preset=et["preset"], image_size=int(et["image_size"]),
                   mean=tuple(et["mean"]), std=tuple(et["std"]), in_chans=int(trained.in_chans), model=trained.name)

    @classmethod
    def for_module(cls, model: nn.Module, image_size: int | None = None) -> "ModelMeta":
        """Defaults for a bare module: its registry input size, ImageNet statistics, classes '0'..'N-1'."""
        from ..models.registry import get_entry

        name = getattr(model, "model_name", "") or ""
        size = image_size
        if size is None:
            try:
                size = get_entry(name).input_size[-1] if name else 224
            except (KeyError, ValueError):
                size = 224
        n = int(getattr(model, "num_classes", 0) or _out_features(model))
        in_chans = int(getattr(model, "in_chans", 3))
        preset = "cifar" if size <= 64 else "imagenet"
        mean, std = MEAN_STD[preset]
        return cls(classes=tuple(str(i) for i in range(n)), preset=preset, image_size=size, mean=mean, std=std,
                   in_chans=in_chans, model=name)


def _out_features(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError(f"cannot tell how many classes {type(model).__name__} predicts: give classes=[...]")
    return last[-1].out_features
