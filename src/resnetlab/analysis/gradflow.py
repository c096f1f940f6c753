"""Gradient flow through plain and residual networks, measured rather than asserted.

He et al. 2015 (arXiv:1512.03385, §1) note that with batch norm, plain nets' gradients need not
vanish and attribute degradation to optimisation difficulty; the later "Identity Mappings" paper
(arXiv:1603.05027) argues shortcuts let gradients reach early layers directly. This module
measures both views on a real batch: the gradient norm of every weight layer from input to
output, and, inside each residual block, the branch's output against the shortcut's and the
gradient that reaches the block's input through each path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.layers import ResidualAdd

__all__ = ["BlockFlow", "LayerGrad", "measure", "ratios", "weight_layers"]


@dataclass
class LayerGrad:
    index: int  # position among the main-path weight layers, input side first (projections: their block's)
    name: str  # module name, e.g. "layer2.0.conv1"
    kind: str  # "conv", "linear" or "projection"
    grad_norm: float  # ||dL/dW||
    weight_norm: float  # ||W||

    def row(self) -> dict:
        return asdict(self)


@dataclass
class BlockFlow:
    block: str  # e.g. "layer2.0"
    branch_norm: float  # ||F(x)||: the residual branch's output
    shortcut_norm: float | None  # ||x|| or ||W_s x||; None in a plain net
    grad_at_sum: float  # ||dL/d(F(x) + x)||
    grad_via_branch: float  # gradient reaching the block's input through the branch
    grad_via_shortcut: float | None  # ... and through the shortcut (None in a plain net)

    def row(self) -> dict:
        return asdict(self)


def _kind(name: str, module: nn.Module) -> str:
    if ".downsample" in name or ".skip" in name:
        return "projection"
    return "linear" if isinstance(module, nn.Linear) else "conv"


def weight_layers(model: nn.Module, x: Tensor) -> list[tuple[str, nn.Module, str]]:
    """Conv and linear layers in the order the forward pass runs them, with their kind."""
    names = {m: n for n, m in model.named_modules()}
    order: list[nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda m, _: order.append(m) if m not in order else None)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(x[:1])
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return [(names[m], m, _kind(names[m], m)) for m in order]


def measure(model: nn.Module, x: Tensor, y: Tensor) -> tuple[list[LayerGrad], list[BlockFlow]]:
    """One forward/backward on (x, y) in training mode; per-layer and per-block gradient flow.

    The model is left with gradients set; measure a copy if its BN statistics matter.
    """
    model.train()
    layers = weight_layers(model, x)
    names = {m: n for n, m in model.named_modules()}
    inputs: dict[nn.Module, Tensor] = {}
    records: list[tuple] = []

    def block_input(block: nn.Module, args: tuple) -> None:
        inputs[block] = args[0]

    def at_sum(add: nn.Module, args: tuple, total: Tensor) -> Tensor:
        branch, identity = args
        total.retain_grad()
        block = parents[add]
        records.append((names[block], inputs[block], branch, identity, total))
        return total.clone()  # the block's in-place ReLU must not overwrite the recorded sum

    # every block's residual addition is a named ``add`` submodule: ordinary forward hooks see both paths
    parents = {m.add: m for m in model.modules() if isinstance(getattr(m, "add", None), ResidualAdd)}
    handles = [b.register_forward_pre_hook(block_input) for b in parents.values()]
    handles += [a.register_forward_hook(at_sum) for a in parents]
    model.zero_grad(set_to_none=True)
    try:
        loss = F.cross_entropy(model(x), y)
        loss.backward(retain_graph=True)
        blocks = [_block_flow(r) for r in records]
    finally:
        for h in handles:
            h.remove()
    main = 0
    out = []
    for name, m, kind in layers:
        if kind != "projection":
            main += 1
        g = m.weight.grad
        out.append(LayerGrad(main, name, kind,
                             float(g.norm()) if g is not None else 0.0, float(m.weight.detach().norm())))
    return out, blocks


def _block_flow(record: tuple) -> BlockFlow:
    name, xin, branch, identity, total = record
    g = total.grad
    via_branch = torch.autograd.grad(branch, xin, g, retain_graph=True, allow_unused=True)[0]
    if identity is None:
        via_short, short_norm = None, None
    elif identity is xin:
        via_short, short_norm = float(g.norm()), float(xin.detach().norm())
    else:
        grad = torch.autograd.grad(identity, xin, g, retain_graph=True, allow_unused=True)[0]
        via_short, short_norm = float(grad.norm()) if grad is not None else 0.0, float(identity.detach().norm())
    return BlockFlow(name, float(branch.detach().norm()), short_norm, float(g.norm()),
                     float(via_branch.norm()) if via_branch is not None else 0.0, via_short)


def ratios(layers: list[LayerGrad]) -> dict[str, float]:
    """first/last: gradient norm of the first main-path layer over the last; min/max over all."""
    main = [layer.grad_norm for layer in layers if layer.kind != "projection"]
    positive = [g for g in main if g > 0]
    return {"first_over_last": main[0] / main[-1] if main[-1] else float("inf"),
            "min_over_max": min(positive) / max(positive) if positive else 0.0,
            "first": main[0], "last": main[-1], "layers": len(main)}
