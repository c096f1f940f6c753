"""A real uvicorn server on a free loopback port, in a thread of the test process, and hostile payloads."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(cfg, timeout: float = 120.0) -> Iterator[str]:
    """Serve ``cfg`` (a ServeConfig; its port is replaced by a free one) until the block ends."""
    import uvicorn
    from dataclasses import replace

    from resnetlab.serve import create_app

    cfg = replace(cfg, port=free_port())
    server = uvicorn.Server(uvicorn.Config(create_app(cfg), host="127.0.0.1", port=cfg.port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{cfg.port}"
    try:
        wait_ready(url, timeout)
        yield url
    finally:
        server.should_exit = True
        thread.join(60)


def wait_ready(url: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            r = httpx.get(url + "/readyz", timeout=5)
            if r.status_code == 200:
                return
            if "not_ready" in r.text and "loading" not in r.text:  # a load error: say it
                raise AssertionError(f"the server failed to load: {r.text}")
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready within {timeout} s")


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height and whose data is a few bytes: a 'huge header' file."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + \
        chunk(b"IEND", b"")


def png_bomb(side: int = 8000) -> bytes:
    """A real, valid grayscale PNG of side x side black pixels: tens of KB on the wire, side² pixels decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z, row, parts = zlib.compressobj(9), b"\x00" * (side + 1), []
    for _ in range(side):
        parts.append(z.compress(row))
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def zip_as_jpg() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("photo.jpg", b"\xff\xd8\xff" + b"0" * 1000)
    return buf.getvalue()


def slow_request(port: int, path: str, body: bytes, every_s: float, content_type: str = "image/png") -> bytes:
    """Send the headers, then the body one byte every ``every_s`` seconds, until the server answers; the
    server's bytes (status line first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode())
        s.settimeout(every_s)
        for i in range(len(body)):
            try:
                s.sendall(body[i:i + 1])
            except OSError:
                break
            try:
                got = s.recv(65536)
                if got:
                    return got + _rest(s)
            except socket.timeout:
                continue
        s.settimeout(30)
        return s.recv(65536)


def _rest(s: socket.socket) -> bytes:
    s.settimeout(2)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except OSError:
        pass
    return out


def first_image(folder: Path) -> Path:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[0]
