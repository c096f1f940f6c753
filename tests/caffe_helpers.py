"""Caffe files written from known weights, in Caffe's own formats (binary NetParameter and prototxt text),
so the reader is tested against files it did not write itself."""

from __future__ import annotations

import struct
from typing import Any, Sequence

import numpy as np


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _len(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def blob(array: np.ndarray, legacy: bool = False, packed: bool = True) -> bytes:
    """A BlobProto: data (packed or one float per field) and shape (BlobShape, or legacy num/channels/h/w)."""
    a = np.asarray(array, np.float32)
    if legacy:
        dims = (list(a.shape) + [1, 1, 1, 1])[:4] if a.ndim < 4 else list(a.shape)
        head = b"".join(_key(i + 1, 0) + _varint(int(d)) for i, d in enumerate(dims))
    else:
        head = _len(7, _len(1, b"".join(_varint(int(d)) for d in a.shape)))
    data = _len(5, a.astype("<f4").tobytes()) if packed else b"".join(_key(5, 5) + struct.pack("<f", v)
                                                                        for v in a.reshape(-1))
    return head + data


V1_ENUM = {"Convolution": 4, "InnerProduct": 14, "Pooling": 17, "ReLU": 18, "Eltwise": 25}


def caffemodel(layers: Sequence[tuple[str, str, Sequence[np.ndarray]]], name: str = "net", legacy: bool = False,
               packed: bool = True) -> bytes:
    """A NetParameter with (name, type, blobs) per layer: new-style ``layer`` (100) or V1 ``layers`` (2)."""
    out = _len(1, name.encode())
    for lname, ltype, blobs in layers:
        if legacy:  # V1LayerParameter: name 4, type 5 (enum), blobs 6
            body = _len(4, lname.encode()) + _key(5, 0) + _varint(V1_ENUM.get(ltype, 0)) + \
                b"".join(_len(6, blob(b, legacy=True, packed=packed)) for b in blobs)
            out += _len(2, body)
        else:
            body = _len(1, lname.encode()) + _len(2, ltype.encode()) + \
                b"".join(_len(7, blob(b, packed=packed)) for b in blobs)
            out += _len(100, body)
    return out


def prototxt(layers: Sequence[dict[str, Any]], input_shape: Sequence[int] = (1, 3, 8, 8), header: str = "layer",
             name: str = "net") -> str:
    """Prototxt text; ``header``: "layer" (an Input layer), "input_shape" or legacy "input_dim"."""
    lines = [f'name: "{name}"']
    if header == "layer":
        dims = " ".join(f"dim: {d}" for d in input_shape)
        lines.append(f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}')
    elif header == "input_shape":
        lines += ['input: "data"', "input_shape { " + " ".join(f"dim: {d}" for d in input_shape) + " }"]
    else:
        lines += ['input: "data"'] + [f"input_dim: {d}" for d in input_shape]
    for layer in layers:
        lines.append("layer {\n" + _fields(layer, 1) + "}")
    return "\n".join(lines) + "\n"


def _fields(d: dict[str, Any], depth: int) -> str:
    pad, out = "  " * depth, ""
    for key, value in d.items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, dict):
                out += f"{pad}{key} {{\n{_fields(v, depth + 1)}{pad}}}\n"
            elif isinstance(v, str) and not v.isupper():
                out += f'{pad}{key}: "{v}"\n'
            elif isinstance(v, bool):
                out += f"{pad}{key}: {'true' if v else 'false'}\n"
            else:
                out += f"{pad}{key}: {v}\n"
    return out
