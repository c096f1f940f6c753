"""CIFAR-10 in its official python format, read without trusting pickle; and its download.

The official batches are pickles of dicts holding bytes, lists, ints and one numpy array. They
are read with an unpickler that resolves exactly numpy's array-reconstruction globals and
refuses every other global, naming it, so a tampered file cannot run code. (Ours rather than
torchvision's CIFAR10, which reads the same batches with a plain ``pickle.load`` that runs whatever a
tampered file asks for.) The download has a read timeout, retries with backoff, an md5 check and a
file lock, so jobs sharing a cache fetch it once.
"""

from __future__ import annotations

import logging
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

import numpy as np

from ..utils.download import download_file, file_digest
from .arrays import ArrayDataset, carve_split
from .lock import data_lock

__all__ = ["open_cifar10", "download_cifar10", "find_cifar10", "load_cifar_pickle", "CIFAR10_URL", "CIFAR10_MD5"]

log = logging.getLogger("resnetlab")

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))

# numpy < 2 names its internals numpy.core, numpy >= 2 numpy._core; the official files say numpy.core.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


def _np_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _Refused(pickle.UnpicklingError):
    """A global outside the allow-list: the file is not a plain CIFAR-10 batch."""


class _CifarUnpickler(pickle.Unpickler):
    """Resolves numpy's ``_reconstruct``, ``ndarray`` and ``dtype``; refuses every other global."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise _Refused(f"refusing to load the global {module}.{name}")
        return _np_reconstruct() if name == "_reconstruct" else getattr(np, name)


def load_cifar_pickle(f: IO[bytes], name: str) -> dict:
    """One batch file as a dict with str keys; ``name`` is only for error messages."""
    try:
        obj = _CifarUnpickler(f, encoding="bytes").load()
    except _Refused as e:
        raise ValueError(
            f"{name}: {e}; a CIFAR-10 batch holds only dicts, lists, bytes, ints and numpy arrays"
        ) from e
    except Exception as e:  # truncated, or not a pickle at all
        raise ValueError(f"{name}: not a readable CIFAR-10 batch ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{name}: expected a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def find_cifar10(path: Path) -> Path | None:
    """The batches folder or archive at or directly inside ``path``, else None."""
    if path.is_file():
        return path if path.name.endswith((".tar.gz", ".tgz")) else None
    if (path / "data_batch_1").is_file() or (path / "test_batch").is_file():
        return path
    for cand in (path / FOLDER, path / ARCHIVE):
        if cand.exists():
            return cand
    return None


def _read_members(source: Path, names: set[str]) -> dict[str, dict]:
    found: dict[str, dict] = {}
    if source.is_dir():
        for n in names:
            if (source / n).is_file():
                with open(source / n, "rb") as f:
                    found[n] = load_cifar_pickle(f, str(source / n))
    else:
        with tarfile.open(source, "r:*") as tar:
            for m in tar:
                n = os.path.basename(m.name)
                if m.isfile() and n in names and os.path.dirname(m.name).endswith(FOLDER):
                    found[n] = load_cifar_pickle(tar.extractfile(m), f"{source}:{m.name}")
    missing = sorted(names - set(found))
    if missing:
        raise ValueError(f"{source} is missing the CIFAR-10 file(s) {missing}")
    return found


def _batch_arrays(batch: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"{name}: expected keys 'data' and 'labels', found {sorted(batch)}")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{name}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if labels.shape != (len(data),):
        raise ValueError(f"{name}: {len(data)} images but labels of shape {labels.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def open_cifar10(source: Path, split: str, *, val_split: float = 0.0, seed: int = 0) -> ArrayDataset:
    """``data_batch_1..5`` for train, ``test_batch`` for test and val (or a val_split of train)."""
    carve = val_split > 0 and split in ("train", "val")
    batches = TRAIN_BATCHES if split == "train" or carve else ("test_batch",)
    found = _read_members(source, set(batches) | {"batches.meta"})
    meta = found["batches.meta"]
    if "label_names" not in meta:
        raise ValueError(f"{source}: batches.meta has no 'label_names' (keys: {sorted(meta)})")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta["label_names"]]
    parts = [_batch_arrays(found[b], f"{source}/{b}") for b in batches]
    images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
    targets = np.concatenate([p[1] for p in parts])
    ds = ArrayDataset(images, targets, classes, source=f"{source} ({'/'.join(batches)})")
    if not carve:
        return ds
    return carve_split(ds, split, val_split, seed,
                       f"{source} ({split}: val_split={val_split}, seed={seed} of the training batches)")


def download_cifar10(
    root: str | os.PathLike, *, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5, progress: bool = True,
    timeout: float = 60.0, retries: int = 3, backoff_s: float = 1.0,
) -> Path:
    """Download the archive into ``root`` (md5 verified, renamed into place only when complete).

    An archive already there with the right md5 is reused. A wrong md5 deletes the download and
    raises a ValueError naming the expected and the actual digest. Every connect and read waits at
    most ``timeout`` seconds; a failed attempt (timeout, dropped connection, HTTP 5xx) is retried
    up to ``retries`` times, after ``backoff_s``, then twice that, and so on; the last failure is
    an OSError naming the URL. Concurrent calls for the same file (jobs sharing a cache, DDP
    ranks) wait for the first one and then reuse its download.
    """
    if retries < 0 or timeout <= 0:
        raise ValueError(f"need retries >= 0 and timeout > 0, got retries={retries!r} timeout={timeout!r}")
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    dest = root / (os.path.basename(urllib.request.urlparse(url).path) or ARCHIVE)
    with data_lock(root, f"download-{dest.name}"):
        if dest.is_file() and file_digest(dest, "md5") == md5:
            return dest
        return download_file(url, dest, expected=md5, algorithm="md5", timeout=timeout, retries=retries,
                             backoff_s=backoff_s, progress=progress)
