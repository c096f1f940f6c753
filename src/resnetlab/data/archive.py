"""Image-folder archives (``cifar10-jpeg.tar.gz`` and the like), unpacked once into the cache.

Pointing resnetlab at a ``.tar.gz`` / ``.tgz`` / ``.tar`` that holds an ImageFolder tree (or at a
folder holding one such archive) unpacks it into ``<cache>/<archive name>/``, atomically (a temp
folder renamed into place), with tarfile's ``data`` filter so no member can escape the folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from .cache import default_cache_dir

__all__ = ["ARCHIVE_SUFFIXES", "is_image_archive", "unpack_image_archive", "find_image_archive"]

log = logging.getLogger("resnetlab")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_image_archive(path: Path) -> bool:
    """An archive of image folders (not the CIFAR-10 *python* archive, read directly)."""
    return (path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)
            and not path.name.startswith("cifar-10-python"))


def find_image_archive(folder: Path) -> Path | None:
    """The one image-folder archive directly inside ``folder``, if there is exactly one."""
    if not folder.is_dir():
        return None
    found = [p for p in sorted(folder.iterdir()) if is_image_archive(p)]
    return found[0] if len(found) == 1 else None


def _data_root(folder: Path) -> Path:
    """The unpacked tree's data set root: the folder with train/, possibly one level down."""
    if (folder / "train").is_dir():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir()]
    if len(subs) == 1 and (subs[0] / "train").is_dir():
        return subs[0]
    return folder


def unpack_image_archive(archive: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Unpack ``archive`` into ``<cache>/<name>/`` unless that is already done; returns the data root."""
    archive = Path(archive)
    dest = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = dest / _stem(archive)
    stamp = target / ".unpacked"
    size = str(archive.stat().st_size)
    if stamp.is_file() and stamp.read_text() == size:
        return _data_root(target)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=dest))
    try:
        log.info("unpacking %s into %s (once)", archive, target)
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # Python < 3.11.4: refuse members that would escape the folder
                for m in tar.getmembers():
                    if m.name.startswith(("/", "..")) or ".." in Path(m.name).parts or m.issym() or m.islnk():
                        raise ValueError(f"{archive}: refusing unsafe member {m.name!r}")
                tar.extractall(tmp)
        (tmp / ".unpacked").write_text(size)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except (tarfile.TarError, OSError) as e:
        raise ValueError(f"{archive}: cannot unpack ({e})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _data_root(target)
