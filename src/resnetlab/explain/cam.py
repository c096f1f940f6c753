"""Class-activation maps from one layer's activations (and gradients), batched, on any device.

- Grad-CAM: ReLU(sum_k mean(dy/dA_k) A_k) (Selvaraju et al. 2017).
- Grad-CAM++: the channel weights sum ReLU(dy/dA) with the second/third-order alphas of
  Chattopadhay et al. 2018 (the closed form pytorch-grad-cam and torch-cam use).
- XGrad-CAM: weights sum(A_k dy/dA_k) / sum(A_k) (Fu et al. 2020).
- LayerCAM: ReLU(sum_k ReLU(dy/dA_k) * A_k), element-wise (Jiang et al. 2021).
- Score-CAM: each channel, upsampled and min-max scaled, masks the input; the target's logit on the
  masked input, softmaxed over channels, weighs it (Wang et al. 2020), in float64 so the softmax of
  large logits cannot overflow.
- Eigen-CAM: the activations' first principal component (Muhammad & Yeasin 2020), no gradient and no
  target; its sign is chosen so the map correlates positively with the mean activation.
- Ablation-CAM: weight_k = (y - y without channel k) / y (Desai & Ramaswamy 2020).

Own code rather than pytorch-grad-cam (which the tests check it against, with captum): tensors end to
end at any input size without OpenCV, every hook removed in a ``finally`` (nothing grows over calls, no
global state), and the layer's output cloned in its forward hook, so an in-place ReLU after the layer
cannot corrupt the activation or its gradient (pytorch/pytorch#61519, pytorch-grad-cam#147).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["METHODS", "GRADIENT_METHODS", "cam_maps", "capture", "normalize_maps", "upsample_maps"]

GRADIENT_METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam")
METHODS = (*GRADIENT_METHODS, "scorecam", "eigencam", "ablationcam")


@contextmanager
def capture(module: nn.Module, edit: Callable[[Tensor], Tensor] | None = None) -> Iterator[dict[str, Tensor]]:
    """Record ``module``'s output in ``box["activation"]`` while the context is open (optionally replacing
    it by ``edit(output)``); the hook is removed on exit, whatever happens."""
    box: dict[str, Tensor] = {}

    def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(f"a class-activation map needs a layer with a 4-D (N, C, H, W) output, got {shape}")
        box["activation"] = output
        out = output.clone()  # later in-place ops (ReLU(inplace=True), +=) change the clone, not ours
        return edit(out) if edit is not None else out

    handle = module.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def _scores(logits: Tensor, targets: Tensor) -> Tensor:
    return logits.gather(1, targets.view(-1, 1)).squeeze(1)


def _gradient_weights(method: str, a: Tensor, g: Tensor) -> Tensor:
    """(N, H, W) map before the final ReLU, from activations ``a`` and gradients ``g`` (N, K, h, w)."""
    if method == "gradcam":
        return (g.mean((2, 3), keepdim=True) * a).sum(1)
    if method == "layercam":
        return (g.clamp(min=0) * a).sum(1)
    if method == "xgradcam":
        w = (g * a).sum((2, 3), keepdim=True) / (a.sum((2, 3), keepdim=True) + 1e-7)
        return (w * a).sum(1)
    g2, g3 = g.pow(2), g.pow(3)  # gradcam++
    alpha = g2 / (2 * g2 + a.sum((2, 3), keepdim=True) * g3 + 1e-6)  # eps as pytorch-grad-cam
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    w = (alpha * g.clamp(min=0)).sum((2, 3), keepdim=True)
    return (w * a).sum(1)


def _eigen(a: Tensor) -> Tensor:
    """Projection of each (h*w, K) activation matrix on its first right-singular vector."""
    n, k, h, w = a.shape
    flat = a.permute(0, 2, 3, 1).reshape(n, h * w, k).double()
    centred = flat - flat.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    proj = centred @ vh[:, 0, :].unsqueeze(-1)  # (n, h*w, 1)
    sign = torch.sign((proj.squeeze(-1) * flat.mean(2)).sum(1)).clamp(min=0) * 2 - 1  # + when correlated
    return (proj.squeeze(-1) * sign.unsqueeze(1)).reshape(n, h, w).float()


def _chunks(k: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, k, size):
        yield start, min(k, start + size)


@torch.no_grad()
def _score_cam(model: nn.Module, x: Tensor, a: Tensor, targets: Tensor, batch_size: int) -> Tensor:
    n, k = a.shape[:2]
    weights = torch.empty(n, k, dtype=torch.float64, device=x.device)
    for i in range(n):
        for s, e in _chunks(k, batch_size):  # masks per chunk: all at once would be N*K*H*W floats (GBs at 224 px)
            # corner-aligned upsampling and +1e-8 as pytorch-grad-cam: a flat channel masks everything out, not NaN
            masks = F.interpolate(a[i:i + 1, s:e].float(), size=x.shape[-2:], mode="bilinear", align_corners=True)
            lo, hi = masks.amin((2, 3), keepdim=True), masks.amax((2, 3), keepdim=True)
            masks = (masks - lo) / (hi - lo + 1e-8)
            weights[i, s:e] = model(x[i:i + 1] * masks[0].unsqueeze(1))[:, targets[i]].double()
    weights = weights.softmax(1).to(a.dtype)
    return (weights[:, :, None, None] * a).sum(1)


@torch.no_grad()
def _ablation_cam(model: nn.Module, layer: nn.Module, x: Tensor, a: Tensor, targets: Tensor,
                  batch_size: int) -> Tensor:
    n, k = a.shape[:2]
    base = _scores(model(x), targets).double()
    weights = torch.empty(n, k, dtype=torch.float64, device=x.device)
    for i in range(n):
        for s, e in _chunks(k, batch_size):
            drop = torch.arange(s, e, device=x.device)

            def zero_one_channel_each(out: Tensor, drop: Tensor = drop) -> Tensor:
                out[torch.arange(len(drop), device=out.device), drop] = 0
                return out

            with capture(layer, zero_one_channel_each):
                y = model(x[i:i + 1].expand(e - s, *x.shape[1:]))[:, targets[i]].double()
            scale = base[i] if base[i].abs() > 1e-7 else base.new_tensor(1e-7)  # the paper's (y - y_k) / y
            weights[i, s:e] = (base[i] - y) / scale
    return (weights.to(a.dtype)[:, :, None, None] * a).sum(1)


def cam_maps(model: nn.Module, layer: nn.Module, x: Tensor, targets: Tensor | None, method: str = "gradcam",
             *, batch_size: int = 64) -> tuple[Tensor, Tensor, Tensor]:
    """Low-resolution maps (N, h, w) of ``method`` at ``layer`` for ``targets`` (None: the top class), the
    logits (N, classes) and the targets used. ``model`` must be in eval mode; its parameters' ``.grad``
    are left untouched (gradients are taken with ``torch.autograd.grad``)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    gradients = method in GRADIENT_METHODS
    x_in = x.detach().requires_grad_(True) if gradients else x  # gradients reach the layer even if weights are frozen
    with torch.set_grad_enabled(gradients), capture(layer) as box:
        logits = model(x_in)
        targets = logits.argmax(1) if targets is None else targets.to(logits.device).long()
        if gradients:
            (grad,) = torch.autograd.grad(_scores(logits, targets).sum(), box["activation"])
    a = box["activation"].detach()
    logits = logits.detach()
    if method in GRADIENT_METHODS:
        cam = _gradient_weights(method, a.float(), grad.float())
    elif method == "eigencam":
        return _eigen(a.float()).clamp(min=0), logits, targets
    elif method == "scorecam":
        cam = _score_cam(model, x, a.float(), targets, batch_size)
    else:
        cam = _ablation_cam(model, layer, x, a.float(), targets, batch_size)
    return cam.clamp(min=0), logits, targets


def upsample_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, h, w) -> (N, H, W), bilinear (as the maps are drawn over the input)."""
    return F.interpolate(maps.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=False).squeeze(1)


def normalize_maps(maps: Tensor) -> Tensor:
    """Each map min-max scaled to [0, 1]; a constant map becomes all zeros (nothing singled out)."""
    lo = maps.flatten(1).amin(1).view(-1, 1, 1)
    hi = maps.flatten(1).amax(1).view(-1, 1, 1)
    span = hi - lo
    return torch.where(span > 0, (maps - lo) / span.clamp(min=1e-12), torch.zeros_like(maps))
