"""MedMNIST ``.npz`` files: ``{train,val,test}_{images,labels}`` uint8 images, int labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .arrays import ArrayDataset, carve_split

__all__ = ["open_medmnist"]


def _labels(z, key: str, path: Path) -> np.ndarray:
    y = np.asarray(z[key])
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"{path}: {key} must be integer class labels of shape (N,) or (N, 1), got {y.dtype} "
            f"{y.shape} (multi-label data sets are not supported)"
        )
    return y.astype(np.int64)


def _classes(z, path: Path) -> list[str]:
    for key in ("classes", "label_names"):
        if key in z.files:
            names = np.asarray(z[key]).reshape(-1)
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    top = max(int(_labels(z, k, path).max(initial=-1)) for k in z.files if k.endswith("_labels"))
    return [str(i) for i in range(top + 1)]


def open_medmnist(path: Path, split: str, *, val_split: float = 0.0, seed: int = 0) -> ArrayDataset:
    """One split of a MedMNIST-style npz; grayscale (N, H, W) images become (N, H, W, 1).

    With ``val_split > 0``, train and val are both carved out of ``train_*`` (seeded, stratified).
    """
    carve = val_split > 0 and split in ("train", "val")
    part = "train" if carve else split
    with np.load(path, allow_pickle=False) as z:
        need = [f"{part}_images", f"{part}_labels"]
        if any(k not in z.files for k in need):
            raise ValueError(f"{path}: split {split!r} needs the keys {need}, found {sorted(z.files)}")
        images = np.asarray(z[need[0]])
        targets = _labels(z, need[1], path)
        classes = _classes(z, path)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"{path}: {need[0]} must be uint8 (N, H, W) or (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    ds = ArrayDataset(images, targets, classes, source=f"{path} ({part})")
    if not carve:
        return ds
    return carve_split(ds, split, val_split, seed, f"{path} ({split}: val_split={val_split}, seed={seed} of train)")
