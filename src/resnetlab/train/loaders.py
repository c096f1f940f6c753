"""From a training config to batches: which data, in which order, augmented how.

The batch iterators themselves live in :mod:`resnetlab.data.batches` (evaluation uses them too);
this module only decides, from a :class:`TrainConfig`, which data set, augmentation and slice of
each global batch a process gets.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data import ArrayDataset, BatchAugment, FolderDataset, folder_transform, open_dataset, resolve_data_root
from ..data.batches import ArrayBatches, FolderBatches, generator, mix_seed
from ..data.preprocess import Preprocess
from .config import TrainConfig
from .distributed import DistInfo, barrier

__all__ = ["DataBundle", "build_data", "make_batches", "generator", "mix_seed"]


@dataclass
class DataBundle:
    train: ArrayDataset | FolderDataset
    val: ArrayDataset | FolderDataset
    classes: list[str]
    preprocess: Preprocess  # the evaluation preprocessing (what checkpoints and artefacts carry)
    root: str = ""  # where the data was found (resolved from --data, RESNETLAB_DATA or the cache)

    @property
    def in_chans(self) -> int:
        return self.preprocess.in_chans

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
    if cfg.image_size:
        size = cfg.image_size
    elif isinstance(train, ArrayDataset):
        size = train.image_size[0]
    else:
        size = 224
    pre = Preprocess.for_data(cfg.preset, size, train.in_chans)
    return DataBundle(train, val, list(train.classes), pre, str(root))


def make_batches(bundle: DataBundle, cfg: TrainConfig, info: DistInfo, *, train: bool):
    """Training batches (sliced per DDP rank) or evaluation batches (whole, run on rank 0)."""
    ds = bundle.train if train else bundle.val
    info = info if train else DistInfo()
    limit = cfg.limit_train_batches if train else cfg.limit_eval_batches
    bs = cfg.batch_size if train else cfg.eval_batch_size
    if train and bs % info.world_size:
        raise ValueError(f"batch_size {bs} must be divisible by the {info.world_size} DDP processes")
    pre = bundle.preprocess
    dist = dict(rank=info.rank, world_size=info.world_size)
    if isinstance(ds, ArrayDataset):
        aug = BatchAugment(train=True, mean=pre.mean, std=pre.std, crop_pad=cfg.crop_pad, flip=True,
                           cutout=cfg.cutout, auto_augment=cfg.auto_augment,
                           image_size=pre.image_size) if train else pre.batch_transform()
        return ArrayBatches(ds, bs, aug, train=train, seed=cfg.seed, limit=limit, **dist)
    ds.transform = folder_transform(cfg.preset, train=True, image_size=pre.image_size, mean=pre.mean, std=pre.std,
                                    auto_augment=cfg.auto_augment, in_chans=pre.in_chans, crop_pad=cfg.crop_pad,
                                    cutout=cfg.cutout) if train else pre.image_transform()
    return FolderBatches(ds, bs, train=train, seed=cfg.seed, workers=cfg.workers, limit=limit, **dist)
