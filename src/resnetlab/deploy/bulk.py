"""Bulk prediction over a folder: streamed, bounded memory, resumable, sharded under torchrun.

Rows are appended to a CSV and flushed batch by batch, so a killed run loses at most one batch
and a rerun skips every file already written. Under ``torchrun`` rank r takes every
world-th file into its own part file; rank 0 merges the parts once every rank has finished.

A rerun resumes only rows of the same model: ``<out>.meta.json`` (written atomically before the first
row) records the predictor's digest (its weights and metadata), precision and top-k; an existing CSV
from another model, or one with no such record, is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.folder import IMAGE_EXTENSIONS, describe_error, load_image
from ..utils.fileio import atomic_write_bytes, atomic_write_text
from ..utils.progress import Progress

__all__ = ["list_images", "predict_folder", "FIELDS", "sidecar_path"]

FIELDS = ["path", "label", "prob", "topk_labels", "topk_probs", "error"]
SIDECAR_FORMAT = "resnetlab.predictions/1"
_MUST_MATCH = ("model_digest", "precision", "topk")  # what makes two runs' rows the same kind of rows


def list_images(folder: str | os.PathLike) -> list[str]:
    """Image files under ``folder`` (recursively), as sorted paths relative to it."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"--data must be a folder of images, got {str(folder)!r}")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    return files


class _Images(Dataset):
    def __init__(self, root: Path, files: list[str], transform: Any, mode: str, shape: tuple[int, ...],
                 window: tuple[float, float] | None = None) -> None:
        self.root, self.files, self.transform, self.mode, self.shape = root, files, transform, mode, shape
        self.window = window  # the model's DICOM window, as it was trained

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, str]:
        try:
            image = load_image(str(self.root / self.files[i]), self.mode, window=self.window)
            return self.transform(image), self.files[i], ""
        except Exception as e:  # noqa: BLE001 - a bad file becomes a row with its error
            return torch.zeros(self.shape), self.files[i], describe_error(e)


def _collate(items):
    xs, paths, errors = zip(*items)
    return torch.stack(xs), list(paths), list(errors)


def _done_paths(part: Path) -> set[str]:
    """Paths already written; a half-written last line (a kill mid-write) is cut off first."""
    if not part.is_file():
        return set()
    data = part.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        atomic_write_bytes(part, data)  # a kill now leaves the old file, never a half-rewritten one
    rows = list(csv.DictReader(data.decode().splitlines()))
    return {r["path"] for r in rows}


def _dist() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def sidecar_path(out: str | os.PathLike) -> Path:
    """``<out>.meta.json``: which model, precision and top-k wrote the CSV ``out``."""
    out = Path(out)
    return out.with_name(out.name + ".meta.json")


def _record(predictor: Any, topk: int) -> dict[str, Any]:
    return {"format": SIDECAR_FORMAT, "model_digest": predictor.digest, "precision": predictor.precision,
            "topk": topk, "model": predictor.meta.model, "classes": list(predictor.classes),
            "source": getattr(predictor, "source", ""), "backend": predictor.backend,
            "operating_point": predictor.operating_point}


def _check_resumable(out: Path, record: dict[str, Any], has_rows: bool) -> None:
    """Raise unless the rows already in ``out`` were written by the same model (per its sidecar)."""
    side = sidecar_path(out)
    hint = "pass overwrite=True (resnetlab predict --overwrite) to replace it, or choose another --out"
    if not side.is_file():
        if has_rows:
            raise ValueError(f"{out} already holds predictions but no {side.name} saying which model wrote them, "
                             f"so they cannot be resumed safely; {hint}")
        return
    try:
        old = json.loads(side.read_text())
        differ = [k for k in _MUST_MATCH if old.get(k) != record[k]]
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{side}: unreadable ({type(e).__name__}: {e}); {hint}") from None
    if differ:
        what = "; ".join(f"{k}: {old.get(k)!r} there, {record[k]!r} now" for k in differ)
        raise ValueError(f"{out} was written by another model or setting ({what}): resuming would mix two "
                         f"models' rows; {hint}")


def predict_folder(predictor: Any, folder: str | os.PathLike, out: str | os.PathLike, *, batch_size: int = 64,
                   topk: int = 5, workers: int = 2, overwrite: bool = False, progress: bool = True,
                   merge_timeout_s: float = 3600.0) -> dict[str, Any]:
    """Predict every image under ``folder`` into the CSV ``out`` (columns: :data:`FIELDS`).

    An existing ``out`` is resumed (files already in it are skipped) when its ``<out>.meta.json`` names the
    same model digest, precision and ``topk``; otherwise it is refused, unless ``overwrite`` starts it afresh.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
    rank, world = _dist()
    root, out = Path(folder), Path(out)
    files = list_images(root)[rank::world]
    part = out if world == 1 else out.with_name(f"{out.stem}.part{rank}-of-{world}{out.suffix}")
    part.parent.mkdir(parents=True, exist_ok=True)
    part.with_name(part.name + ".done").unlink(missing_ok=True)  # this rank has not finished this run
    record = _record(predictor, topk)
    if overwrite:
        part.unlink(missing_ok=True)
    done = _done_paths(part)
    if not overwrite:
        _check_resumable(out, record, bool(done) or (world > 1 and out.is_file()))
    atomic_write_text(sidecar_path(out), json.dumps(record, indent=2) + "\n")  # before the first row
    todo = [f for f in files if f not in done]
    meta = predictor.meta
    ds = _Images(root, todo, predictor.transform, "L" if meta.in_chans == 1 else "RGB",
                 (meta.in_chans, meta.image_size, meta.image_size), meta.preprocess.window)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers if todo else 0, collate_fn=_collate,
                        prefetch_factor=2 if workers and todo else None)
    failed, t0 = 0, time.perf_counter()
    new_file = not part.is_file() or part.stat().st_size == 0
    with part.open("a", newline="") as fh, Progress(len(todo), f"predict {root.name}", unit="img",
                                                      enabled=progress) as bar:
        writer = csv.DictWriter(fh, FIELDS)
        if new_file:
            writer.writeheader()
        for x, paths, errors in loader:
            probs = predictor.to_probs(predictor.runtime(x.numpy()))
            for path, err, top, (label, prob) in zip(paths, errors, predictor.topk(probs, topk),
                                                     predictor.decide(probs)):
                failed += bool(err)
                row = {"path": path, "error": err, "label": "", "prob": "", "topk_labels": "", "topk_probs": ""}
                if not err:  # label: the decision (the operating point of a binary model that stored one)
                    row.update(label=label, prob=f"{prob:.6f}", topk_labels=";".join(c for c, _ in top),
                               topk_probs=";".join(f"{p:.6f}" for _, p in top))
                writer.writerow(row)
            fh.flush()
            bar.update(len(paths))
    summary = {"rank": rank, "world_size": world, "images": len(files), "predicted_now": len(todo),
               "resumed_from": len(done), "failed": failed, "seconds": time.perf_counter() - t0, "out": str(out)}
    if world > 1:
        atomic_write_text(part.with_name(part.name + ".done"), "ok\n")
        if rank == 0:
            _merge(out, world, merge_timeout_s)
    return summary


def _merge(out: Path, world: int, timeout_s: float) -> None:
    """Rank 0: wait for every rank's part, then write ``out`` sorted by path (atomically)."""
    parts = [out.with_name(f"{out.stem}.part{r}-of-{world}{out.suffix}") for r in range(world)]
    deadline = time.monotonic() + timeout_s
    while not all(p.with_name(p.name + ".done").is_file() for p in parts):
        if time.monotonic() > deadline:
            missing = [str(p) for p in parts if not p.with_name(p.name + ".done").is_file()]
            raise TimeoutError(f"ranks did not finish within {timeout_s:.0f} s: {missing}; rerun to resume them")
        time.sleep(0.5)
    rows = [row for p in parts for row in csv.DictReader(p.read_text().splitlines())]
    rows.sort(key=lambda r: r["path"])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out, buf.getvalue())
    for p in parts:
        p.unlink()
        p.with_name(p.name + ".done").unlink()
