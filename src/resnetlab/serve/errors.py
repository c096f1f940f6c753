"""Every refusal the server makes: a status code, a short type a client can switch on, and a message that
names the problem. Bad input is never a 500."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["ServeError", "error_body"]


class ServeError(Exception):
    """A request the server refuses: ``status`` (4xx/503), ``type`` (machine-readable) and ``message``."""

    def __init__(self, status: int, type: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type, message, headers or {}


def error_body(status: int, type: str, message: str) -> dict[str, Any]:
    return {"error": {"status": status, "type": type, "message": message}}


def error_bytes(status: int, type: str, message: str) -> bytes:
    return json.dumps(error_body(status, type, message)).encode()
