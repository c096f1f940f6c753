"""What an inference artefact must carry besides its weights: class names and preprocessing.

Every exported artefact embeds this as JSON (ONNX metadata_props, OpenVINO rt_info, pt2 and
TorchScript extra files) so that a file alone is enough to predict correctly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from ..data.preprocess import Preprocess
from ..models.registry import get_entry

__all__ = ["ModelMeta", "META_KEY", "EXTRA_FILE"]

META_KEY = "resnetlab"  # key of the JSON blob inside every artefact
EXTRA_FILE = f"{META_KEY}.json"  # its name among a pt2 / TorchScript archive's extra files


@dataclass(frozen=True)
class ModelMeta:
    """Class names and the evaluation :class:`Preprocess` a model expects."""

    classes: tuple[str, ...]  # index -> name
    preprocess: Preprocess = field(default_factory=Preprocess)
    model: str = ""  # registry name, when known
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"precision": "int8", "operating_point": {...}}

    @property
    def in_chans(self) -> int:
        return self.preprocess.in_chans

    @property
    def image_size(self) -> int:
        return self.preprocess.image_size

    def to_json(self) -> str:
        return json.dumps({"classes": list(self.classes), "preprocess": self.preprocess.to_dict(),
                           "model": self.model, "extra": self.extra}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "artefact") -> ModelMeta:
        try:
            d = json.loads(text)
            # artefacts of resnetlab <= 0.1 carried the preprocessing as flat fields
            pre = d["preprocess"] if "preprocess" in d else {k: d[k] for k in ("preset", "image_size", "mean", "std",
                                                                              "in_chans")}
            return cls(classes=tuple(d["classes"]), preprocess=Preprocess.from_dict(pre, where),
                       model=d.get("model", ""), extra=dict(d.get("extra", {})))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{where}: its resnetlab metadata is unreadable ({type(e).__name__}: {e})") from None

    @classmethod
    def from_trained(cls, trained: Any) -> ModelMeta:
        """From a :class:`resnetlab.eval.TrainedModel` (a checkpoint's model, classes and preprocessing)."""
        point, task = getattr(trained, "operating_point", None), getattr(trained, "task", "multiclass")
        extra = {**({"operating_point": point} if point else {}), **({"task": task} if task != "multiclass" else {})}
        return cls(classes=tuple(trained.classes), preprocess=trained.preprocess, model=trained.name, extra=extra)

    @classmethod
    def for_module(cls, model: nn.Module, image_size: int | None = None) -> ModelMeta:
        """Defaults for a bare module: its registry input size, ImageNet statistics, classes '0'..'N-1'."""
        name = getattr(model, "model_name", "") or ""
        size = image_size
        if size is None:
            try:
                size = get_entry(name).input_size[-1] if name else 224
            except (KeyError, ValueError):
                size = 224
        n = int(getattr(model, "num_classes", 0) or _out_features(model))
        pre = Preprocess.for_data("cifar" if size <= 64 else "imagenet", size, int(getattr(model, "in_chans", 3)))
        return cls(classes=tuple(str(i) for i in range(n)), preprocess=pre, model=name)


def _out_features(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError(f"cannot tell how many classes {type(model).__name__} predicts: give classes=[...]")
    return last[-1].out_features
