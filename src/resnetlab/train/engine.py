"""The fit loop: config -> data -> model -> steps -> run directory.

One engine serves ``resnetlab train`` and every experiment built on it. A run directory holds
``config.yaml`` (resolved), ``metrics.jsonl`` and ``metrics.csv`` (one row per epoch), TensorBoard
event files, ``last.pt`` / ``best.pt`` checkpoints, ``train.log`` and a final ``summary.json``
(see :mod:`resnetlab.train.metrics_log`). Each epoch is evaluated on the validation split, which
selects ``best.pt``; the test split is evaluated once, on ``best.pt``, after training.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..data import mix_batch
from ..data.medmnist import medmnist_positive
from ..eval import collect_logits, task_metrics
from ..models import create_model
from ..models.dense import dense_kind
from ..models.qat import prepare_qat, qat_record, rebuild_qat
from ..models.widths import layer_widths
from ..utils import Progress
from .checkpoint import (TrainingDiverged, load_checkpoint, rng_state, save_checkpoint, set_rng_state,
                         update_checkpoint)
from .config import TrainConfig, resumed_config, save_config, to_dict
from .decisions import (build_objective, check_task, class_counts, describe_point, operating_point, selection_score,
                        task_of, test_row, threshold_setting)
from .dense import DenseTask
from .task import Step, TaskPlugin
from .finetune import FinetunePolicy, remake_head, starting_weights
from .distill import Distiller
from .distributed import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed
from .loaders import build_data, generator, make_batches
from .metrics_log import RunLog, claim_run_dir
from .optim import ModelEma, build_optimizer, build_scheduler
from .runtime import autocast, log_row, pick_device, resolve_precision, setup_logging, unwrap

__all__ = ["TrainingDiverged", "fit", "train", "pick_device", "Trainer", "TrainResult"]

log = logging.getLogger("resnetlab")


@dataclass
class TrainResult:
    """What a finished run gives back: its summary, per-epoch history, trained model and where it all is."""

    summary: dict[str, Any]  # as written to summary.json
    history: list[dict[str, Any]]  # one row per epoch, as in metrics.jsonl
    model: nn.Module  # the trained model (unwrapped from DDP / torch.compile), in eval mode
    run_dir: Path
    classes: list[str]
    num_train: int  # training images
    num_eval: int  # images of the split evaluated each epoch (validation)

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / "best.pt" if (self.run_dir / "best.pt").is_file() else self.run_dir / "last.pt"

    def __getitem__(self, key: str) -> Any:  # result["best_val_top1"] reads the summary
        return self.summary[key]


class Trainer:
    """Holds everything a run needs; ``fit()`` trains to the end (or resumes and finishes).

    ``resume_state``: a checkpoint (as :func:`load_checkpoint` reads it) to continue. A run folder that holds
    another run's files is refused unless resuming or ``overwrite=True`` (which removes those files first).
    """

    def __init__(self, cfg: TrainConfig, resume_state: dict[str, Any] | None = None, *,
                 overwrite: bool = False) -> None:
        self.cfg, self.device = cfg, pick_device(cfg.device)
        self.info: DistInfo = init_distributed(self.device)
        if self.info.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.info.local_rank)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.run_dir = Path(cfg.out)
        removed = self._claim(resume_state is not None, overwrite)
        setup_logging(self.run_dir, self.info.is_main)
        if removed:
            log.info("overwrite: removed %d files of the previous run in %s", len(removed), self.run_dir)
        torch.manual_seed(cfg.seed)
        # detection, segmentation and self-supervised pretraining plug into this loop (None: classification)
        self.plugin: TaskPlugin | None = task_plugin(cfg)
        self.data = self.plugin.build_data(cfg, self.info) if self.plugin else build_data(cfg, self.info)
        # the resolved config names the data and the validation hold-out it used (so eval can find them again)
        self.cfg = cfg = cfg.replace(data=self.data.root, val_split=self.data.val_split)
        self._check_data()
        cfg = self.cfg
        self.amp, self.channels_last = resolve_precision(cfg, self.device, (resume_state or {}).get("precision"))
        batches = self.plugin.batches if self.plugin else make_batches
        if self.plugin and not self.plugin.channels_last:
            self.channels_last = False  # e.g. a detector takes a list of images of their own sizes
        self.train_batches = batches(self.data, cfg, self.info, split="train")
        self.eval_batches = batches(self.data, cfg, self.info, split="val")
        self.test_batches = batches(self.data, cfg, self.info, split="test")
        self._resume_widths = (resume_state or {}).get("widths")
        self._resume_distill = (resume_state or {}).get("distill")
        self._build_model(resuming=resume_state is not None)
        self.state = {"epoch": 0, "batch": 0, "global_step": 0, "wall_time_s": 0.0, "train_time_s": 0.0,
                      "train_images": 0, "best_score": -math.inf, "history": [], "epoch_sums": [0.0, 0, 0, 0]}
        if resume_state is not None:
            self._restore(resume_state)
        if self.info.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
            redo = self.state["global_step"] + 1 if resume_state else None  # the first step this run logs anew
            self.runlog = RunLog(self.run_dir, purge_step=redo)
            if resume_state is not None:  # the files hold exactly the checkpoint's epochs and steps
                self.runlog.write_history(self.state["history"])
                self.runlog.drop_steps_after(self.state["global_step"])

    def _claim(self, resume: bool, overwrite: bool) -> list[Path]:
        """Rank 0 checks (and with overwrite, clears) the run folder; every rank stops if it refuses."""
        problem, removed = "", []
        if self.info.is_main:
            try:
                removed = claim_run_dir(self.run_dir, resume=resume, overwrite=overwrite)
            except ValueError as e:
                problem = str(e)
        if all_reduce_sum([float(bool(problem))], self.info, self.device)[0]:
            raise ValueError(problem or f"rank 0 refused the run folder {self.run_dir}")
        return removed

    def _check_data(self) -> None:
        """Settings the data cannot honour fail here, before the model is even built."""
        d, classes = self.data, self.data.classes
        if self.plugin is not None:
            self.task, self.train_counts = self.plugin.kind, None
            return
        self.task = task_of(d.train)
        implied = medmnist_positive(d.root)
        if self.cfg.positive_class is None and implied in classes and len(classes) == 2 and self.task != "multilabel":
            self.cfg = self.cfg.replace(positive_class=implied)
            log.info("positive class: %s (what %s's finding is; --positive-class to choose another)", implied,
                     Path(d.root).name)
        self.train_counts = class_counts(d.train, len(classes))
        check_task(self.cfg, classes, {"train": (d.train.source, self.train_counts),
                                       "val": (d.val_source, class_counts(d.val, len(classes)))}, self.task)

    def _build_model(self, resuming: bool) -> None:
        cfg, data = self.cfg, self.data
        self.num_classes = cfg.num_classes or len(data.classes)
        self.in_chans = cfg.in_chans or data.in_chans
        if self.plugin is not None:
            model, self.pretrained = self.plugin.build_model(cfg, self.num_classes, resuming)
        else:
            model = self._classifier(resuming)
        self.policy = FinetunePolicy.from_config(cfg)
        if self.policy.mode == "gradual" and self.info.enabled:
            raise ValueError("finetune='gradual' changes which parameters train mid-run, which DistributedDataParallel "
                             "cannot follow; use one process, or finetune='full' with backbone_lr_scale")
        self.policy.apply(model, 0)  # a linear probe's frozen backbone, before DDP sees the parameters
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.sync_bn and self.device.type != "cuda":
            raise ValueError("sync_bn needs CUDA (torch's SyncBatchNorm runs on GPUs only); on the CPU, "
                             "--model-kwargs norm_layer=group makes normalisation independent of the batch split")
        if cfg.sync_bn and self.info.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self._named_params = list(model.named_parameters())  # frozen ones have no grad and are passed over
        self.ema = ModelEma(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.distiller = self._distiller()
        self.objective = None if self.plugin else build_objective(cfg, self.train_counts, self.data.classes,
                                                                 self.device, task=self.task,
                                                                 num_train=len(self.data.train))
        self.optimizer = build_optimizer(model, cfg, None if self.policy.trivial else self.policy.lr_scales(model))
        self.scheduler = build_scheduler(self.optimizer, cfg, self.train_batches.num_batches)
        if self.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("amp='fp16' needs CUDA; on the CPU use amp='bf16' (or 'auto')")
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp == "fp16" else None
        net: nn.Module = model
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.net = torch.compile(net) if cfg.compile else net

    def _classifier(self, resuming: bool) -> nn.Module:
        cfg, data = self.cfg, self.data
        path, self.pretrained = (None, None) if resuming else starting_weights(cfg)  # a resume has its own
        # a resumed run rebuilds the widths it had (a pruned model's), a new one takes those of its weights file
        widths = (self._resume_widths or None) if resuming else None
        model = create_model(cfg.model, num_classes=self.num_classes, in_chans=self.in_chans, weights=path,
                             layer_widths=widths, **cfg.model_kwargs)
        if path is not None:
            log.info("starting from %s (%s)", path, self.pretrained["source"])
            if remake_head(model, self.pretrained, list(data.classes)):
                log.info("classifier re-made for %s: the weights' head was trained for %s", list(data.classes),
                         self.pretrained["classes"])
        if cfg.qat:  # a resume rebuilds the quantizer layout without calibrating; _restore loads the trained ranges
            side = self.data.preprocess.image_size
            model = (rebuild_qat(model, (self.in_chans, side, side)) if resuming
                     else prepare_qat(model, self._calibration(cfg.qat_calib_images)))
        return model

    def _calibration(self, n: int) -> list[torch.Tensor]:
        """The first ``n`` validation images under the evaluation preprocessing (QAT's starting ranges)."""
        out, have = [], 0
        for x, *_ in self.eval_batches.epoch(0):
            out.append(x[: n - have])
            have += len(out[-1])
            if have >= n:
                break
        if not have:
            raise ValueError("qat: quantization-aware training calibrates on the validation split, which is empty")
        return out

    def _distiller(self) -> Distiller | None:
        if not self.cfg.distill_from:
            return None
        if self.task == "multilabel":
            raise ValueError("distill_from: distillation takes multiclass and binary runs, this one is multi-label")
        started = (self._resume_distill or {}).get("sha256")
        return Distiller(self.cfg.distill_from, alpha=self.cfg.distill_alpha, temperature=self.cfg.distill_temperature,
                         classes=list(self.data.classes), in_chans=self.in_chans, device=self.device,
                         channels_last=bool(self.channels_last), expect_sha256=started)

    # --- checkpoints -------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        d = self.data
        return {
            "model": self.plugin.model_state(unwrap(self.model)) if self.plugin else unwrap(self.model).state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None, "rng": rng_state(),
            **self.state, "config": to_dict(self.cfg),
            "model_name": self.cfg.model, "model_kwargs": dict(self.cfg.model_kwargs),
            "num_classes": self.num_classes, "in_chans": self.in_chans, "classes": list(d.classes),
            "preprocess": d.preprocess.to_dict(),
            "precision": {"amp": self.amp, "channels_last": self.channels_last}, "pretrained": self.pretrained,
            "task": self.task, "widths": None if self.plugin else layer_widths(unwrap(self.model)),
            "distill": self.distiller.record if self.distiller else None,
            "qat": qat_record(self.cfg.qat_calib_images) if self.cfg.qat else None,
            **(self.plugin.record(unwrap(self.model)) if self.plugin else {}),
        }

    def _save(self, name: str) -> None:
        if self.info.is_main:
            save_checkpoint(self._payload(), self.run_dir / name)

    def _load_weights(self, model: nn.Module, ck: dict[str, Any]) -> None:
        if self.plugin is not None:
            self.plugin.load_model_state(model, ck)
        else:
            model.load_state_dict(ck["model"])

    def _restore(self, ck: dict[str, Any]) -> None:
        self._load_weights(unwrap(self.model), ck)
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        if self.ema is not None and ck.get("ema"):
            self.ema.load_state_dict(ck["ema"])
        for key in self.state:
            self.state[key] = ck.get(key, self.state[key])  # epoch_sums: not in checkpoints before it
        if "best_score" not in ck and "best_top1" in ck:  # a checkpoint from before select_metric: top-1 it was
            self.state["best_score"] = ck["best_top1"] if self.cfg.select_metric == "top1" else -math.inf
        if not self.info.is_main:  # the sums are global: rank 0 carries them, the others start at zero
            self.state["epoch_sums"] = [0.0, 0, 0, 0]
        set_rng_state(ck["rng"])
        self.pretrained = ck.get("pretrained")
        log.info("resumed from %s at epoch %d, batch %d (step %d)", self.run_dir, ck["epoch"] + 1, ck["batch"],
                 ck["global_step"])

    # --- one step, one epoch ---------------------------------------------------------------------
    def _where(self, epoch: int, b: int) -> str:
        return f"epoch {epoch + 1}, step {self.state['global_step'] + 1} (batch {b + 1})"

    def _step(self, x: Any, y: Any, epoch: int, b: int) -> tuple[float, float]:
        if self.plugin is not None:
            where = Step(epoch, b, self.state["global_step"] + 1, self.total_steps)
            with autocast(self.device, self.amp):
                loss = self.plugin.loss(self.net, x, y, self.device, where)
            value = self._update(loss, epoch, b)
            self.plugin.after_step(unwrap(self.model), where)
            return value, 0.0
        cfg = self.cfg
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if cfg.mixup > 0 or cfg.cutmix > 0:
            x, target = mix_batch(x, y, self.num_classes, mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix,
                                  label_smoothing=cfg.label_smoothing, generator=generator(cfg.seed, epoch, b, 2))
            smoothing = 0.0
        else:
            target, smoothing = y, cfg.label_smoothing
        with autocast(self.device, self.amp):
            logits = self.net(x)
            loss = self.objective(logits.float(), target, label_smoothing=smoothing)
            if self.distiller is not None:
                loss = self.distiller.loss(loss, logits, x)
        value = self._update(loss, epoch, b)
        if self.task == "multilabel":  # MedMNIST's ACC: the mean per-label accuracy at p > 0.5
            correct = float(((logits.detach() > 0) == (y > 0.5)).float().mean(1).sum())
        else:
            correct = int((logits.detach().argmax(1) == y).sum())
        return value, correct

    def _update(self, loss: torch.Tensor, epoch: int, b: int) -> float:
        """One optimizer step on ``loss`` (stopping on a non-finite loss or gradient); the loss's value."""
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(f"loss is {value} at {self._where(epoch, b)}; stopping. The last good "
                                   f"checkpoint is {self.run_dir / 'last.pt'}")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self._scaled_step(loss)
        else:
            loss.backward()
            self._check_grads(epoch, b)
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(unwrap(self.model))
        return value

    def _check_grads(self, epoch: int, b: int) -> None:
        """Stop before a non-finite gradient reaches the weights (one norm over all gradients, one sync);
        clip the global norm if asked."""
        named = [(n, p) for n, p in self._named_params if p.grad is not None]
        grads = [p.grad for _, p in named]
        if not grads:
            return
        total = nn.utils.get_total_norm(grads)  # torch._foreach_norm, then the norm of the norms
        if not torch.isfinite(total):
            norms = torch.stack(torch._foreach_norm(grads)).isfinite().tolist()
            bad = [n for (n, _), ok in zip(named, norms) if not ok] or ["(their total norm overflows)"]
            raise TrainingDiverged(f"non-finite gradient in {', '.join(bad[:5])} at {self._where(epoch, b)} "
                                   f"(the loss was finite); stopping before the step. The last good checkpoint "
                                   f"is {self.run_dir / 'last.pt'}")
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grads_with_norm_([p for _, p in named], self.cfg.grad_clip, total)

    def _scaled_step(self, loss: torch.Tensor) -> None:
        scale = self.scaler.get_scale()
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)  # skips the step when a gradient is not finite
        self.scaler.update()
        skipped = self.scaler.get_scale() < scale
        self._skipped = self._skipped + 1 if skipped else 0
        if self._skipped >= self.cfg.max_skipped_steps:
            raise TrainingDiverged(f"{self._skipped} consecutive fp16 steps had non-finite gradients "
                                   f"(step {self.state['global_step'] + 1}); stopping")

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch (from the checkpoint's batch when resuming); the row's training metrics."""
        cfg, st, world = self.cfg, self.state, self.info.world_size
        self.net.train()
        self.policy.apply(unwrap(self.model), epoch)
        start, n_batches = st["batch"], self.train_batches.num_batches
        sums = list(st["epoch_sums"])  # loss * n, correct, seen, bad files: carried over a resume
        t0 = mark = time.perf_counter()
        here = since_mark = 0  # images this session / since the throughput was last booked into the state
        self._skipped = 0
        bar = Progress(n_batches - start, f"epoch {epoch + 1}/{self.planned_epochs}", enabled=self.info.is_main,
                       log_every_s=cfg.log_every_s, unit="batch")
        for b, (x, y, n_bad) in enumerate(self.train_batches.epoch(epoch, start), start):
            loss, ok = self._step(x, y, epoch, b)
            n = len(y)
            sums = [sums[0] + loss * n, sums[1] + ok, sums[2] + n, sums[3] + n_bad]
            here, since_mark = here + n * world, since_mark + n * world
            st["batch"], st["global_step"] = b + 1, st["global_step"] + 1
            acc = {} if self.plugin else {"acc": sums[1] / sums[2]}
            bar.update(1, loss=sums[0] / sums[2], **acc, img_s=here / (time.perf_counter() - t0))
            if cfg.log_loss_every and st["global_step"] % cfg.log_loss_every == 0 and self.info.is_main:
                self.runlog.log_step({"step": st["global_step"], "epoch": epoch + 1, "loss": loss,
                                      "lr": self.head_lr})
            stop = bool(cfg.max_steps and st["global_step"] >= cfg.max_steps)
            if cfg.ckpt_every_steps and st["global_step"] % cfg.ckpt_every_steps == 0 and b + 1 < n_batches \
                    and not stop:
                mark, since_mark = self._book(mark, since_mark)
                st["epoch_sums"] = all_reduce_sum(sums, self.info, self.device)
                self._save("last.pt")
            if stop:
                break
        bar.close()
        self._book(mark, since_mark)
        elapsed = time.perf_counter() - t0
        total_loss, correct, seen, bad = all_reduce_sum(sums, self.info, self.device)
        st["epoch_sums"] = [0.0, 0, 0, 0]
        acc = {} if self.plugin else {"train_acc": correct / max(seen, 1)}
        return {"train_loss": total_loss / max(seen, 1), **acc,
                "img_per_s": here / max(elapsed, 1e-9), "skipped_batch_images": bad}

    def _book(self, mark: float, images: int) -> tuple[float, int]:
        """Add the training time and images since ``mark`` to the run's throughput totals."""
        now = time.perf_counter()
        self.state["train_time_s"] += now - mark
        self.state["train_images"] += images
        return now, 0

    # --- evaluation ------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, batches=None) -> dict[str, Any]:
        """``model`` on ``batches`` (default: the validation split), in the run's precision."""
        logits, targets = self._logits(model, self.eval_batches if batches is None else batches)
        return task_metrics(logits, targets, self.data.classes)

    def _eval_row(self) -> dict[str, Any]:
        if not self.info.is_main:
            return {}
        if self.plugin is not None:
            return self.plugin.row(self._plugin_metrics(unwrap(self.model), self.eval_batches), "val")
        m = self.evaluate(unwrap(self.model))
        row = {"val_loss": m["nll"], "val_top1": m["top1"], "val_top5": m["top5"], "val_auc": m["auc"],
               "val_balanced_accuracy": m["balanced_accuracy"]}
        if self.ema is not None:
            row["ema_top1"] = self.evaluate(self.ema.module)["top1"]
        return row

    def _plugin_metrics(self, model: nn.Module, batches) -> dict[str, Any]:
        return self.plugin.evaluate(model, batches, self.num_classes, self.device, self.amp)

    @property
    def select_metric(self) -> str:
        """The validation score that selects best.pt (a plug-in task's default when top1 was left)."""
        return self.plugin.select if self.plugin is not None else self.cfg.select_metric

    def _decide(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """On best.pt (selected on val): the operating point chosen on val and stored in it (last.pt gets
        its own, chosen for its own weights), then the test split evaluated once, at argmax and at that
        point. ({}, None) on ranks other than 0."""
        if not self.info.is_main:
            return {}, None
        cfg, classes = self.cfg, self.data.classes
        path = self.run_dir / "best.pt" if (self.run_dir / "best.pt").is_file() else self.run_dir / "last.pt"
        model = copy.deepcopy(unwrap(self.model))
        self._load_weights(model, load_checkpoint(path))
        if self.plugin is not None:
            return ({} if self.test_batches is None else
                    self.plugin.row(self._plugin_metrics(model, self.test_batches), "test")), None
        point = self._store_point(model, path)
        if path.name != "last.pt":
            self._store_point(copy.deepcopy(unwrap(self.model)), self.run_dir / "last.pt")  # the final weights
        if self.test_batches is None:
            return {}, point
        return test_row(cfg, *self._logits(model, self.test_batches), classes, point), point

    @property
    def head_lr(self) -> float:
        """The learning rate of the head (lr_scale 1): what the schedule sets; backbone groups run slower."""
        groups = self.optimizer.param_groups
        return next((g["lr"] for g in groups if g.get("lr_scale", 1.0) == 1.0), groups[0]["lr"])

    def _store_point(self, model: nn.Module, path: Path) -> dict[str, Any] | None:
        """Choose ``model``'s operating point on val (threshold setting permitting) and store it in ``path``."""
        classes = self.data.classes
        if threshold_setting(self.cfg, classes, self.task) == "none":  # no val pass for the default rule
            return None
        point = operating_point(self.cfg, *self._logits(model, self.eval_batches), classes,
                                f"val: {self.data.val_source}", self.task)
        if point is not None:
            update_checkpoint(path, operating_point=point)
            log.info("operating point of %s: %s", path.name, describe_point(point, classes))
        return point

    def _logits(self, model: nn.Module, batches) -> tuple[torch.Tensor, torch.Tensor]:
        return collect_logits(model, batches.epoch(0), device=self.device, channels_last=self.channels_last,
                              amp=self.amp)

    # --- the run ---------------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        """The optimizer steps the run will take (what a schedule over the whole run counts to)."""
        per_epoch = self.train_batches.num_batches
        return min(self.cfg.epochs * per_epoch, self.cfg.max_steps or self.cfg.epochs * per_epoch)

    @property
    def planned_epochs(self) -> int:
        """The epochs the run will take: ``epochs``, or fewer when ``max_steps`` ends it first."""
        if not self.cfg.max_steps:
            return self.cfg.epochs
        return min(self.cfg.epochs, -(-self.cfg.max_steps // self.train_batches.num_batches))

    def fit(self) -> TrainResult:
        cfg, st, d = self.cfg, self.state, self.data
        log.info("training %s on %s: %d train images, validation on %s, %s test images, %d classes, %d batches "
                 "of %d per epoch, %d epochs%s, %s, amp %s, channels_last %s", cfg.model, d.train.source,
                 len(d.train), d.val_source, len(d.test) if d.test is not None else "no", self.num_classes,
                 self.train_batches.num_batches, cfg.batch_size, self.planned_epochs,
                 f" ({cfg.max_steps} steps)" if cfg.max_steps else "", self.device, self.amp, self.channels_last)
        wall0 = time.perf_counter() - st["wall_time_s"]
        try:
            while st["epoch"] < cfg.epochs and not (cfg.max_steps and st["global_step"] >= cfg.max_steps):
                self._epoch(wall0)
            return self._finish(time.perf_counter() - wall0)
        finally:
            if self.info.is_main:
                self.runlog.close()

    def _epoch(self, wall0: float) -> None:
        cfg, st = self.cfg, self.state
        epoch = st["epoch"]
        row: dict[str, Any] = {"epoch": epoch + 1, **self._train_epoch(epoch),
                               "lr": self.head_lr}
        last = epoch + 1 == cfg.epochs or bool(cfg.max_steps and st["global_step"] >= cfg.max_steps)
        if (epoch + 1) % cfg.eval_every == 0 or last:
            row.update(self._eval_row())
        st["epoch"], st["batch"] = epoch + 1, 0
        st["wall_time_s"] = time.perf_counter() - wall0
        row["wall_time_s"] = st["wall_time_s"]
        st["history"].append(row)
        if self.info.is_main:
            self.runlog.write_history(st["history"])
            self.runlog.add_scalars(row, st["global_step"])
            log_row(row)
        metric = self.select_metric
        if f"val_{metric}" in row and selection_score(row, metric) > st["best_score"]:
            st["best_score"] = selection_score(row, metric)
            self._save("best.pt")
        self._save("last.pt")
        barrier(self.info)

    def _summary(self, test: dict[str, Any], point: dict[str, Any] | None) -> dict[str, Any]:
        st, hist, d, metric = self.state, self.state["history"], self.data, self.select_metric
        evals = [r for r in hist if f"val_{metric}" in r]
        best = max(evals, key=lambda r: selection_score(r, metric)) if evals else {}  # first of equals, as best.pt
        tested = (f"the test_* numbers are best.pt evaluated once on the test split ({len(d.test)} images) after "
                  f"training" if d.test is not None else "the data has no test split, so there are no test numbers")
        if point:
            tested += f"; the operating point was chosen on validation ({point['metric']}), never on test"
        scores = {}
        if self.plugin is not None:  # the plug-in's scores: last and best on val, best.pt's on test
            for k in self.plugin.scores:
                scores.update({f"val_{k}": evals[-1][f"val_{k}"] if evals else None,
                              f"best_val_{k}": best.get(f"val_{k}"), f"test_{k}": test.get(f"test_{k}")})
        return {
            **scores, "model": self.cfg.model, "val_top1": evals[-1].get("val_top1") if evals else None,
            "val_top5": evals[-1].get("val_top5") if evals else None,
            "best_val_top1": best.get("val_top1"), "best_epoch": best.get("epoch"),
            "test_top1": test.get("test_top1"), "test_top5": test.get("test_top5"),
            "test_auc": test.get("test_auc"), "test_balanced_accuracy": test.get("test_balanced_accuracy"),
            "select_metric": metric, "best_val_score": best.get(f"val_{metric}"),
            "selection": f"best.pt is the epoch with the highest {metric} on the validation split ({d.val_source}); "
                         f"{tested}",
            "operating_point": point, "test_report": test.get("test_report"), "pretrained": self.pretrained,
            "finetune": self.policy.mode, "task": self.task,
            "epochs": st["epoch"], "steps": st["global_step"], "wall_time_s": st["wall_time_s"],
            "images_per_s": st["train_images"] / max(st["train_time_s"], 1e-9),
            "skipped_files": len(d.skipped) + int(sum(r.get("skipped_batch_images", 0) for r in hist)),
            "num_train": len(d.train), "num_val": len(d.val), "num_test": len(d.test) if d.test is not None else 0,
            "amp": self.amp, "channels_last": self.channels_last,
            "device": str(self.device), "world_size": self.info.world_size, "run_dir": str(self.run_dir),
        }

    def _finish(self, wall: float) -> TrainResult:
        test, point = self._decide()
        summary = self._summary(test, point)
        if self.info.is_main:
            if test:
                self.runlog.add_scalars(test, self.state["global_step"])
            path = self.runlog.write_summary(summary)
            m = self.select_metric
            log.info("done: best val %s %s (epoch %s), test %s of best.pt %s, %d epochs in %.0f s "
                     "(%.0f img/s); summary in %s", m, summary["best_val_score"], summary["best_epoch"], m,
                     summary.get(f"test_{m}"), summary["epochs"], wall, summary["images_per_s"], path)
        return TrainResult(summary, list(self.state["history"]), unwrap(self.model).eval(), self.run_dir,
                           list(self.data.classes), len(self.data.train), len(self.data.val))


def task_plugin(cfg: TrainConfig) -> TaskPlugin | None:
    """The plug-in a config's task needs: self-supervised pretraining, detection / segmentation for a dense
    model, else None (classification)."""
    if cfg.ssl:
        from .ssl import SSLTask

        return SSLTask(cfg)
    return DenseTask(cfg) if dense_kind(cfg.model) else None


def fit(cfg: TrainConfig | None = None, *, resume: str | os.PathLike | None = None, overwrite: bool = False,
        **overrides: Any) -> TrainResult:
    """Train per ``cfg`` with ``overrides`` (any TrainConfig field), or resume the run directory ``resume``.

    A run folder (``out``) holding another run's files is refused unless ``overwrite=True``.

        >>> result = resnetlab.fit(model="resnet20", data="cifar10", epochs=1)  # doctest: +SKIP
    """
    cfg = (cfg or TrainConfig()).replace(**overrides) if overrides or cfg is None else cfg
    ck = None
    if resume is not None:
        if overwrite:
            raise ValueError(f"resume and overwrite contradict each other: resuming {resume} continues its run")
        ck = load_checkpoint(Path(resume) / "last.pt" if Path(resume).is_dir() else resume)
        cfg = resumed_config(ck["config"], cfg, Path(resume) if Path(resume).is_dir() else Path(resume).parent)
    trainer = Trainer(cfg, ck, overwrite=overwrite)
    try:
        return trainer.fit()
    finally:
        cleanup(trainer.info)


def train(cfg: TrainConfig, resume: str | os.PathLike | None = None, *, overwrite: bool = False) -> dict[str, Any]:
    """The summary dict of :func:`fit` (kept for scripts written before ``fit`` returned a TrainResult)."""
    return fit(cfg, resume=resume, overwrite=overwrite).summary
