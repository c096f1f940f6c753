"""Model registry: one name -> one builder, duplicates refused, options checked before building.

Every model is a named builder function behind ``@register_model`` (timm's pattern: visible to an
IDE and a linter); its return annotation names the class, so ``create_model`` can tell a user which
options a model takes before anything is constructed.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import torch.nn as nn

__all__ = ["ModelEntry", "register_model", "build", "list_models", "get_entry", "build_model"]

F = TypeVar("F", bound=Callable[..., nn.Module])
M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model name."""

    name: str
    builder: Callable[..., nn.Module]  # the decorated function: options -> model
    cls: type[nn.Module]  # the class it builds (its return annotation)
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


def register_model(*, input_size: tuple[int, int, int] = (3, 224, 224), paper: str = "",
                   torchvision: str | None = None) -> Callable[[F], F]:
    """Decorator: register a named builder function under its own name (timm's ``@register_model``).

    The builder's return annotation names the class it builds; the options a user may pass are
    that class's keyword arguments, checked before anything is constructed::

        @register_model(paper=HE2015, torchvision="resnet18")
        def resnet18(**kwargs: Any) -> ResNet:
            return build(ResNet, kwargs, layers=(2, 2, 2, 2))
    """
    def wrap(fn: F) -> F:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered ({_REGISTRY[name].cls.__name__})")
        cls = typing.get_type_hints(fn).get("return")
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"{name}: a model builder must be annotated with the nn.Module class it returns, "
                            f"got {cls!r}")
        _REGISTRY[name] = ModelEntry(name, fn, cls, tuple(input_size), paper, torchvision, _accepted_options(cls))
        return fn
    return wrap


def build(cls: type[M], options: dict[str, Any], **defaults: Any) -> M:
    """``cls(**defaults, **options)``: a builder's fixed defaults, each overridable by the user."""
    return cls(**{**defaults, **options})


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
    model = entry.builder(**options)
    model.model_name = name  # type: ignore[assignment]
    return model
