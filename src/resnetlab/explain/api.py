"""``explain()``: class-activation maps of a model or checkpoint for a batch of images.

A checkpoint brings its own preprocessing (size, grayscale, normalisation, DICOM window), so image files
and PIL images are read exactly as ``eval`` and the ``Predictor`` read them. Exported artefacts (ONNX,
OpenVINO, TorchScript, int8) carry no gradients: explanations need the PyTorch checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
import torch.nn as nn
from PIL import Image
from torch import Tensor

from ..data.folder import load_image
from ..data.preprocess import Preprocess
from ..eval.loading import TrainedModel, load_trained
from .cam import cam_maps, normalize_maps, upsample_maps
from .layers import find_layer

__all__ = ["Explanation", "explain", "resolve_targets", "load_explainable", "EXPORTED_SUFFIXES"]

ImageLike = Union[str, os.PathLike, Image.Image]
EXPORTED_SUFFIXES = (".onnx", ".xml", ".bin", ".ts", ".torchscript", ".pt2", ".engine", ".tflite")


@dataclass
class Explanation:
    """Maps for N images: ``maps`` (N, H, W) in [0, 1] at the input size, ``raw`` (N, h, w) as the method
    gives them at the layer, the class explained per image, and the model's probabilities."""

    maps: Tensor
    raw: Tensor
    targets: Tensor
    probs: Tensor
    layer: str
    method: str
    classes: list[str]
    inputs: Tensor = field(repr=False)  # the preprocessed inputs (N, C, H, W)

    def topk(self, k: int = 3) -> list[list[tuple[str, float]]]:
        p, i = self.probs.topk(min(k, self.probs.shape[1]), dim=1)
        return [[(self.classes[c], float(v)) for v, c in zip(pv, ic)] for pv, ic in zip(p.tolist(), i.tolist())]

    def record(self, i: int, k: int = 3) -> dict[str, Any]:
        """One image's explanation as JSON-ready data (the low-resolution map included)."""
        t = int(self.targets[i])
        target = {"index": t, "class": self.classes[t], "prob": float(self.probs[i, t])}
        return {"method": self.method, "layer": self.layer, "target": target,
                "top": [{"class": c, "prob": p} for c, p in self.topk(k)[i]], "map_shape": list(self.raw.shape[1:]),
                "map": [[round(float(v), 6) for v in row] for row in self.raw[i].tolist()]}


def load_explainable(source: TrainedModel | str | os.PathLike, device: str = "cpu") -> TrainedModel:
    """A checkpoint (or run directory) as a :class:`TrainedModel`; exported artefacts are refused."""
    if isinstance(source, TrainedModel):
        return source
    if Path(source).suffix.lower() in EXPORTED_SUFFIXES:
        raise ValueError(f"{source} is an exported artefact ({Path(source).suffix}), which carries no gradients: "
                         f"explanations need the PyTorch checkpoint (best.pt / last.pt or its run directory)")
    return load_trained(source, device=device)


def resolve_targets(target: str | int | Sequence[str | int], logits: Tensor, classes: Sequence[str]) -> Tensor:
    """Per image, the class index to explain: "top" (the prediction), an index, or a class name (one for
    all images, or one per image)."""
    n, c = logits.shape
    items = list(target) if isinstance(target, (list, tuple)) else [target] * n
    if len(items) != n:
        raise ValueError(f"target gives {len(items)} classes for {n} images")
    out = []
    for item in items:
        if item == "top":
            out.append(-1)
            continue
        if isinstance(item, str) and not item.lstrip("-").isdigit():
            if item not in classes:
                raise ValueError(f"target class {item!r} is not one of the model's classes: {', '.join(classes)}")
            out.append(list(classes).index(item))
            continue
        idx = int(item)
        if not 0 <= idx < c:
            raise ValueError(f"target index {idx} is out of range for {c} classes (0..{c - 1})")
        out.append(idx)
    t = torch.tensor(out, dtype=torch.long)
    return torch.where(t < 0, logits.argmax(1).cpu(), t)


def _prepare(images: Tensor | ImageLike | Sequence[ImageLike], pre: Preprocess | None) -> Tensor:
    if isinstance(images, Tensor):
        return images.unsqueeze(0) if images.dim() == 3 else images
    items = [images] if isinstance(images, (str, os.PathLike, Image.Image)) else list(images)
    if pre is None:
        raise ValueError("image files or PIL images need a preprocessing: pass a checkpoint, or preprocess=...")
    mode, transform = ("L" if pre.in_chans == 1 else "RGB"), pre.image_transform()
    out = []
    for item in items:
        try:
            img = item.convert(mode) if isinstance(item, Image.Image) else load_image(str(item), mode,
                                                                                         window=pre.window)
        except Exception as e:  # noqa: BLE001 - any undecodable file, named
            raise ValueError(f"cannot read image {str(item)!r}: {type(e).__name__}: {e}") from None
        out.append(transform(img))
    return torch.stack(out)


def explain(model_or_checkpoint: nn.Module | TrainedModel | str | os.PathLike,
            images: Tensor | ImageLike | Sequence[ImageLike], *, method: str = "gradcam", layer: str = "auto",
            target: str | int | Sequence[str | int] = "top", classes: Sequence[str] | None = None,
            preprocess: Preprocess | None = None, batch_size: int = 32, device: str = "cpu") -> Explanation:
    """Class-activation maps of ``images`` (a preprocessed (N, C, H, W) tensor, or files / PIL images read
    with the checkpoint's preprocessing) for ``target`` with ``method`` at ``layer``.

    The model is used in eval mode and left as it was; nothing is kept between calls."""
    if isinstance(model_or_checkpoint, nn.Module):
        model, names, pre, multilabel = model_or_checkpoint, classes, preprocess, False
    else:
        trained = load_explainable(model_or_checkpoint, device)
        model, names, pre = trained.model, trained.classes, preprocess or trained.preprocess
        multilabel = trained.task == "multilabel"
    x = _prepare(images, pre).to(device)
    name, module = find_layer(model, layer, tuple(x.shape[1:]))
    was_training = model.training
    model.eval()
    parts: dict[str, list[Tensor]] = {"raw": [], "logits": [], "targets": []}
    try:
        for s in range(0, len(x), batch_size):
            xb = x[s:s + batch_size]
            with torch.no_grad():
                logits = model(xb)
            wanted = target[s:s + batch_size] if isinstance(target, (list, tuple)) else target
            names = list(names) if names is not None else [str(i) for i in range(logits.shape[1])]
            t = resolve_targets(wanted, logits, names)
            raw, logits, t = cam_maps(model, module, xb, t, method, batch_size=max(batch_size, 32))
            for key, value in (("raw", raw), ("logits", logits), ("targets", t)):
                parts[key].append(value.cpu())
    finally:
        model.train(was_training)
    raw = torch.cat(parts["raw"])
    logits = torch.cat(parts["logits"])
    probs = logits.sigmoid() if multilabel else logits.softmax(1)
    maps = normalize_maps(upsample_maps(raw, tuple(x.shape[-2:])))
    return Explanation(maps, raw, torch.cat(parts["targets"]), probs, name, method, list(names), x.cpu())
