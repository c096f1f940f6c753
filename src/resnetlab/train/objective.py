"""The training loss for imbalanced data: class weights, focal loss and logit adjustment.

- class weights ``auto``: inverse frequency n / (C n_c), scikit-learn's "balanced"; ``effective``: the
  effective number of samples (1 - beta) / (1 - beta^n_c), beta = 0.999 (Cui et al. 2019, "Class-
  Balanced Loss Based on Effective Number of Samples"); both scaled to mean 1 so the learning rate
  keeps its meaning; or one weight per class, ``w1,w2,...``.
- focal loss: (1 - p_t)^gamma times the cross-entropy (Lin et al. 2017, "Focal Loss for Dense Object
  Detection"), class weights acting as its alpha.
- logit adjustment: tau * log(prior) added to the logits inside the loss only (Menon et al. 2021,
  "Long-tail learning via logit adjustment", eq. 10), so the trained model's plain argmax is already
  corrected for the training priors and nothing changes at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import parse_class_weights

__all__ = ["class_weights", "Objective", "EFFECTIVE_BETA"]

EFFECTIVE_BETA = 0.999


def class_weights(spec: str, counts: Sequence[int], classes: Sequence[str] | None = None, *,
                  multilabel_total: int | None = None) -> Tensor | None:
    """Per-class loss weights (float32, mean 1) from ``spec`` and the training split's class counts.

    Multi-label (``multilabel_total``: the number of training images, ``counts``: positives per label):
    BCE's positive weight per label, ``auto`` = negatives / positives (not rescaled: it balances each label's
    own two sides), or the numbers given.
    """
    parsed = parse_class_weights(spec)
    counts = np.asarray(counts, dtype=np.float64)
    names = list(classes) if classes is not None else [str(i) for i in range(len(counts))]
    if parsed == "none":
        return None
    if isinstance(parsed, tuple) and len(parsed) != len(counts):
        raise ValueError(f"class_weights gives {len(parsed)} weights but the data has {len(counts)} "
                         f"{'labels' if multilabel_total else 'classes'} ({', '.join(names)})")
    empty = [n for n, k in zip(names, counts) if k == 0]
    if empty and not isinstance(parsed, tuple):
        raise ValueError(f"class_weights {parsed!r} needs every class in the training split; no images of "
                         f"{', '.join(empty)}")
    if multilabel_total is not None:
        if parsed == "effective":
            raise ValueError("class_weights 'effective' is for single-label tasks; a multi-label task takes 'auto' "
                             "(negatives / positives per label) or one positive weight per label")
        w = np.asarray(parsed) if isinstance(parsed, tuple) else (multilabel_total - counts) / counts
        return torch.tensor(w, dtype=torch.float32)
    if isinstance(parsed, tuple):
        w = np.asarray(parsed)
    else:
        w = counts.sum() / (len(counts) * counts) if parsed == "auto" else \
            (1 - EFFECTIVE_BETA) / (1 - EFFECTIVE_BETA ** counts)
    return torch.tensor(w / w.mean(), dtype=torch.float32)


class Objective:
    """``loss(logits, target, label_smoothing)`` with optional class weights, focal gamma and logit adjustment.

    ``target`` is class indices, or class probabilities (mixup / CutMix); focal loss needs indices.
    """

    def __init__(self, *, weight: Tensor | None = None, focal_gamma: float = 0.0, logit_adjust: float = 0.0,
                 priors: Sequence[float] | None = None, multilabel: bool = False) -> None:
        if focal_gamma < 0 or logit_adjust < 0:
            raise ValueError(f"focal_gamma and logit_adjust must be >= 0, got {focal_gamma!r} and {logit_adjust!r}")
        self.weight, self.focal_gamma, self.multilabel = weight, focal_gamma, multilabel
        self.offset = None
        if logit_adjust > 0:
            p = np.asarray(priors if priors is not None else [], dtype=np.float64)
            if p.size == 0 or (p <= 0).any():
                raise ValueError("logit_adjust needs every class's training prior > 0 (a class without training "
                                 f"images cannot be adjusted for), got priors {p.tolist()}")
            self.offset = torch.tensor(logit_adjust * np.log(p / p.sum()), dtype=torch.float32)

    def to(self, device: torch.device | str) -> "Objective":
        if self.weight is not None:
            self.weight = self.weight.to(device)
        if self.offset is not None:
            self.offset = self.offset.to(device)
        return self

    def __call__(self, logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
        if self.multilabel:  # one sigmoid per label; weight: each label's positive weight (BCE's pos_weight)
            soft = target * (1 - label_smoothing) + 0.5 * label_smoothing
            return F.binary_cross_entropy_with_logits(logits, soft, pos_weight=self.weight)
        if self.offset is not None:
            logits = logits + self.offset
        if self.focal_gamma == 0:
            return F.cross_entropy(logits, target, weight=self.weight, label_smoothing=label_smoothing)
        if target.is_floating_point():
            raise ValueError("focal loss takes class indices; it does not combine with mixup or CutMix")
        logp = F.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
        loss = -((1 - logp.exp()) ** self.focal_gamma) * logp
        if self.weight is None:
            return loss.mean()
        w = self.weight[target]
        return (w * loss).sum() / w.sum()  # weighted mean, as F.cross_entropy with weight
