"""A folder of images without labels (self-supervised pretraining): every image file under it, at any depth,
cached or streamed like an image folder's split (:func:`resnetlab.data.cache.open_file_split`).

A folder whose images sit in class sub-folders is a labelled data set, which pretraining also takes (its labels
feed only the kNN monitor); this module is for the folder that is not one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .arrays import ArrayDataset
from .cache import FileSplit, open_file_split
from .folder import IMAGE_EXTENSIONS, FolderDataset, image_files

__all__ = ["UNLABELLED", "is_unlabelled_folder", "open_unlabelled"]

UNLABELLED = "unlabelled"  # the one class name of such a data set


def is_unlabelled_folder(path: str | os.PathLike) -> bool:
    """A folder with image files directly in it (class folders hold theirs one level down)."""
    p = Path(path).expanduser()
    return p.is_dir() and any(e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS) and not e.name.startswith(".")
                              for e in os.scandir(p))


def open_unlabelled(root: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, strict: bool = False,
                    small_max: int = 64, progress: bool = True) -> ArrayDataset | FolderDataset:
    """Every image under ``root`` as one split ("train") with the single class ``unlabelled``."""
    folder = Path(root).expanduser().resolve()
    found = image_files(folder)
    if not found:
        raise ValueError(f"{folder} holds no image files ({', '.join(IMAGE_EXTENSIONS)}, any case)")
    files = [(p, 0, size, mtime) for p, size, mtime in found]
    rel = [p[len(str(folder)) + 1:] for p, *_ in files]
    sp = FileSplit(folder, "train", [UNLABELLED], files, rel, np.arange(len(files)), f"{folder} (unlabelled)")
    return open_file_split(sp, f"{folder.name}_unlabelled", cache_dir=cache_dir, strict=strict, small_max=small_max,
                           progress=progress)
