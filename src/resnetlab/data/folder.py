"""Image folders: reading one image safely, finding the split folders, and streaming large images.

Every image is opened with Pillow's decompression-bomb warning raised as an error, so an image
whose header claims too many pixels is refused before a byte of it is decoded. Decoding itself
(``load``/``convert``) runs inside the same guard, so a truncated or corrupt file is a reported,
skipped sample instead of a crash in the middle of an epoch. (Ours rather than torchvision's
ImageFolder: its loader only warns about a bomb, decodes it, and lets one corrupt file end the epoch.)
The folder walk follows directory symlinks but enters each real directory once, so a link loop
cannot send it round forever.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from .dicom import DICOM_EXTENSIONS, dicom_header, dicom_image, is_dicom_path

__all__ = [
    "IMAGE_EXTENSIONS", "FolderDataset", "collate_skip_bad", "load_image", "read_header",
    "scan_folder", "find_split_folder", "check_same_classes",
]

log = logging.getLogger("resnetlab")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff") + DICOM_EXTENSIONS
GRAY_MODES = frozenset({"1", "L", "LA"})
SPLITS = ("train", "val", "test")


def describe_error(e: BaseException) -> str:
    """One line for a file that could not be read, for logs and ``skipped``."""
    if isinstance(e, (Image.DecompressionBombWarning, Image.DecompressionBombError)):
        return f"decompression bomb refused before decoding ({e})"
    return f"{type(e).__name__}: {e}"


def read_header(path: str) -> tuple[int, int, str] | str:
    """(width, height, mode) from the header alone, or the reason the file is unusable."""
    try:
        if is_dicom_path(path):
            return dicom_header(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.size[0], im.size[1], im.mode
    except Exception as e:  # noqa: BLE001 - any failure means the file is unusable
        return describe_error(e)


def load_image(path: str, mode: str, size: tuple[int, int] | None = None,
               window: tuple[float, float] | None = None) -> Image.Image:
    """Decode ``path`` into ``mode`` ("RGB"/"L"), resized (bilinear) to ``size`` = (W, H) if given.

    Raises on any bad file; a decompression bomb is refused by ``Image.open``, before decoding. DICOM
    files (``.dcm``) are read by :func:`resnetlab.data.dicom.dicom_image` (``window``: its VOI override).
    """
    if is_dicom_path(path):
        out = dicom_image(path, window).convert(mode)
        return out if size is None or out.size == tuple(size) else out.resize(tuple(size), Image.Resampling.BILINEAR)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            im.load()
            out = im.convert(mode)
    if size is not None and out.size != tuple(size):
        out = out.resize(tuple(size), Image.Resampling.BILINEAR)
    return out


def _walk(folder: str, out: list[tuple[str, int, int]], seen: set[tuple[int, int]] | None = None) -> None:
    """Append (path, size, mtime_ns) of the image files under ``folder``, sorted by name, recursively.

    Directory symlinks are followed, but each real directory (``st_dev``, ``st_ino``) is walked
    once: a link back to an ancestor (a loop) or a second link to a folder already walked is skipped.
    """
    if seen is None:
        st = os.stat(folder)
        seen = {(st.st_dev, st.st_ino)}
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.name.startswith("."):
            continue
        try:
            if e.is_dir():
                st = e.stat()  # follows a symlink: the real directory's identity
                if (st.st_dev, st.st_ino) in seen:
                    log.warning("not following %s: %s was already walked (a symlink loop or a second link)",
                                e.path, os.path.realpath(e.path))
                    continue
                seen.add((st.st_dev, st.st_ino))
                _walk(e.path, out, seen)
            elif e.name.lower().endswith(IMAGE_EXTENSIONS):
                st = e.stat()
                out.append((e.path, st.st_size, st.st_mtime_ns))
        except OSError as err:  # a dangling symlink, or a file removed while we walk
            log.warning("skipping %s: %s", e.path, describe_error(err))


def class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def image_files(folder: str | os.PathLike) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every image file under ``folder``, sorted by name, at any depth."""
    found: list[tuple[str, int, int]] = []
    _walk(str(folder), found)
    return found


def scan_folder(folder: Path) -> tuple[list[str], list[tuple[str, int, int, int]]]:
    """Classes (sorted sub-folder names) and files as (path, label, size, mtime_ns); stat only.

    Refuses, before any training, a folder without classes, with one class, or with a class
    folder that holds no image files.
    """
    classes = class_dirs(folder)
    if len(classes) < 2:
        raise ValueError(
            f"{folder} has {len(classes)} class folder(s) {classes}; an image classifier needs at "
            f"least two: expected {folder}/<class>/<image> with one folder per class"
        )
    files, empty = [], []
    for label, name in enumerate(classes):
        found: list[tuple[str, int, int]] = []
        _walk(str(folder / name), found)
        if not found:
            empty.append(str(folder / name))
        files.extend((p, label, size, mtime) for p, size, mtime in found)
    if empty:
        raise ValueError(
            f"class folder(s) with no image files ({', '.join(IMAGE_EXTENSIONS)}, any case): "
            f"{', '.join(empty)}; remove them or add images"
        )
    return classes, files


def find_split_folder(root: Path, split: str, val_split: float) -> tuple[Path, bool]:
    """The folder that holds ``split``, and whether the split is carved out of it by val_split.

    ``root`` is either ``root/train/<class>/`` with ``val/`` or ``test/`` beside it (each falls
    back to the other), or itself a ``<class>/`` tree (train, and val with val_split > 0).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    carve = val_split > 0 and split in ("train", "val")
    if not (root / "train").is_dir():
        if split == "train" or carve:
            return root, carve
        raise ValueError(
            f"{root} has no train/ folder, so it is read as one <class>/ tree, which has no "
            f"{split!r} split: pass val_split > 0 to hold out a validation part, or lay it out "
            f"as {root}/train/<class>/ and {root}/test/<class>/"
        )
    if split == "train" or carve:
        return root / "train", carve
    order = ("val", "test") if split == "val" else ("test", "val")
    for name in order:
        if (root / name).is_dir():
            return root / name, False
    looked = " or ".join(str(root / n) for n in order)
    raise ValueError(
        f"no folder for split {split!r}: looked for {looked}; add one, or pass val_split > 0 to "
        f"hold out part of {root / 'train'} as the validation split"
    )


def check_same_classes(root: Path) -> None:
    """Refuse train/ and val/ or test/ whose class folders differ, listing the differences."""
    if not (root / "train").is_dir():
        return
    train = set(class_dirs(root / "train"))
    for name in ("val", "test"):
        if not (root / name).is_dir():
            continue
        other = set(class_dirs(root / name))
        if other != train:
            raise ValueError(
                f"class folders differ between {root / 'train'} and {root / name}: only in "
                f"train/: {sorted(train - other)}; only in {name}/: {sorted(other - train)}"
            )


class FolderDataset(torch.utils.data.Dataset):
    """Streamed large images: decoded in DataLoader workers, one at a time (memory bounded by the batch).

    ``__getitem__`` returns ``(image, label, path)``; ``image`` is ``None`` for a file that
    cannot be decoded (logged), so :func:`collate_skip_bad` can drop it and the epoch goes on.
    With ``strict=True`` such a file raises a ``ValueError`` naming it instead. Without a
    ``transform`` the image is a uint8 CHW tensor.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        *,
        in_chans: int = 3,
        skipped: Sequence[tuple[str, str]] = (),
        strict: bool = False,
        transform: Callable[[Image.Image], Tensor] | None = None,
        source: str = "",
        window: tuple[float, float] | None = None,
    ) -> None:
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans!r}")
        self.samples = list(samples)
        self.classes = list(classes)
        self.in_chans = in_chans
        self.skipped = list(skipped)
        self.strict = strict
        self.transform = transform
        self.source = source
        self.window = window  # DICOM VOI window (centre, width) overriding the files' own

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def targets(self) -> list:
        """Per sample its class index, or for multi-label data its 0/1 per label."""
        return [label for _, label in self.samples]

    @property
    def multilabel(self) -> bool:
        return bool(self.samples) and isinstance(self.samples[0][1], (list, tuple))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor | None, int, str]:
        path, label = self.samples[i]
        try:
            img = load_image(path, "L" if self.in_chans == 1 else "RGB", window=self.window)
        except Exception as e:  # a bad file must not end the epoch
            reason = describe_error(e)
            if self.strict:
                raise ValueError(f"cannot decode {path}: {reason}") from e
            log.warning("skipping %s: %s", path, reason)
            return None, label, path
        if self.transform is None:
            from torchvision.transforms.v2.functional import pil_to_tensor

            return pil_to_tensor(img), label, path
        return self.transform(img), label, path

    def __repr__(self) -> str:
        return (
            f"FolderDataset({len(self)} images, {self.num_classes} classes, in_chans={self.in_chans}, "
            f"{len(self.skipped)} skipped, source={self.source!r})"
        )


def collate_skip_bad(batch: Sequence[tuple[Tensor | None, int, str]]) -> tuple[Tensor, Tensor, list[str]]:
    """DataLoader collate: stacks the good samples, returns (images, labels, bad_paths).

    If every sample of the batch is bad, images is an empty tensor and labels has length 0: no
    model can take that batch, so a consumer must skip it, as :class:`~resnetlab.data.batches.FolderBatches`
    does (it yields no such batch and counts its files in ``epoch_bad`` and the next batch's n_bad).
    """
    good = [(x, y) for x, y, _ in batch if x is not None]
    bad = [p for x, _, p in batch if x is None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), bad
    images = torch.stack([x for x, _ in good])
    labels = torch.tensor([y for _, y in good], dtype=torch.int64)
    return images, labels, bad
