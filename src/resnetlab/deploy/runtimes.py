"""Inference runtimes behind one call: a float32 NCHW batch in, float32 logits out.

``torch`` (eager, BN folded, channels_last, fp32 or bf16), ``onnxruntime`` and ``openvino``.
The last two are optional extras (``pip install resnetlab[onnx]`` / ``[openvino]``); asking for
one that is not installed is a clear error, and :func:`available_backends` says which are.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ..runtime.predictor import in_fixed_batches
from ..utils.hardware import cpu_has_bf16
from .fuse import inference_model

__all__ = ["BACKENDS", "PRECISIONS", "available_backends", "require", "cpu_has_bf16", "TorchRuntime",
           "OnnxRuntime", "OpenVINORuntime"]

BACKENDS = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16")
_MODULES = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}
_EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}


def available_backends() -> dict[str, bool]:
    """Which runtimes can be imported here (without importing them)."""
    return {b: importlib.util.find_spec(_MODULES[b]) is not None for b in BACKENDS}


def require(backend: str) -> Any:
    """Import a runtime's module, or say how to install it."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not available_backends()[backend]:
        raise ModuleNotFoundError(f"backend {backend!r} is not installed: pip install 'resnetlab[{_EXTRAS[backend]}]'")
    return importlib.import_module(_MODULES[backend])


def _threads(threads: int | None) -> int:
    return threads or torch.get_num_threads() or os.cpu_count() or 1


class TorchRuntime:
    """Eager PyTorch: BN folded into the convs, channels_last, fp32 or bf16 weights and activations.

    bf16 casts the whole (folded) model rather than autocasting: no per-call weight casts, and oneDNN
    runs bf16 convolutions natively where the CPU has AVX512-BF16 / AMX.
    """

    name = "torch"

    def __init__(self, model: nn.Module, *, precision: str = "fp32", fuse: bool = True,
                 channels_last: bool = True, compile: bool = False, threads: int | None = None,
                 as_is: bool = False) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if threads:
            torch.set_num_threads(threads)
        self.precision, self.channels_last = precision, channels_last
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        # as_is: an artefact's module (exported / scripted) is already folded and frozen; exported
        # programs refuse .eval() and deep copies, so they run unchanged (fp32, NCHW)
        if as_is:
            net, self.dtype, self.channels_last, self.precision = model, torch.float32, False, "fp32"
        else:
            net = inference_model(model, fuse=fuse, channels_last=channels_last).to(self.dtype)
        self.model: Callable = torch.compile(net) if compile else net
        self.threads = _threads(threads)

    @torch.inference_mode()
    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        t = torch.as_tensor(x).to(self.dtype)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        return self.model(t).float().numpy()


class OnnxRuntime:
    """ONNX Runtime's CPU execution provider with all graph optimisations."""

    name = "onnxruntime"

    def __init__(self, model: str | os.PathLike | bytes, *, threads: int | None = None) -> None:
        ort = require("onnxruntime")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = _threads(threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        src = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.batch = first.shape[0] if isinstance(first.shape[0], int) else None  # a fixed-batch export's size
        self.precision, self.threads = "fp32", opts.intra_op_num_threads

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        return in_fixed_batches(lambda a: self.session.run(None, {self.input_name: a})[0], x, self.batch)


class OpenVINORuntime:
    """OpenVINO's CPU plugin, one stream with every thread (latency and large batches alike).

    ``precision`` sets the plugin's inference precision hint: "fp32" keeps f32 arithmetic (the CPU
    plugin would otherwise pick bf16 by itself on CPUs that have it), "bf16" asks for bf16.
    """

    name = "openvino"

    def __init__(self, model: Any, *, precision: str = "fp32", threads: int | None = None) -> None:
        ov = require("openvino")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        core = ov.Core()
        if isinstance(model, (str, os.PathLike)):
            model = core.read_model(str(model))
        self.threads = _threads(threads)
        config = {"INFERENCE_PRECISION_HINT": "f32" if precision == "fp32" else "bf16",
                  "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self.threads, "NUM_STREAMS": 1}
        dim = model.input(0).get_partial_shape()[0]
        self.batch = dim.get_length() if dim.is_static else None  # a fixed-batch export's size
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.precision = precision

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({0: x})
        return np.array(self.request.get_output_tensor(0).data, copy=True)

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        return in_fixed_batches(self._run, np.ascontiguousarray(np.asarray(x, dtype=np.float32)), self.batch)
