"""How faithful, and how fast, are the class-activation maps of `resnetlab explain`?

1. Faithfulness on the CIFAR-10 ResNet-18 trained with the fast recipe (32 px; the checkpoint
   `runs/bench/resnet18-fast` that `run_all.py` makes): deletion and insertion AUC (Petsiuk et al. 2018),
   ROAD (Rong et al. 2022) and Average Drop / Increase in Confidence (Chattopadhyay et al. 2018) for
   each method and for a random and a centre-bias map, on the same fixed
   seeded subset of the test split, with bootstrap 95 % intervals of the paired differences.
2. Sanity checks (Adebayo et al. 2018): cascading model-parameter randomisation for each method.
3. Time per image at batch 1 and 32, per method: the trained 32 px model and a 224 px ResNet-18 with
   random weights (the time does not depend on the weights).
4. A gallery excerpt: panels of a few test images, every method side by side.

Verdict rule, fixed before the first run: a method "beats the baselines" on a metric when the 95 %
interval of its paired difference with each baseline lies on the better side of 0 (``compare``); the
sanity flag is :data:`resnetlab.explain.sanity.SURVIVES`. For orientation only (other data, other
protocol): torch-cam reports Average Drop on Imagenette for ResNet-18 of 0.269 (Grad-CAM), 0.527
(Grad-CAM++), 0.171 (LayerCAM), and Score-CAM about 170x Grad-CAM's CPU time.

    python benchmarks/explain_bench.py --checkpoint runs/bench/resnet18-fast --limit 100
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, header_md, spread, write  # noqa: E402

from resnetlab.explain import METHODS, explain, load_explainable, load_split_inputs  # noqa: E402
from resnetlab.explain.render import display_image, overlay  # noqa: E402
from resnetlab.explain.report import evaluate_explanations, markdown as faith_markdown  # noqa: E402
from resnetlab.models import create_model  # noqa: E402
from resnetlab.utils.plot import plt, save_figure  # noqa: E402

FAITH_METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "scorecam", "eigencam", "ablationcam")
TORCH_CAM_AVERAGE_DROP = {"gradcam": 0.269, "gradcam++": 0.527, "layercam": 0.171}  # its README, ResNet-18


def time_method(model_or_ck, x: torch.Tensor, method: str, layer: str, repeats: int) -> dict:
    """Seconds per image for one call on ``x`` (after one warm-up call), ``repeats`` times."""
    explain(model_or_ck, x, method=method, layer=layer, batch_size=len(x))
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        explain(model_or_ck, x, method=method, layer=layer, batch_size=len(x))
        runs.append((time.perf_counter() - t0) / len(x))
    return spread(runs)


def timings(ck: str, x32: torch.Tensor, layer32: str, args) -> dict:
    out: dict = {"32px trained resnet18": {}, "224px resnet18 (random weights)": {}}
    trained = load_explainable(ck)  # loaded once: the timings are of the maps, not of reading the checkpoint
    big = create_model("resnet18", num_classes=10).eval()
    x224 = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for method in METHODS:
        for batch in (1, 32):
            heavy = method in ("scorecam", "ablationcam")  # 512 forward passes per image: timed once
            out["32px trained resnet18"][f"{method} b{batch}"] = time_method(trained, x32[:batch], method, layer32,
                                                                             1 if heavy else args.repeats)
            n = min(batch, args.heavy_batch) if heavy else batch
            out["224px resnet18 (random weights)"][f"{method} b{batch}"] = {
                **time_method(big, x224[:n], method, "layer4", 1 if heavy else args.repeats),
                "images_timed": n}
    return out


def gallery(ck: str, x: torch.Tensor, layer: str, path: Path) -> None:
    trained = load_explainable(ck)
    pre = trained.preprocess
    exs = {m: explain(trained, x, method=m, layer=layer) for m in FAITH_METHODS}
    n = len(x)
    fig, axes = plt.subplots(n, len(FAITH_METHODS) + 1, figsize=(1.6 * (len(FAITH_METHODS) + 1), 1.75 * n))
    first = exs["gradcam"]
    for i in range(n):
        img = display_image(x[i], pre.mean, pre.std)
        pred = int(first.probs[i].argmax())
        axes[i, 0].imshow(img, interpolation="nearest")
        axes[i, 0].set_title(f"{first.classes[pred]} {100 * float(first.probs[i, pred]):.0f}%", fontsize=7)
        for j, m in enumerate(FAITH_METHODS, 1):
            axes[i, j].imshow(overlay(img, exs[m].maps[i].numpy()), interpolation="nearest")
            if i == 0:
                axes[i, j].set_title(m, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"CIFAR-10 ResNet-18 (fast recipe), maps of the predicted class at {layer}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def markdown(env: dict, faith: dict, times: dict, args) -> str:
    rows = ["| model | method | s / image, batch 1 | s / image, batch 32 |", "|---|---|---|---|"]
    for model, by in times.items():
        for method in METHODS:
            b1, b32 = by[f"{method} b1"], by[f"{method} b32"]
            note = f" ({b32['images_timed']} images)" if b32.get("images_timed", 32) != 32 else ""
            rows.append(f"| {model} | {method} | {b1['median']:.4f} | {b32['median']:.4f}{note} |")
    ratios = {model: by["scorecam b1"]["median"] / by["gradcam b1"]["median"] for model, by in times.items()}
    drop = ["| method | Average Drop ↓, ours (CIFAR-10, 32 px) | torch-cam (Imagenette, 224 px) |", "|---|---|---|"]
    for method in TORCH_CAM_AVERAGE_DROP:
        c = faith["table"][method]["average_drop"]
        drop.append(f"| {method} | {c['mean']:.3f} [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}] | "
                    f"{TORCH_CAM_AVERAGE_DROP[method]:.3f} |")
    return "\n".join([
        "# Explanations: faithfulness, sanity and speed", "", header_md(env), "",
        f"Model: `{args.checkpoint}` (CIFAR-10, 32 px). Images: a fixed seeded subset of {faith['images']} test "
        "images. Rules fixed before the run: see benchmarks/explain_bench.py.", "",
        "## Faithfulness", "", faith_markdown(faith), "![curves](explain/faithfulness_curves.png)", "",
        f"Grad-CAM and XGrad-CAM, 32 images: largest difference between their maps "
        f"{faith['gradcam_vs_xgradcam_max_abs']:.2g}"
        + (" -- the same maps: the explained layer feeds global average pooling and the linear head, so the "
           "gradient is the same at every position and both weigh each channel by it (as CAM does)."
           if faith["gradcam_vs_xgradcam_max_abs"] < 1e-4 else "."), "",
        "Average Drop beside the numbers torch-cam publishes for ResNet-18 (orientation only: other data, other "
        "resolution, other weights; the same definition, Chattopadhyay et al. 2018):", "", *drop, "",
        "## Time", "", f"Medians of {args.repeats} repeats after a warm-up; Score-CAM and Ablation-CAM (one forward "
        f"pass per channel of the layer per image) once, and at 224 px on {args.heavy_batch} image(s). Score-CAM / "
        "Grad-CAM, batch 1: " + ", ".join(f"{r:.0f}x ({m})" for m, r in ratios.items())
        + " (torch-cam: about 170x on CPU).", "", *rows, "",
        "## Gallery", "", "![every method on the same test images](explain/gallery.png)", ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/bench/resnet18-fast")
    p.add_argument("--data", default=None, help="CIFAR-10 (default: the run's own data)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--heavy-batch", type=int, default=2, help="images timed for Score-/Ablation-CAM at 224 px")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    env = environment()
    results = Path(args.out) if args.out else Path(__file__).resolve().parent / "results"
    sub = results / "explain"
    sub.mkdir(parents=True, exist_ok=True)
    faith = evaluate_explanations(args.checkpoint, data=args.data, limit=args.limit, methods=FAITH_METHODS,
                                  bootstrap=args.bootstrap, out=sub)
    x, y, _ = load_split_inputs(load_explainable(args.checkpoint), args.data, "test", 200)
    trained = load_explainable(args.checkpoint)
    maps = {m: explain(trained, x[:32], method=m, layer=faith["layer"]).maps for m in ("gradcam", "xgradcam")}
    faith["gradcam_vs_xgradcam_max_abs"] = float((maps["gradcam"] - maps["xgradcam"]).abs().max())
    times = timings(args.checkpoint, x[:32], faith["layer"], args)
    firsts = [int((y == c).nonzero()[0]) for c in torch.unique(y)[:6]]  # one image of each of 6 classes
    gallery(args.checkpoint, x[firsts], faith["layer"], sub / "gallery.png")
    payload = {"env": env, "faithfulness": {k: v for k, v in faith.items() if k != "curves"}, "times": times,
               "config": vars(args)}
    write("explain", payload, markdown(env, faith, times, args), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
