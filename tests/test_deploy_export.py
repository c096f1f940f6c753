"""resnetlab export / quantize: round trips against eager, embedded metadata, checked before written."""

import json
import os
import stat
import threading
import time

import numpy as np
import pytest
import torch

from deploy_helpers import train_tiny
from resnetlab.deploy import ModelMeta, Predictor, export_model, load_artefact, quantize_model
from resnetlab.deploy.export import UntrustedArtefactError, artefact_files
from resnetlab.eval import eval_batches, load_trained, open_split
from train_helpers import run_cli


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tree, run = train_tiny(tmp_path_factory.mktemp("export"))
    trained = load_trained(run)
    batches = eval_batches(open_split(trained, tree, "test"), trained.preprocess, batch_size=12)
    x = torch.cat([b[0] for b in batches.epoch(0)])
    return tree, run, trained, x


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


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
    report_file = path.with_name(path.name + ".export.json")
    assert json.loads(report_file.read_text())["format"] == fmt
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temporary file left behind
    # renamed from a private temp file: readable like any other output, .bin as well as .xml
    assert [_mode(f) for f in artefact_files(path)] == [0o644] * len(artefact_files(path))
    assert report.size_bytes == sum(f.stat().st_size for f in artefact_files(path))
    trust = fmt == "torchscript"
    runtime, got = load_artefact(path, allow_torchscript=trust)
    assert got == meta and got.classes == ("blue", "green", "red")
    with torch.no_grad():
        ref = trained.model(x[:4]).numpy()
    assert np.abs(runtime(x[:4].numpy()) - ref).max() < 1e-4
    p = Predictor(path, allow_torchscript=trust)  # the artefact alone is enough to predict with class names
    images = [sorted((tree / "test" / c).iterdir())[0] for c in ("red", "green", "blue", "red")]
    got = p.predict_proba(images)
    ref = Predictor(run, backend="torch").predict_proba(images)  # the checkpoint itself, eager PyTorch
    assert (got.argmax(1) == ref.argmax(1)).all() and np.abs(got - ref).max() < 1e-4


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
def test_int8_stays_close_to_fp32(tiny, tmp_path, backend, ext):
    tree, run, trained, x = tiny
    meta = ModelMeta.from_trained(trained)
    test = eval_batches(open_split(trained, tree, "test"), trained.preprocess, batch_size=6)
    batches = lambda: test.epoch(0)  # noqa: E731
    report = quantize_model(trained.model, meta, tmp_path / f"q{ext}", backend, [x[:6].numpy(), x[6:].numpy()],
                            calib_source="12 images", val_batches=batches, val_source="test")
    d = json.loads((tmp_path / f"q{ext}.quantize.json").read_text())
    assert d["calib_images"] == 12 and report.val_images == 12 and d["int8_top1"] == report.int8_top1
    runtime, got = load_artefact(tmp_path / f"q{ext}")
    assert got.extra["precision"] == "int8" and got.classes == meta.classes
    y = torch.cat([b[1] for b in batches()])
    with torch.no_grad():
        ref = trained.model(x)
    out = torch.from_numpy(runtime(x.numpy()))
    # the report's numbers are the two models' top-1 on these 12 images, computed here independently
    assert report.fp32_top1 == pytest.approx((ref.argmax(1) == y).float().mean().item())
    assert report.int8_top1 == pytest.approx((out.argmax(1) == y).float().mean().item())
    # int8 is FP32 up to quantization noise: logits within 15 % of their scale (OpenVINO: 12 %, ONNX Runtime
    # and PyTorch: 1 % on this net), and the same classes
    scale = ref.abs().max().item()
    assert (out - ref).abs().max().item() <= 0.15 * scale, (out - ref).abs().max().item() / scale
    assert (out.argmax(1) == ref.argmax(1)).sum().item() >= 11  # of 12
    assert abs(report.int8_top1 - report.fp32_top1) <= 1 / 12 + 1e-9  # at most one image of 12 changes


def test_quantize_never_leaves_a_half_written_artefact(tiny, tmp_path, monkeypatch):
    import onnxruntime.quantization as oq

    _, _, trained, x = tiny
    out = tmp_path / "q.onnx"
    out.write_bytes(b"the previous artefact")

    def killed(model_input, model_output, *args, **kwargs):
        open(model_output, "wb").write(b"half an onnx file")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(oq, "quantize_static", killed)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        quantize_model(trained.model, ModelMeta.from_trained(trained), out, "onnxruntime", [x.numpy()])
    assert out.read_bytes() == b"the previous artefact"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["q.onnx"]  # no temporary file, no report


def test_torchscript_loads_only_when_trusted(tiny, tmp_path, capsys):
    from resnetlab.cli import main

    tree, _, trained, x = tiny
    path = tmp_path / "model.ts"
    export_model(trained.model, ModelMeta.from_trained(trained), path, check_inputs=x[:2], dynamic_batch=True)
    for load in (lambda: load_artefact(path), lambda: Predictor(path), lambda: Predictor(path, backend="torch")):
        with pytest.raises(UntrustedArtefactError, match="a TorchScript file is code, and loading it runs"):
            load()
    runtime, _ = load_artefact(path, allow_torchscript=True)
    with torch.no_grad():
        assert np.abs(runtime(x[:2].numpy()) - trained.model(x[:2]).numpy()).max() < 1e-4
    image = str(sorted((tree / "test" / "red").iterdir())[0])
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(path), image]) == 2
    assert "allow-torchscript" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(path), "--allow-torchscript", image]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: ")


def test_pt2_loads_are_safe_from_many_threads(tiny, tmp_path, monkeypatch):
    _, _, trained, x = tiny
    path = tmp_path / "model.pt2"
    export_model(trained.model, ModelMeta.from_trained(trained), path, check_inputs=x[:2], dynamic_batch=True)
    with torch.no_grad():
        ref = trained.model(x[:2]).numpy()
    real_load, seen = torch.load, []

    def slow_load(*args, **kwargs):  # what every torch.load inside torch.export.load sees, slowed down so that
        seen.append(os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD"))  # the loads of the threads overlap
        time.sleep(0.02)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", slow_load)
    for before in (None, "0"):
        if before is None:
            monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
        else:
            monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", before)
        seen.clear()
        n, start, outs, errors = 6, threading.Barrier(6), [], []

        def load():
            start.wait()
            try:
                outs.append(load_artefact(path)[0](x[:2].numpy()))
            except Exception as e:  # noqa: BLE001 - collected and reported below
                errors.append(e)

        threads = [threading.Thread(target=load) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(outs) == n
        assert all(np.abs(o - ref).max() < 1e-4 for o in outs)
        assert len(seen) >= n and set(seen) == {"1"}  # every unpickling was weights-only, in every thread
        assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") == before  # restored, or still absent


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


def test_openvino_compiles_a_repeated_batch_size_static(tiny, tmp_path):
    """A batch size called twice gets its own static-shape compile (faster on the CPU plugin), with the
    same outputs; a size seen once stays on the dynamic compile; at most static_batches sizes; a
    fixed-batch export never reshapes."""
    from resnetlab.deploy.runtimes import OpenVINORuntime

    tree, run, trained, x = tiny
    meta = ModelMeta.from_trained(trained)
    export_model(trained.model, meta, tmp_path / "dyn.xml", "openvino", dynamic_batch=True, check_inputs=x)
    rt = OpenVINORuntime(tmp_path / "dyn.xml", static_batches=2)
    with torch.no_grad():
        ref = trained.model(x).numpy()
    first = rt(x[:4].numpy())
    assert rt.static_shapes == []  # seen once: the dynamic compile ran it
    second = rt(x[:4].numpy())
    assert rt.static_shapes == [4]
    assert np.abs(first - ref[:4]).max() < 1e-4 and np.abs(second - ref[:4]).max() < 1e-4
    for n in (3, 3, 5, 5, 1, 1):
        assert np.abs(rt(x[:n].numpy()) - ref[:n]).max() < 1e-4
    assert rt.static_shapes == [3, 4]  # the cap: 5 and 1 run on the dynamic compile
    assert OpenVINORuntime(tmp_path / "dyn.xml", static_batches=0)._request_for(4) is not None
    export_model(trained.model, meta, tmp_path / "fixed.xml", "openvino", dynamic_batch=False, batch_size=4,
                 check_inputs=x)
    fixed = OpenVINORuntime(tmp_path / "fixed.xml")
    for _ in range(3):
        assert np.abs(fixed(x[:6].numpy()) - ref[:6]).max() < 1e-4  # 6 images in slices of the fixed 4
    assert fixed.static_shapes == []
    with pytest.raises(ValueError, match="static_batches must be >= 0, got -1"):
        OpenVINORuntime(tmp_path / "dyn.xml", static_batches=-1)
