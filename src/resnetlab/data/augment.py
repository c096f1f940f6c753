"""Augmentation: batched tensor ops for in-memory data, torchvision pipelines for streamed images.

:class:`BatchAugment` turns a uint8 NHWC batch straight from an :class:`ArrayDataset` into a
normalised float NCHW batch, drawing per-sample crops, flips and cutout squares for the whole
batch at once, so the step needs no DataLoader workers. All its randomness comes from the
``torch.Generator`` it is given: the same generator state gives the same batch, which is what an
exactly resumable run needs. Streamed images get the same crop padding and cutout from
:func:`folder_transform` (one :func:`cutout` serves both paths).

mixup/CutMix (:func:`mix_batch`) stay ours: torchvision's v2.MixUp/CutMix draw from the global RNG,
ours from the per-batch generator, so a resumed run mixes exactly like an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

__all__ = ["MEAN_STD", "BatchAugment", "mix_batch", "folder_transform", "cutout", "Cutout"]

MEAN_STD = {
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
AUTO_AUGMENT = (None, "trivial", "randaugment")


def _channel_stats(mean: Sequence[float], std: Sequence[float], in_chans: int) -> tuple[list, list]:
    """mean/std per channel; 3 values for 1-channel images are averaged (RGB stats on gray data)."""
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    if len(mean) != len(std) or len(mean) not in (1, 3, in_chans):
        raise ValueError(f"mean and std need 1 or {in_chans} values each, got mean={mean!r} std={std!r}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, got {std!r}")
    if len(mean) != in_chans:
        mean = [sum(mean) / len(mean)] * in_chans
        std = [sum(std) / len(std)] * in_chans
    return mean, std


def _auto_augment_op(name: str | None):
    if name not in AUTO_AUGMENT:
        raise ValueError(f"auto_augment must be one of {AUTO_AUGMENT}, got {name!r}")
    if name is None:
        return None
    from torchvision.transforms import v2

    return v2.TrivialAugmentWide() if name == "trivial" else v2.RandAugment()


def _randint(high: int, n: int, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else "cpu"
    return torch.randint(0, high, (n,), generator=generator, device=device)


def _rand(n: int, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else "cpu"
    return torch.rand(n, generator=generator, device=device)


class BatchAugment:
    """uint8 NHWC batch -> normalised float NCHW batch, augmented per sample with whole-batch tensor ops.

    Training: ``auto_augment`` ("trivial" / "randaugment": torchvision's TrivialAugmentWide /
    RandAugment, run image by image in a Python loop, the one per-sample loop here), then a
    random crop after ``crop_pad`` zero padding, a horizontal flip with probability 1/2, and
    ``cutout`` (a square of that side zeroed after normalisation, DeVries & Taylor 2017).
    Evaluation: only normalisation. Either way ``image_size`` (if set and different) resizes
    last (bilinear, antialiased), e.g. CIFAR to 224 for ImageNet-style networks.
    ``generator=None`` draws from the global RNG (not reproducible on resume).
    """

    def __init__(
        self,
        *,
        train: bool,
        mean: Sequence[float],
        std: Sequence[float],
        crop_pad: int = 4,
        flip: bool = True,
        cutout: int = 0,
        auto_augment: str | None = None,
        image_size: int | None = None,
    ) -> None:
        if crop_pad < 0 or cutout < 0:
            raise ValueError(f"crop_pad and cutout must be >= 0, got crop_pad={crop_pad!r} cutout={cutout!r}")
        if image_size is not None and image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels or None, got {image_size!r}")
        _channel_stats(mean, std, 3)  # validates: 1 or 3 values each
        self.train, self.mean, self.std = train, tuple(mean), tuple(std)
        self.crop_pad, self.flip, self.cutout, self.image_size = crop_pad, flip, cutout, image_size
        self.auto_augment = auto_augment
        self._aa = _auto_augment_op(auto_augment)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"BatchAugment expects a uint8 tensor (N, H, W, C), got {got}")
        n, _, _, c = images.shape
        x = images.permute(0, 3, 1, 2)
        if self.train and n:
            if self._aa is not None:
                x = self._auto_augment(x, generator)
            if self.crop_pad:
                x = self._crop(x, generator)
            if self.flip:
                flip = (_rand(n, generator) < 0.5).to(x.device)
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        mean, std = _channel_stats(self.mean, self.std, c)
        x = x.to(torch.float32).div_(255)
        mean_t = torch.tensor(mean, device=x.device)[:, None, None]
        x = (x - mean_t).div_(torch.tensor(std, device=x.device)[:, None, None])
        if self.train and self.cutout and n:
            x = self._cutout(x, generator)
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
        return x.contiguous()

    def _auto_augment(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        seed = int(_randint(2**62, 1, generator).item())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack([self._aa(img) for img in x])

    def _crop(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Pad, then take every sample's crop at its own offset with one indexing op."""
        n, c, h, w = x.shape
        p = self.crop_pad
        padded = F.pad(x, (p, p, p, p))
        oy = _randint(2 * p + 1, n, generator).to(x.device)
        ox = _randint(2 * p + 1, n, generator).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chans = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[batch, chans, rows, cols]

    def _cutout(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        n, _, h, w = x.shape
        centres = _randint(h, n, generator).to(x.device), _randint(w, n, generator).to(x.device)
        return cutout(x, *centres, self.cutout)


def cutout(x: Tensor, cy: Tensor, cx: Tensor, size: int) -> Tensor:
    """Zero a ``size`` square centred at (cy[i], cx[i]) of each image of the (N, C, H, W) batch ``x``,
    clipped at the border (DeVries & Taylor 2017). The one definition both data paths use."""
    _, _, h, w = x.shape
    cy, cx = cy[:, None] - size // 2, cx[:, None] - size // 2
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    my = (ys >= cy) & (ys < cy + size)
    mx = (xs >= cx) & (xs < cx + size)
    return x.masked_fill((my[:, :, None] & mx[:, None, :])[:, None], 0.0)


class Cutout:
    """Cutout for one normalised (C, H, W) image of a streamed data set, drawn from torch's global RNG
    (which the streamed batches seed per image, so it is reproducible on resume)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"cutout size must be >= 1, got {size!r}")
        self.size = size

    def __call__(self, img: Tensor) -> Tensor:
        h, w = img.shape[-2:]
        cy, cx = torch.randint(0, h, (1,)), torch.randint(0, w, (1,))
        return cutout(img[None], cy, cx, self.size)[0]


def mix_batch(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    mixup_alpha: float,
    cutmix_alpha: float,
    label_smoothing: float,
    generator: torch.Generator,
    switch_prob: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """mixup (Zhang et al. 2018) / CutMix (Yun et al. 2019): returns (mixed x, soft targets (N, num_classes)).

    With both alphas > 0, CutMix is chosen with probability ``switch_prob``. The mixing weight
    is drawn from Beta(alpha, alpha) and the partner of each sample from a random permutation;
    CutMix's weight is corrected to the pasted box's true area. Both alphas 0: x unchanged and
    label-smoothed one-hot targets. Deterministic given the generator.
    """
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"alphas must be >= 0, got mixup_alpha={mixup_alpha!r} cutmix_alpha={cutmix_alpha!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if y.dim() != 1 or len(y) != len(x):
        raise ValueError(f"y must hold one class index per sample, got shape {tuple(y.shape)} for {len(x)} samples")
    off = label_smoothing / num_classes
    targets = F.one_hot(y.long(), num_classes).to(torch.float32) * (1.0 - label_smoothing) + off
    targets = targets.to(x.device)
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return x, targets
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha == 0 or float(_rand(1, generator)) < switch_prob)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(np.random.default_rng(int(_randint(2**62, 1, generator))).beta(alpha, alpha))
    perm = torch.randperm(len(x), generator=generator, device=generator.device).to(x.device)
    if use_cutmix:
        h, w = x.shape[-2:]
        cut_h, cut_w = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
        cy, cx = int(_randint(h, 1, generator)), int(_randint(w, 1, generator))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1.0 - lam) * x[perm]
    return x, lam * targets + (1.0 - lam) * targets[perm]


class _ConvertMode:
    """PIL ``convert`` as a picklable transform (DataLoader workers may be spawned)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == self.mode else img.convert(self.mode)


def folder_transform(
    preset: str,
    *,
    train: bool,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    auto_augment: str | None = None,
    in_chans: int = 3,
    crop_pad: int = 4,
    cutout: int = 0,
    flip: bool = True,
) -> Callable[[Image.Image], Tensor]:
    """torchvision v2 pipeline for a streamed PIL image -> normalised float CHW tensor.

    "imagenet": train RandomResizedCrop + flip (+ auto_augment); eval Resize(image_size / 0.875)
    + CenterCrop. "cifar": train Resize + RandomCrop(image_size) after ``crop_pad`` zero padding
    (0: no padding, so an image already at image_size is only flipped) + flip (+ auto_augment); eval
    Resize + CenterCrop to image_size; ``flip=False`` drops the flips (images with a handedness: chest
    X-rays, organ masks). Training with ``cutout > 0`` (either preset) then zeroes a
    square of that side after normalisation (:class:`Cutout`, the same :func:`cutout` as
    :class:`BatchAugment`). Images are converted to RGB (in_chans=3) or L (1).
    """
    from torchvision.transforms import v2

    if preset not in ("imagenet", "cifar"):
        raise ValueError(f"preset must be 'imagenet' or 'cifar', got {preset!r}")
    if crop_pad < 0 or cutout < 0:
        raise ValueError(f"crop_pad and cutout must be >= 0, got crop_pad={crop_pad!r} cutout={cutout!r}")
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans!r}")
    mean, std = _channel_stats(mean, std, in_chans)
    ops: list = [_ConvertMode("L" if in_chans == 1 else "RGB")]
    if train and preset == "imagenet":
        ops += [v2.RandomResizedCrop(image_size, antialias=True)] + ([v2.RandomHorizontalFlip()] if flip else [])
    elif train:
        ops += [v2.Resize(image_size, antialias=True),
                v2.RandomCrop(image_size, padding=crop_pad or None, pad_if_needed=True)]
        ops += [v2.RandomHorizontalFlip()] if flip else []
    else:
        resize = int(image_size / 0.875) if preset == "imagenet" else image_size
        ops += [v2.Resize(resize, antialias=True), v2.CenterCrop(image_size)]
    aa = _auto_augment_op(auto_augment) if train else None
    if aa is not None:
        ops.append(aa)
    ops += [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if train and cutout:
        ops.append(Cutout(cutout))
    return v2.Compose(ops)
