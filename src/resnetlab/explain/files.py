"""Explanations written to disk: one PNG + JSON (+ .npy map) per image, and for a data split a gallery
of correct and wrong predictions per class."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import Progress
from ..utils.fileio import atomic_path, atomic_write_text
from .api import Explanation, explain, load_explainable
from .inputs import SplitInputs
from .render import display_image, save_panel, write_gallery

__all__ = ["explain_files", "explain_split", "unique_stems"]


def _write_one(ex: Explanation, i: int, stem: str, out: Path, mean, std, top_k: int) -> dict[str, Any]:
    t = int(ex.targets[i])
    pred = int(ex.probs[i].argmax())
    title = (f"{stem}: predicted {ex.classes[pred]} ({100 * float(ex.probs[i, pred]):.1f} %); {ex.method} of "
             f"{ex.classes[t]} at {ex.layer}")
    png = out / f"{stem}.png"
    save_panel(display_image(ex.inputs[i], mean, std), ex.maps[i].numpy(), png, title=title)
    with atomic_path(out / f"{stem}.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, ex.raw[i].numpy())
    record = {**ex.record(i, top_k), "png": png.name, "npy": f"{stem}.npy"}
    atomic_write_text(out / f"{stem}.json", json.dumps(record, indent=1) + "\n")
    return record


def unique_stems(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Each file's stem, numbered from its second use on (``a/x.png``, ``b/x.png`` -> ``x``, ``x-2``), so no
    output overwrites another's."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = Path(p).stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def explain_files(checkpoint: str | os.PathLike, images: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                  method: str = "gradcam", layer: str = "auto", target: str | int = "top", top_k: int = 3,
                  batch_size: int = 16, device: str = "cpu") -> dict[str, Any]:
    """A panel PNG, a JSON (top-k, target, the low-resolution map) and the map as .npy per image file.
    Unreadable files are reported in ``errors`` and the others explained."""
    trained = load_explainable(checkpoint, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pre, done, errors = trained.preprocess, [], {}
    stems = unique_stems(images)
    for path, stem in zip(images, stems):
        try:
            ex = explain(trained, [path], method=method, layer=layer, target=target, batch_size=batch_size,
                         device=device)
        except ValueError as e:
            if "cannot read image" not in str(e):
                raise
            errors[str(path)] = str(e)
            continue
        layer = ex.layer  # "auto" resolved once: later images skip the probing forward pass
        done.append({"image": str(path), **_write_one(ex, 0, stem, out, pre.mean, pre.std, top_k)})
    return {"explained": done, "errors": errors, "out": str(out)}


def explain_split(checkpoint: str | os.PathLike, out: str | os.PathLike, *, data: str | os.PathLike | None = None,
                  split: str = "test", limit: int | None = 200, method: str = "gradcam", layer: str = "auto",
                  top_k: int = 3, batch_size: int = 32, device: str = "cpu", progress: bool = True
                  ) -> dict[str, Any]:
    """Explain (up to ``limit`` of) a split as the run's own evaluation reads it, and write a gallery
    (``out/index.html``): per class, wrong predictions first. Unreadable files are skipped and counted."""
    trained = load_explainable(checkpoint, device)
    inputs = SplitInputs(trained, data, split, limit, batch_size=batch_size, progress=progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pre, rows = trained.preprocess, []
    with Progress(inputs.n, f"explain {split}", unit="img", enabled=progress) as bar:
        for x, y in inputs:
            ex = explain(trained, x, method=method, layer=layer, target="top", batch_size=batch_size, device=device)
            layer = ex.layer
            for i in range(len(x)):
                stem = f"{len(rows):05d}"
                record = _write_one(ex, i, stem, out, pre.mean, pre.std, top_k)
                pred = int(ex.probs[i].argmax())
                rows.append({"png": record["png"], "name": stem, "true": trained.classes[int(y[i])],
                             "pred": trained.classes[pred], "prob": float(ex.probs[i, pred]),
                             "correct": pred == int(y[i])})
            bar.update(len(x))
    skipped = inputs.skipped
    title = f"{method} at {layer}: {trained.path} on {split}" if rows else f"{method}: no images"
    index = write_gallery(rows, trained.classes, out, title=title, skipped=skipped)
    return {"images": len(rows), "wrong": sum(not r["correct"] for r in rows), "skipped": skipped,
            "index": str(index), "layer": layer if rows else None}
