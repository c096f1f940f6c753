"""Writers of tiny data sets for the data tests: image folders, CIFAR-10 python batches and archives."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

# Each class has its own dominant channel, so a wrong label shows in the pixels.
COLOURS = {"blue": 2, "green": 1, "red": 0}


def write_image(path: Path, array: np.ndarray, fmt: str | None = None, **kw) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt, **kw)
    return array


def class_image(rng: np.random.Generator, cls: str, size: int = 8) -> np.ndarray:
    a = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    a[..., COLOURS[cls]] += 190
    return a


def noise_jpeg(size: int = 48) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def cifar_pickle(obj: dict) -> bytes:
    """Pickled like the official release: numpy arrays reconstructed via numpy.core.multiarray."""
    data = pickle.dumps(obj, protocol=3)  # GLOBAL opcodes are text lines, safe to rename
    return data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def cifar_batches(n_train: int = 4, n_test: int = 6, seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    out = {"batches.meta": {b"label_names": names, b"num_cases_per_batch": n_train, b"num_vis": 3072}}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else n_train
        out[name] = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in (np.arange(n) + i) % 10],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n)],
        }
    return out


def write_cifar_folder(folder: Path, batches: dict[str, dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, obj in batches.items():
        (folder / name).write_bytes(cifar_pickle(obj))
    return folder


def write_cifar_archive(path: Path, batches: dict[str, dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in batches.items():
            data = cifar_pickle(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
