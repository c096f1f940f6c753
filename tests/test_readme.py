"""The README's Python section runs as written: train -> evaluate -> export -> predict, on tiny data."""

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- the Python life cycle: run by tests/test_readme.py -->"


def _snippet() -> str:
    text = README.read_text()
    assert MARKER in text, f"README.md lost the marker {MARKER!r} that this test runs"
    block = re.search(r"```python\n(.*?)```", text[text.index(MARKER):], re.S)
    assert block, "no ```python block after the marker"
    return block.group(1)


def _images(root: Path) -> None:
    """my_images/{train,test}/{cat,dog}/*.png: two colours a tiny net tells apart, and cat.jpg."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        for label, colour in (("cat", (200, 60, 40)), ("dog", (40, 60, 200))):
            folder = root / "my_images" / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(np.array(colour) + rng.integers(-30, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    Image.fromarray(np.full((48, 40, 3), (210, 50, 50), np.uint8)).save(root / "cat.jpg")


def test_readme_python_life_cycle_runs_as_written(tmp_path, monkeypatch):
    _images(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))  # not the user's own cache
    scope: dict = {}
    exec(compile(_snippet(), str(README), "exec"), scope)  # noqa: S102 - our own README
    result, ev, top = scope["result"], scope["ev"], scope["top"]
    assert result.run_dir.is_dir() and len(result.history) == result.summary["epochs"]
    assert ev.num_samples == 16 and ev.split == "test"
    cm = np.array(ev.metrics["confusion_matrix"])
    assert cm.sum() == 16 and ev.top1 == pytest.approx(np.trace(cm) / 16)
    # the ONNX artefact answers as the checkpoint does
    from resnetlab import Predictor

    eager = Predictor(result.run_dir, backend="torch").predict(["cat.jpg"], topk=2)
    assert [c for c, _ in top[0]] == [c for c, _ in eager[0]]
    assert [p for _, p in top[0]] == pytest.approx([p for _, p in eager[0]], abs=1e-4)
