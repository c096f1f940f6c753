"""One job at a time per piece of data preparation (unpack, download, array cache) in a shared cache.

Separate jobs sharing a cache folder, and the ranks of one DDP job, may all ask for the same
archive to be unpacked or downloaded at once. :func:`data_lock` takes an exclusive ``flock`` on
``<folder>/.locks/<name>.lock``: the first caller does the work, the others wait and then find it
done. ``flock`` locks belong to the open file, so they also exclude threads of one process, and
the kernel drops them when a process dies: a killed job never leaves a stale lock behind. Lock
files are never deleted (deleting one while another process waits on it would let a third in).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; jobs there must not share a cache
    fcntl = None  # type: ignore[assignment]

__all__ = ["data_lock", "LOCK_DIR"]

log = logging.getLogger("resnetlab")
LOCK_DIR = ".locks"


def _lock_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "data"


@contextlib.contextmanager
def data_lock(folder: str | os.PathLike, name: str) -> Iterator[Path]:
    """Hold the exclusive lock ``name`` of ``folder`` for the block; yields the lock file's path.

    A caller that has to wait says so once in the log (which job it waits for is not knowable).
    """
    locks = Path(folder) / LOCK_DIR
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / f"{_lock_name(name)}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another job preparing %s (lock %s)", name, path)
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)  # releases the flock
