"""The torch-free runtime: it imports and predicts with torch made unimportable, answers as resnetlab.Predictor
does on the same artefact, preprocesses exactly as the torch path, and predicts folders with bad files in them."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from resnetlab import Predictor
from resnetlab.data.preprocess import Preprocess
from resnetlab.deploy.api import export_checkpoint
from resnetlab.runtime import LitePredictor, LitePreprocess, predict_folder
from deploy_helpers import train_tiny
from train_helpers import ROOT


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lite")
    tree, run = train_tiny(tmp)
    onnx = export_checkpoint(run, "onnx", tmp / "m.onnx").path
    xml = export_checkpoint(run, "openvino", tmp / "m.xml").path
    images = sorted(str(p) for p in (tree / "test").rglob("*.png"))[:6]
    return tree, onnx, xml, images


NO_TORCH = """
import json, sys
sys.modules["torch"] = None  # any 'import torch' now raises ImportError
from resnetlab.runtime import LitePredictor
p = LitePredictor(sys.argv[1])
probs = p.predict_proba(sys.argv[2:])
print(json.dumps({"probs": probs.tolist(), "torch": [m for m in sys.modules if m.split(".")[0] in
                  ("torch", "torchvision")]}))
"""


@pytest.mark.parametrize("which", ["onnx", "xml"])
def test_predicts_without_torch_as_the_torch_path_does(artefacts, which):
    _, onnx, xml, images = artefacts
    path = onnx if which == "onnx" else xml
    out = subprocess.run([sys.executable, "-c", NO_TORCH, path, *images], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got["torch"] == [None] or got["torch"] == ["torch"]  # only the blocked entry itself
    ref = Predictor(path).predict_proba(images)
    assert np.abs(np.asarray(got["probs"]) - ref).max() < 1e-5


@pytest.mark.parametrize("preset, size, in_chans", [("imagenet", 32, 3), ("cifar", 8, 3), ("imagenet", 24, 1)])
@pytest.mark.parametrize("w, h", [(40, 30), (33, 71), (8, 8), (101, 57)])
def test_preprocessing_is_the_torch_paths(preset, size, in_chans, w, h):
    rng = np.random.default_rng(w * h)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    pre = Preprocess.for_data(preset, size, in_chans)
    ref = pre.image_transform()(img).numpy()
    got = LitePreprocess.from_dict(pre.to_dict(), "test")(img)
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-5


def test_folder_prediction_keeps_going_past_a_bad_file(artefacts, tmp_path):
    tree, onnx, _, _ = artefacts
    (tree / "test" / "broken.png").write_bytes(b"not an image")
    p = LitePredictor(onnx)
    summary = predict_folder(p, tree / "test", tmp_path / "out.csv", batch_size=5, topk=2)
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert summary["failed"] == 1 and len(rows) == summary["images"]
    bad = [r for r in rows if r["error"]]
    assert [r["path"] for r in bad] == ["broken.png"] and "cannot read image" in bad[0]["error"]
    good = [r for r in rows if not r["error"]][:4]
    ref = Predictor(onnx).predict([str(tree / "test" / r["path"]) for r in good], topk=2)
    assert [r["decision"] for r in good] == [t[0][0] for t in ref]
    assert [json.loads(r["topk"])[1][0] for r in good] == [t[1][0] for t in ref]


def test_low_memory_answers_the_same(artefacts):
    _, onnx, _, images = artefacts
    a, b = LitePredictor(onnx).predict_proba(images), LitePredictor(onnx, low_memory=True).predict_proba(images)
    assert np.abs(a - b).max() < 1e-5


def test_bad_artefacts_are_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such artefact"):
        LitePredictor(tmp_path / "none.onnx")
    (tmp_path / "m.pt2").write_bytes(b"x")
    with pytest.raises(ValueError, match="need torch"):
        LitePredictor(tmp_path / "m.pt2")
