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
def _output_shapes(model: nn.Module, candidates: list[tuple[str, nn.Module]], input_shape: tuple[int, int, int]
                   ) -> dict[str, tuple[int, ...] | str]:
    """Per candidate that runs in a forward pass of a zero input, in running order: its output shape (a
    tensor's), or the output's type name."""
    seen: dict[str, tuple[int, ...] | str] = {}
    handles = []
    was_training = model.training
    try:
        for name, module in candidates:
            def hook(_m, _i, out, name=name):
                seen.setdefault(name, tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__)
            handles.append(module.register_forward_hook(hook))
        model.eval()
        param = next(model.parameters(), None)
        model(torch.zeros(1, *input_shape, device=param.device if param is not None else "cpu"))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return seen


def _is_spatial(shape: tuple[int, ...] | str) -> bool:
    return isinstance(shape, tuple) and len(shape) == 4 and min(shape[-2:]) > 1


def spatial_layers(model: nn.Module, input_shape: tuple[int, int, int]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of every candidate module whose output is (N, C, H, W) with H, W > 1, in the
    order they run on a zero input of ``input_shape`` = (C, H, W). Candidates are the trunk's modules
    when the model has a ``trunk()``, otherwise every named module."""
    candidates = model.trunk() if hasattr(model, "trunk") else [(n, m) for n, m in model.named_modules() if n]
    return [(n, shape) for n, shape in _output_shapes(model, candidates, input_shape).items() if _is_spatial(shape)]


def find_layer(model: nn.Module, layer: str = "auto", input_shape: tuple[int, int, int] = (3, 224, 224)
               ) -> tuple[str, nn.Module]:
    """(name, module) of ``layer`` ("auto", or a module name such as ``layer4`` / ``layer3.1``); a named
    layer must run in the forward pass with an (N, C, H, W) output, H, W > 1, at ``input_shape``."""
    modules = dict(model.named_modules())
    size = f"{input_shape[1]}x{input_shape[2]}"
    if layer != "auto":
        problem = None
        if layer not in modules or not layer:
            problem = f"is not a module of {type(model).__name__}"
        else:
            shape = _output_shapes(model, [(layer, modules[layer])], input_shape).get(layer)
            if shape is None:
                problem = "does not run in the model's forward pass (an auxiliary or unused module)"
            elif not _is_spatial(shape):
                problem = f"outputs {shape} at {size}; a map needs (N, C, H, W) with H, W > 1"
        if problem:
            spatial = [n for n, _ in spatial_layers(model, input_shape)]
            raise ValueError(f"layer {layer!r} {problem}; layers with a spatial output at {size}: "
                             f"{', '.join(spatial) or 'none'}")
        return layer, modules[layer]
    spatial = spatial_layers(model, input_shape)
    if not spatial:
        raise ValueError(f"{type(model).__name__} has no layer with a spatial (H, W > 1) output at "
                         f"{size}, so there is nothing to map; try a larger input")
    name = spatial[-1][0]
    if name not in modules:  # a trunk stage that is no named module: map the last one that is
        name = next(n for n, _ in reversed(spatial) if n in modules)
    return name, modules[name]
