"""Checkpoints that are never half-written, never hold non-finite weights, and load without unpickling.

A checkpoint holds model, optimizer, scheduler, scaler, EMA, every RNG state and the position
in the epoch, as tensors and plain Python values only, so ``torch.load(weights_only=True)``
reads it. Writes go to a temp file in the same folder, are fsync'ed, then renamed over the
old file: a run killed at any instant leaves the previous checkpoint intact. A state whose
weights hold NaN or inf is refused, so the last checkpoint on disk is always a usable one.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..eval.loading import FORMAT, read_checkpoint
from ..utils.fileio import atomic_path

__all__ = ["FORMAT", "TrainingDiverged", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state",
           "non_finite", "update_checkpoint"]


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN/inf (or AMP skipped too many steps); the last good checkpoint is kept."""


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


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or inf (one device sync for all of them)."""
    names = [k for k, v in tensors.items() if torch.is_tensor(v) and v.is_floating_point()]
    if not names:
        return []
    ok = torch.stack([torch.isfinite(tensors[k]).all() for k in names]).tolist()
    return [k for k, good in zip(names, ok) if not good]


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` atomically (temp file, fsync, rename, fsync of the folder).

    Refuses (TrainingDiverged, nothing written) a state whose ``model`` or ``ema`` weights are not finite.
    """
    for part in ("model", "ema"):
        bad = non_finite(state.get(part) or {})
        if bad:
            raise TrainingDiverged(f"refusing to write {path}: the {part} weights {', '.join(bad[:5])} hold NaN or "
                                   f"inf; the previous checkpoint is kept")
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return Path(path)


def update_checkpoint(path: str | os.PathLike, **fields: Any) -> Path:
    """Rewrite the checkpoint at ``path`` with ``fields`` added (atomically, as any save)."""
    state = read_checkpoint(path)
    state.pop("format", None)
    return save_checkpoint({**state, **fields}, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a resnetlab checkpoint with ``weights_only=True`` (a run directory: its last.pt)."""
    return read_checkpoint(path)
