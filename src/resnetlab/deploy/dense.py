"""Prediction with a trained detector or segmenter: boxes (with class and score) or a class per pixel for each
image, and the image with them drawn on it — what ``resnetlab predict`` writes for these tasks.

Drawing uses torchvision's ``draw_bounding_boxes`` / ``draw_segmentation_masks``. An unreadable image is an
error for that image only; the others are still answered.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from ..data.folder import load_image
from ..eval.loading import TrainedModel, checkpoint_path, load_trained
from ..models.dense import DENSE_TASKS
from ..utils.fileio import atomic_open

__all__ = ["DensePrediction", "DensePredictor", "is_dense_checkpoint"]

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def is_dense_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` (a checkpoint or run directory) holds a detector or a segmenter."""
    from ..eval.loading import read_checkpoint

    p = Path(path)
    if not (p.is_dir() or p.suffix == ".pt"):
        return False
    try:
        return read_checkpoint(checkpoint_path(p), mmap=True).get("task") in DENSE_TASKS  # the record, not the weights
    except (ValueError, FileNotFoundError):
        return False


@dataclass
class DensePrediction:
    """One image's answer: ``boxes`` [{"box": [x0, y0, x1, y1], "label", "score"}] for a detector, ``pixels``
    {class: share of the image} for a segmenter; ``drawn`` the PNG written, if any."""

    image: str
    boxes: list[dict[str, Any]] = field(default_factory=list)
    pixels: dict[str, float] = field(default_factory=dict)
    mask: np.ndarray | None = field(default=None, repr=False)  # (H, W) class per pixel (segmenters)
    drawn: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image, "drawn": self.drawn}
        out.update({"boxes": self.boxes} if self.mask is None else {"pixels": self.pixels})
        return out


class DensePredictor:
    """A trained detector or segmenter from its checkpoint (or run directory), in eval mode on the CPU."""

    def __init__(self, checkpoint: str | os.PathLike | TrainedModel, *, score_thresh: float = 0.5,
                 threads: int | None = None) -> None:
        if not 0.0 <= score_thresh <= 1.0:
            raise ValueError(f"score_thresh must be in [0, 1], got {score_thresh!r}")
        if threads:
            torch.set_num_threads(threads)
        self.trained = checkpoint if isinstance(checkpoint, TrainedModel) else load_trained(checkpoint)
        if self.trained.task not in DENSE_TASKS:
            raise ValueError(f"{self.trained.path} is a {self.trained.task} classifier, not a detector or segmenter; "
                             "use resnetlab.Predictor")
        self.task, self.classes, self.score_thresh = self.trained.task, list(self.trained.classes), score_thresh

    def __repr__(self) -> str:
        return f"DensePredictor({self.trained.name}, {self.task}, classes={self.classes[1:]}, {self.trained.path})"

    @torch.no_grad()
    def predict(self, image: str | os.PathLike, draw_to: str | os.PathLike | None = None) -> DensePrediction:
        """Boxes or a pixel map of one image file; with ``draw_to`` (a .png path), the picture of them too."""
        img = load_image(str(image), "RGB")
        x = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1).contiguous()
        out = DensePrediction(str(image))
        if self.task == "detection":
            det = self.trained.model([x])[0]
            keep = det["scores"] >= self.score_thresh
            out.boxes = [{"box": [round(float(v), 1) for v in b], "label": self.classes[int(k)], "score": float(s)}
                         for b, k, s in zip(det["boxes"][keep], det["labels"][keep], det["scores"][keep])]
        else:
            pre = self.trained.preprocess
            mean, std = torch.tensor(pre.mean).view(-1, 1, 1), torch.tensor(pre.std).view(-1, 1, 1)
            out.mask = self.trained.model(((x - mean) / std)[None])["out"][0].argmax(0).numpy().astype(np.int64)
            share = np.bincount(out.mask.ravel(), minlength=len(self.classes)) / out.mask.size
            out.pixels = {c: float(v) for c, v in zip(self.classes, share) if v > 0}
        if draw_to is not None:
            out.drawn = str(self._draw(x, out, Path(draw_to)))
        return out

    def predict_many(self, images: Sequence[str | os.PathLike], out_dir: str | os.PathLike | None = None
                     ) -> tuple[list[DensePrediction], dict[str, str]]:
        """Every readable image (drawn into ``out_dir`` as <name>.png), and {image: error} for the others."""
        done, errors = [], {}
        for image in images:
            target = Path(out_dir) / f"{Path(image).stem}.png" if out_dir is not None else None
            try:
                done.append(self.predict(image, target))
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                errors[str(image)] = f"{image}: cannot be read as an image ({type(e).__name__}: {e})"
        return done, errors

    def _draw(self, x: torch.Tensor, pred: DensePrediction, path: Path) -> Path:
        from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

        img = (x * 255).round().to(torch.uint8)
        if pred.mask is None:
            if pred.boxes:
                boxes = torch.tensor([b["box"] for b in pred.boxes])
                colours = [PALETTE[(self.classes.index(b["label"]) - 1) % len(PALETTE)] for b in pred.boxes]
                labels = [f"{b['label']} {b['score']:.2f}" for b in pred.boxes]
                img = draw_bounding_boxes(img, boxes, labels, colors=colours, width=max(1, min(img.shape[1:]) // 150))
        else:
            mask = torch.from_numpy(pred.mask)
            present = [k for k in range(1, len(self.classes)) if (mask == k).any()]
            if present:
                masks = torch.stack([mask == k for k in present])
                img = draw_segmentation_masks(img, masks, alpha=0.45,
                                              colors=[PALETTE[(k - 1) % len(PALETTE)] for k in present])
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as f:
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(f, format="PNG")
        return path
