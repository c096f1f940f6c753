"""Conv + BatchNorm folding and an inference-mode copy of a model.

In eval mode a BatchNorm after a convolution is an affine map per channel, so it folds into
the convolution's weight and bias (Jacob et al. 2018, §3.2 — the same folding every inference
runtime does). The folded model keeps its layer names: ``layer1.0.conv1`` becomes a conv with a
bias and ``layer1.0.bn1`` an ``nn.Identity``, so state dicts and exports stay diffable.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["conv_bn_pairs", "fuse_conv_bn", "inference_model"]

log = logging.getLogger(__name__)
_BN = (nn.BatchNorm2d,)


def _pairs_from_graph(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) module names where the BN's only input is the conv and nothing else reads the conv."""
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], _BN):
            continue
        src = node.args[0] if node.args else None
        if not (isinstance(src, torch.fx.Node) and src.op == "call_module"):
            continue
        if (isinstance(modules[src.target], nn.Conv2d) and len(src.users) == 1
                and calls[src.target] == 1 and calls[node.target] == 1):
            pairs.append((src.target, node.target))
    return pairs


def _pairs_from_sequences(model: nn.Module) -> list[tuple[str, str]]:
    """Fallback for untraceable models: a Conv2d directly followed by a BN inside an nn.Sequential."""
    pairs = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Sequential):
            kids = list(mod.named_children())
            for (a, conv), (b, bn) in zip(kids, kids[1:]):
                if isinstance(conv, nn.Conv2d) and isinstance(bn, _BN):
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + a, prefix + b))
    return pairs


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """The (conv, bn) pairs of ``model`` that can be folded, found from its traced graph."""
    try:
        return _pairs_from_graph(model)
    except Exception as e:  # noqa: BLE001 - fx raises many kinds for untraceable Python
        log.info("%s is not fx-traceable (%s: %s); folding Conv->BN pairs inside nn.Sequential only",
                 type(model).__name__, type(e).__name__, e)
        return _pairs_from_sequences(model)


@torch.no_grad()
def fuse_conv_bn(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Fold every BatchNorm that directly follows a convolution into it (eval-mode arithmetic).

    Returns an eval-mode model whose outputs equal the original's in eval mode (to float rounding,
    about 1e-6 relative). BNs after pooling, additions or activations (e.g. pre-activation and
    DenseNet blocks) are left as they are.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse_conv_bn expects an nn.Module, got {type(model).__name__}")
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    pairs = conv_bn_pairs(model)
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if not bn.track_running_stats or bn.running_mean is None:
            continue  # batch statistics at inference: nothing fixed to fold
        model.set_submodule(conv_name, fuse_conv_bn_eval(conv, bn))
        model.set_submodule(bn_name, nn.Identity())
    model.fused_pairs = len(pairs)
    return model


def inference_model(model: nn.Module, *, fuse: bool = True, channels_last: bool = True) -> nn.Module:
    """A copy of ``model`` ready for CPU inference: eval mode, BN folded, no gradients, NHWC weights.

    channels_last lets oneDNN pick its blocked NHWC convolutions directly (no reorders per layer).
    """
    out = fuse_conv_bn(model) if fuse else copy.deepcopy(model).eval()
    out.requires_grad_(False)
    if channels_last:
        out = out.to(memory_format=torch.channels_last)
    return out
