"""Caffe's binary ``.caffemodel`` read without Caffe or a compiled ``caffe.proto``: a protobuf wire-format
reader for the few fields a converter needs (field numbers from BVLC's ``caffe.proto``).

Bounded on hostile input: nested messages are decoded only where the schema says a message is
(NetParameter > LayerParameter > BlobProto > BlobShape: four levels, no recursion on the data), and every
length is checked against the bytes left in its message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CaffeBlob", "CaffeLayerBlobs", "read_caffemodel", "parse_caffemodel", "CaffeFormatError"]


class CaffeFormatError(ValueError):
    """A caffemodel that is not a well-formed ``NetParameter``."""


@dataclass
class CaffeBlob:
    """One parameter blob: its values as float32 and its shape (new-style ``shape`` or legacy N, C, H, W)."""

    data: np.ndarray
    shape: tuple[int, ...]


@dataclass
class CaffeLayerBlobs:
    name: str
    type: str
    blobs: list[CaffeBlob] = field(default_factory=list)


# --- the wire format -------------------------------------------------------------------------------
def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise CaffeFormatError(f"a varint runs past its message at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int):
    """(field number, wire type, value) of one message's bytes; a length-delimited value is (start, end)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise CaffeFormatError(f"field number 0 at byte {pos}: not a protobuf message")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 1:
            if pos + 8 > end:
                raise CaffeFormatError(f"a 64-bit field runs past its message at byte {pos}")
            value, pos = bytes(buf[pos:pos + 8]), pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise CaffeFormatError(f"field {number} declares {n:,} bytes at byte {pos} but its message has "
                                       f"{end - pos:,} left: the file is truncated or corrupt")
            value, pos = (pos, pos + n), pos + n
        elif wire == 5:
            if pos + 4 > end:
                raise CaffeFormatError(f"a 32-bit field runs past its message at byte {pos}")
            value, pos = bytes(buf[pos:pos + 4]), pos + 4
        else:
            raise CaffeFormatError(f"wire type {wire} (field {number}) at byte {pos}: not a protobuf message")
        yield number, wire, value


def _string(buf: memoryview, span: tuple[int, int]) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8", errors="replace")


def _packed(buf: memoryview, wire: int, value, kind: str) -> list:
    """Repeated scalars: packed (one length-delimited run) or one per field."""
    if kind == "f":
        if wire == 2:
            a, b = value
            if (b - a) % 4:
                raise CaffeFormatError("a packed float field's length is not a multiple of 4")
            return [np.frombuffer(buf[a:b], dtype="<f4")]
        if wire == 5:
            return [np.frombuffer(value, dtype="<f4")]
        raise CaffeFormatError(f"a float field has wire type {wire}")
    if kind == "d":
        if wire == 2:
            a, b = value
            return [np.frombuffer(buf[a:b], dtype="<f8").astype(np.float32)]
        return [np.frombuffer(value, dtype="<f8").astype(np.float32)]
    if wire == 2:  # packed varints
        a, b = value
        out, pos = [], a
        while pos < b:
            v, pos = _varint(buf, pos, b)
            out.append(v)
        return out
    return [value]


def _blob_shape(buf: memoryview, span: tuple[int, int]) -> tuple[int, ...]:
    dims: list[int] = []
    for number, wire, value in _fields(buf, *span):
        if number == 1:
            dims += _packed(buf, wire, value, "i")
    return tuple(int(d) for d in dims)


def _blob(buf: memoryview, span: tuple[int, int]) -> CaffeBlob:
    parts, legacy, shape = [], {}, None
    for number, wire, value in _fields(buf, *span):
        if number in (1, 2, 3, 4) and wire == 0:
            legacy[number] = value
        elif number == 5:
            parts += _packed(buf, wire, value, "f")
        elif number == 8:  # double_data
            parts += _packed(buf, wire, value, "d")
        elif number == 7 and wire == 2:
            shape = _blob_shape(buf, value)
    data = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if shape is None:
        shape = tuple(legacy.get(i, 1) for i in (1, 2, 3, 4)) if legacy else (data.size,)
    if int(np.prod(shape, dtype=np.int64)) != data.size:
        raise CaffeFormatError(f"a blob of shape {shape} holds {data.size:,} values")
    return CaffeBlob(data.astype(np.float32, copy=True).reshape(shape), shape)


V1_TYPES = {4: "Convolution", 14: "InnerProduct", 17: "Pooling", 18: "ReLU", 20: "Softmax", 25: "Eltwise",
            6: "Dropout", 3: "Concat", 8: "Flatten", 19: "Sigmoid", 23: "TanH", 15: "LRN", 5: "Data",
            21: "SoftmaxWithLoss"}


def _layer(buf: memoryview, span: tuple[int, int], legacy: bool) -> CaffeLayerBlobs:
    # LayerParameter: name 1, type 2 (string), blobs 7; V1LayerParameter: name 4, type 5 (enum), blobs 6
    name_f, type_f, blobs_f = (4, 5, 6) if legacy else (1, 2, 7)
    layer = CaffeLayerBlobs(name="", type="")
    for number, wire, value in _fields(buf, *span):
        if number == name_f and wire == 2:
            layer.name = _string(buf, value)
        elif number == type_f:
            layer.type = V1_TYPES.get(value, f"V1 type {value}") if legacy else _string(buf, value)
        elif number == blobs_f and wire == 2:
            layer.blobs.append(_blob(buf, value))
    return layer


def parse_caffemodel(data: bytes, where: str = "caffemodel") -> tuple[str, list[CaffeLayerBlobs]]:
    """(the net's name, its layers with their blobs) from a serialized ``NetParameter``."""
    buf, name, layers = memoryview(data), "", []
    try:
        for number, wire, value in _fields(buf, 0, len(buf)):
            if number == 1 and wire == 2:
                name = _string(buf, value)
            elif number in (100, 2) and wire == 2:  # layer (new style) / layers (V1)
                layers.append(_layer(buf, value, legacy=number == 2))
    except CaffeFormatError as e:
        raise CaffeFormatError(f"{where}: {e}") from None
    if not layers:
        raise CaffeFormatError(f"{where}: no layers found: not a Caffe NetParameter")
    return name, layers


def read_caffemodel(path: str, max_bytes: int = 4 << 30) -> tuple[str, list[CaffeLayerBlobs]]:
    """Read and parse ``path`` (refused above ``max_bytes``; a caffemodel is read whole)."""
    import os

    size = os.path.getsize(path)
    if size > max_bytes:
        raise CaffeFormatError(f"{path}: {size:,} bytes, more than the {max_bytes:,} a caffemodel may have here")
    with open(path, "rb") as fh:
        data = fh.read()
    return parse_caffemodel(data, str(path))
