"""The fastest CPU inference path for ResNet-18, against its targets, side by side in one run.

Part 1 (speed; ResNet-18, 3x224x224, random weights): every backend of `resnetlab bench` measured
in interleaved rounds, each in its own process, then the issue's targets checked on the medians:
  - Predictor(backend="auto") FP32 >= 0.97x the best of ONNX Runtime / OpenVINO FP32 at batch 32,
    and batch-1 latency <= 1.05x theirs;
  - int8: batch-1 latency <= 2.5 ms and batch 32 >= 450 img/s;
  - PyTorch only (no optional runtime): >= 2.5x eager FP32 NCHW at batch 32.
Part 2 (accuracy): a CIFAR-10 ResNet-18 trained with resnetlab (CIFAR stem, 32x32 inputs) quantized
with each int8 backend on 300 training images; top-1 on the whole test split before and after.

    python benchmarks/inference_cpu.py --checkpoint runs/bench/resnet18-fast --data ~/.cache/resnetlab/cifar10

Run time (2 cores): about 25 min (11 backends x 5 interleaved repeats of 3 s per batch size, each in
its own process, artefacts prepared and calibrated first; then two int8 quantizations checked on the
10,000 test images). The checkpoint is the one cifar10_time_to_accuracy.py trains (runs/bench/resnet18-fast).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, header_md, write  # noqa: E402

from resnetlab.deploy.bench import library_versions, run_bench  # noqa: E402

# auto next to its two peers: the rounds interleave, so neighbours see the same machine state
SPEED_BACKENDS = ["eager", "channels_last", "compile", "bf16", "compile-bf16", "onnxruntime", "auto", "openvino",
                  "openvino-bf16", "int8-onnxruntime", "int8-openvino"]


def speed(args) -> dict:
    res = run_bench(["resnet18"], SPEED_BACKENDS, batch_sizes=(1, 32), threads=args.threads, repeats=args.repeats,
                    seconds=args.seconds, out=args.runs / "speed", log=lambda s: print(s, file=sys.stderr, flush=True))
    rows = {r["backend"]: r for r in res["rows"] if r.get("status") == "ok"}
    tp = lambda b: rows[b]["bs32"]["img_per_s"] if b in rows else None  # noqa: E731
    lat = lambda b: rows[b]["bs1"]["p50_ms"] if b in rows else None  # noqa: E731
    checks = []
    peers = [b for b in ("onnxruntime", "openvino") if b in rows]
    if "auto" in rows and peers:
        best_tp, best_lat = max(tp(b) for b in peers), min(lat(b) for b in peers)
        checks.append(("Predictor auto FP32, batch 32 >= 0.97x best of ORT/OpenVINO FP32",
                       f"{tp('auto'):.1f} vs {best_tp:.1f} img/s = {tp('auto') / best_tp:.3f}x",
                       tp("auto") >= 0.97 * best_tp))
        checks.append(("Predictor auto FP32, batch-1 latency <= 1.05x theirs",
                       f"{lat('auto'):.2f} vs {best_lat:.2f} ms = {lat('auto') / best_lat:.3f}x",
                       lat("auto") <= 1.05 * best_lat))
    int8 = [b for b in ("int8-openvino", "int8-onnxruntime") if b in rows]
    if int8:
        fastest = min(int8, key=lat)
        checks.append((f"int8 ({fastest}) batch-1 latency <= 2.5 ms", f"{lat(fastest):.2f} ms", lat(fastest) <= 2.5))
        fastest = max(int8, key=tp)
        checks.append((f"int8 ({fastest}) batch 32 >= 450 img/s", f"{tp(fastest):.1f} img/s", tp(fastest) >= 450))
    torch_only = [b for b in ("channels_last", "compile", "bf16", "compile-bf16") if b in rows]
    if "eager" in rows and torch_only:
        best = max(torch_only, key=tp)
        checks.append((f"PyTorch only ({best}) batch 32 >= 2.5x eager FP32 NCHW",
                       f"{tp(best):.1f} vs {tp('eager'):.1f} img/s = {tp(best) / tp('eager'):.2f}x",
                       tp(best) >= 2.5 * tp("eager")))
    return {"bench": res, "checks": [{"target": t, "measured": m, "met": ok} for t, m, ok in checks]}


def accuracy(args) -> dict:
    from resnetlab.deploy import ModelMeta, quantize_model
    from resnetlab.deploy.quantize import calibration_images, test_batches
    from resnetlab.eval import load_trained

    trained = load_trained(args.checkpoint)
    meta = ModelMeta.from_trained(trained)
    calib = calibration_images(trained, args.data, 300)
    test_split = test_batches(trained, args.data, batch_size=500)
    out = {}

    for backend, ext in (("openvino", ".xml"), ("onnxruntime", ".onnx")):
        report = quantize_model(trained.model, meta, args.runs / f"int8-{backend}{ext}", backend, calib,
                                calib_source="300 CIFAR-10 training images", val_batches=test_split,
                                val_source="CIFAR-10 test split (10,000 images)")
        out[backend] = report.to_dict()
        print(f"{backend}: FP32 {report.fp32_top1:.4f} -> int8 {report.int8_top1:.4f}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="CIFAR-10 ResNet-18 run (for part 2)")
    p.add_argument("--data", default=None, help="CIFAR-10 (folder or archive); default: as resnetlab finds it")
    p.add_argument("--threads", type=int)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--runs", type=Path, default=Path("runs/inference_cpu"))
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args()
    env = environment(libraries=library_versions())
    if args.checkpoint:
        from resnetlab.data import resolve_data_root

        if not Path(args.checkpoint).exists():
            raise SystemExit(f"checkpoint {args.checkpoint} not found: train it with "
                             "benchmarks/cifar10_time_to_accuracy.py --run resnet18-fast=cifar10-resnet18-fast "
                             "(or drop --checkpoint for the speed part only)")
        args.data = str(resolve_data_root(args.data))
    result = {"env": env, "speed": None if args.skip_speed else speed(args),
              "accuracy": accuracy(args) if args.checkpoint else None}
    lines = ["# Fastest CPU inference for ResNet-18: targets, measured side by side", "", header_md(env)]
    if result["speed"]:
        lines.append(f"- repeats: {args.repeats} interleaved rounds of {args.seconds:g} s per batch size, each backend "
                     "in its own process; medians with [min–max] over the rounds")
    lines.append("")
    if result["speed"]:
        lines += ["## Speed (ResNet-18, 3x224x224, random weights)", "", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {c['target']} | {c['measured']} | {'yes' if c['met'] else '**no**'} |"
                  for c in result["speed"]["checks"]]
        from resnetlab.deploy.bench import markdown

        table = markdown(result["speed"]["bench"]).split("\n")
        start = next(i for i, ln in enumerate(table) if ln.startswith("| model"))
        end = next(i for i, ln in enumerate(table[start:], start) if not ln.startswith("|"))
        lines += ["", "All backends (medians over interleaved repeats, [min–max]):", "", *table[start:end], ""]
    if result["accuracy"]:
        lines += ["## int8 accuracy (CIFAR-10 ResNet-18 trained with resnetlab: CIFAR stem, 32x32 inputs)", "",
                  f"checkpoint `{args.checkpoint}`; calibration 300 training images; test split 10,000 images", "",
                  "| backend | FP32 top-1 | int8 top-1 | lost (points) | artefact MB | within 1 point |",
                  "|---|---|---|---|---|---|"]
        for b, d in result["accuracy"].items():
            lines.append(f"| {b} | {100 * d['fp32_top1']:.2f} % | {100 * d['int8_top1']:.2f} % | "
                         f"{d['top1_drop_points']:+.2f} | {d['size_bytes'] / 2**20:.1f} | "
                         f"{'yes' if d['top1_drop_points'] <= 1 else '**no**'} |")
    write("inference_cpu", result, "\n".join(lines) + "\n", args.out or Path(__file__).resolve().parent / "results")


if __name__ == "__main__":
    main()
