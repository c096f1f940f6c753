"""The fastest CPU inference path for ResNet-18, against its targets, side by side in one run.

Part 1 (speed; ResNet-18, 3x224x224, random weights): every backend of `resnetlab bench` and the
hand-built baselines (bare ONNX Runtime / OpenVINO sessions, NNCF's default int8) measured in interleaved
rounds, each in its own process, then issue 15's targets checked on the medians:
  - Predictor(backend="auto") FP32 >= 0.97x the fastest hand-built FP32 runtime at batch 32, and
    batch-1 latency <= 1.05x the quickest one's;
  - int8 (OpenVINO + NNCF) >= 1.0x a default NNCF artefact at batch 32;
  - precision="auto" >= 0.95x OpenVINO bf16 (hosts with avx512_bf16 / AMX; n/a elsewhere);
  - PyTorch only: compile-bf16 >= 0.7x OpenVINO bf16 (AMX hosts; n/a elsewhere), and >= 2.5x eager FP32.
Part 2 (accuracy): a CIFAR-10 ResNet-18 trained with resnetlab (CIFAR stem, 32x32 inputs) quantized
with each int8 backend and with NNCF's defaults on 300 training images; top-1 on the whole test split
before and after (rule: at most 1 point lost); and what precision="auto" chooses for it here.

    python benchmarks/inference_cpu.py --checkpoint runs/bench/resnet18-fast --data ~/.cache/resnetlab/cifar10

Run time (2 cores): about 25 min with --repeats 3 (15 backends x 3 interleaved repeats of 3 s per batch size,
each in its own process, artefacts prepared and calibrated first; then three int8 quantizations checked on
the 10,000 test images). The checkpoint: `resnetlab train --config cifar10-resnet18-fast --out
runs/bench/resnet18-fast` (or cifar10_time_to_accuracy.py, which trains the same recipe).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, header_md, write  # noqa: E402

from resnetlab.deploy.bench import library_versions, run_bench  # noqa: E402

# each resnetlab row next to its hand-built baseline: the rounds interleave, so neighbours see the same machine state
SPEED_BACKENDS = ["eager", "channels_last", "compile", "bf16", "compile-bf16", "bare-onnxruntime", "onnxruntime",
                  "auto", "auto-precision", "bare-openvino", "openvino", "openvino-bf16", "int8-onnxruntime",
                  "bare-int8-openvino", "int8-openvino"]


def speed(args) -> dict:
    res = run_bench(["resnet18"], SPEED_BACKENDS, batch_sizes=(1, 32), threads=args.threads, repeats=args.repeats,
                    seconds=args.seconds, out=args.runs / "speed", log=lambda s: print(s, file=sys.stderr, flush=True))
    rows = {r["backend"]: r for r in res["rows"] if r.get("status") == "ok"}
    return {"bench": res, "checks": [{"target": t, "measured": m, "met": ok} for t, m, ok in checks(rows, res["env"])]}


def checks(rows: dict, env: dict) -> list[tuple[str, str, bool | None]]:
    """The issue's targets on the medians; None: not applicable on this machine (said why)."""
    tp = lambda b: rows[b]["bs32"]["img_per_s"]  # noqa: E731
    lat = lambda b: rows[b]["bs1"]["p50_ms"]  # noqa: E731
    out = []
    bare = [b for b in ("bare-onnxruntime", "bare-openvino") if b in rows]
    if "auto" in rows and bare:
        fastest, quickest = max(bare, key=tp), min(bare, key=lat)
        chose = rows["auto"].get("chosen", {}).get("backend", "?")
        out.append((f"Predictor auto FP32 (chose {chose}), batch 32 >= 0.97x the fastest hand-built FP32 ({fastest})",
                    f"{tp('auto'):.1f} vs {tp(fastest):.1f} img/s = {tp('auto') / tp(fastest):.3f}x",
                    tp("auto") >= 0.97 * tp(fastest)))
        out.append((f"Predictor auto FP32, batch-1 latency <= 1.05x the quickest hand-built ({quickest})",
                    f"{lat('auto'):.2f} vs {lat(quickest):.2f} ms = {lat('auto') / lat(quickest):.3f}x",
                    lat("auto") <= 1.05 * lat(quickest)))
    if "int8-openvino" in rows and "bare-int8-openvino" in rows:
        out.append(("int8 (OpenVINO + NNCF) batch 32 >= 1.0x a default NNCF artefact",
                    f"{tp('int8-openvino'):.1f} vs {tp('bare-int8-openvino'):.1f} img/s = "
                    f"{tp('int8-openvino') / tp('bare-int8-openvino'):.3f}x",
                    tp("int8-openvino") >= tp("bare-int8-openvino")))
    feats = env.get("cpu_features") or {}
    native_bf16 = feats.get("avx512_bf16") or feats.get("amx_bf16")
    if "auto-precision" in rows and "openvino-bf16" in rows:
        ratio = tp("auto-precision") / tp("openvino-bf16")
        chose = rows["auto-precision"].get("chosen", {})
        out.append(("precision=auto >= 0.95x OpenVINO bf16 at batch 32 (hosts with avx512_bf16 or AMX)",
                    f"chose {chose.get('backend')} {chose.get('precision')}: {tp('auto-precision'):.1f} vs "
                    f"{tp('openvino-bf16'):.1f} img/s = {ratio:.3f}x"
                    + ("" if native_bf16 else "; not applicable: this CPU has no native bf16, so auto keeps fp32"),
                    ratio >= 0.95 if native_bf16 else None))
    if "compile-bf16" in rows and "openvino-bf16" in rows:
        ratio = tp("compile-bf16") / tp("openvino-bf16")
        out.append(("PyTorch only (compile-bf16) >= 0.7x OpenVINO bf16 at batch 32 (AMX hosts)",
                    f"{tp('compile-bf16'):.1f} vs {tp('openvino-bf16'):.1f} img/s = {ratio:.2f}x"
                    + ("" if feats.get("amx_bf16") else "; not applicable: no AMX here"),
                    ratio >= 0.7 if feats.get("amx_bf16") else None))
    torch_only = [b for b in ("channels_last", "compile", "bf16", "compile-bf16") if b in rows]
    if "eager" in rows and torch_only:
        best = max(torch_only, key=tp)
        out.append((f"PyTorch only ({best}) batch 32 >= 2.5x eager FP32 NCHW",
                    f"{tp(best):.1f} vs {tp('eager'):.1f} img/s = {tp(best) / tp('eager'):.2f}x",
                    tp(best) >= 2.5 * tp("eager")))
    return out


def accuracy(args) -> dict:
    from resnetlab.deploy import ModelMeta, Predictor, quantize_model
    from resnetlab.deploy.quantize import calibration_images, test_batches
    from resnetlab.eval import load_trained

    trained = load_trained(args.checkpoint)
    meta = ModelMeta.from_trained(trained)
    calib = calibration_images(trained, args.data, 300)
    test_split = test_batches(trained, args.data, batch_size=500)
    out = {}

    for backend, ext in (("openvino", ".xml"), ("onnxruntime", ".onnx")):
        report = quantize_model(trained.model, meta, args.runs / f"int8-{backend}{ext}", backend, calib,
                                calib_source="training images", val_batches=test_split, val_source="test split")
        out[backend] = report.to_dict()
        print(f"{backend}: FP32 {report.fp32_top1:.4f} -> int8 {report.int8_top1:.4f}", file=sys.stderr, flush=True)
    out["nncf-default"] = nncf_default(trained, meta, calib, test_split, args, out["openvino"])
    predictor = Predictor(args.checkpoint, "auto", precision="auto", check_data=args.data)
    return {"int8": out, "precision_auto": predictor.info}


def nncf_default(trained, meta, calib, test_split, args, ours: dict) -> dict:
    """NNCF's default int8 of the same model on the same calibration images, scored like ours."""
    from resnetlab.deploy.baselines import bare_runtime, nncf_default_int8
    from resnetlab.deploy.quantize import top1

    path = nncf_default_int8(trained.model, meta, args.runs / "nncf-default.xml", calib)
    acc, _ = top1(bare_runtime("bare-int8-openvino", path), test_split())
    size = sum(f.stat().st_size for f in (path, path.with_suffix(".bin")))
    return {"fp32_top1": ours["fp32_top1"], "int8_top1": acc, "size_bytes": size,
            "top1_drop_points": 100 * (ours["fp32_top1"] - acc)}


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
        lines += [f"| {c['target']} | {c['measured']} | {_met(c['met'])} |" for c in result["speed"]["checks"]]
        from resnetlab.deploy.bench import markdown

        table = markdown(result["speed"]["bench"]).split("\n")
        start = next(i for i, ln in enumerate(table) if ln.startswith("| model"))
        end = next(i for i, ln in enumerate(table[start:], start) if not ln.startswith("|"))
        lines += ["", "All backends (medians over interleaved repeats, [min–max]):", "", *table[start:end], ""]
    if result["accuracy"]:
        ov = result["accuracy"]["int8"]["openvino"]
        lines += ["## int8 accuracy (CIFAR-10 ResNet-18 trained with resnetlab: CIFAR stem, 32x32 inputs)", "",
                  f"checkpoint `{args.checkpoint}`; calibration {ov['calib_images']} training images; test split "
                  f"{ov['val_images']:,} images", "",
                  "| backend | FP32 top-1 | int8 top-1 | lost (points) | artefact MB | within 1 point |",
                  "|---|---|---|---|---|---|"]
        for b, d in result["accuracy"]["int8"].items():
            lines.append(f"| {b} | {100 * d['fp32_top1']:.2f} % | {100 * d['int8_top1']:.2f} % | "
                         f"{d['top1_drop_points']:+.2f} | {d['size_bytes'] / 2**20:.1f} | "
                         f"{'yes' if d['top1_drop_points'] <= 1 else '**no**'} |")
        pa = result["accuracy"]["precision_auto"]
        pc = pa["precision_choice"] or {}
        agreement = (f"; top-1 agreement with fp32 {100 * pc['agreement']:.2f} % on {pc['images']} test images"
                     if pc.get("agreement") is not None else "")
        lines += ["", "nncf-default: `nncf.quantize(ov.convert_model(model))` with NNCF's defaults, same calibration "
                  "images, run by the bare OpenVINO baseline.", "",
                  f"`Predictor(checkpoint, backend='auto', precision='auto', check_data=CIFAR-10)` chose "
                  f"**{pa['backend']} {pa['precision']}**: {pc.get('how', '?')}{agreement}.", ""]
    write("inference_cpu", result, "\n".join(lines) + "\n", args.out or Path(__file__).resolve().parent / "results")


def _met(met: bool | None) -> str:
    return "n/a" if met is None else "yes" if met else "**no**"


if __name__ == "__main__":
    main()
