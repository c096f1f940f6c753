"""Where the data is: resolve_data_root, and the real CIFAR-10 test split when it is unpacked here."""

from __future__ import annotations

import os
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
    default.mkdir(parents=True)
    assert resolve_data_root(None) == default


def _real_cifar10() -> Path | None:
    for cand in (os.environ.get("RESNETLAB_DATA"), "~/.cache/resnetlab/cifar10"):
        if cand:
            path = Path(cand).expanduser()
            path = path / "cifar10" if (path / "cifar10" / "test").is_dir() else path
            if (path / "test").is_dir():
                return path
    return None


@pytest.mark.skipif(_real_cifar10() is None, reason="CIFAR-10 as JPEG folders is not unpacked in "
                    "~/.cache/resnetlab/cifar10 (or $RESNETLAB_DATA); unpack cifar10-jpeg.tar.gz there")
def test_real_cifar10_test_split(tmp_path):
    ds = open_dataset(_real_cifar10(), "test", cache_dir=tmp_path, progress=False)
    assert isinstance(ds, ArrayDataset) and ds.images.shape == (10000, 32, 32, 3)
    assert ds.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert np.bincount(ds.targets).tolist() == [1000] * 10 and not ds.skipped
    assert 100 < ds.images.mean() < 140  # decoded pixels, not zeros
