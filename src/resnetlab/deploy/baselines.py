"""Hand-built baselines for ``resnetlab bench``: what a user of ONNX Runtime, OpenVINO or NNCF writes
without resnetlab, so every resnetlab row can be read against the bare library in the same run.

- ``bare-onnxruntime``: ``InferenceSession(path)`` with ONNX Runtime's defaults (all graph optimisations)
  and the thread count, nothing else.
- ``bare-openvino``: ``core.compile_model`` of the model reshaped to each batch size it is called with (a
  static shape: the best case for the CPU plugin), the f32 precision hint and the latency hint, as the
  OpenVINO performance guide writes it.
- ``bare-int8-openvino``: ``nncf.quantize(ov.convert_model(model, example_input=...), Dataset)`` with
  NNCF's defaults (Jacob et al. 2018 style static PTQ, NNCF's default preset and subset), compiled like
  ``bare-openvino`` without a precision hint.

The files carry resnetlab's metadata only so the bench can read the input size back; the runtimes here
never use it.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .meta import META_KEY, ModelMeta

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["BARE_BACKENDS", "bare_runtime", "nncf_default_int8"]

BARE_BACKENDS = ("bare-onnxruntime", "bare-openvino", "bare-int8-openvino")


def _require(module: str) -> Any:
    from .runtimes import require

    return require(module)


class _BareOnnx:
    def __init__(self, path: str, threads: int | None) -> None:
        ort = _require("onnxruntime")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name
        self.meta = ModelMeta.from_json(self.session.get_modelmeta().custom_metadata_map[META_KEY], path)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.name: x})[0]


class _BareOpenVINO:
    """One static-shape compile per batch size, made on that size's first call (the bench's warm-up)."""

    def __init__(self, path: str, threads: int | None, hint: str | None) -> None:
        self.core = _require("openvino").Core()
        self.model = self.core.read_model(path)
        self.meta = ModelMeta.from_json(self.model.get_rt_info([META_KEY]).astype(str), path)
        self.config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if hint:
            self.config["INFERENCE_PRECISION_HINT"] = hint
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        self.requests: dict[tuple[int, ...], Any] = {}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape not in self.requests:
            model = self.model.clone()
            model.reshape(list(x.shape))
            self.requests[x.shape] = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        request = self.requests[x.shape]
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()


def bare_runtime(backend: str, path: str | os.PathLike, threads: int | None = None):
    """The hand-built runtime of a ``bare-*`` backend on its file (see the module docstring)."""
    if backend == "bare-onnxruntime":
        return _BareOnnx(str(path), threads)
    if backend in ("bare-openvino", "bare-int8-openvino"):
        return _BareOpenVINO(str(path), threads, "f32" if backend == "bare-openvino" else None)
    raise ValueError(f"unknown baseline {backend!r}; known: {', '.join(BARE_BACKENDS)}")


def nncf_default_int8(model: "nn.Module", meta: ModelMeta, out: str | os.PathLike, calib: list[np.ndarray]) -> Path:
    """Write NNCF's default int8 quantization of ``model`` (converted by ``ov.convert_model`` from the eager
    module, as NNCF's own ResNet example does) calibrated on ``calib``; the metadata rides along only to
    name the input size."""
    import nncf
    import torch

    ov = _require("openvino")
    example = torch.from_numpy(calib[0][:1])
    ov_model = ov.convert_model(model.eval(), example_input=example)
    items = [b[i:i + 1] for b in calib for i in range(len(b))]
    q = nncf.quantize(ov_model, nncf.Dataset(items))
    q.set_rt_info(replace(meta, extra={**meta.extra, "precision": "int8"}).to_json(), [META_KEY])
    ov.save_model(q, str(out))
    return Path(out)
