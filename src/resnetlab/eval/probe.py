"""Linear probe: how well a frozen backbone's features separate labelled classes (the self-supervised field's
second yardstick after kNN; Chen et al. 2020 §4, Grill et al. 2020 §4.1).

The backbone runs once over the data (features cached as .npy beside the checkpoint, keyed by the checkpoint's
and the data's identity, so a second probe with other settings reads them back); a linear classifier then
trains on the cached features — full-batch L-BFGS on the multinomial cross-entropy with a small L2 penalty,
the optimum scikit-learn's LogisticRegression reaches, in torch so the features never leave the process
— and is scored on the test split.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import open_dataset, resolve_data_root
from ..data.preprocess import Preprocess
from ..models import create_model
from ..utils.fileio import atomic_path
from .batches import eval_batches
from .knn import features
from .loading import checkpoint_path, checkpoint_preprocess, read_checkpoint

__all__ = ["ProbeResult", "linear_probe", "load_backbone"]

log = logging.getLogger("resnetlab")


@dataclass
class ProbeResult:
    top1: float  # on the test split
    train_top1: float
    num_train: int
    num_test: int
    classes: list[str]
    epochs: int
    weight_decay: float
    checkpoint: str
    data: str
    ssl: dict[str, Any] | None  # the backbone's self-supervised provenance, if any

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_backbone(source: str | os.PathLike) -> tuple[nn.Module, Preprocess, dict[str, Any], Path]:
    """(backbone without classifier, its preprocessing, the checkpoint, its path) of a run or checkpoint: a
    self-supervised backbone, or a classifier's trunk with its head left out."""
    path = checkpoint_path(source)
    ck = read_checkpoint(path)
    name = ck.get("model_name")
    if ck.get("task") in ("detection", "segmentation") or not name:
        raise ValueError(f"{path}: a {ck.get('task', 'non-classification')} checkpoint has no backbone to probe; "
                         "give a `resnetlab pretrain` or `resnetlab train` run")
    model = create_model(name, num_classes=0, in_chans=ck.get("in_chans", 3), **(ck.get("model_kwargs") or {}))
    state = {k: v for k, v in ck["model"].items() if not k.startswith(model.classifier_name + ".")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: its weights do not fit {name} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval(), checkpoint_preprocess(ck, str(path)), ck, path


def _cached_features(model, pre, ds, split: str, key: str, cache: Path, batch_size: int):
    f_path, y_path = cache / f"{key}-{split}-x.npy", cache / f"{key}-{split}-y.npy"
    if f_path.is_file() and y_path.is_file():
        return torch.from_numpy(np.load(f_path)), torch.from_numpy(np.load(y_path))
    f, y = features(model, eval_batches(ds, pre, batch_size=batch_size).epoch(0))
    for path, a in ((f_path, f.numpy()), (y_path, y.numpy())):
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, a)
    return f, y


def _fit_linear(x: torch.Tensor, y: torch.Tensor, classes: int, epochs: int, wd: float) -> nn.Linear:
    torch.manual_seed(0)
    head = nn.Linear(x.shape[1], classes)
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=epochs, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y) + wd * head.weight.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return head


def linear_probe(checkpoint: str | os.PathLike, data: str | os.PathLike, *, epochs: int = 100,
                 weight_decay: float = 1e-4, batch_size: int = 256, cache_dir: str | os.PathLike | None = None
                 ) -> ProbeResult:
    """Train a linear classifier on the frozen features of ``checkpoint``'s backbone over ``data``'s train
    split (``epochs`` L-BFGS iterations) and score it on the test split."""
    if epochs < 1 or weight_decay < 0:
        raise ValueError(f"need epochs >= 1 and weight_decay >= 0, got epochs={epochs!r}, "
                         f"weight_decay={weight_decay!r}")
    model, pre, ck, path = load_backbone(checkpoint)
    root = resolve_data_root(data, cache_dir=cache_dir)
    train, test = (open_dataset(root, s, cache_dir=cache_dir, progress=False) for s in ("train", "test"))
    if list(train.classes) != list(test.classes) or len(train.classes) < 2:
        raise ValueError(f"{root}: a linear probe needs labelled train and test splits with the same classes "
                         f"(2 or more), got {list(train.classes)} and {list(test.classes)}")
    digest = hashlib.sha256(f"{path.stat().st_mtime_ns}:{path.stat().st_size}:{path}:{root}".encode()).hexdigest()
    cache = path.parent / "probe-cache"
    (xtr, ytr), (xte, yte) = (_cached_features(model, pre, ds, s, digest[:16], cache, batch_size)
                              for s, ds in (("train", train), ("test", test)))
    head = _fit_linear(xtr, ytr, len(train.classes), epochs, weight_decay)
    with torch.no_grad():
        acc = lambda x, y: float((head(x).argmax(1) == y).float().mean())  # noqa: E731
        result = ProbeResult(acc(xte, yte), acc(xtr, ytr), len(ytr), len(yte), list(train.classes), epochs,
                             weight_decay, str(path), str(root), ck.get("ssl"))
    log.info("linear probe of %s on %s: test top-1 %.4f (train %.4f), %d / %d images", path, root, result.top1,
             result.train_top1, result.num_train, result.num_test)
    return result
