"""Decoded images held as one uint8 array, and the seeded stratified train/val split."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

__all__ = ["ArrayDataset", "split_indices", "carve_split", "stratify_key"]


class ArrayDataset:
    """Decoded small images held as one uint8 array (often a ``np.memmap``): the fast path.

    The trainer indexes ``images`` with a batch of indices and augments on tensors
    (:class:`resnetlab.data.BatchAugment`), so no per-sample Python runs per step.
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        classes: Sequence[str],
        *,
        skipped: Sequence[tuple[str, str]] = (),
        source: str = "",
        paths: Sequence[str] | None = None,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(
                f"images must be uint8 of shape (N, H, W, C) with C in (1, 3), got "
                f"{images.dtype} {tuple(images.shape)} from {source}"
            )
        targets = np.asarray(targets, dtype=np.int64)
        targets = targets if targets.ndim == 2 and targets.shape[1] > 1 else targets.reshape(-1)
        if len(targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(targets)} targets in {source}")
        if targets.ndim == 2:  # multi-label: one 0/1 column per label
            if targets.shape[1] != len(classes) or not np.isin(targets, (0, 1)).all():
                raise ValueError(f"multi-label targets must be 0/1 of shape (N, {len(classes)}) for {len(classes)} "
                                 f"labels, got shape {targets.shape} with values "
                                 f"{np.unique(targets)[:5].tolist()} in {source}")
        elif len(targets) and (targets.min() < 0 or targets.max() >= len(classes)):
            raise ValueError(
                f"labels must lie in 0..{len(classes) - 1} for {len(classes)} classes, got "
                f"{targets.min()}..{targets.max()} in {source}"
            )
        self.images = images
        self.targets = targets
        self.classes = list(classes)
        self.skipped = list(skipped)
        self.source = source
        self.paths = None if paths is None else list(paths)  # per row, for image folders

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def multilabel(self) -> bool:
        """Several 0/1 labels per image (targets of shape (N, L)) rather than one class index."""
        return self.targets.ndim == 2

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[-1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], int(self.targets[i])

    def subset(self, indices: np.ndarray, source: str | None = None) -> ArrayDataset:
        """The rows ``indices`` (sorted), copied into memory."""
        indices = np.sort(np.asarray(indices, dtype=np.int64))
        paths = None if self.paths is None else [self.paths[i] for i in indices]
        return ArrayDataset(
            np.ascontiguousarray(self.images[indices]), self.targets[indices], self.classes,
            skipped=self.skipped, source=source or self.source, paths=paths,
        )

    def __repr__(self) -> str:
        h, w = self.image_size
        return (
            f"ArrayDataset({len(self)} images {h}x{w}x{self.in_chans}, {self.num_classes} classes, "
            f"{len(self.skipped)} skipped, source={self.source!r})"
        )


def split_indices(
    labels: np.ndarray, val_split: float, seed: int, classes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified (train, val) indices: ``val_split`` of every class goes to val.

    Each class draws from its own generator seeded by (seed, class name), so adding a class or a
    file elsewhere does not reshuffle the others. Every class with two or more samples keeps at
    least one on each side.
    """
    if not 0.0 < val_split < 1.0:
        raise ValueError(f"val_split must be in (0, 1), got {val_split!r}")
    labels = np.asarray(labels, dtype=np.int64)
    train, val = [], []
    for ci, name in enumerate(classes):
        idx = np.flatnonzero(labels == ci)
        n_val = round(len(idx) * val_split)
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        perm = idx[rng.permutation(len(idx))]
        val.append(perm[:n_val])
        train.append(perm[n_val:])
    empty = [np.zeros(0, dtype=np.int64)]
    return np.sort(np.concatenate(train + empty)), np.sort(np.concatenate(val + empty))


def stratify_key(targets: np.ndarray, classes: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """What a stratified split balances: the class, or for multi-label targets each image's rarest
    positive label ("(none)" without one), so that rare findings land on both sides."""
    if targets.ndim == 1:
        return targets, list(classes)
    freq = np.where(targets == 1, targets.sum(0, keepdims=True), np.iinfo(np.int64).max)
    key = np.where(targets.any(1), freq.argmin(1), targets.shape[1])
    return key, [*classes, "(none)"]


def carve_split(ds: ArrayDataset, split: str, val_split: float, seed: int, source: str) -> ArrayDataset:
    """The seeded, stratified ``val_split`` fraction of ``ds`` for split "val", the rest otherwise."""
    key, names = stratify_key(ds.targets, ds.classes)
    train_idx, val_idx = split_indices(key, val_split, seed, names)
    return ds.subset(val_idx if split == "val" else train_idx, source=source)
