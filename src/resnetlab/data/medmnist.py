"""MedMNIST ``.npz`` files: ``{train,val,test}_{images,labels}`` uint8 images of any size (28 px, or
MedMNIST+'s 64/128/224), every 2-D task type.

The task is read from the labels: one column (or a flat vector) of class indices is a binary, multi-class
or ordinal task (RetinaMNIST's grades 0-4 train as classes, as the MedMNIST v2 paper does); several 0/1
columns are a multi-label task (ChestMNIST's 14 findings). Class names come from a ``classes`` or
``label_names`` array in the file, else from the table below for the MedMNIST data sets named by the
file (``chestmnist.npz``, ``pneumoniamnist_224.npz``), else "0".."N-1". (Names as in MedMNIST's ``INFO``.)
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .arrays import ArrayDataset, carve_split

__all__ = ["open_medmnist", "MEDMNIST_LABELS", "MEDMNIST_POSITIVE", "medmnist_task", "medmnist_positive"]

MEDMNIST_LABELS: dict[str, list[str]] = {
    "pneumoniamnist": ["normal", "pneumonia"],
    "breastmnist": ["malignant", "normal, benign"],
    "chestmnist": ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                   "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"],
    "dermamnist": ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                   "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                   "vascular lesions"],
    "bloodmnist": ["basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte", "monocyte",
                   "neutrophil", "platelet"],
}


# Binary data sets whose finding is not the second class: the positive class their users mean.
MEDMNIST_POSITIVE: dict[str, str] = {"breastmnist": "malignant"}


def medmnist_positive(path: str | Path) -> str | None:
    """The positive class a MedMNIST file's name implies when it is not the second (BreastMNIST: malignant)."""
    p = Path(path)
    return MEDMNIST_POSITIVE.get(re.sub(r"_\d+$", "", p.stem.lower())) if p.suffix == ".npz" else None


def _labels(z, key: str, path: Path) -> np.ndarray:
    y = np.asarray(z[key])
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{path}: {key} must be integer labels of shape (N,) or (N, 1) (one class per image) or "
                         f"(N, L) of 0/1 (multi-label), got {y.dtype} {y.shape}")
    if y.ndim == 2 and not np.isin(y, (0, 1)).all():
        raise ValueError(f"{path}: {key} has {y.shape[1]} columns, so it is read as multi-label, but holds values "
                         f"other than 0/1: {np.unique(y)[:8].tolist()}")
    return y.astype(np.int64)


def medmnist_task(path: Path) -> str:
    """"multilabel" or "multiclass" (binary included), from the labels' shape."""
    with np.load(path, allow_pickle=False) as z:
        key = next((k for k in ("train_labels", "val_labels", "test_labels") if k in z.files), None)
        return "multilabel" if key is not None and _labels(z, key, path).ndim == 2 else "multiclass"


def _classes(z, path: Path) -> list[str]:
    for key in ("classes", "label_names"):
        if key in z.files:
            names = np.asarray(z[key]).reshape(-1)
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    labels = [_labels(z, k, path) for k in z.files if k.endswith("_labels")]
    n = labels[0].shape[1] if labels[0].ndim == 2 else max(int(y.max(initial=-1)) for y in labels) + 1
    known = MEDMNIST_LABELS.get(re.sub(r"_\d+$", "", path.stem.lower()))
    return list(known) if known is not None and len(known) == n else [str(i) for i in range(n)]


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
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
        bad = np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(1))
        raise ValueError(f"{path}: {need[0]} holds NaN or infinite pixel values in {len(bad)} image(s), the first at "
                         f"index {int(bad[0])}; fix or drop them (MedMNIST images are uint8 0..255)")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"{path}: {need[0]} must be uint8 (N, H, W) or (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    if len(targets) != len(images):
        raise ValueError(f"{path}: {len(images)} {need[0]} but {len(targets)} {need[1]}")
    ds = ArrayDataset(images, targets, classes, source=f"{path} ({part})")
    if not carve:
        return ds
    return carve_split(ds, split, val_split, seed, f"{path} ({split}: val_split={val_split}, seed={seed} of train)")
