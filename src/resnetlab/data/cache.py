"""Image folders opened fast: a header index and, for small images, a decoded uint8 cache.

The first open of a split reads every file's header (size and mode, no decoding). If all
images are small, they are decoded once into ``<cache_dir>/<name>-<split>-<key>.npy``, opened
later with ``np.load(mmap_mode="r")``. The key hashes the sorted (relative path, size,
mtime_ns) of the split's files, so a second open costs one ``stat`` per file and decodes
nothing, and touching, adding or removing a file rebuilds. Every cache file is written through
:mod:`resnetlab.utils.fileio` (a temp file renamed into place), so a killed run never leaves a half
cache behind, and a build holds a file lock, so jobs sharing the cache decode a split once.

Ours rather than a library's: torchvision's ImageFolder decodes every JPEG again every epoch, and
the loaders that cache decoded data (FFCV, DALI, WebDataset) bring their own formats and build steps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.fileio import atomic_path, atomic_write_text
from ..utils.progress import Progress
from .arrays import ArrayDataset, split_indices
from .folder import (
    GRAY_MODES,
    FolderDataset,
    check_same_classes,
    describe_error,
    find_split_folder,
    load_image,
    read_header,
    scan_folder,
)
from .lock import data_lock

__all__ = ["open_image_folder", "open_file_split", "FileSplit", "default_cache_dir", "CACHE_VERSION"]


log = logging.getLogger("resnetlab")

CACHE_VERSION = 1
POOL_MIN_FILES = 4096  # below this a process pool costs more than it saves
CHUNK = 1024


def default_cache_dir() -> Path:
    """``$RESNETLAB_CACHE`` if set, else ``~/.cache/resnetlab``."""
    env = os.environ.get("RESNETLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "resnetlab"


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()[:20]


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, separators=(",", ":")))


def _read_json(path: Path, key: str) -> dict | None:
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    ok = meta.get("version") == CACHE_VERSION and meta.get("key") == key
    return meta if ok else None


def _map(fn, jobs: list[tuple], total: int, progress: Progress) -> list:
    """Run ``fn(*job)`` for every job, in a process pool when there is enough work; in order."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(cpus, 8)
    results = []
    if total < POOL_MIN_FILES or workers < 2:
        for job in jobs:
            results.append(fn(*job))
            progress.update(len(job[-1]))
        return results
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(fn, *job) for job in jobs]
        for job, fut in zip(jobs, futures):
            results.append(fut.result())
            progress.update(len(job[-1]))
    finally:  # on Ctrl-C, do not wait for the chunks that have not started
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _header_chunk(paths: list[str]) -> list:
    return [read_header(p) for p in paths]


def _decode_chunk(npy: str, start: int, mode: str, size: tuple[int, int], window: tuple[float, float] | None,
                  paths: list[str]) -> list:
    """Decode ``paths`` into rows ``start:`` of the .npy at ``npy``; returns [(row, reason)]."""
    arr = np.load(npy, mmap_mode="r+")
    bad = []
    for j, p in enumerate(paths):
        try:
            arr[start + j] = np.asarray(load_image(p, mode, size, window), dtype=np.uint8).reshape(arr.shape[1:])
        except Exception as e:  # noqa: BLE001 - reported and skipped by the caller
            bad.append((start + j, describe_error(e)))
    arr.flush()
    del arr
    return bad


def _chunks(paths: Sequence[str]) -> list[tuple[int, list[str]]]:
    return [(i, list(paths[i : i + CHUNK])) for i in range(0, len(paths), CHUNK)]


def _headers(folder: Path, files: list, index_path: Path, key: str, progress: bool) -> list:
    """Per file (w, h, mode) or the reason it is unusable: from the index file, else read."""
    meta = _read_json(index_path, key)
    if meta is not None:
        return [tuple(h) if isinstance(h, list) else h for h in meta["headers"]]
    bar = Progress(len(files), f"reading headers of {folder}", enabled=progress, unit="file")
    jobs = [(paths,) for _, paths in _chunks([f[0] for f in files])]
    headers = [h for part in _map(_header_chunk, jobs, len(files), bar) for h in part]
    bar.close()
    _write_json(index_path, {"version": CACHE_VERSION, "key": key, "headers": headers})
    return headers


def _report_skipped(skipped: list[tuple[str, str]], where: Path) -> None:
    for path, reason in skipped[:10]:
        log.warning("skipping %s: %s", path, reason)
    if len(skipped) > 10:
        log.warning("skipped %d unreadable files in %s in all (see dataset.skipped)", len(skipped), where)


def _strict_check(skipped: list[tuple[str, str]]) -> None:
    if skipped:
        path, reason = skipped[0]
        raise ValueError(f"cannot read {path}: {reason} (strict=True; {len(skipped)} bad file(s) in all)")


def _build_array(npy: Path, paths: list[str], mode: str, size: tuple[int, int], progress: bool,
                 window: tuple[float, float] | None = None) -> list:
    """Decode ``paths`` into a new .npy at ``npy`` (atomically); returns the bad rows as [(row, reason)]."""
    c = 1 if mode == "L" else 3
    with atomic_path(npy) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size[1], size[0], c))
        del arr
        bar = Progress(len(paths), f"caching {len(paths)} images", enabled=progress, unit="img")
        jobs = [(str(tmp), start, mode, size, window, part) for start, part in _chunks(paths)]  # paths last: _map
        bad = sorted(b for part in _map(_decode_chunk, jobs, len(paths), bar) for b in part)
        bar.close()
        if bad:  # drop the rows that failed to decode, chunk by chunk, into a replacement of tmp
            keep = np.setdiff1d(np.arange(len(paths)), [r for r, _ in bad])
            src = np.load(tmp, mmap_mode="r")
            with atomic_path(tmp) as compact:
                dst = np.lib.format.open_memmap(compact, mode="w+", dtype=np.uint8,
                                                shape=(len(keep),) + src.shape[1:])
                for i in range(0, len(keep), 8192):
                    dst[i : i + 8192] = src[keep[i : i + 8192]]
                dst.flush()
                del dst, src
    return bad


def _decide(headers: list) -> tuple[str, tuple[int, int], int]:
    """Mode ("L" if every image is grayscale), most common (W, H), largest side; good files only."""
    good = [h for h in headers if not isinstance(h, str)]
    if not good:
        return "RGB", (0, 0), 0
    mode = "L" if all(m in GRAY_MODES for _, _, m in good) else "RGB"
    size = Counter((w, h) for w, h, _ in good).most_common(1)[0][0]
    return mode, size, max(max(w, h) for w, h, _ in good)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "data"


@dataclass
class FileSplit:
    """One split's files after the stat scan: all of its folder (or file list), and the selected rows.

    Image folders make one with their folder walk; :mod:`resnetlab.data.csvlist` with a CSV of paths;
    :func:`open_file_split` then caches or streams it the same way.
    """

    folder: Path
    split: str
    classes: list[str]
    files: list[tuple[str, int, int, int]]  # (path, label, size, mtime_ns)
    rel: list[str]  # paths relative to folder
    sel: np.ndarray  # indices of the files in this split (all, or a val_split part)
    source: str
    salt: str = ""  # what else the labels depend on (a file list's own digest); part of every key
    window: tuple[float, float] | None = None  # DICOM VOI window overriding the files' own; part of every key

    def key(self, *extra: Any, rows: Sequence[int] | None = None) -> str:
        rows = range(len(self.files)) if rows is None else np.asarray(rows).tolist()
        listing = [[self.rel[i], self.files[i][2], self.files[i][3]] for i in rows]
        more = ([self.salt] if self.salt else []) + ([list(self.window)] if self.window else [])
        return _hash(CACHE_VERSION, str(self.folder), *extra, *more, listing)


def _scan_split(root: Path, split: str, val_split: float, seed: int) -> FileSplit:
    folder, carve = find_split_folder(root, split, val_split)
    classes, files = scan_folder(folder)
    check_same_classes(root)
    cut = len(str(folder)) + 1  # scan_folder's paths all start with folder + os.sep
    rel = [f[0][cut:] for f in files]
    sel = np.arange(len(files))
    if carve:
        train_idx, val_idx = split_indices(np.array([f[1] for f in files]), val_split, seed, classes)
        sel = val_idx if split == "val" else train_idx
    source = f"{folder} ({split}" + (f", val_split={val_split}, seed={seed})" if carve else ")")
    return FileSplit(folder, split, classes, files, rel, sel, source)


def _load_cached(npy: Path, meta: dict, sp: FileSplit) -> ArrayDataset | None:
    try:
        images = np.load(npy, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if list(images.shape) != meta["shape"]:
        return None
    prefix = str(sp.folder) + os.sep
    return ArrayDataset(
        images, np.asarray(meta["targets"], dtype=np.int64), meta["classes"], source=sp.source,
        skipped=[tuple(s) for s in meta["skipped"]], paths=[prefix + r for r in meta["paths"]],
    )


def _build_split(sp: FileSplit, headers: list, npy: Path, meta_path: Path, key: str, strict: bool, progress: bool):
    """Decode the split's readable files into the array cache and write its metadata."""
    mode, size, max_side = _decide(headers)  # the whole folder, so train and val portions agree
    good = [int(i) for i in sp.sel if not isinstance(headers[i], str)]
    skipped = [(sp.files[i][0], headers[i]) for i in sp.sel if isinstance(headers[i], str)]
    n_resized = sum(1 for i in good if tuple(headers[i][:2]) != size)
    if n_resized:
        log.warning(
            "%s: resizing %d of %d images to the most common size %dx%d (bilinear)",
            sp.source, n_resized, len(good), size[0], size[1],
        )
    log.info("%s: decoding %d images once into the array cache %s", sp.source, len(good), npy)
    bad = _build_array(npy, [sp.files[i][0] for i in good], mode, size, progress, sp.window)
    if bad and strict:
        npy.unlink(missing_ok=True)
        _strict_check([(sp.files[good[r]][0], reason) for r, reason in bad])
    bad_rows = {r for r, _ in bad}
    skipped += [(sp.files[good[r]][0], reason) for r, reason in bad]
    rows = [i for j, i in enumerate(good) if j not in bad_rows]
    meta = {
        "version": CACHE_VERSION, "key": key, "source": sp.source, "classes": sp.classes,
        "targets": [sp.files[i][1] for i in rows], "paths": [sp.rel[i] for i in rows], "skipped": skipped,
        "shape": [len(rows), size[1], size[0], 1 if mode == "L" else 3], "max_side": max_side,
    }
    _write_json(meta_path, meta)
    return meta


def open_image_folder(
    root: str | os.PathLike,
    split: str,
    *,
    val_split: float = 0.0,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    strict: bool = False,
    small_max: int = 64,
    progress: bool = True,
    window: tuple[float, float] | None = None,
) -> ArrayDataset | FolderDataset:
    """One split of an ImageFolder tree: an :class:`ArrayDataset` (cached) if every image has
    both sides <= ``small_max``, else a :class:`FolderDataset`. See :func:`open_dataset`."""
    root = Path(root).expanduser().resolve()
    sp = _scan_split(root, split, val_split, seed)
    sp.window = window
    name = _safe(root.name) if sp.folder == root else f"{_safe(root.name)}_{_safe(sp.folder.name)}"
    return open_file_split(sp, name, cache_dir=cache_dir, strict=strict, small_max=small_max, progress=progress)


def open_file_split(sp: FileSplit, name: str, *, cache_dir: str | os.PathLike | None = None, strict: bool = False,
                    small_max: int = 64, progress: bool = True) -> ArrayDataset | FolderDataset:
    """The files of ``sp``: decoded into the uint8 cache (as ``<name>-<split>-<key>.npy``) when every image
    has both sides <= ``small_max``, else streamed; unreadable files skipped and reported."""
    split = sp.split
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = sp.key(split, rows=sp.sel)
    npy, meta_path = cache_dir / f"{name}-{split}-{key}.npy", cache_dir / f"{name}-{split}-{key}.json"

    ds = _cached(npy, meta_path, key, sp, small_max)
    if ds is None:
        with data_lock(cache_dir, f"cache-{name}-{split}"):  # a job sharing the cache may be building it
            ds = _cached(npy, meta_path, key, sp, small_max)
            if ds is None:
                ds = _build_or_stream(sp, name, npy, meta_path, key, cache_dir, strict, small_max, progress)
    else:
        log.info("%s: %d images from the array cache %s", sp.source, len(ds), npy)
    if isinstance(ds, FolderDataset):
        return ds
    if strict:
        _strict_check(ds.skipped)
    _report_skipped(ds.skipped, sp.folder)
    return ds


def _cached(npy: Path, meta_path: Path, key: str, sp: FileSplit, small_max: int) -> ArrayDataset | None:
    meta = _read_json(meta_path, key)
    return _load_cached(npy, meta, sp) if meta is not None and meta["max_side"] <= small_max else None


def _build_or_stream(sp: FileSplit, name: str, npy: Path, meta_path: Path, key: str, cache_dir: Path, strict: bool,
                     small_max: int, progress: bool) -> ArrayDataset | FolderDataset:
    """Read the headers (or their index); small images: decode them into the cache; large: stream."""
    folder_key = sp.key()
    headers = _headers(sp.folder, sp.files, cache_dir / f"{name}-{folder_key}.index.json", folder_key, progress)
    skipped = [(sp.files[i][0], headers[i]) for i in sp.sel if isinstance(headers[i], str)]
    good = [int(i) for i in sp.sel if not isinstance(headers[i], str)]
    if strict:
        _strict_check(skipped)
    if not good:
        raise ValueError(f"no readable image in {sp.folder} for split {sp.split!r} ({len(skipped)} unreadable)")
    mode, _, max_side = _decide(headers)
    if max_side > small_max:
        _report_skipped(skipped, sp.folder)
        samples = [(sp.files[i][0], sp.files[i][1]) for i in good]
        return FolderDataset(samples, sp.classes, in_chans=1 if mode == "L" else 3, skipped=skipped,
                             strict=strict, source=sp.source, window=sp.window)
    meta = _build_split(sp, headers, npy, meta_path, key, strict, progress)
    ds = _load_cached(npy, meta, sp)
    if ds is None:
        raise OSError(f"the array cache {npy} was just written but cannot be read back")
    return ds
