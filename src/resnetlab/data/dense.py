"""Detection and segmentation splits on disk, and their batches in a seeded, resumable order.

A data folder holds one sub-folder per split (``train``, optional ``val`` and ``test``), each in one of three
layouts, found by what is in it:

- COCO: ``annotations.json`` (any one ``*.json``) and ``images/``;
- Pascal VOC: ``Annotations/*.xml`` and ``JPEGImages/``;
- masks: ``images/`` and ``masks/`` (same-named PNGs; ``masks="instance"``: value k is object k,
  ``"semantic"``: value is the class).

Segmentation reads a per-pixel class map: a semantic mask as it is, instance masks as the label of the object
each pixel belongs to. Every random choice (the epoch's order, each image's flip) is a function of (seed,
epoch, index), as for classification (:mod:`resnetlab.data.batches`), so a resumed run sees the same batches
and DDP ranks cut one global batch into slices.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor

from .batches import SeededItems, eval_order, generator, num_batches, rank_order, skip_bad, train_order
from .detection import DetectionDataset, collate_detection, read_coco, read_mask_folder, read_voc

__all__ = ["open_dense_split", "dense_splits", "DenseBatches", "semantic_target", "IGNORE_INDEX", "MASK_KINDS"]

IGNORE_INDEX = 255  # pixels no loss or metric counts (padding; VOC's object borders)
MASK_KINDS = ("auto", "instance", "semantic")


def dense_splits(root: str | os.PathLike) -> list[str]:
    """The splits a dense data folder has, of train / val / test."""
    return [s for s in ("train", "val", "test") if (Path(root) / s).is_dir()]


def open_dense_split(root: str | os.PathLike, split: str, kind: str, *, masks: str = "auto",
                     classes: Sequence[str] | None = None) -> DetectionDataset:
    """The ``split`` of a dense data folder as a :class:`DetectionDataset`, read for ``kind`` ("detection" or
    "segmentation"). ``classes`` (background first) fixes the class list of VOC and mask folders to train's."""
    if kind not in ("detection", "segmentation"):
        raise ValueError(f"kind must be 'detection' or 'segmentation', got {kind!r}")
    if masks not in MASK_KINDS:
        raise ValueError(f"masks must be one of {MASK_KINDS}, got {masks!r}")
    d = Path(root) / split
    if not d.is_dir():
        raise FileNotFoundError(f"{root}: no {split!r} split (expected a folder {d}; splits found: "
                                f"{dense_splits(root) or 'none'})")
    names = list(classes[1:]) if classes is not None else None
    jsons = sorted(d.glob("*.json"))
    if jsons and (d / "images").is_dir():
        if len(jsons) > 1:
            raise ValueError(f"{d}: several COCO annotation files {[p.name for p in jsons]}; keep one")
        ds = read_coco(jsons[0], d / "images", with_masks=kind == "segmentation")
    elif (d / "Annotations").is_dir() and (d / "JPEGImages").is_dir():
        if kind == "segmentation":
            raise ValueError(f"{d}: Pascal VOC XML holds boxes only; segmentation needs masks (COCO polygons / RLE "
                             "or a masks/ folder)")
        ds = read_voc(d / "Annotations", d / "JPEGImages", names)
    elif (d / "images").is_dir() and (d / "masks").is_dir():
        mode = masks if masks != "auto" else ("instance" if kind == "detection" else "semantic")
        if kind == "detection" and mode == "semantic":
            raise ValueError(f"{d}: detection needs instance masks (value k = object k), not masks='semantic'")
        ds = read_mask_folder(d / "images", d / "masks", kind=mode, classes=names)
    else:
        raise ValueError(f"{d}: not a detection/segmentation split; expected annotations.json + images/ (COCO), "
                         "Annotations/ + JPEGImages/ (VOC) or images/ + masks/ (PNG masks)")
    if classes is not None and list(ds.classes) != list(classes):
        raise ValueError(f"{d}: classes {ds.classes[1:]} differ from the training split's {list(classes[1:])}")
    return ds


def semantic_target(target: dict[str, Tensor], shape: tuple[int, int], where: str) -> Tensor:
    """(H, W) class map: the semantic mask, else each object's label painted over its mask (later objects on top)."""
    if "semantic" in target:
        return target["semantic"]
    if "masks" not in target:
        raise ValueError(f"{where}: segmentation needs masks, and this image's annotation has boxes only")
    out = torch.zeros(shape, dtype=torch.int64)
    for m, label in zip(target["masks"], target["labels"].tolist()):
        out[m.bool()] = int(label)
    return out


def _flip(x: Tensor, t: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    w = x.shape[-1]
    t = dict(t)
    if "boxes" in t and len(t["boxes"]):
        b = t["boxes"].clone()
        b[:, 0], b[:, 2] = w - t["boxes"][:, 2], w - t["boxes"][:, 0]
        t["boxes"] = b
    for key in ("masks", "semantic"):
        if key in t:
            t[key] = t[key].flip(-1)
    return x.flip(-1), t


class _Items(torch.utils.data.Dataset):
    """One image as the model takes it: flipped (train, seeded per (seed, epoch, index)); a detector's target
    dict, or a segmenter's normalised image and class map."""

    def __init__(self, ds: DetectionDataset, kind: str, train: bool, flip: bool, seed: int, epoch: int,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        self.ds, self.kind, self.train, self.flip, self.seed, self.epoch = ds, kind, train, flip, seed, epoch
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        x, t, path = self.ds[i]
        if x is None:
            return None, None, path
        if self.train and self.flip and torch.rand(1, generator=generator(self.seed, self.epoch, i, 7)) < 0.5:
            x, t = _flip(x, t)
        if self.kind == "detection":
            return x, {k: v for k, v in t.items() if k in ("boxes", "labels", "image_id")}, path
        return (x - self.mean) / self.std, semantic_target(t, tuple(x.shape[-2:]), path), path


def _pad_stack(images: list[Tensor], maps: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Images of different sizes in one tensor: zero-padded right and bottom, their pixels ignored by the loss."""
    h, w = max(x.shape[-2] for x in images), max(x.shape[-1] for x in images)
    x = images[0].new_zeros(len(images), images[0].shape[0], h, w)
    y = torch.full((len(images), h, w), IGNORE_INDEX, dtype=torch.int64)
    for k, (img, m) in enumerate(zip(images, maps)):
        x[k, :, : img.shape[-2], : img.shape[-1]] = img
        y[k, : m.shape[-2], : m.shape[-1]] = m
    return x, y


class DenseBatches:
    """Batches of a detection or segmentation split: ``epoch(e, start)`` yields ``(x, y, n_bad)``.

    Detection: x a list of (3, H, W) images in [0, 1] (the detector normalises and resizes them itself), y a
    list of target dicts. Segmentation: x (N, 3, H, W) normalised and padded, y (N, H, W) class maps (255 on
    padding). Unreadable images are dropped and counted in ``n_bad``; a batch of nothing but bad files is
    skipped and its count carried to the next (``epoch_bad`` holds the epoch's count).
    """

    def __init__(self, ds: DetectionDataset, batch_size: int, *, kind: str, train: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, workers: int = 0, limit: int | None = None, flip: bool = True,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225)) -> None:
        if train and batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must be divisible by the {world_size} DDP processes")
        self.ds, self.batch_size, self.kind, self.train, self.seed = ds, batch_size, kind, train, seed
        self.rank, self.world_size, self.workers, self.flip = rank, world_size, workers, flip
        self.mean, self.std = tuple(mean), tuple(std)
        self.num_batches = num_batches(len(ds), batch_size, train, limit)
        self.epoch_bad = 0

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple]:
        n = len(self.ds)
        order = (train_order(range(n), self.seed, epoch) if self.train
                 else eval_order(n, self.num_batches * self.batch_size, self.seed))
        indices, per = rank_order(order, start, self.num_batches, self.batch_size, self.rank, self.world_size)
        items = _Items(self.ds, self.kind, self.train, self.flip, self.seed, epoch, self.mean, self.std)
        # torch's RNG too is a function of (seed, epoch, index) after each image, so what the step draws next
        # (DeepLab's dropout) is the same in a resumed run as in an uninterrupted one
        loader = torch.utils.data.DataLoader(SeededItems(items, self.seed, epoch), batch_size=per, sampler=indices,
                                             num_workers=self.workers, collate_fn=collate_detection)
        for images, targets, pending in skip_bad(loader, self):
            if self.kind == "segmentation":
                yield (*_pad_stack(images, targets), pending)
            else:
                yield images, targets, pending

