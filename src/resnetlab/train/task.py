"""The interface a task other than classification plugs into the one training loop with.

:class:`resnetlab.train.engine.Trainer` keeps the loop — steps, checkpoints, exact resume, progress,
TensorBoard, DDP, bad files — and asks a :class:`TaskPlugin` for what differs: data and batches, the model,
the loss of a step (and anything to do after the optimizer's step), the validation scores, and what a
checkpoint stores. Detection / segmentation (:mod:`.dense`) and self-supervised pretraining (:mod:`.ssl`)
are plug-ins; classification is the engine's own.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

__all__ = ["TaskPlugin", "Step", "CLASSIFY_ONLY", "refuse_classification_settings"]

# settings of classification that mean nothing to boxes, pixel maps or self-supervised views, at their "off" values
CLASSIFY_ONLY = {"mixup": 0.0, "cutmix": 0.0, "label_smoothing": 0.0, "class_weights": "none", "focal_gamma": 0.0,
                 "logit_adjust": 0.0, "distill_from": None, "qat": False, "ema_decay": 0.0, "sampler": "shuffle",
                 "finetune": "full", "shuffle_labels": False, "auto_augment": None, "cutout": 0}


def refuse_classification_settings(cfg: Any, what: str, extra: dict[str, Any] | None = None) -> None:
    """A classification setting given to another task is an error naming it (refused, never ignored)."""
    for key, off in {**CLASSIFY_ONLY, **(extra or {})}.items():
        if getattr(cfg, key) != off:
            raise ValueError(f"{key}={getattr(cfg, key)!r} is a classification setting; {what} trains without it "
                             f"(leave it at {off!r})")


class Step:
    """Where a step is: its epoch, batch, global step (counted from 1) and the run's total steps."""

    __slots__ = ("epoch", "batch", "step", "total")

    def __init__(self, epoch: int, batch: int, step: int, total: int) -> None:
        self.epoch, self.batch, self.step, self.total = epoch, batch, step, total

    @property
    def progress(self) -> float:
        """Fraction of the run's steps done after this one, in [0, 1]."""
        return min(1.0, self.step / max(self.total, 1))


class TaskPlugin:
    """Defaults for a task plug-in; a subclass sets ``kind``, ``select`` and ``scores`` and implements
    ``build_data``, ``batches``, ``build_model``, ``loss``, ``evaluate`` and ``row``."""

    kind: str = ""  # the run's task, as checkpoints record it
    select: str = ""  # the validation score that selects best.pt
    scores: tuple[str, ...] = ()  # the scores the summary reports as val_ / best_val_ / test_
    channels_last: bool = False  # whether the model takes channels_last batches

    def loss(self, net: nn.Module, x: Any, y: Any, device: torch.device, where: Step) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, model: nn.Module, where: Step) -> None:
        """Called after each optimizer step (a momentum encoder's update); default: nothing."""

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The state dict checkpoints keep as "model" (what eval, predict and fine-tuning load)."""
        return model.state_dict()

    def load_model_state(self, model: nn.Module, ck: dict[str, Any]) -> None:
        """Put a checkpoint's weights back into the engine's model (resume, and best.pt for the test pass)."""
        model.load_state_dict(ck["model"])

    def record(self, model: nn.Module) -> dict[str, Any]:
        """Extra checkpoint fields (e.g. a self-supervised run's heads and provenance); default none."""
        return {}
