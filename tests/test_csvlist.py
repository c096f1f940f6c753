"""A CSV of path,label[,split]: images anywhere, the cache keyed by the CSV too, clear errors naming the line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from resnetlab.data import available_splits, open_dataset
from resnetlab.train.engine import fit
from train_helpers import tiny_config


def _images(root, n=24, seed=0):
    """n noisy 8x8 images, dark ones 'benign' and bright ones 'malignant', scattered over two folders."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "malignant" if i % 2 else "benign"
        pixels = np.clip(rng.normal(180 if i % 2 else 70, 30, (8, 8, 3)), 0, 255).astype(np.uint8)
        path = root / ("scans_a" if i < n // 2 else "more/scans_b") / f"img{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        rows.append((path, label))
    return rows


def test_a_csv_with_splits_trains_and_reports_a_missing_file(tmp_path):
    rows = _images(tmp_path / "imgs")
    lines = ["path,label,split,patient_id"]
    for i, (path, label) in enumerate(rows):
        split = "test" if i >= 20 else "train"
        shown = str(path) if i == 0 else str(path.relative_to(tmp_path))  # absolute or relative to the CSV
        lines.append(f"{shown},{label},{split},P{i}")
    lines.append("imgs/gone.png,benign,train,P99")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    csv_path = tmp_path / "labels.csv"
    assert available_splits(csv_path) == {"train", "test"}
    train = open_dataset(csv_path, "train", progress=False, cache_dir=tmp_path / "cache")
    assert train.classes == ["benign", "malignant"] and len(train) == 20
    assert [p for p, _ in train.skipped] == [str(tmp_path / "imgs" / "gone.png")]
    assert train.targets.tolist() == [i % 2 for i in range(20)]
    result = fit(tiny_config(csv_path, tmp_path / "run", epochs=1))
    assert result.summary["num_test"] == 4 and result.summary["skipped_files"] == 1


def test_an_edited_label_rebuilds_the_cache(tmp_path):
    rows = _images(tmp_path / "imgs", n=8)
    csv_path = tmp_path / "l.csv"
    csv_path.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in rows))
    first = open_dataset(csv_path, "train", cache_dir=tmp_path / "cache", progress=False).targets.tolist()
    flipped = ["malignant" if lab == "benign" else "benign" for _, lab in rows]
    csv_path.write_text("path,label\n" + "".join(f"{p},{lab}\n" for (p, _), lab in zip(rows, flipped)))
    second = open_dataset(csv_path, "train", cache_dir=tmp_path / "cache", progress=False).targets.tolist()
    assert second == [1 - t for t in first]


@pytest.mark.parametrize("text, match", [
    ("file,label\na.png,x\n", r"must name the columns path and label .* missing \['path'\]"),
    ("path,label,split\na.png,x,train\nb.png,y,holdout\n", r"line 3: split must be one of"),
    ("path,label\na.png,x\nb.png,x\n", r"at least two labels, found \['x'\]"),
    ("path,label\na.png,\n", r"line 2: empty path or label"),
])
def test_malformed_csvs_name_the_problem(tmp_path, text, match):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(ValueError, match=match):
        open_dataset(tmp_path / "bad.csv", "train", progress=False)


def test_several_label_columns_make_a_multilabel_task(tmp_path):
    rows = _images(tmp_path / "imgs", n=12)
    lines, expected = ["path,label,label2,split"], []
    for i, (path, label) in enumerate(rows):
        first, second = (label if i % 4 else ""), ("calcified" if i % 3 == 0 else "")
        lines.append(f"{path},{first},{second},train")
        expected.append([int(c in (first, second)) for c in ("benign", "calcified", "malignant")])
    (tmp_path / "ml.csv").write_text("\n".join(lines) + "\n")
    ds = open_dataset(tmp_path / "ml.csv", "train", cache_dir=tmp_path / "c", progress=False)
    assert ds.multilabel and ds.classes == ["benign", "calcified", "malignant"]
    assert ds.targets.tolist() == expected
    assert expected[0] == [0, 1, 0] and expected[4] == [0, 0, 0]  # calcified alone; no finding at all
