"""Checkpoints that are never half-written and always load without unpickling.

A checkpoint holds model, optimizer, scheduler, scaler, EMA, every RNG state and the position
in the epoch, as tensors and plain Python values only, so ``torch.load(weights_only=True)``
reads it. Writes go to a temp file in the same folder, are fsync'ed, then renamed over the
old file: a run killed at any instant leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

FORMAT = "resnetlab.checkpoint/1"


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may touch: torch (CPU and CUDA), numpy, Python."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` atomically: temp file, fsync, rename (and fsync the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a resnetlab checkpoint with ``weights_only=True``; refuse anything else clearly."""
    path = Path(path)
    if path.is_dir():  # a run directory: its last checkpoint
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for foreign objects, RuntimeError for corrupt files
        raise ValueError(f"{path}: not a loadable resnetlab checkpoint ({str(e).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not a resnetlab checkpoint (format {found!r}, expected {FORMAT!r})")
    return state
