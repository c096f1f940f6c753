"""resnetlab.Predictor: every source, every backend, every input kind, and clear refusals."""

import itertools
import math

import numpy as np
import pytest
import torch
from PIL import Image

import resnetlab
import resnetlab.deploy.predictor as predictor_module
from deploy_helpers import train_tiny
from resnetlab.deploy import Predictor, auto_backend


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


# Measured img/s (AMD EPYC, 2 threads), by Predictor backend: fp32 from benchmarks/results/bench_models.md
# (resnet18, vgg16, inception_v3, xception at batch 1 and 32; "torch" = its channels_last row, the BN-folded
# channels_last model TorchRuntime runs), bf16 from inference_cpu.md (resnet18, batch 1 and 32; "openvino" =
# openvino-bf16). ONNX Runtime has no bf16 row: it runs fp32 only.
MEASURED = {
    "fp32": {"torch": [77.2, 90.8, 10.5, 11.6, 25.8, 26.0, 18.7, 9.3],
             "onnxruntime": [123.2, 132.5, 13.8, 16.0, 38.3, 38.9, 24.3, 21.3],
             "openvino": [120.0, 130.2, 13.7, 16.3, 38.3, 38.9, 24.5, 23.8]},
    "bf16": {"torch": [143.7, 168.9], "openvino": [240.7, 247.7]},
}


def _fastest_in_table(precision, have):
    rows = {b: v for b, v in MEASURED[precision].items() if have[b]}
    return max(rows, key=lambda b: math.fsum(map(math.log, rows[b])) / len(rows[b]))  # geometric mean


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("ort, ov", list(itertools.product([False, True], repeat=2)))
def test_auto_picks_what_the_measured_table_ranks_first(monkeypatch, precision, ort, ov):
    have = {"torch": True, "onnxruntime": ort, "openvino": ov}
    monkeypatch.setattr(predictor_module, "available_backends", lambda: dict(have))
    assert auto_backend(precision) == _fastest_in_table(precision, have)


def test_auto_predictor_answers_like_torch(tiny):
    tree, run = tiny
    p = Predictor(run)
    assert p.backend == auto_backend()
    ref = Predictor(run, backend="torch").predict_proba(_images(tree))
    assert np.abs(p.predict_proba(_images(tree)) - ref).max() < 1e-4


def test_digest_names_the_model_not_the_runtime(tiny, tmp_path):
    tree, run = tiny
    torch_p, ort_p = Predictor(run, backend="torch"), Predictor(run, backend="onnxruntime")
    assert torch_p.digest == ort_p.digest == Predictor(run, backend="torch").digest
    assert torch_p.digest.startswith("sha256:") and len(torch_p.digest) == 7 + 64
    other = resnetlab.create_model("resnet20", layers=(1, 1, 1), num_classes=3).eval()
    assert Predictor(other, backend="torch", classes=torch_p.classes, image_size=8).digest != torch_p.digest
    renamed = Predictor(run, backend="torch", classes=["b", "g", "r"])  # same weights, other class names
    assert renamed.digest != torch_p.digest


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
    with pytest.raises(ValueError, match="precision must be 'auto' or one of"):
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
