"""CIFAR-10 python format: layout and labels, the restricted unpickler, the verified download."""

from __future__ import annotations

import hashlib
import os
import pickle

import numpy as np
import pytest
from data_helpers import cifar_batches, cifar_pickle, write_cifar_archive, write_cifar_folder

from resnetlab.data import ArrayDataset, download_cifar10, open_dataset

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _expected(batches, names):
    data = np.concatenate([batches[n][b"data"] for n in names])
    labels = [v for n in names for v in batches[n][b"labels"]]
    return data, labels


def _check(ds, batches, names):
    data, labels = _expected(batches, names)
    assert isinstance(ds, ArrayDataset) and ds.classes == CLASSES
    assert ds.images.shape == (len(data), 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.targets.tolist() == labels
    # the official row layout: 1024 red values, then green, then blue, each row-major
    i, y, x = len(data) - 1, 5, 17
    for c in range(3):
        assert ds.images[i, y, x, c] == data[i, c * 1024 + y * 32 + x]


@pytest.mark.parametrize("form", ["folder", "archive", "parent_of_folder", "parent_of_archive"])
def test_train_and_test_splits_in_every_form(tmp_path, form):
    batches = cifar_batches()
    if form in ("folder", "parent_of_folder"):
        src = write_cifar_folder(tmp_path / "cifar-10-batches-py", batches)
    else:
        src = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", batches)
    if form.startswith("parent"):
        src = tmp_path
    _check(open_dataset(src, "train"), batches, [f"data_batch_{k}" for k in range(1, 6)])
    _check(open_dataset(src, "test"), batches, ["test_batch"])
    _check(open_dataset(src, "val"), batches, ["test_batch"])


def test_val_split_carves_the_training_batches(tmp_path):
    src = write_cifar_folder(tmp_path / "cifar-10-batches-py", cifar_batches(n_train=10))
    train = open_dataset(src, "train", val_split=0.2, seed=3)
    val = open_dataset(src, "val", val_split=0.2, seed=3)
    assert len(train) + len(val) == 50 and len(val) == 10  # 5 per class, 1 of each to val
    rows = {bytes(img) for img in train.images} | {bytes(img) for img in val.images}
    assert len(rows) == 50
    assert open_dataset(src, "val", val_split=0.2, seed=3).targets.tolist() == val.targets.tolist()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_a_foreign_global_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    assert pickle.loads(pickle.dumps(_Payload(tmp_path / "proof"))) == 0 and (tmp_path / "proof").exists()
    batches = cifar_batches()
    src = write_cifar_folder(tmp_path / "cifar-10-batches-py", batches)
    (src / "test_batch").write_bytes(cifar_pickle({b"data": _Payload(marker), b"labels": [0]}))
    with pytest.raises(ValueError, match=r"test_batch: refusing to load the global posix\.system"):
        open_dataset(src, "test")
    assert not marker.exists()
    # numpy's own globals are allowed, but only the array-reconstruction ones
    (src / "test_batch").write_bytes(cifar_pickle({b"data": np.load, b"labels": [0]}))
    with pytest.raises(ValueError, match=r"refusing to load the global numpy.*load"):
        open_dataset(src, "test")


def test_malformed_batches_are_named(tmp_path):
    src = write_cifar_folder(tmp_path / "cifar-10-batches-py", cifar_batches())
    (src / "test_batch").write_bytes(cifar_pickle({b"pixels": np.zeros((1, 3072), np.uint8)}))
    with pytest.raises(ValueError, match=r"test_batch: expected keys 'data' and 'labels', found \['pixels'\]"):
        open_dataset(src, "test")
    (src / "test_batch").write_bytes(b"\x80\x03garbage")
    with pytest.raises(ValueError, match="test_batch: not a readable CIFAR-10 batch"):
        open_dataset(src, "test")
    (src / "data_batch_3").unlink()
    with pytest.raises(ValueError, match=r"missing the CIFAR-10 file\(s\) \['data_batch_3'\]"):
        open_dataset(src, "train")


def test_download_verifies_md5_and_is_atomic(tmp_path):
    archive = write_cifar_archive(tmp_path / "src" / "cifar-10-python.tar.gz", cifar_batches())
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    url = archive.as_uri()  # file://, which urllib reads like http
    bad_root = tmp_path / "bad"
    with pytest.raises(ValueError, match=f"md5 mismatch for .*expected 0+, got {md5}"):
        download_cifar10(bad_root, url=url, md5="0" * 32, progress=False)
    assert list(bad_root.iterdir()) == []
    got = download_cifar10(tmp_path / "good", url=url, md5=md5, progress=False)
    assert got == tmp_path / "good" / "cifar-10-python.tar.gz" and got.read_bytes() == archive.read_bytes()
    assert sorted(os.listdir(tmp_path / "good")) == ["cifar-10-python.tar.gz"]
    assert len(open_dataset(got, "test")) == 6
    archive.unlink()  # an archive already in place with the right md5 is not fetched again
    assert download_cifar10(tmp_path / "good", url=url, md5=md5, progress=False) == got
