"""The training configuration: one frozen dataclass, YAML recipes, command-line overrides.

Every field has a default and a comment; a recipe YAML (read with ``yaml.safe_load``) may set
any field and nothing else — an unknown key is an error that names it and the close matches.
The resolved configuration is saved with every run (``config.yaml`` in the run directory).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import warnings
from dataclasses import InitVar, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..utils.fileio import atomic_write_text
from ..utils.hardware import AMP_CHOICES

__all__ = ["TrainConfig", "RESUMABLE", "load_config", "list_recipes", "recipe_path", "save_config", "resumed_config"]

RESUMABLE = ("epochs", "max_steps", "device", "threads")  # what a resumed run may change


def _f(default: Any = None, help: str = "", *, factory: Any = None) -> Any:
    """A config field that carries its own help text (shown by ``resnetlab train --help``)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    # --- model ---
    model: str = _f("resnet18", "any name from resnetlab.list_models()")
    model_kwargs: dict = _f(help="model options, e.g. {stem: cifar, drop_path_rate: 0.1}", factory=dict)
    num_classes: int | None = _f(None, "None: follow the data")
    in_chans: int | None = _f(None, "None: follow the data")
    weights: str | None = _f(None, "initial weights (state dict / safetensors / checkpoint) to fine-tune from")
    # --- data ---
    data: str | None = _f(None, "folder (train/ + val/ or test/), CIFAR-10 archive/folder or MedMNIST .npz")
    val_split: float = _f(0.0, "validation split, evaluated each epoch to select best.pt: 0 (auto) uses the data's own "
                               "val split, else holds out 0.1 of train; >0 always holds out this fraction of train "
                               "(seeded, stratified). The test split is evaluated once, at the end")
    cache_dir: str | None = _f(None, "uint8 cache of small images (default ~/.cache/resnetlab)")
    download: bool = _f(False, "no data found: fetch CIFAR-10's official archive (md5-checked) into the cache")
    strict_data: bool = _f(False, "an unreadable image is an error instead of a reported skip")
    workers: int = _f(2, "DataLoader workers for streamed (large-image) folders")
    # --- augmentation ---
    preset: str = _f("cifar", "'cifar' (pad-4 crop + flip) or 'imagenet' (RandomResizedCrop + flip)")
    image_size: int | None = _f(None, "network input size; None: the data's own size (cifar) / 224 (imagenet)")
    crop_pad: int = _f(4, "padding of the cifar random crop")
    cutout: int = _f(0, "side of the cutout square (0: off; DeVries & Taylor 2017 use 16 on CIFAR)")
    auto_augment: str | None = _f(None, "None, 'trivial' (TrivialAugment) or 'randaugment'")
    mixup: float = _f(0.0, "mixup alpha (0: off)")
    cutmix: float = _f(0.0, "CutMix alpha (0: off)")
    label_smoothing: float = _f(0.0, "Szegedy et al. 2016")
    # --- optimisation ---
    epochs: int = _f(1, "passes over the training data")
    max_steps: int | None = _f(None, "stop after this many optimizer steps (He et al.'s 64k iterations)")
    batch_size: int = _f(128, "global batch (split across DDP processes)")
    eval_batch_size: int = _f(256, "batch for evaluation")
    optimizer: str = _f("sgd", "'sgd' or 'adamw'")
    lr: float = _f(0.1, "peak learning rate")
    momentum: float = _f(0.9, "SGD momentum (AdamW beta1)")
    nesterov: bool = _f(False, "Nesterov momentum for SGD")
    weight_decay: float = _f(5e-4, "L2 / decoupled weight decay")
    no_wd_norm_bias: bool = _f(True, "no weight decay on norm weights and biases")
    schedule: str = _f("cosine", "'cosine', 'step', 'multistep', 'onecycle' or 'constant'")
    milestones: tuple = _f((), "multistep: decay points (in `milestone_unit`)")
    milestone_unit: str = _f("epoch", "'epoch' or 'step' for milestones / step_size")
    step_size: float = _f(30, "step: decay every step_size (in milestone_unit)")
    gamma: float = _f(0.1, "decay factor of step / multistep")
    warmup_epochs: float = _f(0.0, "linear warm-up from 0 over this many epochs")
    min_lr: float = _f(0.0, "floor of cosine / one-cycle")
    grad_clip: float = _f(0.0, "clip the global grad norm to this (0: off)")
    ema_decay: float = _f(0.0, "EMA of weights (0: off; e.g. 0.999), evaluated alongside the model")
    # --- speed ---
    amp: str = _f("auto", "'auto' (bf16 on CUDA and on CPUs with native bf16, else off), 'off' (FP32), 'bf16', or "
                          "'fp16' (CUDA, with a GradScaler); 'none' means 'off'")
    channels_last: bool | None = _f(None, "NHWC memory format; None (auto): on iff amp resolves to bf16 or fp16")
    compile: bool = _f(False, "torch.compile the model")
    threads: int | None = _f(None, "torch intra-op threads (None: torch's default)")
    device: str = _f("auto", "'auto', 'cpu', 'cuda', 'cuda:1', ...")
    # --- run ---
    seed: int = _f(0, "seeds data order, augmentation, initialisation")
    out: str = _f("runs/run", "run directory")
    eval_every: int = _f(1, "evaluate every N epochs (and at the end)")
    ckpt_every_steps: int = _f(0, "also checkpoint every N steps within an epoch (0: at epoch ends only)")
    log_every_s: float = _f(10.0, "log-line interval when stderr is not a terminal")
    log_loss_every: int = _f(0, "also write the training loss every N steps to steps.jsonl (0: off)")
    max_skipped_steps: int = _f(10, "stop after this many consecutive non-finite AMP steps")
    sync_bn: bool = _f(False, "SyncBatchNorm under DDP")
    limit_train_batches: int | None = _f(None, "smoke runs: stop each epoch after N batches")
    limit_eval_batches: int | None = _f(None, "smoke runs: evaluate only N batches")
    # --- gone: accepted (with a warning) from code and saved configs written before it went ---
    eval_split: InitVar[str | None] = None

    def __post_init__(self, eval_split: str | None) -> None:
        if self.amp == "none":  # the old name of "off" (recipes and checkpoints before amp="auto")
            object.__setattr__(self, "amp", "off")
        if eval_split is not None:
            _warn_eval_split(eval_split)

    def replace(self, **changes: Any) -> "TrainConfig":
        return from_dict({**to_dict(self), **changes})


_FIELDS = {f.name: f for f in fields(TrainConfig)}
_CHOICES = {
    "preset": ("cifar", "imagenet"), "optimizer": ("sgd", "adamw"), "amp": AMP_CHOICES,
    "schedule": ("cosine", "step", "multistep", "onecycle", "constant"), "milestone_unit": ("epoch", "step"),
    "auto_augment": (None, "trivial", "randaugment"),
}


def _warn_eval_split(value: Any, stacklevel: int = 4) -> None:
    warnings.warn(f"eval_split is no longer a setting (got {value!r}); ignored: each epoch evaluates on the "
                  "validation split (val_split), best.pt is selected on it, and the test split is evaluated once, "
                  "at the end", FutureWarning, stacklevel=stacklevel)


def _check(cfg: TrainConfig) -> None:
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ValueError(f"{key} must be one of {choices}, got {getattr(cfg, key)!r}")
    positive = ("epochs", "batch_size", "eval_batch_size", "eval_every")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key} must be >= 1, got {getattr(cfg, key)!r}")
    for key in ("lr", "weight_decay", "mixup", "cutmix", "grad_clip", "ema_decay", "warmup_epochs", "cutout"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"{key} must be >= 0, got {getattr(cfg, key)!r}")
    if not 0.0 <= cfg.label_smoothing < 1.0 or not 0.0 <= cfg.val_split < 1.0 or cfg.ema_decay >= 1.0:
        raise ValueError("label_smoothing and val_split must be in [0, 1), ema_decay < 1")


def _coerce(name: str, value: Any) -> Any:
    """Bring a YAML or command-line value to the field's type; 'none' / 'null' mean None."""
    typ = _FIELDS[name].type  # a string: annotations are postponed
    optional = typ.endswith("| None")
    base = typ.split(" |")[0]
    if isinstance(value, str) and value.lower() in ("none", "null") and (optional or name == "auto_augment"):
        return None
    if name == "channels_last" and isinstance(value, str) and value.lower() == "auto":
        return None
    if value is None:
        if not optional:
            raise ValueError(f"{name} cannot be None")
        return None
    try:
        if base == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if base == "int":
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if base == "float":
            return float(value)
        if base == "tuple":
            items = value if isinstance(value, (list, tuple)) else str(value).replace(",", " ").split()
            return tuple(float(v) for v in items)
        if base == "dict":
            if not isinstance(value, Mapping):
                raise ValueError
            return dict(value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {typ}, got {value!r}") from None


def from_dict(values: Mapping[str, Any], source: str = "config") -> TrainConfig:
    if "eval_split" in values:  # saved configs and recipes from before it went
        _warn_eval_split(values["eval_split"], stacklevel=3)
        values = {k: v for k, v in values.items() if k != "eval_split"}
    unknown = [k for k in values if k not in _FIELDS]
    if unknown:
        hints = "; ".join(f"{k!r}" + (f" (did you mean {', '.join(difflib.get_close_matches(k, _FIELDS, 3))}?)"
                                      if difflib.get_close_matches(k, _FIELDS, 3) else "") for k in unknown)
        raise ValueError(f"{source}: unknown key(s) {hints}")
    cfg = TrainConfig(**{k: _coerce(k, v) for k, v in values.items()})
    _check(cfg)
    return cfg


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    out = dataclasses.asdict(cfg)
    out["milestones"] = list(cfg.milestones)
    return out


def list_recipes() -> list[str]:
    """Names of the recipes shipped with resnetlab (``resnetlab/configs/*.yaml``)."""
    root = resources.files("resnetlab") / "configs"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path
    shipped = Path(str(resources.files("resnetlab") / "configs" / f"{name_or_path}.yaml"))
    if not shipped.is_file():
        near = difflib.get_close_matches(str(name_or_path), list_recipes(), 3)
        raise FileNotFoundError(f"no recipe {str(name_or_path)!r}: recipes are {', '.join(list_recipes())}"
                                + (f" (close: {', '.join(near)})" if near else "") + ", or pass a .yaml path")
    return shipped


def load_config(recipe: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """A recipe (shipped name or YAML path) with ``overrides`` on top; both validated."""
    values: dict[str, Any] = {}
    if recipe is not None:
        path = recipe_path(recipe)
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a recipe is a mapping of keys to values, got {type(loaded).__name__}")
        loaded.pop("source", None)  # every recipe cites where it comes from
        values = dict(from_dict(loaded, str(path)).__dict__)
    return from_dict({**values, **dict(overrides or {})})


def resumed_config(saved: Mapping[str, Any], changes: TrainConfig, run_dir: str | os.PathLike) -> TrainConfig:
    """The config of a run resumed in ``run_dir``: the one its checkpoint saved, with the :data:`RESUMABLE`
    fields that ``changes`` sets (to other than their defaults)."""
    values = dict(saved)
    default = TrainConfig()
    values.update({k: getattr(changes, k) for k in RESUMABLE if getattr(changes, k) != getattr(default, k)})
    values["out"] = str(run_dir)
    return from_dict(values)


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
