"""Structured channel pruning that respects residual coupling, through Torch-Pruning's DepGraph.

Fang et al. 2023, "DepGraph: Towards Any Structural Pruning" (arXiv:2301.12900): the channels on both
sides of a residual addition (and everything else that shares them) form one group and go together.
Torch-Pruning traces the graph and removes the channels; resnetlab adds what it does not do for a
ResNet zoo: option-A shortcuts (a zero-padding identity, pruned here through its channel map), the
importance and target choices by name, ``--keep`` by module name, and a result that saves as safetensors
with its widths (:mod:`resnetlab.models.widths`) instead of a pickled module.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.layers import ShortcutA
from ..models.stats import count_macs, count_params

__all__ = ["IMPORTANCES", "PruneConfig", "PruneResult", "prune_model", "keep_modules"]

log = logging.getLogger("resnetlab")

IMPORTANCES = ("l1", "l2", "bn", "taylor")


@dataclass(frozen=True)
class PruneConfig:
    ratio: float | None = 0.5  # fraction of each coupled group's channels removed (Torch-Pruning's pruning_ratio)
    target_macs: float | None = None  # instead of ratio: keep at most this fraction of the MACs (0.5: 2x fewer)
    importance: str = "l2"  # l1 / l2 (filter norms, Li et al. 2017), bn (BN scale, Liu et al. 2017), taylor
    global_pruning: bool = False  # rank channels across layers (global) or remove `ratio` of each group (uniform)
    round_to: int = 8  # keep channel counts multiples of this, so the kernels' speed-up is real (1: off)
    keep: tuple[str, ...] = ("fc",)  # module names or prefixes whose output channels stay; "stem" = the first conv
    max_layer_ratio: float = 0.9  # no group loses more than this fraction (global pruning can empty a layer)
    taylor_batches: int = 4  # batches whose gradients feed first-order Taylor importance (Molchanov et al. 2019)

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.target_macs is None):
            raise ValueError("give exactly one of ratio (fraction of channels removed) and target_macs (fraction "
                             f"of MACs kept), got ratio={self.ratio!r}, target_macs={self.target_macs!r}")
        for name in ("ratio", "target_macs"):
            v = getattr(self, name)
            if v is not None and not 0.0 < float(v) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {v!r}")
        if self.importance not in IMPORTANCES:
            raise ValueError(f"importance must be one of {IMPORTANCES}, got {self.importance!r}")
        if int(self.round_to) < 1:
            raise ValueError(f"round_to must be >= 1, got {self.round_to!r}")
        if not 0.0 < self.max_layer_ratio < 1.0:
            raise ValueError(f"max_layer_ratio must be in (0, 1), got {self.max_layer_ratio!r}")


@dataclass
class PruneResult:
    """The pruned model (a copy; the input is untouched) and what it cost and saved."""

    model: nn.Module
    ratio: float  # the channel ratio used (found by search when a MACs target was given)
    params: tuple[int, int]  # before, after
    macs: tuple[int, int]  # before, after, at the example input's size
    widths: dict[str, tuple[int, int]] = field(default_factory=dict)  # conv name -> (out before, out after)

    @property
    def speedup(self) -> float:
        return self.macs[0] / max(self.macs[1], 1)

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "params_before": self.params[0], "params_after": self.params[1],
                "macs_before": self.macs[0], "macs_after": self.macs[1], "macs_speedup": round(self.speedup, 3),
                "widths": {k: list(v) for k, v in self.widths.items()}}


def _shortcut_pruner() -> Any:
    import torch_pruning as tp

    class ShortcutAPruner(tp.pruner.function.BasePruningFunc):
        """Option A's identity: an output channel goes with its map entry; an input channel that goes
        leaves a zero channel where it was carried (its group is gone from the residual stream)."""

        TARGET_MODULES = (ShortcutA,)

        def prune_out_channels(self, layer: ShortcutA, idxs: Sequence[int]) -> ShortcutA:
            drop = set(int(i) for i in idxs)
            layer.set_channel_map([v for j, v in enumerate(layer.channel_map()) if j not in drop], layer.in_chs)
            return layer

        def prune_in_channels(self, layer: ShortcutA, idxs: Sequence[int]) -> ShortcutA:
            drop = sorted(set(int(i) for i in idxs))
            shift = {c: c - sum(d < c for d in drop) for c in range(layer.in_chs) if c not in drop}
            layer.set_channel_map([shift.get(v, -1) if v >= 0 else -1 for v in layer.channel_map()],
                                  layer.in_chs - len(drop))
            return layer

        def get_out_channels(self, layer: ShortcutA) -> int:
            return layer.out_chs

        def get_in_channels(self, layer: ShortcutA) -> int:
            return layer.in_chs

    return ShortcutAPruner()


def keep_modules(model: nn.Module, keep: Iterable[str]) -> list[nn.Module]:
    """The conv/linear modules named (or under a prefix named) in ``keep``; "stem" is the first conv."""
    named = dict(model.named_modules())
    aliases = {"stem": (getattr(model, "first_conv", "conv1") or "conv1").split(".")[0],
               "fc": getattr(model, "classifier_name", "fc"), "head": getattr(model, "classifier_name", "fc")}
    out: list[nn.Module] = []
    for item in keep:
        prefix = aliases.get(item, item)
        hits = [m for n, m in named.items() if (n == prefix or n.startswith(prefix + "."))
                and isinstance(m, (nn.Conv2d, nn.Linear))]
        if not hits:
            tops = ", ".join(n for n, _ in model.named_children())
            raise ValueError(f"keep: {item!r} names no convolution or linear layer of {type(model).__name__} "
                             f"(give 'stem', 'fc' or module names/prefixes such as {tops})")
        out.extend(hits)
    head = named.get(getattr(model, "classifier_name", "fc"))
    if isinstance(head, nn.Linear) and head not in out:
        out.append(head)  # the classes are never pruned
    return out


def _importance(name: str) -> Any:
    import torch_pruning as tp

    return {"l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
            "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
            "bn": lambda: tp.importance.BNScaleImportance(),
            "taylor": lambda: tp.importance.GroupTaylorImportance()}[name]()


def _prune_once(model: nn.Module, example: torch.Tensor, cfg: PruneConfig, ratio: float,
                batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]] | None) -> nn.Module:
    import torch_pruning as tp

    net = copy.deepcopy(model).eval()
    pruner = tp.pruner.MetaPruner(
        net, example, importance=_importance(cfg.importance), global_pruning=cfg.global_pruning,
        pruning_ratio=ratio, max_pruning_ratio=cfg.max_layer_ratio, ignored_layers=keep_modules(net, cfg.keep),
        round_to=None if cfg.round_to == 1 else cfg.round_to, customized_pruners={ShortcutA: _shortcut_pruner()})
    if cfg.importance == "taylor":
        if batches is None:
            raise ValueError("importance='taylor' ranks channels by loss gradients: it needs training batches")
        net.zero_grad(set_to_none=True)
        seen = 0
        for i, (x, y, *_) in enumerate(batches()):
            if i >= cfg.taylor_batches:
                break
            F.cross_entropy(net(x), y).backward()  # eval mode: BN statistics are not moved by ranking
            seen += 1
        if not seen:
            raise ValueError("importance='taylor' got no training batches")
    pruner.step()
    net.zero_grad(set_to_none=True)
    return net


def _convs(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def prune_model(model: nn.Module, example: torch.Tensor, cfg: PruneConfig, *,
                batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]] | None = None) -> PruneResult:
    """Prune a copy of ``model``; ``example`` is an input batch (N, C, H, W) to trace and count MACs at.

    ``batches`` (a zero-argument callable returning labelled batches) feeds Taylor importance. With
    ``cfg.target_macs`` the channel ratio is found by bisection: the smallest ratio whose MACs fit.
    """
    size = tuple(example.shape[1:])
    before = (count_params(model), count_macs(model, size))
    try:
        if cfg.ratio is not None:
            ratio = float(cfg.ratio)
            net = _prune_once(model, example, cfg, ratio, batches)
        else:
            ratio, net = _search(model, example, cfg, before[1], batches)
    except (RuntimeError, AssertionError, KeyError, IndexError) as e:
        raise ValueError(f"Torch-Pruning could not prune {getattr(model, 'model_name', type(model).__name__)} "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); resnetlab prunes the "
                         "ResNet family (basic/bottleneck/pre-activation blocks, options A/B/C, SE, ResNeXt) and "
                         "models whose channels Torch-Pruning can trace") from None
    after = (count_params(net), count_macs(net, size))
    old, new = _convs(model), _convs(net)
    widths = {n: (old[n], new[n]) for n in old if n in new and old[n] != new[n]}
    if not widths:
        raise ValueError(f"nothing was pruned at ratio {ratio}: with round_to={cfg.round_to} and keep={cfg.keep}, "
                         "every group kept all its channels (raise the ratio or lower round_to)")
    net.model_name = getattr(model, "model_name", None)
    log.info("pruned %s: ratio %.3f, MACs %.1fM -> %.1fM (%.2fx), params %.2fM -> %.2fM",
             net.model_name, ratio, before[1] / 1e6, after[1] / 1e6, before[1] / max(after[1], 1),
             before[0] / 1e6, after[0] / 1e6)
    return PruneResult(net, ratio, (before[0], after[0]), (before[1], after[1]), widths)


def _search(model: nn.Module, example: torch.Tensor, cfg: PruneConfig, macs0: int,
            batches: Any) -> tuple[float, nn.Module]:
    """The least channel ratio that meets ``cfg.target_macs``: a coarse scan upwards, then bisection inside the
    first step that meets it. Not bisection over the whole range: with ``round_to``, Torch-Pruning's MACs are
    not monotonic in the ratio near ``max_layer_ratio`` (a ResNet-56 pruned at 0.8 keeps more than at 0.75,
    and at 0.9 nothing is pruned), so the most pruning is not at the top of the range."""
    size, goal = tuple(example.shape[1:]), float(cfg.target_macs) * macs0
    lo, hi, best, least = 0.0, None, None, macs0
    steps = max(int(cfg.max_layer_ratio / 0.05), 1)
    for k in range(1, steps + 1):
        ratio = round(min(0.05 * k, cfg.max_layer_ratio), 4)
        net = _prune_once(model, example, cfg, ratio, batches)
        macs = count_macs(net, size)
        least = min(least, macs)
        if macs <= goal:
            hi, best = ratio, net
            break
        lo = ratio
    if best is None:
        raise ValueError(f"target_macs={cfg.target_macs} is out of reach: at channel ratios up to the most allowed "
                         f"(max_layer_ratio={cfg.max_layer_ratio}, keep={list(cfg.keep)}, round_to={cfg.round_to}) "
                         f"the least left is {least / macs0:.3f} of the MACs ({least / 1e6:.1f}M of "
                         f"{macs0 / 1e6:.1f}M)")
    for _ in range(6):  # within the 0.05 step: ratio to within 0.001
        mid = (lo + hi) / 2
        net = _prune_once(model, example, cfg, mid, batches)
        if count_macs(net, size) <= goal:
            hi, best = mid, net
        else:
            lo = mid
    return hi, best
