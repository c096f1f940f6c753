"""Self-supervised pretraining as a task of the one training engine: SimCLR, MoCo v2, BYOL, SimSiam.

The engine keeps the loop (checkpoints, exact resume, progress, TensorBoard, DDP, bf16); :class:`SSLTask`
supplies the views (:mod:`resnetlab.data.views`), the heads and loss (:mod:`.ssl_losses`), the momentum
encoder's update after each step, and the kNN monitor (:mod:`resnetlab.eval.knn`) as the validation score.
Checkpoints keep the backbone as "model" (a classifier without its head, ``num_classes=0``), so
``resnetlab train --pretrained RUN`` and ``resnetlab probe`` take it as it is; the heads, the momentum
encoder and MoCo's queue ride along under "ssl_state" for resuming.

Method settings (heads, temperature, momentum) are lightly's CIFAR-10 benchmark's for ResNet-18
(docs/source/getting_started/benchmarks.rst), which follow the papers: SimCLR (Chen et al. 2020), MoCo v2
(Chen, Fan, Girshick & He 2020; symmetrised as lightly's benchmark does), BYOL (Grill et al. 2020), SimSiam
(Chen & He 2021).
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import torch
import torch.nn as nn

from ..data import ArrayDataset, resolve_data_root
from ..data.unlabelled import is_unlabelled_folder, open_unlabelled
from ..data.views import make_views, method_views, view_seed
from ..eval.knn import knn_top1
from ..models import create_model
from .config import TrainConfig
from .distributed import DistInfo, main_first
from .finetune import starting_weights
from .loaders import DataBundle, build_data, data_preprocess, make_batches
from .ssl_losses import KeyQueue, info_nce, mlp_head, momentum_update, negative_cosine, nt_xent
from .task import Step, TaskPlugin, refuse_classification_settings

__all__ = ["SSLModel", "SSLTask", "METHODS", "MIN_BATCH"]

log = logging.getLogger("resnetlab")

METHODS = {"simclr": {"temperature": 0.5}, "mocov2": {"temperature": 0.1, "momentum": 0.99},
           "byol": {"momentum": 0.99}, "simsiam": {}}
MIN_BATCH = {"simclr": 64}  # SimCLR's negatives are the batch's: below this, too few (Chen et al. 2020, fig. 9)


class SSLModel(nn.Module):
    """A backbone with its method's heads; ``forward(v1, v2)`` is the loss of two views (so DDP's gradient
    hooks see the whole computation), ``forward(x)`` the backbone's pooled features."""

    def __init__(self, backbone: nn.Module, method: str, *, temperature: float | None = None,
                 queue: int = 4096) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self.method, d = method, backbone.num_features
        self.temperature = temperature if temperature is not None else METHODS[method].get("temperature")
        self.backbone = backbone
        self.projector = {"simclr": lambda: mlp_head((d, d, 128)), "mocov2": lambda: mlp_head((d, d, 128), bn=False),
                          "byol": lambda: mlp_head((d, 4096, 256)),
                          "simsiam": lambda: mlp_head((d, d, d, 128), last_bn=True)}[method]()
        self.predictor = {"byol": lambda: mlp_head((256, 4096, 256)),
                          "simsiam": lambda: mlp_head((128, 64, 128))}.get(method, lambda: None)()
        self.target = None
        if method in ("mocov2", "byol"):  # the momentum encoder: a copy that only moving averages change
            self.target = nn.Sequential(copy.deepcopy(backbone), copy.deepcopy(self.projector))
            self.target.requires_grad_(False)
        self.queue = KeyQueue(queue, 128) if method == "mocov2" else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))

    def forward(self, v1: torch.Tensor, v2: torch.Tensor | None = None) -> torch.Tensor:
        if v2 is None:
            return self.backbone(v1)
        z1, z2 = self.embed(v1), self.embed(v2)
        if self.method == "simclr":
            return nt_xent(z1, z2, self.temperature)
        if self.method == "simsiam":
            return 0.5 * (negative_cosine(self.predictor(z1), z2) + negative_cosine(self.predictor(z2), z1))
        with torch.no_grad():
            k1, k2 = self.target(v1), self.target(v2)
        if self.method == "byol":
            return 0.5 * (negative_cosine(self.predictor(z1), k2) + negative_cosine(self.predictor(z2), k1))
        negatives = self.queue.keys.clone()  # the push below changes the queue in place before backward
        loss = 0.5 * (info_nce(z1, k2, negatives, self.temperature) + info_nce(z2, k1, negatives, self.temperature))
        self.queue.push(torch.cat([k2, k1]))
        return loss


class SSLTask(TaskPlugin):
    """What the engine needs for ``cfg.ssl``: unaugmented batches, views, the loss, momentum, kNN."""

    kind = "ssl"
    scores = ("knn_top1",)
    channels_last = True

    def __init__(self, cfg: TrainConfig) -> None:
        refuse_classification_settings(cfg, f"self-supervised pretraining ({cfg.ssl})", {"threshold": "none"})
        if cfg.ssl in MIN_BATCH and 2 <= cfg.batch_size < MIN_BATCH[cfg.ssl]:
            log.warning("batch_size %d is small for %s: a contrastive loss takes its negatives from the batch "
                        "(SimCLR's accuracy falls with fewer; %d or more is advised)", cfg.batch_size, cfg.ssl,
                        MIN_BATCH[cfg.ssl])
        if cfg.batch_size < 2:
            raise ValueError(f"batch_size {cfg.batch_size}: {cfg.ssl} trains BatchNorm on the batch, which needs "
                             "at least 2 images")
        self.cfg, self.select = cfg, "knn_top1"
        self.momentum = cfg.ssl_momentum if cfg.ssl_momentum is not None else METHODS[cfg.ssl].get("momentum")
        self.bank = None

    # --- data --------------------------------------------------------------------------------------
    def build_data(self, cfg: TrainConfig, info: DistInfo) -> DataBundle:
        """The training images (a labelled data set's train split, or every image of an unlabelled folder) and
        the labelled data of the kNN monitor (the same data set's, or ``knn_data``'s)."""
        root = resolve_data_root(cfg.data, download=cfg.download, cache_dir=cfg.cache_dir)
        if is_unlabelled_folder(root):
            bundle = _unlabelled_bundle(cfg, root, info)
        else:
            bundle = build_data(cfg, info)
            log.info("self-supervised %s on %s: %d training images; their labels (%d classes) feed only the kNN "
                     "monitor", cfg.ssl, bundle.root, len(bundle.train), len(bundle.classes))
        _check_crop(bundle)
        self.knn = bundle if len(bundle.classes) > 1 else None
        if cfg.knn_data:
            knn = build_data(cfg.replace(data=cfg.knn_data), info)
            if knn.preprocess.image_size != bundle.preprocess.image_size:
                raise ValueError(f"knn_data {cfg.knn_data}: its images come to {knn.preprocess.image_size} px, the "
                                 f"training images to {bundle.preprocess.image_size} px; give --image-size")
            self.knn = knn
        elif self.knn is None:
            log.info("no labels for a kNN monitor (give --knn-data LABELLED): best.pt is the last epoch's")
        self.in_chans = bundle.in_chans
        return bundle

    def batches(self, bundle: DataBundle, cfg: TrainConfig, info: DistInfo, split: str):
        if split == "train":
            self.size, self.rank = bundle.preprocess.image_size, info.rank
            self.mean = torch.tensor(bundle.preprocess.mean).view(1, -1, 1, 1)
            self.std = torch.tensor(bundle.preprocess.std).view(1, -1, 1, 1)
            self.views = method_views(cfg.ssl, self.size)
            return make_batches(bundle, cfg, info, split="train", augment=False)
        if self.knn is None:
            return None
        if split == "val":
            self.bank = make_batches(self.knn, cfg, info, split="bank")
        return make_batches(self.knn, cfg, info, split=split)

    # --- model -------------------------------------------------------------------------------------
    def build_model(self, cfg: TrainConfig, num_classes: int, resuming: bool) -> tuple[nn.Module, dict | None]:
        path, record = (None, None) if resuming else starting_weights(cfg)
        backbone = create_model(cfg.model, num_classes=0, in_chans=self.in_chans, weights=path,
                                **cfg.model_kwargs)
        if path is not None:
            log.info("backbone starts from %s", path)
        return SSLModel(backbone, cfg.ssl, temperature=cfg.ssl_temperature, queue=cfg.ssl_queue), record

    def model_state(self, model: SSLModel) -> dict[str, torch.Tensor]:
        return model.backbone.state_dict()

    def load_model_state(self, model: SSLModel, ck: dict[str, Any]) -> None:
        if ck.get("ssl_state") is None:  # the backbone alone (best.pt for the test pass needs no more)
            model.backbone.load_state_dict(ck["model"])
        else:
            model.load_state_dict({**ck["ssl_state"], **{f"backbone.{k}": v for k, v in ck["model"].items()}})

    def record(self, model: SSLModel) -> dict[str, Any]:
        heads = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
        return {"ssl_state": heads, "ssl": {"method": model.method, "temperature": model.temperature,
                                            "momentum": self.momentum, "views": [str(v) for v in self.views]},
                "num_classes": 0}

    # --- one step -----------------------------------------------------------------------------------
    def loss(self, net: nn.Module, x: Any, y: Any, device: torch.device, where: Step) -> torch.Tensor:
        # the statistics move to the device once (.to is a no-op after); un- and re-normalising both run there
        self.mean, self.std = mean, std = self.mean.to(device), self.std.to(device)
        x01 = (x.to(device, non_blocking=True) * std + mean).clamp_(0, 1)
        seed = self.cfg.seed
        v1, v2 = ((make_views(x01, r, self.size, view_seed(seed, where.epoch, where.batch, i, self.rank)) - mean) / std
                  for i, r in enumerate(self.views))
        return net(v1, v2)

    def after_step(self, model: SSLModel, where: Step) -> None:
        if model.target is None:
            return
        m = self.momentum
        if model.method == "byol":  # cosine from the base rate to 1 over the run (Grill et al. 2020, §3.2)
            m = 1 - (1 - m) * (math.cos(math.pi * where.progress) + 1) / 2
        momentum_update(model.target, nn.Sequential(model.backbone, model.projector), m)

    # --- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, model: SSLModel, batches, num_classes: int, device: torch.device, amp: str) -> dict[str, Any]:
        if self.bank is None or batches is None:
            return {"knn_top1": None}
        net = model.backbone if isinstance(model, SSLModel) else model
        return {"knn_top1": knn_top1(net, self.bank.epoch(0), batches.epoch(0), len(self.knn.classes),
                                     k=self.cfg.knn_k, device=device)}

    def row(self, metrics: dict[str, Any], prefix: str) -> dict[str, Any]:
        return {f"{prefix}_knn_top1": metrics["knn_top1"]} if metrics["knn_top1"] is not None else {}


def _unlabelled_bundle(cfg: TrainConfig, root, info: DistInfo) -> DataBundle:
    """Every image of an unlabelled folder as the training split (rank 0 builds the cache first)."""
    train = main_first(info, lambda: open_unlabelled(root, cache_dir=cfg.cache_dir, strict=cfg.strict_data,
                                                     progress=info.is_main))
    log.info("self-supervised %s on %s: %d unlabelled images", cfg.ssl, root, len(train))
    return DataBundle(train, train, list(train.classes), data_preprocess(cfg, train), str(root), None, 0.0, cfg.seed)


def _check_crop(bundle: DataBundle) -> None:
    """Views crop at the network's input size: cached (small) images must be at least that large."""
    train, size = bundle.train, bundle.preprocess.image_size
    if isinstance(train, ArrayDataset) and min(train.image_size) < size:
        raise ValueError(f"{bundle.root}: its images are {train.image_size[0]}x{train.image_size[1]} px, smaller "
                         f"than the {size} px crop (--image-size {size}); give --image-size {min(train.image_size)} "
                         "or less")
