"""Trained models back from their checkpoints, for evaluation (top-k prediction: resnetlab.Predictor).

A resnetlab checkpoint records the model name and options, the class names and the eval
transform (preset, input size, mean/std), so a checkpoint alone is enough to predict.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn as nn

from .models import create_model
from .train.checkpoint import load_checkpoint
from .weights import load_weights

__all__ = ["TrainedModel", "load_trained", "checkpoint_path", "collect_logits", "split_batches"]


@dataclass
class TrainedModel:
    model: nn.Module
    classes: list[str]
    eval_transform: dict[str, Any]  # preset, image_size, mean, std
    in_chans: int
    name: str
    config: dict[str, Any]


def checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory (its best.pt, else last.pt)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path} holds no best.pt or last.pt checkpoint")
    return path


def load_trained(checkpoint: str | os.PathLike, *, ema: bool = False,
                 device: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild the model a checkpoint was trained as and load its (or its EMA's) weights."""
    ck = load_checkpoint(checkpoint_path(checkpoint))
    model = create_model(ck["model_name"], num_classes=ck["num_classes"], in_chans=ck["in_chans"],
                         **ck["model_kwargs"])
    state = ck["model"]
    if ema:
        if not ck.get("ema"):
            raise ValueError(f"{checkpoint}: this run kept no EMA weights (train with --ema-decay)")
        state = {k[len("module."):]: v for k, v in ck["ema"].items() if k.startswith("module.")}
    load_weights(model, state)
    return TrainedModel(model.to(device).eval(), list(ck["classes"]), dict(ck["eval_transform"]), ck["in_chans"],
                        ck["model_name"], dict(ck["config"]))


def split_batches(trained: TrainedModel, data: str | os.PathLike | None, split: str, *, batch_size: int = 256,
                  limit_batches: int | None = None, progress: bool = False):
    """(batches, dataset, config): one split of ``data`` (default: the run's own data) under the checkpoint's
    eval transform. ``limit_batches`` takes a fixed random subset (seeded), not the first classes."""
    from .data import open_dataset, resolve_data_root
    from .train.config import from_dict
    from .train.distributed import DistInfo
    from .train.loaders import DataBundle, make_batches

    cfg = from_dict({**trained.config, "data": str(data) if data else trained.config["data"], "eval_split": "val",
                     "eval_batch_size": batch_size, "limit_eval_batches": limit_batches})
    root = resolve_data_root(cfg.data, cache_dir=cfg.cache_dir)
    ds = open_dataset(root, split, val_split=cfg.val_split, seed=cfg.seed, cache_dir=cfg.cache_dir, progress=progress)
    if list(ds.classes) != trained.classes:
        raise ValueError(f"the {split} split's classes {list(ds.classes)} differ from the checkpoint's "
                         f"{trained.classes}")
    et = trained.eval_transform
    bundle = DataBundle(ds, ds, trained.classes, trained.in_chans, tuple(et["mean"]), tuple(et["std"]),
                        et["image_size"])
    return make_batches(bundle, cfg, DistInfo(), train=False), ds, cfg


@torch.no_grad()
def collect_logits(model: nn.Module, batches: Iterable, *, device: torch.device, channels_last: bool = False,
                   amp: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` over evaluation batches; returns (logits float32 on CPU, targets)."""
    model.eval()
    logits, targets = [], []
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    for x, y, _ in batches:
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=amp != "none"):
            logits.append(model(x).float().cpu())
        targets.append(y)
    if not logits:
        raise ValueError("no evaluation batches: the data set is empty")
    return torch.cat(logits), torch.cat(targets)
