"""``resnetlab quantize``: int8 post-training static quantization, calibrated on real images.

Three kept libraries do the quantizing — NNCF for OpenVINO (Nagel et al. 2021's PTQ recipe with
bias correction), ``onnxruntime.quantization`` (QDQ, per-channel weights) and torchao's PT2E
(X86InductorQuantizer) for PyTorch — so resnetlab writes no quantizer of its own. Each run reports
top-1 before and after on validation data, measured side by side on the same images.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn as nn

from ..eval import eval_batches, open_split, topk_accuracy
from ..utils.fileio import atomic_write_text
from .export import artefact_files, embed_onnx_meta, load_artefact, staged_artefact, to_onnx_bytes, to_openvino
from .fuse import inference_model
from .meta import EXTRA_FILE, META_KEY, ModelMeta
from .runtimes import require

__all__ = ["QUANT_BACKENDS", "QuantizeReport", "quantize_model", "top1", "logits_of", "calibration_images",
           "test_batches", "qat_to_openvino"]

QUANT_BACKENDS = {"openvino": ".xml", "onnxruntime": ".onnx", "torch": ".pt2"}


@dataclass
class QuantizeReport:
    backend: str
    path: str
    calib_images: int
    calib_source: str
    val_images: int
    val_source: str
    fp32_top1: float | None  # fraction in [0, 1]; None without validation data
    int8_top1: float | None
    size_bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.fp32_top1 is not None and self.int8_top1 is not None:
            d["top1_drop_points"] = round(100 * (self.fp32_top1 - self.int8_top1), 3)
        return d


def calibration_images(trained: Any, data: str | None, n: int, *, batch_size: int = 50) -> list[np.ndarray]:
    """``n`` images of ``data``'s train split (a fixed, seeded random subset) under the checkpoint's
    preprocessing, as float NCHW batches: what every quantizer calibrates on."""
    ds = open_split(trained, data, "train")
    batches = eval_batches(ds, trained.preprocess, batch_size=batch_size, limit_batches=-(-n // batch_size))
    calib = [x.numpy() for x, *_ in batches.epoch(0)]
    calib[-1] = calib[-1][: n - batch_size * (len(calib) - 1)]
    return calib


def test_batches(trained: Any, data: str | None, *, images: int | None = None, batch_size: int = 250):
    """A zero-argument factory of ``data``'s labelled test batches (all, or a seeded subset of ``images``),
    so that two models compared with it see the same images."""
    ds = open_split(trained, data, "test")
    limit = -(-images // batch_size) if images else None
    batches = eval_batches(ds, trained.preprocess, batch_size=batch_size, limit_batches=limit)
    return lambda: batches.epoch(0)


def logits_of(run, batches: Iterable[tuple[torch.Tensor, torch.Tensor, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) of a callable ``run(np.ndarray NCHW) -> logits`` over labelled batches."""
    logits, targets = [], []
    for x, y, *_ in batches:
        logits.append(torch.from_numpy(np.asarray(run(x.numpy()), dtype=np.float32)))
        targets.append(y)
    if not targets:
        raise ValueError("no validation images")
    return torch.cat(logits), torch.cat(targets)


def top1(run, batches: Iterable[tuple[torch.Tensor, torch.Tensor, Any]]) -> tuple[float, int]:
    """(top-1 fraction, images) of a callable ``run(np.ndarray NCHW) -> logits`` over labelled batches."""
    logits, targets = logits_of(run, batches)
    return topk_accuracy(logits, targets, 1), len(targets)


def _openvino(model: nn.Module, meta: ModelMeta, calib: list[np.ndarray], out: Path) -> None:
    ov = require("openvino")
    try:
        import nncf
    except ImportError:
        raise ModuleNotFoundError("OpenVINO int8 needs NNCF: pip install 'resnetlab[openvino]'") from None
    ov_model = to_openvino(model, meta, dynamic_batch=True)
    items = [b[i:i + 1] for b in calib for i in range(len(b))]
    q = nncf.quantize(ov_model, nncf.Dataset(items), subset_size=len(items),
                      preset=nncf.QuantizationPreset.PERFORMANCE, target_device=nncf.TargetDevice.CPU)
    q.set_rt_info(replace(meta, extra={**meta.extra, "precision": "int8"}).to_json(), [META_KEY])
    ov.save_model(q, str(out), compress_to_fp16=False)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over in-memory batches."""

    def __init__(self, batches: list[np.ndarray], name: str) -> None:
        self._it, self.name = iter(batches), name

    def get_next(self) -> dict[str, np.ndarray] | None:
        b = next(self._it, None)
        return None if b is None else {self.name: b}


def _onnxruntime(model: nn.Module, meta: ModelMeta, calib: list[np.ndarray], out: Path) -> None:
    require("onnxruntime")
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        fp32, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        fp32.write_bytes(to_onnx_bytes(model, meta, dynamic_batch=True))
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), _Reader(calib, "input"), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    proto = onnx.load(str(out))
    embed_onnx_meta(proto, replace(meta, extra={**meta.extra, "precision": "int8"}))
    onnx.save(proto, str(out))


def _unshare_relus(net: nn.Module) -> nn.Module:
    """A ReLU module called twice (ResNet blocks do, like torchvision's) becomes one functional ReLU per call.

    PT2E's X86InductorQuantizer groups nodes by the module that made them, and a module called twice
    becomes one partition with two outputs, which it refuses. Rewriting those calls on the fx graph as
    ``F.relu`` keeps the maths and gives each call its own partition.
    """
    gm = torch.fx.symbolic_trace(net)
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in gm.graph.nodes:
        if node.op == "call_module" and calls[node.target] > 1 and isinstance(gm.get_submodule(node.target),
                                                                              nn.ReLU):
            node.op, node.target, node.kwargs = "call_function", torch.nn.functional.relu, {}
            for key in ("nn_module_stack", "source_fn_stack"):  # else export still files it under the module
                node.meta.pop(key, None)
    gm.recompile()
    return gm


def _torch(model: nn.Module, meta: ModelMeta, calib: list[np.ndarray], out: Path) -> None:
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as e:
        raise ModuleNotFoundError(f"PyTorch int8 needs torchao's PT2E ({e}): "
                                  "pip install 'resnetlab[torchao]'") from None
    net = _unshare_relus(inference_model(model, fuse=False, channels_last=False))
    example = (torch.randn(2, *calib[0].shape[1:]),)  # batch 2: a batch of 1 would specialise the batch dim
    batch = torch.export.Dim("batch", min=1, max=4096)
    graph = torch.export.export(net, example, dynamic_shapes=({0: batch},)).module()
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for b in calib:
            prepared(torch.from_numpy(b))
    converted = convert_pt2e(prepared)
    program = torch.export.export(converted, example, dynamic_shapes=({0: batch},))
    meta = replace(meta, extra={**meta.extra, "precision": "int8"})
    torch.export.save(program, str(out), extra_files={EXTRA_FILE: meta.to_json()})


def quantize_model(model: nn.Module, meta: ModelMeta, out: str | os.PathLike, backend: str,
                   calib: list[np.ndarray], *, calib_source: str = "", val_batches: Any = None,
                   val_source: str = "") -> QuantizeReport:
    """Quantize ``model`` to int8 with ``backend``, calibrated on ``calib`` (float NCHW batches).

    With ``val_batches`` (a zero-argument callable returning labelled batches, so both models see the
    same images) the report holds top-1 of the FP32 model and of the int8 artefact.
    """
    if backend not in QUANT_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(QUANT_BACKENDS)}, got {backend!r}")
    out = Path(out)
    if out.suffix.lower() != QUANT_BACKENDS[backend]:
        raise ValueError(f"a {backend} int8 artefact's name must end in {QUANT_BACKENDS[backend]}, got {out.name!r}")
    if not calib or sum(len(b) for b in calib) == 0:
        raise ValueError("quantization needs calibration images: got none")
    t0 = time.perf_counter()
    model = model.eval()
    fp32 = int8 = None
    n_val = 0
    # written under a temporary name and renamed once complete (and validated): never a half-written file
    # at ``out``, nor an OpenVINO .xml without its .bin
    with staged_artefact(out) as tmp:
        {"openvino": _openvino, "onnxruntime": _onnxruntime, "torch": _torch}[backend](model, meta, calib, tmp)
        seconds = time.perf_counter() - t0
        runtime, got = load_artefact(tmp)  # it loads, with its metadata, before it takes its name
        if got.extra.get("precision") != "int8":
            raise RuntimeError(f"the {backend} int8 artefact lost its metadata: read {got}")
        if val_batches is not None:
            with torch.no_grad():
                fp32, n_val = top1(lambda x: model(torch.from_numpy(x)).numpy(), val_batches())
            int8, _ = top1(runtime, val_batches())
        del runtime
    size = sum(f.stat().st_size for f in artefact_files(out))
    report = QuantizeReport(backend, str(out), sum(len(b) for b in calib), calib_source, n_val, val_source,
                            fp32, int8, size, seconds)
    atomic_write_text(out.with_name(out.name + ".quantize.json"), json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def qat_to_openvino(model: nn.Module, meta: ModelMeta, out: str | os.PathLike, *,
                    check: list[np.ndarray] | None = None, min_agreement: float = 0.99,
                    tie: float = 0.05) -> dict[str, Any]:
    """The int8 OpenVINO IR of a quantization-aware model (:func:`resnetlab.models.qat.prepare_qat`): its
    trained fake-quantizers become OpenVINO FakeQuantize nodes, which the CPU plugin runs as int8.

    Written under a temporary name and kept only if, on the ``check`` images, its top-1 agrees with the eager
    fake-quantized model on at least ``min_agreement`` of them, near-ties aside (a top-2 margin under ``tie``
    of the median logit range): int8 kernels round differently from fake-quantization in float, so
    bit-equality is not the test. Returns what the check measured.
    """
    ov = require("openvino")
    out = Path(out)
    if out.suffix.lower() != ".xml":
        raise ValueError(f"an OpenVINO artefact's name must end in .xml, got {out.name!r}")
    if not getattr(model, "resnetlab_qat", False):
        raise ValueError("qat_to_openvino takes a quantization-aware model (a --qat run); for post-training "
                         "int8 use quantize_model")
    model = model.eval()
    size = (meta.in_chans, meta.image_size, meta.image_size)
    example = torch.zeros(2, *size)
    with staged_artefact(out) as tmp:
        with torch.no_grad():
            ov_model = ov.convert_model(model, example_input=example, input=[(-1, *size)])
        ov_model.set_rt_info(replace(meta, extra={**meta.extra, "precision": "int8", "qat": True}).to_json(),
                             [META_KEY])
        ov.save_model(ov_model, str(tmp), compress_to_fp16=False)
        runtime, got = load_artefact(tmp)
        report: dict[str, Any] = {"path": str(out), "check_images": 0}
        if check:
            with torch.no_grad():
                eager = torch.cat([model(torch.from_numpy(b)) for b in check])
            ir = torch.cat([torch.from_numpy(np.asarray(runtime(b), dtype=np.float32)) for b in check])
            same = eager.argmax(1) == ir.argmax(1)
            top2 = eager.topk(min(2, eager.shape[1]), 1).values
            spread = float((eager.max(1).values - eager.min(1).values).median())  # the model's logit scale
            decisive = (top2[:, 0] - top2[:, -1]) > tie * spread  # near-ties may flip under int8 rounding
            agree = float(same[decisive].float().mean()) if decisive.any() else 1.0
            report.update(check_images=len(eager), top1_agreement=float(same.float().mean()),
                          decisive_images=int(decisive.sum()), decisive_agreement=agree,
                          max_abs_logit_diff=float((eager - ir).abs().max()))
            if agree < min_agreement:
                raise RuntimeError(f"the OpenVINO int8 IR of the QAT model agrees with it on {agree:.1%} of the "
                                   f"{int(decisive.sum())} of {len(eager)} images that are not near-ties "
                                   f"(< {min_agreement:.0%}); not written")
        del runtime
    return report
