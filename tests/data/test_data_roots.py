"""Where the data is: resolve_data_root, archives unpacked into the cache, available_splits, real CIFAR-10."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from data_helpers import cifar_batches, write_cifar_archive, write_cifar_folder

import resnetlab.data.archive as archive_mod
from resnetlab.data import (
    ArrayDataset,
    available_splits,
    default_cache_dir,
    open_dataset,
    resolve_data_root,
    unpack_image_archive,
)


def test_nothing_found_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "envcache"))
    monkeypatch.delenv("RESNETLAB_DATA", raising=False)
    with pytest.raises(FileNotFoundError) as err:
        resolve_data_root(None)
    msg = str(err.value)
    for needle in ("--data PATH", "RESNETLAB_DATA", "train/ and test/", "cifar-10-python.tar.gz", ".npz",
                   str(tmp_path / "envcache" / "cifar10")):  # the cache folder really in use
        assert needle in msg
    monkeypatch.delenv("RESNETLAB_CACHE")
    with pytest.raises(FileNotFoundError, match=f"into {tmp_path / '.cache' / 'resnetlab' / 'cifar10'} "):
        resolve_data_root(None)


def test_default_root_is_the_resnetlab_cache_only(tmp_path, monkeypatch):
    """With RESNETLAB_CACHE set, a ~/.cache/resnetlab/cifar10 left on the machine is not used."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RESNETLAB_DATA", raising=False)
    (tmp_path / "home" / ".cache" / "resnetlab" / "cifar10" / "train").mkdir(parents=True)
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="no data set found"):
        resolve_data_root(None)
    (tmp_path / "cache" / "cifar10" / "train").mkdir(parents=True)
    assert resolve_data_root(None) == tmp_path / "cache" / "cifar10"


def test_order_env_and_cifar10_subfolder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    shared = tmp_path / "shared"
    for split in ("train", "test"):
        (shared / "cifar10" / split).mkdir(parents=True)
    monkeypatch.setenv("RESNETLAB_DATA", str(shared))
    assert resolve_data_root(None) == shared / "cifar10"
    assert resolve_data_root(str(tmp_path)) == tmp_path  # an explicit --data wins
    with pytest.raises(FileNotFoundError, match=r"--data points at .*missing, which does not exist"):
        resolve_data_root(str(tmp_path / "missing"))
    monkeypatch.delenv("RESNETLAB_DATA")
    monkeypatch.delenv("RESNETLAB_CACHE", raising=False)  # then the cache is ~/.cache/resnetlab
    default = tmp_path / "home" / ".cache" / "resnetlab" / "cifar10"
    (default / "train").mkdir(parents=True)
    assert resolve_data_root(None) == default


def test_real_cifar10_test_split(real_cifar10, tmp_path):
    assert default_cache_dir() in real_cifar10.parents  # unpacked into the resnetlab cache
    assert available_splits(real_cifar10) == {"train", "test"}
    ds = open_dataset(real_cifar10, "test", cache_dir=tmp_path, progress=False)
    assert isinstance(ds, ArrayDataset) and ds.images.shape == (10000, 32, 32, 3)
    assert ds.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert np.bincount(ds.targets).tolist() == [1000] * 10 and not ds.skipped
    assert 100 < ds.images.mean() < 140  # decoded pixels, not zeros


def _tar_tree(tmp_path: Path, archive: Path | None = None, top: str = "tiny") -> Path:
    from PIL import Image

    src = tmp_path / "src" / top
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (src / split / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4), (255, 0, 0) if cls == "a" else (0, 0, 255)).save(src / split / cls / "0.png")
    archive = archive or tmp_path / "data" / "tiny-jpeg.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=top)
    return archive


def _tar_of(path: Path, files: dict[str, bytes], mtime: int = 1_700_000_000) -> Path:
    """An uncompressed tar: the same names and sizes give the same archive size, whatever the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            tar.addfile(info, io.BytesIO(data))
    return path


def test_image_archive_is_unpacked_once(tmp_path, monkeypatch):
    archive = _tar_tree(tmp_path)
    cache = tmp_path / "cache"
    root = resolve_data_root(str(archive.parent), cache_dir=cache)  # a folder holding the archive
    assert root == cache / "tiny-jpeg" / "tiny" and (root / "train" / "a" / "0.png").is_file()
    assert (cache / "tiny-jpeg").stat().st_mode & 0o777 == 0o755  # readable by the others sharing the cache
    stamp = json.loads((cache / "tiny-jpeg" / archive_mod.STAMP).read_text())
    assert stamp["sha256"] == archive_mod.archive_sha256(archive)
    mtime = (cache / "tiny-jpeg" / archive_mod.STAMP).stat().st_mtime_ns

    def no_second_look(*args):
        raise AssertionError("hashed or unpacked the archive again")

    monkeypatch.setattr(archive_mod, "archive_sha256", no_second_look)  # the digest is cached by size, mtime
    monkeypatch.setattr(archive_mod, "_extract", no_second_look)
    assert resolve_data_root(str(archive), cache_dir=cache) == root  # the archive itself, no second unpack
    assert (cache / "tiny-jpeg" / archive_mod.STAMP).stat().st_mtime_ns == mtime
    assert open_dataset(root, "test", cache_dir=cache, progress=False).classes == ["a", "b"]


def test_image_archive_unpacks_into_the_default_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "envcache"))
    archive = _tar_tree(tmp_path)
    assert resolve_data_root(str(archive)) == tmp_path / "envcache" / "tiny-jpeg" / "tiny"


def test_a_folder_resnetlab_did_not_make_is_never_deleted(tmp_path):
    cache = tmp_path / "cache"
    mine = cache / "cifar10"  # filled by hand, and an archive named cifar10.tar.gz comes along
    (mine / "train" / "cat").mkdir(parents=True)
    (mine / "train" / "cat" / "precious.jpg").write_bytes(b"mine")
    archive = _tar_tree(tmp_path, tmp_path / "data" / "cifar10.tar.gz", top="cifar10")
    root = unpack_image_archive(archive, cache)
    assert root == cache / "cifar10-unpacked" / "cifar10" and (root / "train" / "a" / "0.png").is_file()
    assert (mine / "train" / "cat" / "precious.jpg").read_bytes() == b"mine"
    assert unpack_image_archive(archive, cache) == root  # found again beside it
    (cache / "cifar10-unpacked" / archive_mod.STAMP).unlink()  # now neither folder is resnetlab's
    with pytest.raises(ValueError, match=r"never deletes what it did not create"):
        unpack_image_archive(archive, cache)
    assert (mine / "train" / "cat" / "precious.jpg").is_file() and (root / "train" / "a" / "0.png").is_file()


def test_stamp_is_the_content_digest_not_the_size(tmp_path):
    cache = tmp_path / "cache"
    archive = _tar_of(tmp_path / "data" / "t.tar", {"t/train/a/0.png": b"A" * 700, "t/train/b/0.png": b"b" * 9})
    root = unpack_image_archive(archive, cache)
    assert (root / "train" / "a" / "0.png").read_bytes() == b"A" * 700
    size = archive.stat().st_size
    _tar_of(archive, {"t/train/a/0.png": b"Z" * 700, "t/train/b/0.png": b"b" * 9})  # same size, new bytes
    st = archive.stat()
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert archive.stat().st_size == size
    assert unpack_image_archive(archive, cache) == root
    assert (root / "train" / "a" / "0.png").read_bytes() == b"Z" * 700  # re-unpacked: our own folder, replaced
    assert sorted(p.name for p in cache.iterdir()) == [".locks", "t"]  # no temp or old folder left


def test_a_folder_stamped_by_an_earlier_version_is_ours_and_replaced(tmp_path):
    cache = tmp_path / "cache"
    archive = _tar_of(tmp_path / "data" / "t.tar", {"t/train/a/0.png": b"new", "t/train/b/0.png": b"new"})
    old = cache / "t"
    (old / "t" / "train" / "a").mkdir(parents=True)
    (old / "t" / "train" / "a" / "0.png").write_bytes(b"old")
    (old / ".unpacked").write_text(str(archive.stat().st_size))  # the size stamp of earlier versions
    assert unpack_image_archive(archive, cache) == old / "t"
    assert (old / "t" / "train" / "a" / "0.png").read_bytes() == b"new" and not (old / ".unpacked").exists()


def test_concurrent_unpacks_unpack_once(tmp_path, monkeypatch):
    """Two jobs (here threads: flock excludes open files, not processes) share a cache: one unpacks."""
    archive = _tar_tree(tmp_path)
    cache = tmp_path / "cache"
    calls, inside, overlap = [], [0], []
    real = tarfile.TarFile.extractall

    def slow_extract(self, *args, **kwargs):
        inside[0] += 1
        overlap.append(inside[0] > 1)
        calls.append(threading.get_ident())
        time.sleep(0.3)
        try:
            return real(self, *args, **kwargs)
        finally:
            inside[0] -= 1

    monkeypatch.setattr(tarfile.TarFile, "extractall", slow_extract)
    results, errors = [], []

    def job():
        try:
            results.append(unpack_image_archive(archive, cache))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(calls) == 1 and not any(overlap)
    assert results == [cache / "tiny-jpeg" / "tiny"] * 2 and (results[0] / "train" / "b" / "0.png").is_file()


def _root_conftest():
    """tests/conftest.py as a module of its own, to call its helper with a made-up ../shared/data."""
    spec = importlib.util.spec_from_file_location("resnetlab_root_conftest", Path(__file__).parents[1] / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_real_cifar10_fixture_unpacks_into_the_cache_skips_or_fails_on_ci(tmp_path, monkeypatch):
    conf = _root_conftest()
    shared = tmp_path / "shared" / "data"
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"real CIFAR-10 not found: .*cifar10-jpeg.tar.gz is absent"):
        conf.shared_cifar10(shared)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="with CI=true the real-data tests must run"):
        conf.shared_cifar10(shared)
    _tar_tree(tmp_path, shared / "cifar10-jpeg.tar.gz", top="cifar10")  # a tiny stand-in
    root = conf.shared_cifar10(shared)
    assert root == tmp_path / "cache" / "cifar10-jpeg" / "cifar10" and (root / "test" / "b" / "0.png").is_file()


def test_available_splits(tmp_path, colour_tree):
    root, _ = colour_tree
    assert available_splits(root) == {"train", "test"}
    (root / "val").mkdir()
    assert available_splits(root) == {"train", "val", "test"}
    assert available_splits(root / "train") == {"train"}  # one <class>/ tree
    np.savez(tmp_path / "m.npz", train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.zeros(2, int),
             val_images=np.zeros((1, 4, 4), np.uint8), val_labels=np.zeros(1, int))
    assert available_splits(tmp_path / "m.npz") == {"train", "val"}
    batches = cifar_batches()
    assert available_splits(write_cifar_folder(tmp_path / "c" / "cifar-10-batches-py", batches)) == {"train", "test"}
    assert available_splits(tmp_path / "c") == {"train", "test"}
    assert available_splits(write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", batches)) == {"train", "test"}
    with pytest.raises(ValueError, match="cannot tell what data set"):
        available_splits(root / "train" / "red")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        available_splits(tmp_path / "nowhere")


def test_unsafe_archive_member_is_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(ValueError, match="evil.tar.gz"):
        resolve_data_root(str(archive), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "escaped.txt").exists()


def test_download_only_when_asked(tmp_path, monkeypatch):
    import resnetlab.data.datasets as datasets

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RESNETLAB_DATA", raising=False)
    calls = []
    monkeypatch.setattr(datasets, "download_cifar10", lambda root: calls.append(root) or root / "x.tar.gz")
    with pytest.raises(FileNotFoundError):
        resolve_data_root(None, cache_dir=tmp_path / "cache")
    assert not calls
    assert resolve_data_root(None, download=True, cache_dir=tmp_path / "cache") == tmp_path / "cache" / "x.tar.gz"
    assert calls == [tmp_path / "cache"]
