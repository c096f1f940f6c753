"""Image folders: labels, exact pixels, split folders, refused layouts, bad files, streaming."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
from data_helpers import COLOURS, class_image, noise_jpeg, write_image
from PIL import Image, ImageFile

from resnetlab.data import ArrayDataset, FolderDataset, collate_skip_bad, folder_transform, open_dataset
from resnetlab.data.batches import FolderBatches


def test_labels_classes_and_exact_pixels(colour_tree, cache):
    root, pixels = colour_tree
    ds = open_dataset(root, "train", cache_dir=cache, progress=False)
    assert isinstance(ds, ArrayDataset)
    assert ds.classes == ["blue", "green", "red"] and ds.num_classes == 3
    assert ds.images.shape == (18, 8, 8, 3) and ds.images.dtype == np.uint8
    assert ds.targets.dtype == np.int64 and ds.in_chans == 3 and ds.image_size == (8, 8)
    assert np.bincount(ds.targets).tolist() == [6, 6, 6]
    for img, label, path in zip(ds.images, ds.targets, ds.paths):
        assert ds.classes[label] in path
        np.testing.assert_array_equal(img, pixels[path])  # PNG round-trips exactly
        assert img.reshape(-1, 3).mean(0).argmax() == COLOURS[ds.classes[label]]
    assert isinstance(ds.images, np.memmap)


def test_eval_splits_fall_back_and_name_what_was_looked_for(colour_tree, cache):
    root, _ = colour_tree
    val = open_dataset(root, "val", cache_dir=cache, progress=False)  # no val/: reads test/
    assert len(val) == 6 and all("/test/" in p for p in val.paths)
    (root / "test").rename(root / "val")
    assert len(open_dataset(root, "test", cache_dir=cache, progress=False)) == 6  # and vice versa
    shutil.rmtree(root / "val")
    with pytest.raises(ValueError, match=r"looked for .*val or .*test"):
        open_dataset(root, "val", cache_dir=cache, progress=False)
    with pytest.raises(ValueError, match="split must be one of"):
        open_dataset(root, "dev", cache_dir=cache)


def test_refused_layouts(colour_tree, cache, tmp_path):
    root, _ = colour_tree
    (root / "train" / "violet").mkdir()
    (root / "train" / "violet" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"no image files.*violet"):
        open_dataset(root, "train", cache_dir=cache)
    shutil.rmtree(root / "train" / "violet")

    (root / "test" / "blue").rename(root / "test" / "cyan")
    with pytest.raises(ValueError, match=r"only in train/: \['blue'\]; only in test/: \['cyan'\]"):
        open_dataset(root, "train", cache_dir=cache)

    one = tmp_path / "one"
    write_image(one / "train" / "red" / "a.png", class_image(np.random.default_rng(0), "red"))
    with pytest.raises(ValueError, match=r"1 class folder.*at least two"):
        open_dataset(one, "train", cache_dir=cache)
    with pytest.raises(ValueError, match="cannot tell what data set"):
        open_dataset(tmp_path / "one" / "train" / "red", "train", cache_dir=cache)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_dataset(tmp_path / "nowhere", "train")


def _add_bad_files(root):
    jpeg = noise_jpeg()
    sos = jpeg.index(b"\xff\xda")
    assert len(jpeg) // 2 > sos + 64  # the header survives the cut: only decoding can notice
    truncated = root / "train" / "red" / "truncated.jpg"
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    text = root / "train" / "green" / "x.jpg"
    text.write_text("not an image at all")
    return truncated, text


def test_bad_files_are_reported_and_skipped(colour_tree, cache, caplog):
    root, _ = colour_tree
    truncated, text = _add_bad_files(root)
    with caplog.at_level(logging.WARNING, logger="resnetlab"):
        ds = open_dataset(root, "train", cache_dir=cache, progress=False, small_max=64)
    assert isinstance(ds, ArrayDataset) and len(ds) == 18
    reasons = dict(ds.skipped)
    assert set(reasons) == {str(truncated), str(text)}
    assert "truncated" in reasons[str(truncated)].lower()
    assert str(truncated) in caplog.text and str(text) in caplog.text
    assert ds.image_size == (8, 8)  # the truncated 48x48 file did not take part in the size vote


@pytest.mark.parametrize("which", [0, 1])
def test_strict_raises_naming_the_file(colour_tree, cache, which):
    root, _ = colour_tree
    bad = _add_bad_files(root)[which]
    if which == 0:
        (root / "train" / "green" / "x.jpg").unlink()
    with pytest.raises(ValueError, match=f"cannot read {bad}"):
        open_dataset(root, "train", cache_dir=cache, strict=True, progress=False)
    assert not list(cache.glob("*.npy"))


@pytest.mark.parametrize("side", [12, 16])  # 144 px: the warning; 256 px: Pillow's own error
def test_decompression_bomb_refused_before_decoding(colour_tree, cache, monkeypatch, side):
    root, _ = colour_tree
    bomb = root / "train" / "red" / "bomb.png"
    write_image(bomb, np.zeros((side, side, 3), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the 8x8 images (64 px) stay fine
    loaded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: loaded.append(im.filename) or real_load(im))
    ds = open_dataset(root, "train", cache_dir=cache, progress=False)
    assert [p for p, _ in ds.skipped] == [str(bomb)] and "decompression bomb" in ds.skipped[0][1]
    assert loaded and str(bomb) not in loaded
    stream = open_dataset(root, "train", cache_dir=cache / "other", small_max=4, progress=False)
    assert [p for p, _ in stream.skipped] == [str(bomb)]  # refused by the header scan already
    item = FolderDataset([(str(bomb), 0)], ["a", "b"])[0]
    assert item[0] is None and str(bomb) not in loaded


def test_large_images_stream_and_bad_ones_are_dropped_by_collate(colour_tree, cache, caplog):
    root, _ = colour_tree
    truncated, text = _add_bad_files(root)
    ds = open_dataset(root, "train", cache_dir=cache, small_max=16, progress=False)  # 48x48 > 16
    assert isinstance(ds, FolderDataset) and ds.in_chans == 3 and ds.classes == ["blue", "green", "red"]
    assert [p for p, _ in ds.skipped] == [str(text)]  # found at scan time; the truncated one is not
    assert len(ds) == 19
    ds.transform = folder_transform("imagenet", train=False, image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)
    loader = torch.utils.data.DataLoader(ds, batch_size=19, collate_fn=collate_skip_bad)
    with caplog.at_level(logging.WARNING, logger="resnetlab"):
        images, labels, bad = next(iter(loader))
    assert images.shape == (18, 3, 8, 8) and images.dtype == torch.float32
    assert labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6 and bad == [str(truncated)]
    assert str(truncated) in caplog.text
    ds.strict = True
    with pytest.raises(ValueError, match=f"cannot decode {truncated}"):
        ds[[p for p, _ in ds.samples].index(str(truncated))]


def test_all_bad_batch_collates_to_empty():
    images, labels, bad = collate_skip_bad([(None, 0, "a.jpg"), (None, 1, "b.jpg")])
    assert images.numel() == 0 and labels.shape == (0,) and bad == ["a.jpg", "b.jpg"]
    assert "FolderBatches" in collate_skip_bad.__doc__ and "skip" in collate_skip_bad.__doc__


def test_a_batch_of_only_unreadable_files_is_skipped_and_counted(tmp_path, cache):
    """Large (streamed) images; in evaluation order the second batch of 4 is 4 corrupt files."""
    rng = np.random.default_rng(0)
    jpeg = noise_jpeg()
    for cls in ("a", "b", "c"):
        for i in range(4):
            path = tmp_path / "big" / "train" / cls / f"{i}.jpg"
            if cls == "b":  # the header survives, so only decoding (in the loader) finds out
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(jpeg[: len(jpeg) // 2])
            else:
                write_image(path, class_image(rng, "red", size=24))
    ds = open_dataset(tmp_path / "big", "train", cache_dir=cache, small_max=8, progress=False)
    assert isinstance(ds, FolderDataset) and len(ds) == 12 and not ds.skipped
    ds.transform = folder_transform("cifar", train=False, image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)
    batches = FolderBatches(ds, 4, train=False)
    got = [(tuple(x.shape), y.tolist(), n_bad) for x, y, n_bad in batches.epoch(0)]
    assert got == [((4, 3, 8, 8), [0, 0, 0, 0], 0), ((4, 3, 8, 8), [2, 2, 2, 2], 4)]  # b's batch: skipped, counted
    assert batches.epoch_bad == 4


def test_symlink_loops_are_walked_once(colour_tree, cache, caplog):
    root, pixels = colour_tree
    red = root / "train" / "red"
    (red / "loop").symlink_to(red, target_is_directory=True)  # red/loop/loop/... would never end
    (red / "sub").mkdir()
    write_image(red / "sub" / "x.png", class_image(np.random.default_rng(1), "red"))
    (red / "sub" / "back").symlink_to(red, target_is_directory=True)
    (red / "again").symlink_to(red / "sub", target_is_directory=True)  # a second link to a walked folder
    (red / "gone.png").symlink_to(red / "missing.png")  # dangling: skipped, named
    with caplog.at_level(logging.WARNING, logger="resnetlab"):
        ds = open_dataset(root, "train", cache_dir=cache, progress=False)
    red_paths = sorted(p for p in ds.paths if "/red/" in p)
    assert red_paths == sorted([p for p in pixels if "/train/red/" in p] + [str(red / "again" / "x.png")])
    assert len(ds) == 19 and "symlink loop" in caplog.text and str(red / "gone.png") in caplog.text


def test_grayscale_folders_give_one_channel(tmp_path, cache):
    rng = np.random.default_rng(0)
    pixels = {}
    for cls in ("a", "b"):
        for i in range(3):
            p = tmp_path / "gray" / "train" / cls / f"{i}.PNG"  # extensions are case-insensitive
            pixels[str(p)] = write_image(p, rng.integers(0, 256, (16, 16), dtype=np.uint8))
    ds = open_dataset(tmp_path / "gray", "train", cache_dir=cache, progress=False)
    assert ds.images.shape == (6, 16, 16, 1)
    for img, path in zip(ds.images, ds.paths):
        np.testing.assert_array_equal(img[..., 0], pixels[path])
    stream = open_dataset(tmp_path / "gray", "train", cache_dir=cache, small_max=8, progress=False)
    assert isinstance(stream, FolderDataset) and stream.in_chans == 1 and stream[0][0].shape == (1, 16, 16)


def test_mixed_sizes_resize_to_the_most_common(colour_tree, cache, caplog):
    root, _ = colour_tree
    write_image(root / "train" / "red" / "big.png", np.full((12, 10, 3), 200, np.uint8))
    with caplog.at_level(logging.WARNING, logger="resnetlab"):
        ds = open_dataset(root, "train", cache_dir=cache, progress=False)
    assert ds.images.shape == (19, 8, 8, 3)
    assert "resizing 1 of 19 images to the most common size 8x8" in caplog.text
    big = ds.paths.index(str(root / "train" / "red" / "big.png"))
    assert (ds.images[big] == 200).all()


def test_class_tree_root_with_val_split(colour_tree, cache):
    root, pixels = colour_tree
    tree = root / "train"
    train = open_dataset(tree, "train", val_split=0.5, cache_dir=cache, progress=False)
    val = open_dataset(tree, "val", val_split=0.5, cache_dir=cache, progress=False)
    assert len(train) == len(val) == 9 and not set(train.paths) & set(val.paths)
    assert sorted(train.paths + val.paths) == sorted(p for p in pixels if "/train/" in p)
    with pytest.raises(ValueError, match="no train/ folder"):
        open_dataset(tree, "test", cache_dir=cache)
