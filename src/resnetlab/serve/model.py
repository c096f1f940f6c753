"""The model a server runs: a :class:`resnetlab.Predictor` for classification and, for a PyTorch checkpoint,
the eager model for class-activation maps. Everything a route needs, in one object."""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..deploy import Predictor
from .config import ServeConfig
from .decode import decode_image

__all__ = ["ServedModel"]


class ServedModel:
    """``predictor`` answers /v1/predict; ``trained`` (a :class:`resnetlab.eval.TrainedModel`, or None for an
    exported artefact) answers /v1/explain."""

    def __init__(self, predictor: Predictor, trained: Any | None = None) -> None:
        self.predictor, self.trained = predictor, trained
        self.mode = "L" if predictor.meta.in_chans == 1 else "RGB"
        self._explain_lock = threading.Lock()  # CAM hooks on one module: one explanation at a time

    @classmethod
    def load(cls, cfg: ServeConfig) -> ServedModel:
        precision = "fp32" if cfg.precision == "int8-artefact" else cfg.precision
        predictor = Predictor(cfg.checkpoint, backend=cfg.backend, threads=cfg.threads, precision=precision)
        if cfg.precision == "int8-artefact" and predictor.precision != "int8":
            raise ValueError(f"{cfg.checkpoint}: --precision int8-artefact needs an int8 artefact (made by "
                             f"`resnetlab quantize`), this one runs {predictor.precision}")
        trained = None
        if cfg.explain:  # an exported artefact carries no gradients: no explanations
            from ..explain.api import EXPORTED_SUFFIXES, load_explainable

            if Path(cfg.checkpoint).suffix.lower() not in EXPORTED_SUFFIXES:
                trained = load_explainable(cfg.checkpoint)
        return cls(predictor, trained)

    # --- what it is -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.predictor.meta.model or Path(self.predictor.source).stem

    @property
    def digest(self) -> str:
        return self.predictor.digest

    @property
    def backend(self) -> str:
        return self.predictor.backend

    @property
    def precision(self) -> str:
        return self.predictor.precision

    @property
    def classes(self) -> list[str]:
        return self.predictor.classes

    @property
    def explainable(self) -> bool:
        return self.trained is not None

    def info(self, cfg: ServeConfig) -> dict[str, Any]:
        meta = self.predictor.meta
        return {"name": self.name, "digest": self.digest, "source": self.predictor.source, "classes": self.classes,
                "backend": self.backend, "precision": self.precision,
                "input": {"channels": meta.in_chans, "size": meta.image_size},
                "preprocess": meta.preprocess.to_dict(), "operating_point": self.predictor.operating_point,
                "task": meta.extra.get("task", "multiclass"), "explain": self.explainable,
                "batching": {"max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms, "max_queue": cfg.max_queue},
                "limits": {"max_body_mb": cfg.max_body_mb, "max_files": cfg.max_files, "max_pixels": cfg.max_pixels,
                           "timeout_s": cfg.timeout_s}}

    # --- predicting -----------------------------------------------------------------------------
    def decode(self, data: bytes, name: str, max_pixels: int) -> np.ndarray:
        x = decode_image(data, name, mode=self.mode, max_pixels=max_pixels, transform=self.predictor.transform)
        return x.numpy()

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.predictor.runtime(batch)

    def probs(self, logits: np.ndarray) -> np.ndarray:
        return self.predictor.to_probs(logits)

    def describe(self, probs: np.ndarray, k: int) -> dict[str, Any]:
        """One image's answer: top-k, the decision (the stored operating point's, else argmax) and threshold."""
        (top,) = self.predictor.topk(probs[None], k)
        ((label, p),) = self.predictor.decide(probs[None])
        point = self.predictor.operating_point
        return {"top": [{"class": c, "prob": v} for c, v in top], "decision": {"class": label, "prob": p},
                "threshold": point.get("threshold", point.get("thresholds")) if point else None}

    def warm_up(self, max_batch: int) -> None:
        """Run batch 1 and the largest batch once, so the first users do not pay for lazy initialisation."""
        meta = self.predictor.meta
        for n in sorted({1, max_batch}):
            self.logits(np.zeros((n, meta.in_chans, meta.image_size, meta.image_size), np.float32))

    # --- explaining -----------------------------------------------------------------------------
    def explain(self, x: np.ndarray, method: str, target: str, topk: int) -> dict[str, Any]:
        """A class-activation map of one preprocessed image, as an overlay PNG (and base64 of it)."""
        from ..explain import explain
        from ..explain.cam import METHODS
        from ..explain.render import display_image, overlay
        from .errors import ServeError

        if method not in METHODS:
            raise ServeError(422, "invalid_parameter", f"method must be one of {', '.join(METHODS)}, got {method!r}")
        try:
            with self._explain_lock:
                e = explain(self.trained, torch.from_numpy(x)[None], method=method, target=target)
        except ValueError as err:  # an unknown target class or index, named
            raise ServeError(422, "invalid_parameter", str(err)) from None
        pre = self.trained.preprocess
        pic = overlay(display_image(e.inputs[0], pre.mean, pre.std), e.maps[0].numpy())
        img = Image.fromarray((pic * 255).round().astype(np.uint8))
        if min(img.size) < 224:  # small inputs (CIFAR's 32 px) are shown enlarged, pixels kept square
            scale = -(-224 // min(img.size))
            img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        record = e.record(0, topk)
        png = buf.getvalue()
        return {"method": e.method, "layer": e.layer, "target": record["target"], "top": record["top"],
                "overlay_png": png, "overlay_png_base64": base64.b64encode(png).decode("ascii")}
