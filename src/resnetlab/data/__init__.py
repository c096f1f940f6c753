"""Data: image folders, CIFAR-10 and MedMNIST opened as fast uint8 arrays or streamed images.

    >>> from resnetlab.data import open_dataset, BatchAugment, MEAN_STD
    >>> train = open_dataset(resolve_data_root(None), "train", val_split=0.1)  # doctest: +SKIP
"""

from .arrays import ArrayDataset, split_indices
from .augment import MEAN_STD, BatchAugment, folder_transform, mix_batch
from .cache import default_cache_dir
from .cifar import download_cifar10, load_cifar_pickle
from .datasets import open_dataset, resolve_data_root
from .folder import IMAGE_EXTENSIONS, FolderDataset, collate_skip_bad

__all__ = [
    "ArrayDataset", "FolderDataset", "collate_skip_bad", "open_dataset", "resolve_data_root",
    "download_cifar10", "load_cifar_pickle", "split_indices", "default_cache_dir", "IMAGE_EXTENSIONS",
    "MEAN_STD", "BatchAugment", "mix_batch", "folder_transform",
]
