"""Where the data is: resolve_data_root, and the real CIFAR-10 test split when it is unpacked here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from resnetlab.data import ArrayDataset, open_dataset, resolve_data_root


def test_nothing_found_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RESNETLAB_DATA", raising=False)
    with pytest.raises(FileNotFoundError) as err:
        resolve_data_root(None)
    msg = str(err.value)
    for needle in ("--data PATH", "RESNETLAB_DATA", "train/ and test/", "cifar-10-python.tar.gz", ".npz",
                   "~/.cache/resnetlab/cifar10"):
        assert needle in msg


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
    default = tmp_path / "home" / ".cache" / "resnetlab" / "cifar10"
    (default / "train").mkdir(parents=True)
    assert resolve_data_root(None) == default


def test_real_cifar10_test_split(real_cifar10, tmp_path):
    ds = open_dataset(real_cifar10, "test", cache_dir=tmp_path, progress=False)
    assert isinstance(ds, ArrayDataset) and ds.images.shape == (10000, 32, 32, 3)
    assert ds.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert np.bincount(ds.targets).tolist() == [1000] * 10 and not ds.skipped
    assert 100 < ds.images.mean() < 140  # decoded pixels, not zeros


def _tar_tree(tmp_path: Path) -> Path:
    import tarfile

    from PIL import Image

    src = tmp_path / "src" / "tiny"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (src / split / cls).mkdir(parents=True)
            Image.new("RGB", (4, 4), (255, 0, 0) if cls == "a" else (0, 0, 255)).save(src / split / cls / "0.png")
    archive = tmp_path / "data" / "tiny-jpeg.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="tiny")
    return archive


def test_image_archive_is_unpacked_once(tmp_path, monkeypatch):
    archive = _tar_tree(tmp_path)
    cache = tmp_path / "cache"
    root = resolve_data_root(str(archive.parent), cache_dir=cache)  # a folder holding the archive
    assert root == cache / "tiny-jpeg" / "tiny" and (root / "train" / "a" / "0.png").is_file()
    stamp = (cache / "tiny-jpeg" / ".unpacked").stat().st_mtime_ns
    assert resolve_data_root(str(archive), cache_dir=cache) == root  # the archive itself, no second unpack
    assert (cache / "tiny-jpeg" / ".unpacked").stat().st_mtime_ns == stamp
    assert open_dataset(root, "test", cache_dir=cache, progress=False).classes == ["a", "b"]


def test_unsafe_archive_member_is_refused(tmp_path):
    import io
    import tarfile

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
