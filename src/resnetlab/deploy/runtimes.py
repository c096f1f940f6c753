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

    A dynamic-batch model also gets a static-shape compile for each batch size it is called with a second
    time, up to ``static_batches`` of them (0: never): the CPU plugin runs a static shape ~13 % faster at
    batch 32 (int8 and FP32, benchmarks/results/inference_cpu.md), which is what a default NNCF artefact
    compiled for one shape has over a dynamic one. The first call at a size runs the dynamic compile, so
    a size seen once (a last partial batch) costs no compile; each static compile holds its own weights.
    """

    name = "openvino"

    def __init__(self, model: Any, *, precision: str = "fp32", threads: int | None = None,
                 static_batches: int = 4) -> None:
        ov = require("openvino")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if static_batches < 0:
            raise ValueError(f"static_batches must be >= 0, got {static_batches!r}")
        self.core = ov.Core()
        if isinstance(model, (str, os.PathLike)):
            model = self.core.read_model(str(model))
        self.threads = _threads(threads)
        self.config = {"INFERENCE_PRECISION_HINT": "f32" if precision == "fp32" else "bf16",
                       "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self.threads, "NUM_STREAMS": 1}
        dim = model.input(0).get_partial_shape()[0]
        self.batch = dim.get_length() if dim.is_static else None  # a fixed-batch export's size
        self.compiled = self.core.compile_model(model, "CPU", self.config)
        self.request = self.compiled.create_infer_request()
        self.precision = precision
        # the graph kept for static compiles only when it can have them (a fixed-batch export cannot)
        self.static_batches = static_batches if self.batch is None else 0
        self._graph = model if self.static_batches else None
        self._static: dict[int, Any] = {}  # batch size -> infer request of its static compile
        self._seen: dict[int, int] = {}

    def _request_for(self, n: int) -> Any:
        """The infer request for a batch of n: its static compile if it has (or now earns) one."""
        if n in self._static or not self.static_batches:
            return self._static.get(n, self.request)
        self._seen[n] = self._seen.get(n, 0) + 1
        if self._seen[n] < 2 or len(self._static) >= self.static_batches:
            return self.request
        graph = self._graph.clone()
        shape = graph.input(0).get_partial_shape()
        shape[0] = n
        graph.reshape({graph.input(0): shape})
        self._static[n] = self.core.compile_model(graph, "CPU", self.config).create_infer_request()
        return self._static[n]

    @property
    def static_shapes(self) -> list[int]:
        """The batch sizes that run on a static-shape compile of their own."""
        return sorted(self._static)

    def _run(self, x: np.ndarray) -> np.ndarray:
        request = self._request_for(x.shape[0])
        request.infer({0: x})
        return np.array(request.get_output_tensor(0).data, copy=True)

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        return in_fixed_batches(self._run, np.ascontiguousarray(np.asarray(x, dtype=np.float32)), self.batch)
