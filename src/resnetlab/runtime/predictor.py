"""LitePredictor: an exported artefact, its metadata and its preprocessing, on numpy alone (no torch)."""

from __future__ import annotations

import csv
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .decisions import decide, probabilities, stored_point, top_k

__all__ = ["LiteMeta", "LitePreprocess", "LitePredictor", "predict_folder", "in_fixed_batches"]

META_KEY = "resnetlab"  # the same key resnetlab.deploy.meta writes (not imported from there: it imports torch)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass(frozen=True)
class LitePreprocess:
    """What :class:`resnetlab.data.Preprocess` describes, applied with PIL and numpy."""

    preset: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int = 3

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> "LitePreprocess":
        try:
            pre = cls(str(d["preset"]), int(d["image_size"]), tuple(float(v) for v in d["mean"]),
                      tuple(float(v) for v in d["std"]), int(d.get("in_chans", 3)))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: not a preprocessing description ({type(e).__name__}: {e})") from None
        if pre.preset not in ("imagenet", "cifar") or pre.in_chans not in (1, 3) or pre.image_size < 1:
            raise ValueError(f"{where}: unsupported preprocessing {pre}")
        if d.get("window"):
            raise ValueError(f"{where}: a DICOM window is part of this model's preprocessing; use resnetlab.Predictor")
        return pre

    def __call__(self, img: Image.Image) -> np.ndarray:
        """A PIL image of any size or mode -> the (C, H, W) float32 network input."""
        img = img.convert("L" if self.in_chans == 1 else "RGB")
        side = int(self.image_size / 0.875) if self.preset == "imagenet" else self.image_size
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(side * long / short)  # torchvision's rounding of the long side
        size = (side, new_long) if w <= h else (new_long, side)
        if size != (w, h):
            img = img.resize(size, Image.Resampling.BILINEAR)
        w, h = img.size
        crop = self.image_size
        top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))  # torchvision's CenterCrop
        img = img.crop((left, top, left + crop, top + crop))
        a = np.asarray(img, dtype=np.float32) / 255.0
        a = a[:, :, None] if a.ndim == 2 else a
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        if len(mean) == 1 and self.in_chans == 3:
            mean, std = np.repeat(mean, 3), np.repeat(std, 3)
        if len(mean) == 3 and self.in_chans == 1:
            mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
        return np.ascontiguousarray(((a - mean) / std).transpose(2, 0, 1))


@dataclass(frozen=True)
class LiteMeta:
    classes: tuple[str, ...]
    preprocess: LitePreprocess
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str, where: str) -> "LiteMeta":
        try:
            d = json.loads(text)
            return cls(tuple(str(c) for c in d["classes"]), LitePreprocess.from_dict(d["preprocess"], where),
                       str(d.get("model", "")), dict(d.get("extra") or {}))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{where}: unreadable resnetlab metadata ({type(e).__name__}: {e})") from None


class _Onnx:
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None, low_memory: bool = False) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # ENABLE_ALL adds x86 layout transforms (NCHWc weight copies): faster for ResNet-18 on AVX-512, and ~100 MiB
        # more for its weights; low_memory keeps the plain layout (EXTENDED)
        level = "ORT_ENABLE_EXTENDED" if low_memory else "ORT_ENABLE_ALL"
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.inter_op_num_threads, opts.log_severity_level = 1, 3
        # no arena and no memory-pattern planning: together ~20 MiB off a ResNet-18 session's peak while loading (190
        # vs 212 MiB, neither alone moves it); a first prediction's peak in benchmarks/results/runtime_rss.md did not
        # drop with it (211 MiB), and that file times a call against the Predictor's session (arena on)
        opts.enable_cpu_mem_arena, opts.enable_mem_pattern = False, False
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        first = self.session.get_inputs()[0]
        self.input, self.batch = first.name, first.shape[0] if isinstance(first.shape[0], int) else None
        self.meta_text = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return in_fixed_batches(lambda a: self.session.run(None, {self.input: a})[0], x, self.batch)


class _OpenVINO:
    name = "openvino"

    def __init__(self, path: Path, threads: int | None, precision: str) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        self.meta_text = model.get_rt_info([META_KEY]).astype(str) if model.has_rt_info([META_KEY]) else None
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1, "NUM_STREAMS": 1}
        dim = model.input(0).get_partial_shape()[0]
        self.batch = dim.get_length() if dim.is_static else None
        self.request = core.compile_model(model, "CPU", config).create_infer_request()

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({0: x})
        return np.array(self.request.get_output_tensor(0).data, copy=True)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return in_fixed_batches(self._run, x, self.batch)


def in_fixed_batches(run: Any, x: np.ndarray, batch: int | None) -> np.ndarray:
    """``run`` over ``x`` in slices of an artefact's fixed batch size (the last one zero-padded); whole if dynamic."""
    if batch is None or len(x) == batch:
        return run(x)
    outs = []
    for i in range(0, len(x), batch):
        part = x[i:i + batch]
        pad = batch - len(part)
        if pad:
            part = np.concatenate([part, np.zeros((pad, *part.shape[1:]), part.dtype)])
        outs.append(run(part)[: batch - pad])
    return np.concatenate(outs)


class LitePredictor:
    """Top-k classes, probabilities and decisions from an exported .onnx or OpenVINO .xml, torch-free.

    ``low_memory``: ONNX Runtime without its x86 weight-layout copies (about 100 MiB less for ResNet-18, and
    slower: benchmarks/results/runtime_rss.md measures both); OpenVINO is small either way.
    """

    def __init__(self, artefact: str | os.PathLike, *, threads: int | None = None, precision: str = "fp32",
                 low_memory: bool = False) -> None:
        path = Path(artefact)
        if not path.is_file():
            raise FileNotFoundError(f"no such artefact: {path}")
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            self.runtime: Any = _Onnx(path, threads, low_memory)
        elif suffix == ".xml":
            self.runtime = _OpenVINO(path, threads, precision)
        else:
            raise ValueError(f"{path}: the torch-free runtime takes .onnx or OpenVINO .xml artefacts, got "
                             f"{path.suffix!r} (pt2 and TorchScript need torch: use resnetlab.Predictor)")
        if not self.runtime.meta_text:
            raise ValueError(f"{path}: no resnetlab metadata (export it with resnetlab export)")
        self.meta = LiteMeta.from_json(self.runtime.meta_text, str(path))
        self.classes, self.backend, self.path = list(self.meta.classes), self.runtime.name, path

    def __repr__(self) -> str:
        p = self.meta.preprocess
        return (f"LitePredictor({self.path.name}, backend={self.backend}, classes={len(self.classes)}, "
                f"input={p.in_chans}x{p.image_size}x{p.image_size})")

    def preprocess(self, images: Sequence[Any]) -> np.ndarray:
        out = []
        for i, item in enumerate(images):
            if isinstance(item, Image.Image):
                img = item
            elif isinstance(item, np.ndarray) and item.dtype == np.uint8:
                img = Image.fromarray(item)
            else:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("error", Image.DecompressionBombWarning)
                        with Image.open(item) as im:
                            im.load()
                            img = im.copy()
                except Exception as e:  # noqa: BLE001 - any unreadable file, named
                    raise ValueError(f"cannot read image {str(item)!r}: {type(e).__name__}: {e}") from None
            if 0 in img.size:
                raise ValueError(f"image {i}: {img.size[0]}x{img.size[1]} pixels, nothing to classify")
            out.append(self.meta.preprocess(img))
        if not out:
            raise ValueError("no images given")
        return np.stack(out)

    @property
    def multilabel(self) -> bool:
        return self.meta.extra.get("task") == "multilabel"

    def predict_proba(self, images: Sequence[Any]) -> np.ndarray:
        """(N, classes) probabilities: softmax, or a sigmoid per label for a multi-label model."""
        return self.probs(self.preprocess(images))

    def probs(self, x: np.ndarray) -> np.ndarray:
        """Probabilities of a preprocessed (N, C, H, W) float32 batch."""
        return probabilities(self.runtime(x), self.multilabel)

    def predict(self, images: Sequence[Any], topk: int = 5) -> list[list[tuple[str, float]]]:
        if topk < 1:
            raise ValueError(f"topk must be at least 1, got {topk!r}")
        return self.topk(self.predict_proba(images), topk)

    def topk(self, probs: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        return top_k(probs, self.classes, k)

    def classify(self, images: Sequence[Any]) -> list[tuple[str, float]]:
        """The decision per image, by the stored operating point (as :meth:`resnetlab.Predictor.decide`)."""
        return self.decide(self.predict_proba(images))

    def decide(self, probs: np.ndarray) -> list[tuple[str, float]]:
        return decide(probs, self.classes, stored_point(self.meta.extra.get("operating_point"), self.classes),
                      self.multilabel)


def predict_folder(predictor: LitePredictor, folder: str | os.PathLike, out: str | os.PathLike, *,
                   batch_size: int = 32, topk: int = 5) -> dict[str, Any]:
    """Every image under ``folder`` (recursively) into a CSV (path, decision, probability, top-k as JSON, error);
    an unreadable file gets its error in its row and the rest go on. Written to a temporary name, then renamed."""
    root = Path(folder)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    failed = 0
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "decision", "probability", "topk", "error"])
        for start in range(0, len(files), batch_size):
            chunk, images, names = files[start:start + batch_size], [], []
            for name in chunk:
                try:
                    images.append(predictor.preprocess([root / name])[0])
                    names.append(name)
                except ValueError as e:
                    failed += 1
                    writer.writerow([name, "", "", "", str(e)])
            if not images:
                continue
            probs = predictor.probs(np.stack(images))
            for name, (decision, p), top in zip(names, predictor.decide(probs), predictor.topk(probs, topk)):
                writer.writerow([name, decision, f"{p:.6f}", json.dumps([[c, round(v, 6)] for c, v in top]), ""])
    os.replace(tmp, out)
    return {"images": len(files), "failed": failed, "out": str(out)}

