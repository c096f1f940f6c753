"""Optimizers, per-step learning-rate schedules and an EMA of weights.

Schedules are functions of the optimizer step (not the epoch), so a run resumed in the middle
of an epoch continues on exactly the same curve.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Mapping

import torch
import torch.nn as nn

from .config import TrainConfig

__all__ = ["param_groups", "build_optimizer", "lr_factor", "build_scheduler", "ModelEma"]


def param_groups(model: nn.Module, weight_decay: float, no_wd_norm_bias: bool,
                 lr_scales: Mapping[str, float] | None = None) -> list[dict]:
    """Decayed weights, and norm weights / biases without decay (Goyal et al. 2017); with ``lr_scales``
    (parameter name -> multiplier: fine-tuning's slower backbone, layer decay) one such pair per multiplier,
    each group carrying its ``lr_scale``. Every parameter is in a group, frozen ones too (they may thaw)."""
    buckets: dict[float, tuple[list, list]] = {}
    for name, p in model.named_parameters():
        decay, no_decay = buckets.setdefault(1.0 if lr_scales is None else float(lr_scales[name]), ([], []))
        (no_decay if no_wd_norm_bias and p.ndim <= 1 else decay).append(p)  # BN/LN weights and biases are 1-D
    groups = []
    for scale, (decay, no_decay) in buckets.items():
        extra = {} if lr_scales is None else {"lr_scale": scale}
        pair = [{"params": decay, "weight_decay": weight_decay, **extra}]
        if no_wd_norm_bias:
            pair.append({"params": no_decay, "weight_decay": 0.0, **extra})
        groups += [g for g in pair if g["params"] or lr_scales is None]
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig, lr_scales: Mapping[str, float] | None = None
                    ) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.no_wd_norm_bias, lr_scales)
    for g in groups:
        g["lr"] = cfg.lr * g.get("lr_scale", 1.0)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of ``cfg.lr`` at optimizer step ``t`` (0-based), warm-up included."""
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.epochs * steps_per_epoch)
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.schedule == "onecycle" and warm == 0:  # one-cycle (Smith & Topin 2017): up over the first 25 %
        warm = max(int(0.25 * total), 1)
    unit = steps_per_epoch if cfg.milestone_unit == "epoch" else 1
    milestones = sorted(int(round(m * unit)) for m in cfg.milestones)
    floor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0

    def decay(t: int) -> float:
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "step":
            return cfg.gamma ** (t // max(int(round(cfg.step_size * unit)), 1))
        if cfg.schedule == "multistep":
            return cfg.gamma ** sum(t >= m for m in milestones)
        span = max(total - warm, 1)
        progress = min(max(t - warm, 0) / span, 1.0)
        if cfg.schedule == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0 - progress * (1.0 - floor)  # one-cycle: linear down to the floor after the rise

    def factor(t: int) -> float:
        if t < warm:
            return (t + 1) / warm
        return decay(t)

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch))


class ModelEma(nn.Module):
    """Exponential moving average of weights (buffers copied), evaluated beside the model.

    ``decay`` is warmed up as min(decay, (1 + n) / (10 + n)) so early averages are not stuck
    at the random initialisation (as in TensorFlow's ExponentialMovingAverage).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        n = float(self.updates)
        d = min(self.decay, (1 + n) / (10 + n))
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.lerp_(m.detach(), 1.0 - d)
            else:
                e.copy_(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)
