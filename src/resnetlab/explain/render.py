"""Pictures of explanations: input | heat map | overlay panels, and an HTML gallery of correct and wrong
predictions per class, for looking at failure cases."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from ..utils.fileio import atomic_write_text
from ..utils.plot import plt, save_figure

__all__ = ["display_image", "overlay", "save_panel", "write_gallery"]


def display_image(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised (C, H, W) input back to an (H, W, 3) float image in [0, 1] for drawing."""
    c = x.shape[0]
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    img = np.clip(x.detach().cpu().numpy() * s + m, 0, 1)
    img = np.repeat(img, 3, axis=0) if c == 1 else img
    return img.transpose(1, 2, 0)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The map in the 'jet' colour map blended over the image (pytorch-grad-cam's show_cam_on_image look)."""
    heat = plt.get_cmap("jet")(np.clip(cam, 0, 1))[..., :3]
    return np.clip((1 - alpha) * image + alpha * heat, 0, 1)


def save_panel(image: np.ndarray, cam: np.ndarray, path: str | os.PathLike, *, title: str) -> None:
    """Input, heat map and overlay side by side, titled (prediction, probability, method)."""
    fig, axes = plt.subplots(1, 3, figsize=(8.4, 3.2))
    for ax, (pic, label) in zip(axes, ((image, "input"), (cam, "map"), (overlay(image, cam), "overlay"))):
        ax.imshow(pic, cmap="jet" if pic.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest"
                  if image.shape[0] <= 64 else "antialiased")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def write_gallery(rows: Sequence[dict], classes: Sequence[str], out: str | os.PathLike, *, title: str,
                  skipped: int = 0) -> Path:
    """``index.html`` in ``out``: per true class, the wrong predictions first, then the correct ones, each
    a panel PNG (``rows``: dicts with png, true, pred, prob, correct), plus counts at the top."""
    out = Path(out)
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>{len(rows)} images, {sum(not r['correct'] for r in rows)} wrong"
            f"{f', {skipped} unreadable file(s) skipped' if skipped else ''}. "
            "Per class: wrong predictions first.</p><ul>"]
    body += [f'<li><a href="#c{i}">{html.escape(c)}</a>: {sum(r["true"] == c for r in rows)} images, '
             f'{sum(r["true"] == c and not r["correct"] for r in rows)} wrong</li>' for i, c in enumerate(classes)]
    body.append("</ul>")
    for i, c in enumerate(classes):
        mine = [r for r in rows if r["true"] == c]
        body.append(f'<h2 id="c{i}">{html.escape(c)}</h2>')
        for label, group in (("wrong", [r for r in mine if not r["correct"]]), ("correct", [r for r in mine
                                                                                          if r["correct"]])):
            body.append(f"<h3>{label} ({len(group)})</h3><div>")
            body += [f'<figure><img src="{html.escape(r["png"])}" width="420" alt="{html.escape(r["png"])}">'
                     f'<figcaption>{html.escape(r.get("name", r["png"]))}: predicted {html.escape(r["pred"])} '
                     f'({100 * r["prob"]:.1f} %)</figcaption></figure>' for r in group]
            body.append("</div>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>"
            "body{font-family:sans-serif;margin:2em}figure{display:inline-block;margin:4px}"
            "figcaption{font-size:12px}</style></head><body>" + "\n".join(body) + "</body></html>\n")
    return atomic_write_text(out / "index.html", page)
