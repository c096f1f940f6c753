"""The fit loop: config -> data -> model -> steps -> run directory.

One engine serves ``resnetlab train`` and every experiment built on it. A run directory holds
``config.yaml`` (resolved), ``metrics.jsonl`` and ``metrics.csv`` (one row per epoch), TensorBoard
event files, ``last.pt`` / ``best.pt`` checkpoints, ``train.log`` and a final ``summary.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import mix_batch
from ..eval import classification_metrics, collect_logits
from ..models import create_model
from ..utils import EventWriter, Progress
from ..utils.fileio import atomic_write_text
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig, from_dict, save_config, to_dict
from .distributed import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed
from .loaders import build_data, generator, make_batches
from .optim import ModelEma, build_optimizer, build_scheduler

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
    num_eval: int  # images of the split evaluated each epoch

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / "best.pt" if (self.run_dir / "best.pt").is_file() else self.run_dir / "last.pt"

    def __getitem__(self, key: str) -> Any:  # result["best_top1"] reads the summary
        return self.summary[key]


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf (or AMP skipped too many steps); the last good checkpoint is kept."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def _setup_logging(run_dir: Path | None, is_main: bool) -> None:
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    for h in list(log.handlers):
        if getattr(h, "_resnetlab", False):
            log.removeHandler(h)
            h.close()
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if run_dir is not None and is_main:
        handlers.append(logging.FileHandler(run_dir / "train.log"))
    for h in handlers:
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        h._resnetlab = True  # type: ignore[attr-defined]
        log.addHandler(h)
    log.propagate = False


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


class Trainer:
    """Holds everything a run needs; ``fit()`` trains to the end (or resumes and finishes)."""

    def __init__(self, cfg: TrainConfig, resume: dict[str, Any] | None = None) -> None:
        self.cfg, self.device = cfg, pick_device(cfg.device)
        self.info: DistInfo = init_distributed(self.device)
        if self.info.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.info.local_rank)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.run_dir = Path(cfg.out)
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        _setup_logging(self.run_dir, self.info.is_main)
        torch.manual_seed(cfg.seed)
        self.data = build_data(cfg, self.info)
        self.cfg = cfg = cfg.replace(data=self.data.root)  # the resolved config names the data it used
        self.train_batches = make_batches(self.data, cfg, self.info, train=True)
        self.eval_batches = make_batches(self.data, cfg, self.info, train=False)
        self._build_model()
        self.state = {"epoch": 0, "batch": 0, "global_step": 0, "wall_time_s": 0.0, "train_time_s": 0.0,
                      "train_images": 0, "best_top1": -1.0, "history": []}
        if resume is not None:
            self._restore(resume)
        if self.info.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
            self.events = EventWriter(self.run_dir)

    def _build_model(self) -> None:
        cfg, data = self.cfg, self.data
        self.num_classes = cfg.num_classes or len(data.classes)
        self.in_chans = cfg.in_chans or data.in_chans
        model = create_model(cfg.model, num_classes=self.num_classes, in_chans=self.in_chans,
                             weights=cfg.weights, **cfg.model_kwargs)
        model = model.to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.sync_bn and self.device.type != "cuda":
            raise ValueError("sync_bn needs CUDA (torch's SyncBatchNorm runs on GPUs only); on the CPU, "
                             "--model-kwargs norm_layer=group makes normalisation independent of the batch split")
        if cfg.sync_bn and self.info.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.ema = ModelEma(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.train_batches.num_batches)
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.amp == "fp16" else None
        if cfg.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("amp='fp16' needs CUDA; on the CPU use amp='bf16'")
        net: nn.Module = model
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.net = torch.compile(net) if cfg.compile else net

    # --- checkpoints -------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        d = self.data
        return {
            "model": _unwrap(self.model).state_dict(), "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None, "rng": rng_state(),
            **self.state, "config": to_dict(self.cfg),
            "model_name": self.cfg.model, "model_kwargs": dict(self.cfg.model_kwargs),
            "num_classes": self.num_classes, "in_chans": self.in_chans, "classes": list(d.classes),
            "preprocess": d.preprocess.to_dict(),
        }

    def _save(self, name: str) -> None:
        if self.info.is_main:
            save_checkpoint(self._payload(), self.run_dir / name)

    def _restore(self, ck: dict[str, Any]) -> None:
        _unwrap(self.model).load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        if self.ema is not None and ck.get("ema"):
            self.ema.load_state_dict(ck["ema"])
        for key in self.state:
            self.state[key] = ck[key]
        set_rng_state(ck["rng"])
        if self.info.is_main:
            self._truncate_metrics(ck["epoch"])
        log.info("resumed from %s at epoch %d, batch %d (step %d)", self.run_dir, ck["epoch"] + 1, ck["batch"],
                 ck["global_step"])

    def _truncate_metrics(self, epochs_done: int) -> None:
        """Drop metric rows of epochs the checkpoint does not hold (a kill between the row and the
        checkpoint), so the resumed run writes each epoch's row exactly once."""
        for name in ("metrics.jsonl", "metrics.csv"):
            path = self.run_dir / name
            if not path.exists():
                continue
            lines = path.read_text().splitlines(keepends=True)
            if name.endswith(".csv"):
                keep = lines[:1] + [ln for ln in lines[1:] if int(ln.split(",", 1)[0]) <= epochs_done]
            else:
                keep = [ln for ln in lines if json.loads(ln)["epoch"] <= epochs_done]
            if keep != lines:
                atomic_write_text(path, "".join(keep))

    # --- one step, one epoch ---------------------------------------------------------------------
    def _autocast(self):
        if self.cfg.amp == "none":
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16)

    def _step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, b: int) -> tuple[float, int]:
        cfg = self.cfg
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if cfg.mixup > 0 or cfg.cutmix > 0:
            x, target = mix_batch(x, y, self.num_classes, mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix,
                                  label_smoothing=cfg.label_smoothing, generator=generator(cfg.seed, epoch, b, 2))
            smoothing = 0.0
        else:
            target, smoothing = y, cfg.label_smoothing
        with self._autocast():
            logits = self.net(x)
            loss = F.cross_entropy(logits.float(), target, label_smoothing=smoothing)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(f"loss is {value} at epoch {epoch + 1}, step {self.state['global_step'] + 1} "
                                   f"(batch {b + 1}); stopping. The last good checkpoint is {self.run_dir / 'last.pt'}")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self._scaled_step(loss)
        else:
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(_unwrap(self.model))
        correct = int((logits.detach().argmax(1) == y).sum())
        return value, correct

    def _scaled_step(self, loss: torch.Tensor) -> None:
        scale = self.scaler.get_scale()
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        skipped = self.scaler.get_scale() < scale
        self._skipped = self._skipped + 1 if skipped else 0
        if self._skipped >= self.cfg.max_skipped_steps:
            raise TrainingDiverged(f"{self._skipped} consecutive fp16 steps had non-finite gradients "
                                   f"(step {self.state['global_step'] + 1}); stopping")

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, st, world = self.cfg, self.state, self.info.world_size
        self.net.train()
        start, n_batches = st["batch"], self.train_batches.num_batches
        total_loss = correct = seen = bad = 0.0
        t0 = mark = time.perf_counter()
        since_mark = 0  # images since the throughput was last booked into the state
        self._skipped = 0
        bar = Progress(n_batches - start, f"epoch {epoch + 1}/{cfg.epochs}", enabled=self.info.is_main,
                       log_every_s=cfg.log_every_s, unit="batch")
        for b, (x, y, n_bad) in enumerate(self.train_batches.epoch(epoch, start), start):
            loss, ok = self._step(x, y, epoch, b)
            n = len(y)
            total_loss, correct, seen, bad = total_loss + loss * n, correct + ok, seen + n, bad + n_bad
            since_mark += n * world
            st["batch"], st["global_step"] = b + 1, st["global_step"] + 1
            bar.update(1, loss=total_loss / seen, acc=correct / seen,
                       img_s=seen * world / (time.perf_counter() - t0))
            if cfg.log_loss_every and st["global_step"] % cfg.log_loss_every == 0 and self.info.is_main:
                with open(self.run_dir / "steps.jsonl", "a") as f:
                    f.write(json.dumps({"step": st["global_step"], "epoch": epoch + 1, "loss": loss,
                                        "lr": self.optimizer.param_groups[0]["lr"]}) + "\n")
            stop = bool(cfg.max_steps and st["global_step"] >= cfg.max_steps)
            if cfg.ckpt_every_steps and st["global_step"] % cfg.ckpt_every_steps == 0 and b + 1 < n_batches \
                    and not stop:
                mark, since_mark = self._book(mark, since_mark)
                self._save("last.pt")
            if stop:
                break
        bar.close()
        self._book(mark, since_mark)
        elapsed = time.perf_counter() - t0
        total_loss, correct, seen, bad = all_reduce_sum([total_loss, correct, seen, bad], self.info, self.device)
        return {"train_loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1),
                "img_per_s": seen / max(elapsed, 1e-9), "skipped_batch_images": bad}

    def _book(self, mark: float, images: int) -> tuple[float, int]:
        """Add the training time and images since ``mark`` to the run's throughput totals."""
        now = time.perf_counter()
        self.state["train_time_s"] += now - mark
        self.state["train_images"] += images
        return now, 0

    # --- evaluation ------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        logits, targets = collect_logits(model, self.eval_batches.epoch(0), device=self.device,
                                         channels_last=self.cfg.channels_last, amp=self.cfg.amp)
        return classification_metrics(logits, targets, class_names=self.data.classes)

    # --- the run ---------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg, st = self.cfg, self.state
        log.info("training %s on %s: %d train / %d eval images, %d classes, %d batches of %d per epoch, %s",
                 cfg.model, self.data.train.source, len(self.data.train), len(self.data.val), self.num_classes,
                 self.train_batches.num_batches, cfg.batch_size, self.device)
        wall0 = time.perf_counter() - st["wall_time_s"]
        while st["epoch"] < cfg.epochs and not (cfg.max_steps and st["global_step"] >= cfg.max_steps):
            epoch = st["epoch"]
            row: dict[str, Any] = {"epoch": epoch + 1, **self._train_epoch(epoch),
                                   "lr": self.optimizer.param_groups[0]["lr"]}
            last = epoch + 1 == cfg.epochs or bool(cfg.max_steps and st["global_step"] >= cfg.max_steps)
            if (epoch + 1) % cfg.eval_every == 0 or last:
                row.update(self._eval_row())
            st["epoch"], st["batch"] = epoch + 1, 0
            st["wall_time_s"] = time.perf_counter() - wall0
            row["wall_time_s"] = st["wall_time_s"]
            st["history"].append(row)
            if self.info.is_main:
                self._log_row(row)
            if row.get("val_top1", -1) > st["best_top1"]:
                st["best_top1"] = row["val_top1"]
                self._save("best.pt")
            self._save("last.pt")
            barrier(self.info)
        return self._finish(time.perf_counter() - wall0)

    def _eval_row(self) -> dict[str, Any]:
        if not self.info.is_main:
            return {}
        m = self.evaluate(_unwrap(self.model))
        self.last_metrics = m
        row = {"val_loss": m["nll"], "val_top1": m["top1"], "val_top5": m["top5"]}
        if self.ema is not None:
            row["ema_top1"] = self.evaluate(self.ema.module)["top1"]
        return row

    def _log_row(self, row: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        path = self.run_dir / "metrics.csv"
        keys = ["epoch", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "ema_top1", "lr",
                "img_per_s", "wall_time_s"]
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, keys, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        self.events.add_scalars({k: float(v) for k, v in row.items() if k != "epoch" and v is not None},
                                self.state["global_step"])
        self.events.flush()
        pct = lambda k: f"{100 * row[k]:.2f}%" if k in row else "-"  # noqa: E731
        log.info("epoch %d: train loss %.4f acc %s | val loss %s top1 %s top5 %s | lr %.4g | %.0f img/s | %.0f s",
                 row["epoch"], row["train_loss"], pct("train_acc"), f"{row.get('val_loss', float('nan')):.4f}",
                 pct("val_top1"), pct("val_top5"), row["lr"], row["img_per_s"], row["wall_time_s"])

    def _finish(self, wall: float) -> TrainResult:
        st, hist = self.state, self.state["history"]
        evals = [r["val_top1"] for r in hist if "val_top1" in r]
        summary = {
            "model": self.cfg.model, "best_top1": max(evals) if evals else None,
            "final_top1": evals[-1] if evals else None,
            "final_top5": next((r["val_top5"] for r in reversed(hist) if "val_top5" in r), None),
            "epochs": st["epoch"], "steps": st["global_step"], "wall_time_s": st["wall_time_s"],
            "images_per_s": st["train_images"] / max(st["train_time_s"], 1e-9),
            "skipped_files": len(self.data.skipped) + int(sum(r.get("skipped_batch_images", 0) for r in hist)),
            "device": str(self.device), "world_size": self.info.world_size, "run_dir": str(self.run_dir),
        }
        if self.info.is_main:
            atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2))
            self.events.close()
            log.info("done: best top-1 %s, final top-1 %s, %d epochs in %.0f s (%.0f img/s); summary in %s",
                     summary["best_top1"], summary["final_top1"], summary["epochs"], wall,
                     summary["images_per_s"], self.run_dir / "summary.json")
        return TrainResult(summary, list(st["history"]), _unwrap(self.model).eval(), self.run_dir,
                           list(self.data.classes), len(self.data.train), len(self.data.val))


def fit(cfg: TrainConfig | None = None, *, resume: str | os.PathLike | None = None, **overrides: Any) -> TrainResult:
    """Train per ``cfg`` with ``overrides`` (any TrainConfig field), or resume the run directory ``resume``.

        >>> result = resnetlab.fit(model="resnet20", data="cifar10", epochs=1)  # doctest: +SKIP
    """
    cfg = (cfg or TrainConfig()).replace(**overrides) if overrides or cfg is None else cfg
    ck = None
    if resume is not None:
        ck = load_checkpoint(Path(resume) / "last.pt" if Path(resume).is_dir() else resume)
        saved = dict(ck["config"])
        saved.update({k: v for k, v in to_dict(cfg).items() if k in ("epochs", "max_steps", "device", "threads")
                      and v != getattr(TrainConfig(), k)})
        saved["out"] = str(Path(resume) if Path(resume).is_dir() else Path(resume).parent)
        cfg = from_dict(saved)
    trainer = Trainer(cfg, ck)
    try:
        return trainer.fit()
    finally:
        cleanup(trainer.info)


def train(cfg: TrainConfig, resume: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train per ``cfg`` (or resume the run directory ``resume``); returns the summary dict."""
    return fit(cfg, resume=resume).summary
