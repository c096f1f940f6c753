"""resnetlab.Predictor: every source, every backend, every input kind, and clear refusals."""

import numpy as np
import pytest
import torch
from PIL import Image

import resnetlab
from deploy_helpers import train_tiny
from resnetlab.deploy import Predictor, auto_backend, available_backends


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("predictor"))


def _images(tree):
    return [sorted((tree / "test" / c).iterdir())[0] for c in ("blue", "green", "red")]


def test_checkpoint_source_names_the_classes(tiny):
    tree, run = tiny
    p = Predictor(run, backend="torch")
    assert p.classes == ["blue", "green", "red"] and p.backend == "torch"
    top = p.predict(_images(tree), topk=2)
    assert len(top) == 3 and all(len(t) == 2 for t in top)
    for t in top:
        assert t[0][1] >= t[1][1] and 0 < t[0][1] <= 1
    probs = p.predict_proba(_images(tree))
    assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_backends_agree_with_torch(tiny, backend):
    tree, run = tiny
    ref = Predictor(run, backend="torch").predict_proba(_images(tree))
    got = Predictor(run, backend=backend).predict_proba(_images(tree))
    assert np.abs(got - ref).max() < 1e-4


def test_auto_picks_the_fastest_installed_runtime(tiny):
    have = available_backends()
    expected = "openvino" if have["openvino"] else "onnxruntime" if have["onnxruntime"] else "torch"
    assert auto_backend() == expected
    assert Predictor(tiny[1]).backend == expected


def test_bf16_precision_stays_close(tiny):
    tree, run = tiny
    ref = Predictor(run, backend="torch").predict_proba(_images(tree))
    got = Predictor(run, backend="torch", precision="bf16").predict_proba(_images(tree))
    assert np.abs(got - ref).max() < 0.05


def test_every_input_kind_gives_the_same_answer(tiny, tmp_path):
    tree, run = tiny
    p = Predictor(run, backend="torch")
    path = _images(tree)[1]
    pil = Image.open(path).convert("RGB")
    arr = np.array(pil)
    kinds = {"path": path, "str": str(path), "pil": pil, "array": arr,
             "uint8 tensor": torch.from_numpy(arr).permute(2, 0, 1), "float tensor": p.preprocess(pil)[0]}
    ref = p.predict_proba([path])
    for name, item in kinds.items():
        assert np.allclose(p.predict_proba([item]), ref, atol=1e-5), name
        assert np.allclose(p.predict_proba(item), ref, atol=1e-5), name  # a single image, not in a list
    batch = p.preprocess([path, pil])
    assert batch.shape == (2, 3, 8, 8) and np.allclose(p.predict_proba(batch), np.repeat(ref, 2, 0), atol=1e-5)
    # any size and mode is resized and converted as the checkpoint's eval transform says
    odd = [Image.new("L", (50, 20), 128), Image.new("RGBA", (3, 3)), np.zeros((40, 30), np.uint8),
           np.zeros((9, 9, 4), np.uint8)]
    assert p.predict_proba(odd).shape == (4, 3)


@pytest.mark.parametrize("bad, error, match", [
    (5, TypeError, "expected a path, PIL image"),
    ([], ValueError, "no images"),
    (torch.full((3, 8, 8), float("nan")), ValueError, "NaN"),
    (Image.new("RGB", (0, 4)), ValueError, "0x4 pixels"),
    (np.zeros((0, 5, 3), np.uint8), ValueError, "5x0 pixels"),
    (np.zeros((8, 8, 3), np.float32), TypeError, "must be uint8"),
    (torch.zeros(3, 16, 16), ValueError, r"preprocessed network input of shape \(N, 3, 8, 8\)"),
    ("/no/such/image.png", ValueError, "cannot read image '/no/such/image.png'"),
])
def test_bad_inputs_are_refused_clearly(tiny, bad, error, match):
    p = Predictor(tiny[1], backend="torch")
    with pytest.raises(error, match=match):
        p.predict(bad)


def test_bad_arguments(tiny):
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        Predictor(tiny[1], backend="tensorrt")
    with pytest.raises(ValueError, match="precision must be one of"):
        Predictor(tiny[1], precision="fp8")
    with pytest.raises(TypeError, match="got int"):
        Predictor(3)
    with pytest.raises(ValueError, match="topk must be at least 1"):
        Predictor(tiny[1], backend="torch").predict(np.zeros((8, 8, 3), np.uint8), topk=0)


def test_module_source_uses_its_registry_defaults():
    model = resnetlab.create_model("resnet20").eval()
    p = Predictor(model, backend="torch", classes=[f"c{i}" for i in range(10)])
    assert p.meta.image_size == 32 and p.meta.preprocess.preset == "cifar" and p.classes[3] == "c3"
    assert len(p.predict(np.zeros((32, 32, 3), np.uint8), topk=3)[0]) == 3
    with pytest.raises(ValueError, match="classes has 2 names but the model predicts 10"):
        Predictor(model, backend="torch", classes=["a", "b"])
