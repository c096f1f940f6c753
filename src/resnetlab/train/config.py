"""The training configuration: one frozen dataclass, YAML recipes, command-line overrides.

Every field has a default and a comment; a recipe YAML (read with ``yaml.safe_load``) may set
any field and nothing else — an unknown key is an error that names it and the close matches.
The resolved configuration is saved with every run (``config.yaml`` in the run directory).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import warnings
from dataclasses import InitVar, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..utils.fileio import atomic_write_text
from ..utils.hardware import AMP_CHOICES

__all__ = ["TrainConfig", "RESUMABLE", "parse_threshold", "parse_class_weights",
           "load_config", "list_recipes", "recipe_path", "save_config", "resumed_config"]

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
    pretrained: str | None = _f(None, "weights to start from: 'torchvision' (its published ImageNet weights, from the "
                                      "torch hub cache or downloaded), a .pth/.pt state dict, safetensors, or a "
                                      "resnetlab checkpoint or run directory; the head is re-made for the classes")
    weights: str | None = _f(None, "the same as pretrained (its name before pretrained existed)")
    # --- fine-tuning ---
    finetune: str = _f("full", "'full', 'linear' (only the head trains; backbone and its BN statistics frozen) or "
                               "'gradual' (the head alone for finetune_epochs, then everything)")
    finetune_epochs: int = _f(1, "gradual: epochs that train the head alone")
    backbone_lr_scale: float = _f(1.0, "learning rate of the backbone relative to the head's (e.g. 0.1)")
    layer_decay: float = _f(1.0, "per-stage learning-rate decay below the head: stage k from the top gets "
                                 "layer_decay**k (1: off; e.g. 0.7)")
    freeze_bn: bool = _f(False, "keep batch norm in eval mode (running statistics frozen): for tiny batches")
    # --- distillation (Hinton et al. 2015) ---
    distill_from: str | None = _f(None, "teacher: a resnetlab checkpoint or run directory trained on the same classes; "
                                        "the loss becomes (1 - distill_alpha) * task loss + distill_alpha * T^2 * KL")
    distill_alpha: float = _f(0.5, "weight of the teacher's soft targets in [0, 1]")
    distill_temperature: float = _f(4.0, "softmax temperature T of the soft targets (> 0)")
    # --- quantization-aware training (NNCF) ---
    qat: bool = _f(False, "train with int8 fake-quantizers (NNCF, OpenVINO's CPU scheme) whose ranges start from "
                          "qat_calib_images validation images; export with resnetlab compress or qat_to_openvino")
    qat_calib_images: int = _f(300, "images that initialise the int8 ranges of a QAT run")
    # --- data ---
    data: str | None = _f(None, "folder (train/ + val/ or test/), CIFAR-10 archive/folder or MedMNIST .npz")
    val_split: float = _f(0.0, "validation split, evaluated each epoch to select best.pt: 0 (auto) uses the data's own "
                               "val split, else holds out 0.1 of train; >0 always holds out this fraction of train "
                               "(seeded, stratified). The test split is evaluated once, at the end")
    cache_dir: str | None = _f(None, "uint8 cache of small images (default ~/.cache/resnetlab)")
    download: bool = _f(False, "no data found: fetch CIFAR-10's official archive (md5-checked) into the cache")
    strict_data: bool = _f(False, "an unreadable image is an error instead of a reported skip")
    window: str | None = _f(None, "DICOM files: the VOI window centre,width (e.g. 40,400 for soft tissue; -600,1500 "
                                  "for lung) instead of each file's own; stored with the model for prediction")
    workers: int = _f(2, "DataLoader workers for streamed (large-image) folders")
    masks: str = _f("auto", "detection/segmentation mask folders: 'instance' (value k = object k) or 'semantic' "
                            "(value = class); auto: instance for a detector, semantic for a segmenter")
    # --- self-supervised pretraining (resnetlab pretrain) ---
    ssl: str | None = _f(None, "self-supervised method: simclr, mocov2, byol or simsiam (None: supervised training); "
                               "labels, if the data has them, feed only the kNN monitor")
    ssl_temperature: float | None = _f(None, "contrastive temperature; None: the method's (SimCLR 0.5, MoCo v2 0.1: "
                                             "lightly's CIFAR-10 settings)")
    ssl_momentum: float | None = _f(None, "momentum encoder (MoCo v2, BYOL): base rate; None: 0.99 (lightly's CIFAR-10 "
                                          "setting); BYOL ramps it to 1 on a cosine (Grill et al. 2020)")
    ssl_queue: int = _f(4096, "MoCo v2: keys in the queue (lightly's CIFAR-10 setting; 65536 on ImageNet)")
    knn_k: int = _f(200, "kNN monitor of self-supervised runs: neighbours (Wu et al. 2018)")
    knn_data: str | None = _f(None, "labelled data for the kNN monitor when --data has no labels (a folder of images)")
    # --- augmentation ---
    preset: str = _f("cifar", "'cifar' (pad-4 crop + flip) or 'imagenet' (RandomResizedCrop + flip)")
    image_size: int | None = _f(None, "network input size; None: the data's own size (cifar) / 224 (imagenet)")
    crop_pad: int = _f(4, "padding of the cifar random crop")
    flip: bool = _f(True, "random horizontal flips (off for images with a handedness: chest X-rays, organ scans)")
    cutout: int = _f(0, "side of the cutout square (0: off; DeVries & Taylor 2017 use 16 on CIFAR)")
    auto_augment: str | None = _f(None, "None, 'trivial' (TrivialAugment) or 'randaugment'")
    mixup: float = _f(0.0, "mixup alpha (0: off)")
    cutmix: float = _f(0.0, "CutMix alpha (0: off)")
    label_smoothing: float = _f(0.0, "Szegedy et al. 2016")
    shuffle_labels: bool = _f(False, "train and validate on a seeded permutation of the labels (the test split "
                                     "keeps its own): the control run of Adebayo et al. 2018's data-randomisation "
                                     "test of explanations, and Zhang et al. 2017's memorisation experiment")
    task: str = _f("auto", "what the labels are: 'auto' (read from their shape), 'binary', 'multiclass', 'ordinal' "
                           "(grades, trained as classes as MedMNIST v2 does) or 'multilabel'; a given task that "
                           "the data contradicts is an error before training")
    # --- imbalance and decisions ---
    class_weights: str = _f("none", "loss weight per class: 'none', 'auto' (inverse frequency), 'effective' (effective "
                                    "number of samples, Cui et al. 2019) or w1,w2,... in class order")
    sampler: str = _f("shuffle", "'shuffle', or 'balanced': each draw picks a class uniformly (epoch size kept)")
    focal_gamma: float = _f(0.0, "focal loss gamma (Lin et al. 2017; 0: plain cross-entropy)")
    logit_adjust: float = _f(0.0, "tau of the logit-adjusted loss (Menon et al. 2021; 0: off, 1: the paper's): "
                                  "corrects argmax for the training priors")
    threshold: str = _f("none", "binary tasks: 'none' (argmax), 'auto' (chosen on validation by threshold_metric, "
                                "stored in the checkpoint), a probability of the positive class in [0, 1], or "
                                "'auto-binary' (auto when the data has 2 classes, argmax otherwise: for recipes)")
    threshold_metric: str = _f("youden", "what --threshold auto maximises on validation: youden, balanced_accuracy, "
                                         "f1, sensitivity@X or specificity@X (e.g. sensitivity@0.95)")
    positive_class: str | None = _f(None, "binary tasks: the positive class's name (default: the second class)")
    select_metric: str = _f("top1", "validation metric that selects best.pt: top1, auc or balanced_accuracy; "
                                       "detectors: map (default), map_50, map_75; segmenters: miou (default), "
                                       "pixel_acc")
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
    "auto_augment": (None, "trivial", "randaugment"), "sampler": ("shuffle", "balanced"),
    "select_metric": ("top1", "auc", "balanced_accuracy", "map", "map_50", "map_75", "miou", "pixel_acc", "knn_top1"),
    "ssl": (None, "simclr", "mocov2", "byol", "simsiam"),
    "finetune": ("full", "linear", "gradual"), "masks": ("auto", "instance", "semantic"),
    "task": ("auto", "binary", "multiclass", "ordinal", "multilabel"),
}


def _warn_eval_split(value: Any, stacklevel: int = 4) -> None:
    warnings.warn(f"eval_split is no longer a setting (got {value!r}); ignored: each epoch evaluates on the "
                  "validation split (val_split), best.pt is selected on it, and the test split is evaluated once, "
                  "at the end", FutureWarning, stacklevel=stacklevel)


def _check(cfg: TrainConfig) -> None:
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ValueError(f"{key} must be one of {choices}, got {getattr(cfg, key)!r}")
    positive = ("epochs", "batch_size", "eval_batch_size", "eval_every", "qat_calib_images")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key} must be >= 1, got {getattr(cfg, key)!r}")
    for key in ("lr", "weight_decay", "mixup", "cutmix", "grad_clip", "ema_decay", "warmup_epochs", "cutout"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"{key} must be >= 0, got {getattr(cfg, key)!r}")
    if not 0.0 <= cfg.label_smoothing < 1.0 or not 0.0 <= cfg.val_split < 1.0 or cfg.ema_decay >= 1.0:
        raise ValueError("label_smoothing and val_split must be in [0, 1), ema_decay < 1")
    _check_imbalance(cfg)


def _check_imbalance(cfg: TrainConfig) -> None:
    """The settings of imbalance and decisions that can be judged without the data."""
    from ..eval.clinical import parse_threshold_metric  # here: the eval package pulls in torch, a config need not

    from ..data.preprocess import parse_window

    parse_window(cfg.window)
    parse_class_weights(cfg.class_weights)
    parse_threshold_metric(cfg.threshold_metric)
    parse_threshold(cfg.threshold)
    for key in ("focal_gamma", "logit_adjust"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"{key} must be >= 0, got {getattr(cfg, key)!r}")
    if cfg.weights is not None and cfg.pretrained is not None and cfg.weights != cfg.pretrained:
        raise ValueError(f"weights ({cfg.weights!r}) and pretrained ({cfg.pretrained!r}) are the same setting; give "
                         "one of them")
    if cfg.finetune == "gradual" and not 1 <= cfg.finetune_epochs < cfg.epochs:
        raise ValueError(f"finetune='gradual' trains the head alone for finetune_epochs, then everything: it needs "
                         f"1 <= finetune_epochs < epochs, got finetune_epochs={cfg.finetune_epochs}, "
                         f"epochs={cfg.epochs}")
    if not 0.0 < cfg.layer_decay <= 1.0 or cfg.backbone_lr_scale < 0:
        raise ValueError(f"layer_decay must be in (0, 1] and backbone_lr_scale >= 0, got {cfg.layer_decay!r} and "
                         f"{cfg.backbone_lr_scale!r}")
    if not 0.0 <= cfg.distill_alpha <= 1.0 or not cfg.distill_temperature > 0:
        raise ValueError(f"distill_alpha must be in [0, 1] and distill_temperature > 0, got {cfg.distill_alpha!r} "
                         f"and {cfg.distill_temperature!r}")
    if cfg.focal_gamma > 0 and (cfg.mixup > 0 or cfg.cutmix > 0 or cfg.label_smoothing > 0):
        raise ValueError(f"focal_gamma={cfg.focal_gamma} takes hard labels: it does not combine with mixup, cutmix "
                         "or label_smoothing (set them to 0)")


def parse_class_weights(spec: str) -> str | tuple[float, ...]:
    """``"none" | "auto" | "effective"`` as such, ``"1,4.5"`` as a tuple of positive floats."""
    text = str(spec).strip().lower()
    if text in ("none", "auto", "effective"):
        return text
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"class_weights must be 'none', 'auto', 'effective' or positive numbers w1,w2,... (one "
                         f"per class), got {spec!r}")
    return values


def parse_threshold(value: str) -> str | float:
    """``"none"`` / ``"auto"`` / ``"auto-binary"`` as such, else a probability in [0, 1]."""
    text = str(value).strip().lower()
    if text in ("none", "auto", "auto-binary"):
        return text
    try:
        p = float(text)
    except ValueError:
        p = float("nan")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"threshold must be 'none', 'auto', 'auto-binary' or a probability of the positive class in "
                         f"[0, 1], got {value!r}")
    return p


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
        if isinstance(value, (list, tuple)):  # class_weights: [1, 4] in YAML
            return ",".join(str(v) for v in value)
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
