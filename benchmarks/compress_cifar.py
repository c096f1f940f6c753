"""CIFAR-10 ResNet-18 (CIFAR stem, 32 px) compressed at three pruning ratios: top-1 against measured OpenVINO
throughput, every artefact timed side by side in one run.

The model is the `cifar10-resnet18-fast` recipe's (runs/bench/resnet18-fast, made by the
cifar10_time_to_accuracy job). For each channel ratio r in 0.3 / 0.5 / 0.7, `resnetlab compress` prunes it
(L2 importance, uniform per layer, channels rounded to 8, stem and fc kept), fine-tunes it F epochs (cosine
from lr 0.01, selection on validation) and quantizes it to int8 after training (NNCF, 300 training images);
at r = 0.5 it also runs QAT (Q epochs, lr 1e-3). Then every artefact — the original in FP32 and int8 included —
is timed with `measure_rows`: one fresh process per artefact per round, rounds interleaved.

Rules, fixed before the first run:
- R1 (the issue's target): some ratio's pruned + fine-tuned + int8 model reaches >= 2x the batch-32 throughput
  of the unpruned model's OpenVINO int8, at no more than 1 point of test top-1 below the unpruned FP32 model.
- R2: at r = 0.5, QAT's int8 top-1 is at least post-training int8's top-1 of the same fine-tuned model.

    python benchmarks/compress_cifar.py --data ../shared/data/cifar10-jpeg.tar.gz
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, header_md, write  # noqa: E402

from resnetlab.compress import CompressConfig, PruneConfig, compress_steps  # noqa: E402
from resnetlab.compress.measure import measure_rows  # noqa: E402
from resnetlab.compress.report import pareto_plot  # noqa: E402

SPEEDUP, MAX_DROP = 2.0, 1.0  # R1: x the unpruned int8's batch-32 throughput; points below the unpruned FP32


def run_ratios(args) -> list[dict]:
    """compress_steps for every ratio (resumable: each keeps its folder), the original's rows once."""
    rows: list[dict] = []
    for i, r in enumerate(args.ratios):
        cfg = CompressConfig(checkpoint=args.checkpoint, out=str(Path(args.work) / f"ratio-{r}"), data=args.data,
                             prune=PruneConfig(ratio=r, importance="l2", round_to=8, keep=("stem", "fc")),
                             finetune_epochs=args.finetune_epochs, lr=0.01, runtime="openvino", int8=True,
                             qat_epochs=args.qat_epochs if r == args.qat_ratio else 0, calib_images=300)
        for row in compress_steps(cfg):
            if row["step"] == "original" and i:
                continue
            rows.append({**row, "ratio": None if row["step"] == "original" else r,
                         "group": "original" if row["step"] == "original" else f"r={r}",
                         "step": row["step"] if row["step"] == "original" else f"r={r} {row['step']}"})
    return rows


def verdicts(rows: list[dict], args) -> dict:
    base = next(r for r in rows if r["step"] == "original" and r["precision"] == "fp32")
    base8 = next(r for r in rows if r["step"] == "original" and r["precision"] == "int8")
    per_ratio = {}
    for ratio in args.ratios:
        row = next(r for r in rows if r["ratio"] == ratio and r["step"].endswith("fine-tuned")
                   and r["precision"] == "int8")
        speed = row["b32_img_s"] / base8["b32_img_s"]
        drop = 100 * (base["test_top1"] - row["test_top1"])
        per_ratio[str(ratio)] = {"speedup_vs_int8": speed, "drop_points": drop,
                                 "pass": speed >= SPEEDUP and drop <= MAX_DROP}
    out = {"R1": {"rule": f"some ratio: pruned + fine-tuned + int8 >= {SPEEDUP}x the unpruned int8's batch-32 "
                          f"throughput at <= {MAX_DROP} point below the unpruned FP32 top-1",
                  "per_ratio": per_ratio, "pass": any(v["pass"] for v in per_ratio.values())}}
    qat = next((r for r in rows if r["step"].endswith("QAT")), None)
    if qat:
        ptq = next(r for r in rows if r["ratio"] == qat["ratio"] and r["step"].endswith("fine-tuned")
                   and r["precision"] == "int8")
        gain = 100 * (qat["test_top1"] - ptq["test_top1"])
        out["R2"] = {"rule": f"at r={qat['ratio']}, QAT int8 top-1 >= post-training int8 top-1", "gain_points": gain,
                     "pass": gain >= 0}
    return out


def markdown(env: dict, rows: list[dict], v: dict, args) -> str:
    base = next(r for r in rows if r["step"] == "original" and r["precision"] == "fp32")
    base8 = next(r for r in rows if r["step"] == "original" and r["precision"] == "int8")
    table = ["| step | precision | params | MMACs | MB | test top-1 | Δ pts | batch-1 ms | batch-32 img/s | x FP32 "
             "| x int8 |", "|" + "---|" * 11]
    for r in rows:
        table.append(
            f"| {r['step']} | {r['precision']} | {r['params'] / 1e6:.2f} M | {r['macs'] / 1e6:.0f} | {r['mb']:.1f} | "
            f"{100 * r['test_top1']:.2f} % | {100 * (base['test_top1'] - r['test_top1']):+.2f} | "
            f"{r['b1_ms']:.2f} [{r['b1_ms_min']:.2f}, {r['b1_ms_max']:.2f}] | {r['b32_img_s']:.0f} "
            f"[{r['b32_img_s_min']:.0f}, {r['b32_img_s_max']:.0f}] | {r['b32_img_s'] / base['b32_img_s']:.2f} | "
            f"{r['b32_img_s'] / base8['b32_img_s']:.2f} |")
    r1 = v["R1"]
    lines = ["# Compressing CIFAR-10 ResNet-18: pruning ratio against top-1 and OpenVINO speed", "",
             header_md(env), "",
             f"Model: `{args.checkpoint}` ({args.base_epochs} epochs; the cifar10-resnet18-fast recipe: CIFAR stem, "
             "32 px). Per ratio: L2 "
             f"channel pruning (uniform, round to 8, stem and fc kept), {args.finetune_epochs} fine-tuning epochs "
             f"(cosine from lr 0.01; best.pt on validation), NNCF post-training int8 on 300 training images; QAT "
             f"{args.qat_epochs} epoch(s) at r={args.qat_ratio}. Top-1 on the 10,000 test images through the "
             f"artefact itself. Timing: OpenVINO on this CPU, default threads; median of {args.repeats} rounds "
             f"[min, max], {args.seconds} s per batch size per round, one fresh process per artefact per round, "
             "rounds interleaved over all rows. Δ pts: the unpruned FP32 top-1 minus the row's.", "", *table, "",
             "![top-1 against batch-32 throughput](compress.png)", "", "## Verdicts (rules fixed before the run)",
             "", f"- **R1** ({r1['rule']}): **{'pass' if r1['pass'] else 'fail'}**"]
    for ratio, x in r1["per_ratio"].items():
        lines.append(f"  - r={ratio}: {x['speedup_vs_int8']:.2f}x the unpruned int8, {x['drop_points']:+.2f} "
                     f"points — {'meets' if x['pass'] else 'misses'} the target")
    if "R2" in v:
        lines.append(f"- **R2** ({v['R2']['rule']}): QAT {v['R2']['gain_points']:+.2f} points against PTQ — "
                     f"**{'pass' if v['R2']['pass'] else 'fail'}**")
    lines += ["", f"Caveat: the pruned models get their {args.finetune_epochs} fine-tuning epochs on top of the "
              f"original's {args.base_epochs}; the original is the recipe's model, not one trained longer. The "
              "ResNet-56 comparison at an equal epoch budget is in [compress_resnet56.md](compress_resnet56.md).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="CIFAR-10 (folder or archive; default as for train)")
    p.add_argument("--checkpoint", default="runs/bench/resnet18-fast")
    p.add_argument("--ratios", default="0.3,0.5,0.7")
    p.add_argument("--finetune-epochs", type=int, default=4)
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--qat-ratio", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--work", default="runs/bench/compress", help="the compress runs (resumable)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    args.ratios = [float(r) for r in args.ratios.split(",")]
    if not Path(args.checkpoint).exists():
        p.error(f"{args.checkpoint} does not exist: train it first (python benchmarks/run_all.py --only "
                "cifar10_time_to_accuracy, or resnetlab train --config cifar10-resnet18-fast)")
    env, t0 = environment(), time.perf_counter()
    summary = json.loads((Path(args.checkpoint) / "summary.json").read_text()) \
        if (Path(args.checkpoint) / "summary.json").is_file() else None
    args.base_epochs = summary["epochs"] if summary else "?"
    rows = run_ratios(args)
    print(f"timing {len(rows)} artefacts, {args.repeats} interleaved rounds", file=sys.stderr)
    timings = measure_rows([r["path"] for r in rows], threads=None, seconds=args.seconds, repeats=args.repeats,
                           progress=lambda m: print(m, file=sys.stderr))
    rows = [{**r, **t} for r, t in zip(rows, timings)]
    v = verdicts(rows, args)
    results = Path(args.out) if args.out else Path(__file__).resolve().parent / "results"
    results.mkdir(parents=True, exist_ok=True)
    pareto_plot(rows, results / "compress.png", "CIFAR-10 ResNet-18: test top-1 against OpenVINO batch-32 speed")
    payload = {"env": env, "config": {k: v for k, v in vars(args).items()}, "base_summary": summary, "rows": rows,
               "verdicts": v, "wall_s": time.perf_counter() - t0}
    write("compress", payload, markdown(env, rows, v, args), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
