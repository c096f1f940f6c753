"""Exported detectors (ONNX, dynamic image size) and segmenters (ONNX / OpenVINO, dynamic batch and size) answer
as the eager model does; a failed check writes nothing."""

import json

import numpy as np
import pytest
import torch

import resnetlab
from resnetlab.deploy.api import export_checkpoint
from resnetlab.eval import load_trained
from dense_helpers import write_shapes
from test_dense_train import DET, SEG, _cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dense_export")
    data = write_shapes(root / "shapes", counts=(("train", 8), ("test", 4)))
    seg = resnetlab.fit(_cfg(data, root / "seg", epochs=1, val_split=0.25, **SEG)).run_dir
    det_kw = {**DET, "model_kwargs": {**DET["model_kwargs"], "score_thresh": 0.01}}  # boxes even when untrained
    det = resnetlab.fit(_cfg(data, root / "det", epochs=1, val_split=0.25, **det_kw)).run_dir
    return seg, det


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_segmenter_artefact_matches_eager_at_other_sizes(runs, fmt, tmp_path):
    seg, _ = runs
    out = tmp_path / ("model.onnx" if fmt == "onnx" else "model.xml")
    report = export_checkpoint(seg, fmt, out)
    assert report.scaled_diff <= 1e-3 and report.num_inputs == 4 and "real images" in report.check_inputs
    assert json.loads(out.with_name(out.name + ".export.json").read_text())["format"] == fmt
    model = load_trained(seg).model
    x = torch.randn(3, 3, 80, 96)  # another batch size and image size than the check used
    with torch.no_grad():
        ref = model(x)["out"].numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    else:
        import openvino as ov

        got = ov.Core().compile_model(str(out), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x.numpy())[0]
    assert got.shape == (3, 2, 80, 96) and np.abs(got - ref).max() < 1e-3


def test_detector_onnx_has_a_dynamic_image_size(runs, tmp_path):
    import onnx
    import onnxruntime as ort

    _, det = runs
    out = tmp_path / "det.onnx"
    report = export_checkpoint(det, "onnx", out)
    assert report.max_abs_diff <= 1e-3
    meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    assert json.loads(meta["resnetlab"])["classes"] == ["__background__", "object"]
    model = load_trained(det).model
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for shape in [(3, 64, 64), (3, 90, 70)]:
        img = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.no_grad():
            ref = model([img])[0]
        boxes, labels, scores = sess.run(["boxes", "labels", "scores"], {"image": img.numpy()})
        assert len(boxes) == len(ref["boxes"]) > 0
        assert np.abs(boxes - ref["boxes"].numpy()).max() < 0.5 and np.abs(scores - ref["scores"].numpy()).max() < 1e-3


def test_a_failed_check_leaves_nothing_and_detectors_refuse_openvino(runs, tmp_path):
    seg, det = runs
    with pytest.raises(RuntimeError, match="nothing was written"):
        export_checkpoint(seg, "onnx", tmp_path / "m.onnx", tolerance=0.0)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="exports to onnx"):
        export_checkpoint(det, "openvino", tmp_path / "m.xml")
