"""The array cache: hit without decoding, keyed on mtime, atomic, and the seeded val split."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import resnetlab.data.cache as cache_mod
import resnetlab.utils.fileio as fileio
from resnetlab.data import ArrayDataset, open_dataset, split_indices


def _forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decoded or read a header on a cache hit")

    monkeypatch.setattr(cache_mod, "load_image", fail)
    monkeypatch.setattr(cache_mod, "read_header", fail)


def test_second_open_is_a_cache_hit(colour_tree, cache, monkeypatch):
    root, _ = colour_tree
    first = open_dataset(root, "train", cache_dir=cache, progress=False)
    _forbid_decoding(monkeypatch)
    second = open_dataset(root, "train", cache_dir=cache, progress=False)
    np.testing.assert_array_equal(first.images, second.images)
    assert first.targets.tolist() == second.targets.tolist() and first.paths == second.paths


def test_touching_a_file_rebuilds(colour_tree, cache, monkeypatch):
    root, _ = colour_tree
    open_dataset(root, "train", cache_dir=cache, progress=False)
    decoded = []
    real = cache_mod.load_image
    monkeypatch.setattr(cache_mod, "load_image", lambda p, *a: decoded.append(p) or real(p, *a))
    victim = root / "train" / "red" / "00.png"
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    open_dataset(root, "train", cache_dir=cache, progress=False)
    assert str(victim) in decoded and len(decoded) == 18
    decoded.clear()
    open_dataset(root, "train", cache_dir=cache, progress=False)
    assert decoded == []


def test_default_cache_dir_follows_env(colour_tree, tmp_path, monkeypatch):
    root, _ = colour_tree
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "envcache"))
    open_dataset(root, "test", progress=False)
    assert len(list((tmp_path / "envcache").glob("*.npy"))) == 1


def test_killed_build_leaves_no_partial_cache(colour_tree, cache, monkeypatch):
    root, _ = colour_tree
    calls = []

    def die(path, *args):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt  # not a bad file: the run itself is stopped
        return real(path, *args)

    real = cache_mod.load_image
    monkeypatch.setattr(cache_mod, "load_image", die)
    with pytest.raises(KeyboardInterrupt):
        open_dataset(root, "train", cache_dir=cache, progress=False)
    assert not list(cache.glob("*.npy")) and not list(cache.glob("*.tmp"))
    assert [p.name for p in cache.glob(".*")] == [".locks"]  # no hidden temp file, only the lock folder
    monkeypatch.setattr(cache_mod, "load_image", real)
    assert len(open_dataset(root, "train", cache_dir=cache, progress=False)) == 18
    files = [p for p in cache.iterdir() if p.name != ".locks"]
    assert sorted(p.suffix for p in files) == [".json", ".json", ".npy"]  # index, meta, array


def test_val_split_is_seeded_stratified_and_disjoint(colour_tree, cache):
    root, pixels = colour_tree
    kw = {"cache_dir": cache, "progress": False}
    train = open_dataset(root, "train", val_split=0.34, seed=1, **kw)
    val = open_dataset(root, "val", val_split=0.34, seed=1, **kw)
    assert np.bincount(val.targets).tolist() == [2, 2, 2] and np.bincount(train.targets).tolist() == [4, 4, 4]
    assert not set(train.paths) & set(val.paths)
    assert sorted(train.paths + val.paths) == sorted(p for p in pixels if "/train/" in p)
    again = open_dataset(root, "val", val_split=0.34, seed=1, **kw)
    assert again.paths == val.paths
    other = [open_dataset(root, "val", val_split=0.34, seed=s, **kw).paths for s in range(2, 6)]
    assert any(o != val.paths for o in other)
    test = open_dataset(root, "test", val_split=0.34, seed=1, **kw)
    assert all("/test/" in p for p in test.paths) and len(test) == 6


def test_split_indices_edge_cases():
    labels = np.array([0] * 10 + [1] * 1 + [2] * 3)
    tr, va = split_indices(labels, 0.1, 0, ["a", "b", "c"])
    assert np.bincount(labels[va], minlength=3).tolist() == [1, 0, 1]  # a singleton class stays in train
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(14))
    with pytest.raises(ValueError, match="val_split must be in"):
        split_indices(labels, 1.0, 0, ["a", "b", "c"])


def test_array_dataset_checks_its_inputs():
    with pytest.raises(ValueError, match=r"uint8 of shape \(N, H, W, C\)"):
        ArrayDataset(np.zeros((2, 4, 4, 2), np.uint8), np.zeros(2), ["a", "b"])
    with pytest.raises(ValueError, match=r"labels must lie in 0..1"):
        ArrayDataset(np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 2]), ["a", "b"])


def test_process_pool_path_matches_the_serial_one(colour_tree, tmp_path, monkeypatch):
    root, _ = colour_tree
    (root / "train" / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (root / "train" / "green" / "short.png").write_bytes((root / "train" / "green" / "00.png").read_bytes()[:120])
    serial = open_dataset(root, "train", cache_dir=tmp_path / "serial", progress=False)
    monkeypatch.setattr(cache_mod, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(cache_mod, "CHUNK", 4)
    pooled = open_dataset(root, "train", cache_dir=tmp_path / "pooled", progress=False)
    np.testing.assert_array_equal(serial.images, pooled.images)
    assert serial.paths == pooled.paths and len(pooled) == 18
    assert sorted(serial.skipped) == sorted(pooled.skipped) and len(pooled.skipped) == 2
    assert any("truncated" in reason for _, reason in pooled.skipped)  # dropped after decoding


def test_cache_files_are_written_through_fileio(colour_tree, cache, monkeypatch):
    """Index, array and metadata go through resnetlab.utils.fileio (fsync'ed, then renamed)."""
    root, _ = colour_tree
    (root / "train" / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (root / "train" / "green" / "short.png").write_bytes((root / "train" / "green" / "00.png").read_bytes()[:120])
    written = []
    real = fileio.atomic_path

    def spy(path, **kw):
        written.append(os.path.basename(path))
        return real(path, **kw)

    monkeypatch.setattr(fileio, "atomic_path", spy)  # atomic_open / atomic_write_text use it too
    monkeypatch.setattr(cache_mod, "atomic_path", spy)
    ds = open_dataset(root, "train", cache_dir=cache, progress=False)
    assert len(ds) == 18 and len(ds.skipped) == 2
    final = sorted(p.name for p in cache.iterdir() if p.name != ".locks")
    assert sorted(n for n in written if not n.startswith(".")) == final  # each file once; the compaction of the
    assert any(n.startswith(".") and ".npy" in n for n in written)  # array (a bad row dropped) into its temp file


def test_concurrent_opens_decode_once(colour_tree, cache, monkeypatch):
    root, _ = colour_tree
    decoded = []
    real = cache_mod.load_image

    def slow(path, *args):
        decoded.append(path)
        time.sleep(0.01)
        return real(path, *args)

    monkeypatch.setattr(cache_mod, "load_image", slow)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        open_dataset(root, "train", cache_dir=cache, progress=False))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 2 and len(decoded) == 18  # the second job waited, then read the cache
    np.testing.assert_array_equal(results[0].images, results[1].images)
