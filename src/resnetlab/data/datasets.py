"""One entry point for every data set resnetlab reads: :func:`open_dataset`.

It tells the source apart (ImageFolder tree, CIFAR-10 python archive or folder, MedMNIST npz)
and returns an :class:`ArrayDataset` (decoded uint8 array: small images) or a
:class:`FolderDataset` (streamed: large images). Everything that can be wrong with the data
(a missing split, an empty class, mismatched classes) is an error here, before any training.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .archive import find_image_archive, is_image_archive, unpack_image_archive
from .arrays import ArrayDataset, split_indices
from .cache import default_cache_dir, open_image_folder
from .cifar import download_cifar10, find_cifar10, open_cifar10
from .csvlist import file_list_splits, is_file_list, open_file_list
from .folder import IMAGE_EXTENSIONS, SPLITS, FolderDataset, collate_skip_bad
from .medmnist import open_medmnist

__all__ = [
    "ArrayDataset", "FolderDataset", "collate_skip_bad", "open_dataset", "resolve_data_root", "available_splits",
    "download_cifar10", "split_indices", "default_cache_dir", "unpack_image_archive",
]

log = logging.getLogger("resnetlab")


def not_found_help(cache_dir: str | os.PathLike | None = None) -> str:
    """What to put where, naming the cache folder actually in use (``$RESNETLAB_CACHE`` if set)."""
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return (
        "pass --data PATH, or set RESNETLAB_DATA, to a folder with train/ and test/ (or val/) holding "
        "one sub-folder of images per class (ImageFolder), a cifar-10-python.tar.gz or its "
        "cifar-10-batches-py/ folder, a .tar.gz of such folders, or a MedMNIST .npz; or unpack CIFAR-10 as "
        f"ImageFolder into {cache / 'cifar10'} (train/<class>/*.jpg and test/<class>/*.jpg; the cache folder "
        "is $RESNETLAB_CACHE, else ~/.cache/resnetlab)"
    )


def _has_images(folder: Path) -> bool:
    with os.scandir(folder) as it:
        return any(e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS) for e in it)


def _is_class_tree(path: Path) -> bool:
    subdirs = [e for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")]
    return any(_has_images(Path(d.path)) for d in subdirs)


def open_dataset(
    source: str | os.PathLike,
    split: str,
    *,
    val_split: float = 0.0,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    strict: bool = False,
    small_max: int = 64,
    progress: bool = True,
    window: tuple[float, float] | None = None,
) -> ArrayDataset | FolderDataset:
    """Open ``split`` ("train", "val" or "test") of the data set at ``source``.

    ``val_split > 0`` makes "val" a seeded, per-class fraction of the training data and "train"
    the rest (disjoint, the same for the same seed); "test" is always the test data. Without
    it, "val" reads val/ (else test/) and "test" reads test/ (else val/). Image folders whose
    images all have both sides <= ``small_max`` are decoded once into a uint8 cache in
    ``cache_dir`` (default ``$RESNETLAB_CACHE`` or ``~/.cache/resnetlab``); unreadable files are
    logged and skipped (``strict=True``: a ValueError naming the file). ``window`` = (centre, width)
    replaces the VOI window of DICOM files (image folders and CSV lists).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 <= val_split < 1.0:
        raise ValueError(f"val_split must be in [0, 1), got {val_split!r}")
    if small_max < 1:
        raise ValueError(f"small_max must be a positive number of pixels, got {small_max!r}")
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data source {path} does not exist; {not_found_help(cache_dir)}")
    if path.is_file() and path.suffix.lower() == ".npz":
        return open_medmnist(path, split, val_split=val_split, seed=seed)
    if is_file_list(path):
        return open_file_list(path, split, val_split=val_split, seed=seed, cache_dir=cache_dir, strict=strict,
                              small_max=small_max, progress=progress, window=window)
    if path.is_dir() and (path / "train").is_dir():
        return open_image_folder(
            path, split, val_split=val_split, seed=seed, cache_dir=cache_dir, strict=strict,
            small_max=small_max, progress=progress, window=window,
        )
    cifar = find_cifar10(path)
    if cifar is not None:
        return open_cifar10(cifar, split, val_split=val_split, seed=seed)
    if path.is_dir() and _is_class_tree(path):
        return open_image_folder(
            path, split, val_split=val_split, seed=seed, cache_dir=cache_dir, strict=strict,
            small_max=small_max, progress=progress, window=window,
        )
    raise _unknown(path)


def _unknown(path: Path) -> ValueError:
    return ValueError(
        f"cannot tell what data set {path} is: looked for {path}/train/<class>/ (ImageFolder), "
        f"{path}/<class>/<image> (one folder per class), a cifar-10-python.tar.gz or "
        f"cifar-10-batches-py/ (CIFAR-10 python format), a .npz file (MedMNIST) and a .csv of path,label"
    )


def _prefer_cifar10_subfolder(path: Path) -> Path:
    """``<dir>/cifar10`` when ``<dir>`` is not itself a data set but holds the unpacked CIFAR-10."""
    sub = path / "cifar10"
    if path.is_dir() and not (path / "train").is_dir() and (sub / "train").is_dir() and (sub / "test").is_dir():
        return sub
    return path


def resolve_data_root(data: str | os.PathLike | None, *, download: bool = False,
                      cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the data is: ``data``, else ``$RESNETLAB_DATA``, else ``<cache>/cifar10``.

    ``<cache>`` is ``cache_dir``, else :func:`default_cache_dir` (``$RESNETLAB_CACHE``, else
    ``~/.cache/resnetlab``); no other folder is looked at. A folder that holds ``cifar10/train``
    and ``cifar10/test`` (the shared data unpacks so) resolves to that ``cifar10`` folder; an
    image-folder archive (``cifar10-jpeg.tar.gz``), or a folder holding one, is unpacked once into
    the cache. With nothing found, ``download=True`` fetches the official CIFAR-10 archive
    (md5-checked) into the cache; otherwise a FileNotFoundError says what to put where.
    """
    for given, what in ((data, "--data"), (os.environ.get("RESNETLAB_DATA") or None, "RESNETLAB_DATA")):
        if given is None:
            continue
        path = Path(given).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{what} points at {path}, which does not exist; {not_found_help(cache_dir)}")
        path = _prefer_cifar10_subfolder(path)
        if is_image_archive(path):
            return unpack_image_archive(path, cache_dir)
        archive = find_image_archive(path) if not (path / "train").is_dir() else None
        if archive is not None and find_cifar10(path) is None:
            return unpack_image_archive(archive, cache_dir)
        return path
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if (cache / "cifar10" / "train").is_dir():
        return cache / "cifar10"
    official = find_cifar10(cache)
    if official is not None:
        return official
    if download:
        log.info("no data set found; downloading CIFAR-10 (python format) into %s", cache)
        try:
            return download_cifar10(cache)
        except OSError as e:
            raise FileNotFoundError(
                f"no data set found and the download failed ({e}); {not_found_help(cache)}") from None
    raise FileNotFoundError(f"no data set found: {not_found_help(cache)}")


def available_splits(root: str | os.PathLike) -> set[str]:
    """Which of "train", "val" and "test" the data set at ``root`` (as resolved) really has.

    ImageFolder: the folders train/, val/, test/ present; a MedMNIST npz: the splits with a
    ``{split}_images`` array; CIFAR-10 (python format): train and test; one ``<class>/`` tree
    without split folders: train. A caller that needs "val" where it is missing carves it out of
    train (``val_split``). Raises like :func:`open_dataset` for what is no data set.
    """
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data source {path} does not exist; {not_found_help()}")
    if path.is_file() and path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {s for s in SPLITS if f"{s}_images" in z.files}
    if is_file_list(path):
        return file_list_splits(path)
    if path.is_dir() and (path / "train").is_dir():
        return {s for s in SPLITS if (path / s).is_dir()}
    if find_cifar10(path) is not None:
        return {"train", "test"}
    if path.is_dir() and _is_class_tree(path):
        return {"train"}
    raise _unknown(path)
