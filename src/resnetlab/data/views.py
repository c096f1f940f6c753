"""Augmented views for self-supervised pretraining: one definition per method, applied to a whole batch.

Each method's views follow its paper: SimCLR (Chen et al. 2020, appendix A: random resized crop, flip,
colour jitter 0.8 x (0.4, 0.4, 0.4, 0.1) with p = 0.8, grayscale p = 0.2, Gaussian blur p = 0.5); MoCo v2
(Chen, Fan, Girshick & He 2020: SimCLR's augmentations); BYOL (Grill et al. 2020, table 6: jitter (0.4, 0.4,
0.2, 0.1), asymmetric blur 1.0 / 0.1 and solarization 0 / 0.2); SimSiam (Chen & He 2021: MoCo v2's, crops
from 20 % of the image on CIFAR). Below 64 px the blur is left out, as lightly's CIFAR-10 benchmarks do
(a 3-pixel kernel on a 32-pixel image only smears it).

The ops are kornia's (batched, per-image parameters, on the batch's device); randomness comes from a seed
per (run seed, epoch, step, view), so a resumed run draws exactly the views the killed one would have.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import torch

__all__ = ["ViewRecipe", "METHOD_VIEWS", "method_views", "make_views", "view_seed"]


@dataclass(frozen=True)
class ViewRecipe:
    """One view's augmentations (probabilities in [0, 1])."""

    crop_scale: tuple[float, float] = (0.08, 1.0)  # random resized crop: area fraction of the image
    flip: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.5  # Gaussian blur, sigma in [0.1, 2.0], kernel ~10 % of the image side
    solarize_p: float = 0.0


_SIMCLR = ViewRecipe()
METHOD_VIEWS: dict[str, tuple[ViewRecipe, ViewRecipe]] = {
    "simclr": (_SIMCLR, _SIMCLR),
    "mocov2": (_SIMCLR, _SIMCLR),
    "byol": (replace(_SIMCLR, jitter=(0.4, 0.4, 0.2, 0.1), blur_p=1.0),
             replace(_SIMCLR, jitter=(0.4, 0.4, 0.2, 0.1), blur_p=0.1, solarize_p=0.2)),
    "simsiam": (replace(_SIMCLR, crop_scale=(0.2, 1.0)), replace(_SIMCLR, crop_scale=(0.2, 1.0))),
}
BLUR_MIN_SIZE = 64  # below this image side no blur (lightly's CIFAR-10 settings)


def method_views(method: str, size: int) -> tuple[ViewRecipe, ViewRecipe]:
    """The two view recipes of ``method`` for ``size``-pixel crops."""
    if method not in METHOD_VIEWS:
        raise ValueError(f"method must be one of {', '.join(METHOD_VIEWS)}, got {method!r}")
    views = METHOD_VIEWS[method]
    return tuple(replace(v, blur_p=0.0) for v in views) if size < BLUR_MIN_SIZE else views  # type: ignore[return-value]


def view_seed(seed: int, epoch: int, step: int, view: int, rank: int = 0) -> int:
    """A 63-bit seed for one view of one step on one process: the same on resume, different for every step,
    view and process (each process draws the views of its own slice of the batch)."""
    h = ((seed * 1_000_003 + epoch) * 1_000_033 + step) * 65_537 + rank
    return (h * 4 + view) % (2**63 - 1)


@lru_cache(maxsize=16)
def _pipeline(recipe: ViewRecipe, size: int, channels: int):
    import kornia.augmentation as K

    ops = [K.RandomResizedCrop((size, size), scale=recipe.crop_scale), K.RandomHorizontalFlip(p=recipe.flip)]
    b, c, s, h = recipe.jitter
    if channels == 3:
        ops += [K.ColorJitter(b, c, s, h, p=recipe.jitter_p), K.RandomGrayscale(p=recipe.gray_p)]
    else:  # one channel: brightness and contrast only (saturation, hue and grayscale have no meaning)
        ops += [K.ColorJitter(b, c, 0.0, 0.0, p=recipe.jitter_p)]
    if recipe.blur_p > 0:
        k = max(3, (size // 10) | 1)
        ops.append(K.RandomGaussianBlur((k, k), (0.1, 2.0), p=recipe.blur_p))
    if recipe.solarize_p > 0:
        ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=recipe.solarize_p))  # threshold 0.5
    return K.AugmentationSequential(*ops)


def make_views(x: torch.Tensor, recipe: ViewRecipe, size: int, seed: int) -> torch.Tensor:
    """One augmented view of every image of ``x`` ((N, C, H, W) floats in [0, 1], C = 1 or 3), seeded.

    Returns (N, C, size, size) in [0, 1]; normalisation is the caller's (the model's preprocessing)."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"views take a (N, 1 or 3, H, W) batch, got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < size:
        raise ValueError(f"images of {x.shape[-2]}x{x.shape[-1]} px are smaller than the {size} px crop: "
                         f"give a crop size of at most {min(x.shape[-2:])} (--image-size)")
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return _pipeline(recipe, size, x.shape[1])(x).clamp_(0, 1)
