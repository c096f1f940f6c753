"""Knowledge distillation inside the one training loop (Hinton et al. 2015, arXiv:1503.02531).

The student's loss is ``(1 - alpha) * task loss + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))``;
the T^2 keeps the soft term's gradients on the scale of the hard one's as T changes (the paper's §2). The
teacher is a resnetlab checkpoint, frozen in eval mode, run on the same (augmented, mixed) batch in the same
autocast as the student — bf16 where the student trains in bf16. A resumed run checks that the teacher file
is the one it started with, so a resume cannot silently change what it learns from.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..eval.loading import checkpoint_path, load_trained
from ..utils.download import file_digest

__all__ = ["Distiller", "kd_loss"]

log = logging.getLogger("resnetlab")


def kd_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """T^2-scaled KL divergence between the softened distributions, averaged over the batch."""
    t = float(temperature)
    return F.kl_div(F.log_softmax(student.float() / t, 1), F.log_softmax(teacher.float() / t, 1),
                    reduction="batchmean", log_target=True) * (t * t)


class Distiller:
    """A frozen teacher and the mixing rule; ``loss(task_loss, student_logits, x)`` is what the engine calls."""

    def __init__(self, source: str | os.PathLike, *, alpha: float, temperature: float, classes: list[str],
                 in_chans: int, device: torch.device, channels_last: bool = False,
                 expect_sha256: str | None = None) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"distill_alpha must be in [0, 1], got {alpha!r}")
        if not temperature > 0:
            raise ValueError(f"distill_temperature must be > 0, got {temperature!r}")
        path = checkpoint_path(source)
        digest = file_digest(path)
        if expect_sha256 and digest != expect_sha256:
            raise ValueError(f"distill_from {path} is not the teacher this run started with (sha256 {digest[:12]} "
                             f"now, {expect_sha256[:12]} then); resume with the same file or start a new run")
        trained = load_trained(path, device=device)
        if list(trained.classes) != list(classes):
            raise ValueError(f"distill_from {path}: the teacher was trained for classes {trained.classes}, the data "
                             f"has {list(classes)}; a teacher must predict the student's classes, in the same order")
        if trained.task == "multilabel":
            raise ValueError(f"distill_from {path}: a multi-label teacher (independent sigmoids) has no softmax to "
                             "distil; distillation takes multiclass and binary runs")
        if trained.in_chans != in_chans:
            raise ValueError(f"distill_from {path}: the teacher takes {trained.in_chans} input channel(s), the "
                             f"student's data has {in_chans}")
        self.teacher: nn.Module = trained.model.eval().requires_grad_(False)
        if channels_last:
            self.teacher = self.teacher.to(memory_format=torch.channels_last)
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.record: dict[str, Any] = {"file": str(path), "sha256": digest, "model": trained.name,
                                       "alpha": self.alpha, "temperature": self.temperature}
        log.info("distilling from %s (%s, alpha %.2f, T %.1f)", path, trained.name, self.alpha, self.temperature)

    def loss(self, task_loss: Tensor, student_logits: Tensor, x: Tensor) -> Tensor:
        """Called inside the engine's autocast, so the teacher runs in the student's precision."""
        if self.alpha == 0.0:
            return task_loss
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        return (1.0 - self.alpha) * task_loss + self.alpha * kd_loss(student_logits, teacher_logits,
                                                                     self.temperature)
