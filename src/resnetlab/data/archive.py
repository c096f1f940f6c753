"""Image-folder archives (``cifar10-jpeg.tar.gz`` and the like), unpacked once into the cache.

Pointing resnetlab at a ``.tar.gz`` / ``.tgz`` / ``.tar`` that holds an ImageFolder tree (or at a
folder holding one such archive) unpacks it into ``<cache>/<archive name>/``, atomically (a temp
folder renamed into place), with tarfile's ``data`` filter so no member can escape the folder,
under a file lock so concurrent jobs and DDP ranks unpack it once.

The folder it unpacks into carries a stamp, ``.resnetlab-unpacked.json``, with the archive's
sha256 (computed once; trusted again while the archive's path, size and mtime are unchanged).
resnetlab never deletes a folder without that stamp: when ``<cache>/<archive name>/`` exists and
was not made by resnetlab (a folder filled by hand), the archive is unpacked beside it into
``<cache>/<archive name>-unpacked/`` and a warning says so.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import tarfile
import tempfile
import uuid
from pathlib import Path

from ..utils.download import file_digest
from ..utils.fileio import atomic_write_text
from .cache import default_cache_dir
from .lock import data_lock

__all__ = [
    "ARCHIVE_SUFFIXES", "STAMP", "is_image_archive", "unpack_image_archive", "find_image_archive", "archive_sha256",
]

log = logging.getLogger("resnetlab")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
STAMP = ".resnetlab-unpacked.json"
LEGACY_STAMP = ".unpacked"  # written by earlier versions (the archive's size): ours, but never up to date
BESIDE_SUFFIX = "-unpacked"


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


def archive_sha256(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")


def _data_root(folder: Path) -> Path:
    """The unpacked tree's data set root: the folder with train/, possibly one level down."""
    if (folder / "train").is_dir():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir()]
    if len(subs) == 1 and (subs[0] / "train").is_dir():
        return subs[0]
    return folder


def _made_by_us(folder: Path) -> bool:
    return folder.is_dir() and ((folder / STAMP).is_file() or (folder / LEGACY_STAMP).is_file())


def _read_stamp(folder: Path) -> dict | None:
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) and isinstance(stamp.get("sha256"), str) else None


def _identity(archive: Path) -> dict:
    """What the cached digest is keyed on: the archive's real path, size and mtime."""
    st = archive.stat()
    return {"archive": str(archive.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _same_file(stamp: dict | None, ident: dict) -> bool:
    return stamp is not None and all(stamp.get(k) == v for k, v in ident.items())


def _target(archive: Path, dest: Path) -> Path:
    """``<dest>/<stem>``, or ``<dest>/<stem>-unpacked`` when the first is a folder resnetlab did not make."""
    first = dest / _stem(archive)
    if not first.exists() or _made_by_us(first):
        return first
    beside = dest / f"{first.name}{BESIDE_SUFFIX}"
    if not beside.exists() or _made_by_us(beside):
        return beside
    raise ValueError(
        f"{archive}: cannot unpack it into the cache: {first} and {beside} both exist and were not made by "
        f"resnetlab (no {STAMP} in them), and resnetlab never deletes what it did not create; move one of them "
        f"away, or point --data at the unpacked folder itself"
    )


def _extract(archive: Path, into: Path) -> None:
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # Python < 3.11.4: refuse members that would escape the folder
            for m in tar.getmembers():
                if m.name.startswith(("/", "..")) or ".." in Path(m.name).parts or m.issym() or m.islnk():
                    raise ValueError(f"{archive}: refusing unsafe member {m.name!r}")
            tar.extractall(into)


def _remove_leftovers(dest: Path, name: str) -> None:
    """Temp and replaced folders of ``name`` left by a killed unpack (only called under the lock)."""
    for pattern in (f".{glob.escape(name)}.*.unpacking", f".{glob.escape(name)}.*.old"):
        for p in dest.glob(pattern):
            shutil.rmtree(p, ignore_errors=True)


def unpack_image_archive(archive: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Unpack ``archive`` into ``<cache>/<name>/`` unless that is already done; returns the data root.

    "Done" means the folder's stamp holds the archive's sha256. A stamped folder whose digest
    differs is replaced (only once the new one is complete); a folder without the stamp is left
    alone and the archive unpacked beside it (see the module docstring). Concurrent callers wait
    for the first one and then find its work.
    """
    archive = Path(archive).expanduser()
    dest = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    ident = _identity(archive)
    target = _target(archive, dest)
    if _same_file(_read_stamp(target), ident):  # fast path: no lock, no hashing
        return _data_root(target)
    with data_lock(dest, f"unpack-{_stem(archive)}"):
        target = _target(archive, dest)  # another job may have made it meanwhile
        stamp = _read_stamp(target)
        digest = stamp["sha256"] if _same_file(stamp, ident) else archive_sha256(archive)
        new_stamp = json.dumps({"version": 1, "sha256": digest, **ident}, indent=1) + "\n"
        if stamp is not None and stamp["sha256"] == digest:
            atomic_write_text(target / STAMP, new_stamp)  # same content, new path or mtime: key it anew
            return _data_root(target)
        if target.name != _stem(archive):
            log.warning("%s exists and was not made by resnetlab: leaving it alone, unpacking %s into %s",
                        dest / _stem(archive), archive, target)
        _remove_leftovers(dest, target.name)
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".unpacking", dir=dest))
        try:
            log.info("unpacking %s into %s (once)", archive, target)
            _extract(archive, tmp)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; a cache may be shared
            atomic_write_text(tmp / STAMP, new_stamp)
            if target.exists():  # stamped by resnetlab (see _target), but for another archive: replace it
                old = dest / f".{target.name}.{uuid.uuid4().hex[:8]}.old"
                os.rename(target, old)
                os.rename(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, target)
        except (tarfile.TarError, OSError) as e:
            raise ValueError(f"{archive}: cannot unpack ({e})") from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return _data_root(target)
