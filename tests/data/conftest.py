"""Fixtures of the data tests: tiny data sets written into tmp_path."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import COLOURS, class_image, write_image


@pytest.fixture
def colour_tree(tmp_path):
    """root/train/{blue,green,red}/ (6 PNGs each, 8x8) and root/test/ (2 each); returns (root, pixels)."""
    rng = np.random.default_rng(0)
    root, pixels = tmp_path / "colours", {}
    for split, n in (("train", 6), ("test", 2)):
        for cls in COLOURS:
            for i in range(n):
                p = root / split / cls / f"{i:02d}.png"
                pixels[str(p)] = write_image(p, class_image(rng, cls))
    return root, pixels


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"
