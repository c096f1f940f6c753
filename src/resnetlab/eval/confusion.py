"""The confusion matrix as files: a CSV anyone can open and a heat-map PNG (matplotlib)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence

import numpy as np

from ..utils.fileio import atomic_write_text

__all__ = ["save_confusion_matrix"]


def _check_cm(cm: Sequence[Sequence[int]] | np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    try:
        arr = np.asarray(cm, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"confusion matrix must be a square matrix of counts ({e})") from None
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any() or (arr != np.round(arr)).any():
        raise ValueError("confusion matrix must hold non-negative integer counts")
    if len(class_names) != arr.shape[0]:
        raise ValueError(f"got {len(class_names)} class names for a {arr.shape[0]}x{arr.shape[1]} confusion matrix")
    return arr.astype(np.int64)


def save_confusion_matrix(cm: Sequence[Sequence[int]] | np.ndarray, class_names: Sequence[str],
                          csv_path: str | os.PathLike, png_path: str | os.PathLike | None = None, *,
                          rule: str | None = None) -> None:
    """Write the confusion matrix (rows = true class, columns = predicted) as CSV and optionally PNG.

    The CSV's header row names the predicted classes and its first column the true ones. The PNG
    is a heat-map coloured by the fraction of each true class, its title naming the decision ``rule``
    ("at argmax", "at p(lesion) >= 0.3") when given. Both files are written atomically.
    """
    arr = _check_cm(cm, class_names)
    names = [str(n) for n in class_names]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["true \\ predicted", *names])
    for name, row in zip(names, arr.tolist()):
        w.writerow([name, *row])
    atomic_write_text(csv_path, buf.getvalue())
    if png_path is not None:
        from ..utils.plot import confusion_matrix_figure, save_figure  # matplotlib only when drawing

        save_figure(confusion_matrix_figure(arr, names, rule), png_path)
