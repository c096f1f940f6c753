"""TensorBoard scalar logs without the ``tensorboard`` package.

``torch.utils.tensorboard`` imports ``tensorboard`` (and with it protobuf), which resnetlab does not
depend on. Scalars need very little of it: an event file is a sequence of TFRecords (length, masked
CRC32C of the length, payload, masked CRC32C of the payload; TensorFlow's
``core/lib/io/record_writer.cc``), each payload an ``Event`` protocol buffer
(``tensorflow/core/util/event.proto``). This module hand-encodes those few messages and reads them
back, verifying every checksum.
"""

from __future__ import annotations

import itertools
import operator
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = ["EventWriter", "read_scalars", "crc32c", "masked_crc32c"]

_FILE_VERSION = "brain.Event:2"
_MASK_DELTA = 0xA282EAD8
_counter = itertools.count()  # distinguishes two writers opened in the same second by one process


# --------------------------------------------------------------------------------------------
# CRC32C (Castagnoli) and TFRecord framing
# --------------------------------------------------------------------------------------------

def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # reflected polynomial 0x1EDC6F41
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, RFC 3720 §B.4); ``crc32c(b"123456789") == 0xE3069283``."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 and add a constant, so CRCs of CRCs stay strong."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _frame(payload: bytes) -> bytes:
    header = struct.pack("<Q", len(payload))
    return header + struct.pack("<I", masked_crc32c(header)) + payload + struct.pack("<I", masked_crc32c(payload))


# --------------------------------------------------------------------------------------------
# protocol buffer encoding (only what Event / Summary need)
# --------------------------------------------------------------------------------------------

def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64: two's complement, ten bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _bytes_field(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def _scalar_value(tag: str, value: float) -> bytes:
    """``Summary.Value{tag: 1, simple_value: 2 (float)}``."""
    return _bytes_field(1, tag.encode("utf-8")) + _key(2, 5) + struct.pack("<f", value)


def _event(wall_time: float, step: int = 0, *, file_version: str | None = None,
           values: list[tuple[str, float]] | None = None) -> bytes:
    """``Event{wall_time: 1 (double), step: 2 (int64), file_version: 3, summary: 5}``."""
    out = _key(1, 1) + struct.pack("<d", wall_time)
    if step:
        out += _key(2, 0) + _varint(step)
    if file_version is not None:
        out += _bytes_field(3, file_version.encode("utf-8"))
    if values:
        summary = b"".join(_bytes_field(1, _scalar_value(t, v)) for t, v in values)
        out += _bytes_field(5, summary)
    return out


# --------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------

def _check_tag(tag: object) -> str:
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"a scalar's tag must be a non-empty str, got {tag!r}")
    return tag


def _check_value(tag: str, value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]  # Python / numpy scalars, 0-d tensors
    except (TypeError, ValueError):
        raise ValueError(f"scalar {tag!r} must be a number, got {value!r}") from None


class EventWriter:
    """Append scalars to a new ``events.out.tfevents.*`` file in ``log_dir`` (TensorBoard reads it).

    Records are buffered and flushed every ``flush_secs`` seconds, on :meth:`flush` and on
    :meth:`close`; use it as a context manager. Safe to share between threads.
    """

    def __init__(self, log_dir: str | os.PathLike, *, flush_secs: float = 10.0) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = (f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}."
                f"{next(_counter)}.resnetlab")
        self.path = self.log_dir / name
        self._file = open(self.path, "xb")  # never overwrite another run's log
        self._lock = threading.Lock()
        self._flush_secs = flush_secs
        self._last_flush = time.monotonic()
        self._write(_event(time.time(), file_version=_FILE_VERSION))
        self.flush()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def _write(self, payload: bytes) -> None:
        with self._lock:
            if self._file.closed:
                raise ValueError(f"EventWriter for {self.path} is closed")
            self._file.write(_frame(payload))
            if time.monotonic() - self._last_flush >= self._flush_secs:
                self._file.flush()
                self._last_flush = time.monotonic()

    def add_scalar(self, tag: str, value: float, step: int, wall_time: float | None = None) -> None:
        """Log ``value`` under ``tag`` at ``step`` (an int; TensorBoard's x axis)."""
        tag = _check_tag(tag)
        self._write(_event(time.time() if wall_time is None else float(wall_time), _check_step(step),
                           values=[(tag, _check_value(tag, value))]))

    def add_scalars(self, values: Mapping[str, float], step: int) -> None:
        """Log several scalars at one step, in one record; each tag is its own plot, as with add_scalar."""
        items = [(_check_tag(t), _check_value(t, v)) for t, v in values.items()]
        if items:
            self._write(_event(time.time(), _check_step(step), values=items))

    def flush(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                self._last_flush = time.monotonic()

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                self._file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_step(step: object) -> int:
    try:
        step = operator.index(step)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"step must be an int, got {step!r}") from None
    if not -(2**63) <= step < 2**63:
        raise ValueError(f"step must fit in int64, got {step}")
    return step


# --------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------

def _records(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError(f"{path}: truncated record header at byte {pos}")
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if header_crc != masked_crc32c(header):
            raise ValueError(f"{path}: corrupted record length at byte {pos} (CRC mismatch)")
        end = pos + 12 + length
        if end + 4 > len(data):
            raise ValueError(f"{path}: truncated record at byte {pos} (needs {length} bytes of data)")
        payload = data[pos + 12:end]
        (data_crc,) = struct.unpack("<I", data[end:end + 4])
        if data_crc != masked_crc32c(payload):
            raise ValueError(f"{path}: corrupted record data at byte {pos} (CRC mismatch)")
        yield payload
        pos = end + 4


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint in protocol buffer")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of a protocol buffer message; bytes for wire type 2."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protocol buffer wire type {wire} (field {field})")
        if pos > len(buf):
            raise ValueError("truncated protocol buffer message")
        yield field, wire, value


def _event_scalars(payload: bytes) -> Iterator[tuple[str, int, float]]:
    step, summaries = 0, []
    for field, wire, value in _fields(payload):
        if field == 2 and wire == 0:
            step = value - 2**64 if value >= 2**63 else value  # type: ignore[operator]
        elif field == 5 and wire == 2:
            summaries.append(value)
    for summary in summaries:
        for field, wire, value in _fields(summary):  # type: ignore[arg-type]
            if field != 1 or wire != 2:
                continue
            tag, simple = None, None
            for f, w, v in _fields(value):  # type: ignore[arg-type]
                if f == 1 and w == 2:
                    tag = v.decode("utf-8")  # type: ignore[union-attr]
                elif f == 2 and w == 5:
                    simple = struct.unpack("<f", v)[0]
            if tag is not None and simple is not None:
                yield tag, step, simple


def read_scalars(path: str | os.PathLike) -> list[tuple[str, int, float]]:
    """``(tag, step, value)`` of every ``simple_value`` scalar in an event file, in file order.

    ``path`` may be a directory: its ``events.out.tfevents.*`` files are read in name order. Every
    record's CRCs are checked; a corrupted or truncated file is a ``ValueError`` naming the byte.
    Values are float32, as stored.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.startswith("events.out.tfevents.") and p.is_file())
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"no event file or directory at {path}")
    out: list[tuple[str, int, float]] = []
    for file in files:
        for payload in _records(file):
            try:
                out.extend(_event_scalars(payload))
            except (ValueError, UnicodeDecodeError, struct.error) as e:
                raise ValueError(f"{file}: malformed event record ({e})") from None
    return out
