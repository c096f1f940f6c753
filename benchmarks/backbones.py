"""ResNet-18 as a backbone, measured: CPU speed of Faster R-CNN (FPN) and DeepLabV3 at 512 px on a ResNet-18
against a ResNet-50 trunk, and DeepLabV3-ResNet-18's output-stride trade-off (8 / 16 / 32: speed here, mIoU
from ``results/nuclei.json``, the nuclei tiles' test split).

Method: random weights (speed does not depend on them), eval mode, ``torch.inference_mode``, batch 1, a 512 x 512
input (the detectors' own resizing set to 512 so they run at that size), the CPU's cores as torch threads.
Each model is warmed up once; then every repeat times each model in turn (round-robin, so drift on this shared
machine hits all models alike) for at least ``--seconds`` and 2 images. Reported: median img/s over repeats, with
min and max.

    python benchmarks/backbones.py --repeats 3 --seconds 6
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, fmt_spread, header_md, spread, write  # noqa: E402

SIZE = 512
MODELS = {
    "Faster R-CNN R18-FPN": ("fasterrcnn_resnet18_fpn", {"min_size": SIZE, "max_size": SIZE}),
    "Faster R-CNN R50-FPN": ("fasterrcnn_resnet50_fpn", {"min_size": SIZE, "max_size": SIZE}),
    "DeepLabV3 R18 OS 8": ("deeplabv3_resnet18", {"output_stride": 8}),
    "DeepLabV3 R50 OS 8": ("deeplabv3_resnet50", {"output_stride": 8}),
    "DeepLabV3 R18 OS 16": ("deeplabv3_resnet18", {"output_stride": 16}),
    "DeepLabV3 R50 OS 16": ("deeplabv3_resnet50", {"output_stride": 16}),
    "DeepLabV3 R18 OS 32": ("deeplabv3_resnet18", {"output_stride": 32}),
}
PAIRS = [("Faster R-CNN R18-FPN", "Faster R-CNN R50-FPN"), ("DeepLabV3 R18 OS 8", "DeepLabV3 R50 OS 8"),
         ("DeepLabV3 R18 OS 16", "DeepLabV3 R50 OS 16")]


def build(name: str, kwargs: dict) -> tuple[torch.nn.Module, callable]:
    from resnetlab.models.dense import create_dense, dense_kind

    torch.manual_seed(0)
    model = create_dense(name, 91 if dense_kind(name) == "detection" else 21, **kwargs).eval()
    if dense_kind(name) == "detection":
        images = [torch.rand(3, SIZE, SIZE)]
        return model, lambda: model(images)
    x = torch.randn(1, 3, SIZE, SIZE)
    return model, lambda: model(x)


def timed(run, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        run()
        n += 1
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--nuclei", default=str(Path(__file__).resolve().parent / "results" / "nuclei.json"))
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    env, t0 = environment(), time.perf_counter()
    built = {label: build(*spec) for label, spec in MODELS.items()}
    params = {label: sum(p.numel() for p in m.parameters()) for label, (m, _) in built.items()}
    speeds: dict[str, list[float]] = {label: [] for label in MODELS}
    with torch.inference_mode():
        for _, run in built.values():
            run()  # warm-up
        for r in range(args.repeats):
            for label, (_, run) in built.items():
                speeds[label].append(timed(run, args.seconds))
                print(f"repeat {r + 1}/{args.repeats}: {label} {speeds[label][-1]:.2f} img/s", file=sys.stderr)
    rows = {label: {"model": MODELS[label][0], "kwargs": MODELS[label][1], "params": params[label],
                    "img_per_s": spread(v)} for label, v in speeds.items()}
    ratios = {f"{a} / {b}": rows[a]["img_per_s"]["median"] / rows[b]["img_per_s"]["median"] for a, b in PAIRS}
    nuclei = json.loads(Path(args.nuclei).read_text()) if Path(args.nuclei).is_file() else None
    payload = {"env": env, "size": SIZE, "repeats": args.repeats, "seconds": args.seconds, "rows": rows,
               "speedup_r18_over_r50": ratios, "nuclei_source": args.nuclei if nuclei else None,
               "wall_s": time.perf_counter() - t0}
    write("backbones", payload, markdown(env, payload, nuclei), Path(args.out))
    return 0


def markdown(env: dict, payload: dict, nuclei: dict | None) -> str:
    rows = payload["rows"]
    lines = ["# ResNet-18 as a backbone: detection and segmentation speed on this CPU, and the output-stride "
             "trade-off", "", header_md(env), "",
             f"Batch 1, {payload['size']} x {payload['size']} input, random weights, eval mode; img/s as median "
             f"[min, max] over {payload['repeats']} round-robin repeats of at least {payload['seconds']:g} s each.",
             "", "| model | params | img/s |", "|---|---|---|"]
    for label, r in rows.items():
        lines.append(f"| {label} | {r['params'] / 1e6:.1f} M | {fmt_spread(r['img_per_s'], digits=2)} |")
    lines += ["", "ResNet-18 trunk against ResNet-50 trunk, same head (ratio of median img/s):", ""]
    lines += [f"- {k}: **{v:.2f}x**" for k, v in payload["speedup_r18_over_r50"].items()]
    lines += ["", "## DeepLabV3-ResNet-18: output stride against speed and mIoU", ""]
    if nuclei is None:
        lines.append("(no results/nuclei.json: run benchmarks/nuclei.py for the mIoU column)")
    else:
        code = nuclei["env"].get("git", "?")
        lines += [f"mIoU: best.pt of each output stride on the 4 test tiles of the nuclei benchmark "
                  f"(results/nuclei.md, commit {code}, one run each).", "",
                  "| output stride | img/s at 512 px | test mIoU (nuclei) | test pixel acc. |", "|---|---|---|---|"]
        for s in (8, 16, 32):
            summ = nuclei["runs"][f"deeplabv3_resnet18_os{s}"]["summary"]
            lines.append(f"| {s} | {fmt_spread(rows[f'DeepLabV3 R18 OS {s}']['img_per_s'], digits=2)} | "
                         f"{summ['test_miou']:.3f} | {summ['test_pixel_acc']:.3f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
