"""``resnetlab.Predictor``: one inference API over checkpoints, exported artefacts and modules.

    >>> p = Predictor("runs/cifar10-resnet18-fast")           # a checkpoint or run directory
    >>> p.predict(["cat.jpg", pil_image, uint8_array], topk=3)  # [[("cat", 0.91), ...], ...]

``backend="auto"`` times the installed runtimes on the model once per machine and picks the fastest
(:mod:`resnetlab.deploy.probe`; ``RESNETLAB_NO_PROBE=1``: the fixed order of :func:`auto_backend`);
``precision="auto"`` takes bf16 where it is native and checked (:mod:`resnetlab.deploy.precision`).
Images of any size or mode are preprocessed as the model
expects (the checkpoint's own eval transform, carried inside every artefact).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from ..data.folder import load_image
from ..runtime.decisions import decide, probabilities, softmax, stored_point, top_k
from .meta import ModelMeta
from .precision import CHECK_IMAGES, PrecisionChoice, choose_precision
from .probe import BackendChoice, choose_backend
from .runtimes import BACKENDS, PRECISIONS, OnnxRuntime, OpenVINORuntime, TorchRuntime, available_backends

__all__ = ["Predictor", "auto_backend", "AUTO_ORDER", "softmax", "state_digest", "file_digest"]

ImageLike = Any  # str | PathLike | PIL.Image | np.ndarray (uint8) | torch.Tensor

AUTO_ORDER: dict[str, tuple[str, ...]] = {"fp32": ("openvino", "onnxruntime", "torch"),
                                          "bf16": ("openvino", "torch")}


def auto_backend(precision: str = "fp32") -> str:
    """The fastest installed runtime for ``precision``: the first of ``AUTO_ORDER[precision]`` installed.

    The order (fastest first) is that of the measured tables benchmarks/results/bench_models.md (resnet18,
    vgg16, inception_v3, xception at batch 1 and 32) and inference_cpu.md (resnet18, 5 repeats): AMD EPYC,
    2 threads, torch 2.14.1, onnxruntime 1.32.0, openvino 2026.4.1. Geometric mean of img/s over the 8
    (model, batch) cells of bench_models.md, relative to OpenVINO:

    - fp32: openvino 1.00 >= onnxruntime 0.99 (within 3 % of each other in every cell but xception at
      batch 32, where OpenVINO is 12 % faster; 1.00 in inference_cpu.md) > torch 0.65 (BN folded,
      channels_last: what :class:`TorchRuntime` runs);
    - bf16: openvino (bf16 hint) 1.00 > torch bf16 0.64 (inference_cpu.md); ONNX Runtime runs fp32 only.

    "torch" is always installed, so every order ends with it.
    """
    if precision not in AUTO_ORDER:
        raise ValueError(f"precision must be one of {', '.join(AUTO_ORDER)}, got {precision!r}")
    have = available_backends()
    return next(b for b in AUTO_ORDER[precision] if have.get(b) or b == "torch")


def state_digest(state: Any, meta: ModelMeta) -> str:
    """``sha256:...`` of a state dict's names, dtypes, shapes and bytes, and of the model's metadata
    (classes, preprocessing): equal exactly when the model computes and names the same thing."""
    h = hashlib.sha256(meta.to_json().encode())
    for key in sorted(state):
        value = state[key]
        if not isinstance(value, torch.Tensor):  # a module's extra state: hashed by its text
            h.update(f"\n{key}|{value!r}".encode())
            continue
        t = value.detach().cpu().contiguous()
        h.update(f"\n{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return "sha256:" + h.hexdigest()


def file_digest(paths: Sequence[str | os.PathLike], meta: ModelMeta | None = None) -> str:
    """``sha256:...`` of files' bytes (in order, not their names), and of the metadata when given."""
    h = hashlib.sha256(meta.to_json().encode() if meta is not None else b"")
    for i, p in enumerate(paths):
        h.update(f"\nfile {i}|".encode())
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


ARTEFACT_SUFFIXES = (".onnx", ".xml", ".pt2", ".ts", ".torchscript")


def _load_source(source: Any, classes: Sequence[str] | None, image_size: int | None, ema: bool):
    """(nn.Module or None, artefact path or None, meta, TrainedModel or None) for a module, checkpoint/run dir or
    artefact."""
    if isinstance(source, nn.Module):
        meta = ModelMeta.for_module(source, image_size)
        if classes is not None:
            meta = _with_classes(meta, classes)
        return source.eval(), None, meta, None
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"Predictor source must be a checkpoint, an exported artefact or an nn.Module, "
                        f"got {type(source).__name__}")
    path = Path(source)
    if path.suffix.lower() in ARTEFACT_SUFFIXES:
        return None, path, None, None
    from ..eval import load_trained

    trained = load_trained(path, ema=ema)
    meta = ModelMeta.from_trained(trained)
    return trained.model, None, meta if classes is None else _with_classes(meta, classes), trained


def _check_images(trained: Any, meta: ModelMeta, check_data: Any) -> tuple[np.ndarray | None, str]:
    """Up to CHECK_IMAGES preprocessed images to compare precisions on: ``check_data`` (its test split), else a
    checkpoint's (``trained``) own validation split; (None, why) when there are none."""
    from ..data import open_dataset, resolve_data_root
    from ..eval import eval_batches, open_split

    if trained is None and check_data is None:
        return None, "no evaluation data"
    try:
        if trained is not None:
            ds, pre = open_split(trained, check_data, "val" if check_data is None else "test"), trained.preprocess
        else:
            ds, pre = open_dataset(resolve_data_root(check_data), "test"), meta.preprocess
    except (ValueError, FileNotFoundError, KeyError) as e:
        return None, f"no evaluation data ({str(e).splitlines()[0]})"
    batches = eval_batches(ds, pre, batch_size=100, limit_batches=-(-CHECK_IMAGES // 100))
    x = np.concatenate([b[0].numpy() for b in batches.epoch(0)])[:CHECK_IMAGES]
    return x, f"{len(x)} images of {getattr(ds, 'source', check_data)}"


def _artefact_precision(artefact: Path, meta: ModelMeta, runtime: Any, threads: int | None, check_data: Any
                        ) -> tuple[PrecisionChoice, Any]:
    """precision="auto" for an artefact already loaded (fp32) as ``runtime``: the choice, and the runtime to
    keep (the one the check built for bf16, else ``runtime``; None: bf16 chosen unchecked, still to load)."""
    from .export import artefact_format, load_artefact

    if meta.extra.get("precision") == "int8":
        return PrecisionChoice("int8", "an int8 artefact runs as quantized (its accuracy was measured when it was "
                                       "made: resnetlab quantize)"), runtime
    if artefact_format(artefact) != "openvino":
        return PrecisionChoice("fp32", f"a {artefact_format(artefact)} artefact runs fp32 here"), runtime
    built = {"fp32": runtime}

    def make(p: str) -> Any:
        if p not in built:
            built[p] = load_artefact(artefact, threads=threads, precision=p)[0]
        return built[p]

    x, where = _check_images(None, meta, check_data)
    choice = choose_precision(make, x, where=where)
    return choice, built.get(choice.precision)


def _auto_precision(trained: Any, model: nn.Module, meta: ModelMeta, backend: str, threads: int | None,
                    check_data: Any) -> PrecisionChoice:
    """precision="auto" for a module or checkpoint (``trained``: its TrainedModel, None for a bare module)."""
    if backend == "onnxruntime":
        return PrecisionChoice("fp32", "ONNX Runtime runs fp32 here")
    x, where = _check_images(trained, meta, check_data)
    make = lambda p: Predictor._runtime(model, meta, auto_backend(p) if backend == "auto" else backend,  # noqa: E731
                                        threads, p)
    return choose_precision(make, x, where=where)


def _with_classes(meta: ModelMeta, classes: Sequence[str]) -> ModelMeta:
    from dataclasses import replace

    if len(classes) != len(meta.classes):
        raise ValueError(f"classes has {len(classes)} names but the model predicts {len(meta.classes)} classes")
    return replace(meta, classes=tuple(str(c) for c in classes))


class Predictor:
    """Top-k predictions from any resnetlab model source, on the fastest runtime installed.

    Args:
        source: a checkpoint file or run directory, an exported artefact (.onnx, .xml, .pt2, .ts),
            or an ``nn.Module`` (classes "0".."N-1" and its registry input size unless given).
        backend: "auto", "torch", "onnxruntime" or "openvino".
        threads: intra-op threads (default: PyTorch's setting, i.e. the cores).
        precision: "fp32" or "bf16" (torch and openvino; bf16 needs a CPU with native bf16 to pay off).
        allow_torchscript: load a TorchScript (.ts) artefact. Off by default: a TorchScript file is code
            that runs when it is loaded, so load one only from a source you trust.

    ``digest`` ("sha256:...") identifies the model it runs: the weights it loaded and its metadata (for an
    artefact, the file's bytes), whatever the backend; bulk prediction resumes a CSV only under the same one.
    """

    def __init__(self, source: Any, backend: str = "auto", *, threads: int | None = None,
                 precision: str = "fp32", classes: Sequence[str] | None = None, image_size: int | None = None,
                 ema: bool = False, allow_torchscript: bool = False, check_data: Any = None) -> None:
        if backend != "auto" and backend not in BACKENDS:
            raise ValueError(f"backend must be 'auto' or one of {', '.join(BACKENDS)}, got {backend!r}")
        if precision not in (*PRECISIONS, "auto"):
            raise ValueError(f"precision must be 'auto' or one of {PRECISIONS}, got {precision!r}")
        model, artefact, meta, trained = _load_source(source, classes, image_size, ema)
        self.precision_choice: PrecisionChoice | None = None  # how precision="auto" chose
        auto = precision == "auto"
        if auto and artefact is None:
            self.precision_choice = _auto_precision(trained, model, meta, backend, threads, check_data)
            precision = self.precision_choice.precision
        self.choice: BackendChoice | None = None  # how backend="auto" chose (None: the backend was given)
        self._how = "asked for" if backend != "auto" else "an artefact runs on its format's runtime"
        if artefact is not None:
            from .export import artefact_files

            self.runtime, meta = self._from_artefact(artefact, backend, threads, "fp32" if auto else precision,
                                                     allow_torchscript)
            if auto:  # decided on the artefact just loaded, not on a second load of it
                self.precision_choice, kept = _artefact_precision(artefact, meta, self.runtime, threads, check_data)
                self.runtime = kept or self._from_artefact(artefact, backend, threads, "bf16", allow_torchscript)[0]
            if classes is not None:
                meta = _with_classes(meta, classes)
            self.digest: str = file_digest(artefact_files(artefact), meta)
            self.source: str = str(artefact)
        else:
            self.digest = state_digest(model.state_dict(), meta)  # before any folding: the model as given
            self.source = str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
            self.runtime, self.choice = self._from_module(model, meta, backend, threads, precision, self.digest)
        self.meta: ModelMeta = meta
        self.classes: list[str] = list(meta.classes)
        self.backend: str = self.runtime.name
        self.precision: str = self.meta.extra.get("precision", self.runtime.precision)
        self.transform = meta.preprocess.image_transform()  # PIL image -> the network's input tensor

    @classmethod
    def _from_module(cls, model: nn.Module, meta: ModelMeta, backend: str, threads: int | None, precision: str,
                     digest: str) -> tuple[Any, BackendChoice | None]:
        def build(b: str) -> Any:
            return cls._runtime(model, meta, b, threads, precision)

        if backend != "auto":
            return build(backend), None
        have = available_backends()
        candidates = [b for b in AUTO_ORDER[precision] if have.get(b)]
        choice, runtime = choose_backend(candidates, build, shape=(meta.in_chans, meta.image_size, meta.image_size),
                                         digest=digest, precision=precision, fallback=auto_backend(precision),
                                         threads=threads or torch.get_num_threads())
        return runtime, choice

    @staticmethod
    def _runtime(model: nn.Module, meta: ModelMeta, backend: str, threads: int | None, precision: str) -> Any:
        if backend == "torch":
            return TorchRuntime(model, precision=precision, threads=threads)
        from .export import to_onnx_bytes, to_openvino

        if backend == "onnxruntime":
            if precision != "fp32":
                raise ValueError("the onnxruntime backend runs fp32 here; use backend='openvino' or 'torch' for bf16")
            return OnnxRuntime(to_onnx_bytes(model, meta, dynamic_batch=True), threads=threads)
        return OpenVINORuntime(to_openvino(model, meta, dynamic_batch=True), precision=precision, threads=threads)

    @staticmethod
    def _from_artefact(path: Path, backend: str, threads: int | None, precision: str, allow_torchscript: bool):
        from .export import artefact_format, load_artefact

        fmt = artefact_format(path)
        native = {"onnx": "onnxruntime", "openvino": "openvino"}.get(fmt, "torch")
        if backend in ("auto", native):
            return load_artefact(path, threads=threads, precision=precision, allow_torchscript=allow_torchscript)
        raise ValueError(f"{path} is a {fmt} artefact: it runs on backend {native!r}, not {backend!r}")

    # --- inputs ------------------------------------------------------------------------------
    def _image(self, item: ImageLike, where: str) -> torch.Tensor:
        if isinstance(item, (str, os.PathLike)):
            try:
                mode = "L" if self.meta.in_chans == 1 else "RGB"
                img = load_image(str(item), mode, window=self.meta.preprocess.window)
            except Exception as e:  # noqa: BLE001 - any unreadable file
                raise ValueError(f"cannot read image {str(item)!r}: {type(e).__name__}: {e}") from None
        elif isinstance(item, Image.Image):
            img = item
        elif isinstance(item, np.ndarray):
            img = _array_to_image(item, where)
        elif isinstance(item, torch.Tensor) and item.dtype == torch.uint8:
            if item.dim() != 3:
                raise ValueError(f"{where}: a uint8 tensor image must be (C, H, W), got shape {tuple(item.shape)}")
            img = _array_to_image(item.permute(1, 2, 0).numpy(), where)
        else:
            raise TypeError(f"{where}: expected a path, PIL image, uint8 array or tensor, got {type(item).__name__}")
        if img.width == 0 or img.height == 0:
            raise ValueError(f"{where}: an image of {img.width}x{img.height} pixels has nothing to classify")
        return self.transform(img)

    def _float_batch(self, t: torch.Tensor, where: str) -> torch.Tensor:
        t = t.unsqueeze(0) if t.dim() == 3 else t
        c, s = self.meta.in_chans, self.meta.image_size
        if t.dim() != 4 or tuple(t.shape[1:]) != (c, s, s):
            raise ValueError(f"{where}: a float tensor is taken as preprocessed network input of shape (N, {c}, {s}, "
                             f"{s}) or ({c}, {s}, {s}); got {tuple(t.shape)} (pass uint8 images to have them resized)")
        t = t if t.dtype == torch.float32 else t.float()
        # numpy, not torch, on the per-call path: a torch kernel here wakes torch's OpenMP threads, which then
        # spin beside ONNX Runtime's / OpenVINO's own (2-4 ms per batch-1 call on 2 cores, measured in
        # benchmarks/results/predictor_overhead.md); one sum tells a NaN / inf apart (~10x cheaper than an
        # elementwise check), the full check only confirms a non-finite sum (a finite overflow)
        a = t.detach().cpu().numpy()
        with np.errstate(over="ignore", invalid="ignore"):
            if not np.isfinite(a.sum(dtype=np.float32)) and not np.isfinite(a).all():
                raise ValueError(f"{where}: the input tensor holds NaN or inf values")
        return t

    def preprocess(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Images -> the (N, C, H, W) float batch the model expects."""
        if isinstance(images, torch.Tensor) and images.is_floating_point():
            if images.numel() == 0:
                raise ValueError("no images: the input tensor is empty")
            return self._float_batch(images, "images")
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            images = list(images)
        if not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) == 0:
            raise ValueError("no images given")
        parts = []
        for i, item in enumerate(images):
            where = f"image {i}" + (f" ({item!s})" if isinstance(item, (str, os.PathLike)) else "")
            if isinstance(item, torch.Tensor) and item.is_floating_point():
                parts.append(self._float_batch(item, where))
            else:
                parts.append(self._image(item, where).unsqueeze(0))
        return torch.cat(parts)

    # --- outputs -----------------------------------------------------------------------------
    def logits(self, images: ImageLike | Sequence[ImageLike]) -> np.ndarray:
        return self.runtime(self.preprocess(images).numpy())

    @property
    def multilabel(self) -> bool:
        """Several independent labels per image (a sigmoid each), as the checkpoint's task says."""
        return self.meta.extra.get("task") == "multilabel"

    def to_probs(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities from logits: softmax over the classes, or a sigmoid per label (multi-label)."""
        return probabilities(logits, self.multilabel)

    def predict_proba(self, images: ImageLike | Sequence[ImageLike]) -> np.ndarray:
        """(N, classes) probabilities (softmax of the logits, float32; a sigmoid per label for multi-label)."""
        return self.to_probs(self.logits(images))

    def predict(self, images: ImageLike | Sequence[ImageLike], topk: int = 5) -> list[list[tuple[str, float]]]:
        """Per image, the top-k (class name, probability) pairs, most likely first."""
        if topk < 1:
            raise ValueError(f"topk must be at least 1, got {topk!r}")
        return self.topk(self.predict_proba(images), topk)

    @property
    def operating_point(self) -> dict[str, Any] | None:
        """The stored decision rule (chosen on validation when the model was trained): a binary model's
        threshold, or a multi-label model's per-label thresholds; None: argmax (p > 0.5 per label)."""
        return stored_point(self.meta.extra.get("operating_point"), self.classes)

    def decide(self, probs: np.ndarray) -> list[tuple[str, float]]:
        """Per row of probabilities, the decision and its probability: a binary model with an operating point
        calls the positive class when its probability reaches the threshold; a multi-label model names every
        label at or over its threshold (";"-joined, "" for none) with the highest such probability;
        otherwise argmax."""
        return decide(probs, self.classes, self.operating_point, self.multilabel)

    def classify(self, images: ImageLike | Sequence[ImageLike]) -> list[tuple[str, float]]:
        """Per image, the decided (class name, probability), by :meth:`decide`."""
        return self.decide(self.predict_proba(images))

    def topk(self, probs: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        return top_k(probs, self.classes, k)

    @property
    def info(self) -> dict[str, Any]:
        """What runs the model and why: backend, precision, how ``auto`` chose (and the timings it chose by)."""
        how = self.choice.how if self.choice else self._how
        return {"backend": self.backend, "precision": self.precision, "how": how,
                "precision_choice": self.precision_choice.to_dict() if self.precision_choice else None,
                "timings": self.choice.timings if self.choice else {}, "source": self.source, "digest": self.digest,
                "threads": getattr(self.runtime, "threads", None)}

    def explain_choice(self) -> str:
        """The backend choice in a few lines (``resnetlab predict --explain-choice``)."""
        text = self.choice.describe() if self.choice is not None else f"backend {self.backend}: {self.info['how']}"
        return text + (f"\n{self.precision_choice.describe()}" if self.precision_choice else "")

    def __repr__(self) -> str:
        m = self.meta
        return (f"Predictor(model={m.model or '?'}, backend={self.backend}, precision={self.precision}, "
                f"classes={len(self.classes)}, input={m.in_chans}x{m.image_size}x{m.image_size})")


def _array_to_image(a: np.ndarray, where: str) -> Image.Image:
    if a.dtype != np.uint8:
        raise TypeError(f"{where}: a numpy image must be uint8 (H, W) or (H, W, C), got dtype {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"{where}: a numpy image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {a.shape}")
    if 0 in a.shape[:2]:
        raise ValueError(f"{where}: an image of {a.shape[1]}x{a.shape[0]} pixels has nothing to classify")
    return Image.fromarray(np.ascontiguousarray(a))
