"""Which layer a class-activation map is taken at.

``auto`` is the deepest layer whose output still has a spatial extent (H, W > 1) at the model's
input size, as torch-cam's ``locate_candidate_layer`` does: for a resnetlab model, the last module of
its trunk with such an output (``layer4`` for ResNet-18 at 224 px; an earlier one when a small input
pools down to 1x1); for any other module, the last module run in a forward pass.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["find_layer", "spatial_layers"]


@torch.no_grad()
def spatial_layers(model: nn.Module, input_shape: tuple[int, int, int]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of every candidate module whose output is (N, C, H, W) with H, W > 1, in the
    order they run on a zero input of ``input_shape`` = (C, H, W). Candidates are the trunk's modules
    when the model has a ``trunk()``, otherwise every named module."""
    trunk = [n for n, _ in model.trunk()] if hasattr(model, "trunk") else None
    modules = dict(model.named_modules())
    names = trunk if trunk is not None else [n for n in modules if n]
    seen: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name in names:
        def hook(_m, _i, out, name=name):
            if isinstance(out, torch.Tensor) and out.dim() == 4 and min(out.shape[-2:]) > 1:
                seen.append((name, tuple(out.shape)))
        handles.append(modules[name].register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters(), None)
        model(torch.zeros(1, *input_shape, device=param.device if param is not None else "cpu"))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return seen


def find_layer(model: nn.Module, layer: str = "auto", input_shape: tuple[int, int, int] = (3, 224, 224)
               ) -> tuple[str, nn.Module]:
    """(name, module) of ``layer`` ("auto", or a module name such as ``layer4`` / ``layer3.1``)."""
    modules = dict(model.named_modules())
    if layer != "auto":
        if layer not in modules or not layer:
            spatial = [n for n, _ in spatial_layers(model, input_shape)]
            raise ValueError(f"layer {layer!r} is not a module of {type(model).__name__}; layers with a spatial "
                             f"output at {input_shape[1]}x{input_shape[2]}: {', '.join(spatial) or 'none'}")
        return layer, modules[layer]
    spatial = spatial_layers(model, input_shape)
    if not spatial:
        raise ValueError(f"{type(model).__name__} has no layer with a spatial (H, W > 1) output at "
                         f"{input_shape[1]}x{input_shape[2]}, so there is nothing to map; try a larger input")
    name = spatial[-1][0]
    return name, modules[name]
