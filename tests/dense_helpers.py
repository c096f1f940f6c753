"""Synthetic detection / segmentation data the tests write: bright squares and discs on a noisy dark field,
as images + instance PNG masks (value k = object k), in train / val / test folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def shapes_image(rng: np.random.Generator, size: int, max_objects: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image and (H, W) uint8 instance mask of 1..max_objects non-overlapping shapes."""
    img = rng.integers(0, 40, (size, size, 3)).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    k = 0
    for _ in range(20):
        if k == max_objects:
            break
        r = int(rng.integers(size // 8, size // 4))
        cy, cx = (int(v) for v in rng.integers(r, size - r, 2))
        shape = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r) if rng.random() < 0.5 else \
            (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if (mask[shape] > 0).any():
            continue
        k += 1
        mask[shape] = k
        img[shape] = rng.integers(170, 255, 3)
    return img, mask


def write_shapes(root: Path, counts=(("train", 12), ("val", 4), ("test", 4)), size: int = 64, seed: int = 0,
                 bad: int = 0) -> Path:
    """A mask-folder data set under ``root``; ``bad`` unreadable images are added to train (with masks)."""
    rng = np.random.default_rng(seed)
    for split, n in counts:
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, mask = shapes_image(rng, size)
            Image.fromarray(img).save(root / split / "images" / f"{split}{i:03d}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{split}{i:03d}.png")
    for i in range(bad):
        Image.fromarray(np.zeros((size, size), np.uint8)).save(root / "train" / "masks" / f"bad{i}.png")
        (root / "train" / "images" / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root
