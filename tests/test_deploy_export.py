"""resnetlab export / quantize: round trips against eager, embedded metadata, checked before written."""

import json

import numpy as np
import pytest
import torch

from deploy_helpers import train_tiny
from resnetlab.deploy import ModelMeta, Predictor, export_model, load_artefact, quantize_model
from resnetlab.eval import eval_batches, load_trained, open_split
from train_helpers import run_cli


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tree, run = train_tiny(tmp_path_factory.mktemp("export"))
    trained = load_trained(run)
    batches = eval_batches(open_split(trained, tree, "test"), trained.preprocess, batch_size=12)
    x = torch.cat([b[0] for b in batches.epoch(0)])
    return tree, run, trained, x


@pytest.mark.parametrize("fmt, ext", [("onnx", ".onnx"), ("openvino", ".xml"), ("pt2", ".pt2"),
                                      ("torchscript", ".ts")])
@pytest.mark.parametrize("dynamic", [True, False])
def test_round_trip_matches_eager(tiny, tmp_path, fmt, ext, dynamic):
    tree, run, trained, x = tiny
    meta = ModelMeta.from_trained(trained)
    path = tmp_path / f"model{ext}"
    report = export_model(trained.model, meta, path, fmt, dynamic_batch=dynamic, batch_size=4, check_inputs=x,
                          check_source="12 test images", tolerance=1e-4)
    assert path.is_file() and report.max_abs_diff < 1e-4 and report.num_inputs == 12
    assert json.loads(path.with_name(path.name + ".export.json").read_text())["format"] == fmt
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temporary file left behind
    runtime, got = load_artefact(path)
    assert got == meta and got.classes == ("blue", "green", "red")
    with torch.no_grad():
        ref = trained.model(x[:4]).numpy()
    assert np.abs(runtime(x[:4].numpy()) - ref).max() < 1e-4
    p = Predictor(path)  # the artefact alone is enough to predict with class names
    image = sorted((tree / "test" / "red").iterdir())[0]
    assert p.predict([image] * (4 if not dynamic else 1))[0][0][0] in meta.classes


def test_a_failed_check_writes_nothing(tiny, tmp_path):
    _, _, trained, x = tiny
    path = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError, match="differs from the eager model"):
        export_model(trained.model, ModelMeta.from_trained(trained), path, dynamic_batch=True, check_inputs=x,
                     tolerance=-1.0)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_bad_names(tiny, tmp_path):
    _, _, trained, _ = tiny
    meta = ModelMeta.from_trained(trained)
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_model(trained.model, meta, tmp_path / "model.xml", "onnx")
    with pytest.raises(ValueError, match="format must be one of"):
        export_model(trained.model, meta, tmp_path / "model.trt", "tensorrt")
    with pytest.raises(ValueError, match="not an exported artefact"):
        load_artefact(__file__)


def test_export_cli(tiny, tmp_path):
    tree, run, _, _ = tiny
    out = run_cli("export", "--checkpoint", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                  "--dynamic-batch", "--check-data", str(tree), "--json")
    report = json.loads(out.stdout)
    assert report["max_abs_diff"] < 1e-3 and "real images" in report["check_inputs"]
    assert (tmp_path / "m.onnx").is_file()


@pytest.mark.parametrize("backend, ext", [("openvino", ".xml"), ("onnxruntime", ".onnx"), ("torch", ".pt2")])
def test_int8_runs_on_a_tiny_model(tiny, tmp_path, backend, ext):
    tree, run, trained, x = tiny
    meta = ModelMeta.from_trained(trained)
    test = eval_batches(open_split(trained, tree, "test"), trained.preprocess, batch_size=6)
    batches = lambda: test.epoch(0)  # noqa: E731
    report = quantize_model(trained.model, meta, tmp_path / f"q{ext}", backend, [x[:6].numpy(), x[6:].numpy()],
                            calib_source="12 images", val_batches=batches, val_source="test")
    d = json.loads((tmp_path / f"q{ext}.quantize.json").read_text())
    assert d["calib_images"] == 12 and report.val_images == 12
    assert 0 <= report.int8_top1 <= 1 and 0 <= report.fp32_top1 <= 1
    runtime, got = load_artefact(tmp_path / f"q{ext}")
    assert got.extra["precision"] == "int8" and got.classes == meta.classes
    with torch.no_grad():
        ref = trained.model(x).softmax(1).numpy()
    out = torch.from_numpy(runtime(x.numpy())).softmax(1).numpy()
    assert np.abs(out - ref).max() < 0.2  # int8 is close, not equal


def test_quantize_cli_reports_before_and_after(tiny, tmp_path):
    tree, run, _, _ = tiny
    out = run_cli("quantize", "--checkpoint", str(run), "--calib-data", str(tree), "--val-data", str(tree),
                  "--backend", "onnxruntime", "--calib-images", "20", "--out", str(tmp_path / "q.onnx"), "--json")
    d = json.loads(out.stdout)
    assert d["calib_images"] == 20 and d["val_images"] == 12 and "top1_drop_points" in d


def test_quantize_refuses_bad_input(tiny, tmp_path):
    _, _, trained, x = tiny
    meta = ModelMeta.from_trained(trained)
    with pytest.raises(ValueError, match="needs calibration images"):
        quantize_model(trained.model, meta, tmp_path / "q.xml", "openvino", [])
    with pytest.raises(ValueError, match="backend must be one of"):
        quantize_model(trained.model, meta, tmp_path / "q.xml", "tensorrt", [x.numpy()])


class _Marker:
    """Unpickling this writes a file: proof that a loader ran code from the artefact."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_touch, (self.path,))


def _touch(path):
    open(path, "w").close()
    return {}


def test_pt2_loading_never_unpickles_code(tiny, tmp_path):
    import io
    import zipfile

    _, _, trained, x = tiny
    good = tmp_path / "model.pt2"
    export_model(trained.model, ModelMeta.from_trained(trained), good, check_inputs=x[:2], dynamic_batch=True)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        replaced = 0
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".pt"):  # the pickled parts (sample inputs, constants)
                buf = io.BytesIO()
                torch.save({"w": _Marker(str(marker))}, buf)
                data, replaced = buf.getvalue(), replaced + 1
            dst.writestr(info, data)
    assert replaced, "no pickled entry found in the pt2 archive"
    with pytest.raises(Exception):
        load_artefact(evil)
    assert not marker.exists()
