"""Pretrained weights to fine-tune from: a file you have, or torchvision's published ImageNet weights.

``torchvision`` means the DEFAULT weights torchvision publishes for the model's torchvision twin
(``resnet18`` -> ``ResNet18_Weights.IMAGENET1K_V1``, file ``resnet18-f37072fd.pth``). They are read from
the torch hub cache (``$TORCH_HOME/hub/checkpoints``), where torchvision itself keeps them, after checking
that the file's sha256 starts with the 8 hex digits in its name (torch.hub's rule); when the file is
absent they are downloaded (timeout, retries, the same check) if the network allows, and otherwise the
error says exactly which file to put where.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..utils.download import download_file, file_digest
from .registry import get_entry, list_models

__all__ = ["TORCHVISION", "torchvision_weights", "resolve_pretrained"]

TORCHVISION = "torchvision"


def _published(model_name: str) -> tuple[str, str]:
    """(torchvision weights enum name, download URL) of the model's torchvision twin."""
    twin = get_entry(model_name).torchvision
    if twin is None:
        having = [m for m in list_models() if get_entry(m).torchvision]
        raise ValueError(f"pretrained='torchvision': {model_name} has no torchvision twin with published weights; "
                         f"models that have one: {', '.join(having)}; or pass a weights file")
    from torchvision.models import get_model_weights

    weights = get_model_weights(twin).DEFAULT
    return f"{type(weights).__name__}.{weights.name}", weights.url


def torchvision_weights(model_name: str, *, download: bool = True, timeout: float = 30.0, retries: int = 1,
                        progress: bool = True) -> Path:
    """The torch hub cache file of ``model_name``'s torchvision weights, checked (and fetched if absent)."""
    label, url = _published(model_name)
    name = url.rsplit("/", 1)[-1]
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    prefix = name.rsplit("-", 1)[-1].split(".")[0]  # resnet18-f37072fd.pth -> f37072fd
    if path.is_file():
        digest = file_digest(path)
        if not digest.startswith(prefix):
            raise ValueError(f"{path}: sha256 {digest[:16]}... does not start with {prefix}, as the published file "
                             f"{name} does; it is damaged or another file: delete it and fetch {url} again")
        return path
    if download:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return download_file(url, path, expected=prefix, algorithm="sha256", timeout=timeout, retries=retries,
                                 progress=progress)
        except OSError as e:
            reason = f"downloading it failed ({e})"
    else:
        reason = "downloading was not allowed"
    raise FileNotFoundError(f"torchvision's {label} weights for {model_name} are not in the torch hub cache and "
                            f"{reason}. Fetch {url} on a machine with network access and put it at {path} "
                            f"(its sha256 starts with {prefix}); resnetlab then finds it there")


def resolve_pretrained(spec: str | os.PathLike, model_name: str, **download: Any) -> tuple[Path, dict[str, Any]]:
    """The weights file ``spec`` names ("torchvision" or a path) and a record of where it came from
    (what a checkpoint stores): ``{"source", "file", "sha256"}``."""
    if str(spec) == TORCHVISION:
        path = torchvision_weights(model_name, **download)
        source = f"torchvision {_published(model_name)[0]}"
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights not found: {path} (give a .pth/.pt state dict, a "
                                    f"safetensors file, a resnetlab checkpoint or run directory, or 'torchvision')")
        source = "file"
    return path, {"source": source, "file": str(path), "sha256": file_digest(path)}
