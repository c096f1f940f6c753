"""MedMNIST-style npz files: gray and RGB, class names, val_split, and what a bad file says."""

from __future__ import annotations

import numpy as np
import pytest

from resnetlab.data import open_dataset


def _write(path, rgb: bool, label_shape_2d: bool = True, **extra):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 6), ("test", 8)):
        shape = (n, 12, 10, 3) if rgb else (n, 12, 10)
        labels = np.arange(n) % 4
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = labels[:, None] if label_shape_2d else labels
    np.savez_compressed(path, **arrays, **extra)
    return arrays


def test_gray_npz(tmp_path):
    arrays = _write(tmp_path / "pneumonia.npz", rgb=False)
    for split in ("train", "val", "test"):
        ds = open_dataset(tmp_path / "pneumonia.npz", split)
        assert ds.images.shape == (len(arrays[f"{split}_labels"]), 12, 10, 1) and ds.in_chans == 1
        np.testing.assert_array_equal(ds.images[..., 0], arrays[f"{split}_images"])
        assert ds.targets.tolist() == arrays[f"{split}_labels"][:, 0].tolist()
        assert ds.classes == ["0", "1", "2", "3"]


def test_rgb_npz_with_names_and_val_split(tmp_path):
    names = np.array(["adipose", "background", "debris", "lymphocytes"])
    arrays = _write(tmp_path / "path.npz", rgb=True, label_shape_2d=False, label_names=names)
    ds = open_dataset(tmp_path / "path.npz", "test")
    assert ds.images.shape == (8, 12, 10, 3) and ds.classes == names.tolist()
    np.testing.assert_array_equal(ds.images, arrays["test_images"])
    train = open_dataset(tmp_path / "path.npz", "train", val_split=0.25, seed=0)
    val = open_dataset(tmp_path / "path.npz", "val", val_split=0.25, seed=0)
    assert len(train) + len(val) == 20 and np.bincount(val.targets).tolist() == [1, 1, 1, 1]


def test_missing_keys_and_bad_labels(tmp_path):
    np.savez(tmp_path / "half.npz", train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.zeros(2, int))
    with pytest.raises(ValueError, match=r"half.npz: split 'test' needs .*found \['train_images', 'train_labels'\]"):
        open_dataset(tmp_path / "half.npz", "test")
    labels = np.array([[0, 1, 2], [1, 0, 0]])  # three columns: multi-label, so 0/1 only
    np.savez(tmp_path / "multi.npz", train_images=np.zeros((2, 4, 4), np.uint8), train_labels=labels)
    with pytest.raises(ValueError, match=r"multi.npz: train_labels has 3 columns, so it is read as multi-label, but "
                                         r"holds values other than 0/1: \[0, 1, 2\]"):
        open_dataset(tmp_path / "multi.npz", "train")


def test_nan_pixels_are_named_with_the_file_key_and_first_image(tmp_path):
    images = np.full((5, 4, 4), 100.0, dtype=np.float32)
    images[3, 1, 2] = np.nan
    np.savez(tmp_path / "nan.npz", train_images=images, train_labels=np.arange(5) % 2)
    with pytest.raises(ValueError, match=r"nan.npz: train_images holds NaN or infinite pixel values in 1 image\(s\), "
                                         r"the first at index 3"):
        open_dataset(tmp_path / "nan.npz", "train")
    np.savez(tmp_path / "float.npz", train_images=np.zeros((5, 4, 4), np.float32), train_labels=np.arange(5) % 2)
    with pytest.raises(ValueError, match=r"float.npz: train_images must be uint8 .*got float32"):
        open_dataset(tmp_path / "float.npz", "train")
