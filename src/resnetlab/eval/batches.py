"""Evaluation batches from a data set and a :class:`Preprocess` (no training configuration), and the
loop that turns them into logits."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn

from ..data import ArrayDataset, FolderDataset, open_dataset, resolve_data_root
from ..data.batches import ArrayBatches, FolderBatches
from ..data.preprocess import Preprocess
from .loading import TrainedModel

__all__ = ["eval_batches", "open_split", "collect_logits"]


def eval_batches(ds: ArrayDataset | FolderDataset, preprocess: Preprocess, *, batch_size: int = 256,
                 limit_batches: int | None = None, seed: int = 0, workers: int = 0) -> ArrayBatches | FolderBatches:
    """Every sample of ``ds`` once, in order, under ``preprocess``; ``limit_batches`` takes a fixed
    random subset (seeded), not the first classes. ``.epoch(0)`` yields ``(x, y, n_bad)``."""
    if isinstance(ds, ArrayDataset):
        return ArrayBatches(ds, batch_size, preprocess.batch_transform(), train=False, seed=seed, limit=limit_batches)
    ds.transform = preprocess.image_transform()
    return FolderBatches(ds, batch_size, train=False, seed=seed, workers=workers, limit=limit_batches)


def open_split(trained: TrainedModel, data: str | os.PathLike | None, split: str, *, progress: bool = False,
               cache_dir: str | os.PathLike | None = None) -> ArrayDataset | FolderDataset:
    """``split`` of ``data`` (default: the data the run trained on, with its own val_split and seed);
    its classes must be the checkpoint's."""
    cfg: dict[str, Any] = trained.config
    cache_dir = cache_dir or cfg.get("cache_dir")
    root = resolve_data_root(data if data else cfg.get("data"), cache_dir=cache_dir)
    ds = open_dataset(root, split, val_split=cfg.get("val_split", 0.0), seed=cfg.get("seed", 0),
                      cache_dir=cache_dir, progress=progress, window=trained.preprocess.window)
    if list(ds.classes) != trained.classes:
        raise ValueError(f"the {split} split of {root} has classes {list(ds.classes)}, but the checkpoint "
                         f"{trained.path} predicts {trained.classes}")
    return ds


@torch.no_grad()
def collect_logits(model: nn.Module, batches: Iterable, *, device: torch.device | str = "cpu",
                   channels_last: bool = False, amp: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` over evaluation batches; returns (logits float32 on CPU, targets).

    ``amp`` is "none", "bf16" or "fp16" (autocast of that dtype on ``device``).
    """
    device = torch.device(device)
    model.eval()
    logits, targets = [], []
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    for x, y, *_ in batches:
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=amp not in ("none", "off")):
            logits.append(model(x).float().cpu())
        targets.append(y)
    if not logits:
        raise ValueError("no evaluation batches: the data set is empty")
    return torch.cat(logits), torch.cat(targets)
