"""``explain --evaluate``: every method's faithfulness on a data split against a random and a centre-bias
map, with bootstrap intervals, curves and a verdict computed from the numbers, plus the sanity checks."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..utils import Progress
from ..utils.fileio import atomic_write_text
from .api import explain, load_explainable
from .faithfulness import HIGHER_IS_BETTER, METRICS, baseline_maps, compare, score_maps
from .inputs import load_split_inputs
from .sanity import cascading_randomization, label_randomization

__all__ = ["evaluate_explanations", "beats_all", "markdown"]

BASELINES = ("random", "centre")


def evaluate_explanations(checkpoint: str | os.PathLike, *, data: str | os.PathLike | None = None,
                          split: str = "test", limit: int = 100, methods: Sequence[str] = ("gradcam", "gradcam++",
                                                                                          "layercam", "scorecam"),
                          layer: str = "auto", steps: int = 16, bootstrap: int = 1000, seed: int = 0,
                          sanity: bool = True, shuffled_checkpoint: str | os.PathLike | None = None,
                          out: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Any]:
    """Faithfulness of each method's maps of the predicted class on ``limit`` images of ``split``, with the
    random and centre-bias baselines scored the same way; see :mod:`resnetlab.explain.faithfulness`."""
    trained = load_explainable(checkpoint)
    model = trained.model.eval()
    x, _, skipped = load_split_inputs(trained, data, split, limit, progress=progress)
    size = tuple(x.shape[-2:])
    ex0 = explain(trained, x[:1], method="gradcam", layer=layer)
    with torch.no_grad():
        targets = model(x).argmax(1)
    scores, seconds = {}, {}
    with Progress(len(methods) + len(BASELINES), "faithfulness", unit="method", enabled=progress) as bar:
        for kind in BASELINES:
            base = baseline_maps(kind, len(x), size, seed=seed, grid=tuple(ex0.raw.shape[-2:]))
            scores[kind] = score_maps(model, x, base, targets, steps=steps, seed=seed)
            bar.update(1)
        for method in methods:
            t0 = time.perf_counter()
            ex = explain(trained, x, method=method, layer=ex0.layer, target=targets.tolist())
            seconds[method] = (time.perf_counter() - t0) / len(x)
            scores[method] = score_maps(model, x, ex.maps, targets, steps=steps, seed=seed)
            bar.update(1)
    table = compare({k: {m: v[m] for m in METRICS} for k, v in scores.items()}, BASELINES, n=bootstrap, seed=seed)
    result: dict[str, Any] = {
        "checkpoint": str(trained.path), "split": split, "images": len(x), "skipped": skipped, "layer": ex0.layer,
        "steps": steps, "bootstrap": bootstrap, "seed": seed, "seconds_per_image": seconds, "table": table,
        "verdict": _verdict(table, methods),
        "curves": {k: {c: v[c].mean(0).tolist() for c in ("deletion", "insertion", "morf_curve", "lerf_curve")}
                   for k, v in scores.items()}}
    if sanity:
        result["sanity"] = []
        with Progress(len(methods), "sanity (cascading randomisation)", unit="method", enabled=progress) as bar:
            for m in methods:
                result["sanity"].append(cascading_randomization(model, ex0.layer, x[:32], targets[:32], m, seed=seed))
                bar.update(1)
    if shuffled_checkpoint is not None:
        shuffled = load_explainable(shuffled_checkpoint).model
        result["label_randomization"] = [label_randomization(model, shuffled, ex0.layer, x[:32], targets[:32], m)
                                         for m in methods]
    if out is not None:
        _write(result, Path(out))
    return result


def _verdict(table: dict[str, Any], methods: Sequence[str]) -> dict[str, list[str]]:
    """Per method, the metrics on which it beats both baselines beyond their intervals."""
    return {m: [metric for metric in METRICS if beats_all(table[m][metric])] for m in methods}


def beats_all(cell: dict[str, Any]) -> bool:
    """True when a method's metric beats every baseline it was compared with (and there was one)."""
    return bool(cell["vs"]) and all(v["verdict"] == "beats" for v in cell["vs"].values())


def markdown(result: dict[str, Any]) -> str:
    """The table a person reads: mean [95 % CI] per method and metric, the verdict, the sanity checks."""
    arrows = {m: "↑" if HIGHER_IS_BETTER[m] else "↓" for m in METRICS}
    head = "| map | " + " | ".join(f"{m} {arrows[m]}" for m in METRICS) + " | s / image |"
    rows = [head, "|---|" + "---|" * (len(METRICS) + 1)]
    for name, row in result["table"].items():
        cells = []
        for metric in METRICS:
            c = row[metric]
            mark = "**" if name in result["verdict"] and metric in result["verdict"][name] else ""
            cells.append(f"{mark}{c['mean']:.3f}{mark} [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}]")
        sec = result["seconds_per_image"].get(name)
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {'-' if sec is None else f'{sec:.3f}'} |")
    lines = [f"Faithfulness of the maps of the predicted class: {result['images']} images of {result['split']}, "
             f"layer {result['layer']}, {result['steps']} deletion/insertion steps, ROAD at 10..90 %, "
             f"{result['bootstrap']} bootstrap resamples (seed {result['seed']}). Bold: beats both baselines "
             "(the 95 % interval of the paired difference lies on the better side of 0).", "", *rows, ""]
    for m, won in result["verdict"].items():
        lines.append(f"- {m}: beats random and centre-bias on {', '.join(won) if won else 'no metric'}")
    for s in result.get("sanity", []):
        at = next(st for st in s["steps"] if st["step"] == s["checked_at"])
        rho = lambda v: "undefined (flat maps)" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"- sanity, {s['method']}: rank correlation with the trained model's maps "
                     f"{rho(s['steps'][0]['mean_rho'])} after re-initialising the head, {rho(at['mean_rho'])} with "
                     f"everything down to {s['checked_at']} re-initialised"
                     f"{' -- **flagged: the maps survive randomisation**' if s['survives_randomisation'] else ''}")
    for s in result.get("label_randomization", []):
        lines.append(f"- label randomisation, {s['method']}: rank correlation {s['mean_rho']}")
    return "\n".join(lines) + "\n"


def _write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "faithfulness.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(out / "faithfulness.md", markdown(result))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["map", "metric", "mean", "ci_low", "ci_high", "vs_random", "vs_centre"])
    for name, row in result["table"].items():
        for metric in METRICS:
            c = row[metric]
            w.writerow([name, metric, c["mean"], *c["ci"], c["vs"].get("random", {}).get("verdict", ""),
                        c["vs"].get("centre", {}).get("verdict", "")])
    atomic_write_text(out / "faithfulness.csv", buf.getvalue())
    _plot_curves(result, out / "faithfulness_curves.png")


def _plot_curves(result: dict[str, Any], path: Path) -> None:
    from ..utils.plot import plt, save_figure

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (("deletion", "deletion: most salient pixels removed first", "fraction of pixels removed"),
              ("insertion", "insertion: most salient pixels put back first", "fraction of pixels inserted"),
              ("morf_curve", "ROAD, most relevant first (imputed)", "fraction of pixels removed"))
    for ax, (key, title, xlabel) in zip(axes, panels):
        for name, curves in result["curves"].items():
            ys = curves[key]
            xs = [i / (len(ys) - 1) for i in range(len(ys))] if key != "morf_curve" else \
                [0.1 * (i + 1) for i in range(len(ys))]
            style = dict(ls="--", color="gray" if name == "random" else "black", lw=1) if name in BASELINES else {}
            ax.plot(xs, ys, label=name, **style)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("probability of the predicted class")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
