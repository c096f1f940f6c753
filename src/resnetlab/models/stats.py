"""Parameters, MACs and per-layer summaries, counted by torch's own FLOP counter.

MACs are ``torch.utils.flop_counter`` FLOPs / 2 (convolutions and matrix products; BN, ReLU
and additions are not counted, as in the papers' tables). Models named by string are built
on the ``meta`` device, so counting even VGG-16 at 224x224 costs no arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .layers import ResidualAdd, ShortcutA
from .registry import build_model, get_entry, list_models

__all__ = ["count_params", "count_macs", "model_summary", "SummaryRow", "models_table", "format_table"]


def _resolve(model: nn.Module | str, input_size: Sequence[int] | None) -> tuple[nn.Module, tuple[int, ...]]:
    if isinstance(model, str):
        entry = get_entry(model)
        with torch.device("meta"):
            model = build_model(model)
        size = tuple(input_size or entry.input_size)
    else:
        size = tuple(input_size or (getattr(model, "in_chans", 3), 224, 224))
    if len(size) != 3 or any(int(s) < 1 for s in size):
        raise ValueError(f"input_size must be (C, H, W) with positive entries, got {tuple(size)!r}")
    return model, size


def count_params(model: nn.Module | str, trainable_only: bool = False) -> int:
    """Number of parameters (of a module, or of a registered model by name)."""
    if isinstance(model, str):
        with torch.device("meta"):
            model = build_model(model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _run_counted(model: nn.Module, size: tuple[int, ...]) -> FlopCounterMode:
    param = next(model.parameters(), None)
    x = torch.zeros((1, *size), device=param.device if param is not None else "cpu",
                    dtype=param.dtype if param is not None and param.is_floating_point() else torch.float32)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return counter


def count_macs(model: nn.Module | str, input_size: Sequence[int] | None = None) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (resnet18 at 3x224x224: 1.82 G)."""
    model, size = _resolve(model, input_size)
    return _run_counted(model, size).get_total_flops() // 2


@dataclass
class SummaryRow:
    name: str  # dotted module name, or "<block>.add" for a residual addition
    kind: str  # module class, or "residual add"
    depth: int
    out_shape: tuple[int, ...] | None
    params: int
    macs: int
    note: str = ""


def _note(module: nn.Module, name: str, parents: dict[str, nn.Module]) -> str:
    if isinstance(module, ShortcutA):
        return "shortcut, option A (subsample + zero-pad, no parameters)"
    parent = parents.get(name.rpartition(".")[0])
    if name.rpartition(".")[2] in ("downsample", "skip") and getattr(parent, "shortcut_kind", None) == "projection":
        return "projection shortcut (1x1 conv)"
    return ""


def model_summary(model: nn.Module | str, input_size: Sequence[int] | None = None,
                  max_depth: int = 3) -> list[SummaryRow]:
    """Per-layer rows in execution order; residual additions appear as rows of their own."""
    model, size = _resolve(model, input_size)
    names = {m: n for n, m in model.named_modules()}
    by_name = {n: m for m, n in names.items()}
    rows: dict[str, SummaryRow] = {}
    order: list[str] = []

    def pre(module: nn.Module, _args) -> None:
        name = names[module]
        if not name or name in rows or isinstance(module, nn.Identity):
            return
        if isinstance(module, ResidualAdd):  # a block's residual addition: a row of its own, at the block's depth
            if module.kind is not None:
                via = {"identity": "identity", "A": "option A zero-pad", "projection": "projection"}[module.kind]
                rows[name] = SummaryRow(name, "residual add", name.count("."), None, 0, 0, f"+ shortcut ({via})")
                order.append(name)
            return
        rows[name] = SummaryRow(name, type(module).__name__, name.count(".") + 1, None,
                                sum(p.numel() for p in module.parameters()), 0, _note(module, name, by_name))
        order.append(name)

    def post(module: nn.Module, _args, out) -> None:
        name = names[module]
        if name in rows and rows[name].out_shape is None and isinstance(out, torch.Tensor):
            rows[name].out_shape = tuple(out.shape)

    handles = [m.register_forward_pre_hook(pre) for m in names] + [m.register_forward_hook(post) for m in names]
    try:
        counter = _run_counted(model, size)
    finally:
        for h in handles:
            h.remove()
    root = type(model).__name__
    for key, ops in counter.get_flop_counts().items():
        name = key.partition(".")[2] if key.startswith(root + ".") else None
        if name in rows:
            rows[name].macs = sum(ops.values()) // 2
    return [rows[n] for n in order if rows[n].depth <= max_depth]


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A plain-text table; ``align`` has one of 'l'/'r' per column (default: left)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    align = align or "l" * len(header)
    fmt = lambda r: "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align))  # noqa: E731
    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]]
    return "\n".join(line.rstrip() for line in lines)


def models_table(pattern: str = "*") -> list[dict[str, object]]:
    """One row per registered model: parameters, GMACs at its default input size, shortcuts."""
    out = []
    for name in list_models(pattern):
        entry = get_entry(name)
        with torch.device("meta"):
            model = build_model(name)
        out.append({
            "name": name, "params": count_params(model), "gmacs": count_macs(model, entry.input_size) / 1e9,
            "input_size": "x".join(map(str, entry.input_size)), "shortcuts": model.has_shortcuts,
            "num_classes": model.num_classes, "torchvision": entry.torchvision or "", "paper": entry.paper,
        })
    return out
