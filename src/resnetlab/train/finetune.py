"""Fine-tuning policies: which parameters train, at which learning rate, with batch-norm statistics frozen
or not (Kornblith et al. 2019, "Do Better ImageNet Models Transfer Better?"; Howard & Ruder 2018 for
gradual unfreezing; Clark et al. 2020 / Bao et al. 2022 for layer-wise learning-rate decay).

- ``full``: every parameter trains; the backbone at ``backbone_lr_scale`` x the learning rate.
- ``linear``: a linear probe; only the classifier trains, the backbone's weights and its batch-norm
  statistics stay exactly as loaded.
- ``gradual``: the classifier alone for ``finetune_epochs`` epochs, then the whole net, the backbone at
  ``backbone_lr_scale`` x the learning rate.

``layer_decay`` d scales the learning rate of the k-th stage below the classifier by d^k (the last stage
by d, the stem by d^5 on a ResNet); stages are the model's ``feature_info`` stages of its ``trunk()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..eval.loading import checkpoint_path, read_checkpoint
from ..models.pretrained import TORCHVISION, resolve_pretrained
from .config import TrainConfig

__all__ = ["FINETUNE", "parameter_depths", "FinetunePolicy", "starting_weights", "remake_head"]

FINETUNE = ("full", "linear", "gradual")


def parameter_depths(model: nn.Module) -> dict[str, int]:
    """Per parameter: 0 for the classifier, 1 for the last trunk stage, ..., n for the first (the stem)."""
    head = getattr(model, "classifier_name", None)
    if head is None or not hasattr(model, "trunk") or not getattr(model, "feature_info", None):
        raise ValueError(f"{type(model).__name__} does not expose classifier_name, trunk() and feature_info, so "
                         "its backbone and head cannot be told apart for fine-tuning")
    ends = [f.module for f in model.feature_info]
    stage, stage_of = 0, {}
    for name, _ in model.trunk():
        stage_of[name] = min(stage, len(ends) - 1)
        if stage < len(ends) and name == ends[stage]:
            stage += 1
    by_length = sorted(stage_of, key=len, reverse=True)  # "features.3" before "features" (VGG, DenseNet)
    depths = {}
    for name, _ in model.named_parameters():
        if name.startswith(head + "."):
            depths[name] = 0
            continue
        owner = next((t for t in by_length if name.startswith(t + ".")), None)
        # a trunk module, or something past it (a final norm): with the last stage
        depths[name] = len(ends) - stage_of.get(owner, len(ends) - 1)
    return depths


@dataclass(frozen=True)
class FinetunePolicy:
    """What trains when, and how fast; see the module docstring."""

    mode: str = "full"
    head_epochs: int = 0  # gradual: epochs with the backbone frozen
    backbone_lr_scale: float = 1.0
    layer_decay: float = 1.0
    freeze_bn: bool = False

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> "FinetunePolicy":
        return cls(cfg.finetune, cfg.finetune_epochs, cfg.backbone_lr_scale, cfg.layer_decay, cfg.freeze_bn)

    @property
    def trivial(self) -> bool:
        """Plain training: every parameter at the one learning rate, batch norm as usual."""
        return self.mode == "full" and self.backbone_lr_scale == 1.0 and self.layer_decay == 1.0 \
            and not self.freeze_bn

    def lr_scales(self, model: nn.Module) -> dict[str, float]:
        """Learning-rate multiplier per parameter name."""
        return {name: 1.0 if k == 0 else self.backbone_lr_scale * self.layer_decay ** k
                for name, k in parameter_depths(model).items()}

    def backbone_frozen(self, epoch: int) -> bool:
        return self.mode == "linear" or (self.mode == "gradual" and epoch < self.head_epochs)

    def apply(self, model: nn.Module, epoch: int) -> None:
        """Set ``requires_grad`` and batch-norm modes for ``epoch``; call it after ``model.train()``."""
        if self.trivial:
            return
        frozen = self.backbone_frozen(epoch)
        for name, p in model.named_parameters():
            if not name.startswith(model.classifier_name + "."):
                p.requires_grad_(not frozen)
        if frozen or self.freeze_bn:  # frozen statistics: the normalisation the weights were trained with
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()


def starting_weights(cfg: TrainConfig) -> tuple[Path | None, dict[str, Any] | None]:
    """The weights file a run starts from (``pretrained``, or its old name ``weights``) and the record of it
    that checkpoints keep; (None, None) for a random initialisation. A run directory means its best.pt."""
    spec = cfg.pretrained or cfg.weights
    if spec is None:
        return None, None
    if spec != TORCHVISION and Path(spec).expanduser().is_dir():
        spec = str(checkpoint_path(Path(spec).expanduser()))
    path, record = resolve_pretrained(spec, cfg.model)
    if path.suffix == ".pt":  # a resnetlab checkpoint knows the classes its head was trained for
        try:
            ck = read_checkpoint(path)
            if ck.get("ssl"):  # a self-supervised backbone: no head, and where it came from
                record["ssl"] = {**ck["ssl"], "epochs": ck.get("epoch"), "data": (ck.get("config") or {}).get("data")}
            else:
                record["classes"] = list(ck["classes"])
        except (ValueError, KeyError):
            pass  # a plain state dict
    return path, record


def remake_head(model: nn.Module, record: dict[str, Any] | None, classes: list[str]) -> bool:
    """Re-initialise the classifier when the weights' head was trained for other classes than the data's
    (a head of the same shape for other classes would be a wrong start, not a pretrained one)."""
    trained_for = (record or {}).get("classes")
    if trained_for is None or list(trained_for) == list(classes):
        return False
    model.reset_classifier(len(classes))
    return True
