"""Batches of a data set in a seeded order: in-memory arrays or streamed image files.

Every random choice is a function of (seed, epoch, batch index): the epoch's permutation, each
batch's augmentation, each streamed image's transform. A run resumed at batch k of epoch e
therefore sees exactly the batches an uninterrupted run would, and DDP ranks cut the same
global batch into slices, so N processes see what one process sees. Training and evaluation use
the same two classes; neither needs a training configuration.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from .arrays import ArrayDataset
from .folder import FolderDataset, collate_skip_bad

__all__ = ["ArrayBatches", "FolderBatches", "mix_seed", "generator", "eval_order", "train_order", "SAMPLERS",
           "num_batches", "rank_order", "skip_bad", "SeededItems"]

SAMPLERS = ("shuffle", "balanced")


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix64-style), stable across runs and processes."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(*parts))


def eval_order(n: int, used: int, seed: int) -> torch.Tensor:
    """All samples in order; a limited evaluation takes a fixed random subset, not the first classes."""
    if used >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=generator(seed, -1))[:used].sort().values


def train_order(targets: np.ndarray | list[int], seed: int, epoch: int, sampler: str = "shuffle") -> torch.Tensor:
    """The epoch's order of training samples, a function of (seed, epoch) alone, so resumes are exact.

    ``shuffle``: a permutation. ``balanced``: as many draws as samples (the epoch keeps its size), each
    picking a class uniformly among those present, then a sample of it uniformly, with replacement:
    every class is seen equally often in expectation (class-balanced sampling, e.g. Kang et al. 2020).
    """
    n = len(targets)
    g = generator(seed, epoch)
    if sampler == "shuffle":
        return torch.randperm(n, generator=g)
    if sampler != "balanced":
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    t = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    if t.dim() != 1:
        raise ValueError("sampler='balanced' draws one class per image; a multi-label task has several labels per "
                         "image: use sampler='shuffle' with class_weights (a positive weight per label)")
    present = torch.unique(t)
    members = [torch.nonzero(t == c).flatten() for c in present.tolist()]
    pick = torch.randint(len(present), (n,), generator=g)
    u = torch.rand(n, generator=g, dtype=torch.float64)
    order = torch.empty(n, dtype=torch.int64)
    for k, idx in enumerate(members):
        sel = pick == k
        order[sel] = idx[(u[sel] * len(idx)).long().clamp_(max=len(idx) - 1)]
    return order


def num_batches(n: int, batch_size: int, train: bool, limit: int | None) -> int:
    """Batches per epoch: whole ones for training (the last partial batch dropped), all images for evaluation,
    at most ``limit``; at least one when there are images."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    full = n // batch_size if train else -(-n // batch_size)
    return max(min(full, limit) if limit else full, 1 if n else 0)


class ArrayBatches:
    """Batches of an in-memory uint8 data set, transformed on whole batches with tensor ops.

    ``transform(images_uint8_nhwc, generator)`` is a :class:`~resnetlab.data.BatchAugment` (training)
    or :meth:`Preprocess.batch_transform` (evaluation). Yields ``(x, y, n_bad)``; n_bad is always 0.
    """

    def __init__(self, ds: ArrayDataset, batch_size: int, transform: Callable, *, train: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, limit: int | None = None, sampler: str = "shuffle") -> None:
        self.ds, self.batch_size, self.transform, self.train, self.seed = ds, batch_size, transform, train, seed
        self.sampler = sampler
        self.rank, self.world_size = rank, world_size
        self.num_batches = num_batches(len(ds), batch_size, train, limit)
        self.epoch_bad = 0  # decoded arrays hold no unreadable files

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor, int]]:
        n = len(self.ds)
        order = train_order(self.ds.targets, self.seed, epoch, self.sampler) if self.train else eval_order(
            n, self.num_batches * self.batch_size, self.seed)
        for b in range(start, self.num_batches):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size].numpy()
            images = torch.from_numpy(np.ascontiguousarray(self.ds.images[idx]))
            x = self.transform(images, generator(self.seed, epoch, b, 1))
            y = torch.from_numpy(np.asarray(self.ds.targets[idx], dtype=np.int64))
            y = y.float() if y.dim() == 2 else y  # multi-label: 0/1 per label, as BCE takes them
            if self.world_size > 1:  # the same global batch, cut into one slice per rank
                per = len(idx) // self.world_size
                x, y = (t[self.rank * per:(self.rank + 1) * per] for t in (x, y))
            yield x, y, 0


def rank_order(order: Tensor, start: int, batches: int, batch_size: int, rank: int = 0, world_size: int = 1
               ) -> tuple[list[int], int]:
    """The samples of ``order`` from batch ``start`` on that rank ``rank`` loads, and its per-rank batch size:
    rank r takes its slice of each global batch, so N processes see what one process sees."""
    order = order[start * batch_size: batches * batch_size]
    per = batch_size // world_size
    if world_size > 1:
        order = order.view(-1, batch_size)[:, rank * per:(rank + 1) * per].reshape(-1)
    return order.tolist(), per


def skip_bad(loader: Iterable, counter: Any) -> Iterator[tuple[Any, Any, int]]:
    """``(x, y, n_bad)`` of each loaded batch that has a readable file: n_bad counts the unreadable files dropped
    since the last yielded batch (a batch of nothing but bad files is not yielded -- no model takes an empty
    one; its count goes with the next); ``counter.epoch_bad`` counts the epoch's, trailing all-bad batches
    included."""
    pending, counter.epoch_bad = 0, 0
    for x, y, bad in loader:
        pending += len(bad)
        counter.epoch_bad += len(bad)
        if len(y) == 0:
            continue
        yield x, y, pending
        pending = 0


class SeededItems(torch.utils.data.Dataset):
    """Seeds torch's RNG per (seed, epoch, index) before each streamed image's transform."""

    def __init__(self, ds: FolderDataset, seed: int, epoch: int) -> None:
        self.ds, self.seed, self.epoch = ds, seed, epoch

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        torch.manual_seed(mix_seed(self.seed, self.epoch, i))
        return self.ds[i]


class FolderBatches:
    """Streamed large images: decoded and transformed in DataLoader workers, bad files skipped.

    Yields ``(x, y, n_bad)``: n_bad counts the unreadable files dropped since the last yielded
    batch. A batch in which every file is unreadable is not yielded at all (it would be an empty
    tensor that no model can take); its files are counted with the next batch. ``epoch_bad`` holds
    the count of the epoch so far, trailing all-bad batches included.
    """

    def __init__(self, ds: FolderDataset, batch_size: int, *, train: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1, workers: int = 0, limit: int | None = None, sampler: str = "shuffle") -> None:
        self.ds, self.batch_size, self.train, self.seed, self.sampler = ds, batch_size, train, seed, sampler
        self.rank, self.world_size, self.workers = rank, world_size, workers
        self.num_batches = num_batches(len(ds), batch_size, train, limit)
        self.epoch_bad = 0

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor, int]]:
        order = train_order(self.ds.targets, self.seed, epoch, self.sampler) if self.train else eval_order(
            len(self.ds), self.num_batches * self.batch_size, self.seed)
        indices, per = rank_order(order, start, self.num_batches, self.batch_size, self.rank, self.world_size)
        loader = torch.utils.data.DataLoader(
            SeededItems(self.ds, self.seed, epoch), batch_size=per, sampler=indices, num_workers=self.workers,
            collate_fn=collate_skip_bad, persistent_workers=False, prefetch_factor=4 if self.workers else None)
        for x, y, pending in skip_bad(loader, self):
            yield x, (y.float() if y.dim() == 2 else y), pending  # multi-label: 0/1 per label, as BCE takes
