"""Caffe's layer semantics as PyTorch modules, each where it differs from the obvious PyTorch layer:
BatchNorm without affine and with the moving-average factor folded in at load time, Scale as its own
per-channel affine, pooling that rounds up, Eltwise with coefficients, InnerProduct that flattens."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .prototxt import first

__all__ = ["SUPPORTED", "CaffeScale", "CaffeEltwise", "CaffePool", "CaffeInnerProduct", "Identity", "CaffeConcat",
           "pool_out", "pair"]

SUPPORTED = ("Input", "Convolution", "BatchNorm", "Scale", "ReLU", "Pooling", "Eltwise", "InnerProduct", "Softmax",
             "Dropout", "Split", "Flatten", "Concat", "Sigmoid", "TanH")


def pair(p: dict, name: str, default: int) -> tuple[int, int]:
    """``kernel_size`` / ``kernel_h`` + ``kernel_w`` (and stride, pad, dilation) as (h, w)."""
    base = {"kernel_size": "kernel", "stride": "stride", "pad": "pad", "dilation": "dilation"}[name]
    h, w = first(p, f"{base}_h"), first(p, f"{base}_w")
    if h is not None and w is not None:
        return int(h), int(w)
    values = p.get(name) or [default]
    return (int(values[0]), int(values[-1]))


class Identity(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class CaffeScale(nn.Module):
    """``y = x * gamma (+ beta)``, per channel (Caffe's Scale after BatchNorm)."""

    def __init__(self, channels: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = x * self.weight.view(shape)
        return y + self.bias.view(shape) if self.bias is not None else y


class CaffeEltwise(nn.Module):
    """SUM (with coefficients), PROD or MAX of its inputs."""

    def __init__(self, operation: str, coeff: Sequence[float] = ()) -> None:
        super().__init__()
        if operation not in ("SUM", "PROD", "MAX"):
            raise ValueError(f"Eltwise operation must be SUM, PROD or MAX, got {operation!r}")
        self.operation, self.coeff = operation, tuple(float(c) for c in coeff)

    def forward(self, *xs: Tensor) -> Tensor:
        if self.operation == "PROD":
            out = xs[0]
            for x in xs[1:]:
                out = out * x
            return out
        if self.operation == "MAX":
            out = xs[0]
            for x in xs[1:]:
                out = torch.maximum(out, x)
            return out
        coeff = self.coeff or (1.0,) * len(xs)
        out = xs[0] * coeff[0] if coeff[0] != 1 else xs[0]
        for c, x in zip(coeff[1:], xs[1:]):
            out = out + (x * c if c != 1 else x)
        return out

    def extra_repr(self) -> str:
        return f"{self.operation}" + (f", coeff={self.coeff}" if self.coeff else "")


def pool_out(size: int, kernel: int, stride: int, pad: int) -> int:
    """Caffe's pooled size: rounded up, then the last window dropped if it starts in the padding."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


class CaffePool(nn.Module):
    """MAX or AVE pooling as Caffe computes it: output size rounded up (PyTorch's ``ceil_mode`` applies the same
    last-window rule), averages divided by the window clipped to the padded input, global pooling."""

    def __init__(self, method: str, kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int],
                 global_pooling: bool) -> None:
        super().__init__()
        if method not in ("MAX", "AVE"):
            raise ValueError(f"Pooling method must be MAX or AVE, got {method!r}")
        self.method, self.kernel, self.stride, self.pad, self.global_pooling = (method, kernel, stride, pad,
                                                                                global_pooling)

    def forward(self, x: Tensor) -> Tensor:
        if self.global_pooling:
            return x.amax((2, 3), keepdim=True) if self.method == "MAX" else x.mean((2, 3), keepdim=True)
        if self.method == "MAX":
            return F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=True)
        return F.avg_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=True, count_include_pad=True)

    def extra_repr(self) -> str:
        return (f"{self.method}, global" if self.global_pooling else
                f"{self.method}, kernel={self.kernel}, stride={self.stride}, pad={self.pad}, ceil")


class CaffeInnerProduct(nn.Linear):
    """InnerProduct: flattens everything after the batch axis, then a linear layer."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.flatten(1))


class CaffeConcat(nn.Module):
    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.cat(xs, self.axis)


def describe(layer: dict[str, Any]) -> str:
    return f"layer {first(layer, 'name', '?')!r} ({first(layer, 'type', '?')})"
