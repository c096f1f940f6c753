"""The compress report: one row per step (what it cost in top-1, what it bought in size and speed) and the
Pareto plot of top-1 against measured batch-32 throughput."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from ..utils.env import environment
from ..utils.fileio import atomic_write_text

__all__ = ["write_report", "markdown"]

COLUMNS = ("step", "precision", "note", "params", "macs", "mb", "test_top1", "test_images", "b1_ms", "b1_ms_min",
           "b1_ms_max", "b32_img_s", "b32_img_s_min", "b32_img_s_max", "speedup_vs_original_fp32",
           "speedup_vs_original_int8", "top1_drop_points", "path")


def _derived(rows: list[dict[str, Any]]) -> None:
    base = next(r for r in rows if r["step"] == "original" and r["precision"] == "fp32")
    base8 = next((r for r in rows if r["step"] == "original" and r["precision"] == "int8"), None)
    for r in rows:
        r["speedup_vs_original_fp32"] = r["b32_img_s"] / base["b32_img_s"]
        r["speedup_vs_original_int8"] = r["b32_img_s"] / base8["b32_img_s"] if base8 else None
        r["top1_drop_points"] = 100 * (base["test_top1"] - r["test_top1"])


def markdown(result: dict[str, Any]) -> str:
    env, rows = result["environment"], result["rows"]
    lines = [f"# Compression of `{result['config']['checkpoint']}`", "",
             f"{env['date']}, {env['cpu']} ({env['cores_usable']} cores usable), runtime "
             f"**{result['config']['runtime']}**, threads {result['config']['threads'] or 'default'}; resnetlab "
             f"{env['resnetlab']} at {env.get('commit') or '?'}{' (dirty)' if env.get('dirty') else ''}, torch "
             f"{env['torch']}. Command: `{env['command']}`", "",
             f"Top-1 on {rows[0]['test_images']} test images (the same for every row; models selected on "
             f"validation). Batch-1 latency and batch-32 throughput: median of {result['config']['repeats']} "
             "rounds, one fresh process per row per round, rounds interleaved, [min-max] beside.", "",
             "| step | precision | params | MACs | MB | top-1 % | Δ top-1 (pts) | batch-1 ms | batch-32 img/s "
             "| x FP32 | x int8 | note |", "|" + "---|" * 12]
    for r in rows:
        x8 = f"{r['speedup_vs_original_int8']:.2f}" if r["speedup_vs_original_int8"] else "-"
        lines.append(
            f"| {r['step']} | {r['precision']} | {r['params'] / 1e6:.2f}M | {r['macs'] / 1e6:.1f}M | {r['mb']:.2f} | "
            f"{100 * r['test_top1']:.2f} | {r['top1_drop_points']:+.2f} | {r['b1_ms']:.2f} [{r['b1_ms_min']:.2f}-"
            f"{r['b1_ms_max']:.2f}] | {r['b32_img_s']:.0f} [{r['b32_img_s_min']:.0f}-{r['b32_img_s_max']:.0f}] | "
            f"{r['speedup_vs_original_fp32']:.2f} | {x8} | {r['note']} |")
    prune = result.get("prune")
    if prune:
        lines += ["", f"Pruning: channel ratio {prune['ratio']:.3f}, MACs {prune['macs_before'] / 1e6:.1f}M -> "
                      f"{prune['macs_after'] / 1e6:.1f}M ({prune['macs_speedup']:.2f}x fewer), params "
                      f"{prune['params_before'] / 1e6:.2f}M -> {prune['params_after'] / 1e6:.2f}M; per-layer widths "
                      "in prune/prune.json and in prune/model.safetensors' metadata."]
    lines += ["", "Δ top-1 is the original FP32 model's top-1 minus the row's (positive: a loss). "
                  "x FP32 / x int8: batch-32 throughput relative to the original model in FP32 / post-training int8 "
                  "on the same runtime.", "", "![Pareto](pareto.png)", ""]
    return "\n".join(lines)


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def pareto_plot(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Top-1 against batch-32 throughput: up and to the right is better; the frontier is drawn."""
    import matplotlib.pyplot as plt

    from ..utils.plot import plain_number, save_figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    marker = {"fp32": "o", "int8": "s"}
    colours, labels = {}, []
    for r in rows:  # one colour per group (a benchmark's pruning ratio), else per step
        c = colours.setdefault(r.get("group") or r["step"], f"C{len(colours)}")
        x, y = r["b32_img_s"], 100 * r["test_top1"]
        ax.errorbar(x, y, xerr=[[x - r["b32_img_s_min"]], [r["b32_img_s_max"] - x]], fmt=marker[r["precision"]],
                    color=c, ms=8, capsize=3)
        labels.append(ax.annotate(f"{r['step']} {r['precision']}", (x, y), textcoords="offset points",
                                  xytext=(6, 6), fontsize=8))
    front, best = [], -1.0
    for r in sorted(rows, key=lambda r: -r["b32_img_s"]):
        if r["test_top1"] > best:
            front.append(r)
            best = r["test_top1"]
    ax.plot([r["b32_img_s"] for r in front], [100 * r["test_top1"] for r in front], "--", color="grey", lw=1,
            label="Pareto frontier")
    ax.set_xscale("log")
    ax.margins(y=0.1)  # room above the top points for their labels
    xs = [r["b32_img_s"] for r in rows]
    ax.set_xlim(min(xs) / 1.25, max(xs) * 2.2)  # room for the labels right of the fastest points
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(plain_number))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("batch-32 throughput, images/s (log scale; bars: min-max of the rounds)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.plot([], [], "o", color="k", label="FP32")
    ax.plot([], [], "s", color="k", label="int8")
    ax.legend(fontsize=8, frameon=False, loc="lower left")
    _separate(fig, labels, [(r["b32_img_s_min"], r["b32_img_s_max"], 100 * r["test_top1"]) for r in rows])
    save_figure(fig, path)


def _separate(fig: Any, labels: list[Any], spans: list[tuple[float, float, float]], tries: int = 6) -> None:
    """Place each point's label right or left of it, above or below, then one text height further out, at
    the first spot that overlaps no other label, marker or error bar (`spans`: x-min, x-max, y in data
    units): points of one pruning ratio in FP32 and int8 often sit close together."""
    from matplotlib.transforms import Bbox

    fig.canvas.draw()
    renderer, r = fig.canvas.get_renderer(), 4 * fig.dpi / 72  # a marker's radius (ms=8 points across) in pixels
    placed = [Bbox.from_extents(px - r, py - r, px + r, py + r)  # the markers are obstacles too
              for px, py in (a.axes.transData.transform(a.xy) for a in labels)]
    for a, (lo, hi, y) in zip(labels, spans):
        (x0, y0), (x1, _) = a.axes.transData.transform([(lo, y), (hi, y)])
        placed.append(Bbox.from_extents(x0, y0 - 2, x1, y0 + 2))
    for a in labels:
        h = a.get_window_extent(renderer).height * 72 / fig.dpi  # one text height, in points
        spots = [(side, dy) for k in range(tries) for dy in (6 + k * h, -6 - (k + 1) * h) for side in (1, -1)]
        for side, dy in spots:
            a.set_horizontalalignment("left" if side > 0 else "right")
            a.xyann = (6 * side, dy)
            box = a.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in placed) and a.axes.bbox.contains(box.x1, box.y1) \
                    and a.axes.bbox.contains(box.x0, box.y0):
                break
        else:
            a.set_horizontalalignment("left")
            a.xyann = (6, 6)
            box = a.get_window_extent(renderer)
        placed.append(box)


def write_report(out: Path, cfg: Any, rows: list[dict[str, Any]], timings: list[dict[str, Any]]) -> dict[str, Any]:
    merged = [{**r, **m} for r, m in zip(rows, timings)]
    _derived(merged)
    prune = out / "prune" / "prune.json"
    result = {"config": cfg.to_dict(), "environment": environment(), "rows": merged,
              "prune": {k: v for k, v in json.loads(prune.read_text()).items() if k != "widths"}
              if prune.is_file() else None}
    atomic_write_text(out / "report.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "report.csv", _csv(merged))
    atomic_write_text(out / "report.md", markdown(result))
    pareto_plot(merged, out / "pareto.png", f"{Path(cfg.checkpoint).name}: top-1 against speed on {cfg.runtime}")
    return result
