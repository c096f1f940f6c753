"""Export of detectors and segmenters, checked against the eager model before the artefact takes its name.

- A segmenter goes to ONNX (dynamo exporter, opset 18) or OpenVINO IR with a dynamic batch *and* image size;
  its output is the (N, classes, H, W) logit map (``out``), compared with eager's on real test images.
- A detector goes to ONNX with a dynamic image size (one image per call, as torchvision's detectors are
  exported — the TorchScript-based exporter, the route torchvision tests; the dynamo exporter cannot yet trace
  their data-dependent box filtering). Outputs ``boxes`` (K, 4), ``labels`` (K,), ``scores`` (K,); the check
  requires the same boxes, within ``BOX_TOLERANCE_PX`` pixels, and scores within the tolerance, on each image.
Metadata (classes, preprocessing, task) is embedded as for classifiers (:class:`ModelMeta`).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..data.dense import DenseBatches, open_dense_split
from ..eval.loading import TrainedModel
from ..utils.fileio import atomic_write_text
from .export import FORMATS, ExportReport, artefact_files, embed_onnx_meta, require_onnx_export, staged_artefact
from .meta import META_KEY, ModelMeta
from .runtimes import require

__all__ = ["export_dense", "BOX_TOLERANCE_PX", "DENSE_FORMATS"]

BOX_TOLERANCE_PX = 0.5  # largest box-corner difference (pixels) between the artefact and eager
DENSE_FORMATS = {"segmentation": ("onnx", "openvino"), "detection": ("onnx",)}


class _LogitMap(nn.Module):
    """A segmenter as a plain tensor function: torchvision's {"out": ...} dict to its logit map."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _check_batch(trained: TrainedModel, data: Any, images: int) -> tuple[Any, str]:
    root = data or trained.config.get("data")
    if not root:
        raise ValueError(f"{trained.path}: the run recorded no data folder; pass check_data=")
    ds = open_dense_split(root, "test" if (Path(root) / "test").is_dir() else "val", trained.task,
                          masks=trained.config.get("masks", "auto"), classes=trained.classes)
    pre = trained.preprocess
    x, _, _ = next(iter(DenseBatches(ds, images, kind=trained.task, train=False, mean=pre.mean,
                                     std=pre.std).epoch(0)))
    return x, f"{len(x)} real images from {ds.source}"


def _segmenter(model: nn.Module, meta: ModelMeta, fmt: str, tmp: Path, x: torch.Tensor) -> np.ndarray:
    """Write the segmenter to ``tmp`` and return the artefact's logits on ``x``."""
    dims = {0: torch.export.Dim("batch", min=1, max=1024), 2: torch.export.Dim("height", min=32, max=8192),
            3: torch.export.Dim("width", min=32, max=8192)}
    example = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    if fmt == "onnx":
        program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=(dims,), input_names=["input"],
                                    output_names=["logits"], opset_version=18, optimize=True, verbose=False)
        embed_onnx_meta(program.model_proto, meta)
        tmp.write_bytes(program.model_proto.SerializeToString())
        sess = require("onnxruntime").InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        return sess.run(None, {"input": x.numpy()})[0]
    ov = require("openvino")
    ov_model = ov.convert_model(torch.export.export(model, (example,), dynamic_shapes=(dims,)))
    ov_model.set_rt_info(meta.to_json(), [META_KEY])
    ov.save_model(ov_model, str(tmp), compress_to_fp16=False)
    compiled = ov.Core().compile_model(str(tmp), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled(x.numpy())[0]


def _detector(model: nn.Module, meta: ModelMeta, tmp: Path, images: list[torch.Tensor]) -> list[list[np.ndarray]]:
    """Write the detector to ``tmp`` as ONNX; the artefact's (boxes, labels, scores) on each image."""
    require_onnx_export()
    import onnx

    buf = io.BytesIO()
    names = list(model([images[0]])[0])  # the order of the outputs: Faster R-CNN's differs from FCOS's
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer warnings
        warnings.simplefilter("ignore")
        torch.onnx.export(model, ([images[0]],), buf, dynamo=False, opset_version=17, input_names=["image"],
                          output_names=names, dynamic_axes={"image": [1, 2], **{n: [0] for n in names}})
    proto = onnx.load_from_string(buf.getvalue())
    embed_onnx_meta(proto, meta)
    tmp.write_bytes(proto.SerializeToString())
    sess = require("onnxruntime").InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    return [sess.run(["boxes", "labels", "scores"], {"image": img.numpy()}) for img in images]


def export_dense(trained: TrainedModel, fmt: str, out: str | Path, *, check_data: Any = None, check_images: int = 4,
                 tolerance: float = 1e-3) -> ExportReport:
    """Export a trained detector or segmenter as ``fmt``; the artefact is compared with eager on
    ``check_images`` real images of the run's test (else val) split before it is renamed into place."""
    allowed = DENSE_FORMATS[trained.task]
    if fmt not in allowed:
        raise ValueError(f"a {trained.task} model exports to {', '.join(allowed)}, not {fmt!r}")
    out = Path(out)
    if out.suffix.lower() != FORMATS[fmt]:
        raise ValueError(f"a {fmt} artefact's file name must end in {FORMATS[fmt]}, got {out.name!r}")
    meta = ModelMeta.from_trained(trained)
    x, source = _check_batch(trained, check_data, check_images)
    model = trained.model.eval()
    with staged_artefact(out) as tmp, torch.no_grad():
        if trained.task == "segmentation":
            net = _LogitMap(model).eval()
            got, ref = _segmenter(net, meta, fmt, tmp, x), net(x).numpy()
            diff = float(np.abs(got - ref).max())
            scale = max(1.0, float(np.abs(ref).max()))
            bad = "" if diff / scale <= tolerance else f"logits differ by {diff:.3g} (up to {scale:.3g})"
        else:
            got_all = _detector(model, meta, tmp, list(x))
            diff, scale, bad = 0.0, 1.0, ""
            for k, (img, got) in enumerate(zip(x, got_all)):
                ref = model([img])[0]
                if len(got[0]) != len(ref["boxes"]):
                    bad = f"image {k}: {len(got[0])} boxes against eager's {len(ref['boxes'])}"
                    break
                box = float(np.abs(got[0] - ref["boxes"].numpy()).max(initial=0.0))
                diff = max(diff, float(np.abs(got[2] - ref["scores"].numpy()).max(initial=0.0)))
                if box > BOX_TOLERANCE_PX or diff > tolerance or not np.array_equal(got[1], ref["labels"].numpy()):
                    bad = f"image {k}: boxes differ by {box:.3g} px, scores by {diff:.3g}, or the labels differ"
                    break
        if bad:
            raise RuntimeError(f"{fmt} export of {trained.name} differs from the eager model on {source}: {bad} "
                               f"(tolerance {tolerance:g}); nothing was written to {out}")
    size = sum(f.stat().st_size for f in artefact_files(out))
    report = ExportReport(str(out), fmt, diff, diff / scale, tolerance, source, len(x), size, True)
    atomic_write_text(out.with_name(out.name + ".export.json"), json.dumps(report.to_dict(), indent=2) + "\n")
    return report
