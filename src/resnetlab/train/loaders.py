"""From a config to batches: which data, in which order, augmented how.

Every random choice is a function of (seed, epoch, batch index): the epoch's permutation, each
batch's augmentation, each streamed image's transform. A run resumed at batch k of epoch e
therefore sees exactly the batches an uninterrupted run would, and DDP ranks cut the same
global batch into slices, so N processes see what one process sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from ..data import (MEAN_STD, ArrayDataset, BatchAugment, FolderDataset, collate_skip_bad, folder_transform,
                    open_dataset, resolve_data_root)
from .config import TrainConfig
from .distributed import DistInfo, barrier

__all__ = ["DataBundle", "build_data", "ArrayBatches", "FolderBatches", "make_batches", "mix_seed"]


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix64-style), stable across runs and processes."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(*parts))


@dataclass
class DataBundle:
    train: ArrayDataset | FolderDataset
    val: ArrayDataset | FolderDataset
    classes: list[str]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int  # network input side
    root: str = ""  # where the data was found (resolved from --data, RESNETLAB_DATA or the cache)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return list(self.train.skipped) + list(self.val.skipped)


def build_data(cfg: TrainConfig, info: DistInfo) -> DataBundle:
    """Open the train and evaluation splits (rank 0 first, so only it builds the cache)."""
    root = resolve_data_root(cfg.data, download=cfg.download and info.is_main, cache_dir=cfg.cache_dir)
    kw = dict(val_split=cfg.val_split, seed=cfg.seed, cache_dir=cfg.cache_dir, strict=cfg.strict_data)
    opened: tuple = ()
    for turn in (True, False):
        if info.is_main == turn:
            opened = (open_dataset(root, "train", progress=info.is_main, **kw),
                      open_dataset(root, cfg.eval_split, progress=info.is_main, **kw))
        barrier(info)
    train, val = opened
    if list(train.classes) != list(val.classes):
        raise ValueError(f"{root}: the train and {cfg.eval_split} splits have different classes: "
                         f"{sorted(set(train.classes) ^ set(val.classes))}")
    mean, std = MEAN_STD[cfg.preset]
    if train.in_chans == 1:
        mean, std = (float(np.mean(mean)),), (float(np.mean(std)),)
    if cfg.image_size:
        size = cfg.image_size
    elif isinstance(train, ArrayDataset):
        size = train.image_size[0]
    else:
        size = 224
    return DataBundle(train, val, list(train.classes), train.in_chans, tuple(mean), tuple(std), size, str(root))


def _eval_order(n: int, used: int, seed: int) -> torch.Tensor:
    """All samples in order; a limited evaluation takes a fixed random subset, not the first classes."""
    if used >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=generator(seed, -1))[:used].sort().values


class ArrayBatches:
    """Batches of an in-memory uint8 data set, augmented on whole batches with tensor ops."""

    def __init__(self, ds: ArrayDataset, batch_size: int, aug: BatchAugment, *, train: bool, seed: int,
                 info: DistInfo, limit: int | None = None) -> None:
        self.ds, self.batch_size, self.aug, self.train, self.seed, self.info = ds, batch_size, aug, train, seed, info
        n = len(ds) // batch_size if train else -(-len(ds) // batch_size)
        self.num_batches = max(min(n, limit) if limit else n, 1 if len(ds) else 0)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor, int]]:
        n = len(self.ds)
        order = torch.randperm(n, generator=generator(self.seed, epoch)) if self.train else _eval_order(
            n, self.num_batches * self.batch_size, self.seed)
        for b in range(start, self.num_batches):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size].numpy()
            images = torch.from_numpy(np.ascontiguousarray(self.ds.images[idx]))
            x = self.aug(images, generator(self.seed, epoch, b, 1))
            y = torch.from_numpy(np.asarray(self.ds.targets[idx], dtype=np.int64))
            if self.info.enabled:  # the same global batch, cut into one slice per rank
                per = len(idx) // self.info.world_size
                x, y = (t[self.info.rank * per:(self.info.rank + 1) * per] for t in (x, y))
            yield x, y, 0


class _Seeded(torch.utils.data.Dataset):
    """Seeds torch's RNG per (seed, epoch, index) before each streamed image's transform."""

    def __init__(self, ds: FolderDataset, seed: int, epoch: int) -> None:
        self.ds, self.seed, self.epoch = ds, seed, epoch

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        torch.manual_seed(mix_seed(self.seed, self.epoch, i))
        return self.ds[i]


class FolderBatches:
    """Streamed large images: decoded and transformed in DataLoader workers, bad files skipped."""

    def __init__(self, ds: FolderDataset, batch_size: int, *, train: bool, seed: int, info: DistInfo,
                 workers: int, limit: int | None = None) -> None:
        self.ds, self.batch_size, self.train, self.seed = ds, batch_size, train, seed
        self.info, self.workers = info, workers
        n = len(ds) // batch_size if train else -(-len(ds) // batch_size)
        self.num_batches = max(min(n, limit) if limit else n, 1 if len(ds) else 0)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor, int]]:
        n, w = len(self.ds), self.info.world_size
        order = torch.randperm(n, generator=generator(self.seed, epoch)) if self.train else _eval_order(
            n, self.num_batches * self.batch_size, self.seed)
        order = order[start * self.batch_size: self.num_batches * self.batch_size]
        per = self.batch_size // w
        if self.info.enabled:  # rank r takes its slice of each global batch (training only)
            order = order.view(-1, self.batch_size)[:, self.info.rank * per:(self.info.rank + 1) * per].reshape(-1)
        loader = torch.utils.data.DataLoader(
            _Seeded(self.ds, self.seed, epoch), batch_size=per, sampler=order.tolist(), num_workers=self.workers,
            collate_fn=collate_skip_bad, persistent_workers=False, prefetch_factor=4 if self.workers else None)
        for x, y, bad in loader:
            yield x, y, len(bad)


def make_batches(bundle: DataBundle, cfg: TrainConfig, info: DistInfo, *, train: bool):
    """Training batches (sliced per DDP rank) or evaluation batches (whole, run on rank 0)."""
    ds = bundle.train if train else bundle.val
    info = info if train else DistInfo()
    limit = cfg.limit_train_batches if train else cfg.limit_eval_batches
    bs = cfg.batch_size if train else cfg.eval_batch_size
    if train and bs % info.world_size:
        raise ValueError(f"batch_size {bs} must be divisible by the {info.world_size} DDP processes")
    if isinstance(ds, ArrayDataset):
        aug = BatchAugment(train=train, mean=bundle.mean, std=bundle.std, crop_pad=cfg.crop_pad, flip=True,
                           cutout=cfg.cutout if train else 0, auto_augment=cfg.auto_augment if train else None,
                           image_size=bundle.image_size)
        return ArrayBatches(ds, bs, aug, train=train, seed=cfg.seed, info=info, limit=limit)
    ds.transform = folder_transform(cfg.preset, train=train, image_size=bundle.image_size, mean=bundle.mean,
                                    std=bundle.std, auto_augment=cfg.auto_augment if train else None,
                                    in_chans=bundle.in_chans)
    return FolderBatches(ds, bs, train=train, seed=cfg.seed, info=info, workers=cfg.workers, limit=limit)
