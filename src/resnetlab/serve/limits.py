"""Body size and arrival time, enforced while the body streams in (Starlette itself has no body cap:
fastapi#362). A pure ASGI middleware: it reads the body under both limits, then hands it to the app."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from .errors import error_bytes

__all__ = ["BodyLimits"]

DRAIN_BYTES = 64 * 1024 * 1024  # after a 413, read (and drop) this much more so the client can read the answer


class BodyLimits:
    """413 for a body over ``max_bytes`` (from Content-Length at once, else as soon as the stream passes it),
    408 when the whole body has not arrived within ``timeout_s`` (a slow or stalled client)."""

    def __init__(self, app: Any, *, max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            status, kind = (413, "too_large") if declared.isdigit() else (400, "bad_request")
            msg = (f"the body is {int(declared):,} bytes, more than the {self.max_bytes:,} this server takes "
                   "(--max-body-mb)" if declared.isdigit() else
                   f"Content-Length {declared.decode(errors='replace')!r} is not a number")
            return await self._refuse(scope, send, status, kind, msg, receive)
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(left, 0.0))
            except TimeoutError:
                return await self._refuse(scope, send, 408, "timeout", f"the request body did not arrive within "
                                                                     f"{self.timeout_s:g} s (--timeout-s)")
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._refuse(scope, send, 413, "too_large", f"the body passed {self.max_bytes:,} "
                                          "bytes, the most this server takes (--max-body-mb)", receive)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, scope: dict, send: Callable, status: int, kind: str, message: str,
                      drain: Callable | None = None) -> None:
        payload = error_bytes(status, kind, message)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
        if drain is not None:  # let a client that writes its whole body before reading get to read the answer
            await _drain(drain, DRAIN_BYTES, 5.0)


async def _drain(receive: Callable, limit: int, seconds: float) -> None:
    seen, loop = 0, asyncio.get_running_loop()
    end = loop.time() + seconds
    while seen < limit and loop.time() < end:
        try:
            message = await asyncio.wait_for(receive(), end - loop.time())
        except TimeoutError:
            return
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        seen += len(message.get("body", b""))
