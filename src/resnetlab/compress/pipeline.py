"""``resnetlab compress``: prune -> fine-tune (optionally distilled) -> int8 (PTQ, or QAT), one row per step.

Every step leaves its result in its own folder of ``out`` before the next starts, written atomically, and
a step whose result is there is not run again: a run stopped anywhere (even mid fine-tune: the engine
resumes its checkpoint) is finished by the same command. The training steps run on the one training
engine, so they have its checkpoints, logs, bf16 and exact resume.

    out/plan.json                 the settings (a second run must match them, or use another folder)
    out/original/model.xml        the input model in FP32 on the runtime, and model.int8.xml (its PTQ)
    out/prune/model.safetensors   the pruned weights, widths in the metadata; prune.json
    out/finetune/                 a training run (best.pt selected on validation)
    out/qat/                      a quantization-aware training run, and model.int8.xml exported from it
    out/final/model.xml           the fine-tuned model on the runtime, and model.int8.xml (its PTQ)
    out/report.md, report.json, report.csv, pareto.png
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..deploy.export import FORMATS, artefact_files, export_model
from ..deploy.meta import ModelMeta
from ..deploy.quantize import calibration_images, qat_to_openvino, quantize_model, test_batches, top1
from ..eval import eval_batches, load_trained, open_split
from ..eval.loading import TrainedModel
from ..models import create_model
from ..models.stats import count_macs, count_params
from ..models.weights import save_weights
from ..train.config import from_dict
from ..train.engine import fit
from ..utils.fileio import atomic_write_text
from .measure import measure_rows
from .prune import PruneConfig, prune_model

__all__ = ["CompressConfig", "compress", "compress_steps"]

log = logging.getLogger("resnetlab")
RUNTIMES = ("openvino", "onnxruntime")
EXPORT_FORMAT = {"openvino": "openvino", "onnxruntime": "onnx"}  # runtime -> resnetlab export format


@dataclass(frozen=True)
class CompressConfig:
    checkpoint: str  # the trained model: a resnetlab checkpoint or run directory
    out: str  # folder of the steps and the report
    data: str | None = None  # None: the data the checkpoint was trained on
    prune: PruneConfig | None = field(default_factory=PruneConfig)  # None: no pruning
    finetune_epochs: int = 0  # epochs of fine-tuning after pruning (the engine; selection on validation)
    lr: float = 0.01  # fine-tuning peak learning rate (cosine to 0, no warm-up)
    distill: bool = False  # fine-tune (and QAT) against the unpruned model's soft targets
    distill_alpha: float = 0.5
    distill_temperature: float = 4.0
    runtime: str = "openvino"  # where the rows are measured and int8 runs: openvino or onnxruntime
    int8: bool = True  # post-training int8 of the original and the final model
    qat_epochs: int = 0  # quantization-aware training epochs (NNCF; OpenVINO only)
    qat_lr: float = 1e-3  # QAT peak learning rate: fine-tuning of an already trained model
    calib_images: int = 300  # images of the train split that calibrate int8
    test_images: int | None = None  # test images for top-1 (None: the whole test split)
    threads: int | None = None  # runtime threads when timing (None: the runtime's default)
    seconds: float = 2.0  # timing per batch size per round
    repeats: int = 3  # interleaved timing rounds (median; min and max are the spread)
    train_overrides: dict = field(default_factory=dict)  # other TrainConfig fields for the training steps

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if self.qat_epochs and self.runtime != "openvino":
            raise ValueError("quantization-aware training exports through NNCF to OpenVINO int8: use --int8 "
                             f"openvino with --qat-epochs (got {self.runtime!r}); ONNX Runtime int8 comes from PTQ")
        for name in ("finetune_epochs", "qat_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.distill and not (self.finetune_epochs or self.qat_epochs):
            raise ValueError("distill teaches the fine-tuning or QAT steps: give --finetune-epochs or --qat-epochs")
        if self.calib_images < 1 or self.repeats < 1 or self.seconds <= 0:
            raise ValueError("calib_images and repeats must be >= 1 and seconds > 0")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["prune"] = dataclasses.asdict(self.prune) if self.prune else None
        if d["prune"]:
            d["prune"]["keep"] = list(d["prune"]["keep"])
        return d


def _claim(cfg: CompressConfig, out: Path) -> None:
    plan = out / "plan.json"
    want = {k: v for k, v in cfg.to_dict().items() if k not in ("threads", "seconds", "repeats")}
    if plan.is_file():
        had = json.loads(plan.read_text())
        if had != want:
            diff = sorted(k for k in set(had) | set(want) if had.get(k) != want.get(k))
            raise ValueError(f"{out} holds a compress run with other settings ({', '.join(diff)}); resume it with "
                             "the same ones, or give another --out")
        log.info("resuming the compress run in %s", out)
    else:
        atomic_write_text(plan, json.dumps(want, indent=2) + "\n")


def _train(run_dir: Path, base: dict[str, Any], changes: dict[str, Any]) -> Path:
    """One engine run; finished runs are kept, interrupted ones resumed. Returns its best checkpoint."""
    if (run_dir / "summary.json").is_file():
        log.info("%s: done earlier", run_dir)
    elif (run_dir / "last.pt").is_file():
        fit(resume=run_dir)
    else:
        fit(from_dict({**base, **changes}), overwrite=True)
    return run_dir / "best.pt"


def _train_base(trained: TrainedModel, cfg: CompressConfig) -> dict[str, Any]:
    base = dict(trained.config)
    base.update(data=cfg.data or base.get("data"), weights=None, warmup_epochs=0.0, ema_decay=0.0, max_steps=None,
                compile=False, shuffle_labels=False, milestones=[], schedule="cosine", min_lr=0.0, qat=False,
                distill_from=None, finetune="full", eval_every=1)
    if cfg.distill:
        base.update(distill_from=str(trained.path), distill_alpha=cfg.distill_alpha,
                    distill_temperature=cfg.distill_temperature)
    base.update(cfg.train_overrides)
    return base


def _pruned(trained: TrainedModel, cfg: CompressConfig, out: Path) -> Path:
    path = out / "prune" / "model.safetensors"
    if path.is_file():
        return path
    size = trained.preprocess.image_size
    ds = open_split(trained, cfg.data, "train")
    batches = eval_batches(ds, trained.preprocess, batch_size=32, limit_batches=cfg.prune.taylor_batches)
    example = next(iter(batches.epoch(0)))[0][:2]
    res = prune_model(trained.model, example, cfg.prune, batches=lambda: batches.epoch(0))
    atomic_write_text(out / "prune" / "prune.json", json.dumps({**res.to_dict(), "input_size": size,
                                                                  "config": cfg.to_dict()["prune"]}, indent=2))
    save_weights(res.model, path, metadata={"resnetlab.pruned_from": str(trained.path)})
    return path


def _as_trained(trained: TrainedModel, path: Path) -> TrainedModel:
    """The pruned weights as a TrainedModel of the original's classes and preprocessing."""
    model = create_model(trained.name, num_classes=len(trained.classes), in_chans=trained.in_chans, weights=path,
                         **trained.config.get("model_kwargs", {})).eval()
    return dataclasses.replace(trained, model=model, path=path)


def _artefacts(trained: TrainedModel, cfg: CompressConfig, folder: Path, calib: list) -> dict[str, Path]:
    """FP32 on the runtime (checked against eager), and its post-training int8."""
    fmt = EXPORT_FORMAT[cfg.runtime]
    ext = FORMATS[fmt]
    meta = ModelMeta.from_trained(trained)
    fp32, int8 = folder / f"model{ext}", folder / f"model.int8{ext}"
    if not fp32.is_file():
        export_model(trained.model, meta, fp32, fmt, dynamic_batch=True, check_inputs=torch.from_numpy(
            calib[0][:16]), check_source="16 calibration images")
    out = {"fp32": fp32}
    if cfg.int8:
        if not int8.is_file():
            quantize_model(trained.model, meta, int8, cfg.runtime, calib, calib_source="train split")
        out["int8"] = int8
    return out


def compress(cfg: CompressConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run (or finish) every step of ``cfg``, time every row's artefact side by side and write the report;
    returns the report's data."""
    from .report import write_report

    rows = compress_steps(cfg)
    timings = measure_rows([r["path"] for r in rows], threads=cfg.threads, seconds=cfg.seconds, repeats=cfg.repeats,
                           progress=(lambda m: log.info("%s", m)) if progress else None)
    return write_report(Path(cfg.out), cfg, rows, timings)


def compress_steps(cfg: CompressConfig) -> list[dict[str, Any]]:
    """Every step of ``cfg`` (those done earlier are kept), and one row per artefact with its size, params,
    MACs and test top-1 — everything but the timing, so several runs can be timed side by side."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _claim(cfg, out)
    trained = load_trained(cfg.checkpoint)
    calib = calibration_images(trained, cfg.data, cfg.calib_images)
    if not calib or sum(len(b) for b in calib) == 0:
        raise ValueError(f"no calibration images in the train split of {cfg.data or trained.config.get('data')}")
    rows: list[dict[str, Any]] = []

    def row(step: str, kind: str, model_of: TrainedModel, path: Path, note: str = "") -> None:
        size = (trained.in_chans, trained.preprocess.image_size, trained.preprocess.image_size)
        rows.append({"step": step, "precision": kind, "path": str(path), "note": note,
                     "params": count_params(model_of.model), "macs": count_macs(model_of.model, size),
                     "mb": sum(f.stat().st_size for f in artefact_files(path)) / 2**20})

    base = _artefacts(trained, cfg, out / "original", calib)
    row("original", "fp32", trained, base["fp32"])
    if "int8" in base:
        row("original", "int8", trained, base["int8"], "post-training int8")
    current, label = trained, "original"
    if cfg.prune is not None:
        current, label = _as_trained(trained, _pruned(trained, cfg, out)), "pruned"
        arts = _artefacts(current, dataclasses.replace(cfg, int8=cfg.int8 and not cfg.finetune_epochs),
                          out / "prune", calib)
        row(label, "fp32", current, arts["fp32"], "no fine-tuning")
        if "int8" in arts:
            row(label, "int8", current, arts["int8"], "post-training int8")
    train_base = _train_base(trained, cfg)
    if cfg.finetune_epochs:
        best = _train(out / "finetune", train_base, dict(out=str(out / "finetune"), pretrained=str(current.path),
                                                          epochs=cfg.finetune_epochs, lr=cfg.lr))
        current, label = load_trained(best), "fine-tuned"
        arts = _artefacts(current, cfg, out / "final", calib)
        row(label, "fp32", current, arts["fp32"], "distilled" if cfg.distill else "")
        if "int8" in arts:
            row(label, "int8", current, arts["int8"], "post-training int8")
    if cfg.qat_epochs:
        best = _train(out / "qat", train_base, dict(out=str(out / "qat"), pretrained=str(current.path),
                                                     epochs=cfg.qat_epochs, lr=cfg.qat_lr, qat=True,
                                                     qat_calib_images=cfg.calib_images))
        qat = load_trained(best)
        xml = out / "qat" / "model.int8.xml"
        if not xml.is_file():
            qat_to_openvino(qat.model, ModelMeta.from_trained(qat), xml, check=calib[:2])
        row(f"{label} + QAT", "int8", current, xml, "quantization-aware training")
    return [{**r, **t} for r, t in zip(rows, _top1s(trained, cfg, rows))]


def _top1s(trained: TrainedModel, cfg: CompressConfig, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Top-1 of every row's artefact on the same test images (a fixed seeded subset, or all)."""
    from ..deploy.export import load_artefact

    batches = test_batches(trained, cfg.data, images=cfg.test_images)
    out = []
    for r in rows:
        runtime, _ = load_artefact(r["path"], threads=cfg.threads)
        acc, n = top1(runtime, batches())
        out.append({"test_top1": acc, "test_images": n})
        del runtime
    return out
