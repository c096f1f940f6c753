"""Line plots drawn with Pillow alone (matplotlib is not a dependency): curves people would
rather look at than read — accuracy against time, gradient norms against depth."""

from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

__all__ = ["line_plot", "side_by_side"]

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _font(size: int):
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if raw <= m * step)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(v: float, log: bool) -> str:
    if log:
        return f"{10 ** v:.2g}"
    return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


def _dashes(d: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float], colour, on: float = 8.0,
            off: float = 6.0) -> None:
    length = math.hypot(b[0] - a[0], b[1] - a[1])
    if length == 0:
        return
    ux, uy = (b[0] - a[0]) / length, (b[1] - a[1]) / length
    t = 0.0
    while t < length:
        e = min(t + on, length)
        d.line([(a[0] + ux * t, a[1] + uy * t), (a[0] + ux * e, a[1] + uy * e)], fill=colour, width=2)
        t = e + off


def line_plot(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike, *,
              title: str = "", xlabel: str = "", ylabel: str = "", log_y: bool = False,
              size: tuple[int, int] = (900, 560), dashed: Sequence[str] = ()) -> None:
    """One line per series (name -> (xs, ys)); markers at the points; legend in the corner."""
    pts = {k: [(float(x), math.log10(y) if log_y else float(y)) for x, y in zip(*v)
               if y is not None and math.isfinite(float(y)) and (not log_y or y > 0)] for k, v in series.items()}
    allp = [p for v in pts.values() for p in v]
    if not allp:
        raise ValueError(f"nothing to plot in {path}: every series is empty or non-finite")
    x0, x1 = min(p[0] for p in allp), max(p[0] for p in allp)
    y0, y1 = min(p[1] for p in allp), max(p[1] for p in allp)
    pad_y = (y1 - y0) * 0.05 or 0.5
    y0, y1, x1 = y0 - pad_y, y1 + pad_y, x1 if x1 > x0 else x0 + 1
    w, h = size
    left, right, top, bottom = 80, 30, 50, 60
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font, small = _font(16), _font(13)
    sx = lambda x: left + (x - x0) / (x1 - x0) * (w - left - right)  # noqa: E731
    sy = lambda y: h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)  # noqa: E731
    for t in _ticks(y0, y1):
        d.line([(left, sy(t)), (w - right, sy(t))], fill=(230, 230, 230))
        d.text((left - 8, sy(t)), _label(t, log_y), fill="black", font=small, anchor="rm")
    for t in _ticks(x0, x1, 8):
        d.line([(sx(t), top), (sx(t), h - bottom)], fill=(240, 240, 240))
        d.text((sx(t), h - bottom + 8), f"{t:g}", fill="black", font=small, anchor="mt")
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for i, (name, p) in enumerate(pts.items()):
        colour = PALETTE[i % len(PALETTE)]
        xy = [(sx(a), sy(b)) for a, b in p]
        if len(xy) > 1:
            if name in dashed:
                for (ax, ay), (bx, by) in zip(xy, xy[1:]):
                    _dashes(d, (ax, ay), (bx, by), colour)
            else:
                d.line(xy, fill=colour, width=2)
        for cx, cy in xy:
            d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
        ly = top + 10 + 20 * i
        d.line([(w - right - 190, ly + 8), (w - right - 165, ly + 8)], fill=colour, width=3)
        d.text((w - right - 160, ly), name[:24], fill="black", font=small)
    d.text((w / 2, 15), title, fill="black", font=font, anchor="mt")
    d.text((w / 2, h - 22), xlabel, fill="black", font=font, anchor="mt")
    ylab = Image.new("RGB", (h, 24), "white")
    ImageDraw.Draw(ylab).text((h / 2, 2), ylabel + (" (log scale)" if log_y else ""), fill="black", font=font,
                              anchor="mt")
    img.paste(ylab.rotate(90, expand=True), (4, 0))
    tmp = f"{path}.tmp.png"
    img.save(tmp)
    os.replace(tmp, path)


def side_by_side(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> None:
    """Join PNG panels left to right into one image (e.g. the paper's plain / residual figure)."""
    images = [Image.open(p).convert("RGB") for p in paths]
    width, height = sum(im.width for im in images), max(im.height for im in images)
    canvas = Image.new("RGB", (width, height), "white")
    x = 0
    for im in images:
        canvas.paste(im, (x, 0))
        x += im.width
    tmp = f"{out}.tmp.png"
    canvas.save(tmp)
    os.replace(tmp, out)
