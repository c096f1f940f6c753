"""Where and how a run executes: device, precision, logging, and the model behind DDP / torch.compile."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..utils.hardware import resolve_amp
from .config import TrainConfig

__all__ = ["pick_device", "resolve_precision", "setup_logging", "unwrap", "autocast", "log_row"]

log = logging.getLogger("resnetlab")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def setup_logging(run_dir: Path | None, is_main: bool) -> None:
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    for h in list(log.handlers):
        if getattr(h, "_resnetlab", False):
            log.removeHandler(h)
            h.close()
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if run_dir is not None and is_main:
        handlers.append(logging.FileHandler(run_dir / "train.log"))
    for h in handlers:
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        h._resnetlab = True  # type: ignore[attr-defined]
        log.addHandler(h)
    log.propagate = False


def unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def resolve_precision(cfg: TrainConfig, device: torch.device, recorded: dict[str, Any] | None = None
                      ) -> tuple[str, bool]:
    """(amp, channels_last) a run uses: amp="auto" per the hardware (a resumed run keeps what its checkpoint
    recorded), channels_last=None on iff amp is not "off" (every registry model is convolutional)."""
    if cfg.amp == "auto" and recorded and recorded.get("amp"):
        amp = str(recorded["amp"])
    else:
        amp = resolve_amp(cfg.amp, device)
    if cfg.channels_last is not None:
        return amp, bool(cfg.channels_last)
    if recorded and "channels_last" in recorded:
        return amp, bool(recorded["channels_last"])
    return amp, amp != "off"


def autocast(device: torch.device, amp: str):
    """The autocast context of ``amp`` ("off": FP32, "bf16", "fp16") on ``device``."""
    if amp == "off":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def log_row(row: dict[str, Any]) -> None:
    pct = lambda k: f"{100 * row[k]:.2f}%" if row.get(k) is not None else "-"  # noqa: E731
    if "val_loss" in row:
        auc = "-" if row.get("val_auc") is None else f"{row['val_auc']:.4f}"
        val = (f"val loss {row['val_loss']:.4f} top1 {pct('val_top1')} top5 {pct('val_top5')} "
               f"bal-acc {pct('val_balanced_accuracy')} auc {auc}")
    elif any(k in row for k in ("val_map", "val_miou", "val_knn_top1")):  # a plug-in task's scores
        val = "val " + " ".join(f"{k[4:]} {v:.4f}" for k, v in row.items() if k.startswith("val_"))
    else:
        val = "no validation this epoch"
    log.info("epoch %d: train loss %.4f acc %s | %s | lr %.4g | %.0f img/s | %.0f s", row["epoch"],
             row["train_loss"], pct("train_acc"), val, row["lr"], row["img_per_s"], row["wall_time_s"])
