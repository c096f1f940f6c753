"""Model registry: one name -> one builder, duplicates refused, options checked before building.

Every builder is a class plus fixed defaults (torchvision's ``partial(ResNet, ...)`` idea), so
``create_model`` can tell a user which options a model takes before anything is constructed.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

__all__ = ["ModelEntry", "register_model", "list_models", "get_entry", "build_model"]


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model name."""

    name: str
    cls: type[nn.Module]  # the class that builds it
    defaults: dict[str, Any]  # fixed keyword arguments (layers, block, ...), user-overridable
    input_size: tuple[int, int, int] = (3, 224, 224)  # default (C, H, W) for tables and MACs
    paper: str = ""  # short citation shown in docs
    torchvision: str | None = None  # torchvision builder whose state dicts load unchanged
    options: frozenset[str] = field(default_factory=frozenset)  # keyword arguments accepted

    def describe(self) -> str:
        return f"{self.name}: {self.paper}" if self.paper else self.name


_REGISTRY: dict[str, ModelEntry] = {}


def _accepted_options(cls: type) -> frozenset[str]:
    sig = inspect.signature(cls.__init__)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in sig.parameters.values() if p.kind in kinds and p.name != "self")


def register_model(
    name: str,
    cls: type[nn.Module],
    *,
    input_size: tuple[int, int, int] = (3, 224, 224),
    paper: str = "",
    torchvision: str | None = None,
    **defaults: Any,
) -> Callable[..., nn.Module]:
    """Register ``name`` as ``cls(**defaults, **user_options)`` and return a one-line builder."""
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is already registered ({_REGISTRY[name].cls.__name__})")
    options = _accepted_options(cls)
    unknown = set(defaults) - options
    if unknown:
        raise TypeError(f"{name}: {cls.__name__} does not take {sorted(unknown)}")
    entry = ModelEntry(name, cls, dict(defaults), tuple(input_size), paper, torchvision, options)
    _REGISTRY[name] = entry

    def builder(**kwargs: Any) -> nn.Module:
        return build_model(name, **kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"Build {name}. {paper}".strip()
    return builder


def _natural(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (e.g. ``"resnet*"``), in
    natural order (resnet18 before resnet101)."""
    return sorted((n for n in _REGISTRY if fnmatch.fnmatch(n, pattern)), key=_natural)


def _close(word: str, choices: list[str]) -> str:
    near = difflib.get_close_matches(word, choices, n=5, cutoff=0.5)
    return f"; close matches: {', '.join(near)}" if near else ""


def get_entry(name: str) -> ModelEntry:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"unknown model {name!r}{_close(str(name), list(_REGISTRY))}; "
            f"see resnetlab.list_models() ({len(_REGISTRY)} models)"
        )
    return _REGISTRY[name]


def build_model(name: str, **options: Any) -> nn.Module:
    """Construct a registered model after checking every option against what it accepts."""
    entry = get_entry(name)
    for key in options:
        if key not in entry.options:
            raise ValueError(
                f"model {name!r} does not take option {key!r}{_close(key, sorted(entry.options))}; "
                f"it takes: {', '.join(sorted(entry.options))}"
            )
    model = entry.cls(**{**entry.defaults, **options})
    model.model_name = name  # type: ignore[assignment]
    return model
