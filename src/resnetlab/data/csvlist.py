"""A CSV of ``path,label`` (and optionally ``label2``..., ``split``): images anywhere, labels in a table, as
hospital exports and Kaggle data sets come.

The first row names the columns: ``path`` and ``label`` are required; ``label2``, ``label3``, ... make it a
multi-label task (each row lists its findings; none for "no finding"); ``split`` (``train``/``val``/
``test``) is optional; other columns are ignored. Relative paths are relative to the CSV's folder; any
image format the folder reader takes works, DICOM included. The classes are the sorted label names of
the whole file, so every split agrees on them. Without a ``split`` column every row is training data
(hold out validation with ``val_split``). The files are then cached or streamed exactly like an image
folder's (:func:`resnetlab.data.cache.open_file_split`), keyed also by the CSV's digest, so an edited label
rebuilds the cache; a row whose file is missing or unreadable is reported with its path and skipped.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np

from ..utils.download import file_digest
from .arrays import split_indices, stratify_key
from .cache import FileSplit, open_file_split
from .folder import SPLITS

__all__ = ["is_file_list", "read_file_list", "file_list_splits", "open_file_list"]


def is_file_list(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".csv"


def read_file_list(path: Path) -> tuple[list[str], list[tuple[str, tuple[str, ...], str]], bool]:
    """(classes, rows as (absolute path, labels, split), multilabel); refuses a malformed CSV naming the line.

    One ``label`` column: one class per image. More (``label2``, ``label3``, ...): a multi-label task, each
    row listing its labels in those columns (empty cells for fewer; none at all for "no finding")."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        missing = [c for c in ("path", "label") if c not in columns]
        if missing:
            raise ValueError(f"{path}: the first row must name the columns path and label (and optionally "
                             f"label2, label3, ... for several labels per image, and split); found "
                             f"{reader.fieldnames}, missing {missing}")
        label_cols = ["label"] + sorted((c for c in columns if re.fullmatch(r"label\d+", c)),
                                        key=lambda c: int(c[5:]))
        multilabel = len(label_cols) > 1
        reader.fieldnames = columns
        rows = []
        for line, row in enumerate(reader, start=2):
            file = (row.get("path") or "").strip()
            labels = tuple(dict.fromkeys(v for v in ((row.get(c) or "").strip() for c in label_cols) if v))
            split = (row.get("split") or "train").strip().lower()
            if not file or (not labels and not multilabel):
                raise ValueError(f"{path}, line {line}: empty path or label ({row})")
            if split not in SPLITS:
                raise ValueError(f"{path}, line {line}: split must be one of {SPLITS}, got {split!r}")
            full = file if os.path.isabs(file) else os.path.normpath(os.path.join(path.parent, file))
            rows.append((full, labels, split))
    if not rows:
        raise ValueError(f"{path}: no rows after the header")
    classes = sorted({label for _, labels, _ in rows for label in labels})
    if len(classes) < 2:
        raise ValueError(f"{path}: an image classifier needs at least two labels, found {classes}")
    return classes, rows, multilabel


def file_list_splits(path: Path) -> set[str]:
    return {split for _, _, split in read_file_list(path)[1]}


def _stat(file: str) -> tuple[int, int]:
    try:
        st = os.stat(file)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return -1, 0  # reading its header fails, so it is reported and skipped like any bad file


def open_file_list(path: str | os.PathLike, split: str, *, val_split: float = 0.0, seed: int = 0,
                   cache_dir: str | os.PathLike | None = None, strict: bool = False, small_max: int = 64,
                   progress: bool = True, window: tuple[float, float] | None = None):
    """``split`` of the CSV at ``path``: an ArrayDataset (cached small images) or a FolderDataset."""
    path = Path(path).expanduser().resolve()
    classes, rows, multilabel = read_file_list(path)
    present = {s for _, _, s in rows}
    carve = val_split > 0 and split in ("train", "val")
    part = "train" if carve else split
    if part not in present:
        fallback = {"val": "test", "test": "val"}.get(part)
        if fallback not in present:
            raise ValueError(f"{path} has no rows of split {split!r} (its splits: {sorted(present)}); pass val_split "
                             f"> 0 to hold out validation images from train")
        part = fallback
    chosen = [r for r in rows if r[2] == part]
    index = {c: i for i, c in enumerate(classes)}
    target = (lambda labels: tuple(int(c in labels) for c in classes)) if multilabel else \
        (lambda labels: index[labels[0]])
    files = [(f, target(labels), *_stat(f)) for f, labels, _ in chosen]
    rel = [os.path.relpath(f, path.parent) for f, _, _ in chosen]
    sel = np.arange(len(files))
    if carve:
        key, names = stratify_key(np.array([f[1] for f in files]), classes)
        train_idx, val_idx = split_indices(key, val_split, seed, names)
        sel = val_idx if split == "val" else train_idx
    source = f"{path} ({split}" + (f", val_split={val_split}, seed={seed} of train)" if carve else ")")
    sp = FileSplit(path.parent, split, classes, files, rel, sel, source, salt=file_digest(path),  # new labels: rebuild
                   window=window)
    name = f"{path.stem}_{part}".replace(os.sep, "_")
    return open_file_split(sp, name, cache_dir=cache_dir, strict=strict, small_max=small_max, progress=progress)
