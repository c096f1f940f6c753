"""Plots with matplotlib (Agg, no display needed): curves people would rather look at than read.

Conventions every figure here follows: curves that belong together share a colour (training
dashed, test solid, for the same network), tick labels read as plain numbers ("200", not
"2e+02") also on log axes, and a figure is written atomically (never a half PNG).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

from .fileio import atomic_path  # noqa: E402

__all__ = ["line_plot", "line_figure", "save_figure", "confusion_matrix_figure", "grouped_bars", "plain_number"]

Series = Mapping[str, tuple[Sequence[float], Sequence[float]]]


def plain_number(v: float, _pos: object = None) -> str:
    """Tick text as a person writes it: 200, 0.05, 1.5k, 2M, 1e-06 only where nothing shorter exists."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    if a >= 1e-3:
        return f"{v:g}"
    return f"{v:.0e}"


def _style(ax, xlabel: str, ylabel: str, title: str, log_y: bool, log_x: bool = False,
           categorical_x: bool = False) -> None:
    if log_y:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, numticks=12))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))  # no "4x10^2" between the decades
    if log_x:
        ax.set_xscale("log")
    for axis in (ax.yaxis,) if categorical_x else (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(plain_number))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def _colour(i: int, n: int):
    """The i-th of n distinct colours: tab10 up to 10, tab20 up to 20, then evenly spaced hues."""
    if n <= 10:
        return plt.get_cmap("tab10")(i)
    if n <= 20:
        return plt.get_cmap("tab20")(i)
    return plt.get_cmap("hsv")(i / n)


def line_figure(series: Series, *, title: str = "", xlabel: str = "", ylabel: str = "", log_y: bool = False,
                dashed: Sequence[str] = (), groups: Mapping[str, str] | None = None, ax=None,
                markers: bool = True) -> Figure:
    """One line per series (name -> (xs, ys)). ``groups`` maps a series to a group name: series of one
    group share a colour (e.g. "plain20 train" and "plain20 test" -> "plain20"); ``dashed`` lists the
    series drawn dashed (by convention the training curves)."""
    pts = {k: [(float(x), float(y)) for x, y in zip(*v) if y is not None and math.isfinite(float(y))
               and (not log_y or float(y) > 0)] for k, v in series.items()}
    if not any(pts.values()):
        raise ValueError(f"nothing to plot for {title!r}: every series is empty or non-finite")
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    groups = dict(groups or {})
    order = list(dict.fromkeys(groups.get(k, k) for k in pts))
    colours = {g: _colour(i, len(order)) for i, g in enumerate(order)}
    for name, p in pts.items():
        if not p:
            continue
        xs, ys = zip(*p)
        ax.plot(xs, ys, linestyle="--" if name in dashed else "-", color=colours[groups.get(name, name)],
                marker="o" if markers and len(p) <= 40 else None, markersize=3, linewidth=1.8, label=name)
    _style(ax, xlabel, ylabel, title, log_y)
    ax.legend(fontsize=8, frameon=False, ncol=2 if len(pts) > 8 else 1)
    return fig if fig is not None else ax.figure


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> None:
    """Write ``fig`` as a PNG atomically and free it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)


def line_plot(series: Series, path: str | os.PathLike, **kwargs) -> None:
    """:func:`line_figure` straight into a PNG file."""
    save_figure(line_figure(series, **kwargs), path)


def grouped_bars(values: Mapping[str, Mapping[str, float | None]], *, title: str = "", ylabel: str = "",
                 log_y: bool = False, ax=None, annotate: bool = True) -> Figure:
    """Bars grouped by the outer key (e.g. one group per model), one bar per inner key (e.g. backend),
    the same inner key in the same colour in every group. Missing values leave a gap."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    outer = list(values)
    inner = list(dict.fromkeys(k for v in values.values() for k in v))
    width = 0.8 / max(len(inner), 1)
    for j, key in enumerate(inner):
        xs = [i + (j - (len(inner) - 1) / 2) * width for i in range(len(outer))]
        ys = [values[o].get(key) for o in outer]
        bars = ax.bar([x for x, y in zip(xs, ys) if y is not None], [y for y in ys if y is not None], width,
                      label=key, color=_colour(j, len(inner)))
        if annotate and len(inner) * len(outer) <= 40:
            ax.bar_label(bars, labels=[plain_number(round(b.get_height(), 1)) for b in bars], fontsize=7,
                         padding=1)
    ax.set_xticks(range(len(outer)), outer)
    _style(ax, "", ylabel, title, log_y, categorical_x=True)
    ax.grid(False, axis="x")
    ax.legend(fontsize=8, frameon=False)
    return fig if fig is not None else ax.figure


def confusion_matrix_figure(cm: np.ndarray, names: Sequence[str], rule: str | None = None) -> Figure:
    """Heat-map coloured by the fraction of each true class, counts in the cells while they are legible."""
    c = cm.shape[0]
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    side = min(max(4.5, 0.55 * c + 2.5), 14)
    fig, ax = plt.subplots(figsize=(side + 1, side), layout="constrained")
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    tick = 8 if c <= 30 else max(3, int(240 / c))
    ax.set_xticks(range(c), names, rotation=90 if c > 12 else 45 if max(map(len, names)) > 3 else 0, fontsize=tick)
    ax.set_yticks(range(c), names, fontsize=tick)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    head = f"Confusion matrix {rule}\n" if rule else "Confusion matrix "
    ax.set_title(f"{head}(N={int(cm.sum())}; colour: fraction of the true class)", fontsize=10)
    if c <= 30:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7 if c > 12 else 9,
                        color="white" if frac[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class")
    return fig
