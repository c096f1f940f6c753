"""One download helper for data sets and pretrained weights: timeouts, retries with backoff, progress,
a digest check, and nothing half-written (a temp file renamed into place only when it checks out).

Why not ``torch.hub.download_url_to_file``: it has no timeout or retries, and the CIFAR-10 archive is
checked by md5, torchvision's weights by a sha256 prefix; one helper serves both.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from .fileio import atomic_open
from .progress import Progress

__all__ = ["download_file", "file_digest"]

log = logging.getLogger("resnetlab")


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _Truncated(OSError):
    """The connection ended before Content-Length bytes arrived."""


def _permanent(e: BaseException) -> bool:
    """An HTTP answer that a retry will not change (404, 403, ...): not worth retrying."""
    return isinstance(e, urllib.error.HTTPError) and 400 <= e.code < 500 and e.code not in (408, 425, 429)


def _fetch(url: str, dest: Path, algorithm: str, expected: str, timeout: float, progress: bool) -> None:
    """One attempt: stream ``url`` into ``dest`` (atomically), checking its length and digest (prefix)."""
    h, got = hashlib.new(algorithm), 0
    with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_open(dest, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0)
        with Progress(total or None, f"downloading {url}", enabled=progress, unit="B") as bar:
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
                h.update(block)
                got += len(block)
                bar.update(len(block))
        if total and got != total:
            raise _Truncated(f"the connection ended after {got} of {total} bytes")
        if not h.hexdigest().startswith(expected):
            raise ValueError(f"{algorithm} mismatch for {url}: expected {expected}, got {h.hexdigest()}; the "
                             "download was deleted")


def download_file(url: str, dest: str | os.PathLike, *, expected: str, algorithm: str = "md5",
                  timeout: float = 60.0, retries: int = 3, backoff_s: float = 1.0, progress: bool = True) -> Path:
    """Fetch ``url`` to ``dest`` and check that its ``algorithm`` digest starts with ``expected``.

    Every connect and read waits at most ``timeout`` seconds; a failed attempt (timeout, dropped
    connection, HTTP 5xx) is retried up to ``retries`` times after ``backoff_s``, then twice that, and
    so on; the last failure is an OSError naming the URL. A wrong digest raises ValueError and leaves
    nothing behind. Callers that share a destination hold a lock around this (see data/lock).
    """
    if retries < 0 or timeout <= 0:
        raise ValueError(f"need retries >= 0 and timeout > 0, got retries={retries!r} timeout={timeout!r}")
    dest = Path(dest)
    for attempt in range(retries + 1):
        try:
            _fetch(url, dest, algorithm, expected, timeout, progress)
            break
        except (OSError, http.client.HTTPException) as e:
            if _permanent(e) or attempt == retries:
                raise OSError(f"cannot download {url} ({type(e).__name__}: {e}; {attempt + 1} attempt(s))") from e
            wait = backoff_s * 2**attempt
            log.warning("downloading %s failed (%s: %s); retry %d of %d in %.3g s",
                        url, type(e).__name__, e, attempt + 1, retries, wait)
            time.sleep(wait)
    log.info("downloaded %s to %s", url, dest)
    return dest
