"""From a training config to batches: which data, which splits, in which order, augmented how.

The batch iterators themselves live in :mod:`resnetlab.data.batches` (evaluation uses them too);
this module only decides, from a :class:`TrainConfig`, which data set and splits a run uses, the
augmentation, and the slice of each global batch a process gets.

Splits: ``train`` is trained on; ``val`` is evaluated every epoch and selects ``best.pt`` (the data's
own val split, else a seeded stratified part held out of train); ``test``, when the data has one, is
evaluated once, on ``best.pt``, after training. Model selection never looks at the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import (ArrayDataset, BatchAugment, FolderDataset, available_splits, folder_transform, open_dataset,
                    resolve_data_root)
from ..data.batches import ArrayBatches, FolderBatches, generator, mix_seed
from ..data.preprocess import Preprocess, parse_window
from .config import TrainConfig
from .distributed import DistInfo, main_first

__all__ = ["AUTO_VAL_SPLIT", "DataBundle", "build_data", "data_preprocess", "make_batches", "generator", "mix_seed",
           "permute_labels"]

AUTO_VAL_SPLIT = 0.1  # held out of train (val_split=0, "auto") when the data has no val split of its own


@dataclass
class DataBundle:
    train: ArrayDataset | FolderDataset
    val: ArrayDataset | FolderDataset  # evaluated every epoch; selects best.pt
    classes: list[str]
    preprocess: Preprocess  # the evaluation preprocessing (what checkpoints and artefacts carry)
    root: str = ""  # where the data was found (resolved from --data, RESNETLAB_DATA or the cache)
    test: ArrayDataset | FolderDataset | None = None  # evaluated once, on best.pt; None: the data has none
    val_split: float = 0.0  # the fraction of train held out as val (0: the data's own val split)
    seed: int = 0

    @property
    def in_chans(self) -> int:
        return self.preprocess.in_chans

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """Unreadable files of every split, each once (a held-out val split shares train's list)."""
        parts = [self.train, self.val] + ([self.test] if self.test is not None else [])
        return list(dict.fromkeys(s for ds in parts for s in ds.skipped))

    @property
    def val_source(self) -> str:
        if self.val_split > 0:
            return (f"{len(self.val)} images: {self.val_split:g} of the training data, held out seeded with "
                    f"{self.seed} and stratified")
        return f"{len(self.val)} images: the data's own val split"


def _open_splits(cfg: TrainConfig, *, download: bool, progress: bool) -> tuple:
    root = resolve_data_root(cfg.data, download=download, cache_dir=cfg.cache_dir)
    splits = available_splits(root)
    val_split = cfg.val_split or (0.0 if "val" in splits else AUTO_VAL_SPLIT)
    kw = dict(val_split=val_split, seed=cfg.seed, cache_dir=cfg.cache_dir, strict=cfg.strict_data, progress=progress,
              window=parse_window(cfg.window))
    train, val = open_dataset(root, "train", **kw), open_dataset(root, "val", **kw)
    test = open_dataset(root, "test", **kw) if "test" in splits else None
    return root, val_split, train, val, test


def build_data(cfg: TrainConfig, info: DistInfo) -> DataBundle:
    """Find and open the train, val and (if the data has one) test splits.

    Rank 0 goes first: it alone downloads (``--download``) or unpacks the data and builds the cache, while
    the other ranks wait at a barrier; then they find the data ready and never download.
    """
    root, val_split, train, val, test = main_first(
        info, lambda: _open_splits(cfg, download=cfg.download and info.is_main, progress=info.is_main))
    if cfg.shuffle_labels:
        train, val = (permute_labels(ds, cfg.seed + k) for k, ds in enumerate((train, val)))
    for name, ds in (("val", val), ("test", test)):
        if ds is not None and list(train.classes) != list(ds.classes):
            raise ValueError(f"{root}: the train and {name} splits have different classes: "
                             f"{sorted(set(train.classes) ^ set(ds.classes))}")
    return DataBundle(train, val, list(train.classes), data_preprocess(cfg, train), str(root), test, val_split,
                      cfg.seed)


def data_preprocess(cfg: TrainConfig, train: ArrayDataset | FolderDataset) -> Preprocess:
    """The evaluation preprocessing of a run on ``train``: ``image_size``, else a cached data set's own size,
    else 224; the preset's normalisation (or an imported model's)."""
    size = cfg.image_size or (train.image_size[0] if isinstance(train, ArrayDataset) else 224)
    return imported_normalisation(cfg, Preprocess.for_data(cfg.preset, size, train.in_chans, parse_window(cfg.window)))


def imported_normalisation(cfg: TrainConfig, pre: Preprocess) -> Preprocess:
    """Fine-tuning an imported model (``resnetlab convert-caffe``'s model.pt) feeds the data normalised as its
    weights expect — Caffe's 0-255 pixels minus the mean — not as the data preset would; the model flips to
    BGR itself. Other starting weights keep the data's normalisation, as before."""
    import logging
    import os
    from dataclasses import replace

    from ..eval.loading import checkpoint_path, checkpoint_preprocess, read_checkpoint

    spec = cfg.pretrained or cfg.weights
    if not spec or not (os.path.isdir(spec) or str(spec).endswith(".pt")):
        return pre
    try:
        ck = read_checkpoint(checkpoint_path(spec))
    except (ValueError, FileNotFoundError):  # a plain state dict, or a missing file the weights loader names
        return pre
    if (ck.get("config") or {}).get("imported_from") is None:
        return pre
    theirs = checkpoint_preprocess(ck, str(spec))
    if theirs.in_chans != pre.in_chans or (theirs.mean, theirs.std) == (pre.mean, pre.std):
        return pre
    logging.getLogger("resnetlab").info("normalising the data as the imported weights of %s expect: mean %s, std %s",
                                        spec, theirs.mean, theirs.std)
    return replace(pre, mean=theirs.mean, std=theirs.std)


def permute_labels(ds: ArrayDataset | FolderDataset, seed: int) -> ArrayDataset | FolderDataset:
    """``ds`` with its labels permuted among its images (seeded): same images, same label counts, no
    relation between the two left to learn."""
    order = np.random.default_rng(seed).permutation(len(ds))
    if isinstance(ds, ArrayDataset):
        ds.targets = ds.targets[order]
    else:
        labels = ds.targets
        ds.samples = [(path, labels[j]) for (path, _), j in zip(ds.samples, order)]
    return ds


def make_batches(bundle: DataBundle, cfg: TrainConfig, info: DistInfo, *, split: str = "train",
                 augment: bool = True):
    """Training batches (sliced per DDP rank), or evaluation batches of "val", "test" or "bank" (the training
    images in order, as evaluation sees them: a kNN monitor's bank), whole, run on rank 0. ``augment=False``:
    training batches under the evaluation preprocessing (self-supervised views are made from those)."""
    train = split == "train"
    ds = {"train": bundle.train, "val": bundle.val, "test": bundle.test, "bank": bundle.train}[split]
    if ds is None:
        return None
    info = info if train else DistInfo()
    limit = cfg.limit_train_batches if train else cfg.limit_eval_batches
    bs = cfg.batch_size if train else cfg.eval_batch_size
    if train and bs % info.world_size:
        raise ValueError(f"batch_size {bs} must be divisible by the {info.world_size} DDP processes")
    pre = bundle.preprocess
    dist = dict(rank=info.rank, world_size=info.world_size)
    if isinstance(ds, ArrayDataset):
        aug = BatchAugment(train=True, mean=pre.mean, std=pre.std, crop_pad=cfg.crop_pad, flip=cfg.flip,
                           cutout=cfg.cutout, auto_augment=cfg.auto_augment,
                           image_size=pre.image_size) if train and augment else pre.batch_transform()
        return ArrayBatches(ds, bs, aug, train=train, seed=cfg.seed, limit=limit, sampler=cfg.sampler, **dist)
    ds.transform = folder_transform(cfg.preset, train=True, image_size=pre.image_size, mean=pre.mean, std=pre.std,
                                    auto_augment=cfg.auto_augment, in_chans=pre.in_chans, crop_pad=cfg.crop_pad,
                                    cutout=cfg.cutout, flip=cfg.flip) if train and augment else pre.image_transform()
    return FolderBatches(ds, bs, train=train, seed=cfg.seed, workers=cfg.workers, limit=limit, sampler=cfg.sampler,
                         **dist)
