"""Detection and segmentation data: COCO JSON (boxes, optional polygon / RLE masks), Pascal VOC XML boxes, and a
folder of images with PNG masks (semantic: pixel value = class; instance: pixel value k = instance k).

Every reader checks what it reads and names the file (and annotation) that is wrong; an image that cannot be
decoded at training time yields None, which :func:`collate_detection` drops, so a bad file never ends an epoch.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .folder import IMAGE_EXTENSIONS, load_image

__all__ = ["DetectionSample", "DetectionDataset", "read_coco", "read_voc", "read_mask_folder", "collate_detection",
           "masks_to_boxes"]


@dataclass
class DetectionSample:
    """One image's annotations: boxes (N, 4) xyxy in pixels, labels (N,) in 1..K, masks (N, H, W) or None;
    ``semantic`` (H, W) class map for segmentation data."""

    path: str
    boxes: np.ndarray
    labels: np.ndarray
    masks: Any = None  # (N, H, W) uint8, or a callable giving them (COCO polygons decode on demand)
    semantic: np.ndarray | None = None


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight xyxy boxes of (N, H, W) binary masks (x1, y1 exclusive, as torchvision's convention for pixels)."""
    out = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        out[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return out


class DetectionDataset(torch.utils.data.Dataset):
    """(image float (3, H, W) in [0, 1], target dict, path); ``classes[0]`` is the background."""

    def __init__(self, samples: Sequence[DetectionSample], classes: Sequence[str], source: str) -> None:
        self.samples, self.classes, self.source = list(samples), list(classes), source
        self.skipped: list[tuple[str, str]] = []  # bad images are found (and dropped) when batches are made

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor | None, dict[str, Tensor] | None, str]:
        s = self.samples[i]
        try:
            img = load_image(s.path, "RGB")
        except Exception:  # noqa: BLE001 - a bad image is skipped by the collate, not fatal
            return None, None, s.path
        x = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1).contiguous()
        target: dict[str, Tensor] = {"boxes": torch.from_numpy(s.boxes).float().reshape(-1, 4),
                                     "labels": torch.from_numpy(s.labels).long(), "image_id": torch.tensor(i)}
        masks = s.masks() if callable(s.masks) else s.masks
        if masks is not None:
            target["masks"] = torch.from_numpy(np.asarray(masks, np.uint8))
        if s.semantic is not None:
            target["semantic"] = torch.from_numpy(s.semantic).long()
        return x, target, s.path

    def __repr__(self) -> str:
        boxes = sum(len(s.labels) for s in self.samples)
        return (f"DetectionDataset({len(self)} images, {boxes} objects, {len(self.classes) - 1} classes, "
                f"{self.source!r})")


def collate_detection(batch: Sequence[tuple]) -> tuple[list[Tensor], list[dict[str, Tensor]], list[str]]:
    """Lists of images and targets (torchvision's detectors take lists), and the paths that could not be read."""
    good = [(x, t) for x, t, _ in batch if x is not None]
    return [x for x, _ in good], [t for _, t in good], [p for x, _, p in batch if x is None]


# --- COCO -------------------------------------------------------------------------------------------------
def read_coco(annotations: str | os.PathLike, images: str | os.PathLike, *, with_masks: bool = False
              ) -> DetectionDataset:
    """COCO JSON: ``images``, ``annotations`` (bbox xywh; segmentation polygons or RLE with ``with_masks``),
    ``categories``. Category ids map to labels 1..K in id order; crowd annotations are left out."""
    path, root = Path(annotations), Path(images)
    try:
        data = json.loads(path.read_text())
        cats = sorted(data["categories"], key=lambda c: c["id"])
        imgs = {im["id"]: im for im in data["images"]}
        anns = data["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a COCO annotation file ({type(e).__name__}: {e}); expected 'images', "
                         "'annotations' and 'categories'") from None
    label = {c["id"]: i + 1 for i, c in enumerate(cats)}
    per_image: dict[Any, list[dict]] = {k: [] for k in imgs}
    for a in anns:
        where = f"{path}: annotation {a.get('id', '?')}"
        if a.get("image_id") not in imgs:
            raise ValueError(f"{where}: image_id {a.get('image_id')!r} is not among the file's images")
        if a.get("category_id") not in label:
            raise ValueError(f"{where}: category_id {a.get('category_id')!r} is not among its categories "
                             f"{sorted(label)}")
        x, y, w, h = (float(v) for v in a.get("bbox", (0, 0, 0, 0)))
        if not (w > 0 and h > 0):
            raise ValueError(f"{where}: bbox {a.get('bbox')!r} has no area (expected [x, y, width, height])")
        if not a.get("iscrowd", 0):
            per_image[a["image_id"]].append(a)
    samples = []
    for k, im in imgs.items():
        file = root / im["file_name"]
        if not file.is_file():
            raise ValueError(f"{path}: image {im['file_name']!r} (id {k}) not found in {root}")
        objs = per_image[k]
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in objs], np.float32).reshape(-1, 4)
        labels = np.array([label[a["category_id"]] for a in objs], np.int64)
        masks = _coco_masks(objs, int(im["height"]), int(im["width"])) if with_masks else None
        samples.append(DetectionSample(str(file), boxes, labels, masks))
    return DetectionDataset(samples, ["__background__"] + [str(c.get("name", c["id"])) for c in cats], str(path))


def _coco_masks(objs: list[dict], h: int, w: int):
    def decode() -> np.ndarray:
        from pycocotools import mask as mask_utils

        out = np.zeros((len(objs), h, w), np.uint8)
        for i, a in enumerate(objs):
            seg = a.get("segmentation")
            if not seg:
                continue
            rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg, list) else \
                (mask_utils.frPyObjects(seg, h, w) if isinstance(seg.get("counts"), list) else seg)
            m = mask_utils.decode(rle)
            out[i] = m.max(axis=2) if m.ndim == 3 else m
        return out
    return decode


# --- Pascal VOC -------------------------------------------------------------------------------------------
def read_voc(annotations: str | os.PathLike, images: str | os.PathLike,
             classes: Sequence[str] | None = None) -> DetectionDataset:
    """A folder of VOC XML files (``object/name``, ``object/bndbox``); images found by ``filename``.
    Classes: given, else every name seen, sorted. ``difficult`` objects are kept (COCO-style evaluation)."""
    ann_dir, root = Path(annotations), Path(images)
    files = sorted(ann_dir.glob("*.xml"))
    if not files:
        raise ValueError(f"{ann_dir}: no .xml annotation files")
    parsed = []
    for f in files:
        try:
            tree = ET.parse(f).getroot()
            name = tree.findtext("filename")
            objs = [(o.findtext("name"), [float(o.find("bndbox").findtext(t)) for t in ("xmin", "ymin", "xmax",
                                                                                         "ymax")])
                    for o in tree.findall("object")]
        except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
            raise ValueError(f"{f}: not a VOC annotation ({type(e).__name__}: {e})") from None
        if not name or not (root / name).is_file():
            raise ValueError(f"{f}: its image {name!r} is not in {root}")
        for cls, (x0, y0, x1, y1) in objs:
            if not (x1 > x0 and y1 > y0):
                raise ValueError(f"{f}: object {cls!r} has an empty box {[x0, y0, x1, y1]}")
        parsed.append((root / name, objs))
    names = list(classes) if classes is not None else sorted({c for _, objs in parsed for c, _ in objs})
    index = {c: i + 1 for i, c in enumerate(names)}
    samples = []
    for file, objs in parsed:
        unknown = [c for c, _ in objs if c not in index]
        if unknown:
            raise ValueError(f"{file}: classes {sorted(set(unknown))} are not among {names}")
        samples.append(DetectionSample(str(file), np.array([b for _, b in objs], np.float32).reshape(-1, 4),
                                       np.array([index[c] for c, _ in objs], np.int64)))
    return DetectionDataset(samples, ["__background__"] + names, str(ann_dir))


# --- images + PNG masks -----------------------------------------------------------------------------------
def read_mask_folder(images: str | os.PathLike, masks: str | os.PathLike, *, kind: str = "instance",
                     classes: Sequence[str] | None = None) -> DetectionDataset:
    """Images and same-named PNG masks. ``instance``: value k > 0 is object k (one class, "object", unless
    ``classes`` says otherwise), boxes from the masks; ``semantic``: value = class (0 background)."""
    if kind not in ("instance", "semantic"):
        raise ValueError(f"kind must be 'instance' or 'semantic', got {kind!r}")
    img_dir, mask_dir = Path(images), Path(masks)
    files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"{img_dir}: no images")
    samples = []
    for f in files:
        m_path = mask_dir / (f.stem + ".png")
        if not m_path.is_file():
            raise ValueError(f"{f}: no mask {m_path.name} in {mask_dir}")
        with Image.open(m_path) as im:
            mask = np.asarray(im)
        try:
            with Image.open(f) as im:
                size = im.size
        except (OSError, ValueError):  # an unreadable image is dropped (and counted) when batches are made
            size = mask.shape[::-1]
        if mask.ndim != 2 or mask.shape[::-1] != size:
            raise ValueError(f"{m_path}: a mask must be one channel of the image's size {size}, got shape "
                             f"{mask.shape}")
        if kind == "semantic":
            samples.append(DetectionSample(str(f), np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                                           semantic=mask.astype(np.int64)))
            continue
        ids = [int(v) for v in np.unique(mask) if v != 0]
        inst = np.stack([(mask == v) for v in ids]).astype(np.uint8) if ids else np.zeros((0, *mask.shape), np.uint8)
        samples.append(DetectionSample(str(f), masks_to_boxes(inst), np.ones(len(ids), np.int64), inst))
    names = list(classes) if classes is not None else (["object"] if kind == "instance" else
                                                       [str(i) for i in range(1, int(max(
                                                           (s.semantic.max() for s in samples), default=0)) + 1)])
    return DetectionDataset(samples, ["__background__"] + names, str(img_dir))
