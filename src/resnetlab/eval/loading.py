"""Trained models back from their checkpoints: model, class names, preprocessing, training config.

A resnetlab checkpoint records the model name and options, the class names and the evaluation
:class:`~resnetlab.data.Preprocess`, so a checkpoint alone is enough to evaluate, export or predict.
It is read with ``torch.load(weights_only=True)``: tensors and plain Python values only, never
unpickled objects. The training side (:mod:`resnetlab.train.checkpoint`) writes this format.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..data.preprocess import Preprocess
from ..models import create_model
from ..models.dense import DENSE_TASKS, create_dense
from ..models.weights import load_weights

__all__ = ["FORMAT", "TrainedModel", "load_trained", "read_checkpoint", "checkpoint_path", "checkpoint_preprocess"]

FORMAT = "resnetlab.checkpoint/1"


def checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory (its best.pt, else last.pt)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path} holds no best.pt or last.pt checkpoint")
    return path


def read_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, Any]:
    """Read a resnetlab checkpoint with ``weights_only=True``; refuse anything else clearly.

    A run directory means its ``last.pt`` (the resumable state). ``mmap``: tensors are mapped, not read — for
    a look at the record (task, classes) that does not pay for the weights.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # UnpicklingError for foreign objects, RuntimeError for corrupt files
        raise ValueError(f"{path}: not a loadable resnetlab checkpoint ({str(e).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not a resnetlab checkpoint (format {found!r}, expected {FORMAT!r})")
    return state


def checkpoint_preprocess(ck: dict[str, Any], where: str = "checkpoint") -> Preprocess:
    """The checkpoint's :class:`Preprocess` (also from checkpoints written before it existed)."""
    if "preprocess" in ck:
        return Preprocess.from_dict(ck["preprocess"], where)
    old = dict(ck.get("eval_transform") or {})  # resnetlab <= 0.1 wrote a dict and in_chans beside it
    return Preprocess.from_dict({**old, "in_chans": ck.get("in_chans", 3)}, where)


@dataclass
class TrainedModel:
    """A model rebuilt from a checkpoint, in eval mode, with everything needed to use it."""

    model: nn.Module
    classes: list[str]
    preprocess: Preprocess
    name: str  # registry name
    config: dict[str, Any]  # the training configuration, as saved
    path: Path  # the checkpoint file read
    precision: dict[str, Any] = field(default_factory=dict)  # {"amp": "bf16", "channels_last": True} it ran in
    operating_point: dict[str, Any] | None = None  # binary runs: the threshold chosen on val (see eval.clinical)
    task: str = "multiclass"  # "multilabel": several 0/1 labels per image, a sigmoid each; "detection", "segmentation"

    @property
    def in_chans(self) -> int:
        return self.preprocess.in_chans

    @property
    def positive_index(self) -> int:
        """A binary model's positive class: the stored point's, else the run's ``positive_class``, else 1."""
        if self.operating_point and "positive_index" in self.operating_point:
            return int(self.operating_point["positive_index"])
        named = self.config.get("positive_class")
        return self.classes.index(named) if named in self.classes else 1


def load_trained(checkpoint: str | os.PathLike, *, ema: bool = False,
                 device: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild the model a checkpoint (or run directory: best.pt, else last.pt) was trained as, with its
    (or its EMA's) weights. The stored operating point was chosen for the plain weights, so EMA weights
    come without one (argmax, unless a threshold is given)."""
    path = checkpoint_path(checkpoint)
    ck = read_checkpoint(path)
    if ck.get("task") in DENSE_TASKS:  # a detector or segmenter: torchvision's heads on a zoo trunk
        model = create_dense(ck["model_name"], ck["num_classes"], **ck["model_kwargs"])
    else:
        model = create_model(ck["model_name"], num_classes=ck["num_classes"], in_chans=ck["in_chans"],
                             layer_widths=ck.get("widths"), **ck["model_kwargs"])  # widths: a pruned model's own
    if ck.get("qat"):  # a quantization-aware run: its fake-quantizers, whose trained ranges the state dict holds
        from ..models.qat import rebuild_qat

        pre = checkpoint_preprocess(ck, str(path))
        model = rebuild_qat(model, (ck["in_chans"], pre.image_size, pre.image_size))
    state = ck["model"]
    if ema:
        if not ck.get("ema"):
            raise ValueError(f"{path}: this run kept no EMA weights (train with --ema-decay)")
        state = {k[len("module."):]: v for k, v in ck["ema"].items() if k.startswith("module.")}
    load_weights(model, state)
    return TrainedModel(model.to(device).eval(), list(ck["classes"]), checkpoint_preprocess(ck, str(path)),
                        ck["model_name"], dict(ck["config"]), path, dict(ck.get("precision") or {}),
                        None if ema else ck.get("operating_point"), ck.get("task", "multiclass"))
