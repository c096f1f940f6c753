"""A Caffe network as a PyTorch module: the prototxt's layers in order, each a named submodule, blobs passed
by name (in-place layers, ``top == bottom``, simply rebind the name). Shapes are inferred as Caffe does, so
every layer is built with its real channel counts and a mismatch with the caffemodel is caught by name."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from .layers import (SUPPORTED, CaffeConcat, CaffeEltwise, CaffeInnerProduct, CaffePool, CaffeScale, Identity,
                     describe, pair, pool_out)
from .proto import CaffeLayerBlobs
from .prototxt import first

__all__ = ["CaffeNet", "input_shape", "module_name", "CaffeGraphError"]

TRAIN_ONLY = ("Data", "ImageData", "MemoryData", "HDF5Data", "WindowData", "DummyData", "SoftmaxWithLoss",
              "Accuracy", "EuclideanLoss", "SigmoidCrossEntropyLoss", "Silence")


class CaffeGraphError(ValueError):
    """A prototxt this converter cannot build, or a caffemodel that does not fit it."""


def module_name(layer_name: str) -> str:
    """A layer name as a submodule name (no dots, not empty)."""
    return re.sub(r"[^0-9A-Za-z_]", "_", layer_name) or "layer"


def input_shape(net: dict[str, list]) -> tuple[str, tuple[int, ...]]:
    """(blob name, N, C, H, W) from an ``Input`` layer, ``input`` + ``input_shape``, or legacy ``input_dim``."""
    for layer in net.get("layer", []):
        if first(layer, "type") == "Input":
            shape = first(first(layer, "input_param", {}), "shape", {})
            return first(layer, "top", "data"), tuple(int(d) for d in shape.get("dim", []))
    if net.get("input"):
        name = net["input"][0]
        if net.get("input_shape"):
            return name, tuple(int(d) for d in net["input_shape"][0].get("dim", []))
        if net.get("input_dim"):
            return name, tuple(int(d) for d in net["input_dim"][:4])
    raise CaffeGraphError("the prototxt declares no input: expected an Input layer, 'input' with 'input_shape', "
                          "or legacy 'input_dim' lines")


class CaffeNet(nn.Module):
    """Runs ``layers`` (prototxt layer dicts) on an input blob of ``shape`` (N, C, H, W).

    ``bgr``: flip the channels of the input first (Caffe models read BGR; resnetlab feeds RGB). The output is
    the last blob; a final Softmax is dropped so that the net gives logits, as every resnetlab model does
    (``ends_in_softmax`` records that it was there)."""

    def __init__(self, net: dict[str, list], *, bgr: bool = True) -> None:
        super().__init__()
        self.bgr = bgr
        self.input_name, shape = input_shape(net)
        if len(shape) != 4:
            raise CaffeGraphError(f"the input must be 4-D (N, C, H, W), got {shape}")
        layers = [lay for lay in net.get("layer") or net.get("layers") or []
                  if first(lay, "type") not in TRAIN_ONLY + ("Input",)]
        self.ends_in_softmax = bool(layers) and first(layers[-1], "type") == "Softmax"
        if self.ends_in_softmax:
            layers = layers[:-1]
        self.input_shape = tuple(shape[1:])
        self.steps: list[tuple[str, str, list[str], list[str], str]] = []  # (module, layer, bottoms, tops, type)
        self.layers = nn.ModuleDict()
        self.out_shapes: list[tuple[int, ...]] = []  # per step: its output's (C, H, W) or (N,)
        shapes: dict[str, tuple[int, ...]] = {self.input_name: self.input_shape}
        for layer in layers:
            self._add(layer, shapes)
        self.output_name = self.steps[-1][3][0] if self.steps else self.input_name
        self.output_shape = shapes[self.output_name]

    def _add(self, layer: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> None:
        kind, name = first(layer, "type"), first(layer, "name", "")
        bottoms, tops = list(layer.get("bottom", [])), list(layer.get("top", []))
        if kind not in SUPPORTED:
            raise CaffeGraphError(f"{describe(layer)}: unsupported layer type {kind!r}; supported: "
                                  f"{', '.join(SUPPORTED)}")
        missing = [b for b in bottoms if b not in shapes]
        if missing or not bottoms or not tops:
            raise CaffeGraphError(f"{describe(layer)}: bottoms {bottoms} / tops {tops} do not connect (unknown: "
                                  f"{missing})")
        module, out = _build(kind, layer, [shapes[b] for b in bottoms])
        key = module_name(name)
        while key in self.layers:
            key += "_"
        self.layers[key] = module
        self.steps.append((key, name, bottoms, tops, kind))
        self.out_shapes.append(out)
        for t in tops:
            shapes[t] = out

    def forward(self, x: Tensor) -> Tensor:
        blobs = {self.input_name: x.flip(1) if self.bgr else x}
        for key, _, bottoms, tops, _ in self.steps:
            y = self.layers[key](*(blobs[b] for b in bottoms))
            for t in tops:
                blobs[t] = y
        return blobs[self.output_name]

    # --- weights ---------------------------------------------------------------------------------
    def load_caffe_blobs(self, layers: list[CaffeLayerBlobs], where: str) -> None:
        """Copy the caffemodel's blobs into the modules, by layer name; every parametrised layer must be found
        with the right number and shapes of blobs."""
        by_name = {lay.name: lay for lay in layers}
        for key, name, _, _, kind in self.steps:
            module = self.layers[key]
            wanted = _wanted_blobs(kind, module)
            if not wanted:
                continue
            if name not in by_name:
                raise CaffeGraphError(f"{where}: no blobs for layer {name!r} ({kind}) of the prototxt")
            blobs = by_name[name].blobs
            if kind == "BatchNorm":
                _load_batchnorm(module, blobs, f"{where}: layer {name!r}")
                continue
            if len(blobs) < len(wanted):
                raise CaffeGraphError(f"{where}: layer {name!r} ({kind}) has {len(blobs)} blobs, the prototxt "
                                      f"needs {len(wanted)}")
            for (param, shape), blob in zip(wanted, blobs):
                if int(np.prod(blob.shape)) != int(np.prod(shape)):
                    raise CaffeGraphError(f"{where}: layer {name!r} ({kind}) blob of shape {blob.shape}, the "
                                          f"prototxt needs {tuple(shape)}")
                param.data.copy_(torch.from_numpy(blob.data.reshape(shape)))


def _wanted_blobs(kind: str, module: nn.Module) -> list[tuple[Tensor, tuple[int, ...]]]:
    if kind in ("Convolution", "InnerProduct", "Scale"):
        return [(module.weight, tuple(module.weight.shape))] + \
            ([(module.bias, tuple(module.bias.shape))] if module.bias is not None else [])
    if kind == "BatchNorm":
        return [(module.running_mean, tuple(module.running_mean.shape))]
    return []


def _load_batchnorm(bn: nn.BatchNorm2d, blobs: list, where: str) -> None:
    """Caffe stores [mean * s, var * s, s] with s the moving-average factor: divide by s (0 -> 0, as Caffe)."""
    if len(blobs) < 3:
        raise CaffeGraphError(f"{where} (BatchNorm) has {len(blobs)} blobs, Caffe's BatchNorm has 3 "
                              "(mean, variance, moving-average factor)")
    c = bn.num_features
    mean, var, s = (np.asarray(b.data, np.float64).reshape(-1) for b in blobs[:3])
    if mean.size != c or var.size != c:
        raise CaffeGraphError(f"{where} (BatchNorm): blobs of {mean.size} and {var.size} values for {c} channels")
    factor = 0.0 if s[0] == 0 else 1.0 / s[0]
    bn.running_mean.copy_(torch.from_numpy(mean * factor).float())
    bn.running_var.copy_(torch.from_numpy(var * factor).float())


def _build(kind: str, layer: dict[str, Any], ins: list[tuple[int, ...]]) -> tuple[nn.Module, tuple[int, ...]]:
    x = ins[0]
    if kind == "Convolution":
        p = first(layer, "convolution_param", {})
        k, s = pair(p, "kernel_size", 1), pair(p, "stride", 1)
        pad, d = pair(p, "pad", 0), pair(p, "dilation", 1)
        groups, out_c = int(first(p, "group", 1)), int(first(p, "num_output"))
        conv = nn.Conv2d(x[0], out_c, k, s, pad, d, groups=groups, bias=bool(first(p, "bias_term", True)))
        h = (x[1] + 2 * pad[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
        w = (x[2] + 2 * pad[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
        return conv, (out_c, h, w)
    if kind == "BatchNorm":
        eps = float(first(first(layer, "batch_norm_param", {}), "eps", 1e-5))
        return nn.BatchNorm2d(x[0], eps=eps, affine=False, track_running_stats=True).eval(), x
    if kind == "Scale":
        if len(ins) > 1:
            raise CaffeGraphError(f"{describe(layer)}: a Scale with two bottoms (learned scale blob) is not "
                                  "supported")
        return CaffeScale(x[0], bool(first(first(layer, "scale_param", {}), "bias_term", False))), x
    if kind == "ReLU":
        slope = float(first(first(layer, "relu_param", {}), "negative_slope", 0.0))
        return (nn.LeakyReLU(slope) if slope else nn.ReLU()), x
    if kind == "Pooling":
        p = first(layer, "pooling_param", {})
        method, glob = str(first(p, "pool", "MAX")), bool(first(p, "global_pooling", False))
        if glob:
            return CaffePool(method, (1, 1), (1, 1), (0, 0), True), (x[0], 1, 1)
        k, s, pad = pair(p, "kernel_size", 1), pair(p, "stride", 1), pair(p, "pad", 0)
        if pad[0] > k[0] // 2 or pad[1] > k[1] // 2:
            raise CaffeGraphError(f"{describe(layer)}: pad {pad} larger than half the kernel {k} is not supported")
        return CaffePool(method, k, s, pad, False), (x[0], pool_out(x[1], k[0], s[0], pad[0]),
                                                     pool_out(x[2], k[1], s[1], pad[1]))
    if kind == "Eltwise":
        p = first(layer, "eltwise_param", {})
        if any(i != x for i in ins):
            raise CaffeGraphError(f"{describe(layer)}: inputs of shapes {ins} cannot be added")
        return CaffeEltwise(str(first(p, "operation", "SUM")), p.get("coeff", [])), x
    if kind == "InnerProduct":
        p = first(layer, "inner_product_param", {})
        out = int(first(p, "num_output"))
        return CaffeInnerProduct(int(np.prod(x)), out, bias=bool(first(p, "bias_term", True))), (out,)
    if kind == "Concat":
        axis = int(first(first(layer, "concat_param", {}), "axis", 1))
        if axis != 1:
            raise CaffeGraphError(f"{describe(layer)}: Concat along axis {axis}: only channels (1) are supported")
        return CaffeConcat(1), (sum(i[0] for i in ins),) + x[1:]
    if kind == "Flatten":
        return nn.Flatten(1), (int(np.prod(x)),)
    if kind == "Softmax":
        return nn.Softmax(dim=1), x
    return {"Dropout": Identity, "Split": Identity, "Sigmoid": nn.Sigmoid, "TanH": nn.Tanh}[kind](), x
