"""Load, adapt and save state dicts — safely.

Files are read with ``torch.load(weights_only=True)`` or safetensors; anything that is not a
mapping of names to tensors is refused with a message naming what was found. Nothing is ever
unpickled. Saving writes safetensors atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
from torch import Tensor

from ..utils.fileio import atomic_path

__all__ = ["LoadReport", "read_state_dict", "load_weights", "save_weights", "adapt_first_conv"]

log = logging.getLogger("resnetlab")

_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile
_CHECKPOINT_KEYS = ("model", "state_dict", "model_state_dict")


def _unwrap(obj: object, path: Path) -> Mapping[str, object]:
    if isinstance(obj, Mapping):
        for key in _CHECKPOINT_KEYS:  # a resnetlab (or common) training checkpoint
            if isinstance(obj.get(key), Mapping):
                return obj[key]
        return obj
    raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors), found {type(obj).__name__}")


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from a .pth/.pt file, a safetensors file or a resnetlab checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: object = load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            found = str(e).strip().splitlines()
            hint = next((ln for ln in found if "GLOBAL" in ln or "Unsupported" in ln), found[0] if found else "")
            raise ValueError(
                f"{path}: refused: the file holds Python objects other than tensors ({hint.strip()}). "
                "resnetlab never unpickles such files; save a plain state dict "
                "(torch.save(model.state_dict(), ...)) or safetensors instead"
            ) from None
        except (RuntimeError, EOFError, OSError) as e:
            raise ValueError(f"{path}: not a readable PyTorch weights file ({str(e).splitlines()[0]})") from None
    state = _unwrap(obj, path)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                             "a state dict must map names to tensors")
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def adapt_first_conv(weight: Tensor, in_chans: int) -> Tensor:
    """Adapt a pretrained first-conv weight (O, C, kH, kW) to ``in_chans`` inputs.

    One channel: sum over the input channels, so a gray image gives the response the RGB net
    gave to that image repeated three times. More channels: repeat cyclically and rescale so
    the output scale is kept (timm's rule).
    """
    cin = weight.shape[1]
    if in_chans == cin:
        return weight
    if in_chans == 1:
        return weight.sum(1, keepdim=True)
    reps = -(-in_chans // cin)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (cin / in_chans)


@dataclass
class LoadReport:
    """What load_weights did: keys that did not match and adaptations made."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: file (shape) vs model (shape)"
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def _listing(title: str, items: list[str], limit: int = 20) -> str:
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n  {title} ({len(items)}): " + ", ".join(items[:limit]) + more


def _adapt(model: nn.Module, state: dict[str, Tensor], own: dict[str, Tensor]) -> list[str]:
    notes = list(model.adapt_state_dict(state)) if hasattr(model, "adapt_state_dict") else []
    cls_prefix, conv = getattr(model, "classifier_name", None), getattr(model, "first_conv", None)
    if cls_prefix:
        keys = [k for k in state if k in (f"{cls_prefix}.weight", f"{cls_prefix}.bias")]
        if not keys and any(k.startswith(cls_prefix + ".") for k in own):  # a backbone alone (num_classes=0)
            notes.append(f"classifier {cls_prefix} initialised afresh: the file is a backbone without one")
        elif keys and any(k not in own or own[k].shape != state[k].shape for k in keys):
            file_classes = state[f"{cls_prefix}.weight"].shape[0] if f"{cls_prefix}.weight" in state else "?"
            for k in keys:
                del state[k]
            n = getattr(model, "num_classes", "?")
            action = "dropped (the model has no classifier)" if n == 0 else f"re-initialised for {n} classes"
            notes.append(f"classifier {cls_prefix} {action}: the file has {file_classes} classes")
    key = f"{conv}.weight" if conv else None
    if key in state and key in own and state[key].shape[1] != own[key].shape[1]:
        cin = state[key].shape[1]
        state[key] = adapt_first_conv(state[key], own[key].shape[1])
        notes.append(f"first conv {conv} adapted from {cin} to {own[key].shape[1]} input channels")
    return notes


def load_weights(model: nn.Module, weights: str | os.PathLike | Mapping[str, Tensor], *,
                 strict: bool = True) -> LoadReport:
    """Load ``weights`` (a path or a state dict) into ``model``, adapting head and first conv.

    Strict by default: any missing, unexpected or mis-shaped tensor raises a ValueError that
    lists them all. With ``strict=False`` the matching tensors load and the report says the rest.
    """
    source = str(weights) if not isinstance(weights, Mapping) else "state dict"
    state = read_state_dict(weights) if not isinstance(weights, Mapping) else dict(weights)
    own = model.state_dict()
    report = LoadReport(notes=_adapt(model, state, own))
    adapted_cls = any(n.startswith("classifier ") for n in report.notes)
    cls_prefix = getattr(model, "classifier_name", "")
    for k in own:
        if k not in state and not (adapted_cls and k.startswith(cls_prefix + ".")):
            report.missing.append(k)
    for k, v in state.items():
        if k not in own:
            report.unexpected.append(k)
        elif own[k].shape != v.shape:
            report.mismatched.append(f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}")
    if strict and not report.ok:
        raise ValueError(
            f"{source} does not fit {type(model).__name__}"
            + (_listing("missing keys", report.missing) if report.missing else "")
            + (_listing("unexpected keys", report.unexpected) if report.unexpected else "")
            + (_listing("shape mismatches", report.mismatched) if report.mismatched else "")
            + "\n  (pass strict=False to load what matches)"
        )
    bad = {m.split(":")[0] for m in report.mismatched}
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in bad}, strict=False)
    for note in report.notes:
        log.warning("%s: %s", source, note)
    return report


def save_weights(model_or_state: nn.Module | Mapping[str, Tensor], path: str | os.PathLike,
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write a state dict as safetensors, atomically (:func:`resnetlab.utils.fileio.atomic_path`).

    Given a module, the file's metadata also holds its per-layer widths and registered name
    (:mod:`resnetlab.models.widths`), so ``create_model(name, weights=path)`` rebuilds a pruned model.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"weights are saved as safetensors; name the file *.safetensors, got {path.name!r}")
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    meta = {"format": "pt"}
    if isinstance(model_or_state, nn.Module):  # its per-layer widths, so a pruned model loads back as itself
        from .widths import widths_metadata

        meta.update(widths_metadata(model_or_state))
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    with atomic_path(path) as tmp:  # temp file, fsync, rename, folder fsync; the old file until then
        save_file(tensors, str(tmp), metadata=meta)
    return path
