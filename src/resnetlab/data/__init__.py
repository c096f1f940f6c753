"""Data: image folders, CIFAR-10 and MedMNIST opened as fast uint8 arrays or streamed images.

    >>> from resnetlab.data import open_dataset, resolve_data_root, available_splits
    >>> root = resolve_data_root(None)  # doctest: +SKIP
    >>> carve = 0.0 if "val" in available_splits(root) else 0.1  # doctest: +SKIP
    >>> train = open_dataset(root, "train", val_split=carve)  # doctest: +SKIP
"""

from .archive import unpack_image_archive
from .arrays import ArrayDataset, split_indices
from .augment import MEAN_STD, BatchAugment, folder_transform, mix_batch
from .cache import default_cache_dir
from .cifar import download_cifar10, load_cifar_pickle
from .datasets import available_splits, open_dataset, resolve_data_root
from .folder import IMAGE_EXTENSIONS, FolderDataset, collate_skip_bad

__all__ = [
    "ArrayDataset", "FolderDataset", "collate_skip_bad", "open_dataset", "resolve_data_root",
    "download_cifar10", "load_cifar_pickle", "split_indices", "default_cache_dir", "IMAGE_EXTENSIONS",
    "MEAN_STD", "BatchAugment", "mix_batch", "folder_transform", "unpack_image_archive", "available_splits",
]
