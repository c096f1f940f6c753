import math
import struct

import pytest

from resnetlab.utils import EventWriter, read_scalars
from resnetlab.utils.tensorboard import crc32c, masked_crc32c


def _records(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos:pos + 8])
        out.append(data[pos + 12:pos + 12 + n])
        pos += 12 + n + 4
    return out


def test_crc32c_check_values():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC catalogue's check value for CRC-32C
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
    assert crc32c(b"\xff" * 32) == 0x62A8AB43  # RFC 3720 B.4: 32 bytes of ones
    crc = crc32c(b"abc")
    assert masked_crc32c(b"abc") == ((crc >> 15 | crc << 17) + 0xA282EAD8) % 2**32


def test_file_name_and_exact_bytes(tmp_path):
    with EventWriter(tmp_path / "run") as w:
        w.add_scalar("a", 0.5, 3, wall_time=1.0)
    (path,) = (tmp_path / "run").iterdir()
    assert path.name.startswith("events.out.tfevents.") and path == w.path
    data = path.read_bytes()
    first, second = _records(data)
    assert first[:1] == b"\x09" and first[9:] == b"\x1a\x0dbrain.Event:2"  # wall_time, file_version
    value = b"\x0a\x01a" + b"\x15" + struct.pack("<f", 0.5)  # Value{tag: "a", simple_value: 0.5}
    summary = b"\x0a" + bytes([len(value)]) + value
    assert second == b"\x09" + struct.pack("<d", 1.0) + b"\x10\x03" + b"\x2a" + bytes([len(summary)]) + summary
    # framing: length, masked CRC of the length, data, masked CRC of the data
    header = data[:8]
    assert struct.unpack("<I", data[8:12])[0] == masked_crc32c(header)
    n = struct.unpack("<Q", header)[0]
    assert struct.unpack("<I", data[12 + n:16 + n])[0] == masked_crc32c(data[12:12 + n])


def test_round_trip(tmp_path):
    with EventWriter(tmp_path) as w:
        w.add_scalar("train/loss", 2.5, 0)
        w.add_scalar("train/loss", 0.1, 1)
        w.add_scalars({"val/top1": 0.75, "val/ünïcode": -3, "lr": 1e-4}, step=2**40)
        w.add_scalar("neg_step", float("inf"), -7)
        w.add_scalars({}, 5)  # nothing to write
    got = read_scalars(tmp_path)
    assert [(t, s) for t, s, _ in got] == [
        ("train/loss", 0), ("train/loss", 1), ("val/top1", 2**40), ("val/ünïcode", 2**40), ("lr", 2**40),
        ("neg_step", -7),
    ]
    values = [v for _, _, v in got]
    assert values[:5] == pytest.approx([2.5, 0.1, 0.75, -3.0, 1e-4], rel=1e-6)  # stored as float32
    assert math.isinf(values[5])


def test_flush_makes_records_readable_before_close(tmp_path):
    w = EventWriter(tmp_path, flush_secs=3600)
    w.add_scalar("x", 1.0, 1)
    w.flush()
    assert read_scalars(w.path) == [("x", 1, 1.0)]
    w.close()
    w.close()  # idempotent
    with pytest.raises(ValueError, match="is closed"):
        w.add_scalar("x", 2.0, 2)


def test_two_writers_in_one_directory(tmp_path):
    with EventWriter(tmp_path) as a, EventWriter(tmp_path) as b:
        a.add_scalar("a", 1.0, 1)
        b.add_scalar("b", 2.0, 1)
    assert a.path != b.path
    assert sorted(read_scalars(tmp_path)) == [("a", 1, 1.0), ("b", 1, 2.0)]


@pytest.mark.parametrize("where", ["length", "payload", "data_crc"])
def test_corruption_is_detected(tmp_path, where):
    with EventWriter(tmp_path) as w:
        w.add_scalar("loss", 1.0, 1)
    data = bytearray(w.path.read_bytes())
    first_len = struct.unpack("<Q", data[:8])[0]
    second = 16 + first_len  # start of the second record
    offset = {"length": second + 1, "payload": second + 14, "data_crc": len(data) - 1}[where]
    data[offset] ^= 0x01
    w.path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC mismatch"):
        read_scalars(w.path)


def test_truncated_file_is_detected(tmp_path):
    with EventWriter(tmp_path) as w:
        w.add_scalar("loss", 1.0, 1)
    w.path.write_bytes(w.path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated record"):
        read_scalars(w.path)


def test_bad_arguments(tmp_path):
    with EventWriter(tmp_path) as w:
        with pytest.raises(ValueError, match="tag must be a non-empty str, got ''"):
            w.add_scalar("", 1.0, 0)
        with pytest.raises(ValueError, match="'loss' must be a number, got 'high'"):
            w.add_scalar("loss", "high", 0)
        with pytest.raises(ValueError, match="step must be an int, got 1.5"):
            w.add_scalar("loss", 1.0, 1.5)
    with pytest.raises(FileNotFoundError):
        read_scalars(tmp_path / "missing")


def test_tensorboard_reads_it(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed (not a dependency)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with EventWriter(tmp_path) as w:
        for step in range(5):
            w.add_scalars({"loss": 1.0 / (step + 1), "acc": step / 10}, step)
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"loss", "acc"}
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == list(range(5))
    assert [e.value for e in loss] == pytest.approx([1.0 / (s + 1) for s in range(5)], rel=1e-6)
