"""Training throughput of ResNet-18 (CIFAR stem) on the CIFAR-10 JPEG data, end to end.

resnetlab's engine against two plain PyTorch loops of the torchvision-references kind
(ImageFolder + per-image PIL transforms in a DataLoader): FP32 NCHW, and bf16 autocast +
channels_last. Same model, batch, optimizer, learning rate and number of steps; each
contender runs in its own process, contenders interleaved per repeat; the accuracy on the full
test split after those steps is reported beside the speed.

    python benchmarks/train_throughput.py --data ~/.cache/resnetlab/cifar10 --steps 150 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, header_md, spread, write  # noqa: E402

CONTENDERS = ("loop_fp32", "loop_bf16_cl", "resnetlab")
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _model():
    import resnetlab

    torch.manual_seed(0)
    return resnetlab.create_model("resnet18", num_classes=10, stem="cifar")


def plain_loop(data: Path, steps: int, batch: int, lr: float, bf16: bool, workers: int) -> dict:
    """What a competent user writes from the torchvision references."""
    from torchvision import datasets, transforms

    train_tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    test_tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    train = datasets.ImageFolder(data / "train", train_tf)
    test = datasets.ImageFolder(data / "test", test_tf)
    g = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(train, batch, shuffle=True, num_workers=workers, drop_last=True,
                                         generator=g, persistent_workers=workers > 0)
    model = _model()
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    done, wait, t0 = 0, 0.0, None
    while done < steps:
        t_wait = time.perf_counter()
        for x, y in loader:
            if t0 is None:
                t0 = time.perf_counter()  # start the clock at the first batch (workers spun up)
            else:
                wait += time.perf_counter() - t_wait
            x = x.contiguous(memory_format=fmt)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
            t_wait = time.perf_counter()
    elapsed = time.perf_counter() - t0
    top1 = _accuracy(model, torch.utils.data.DataLoader(test, 500, num_workers=workers), fmt, bf16)
    return {"img_per_s": (steps - 1) * batch / elapsed, "data_wait_frac": wait / elapsed, "top1": top1,
            "steps": steps}


@torch.no_grad()
def _accuracy(model, loader, fmt, bf16) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            correct += int((model(x.contiguous(memory_format=fmt)).argmax(1) == y).sum())
        total += len(y)
    return correct / total


def engine(data: Path, steps: int, batch: int, lr: float) -> dict:
    from resnetlab.train.config import TrainConfig
    from resnetlab.train.engine import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(model="resnet18", model_kwargs={"stem": "cifar"}, data=str(data), epochs=1,
                          limit_train_batches=steps, batch_size=batch, eval_batch_size=500, lr=lr, momentum=0.9,
                          nesterov=True, weight_decay=5e-4, no_wd_norm_bias=False, schedule="constant",
                          amp="bf16", channels_last=True, eval_split="test", out=tmp, log_every_s=30)
        summary = train(cfg)
        rows = [json.loads(r) for r in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    return {"img_per_s": rows[-1]["img_per_s"], "top1": summary["final_top1"], "steps": summary["steps"]}


def worker(args) -> None:
    if args.worker == "resnetlab":
        out = engine(args.data, args.steps, args.batch_size, args.lr)
    else:
        out = plain_loop(args.data, args.steps, args.batch_size, args.lr, args.worker == "loop_bf16_cl",
                         args.workers)
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("~/.cache/resnetlab/cifar10").expanduser())
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain loops")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--only", default=",".join(CONTENDERS))
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    from resnetlab.data import resolve_data_root

    args.data = resolve_data_root(str(args.data))
    names = args.only.split(",")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(args.repeats):
        for name in names:  # interleaved: every repeat runs each contender once
            cmd = [sys.executable, __file__, "--worker", name, "--data", str(args.data), "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--workers", str(args.workers)]
            print(f"[repeat {r + 1}/{args.repeats}] {name} ...", file=sys.stderr, flush=True)
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
            runs[name].append(json.loads(line[7:]))
            print(f"  {runs[name][-1]}", file=sys.stderr, flush=True)
    report(args, runs)


def report(args, runs: dict[str, list[dict]]) -> None:
    env = environment()
    stats = {n: {"img_per_s": spread([r["img_per_s"] for r in rs]), "top1": spread([r["top1"] for r in rs]),
                 "data_wait_frac": spread([r.get("data_wait_frac", 0.0) for r in rs])} for n, rs in runs.items()}
    base = stats.get("loop_bf16_cl", {}).get("img_per_s", {}).get("median")
    fp32 = stats.get("loop_fp32", {}).get("img_per_s", {}).get("median")
    labels = {"loop_fp32": "plain loop, FP32 NCHW", "loop_bf16_cl": "plain loop, bf16 autocast + channels_last",
              "resnetlab": "resnetlab engine (bf16 + channels_last, cached uint8 data, batched augmentation)"}
    rows = ["| contender | img/s (median [min, max]) | vs bf16 loop | vs FP32 loop | data wait | top-1 after "
            f"{args.steps} steps |", "|---|---|---|---|---|---|"]
    for n, s in stats.items():
        v = s["img_per_s"]
        rows.append(f"| {labels[n]} | {v['median']:.1f} [{v['min']:.1f}, {v['max']:.1f}] | "
                    f"{v['median'] / base:.2f}x | {v['median'] / fp32:.2f}x | "
                    f"{100 * s['data_wait_frac']['median']:.1f} % | {100 * s['top1']['median']:.2f} % |"
                    if base and fp32 else f"| {labels[n]} | {v['median']:.1f} | | | | "
                    f"{100 * s['top1']['median']:.2f} % |")
    cmd = " ".join(["python benchmarks/train_throughput.py", "--steps", str(args.steps), "--repeats",
                    str(args.repeats), "--batch-size", str(args.batch_size), "--workers", str(args.workers)])
    md = (f"# Training throughput: ResNet-18 (CIFAR stem) on CIFAR-10 JPEGs\n\n{header_md(env, cmd)}\n"
          f"- setup: batch {args.batch_size}, SGD lr {args.lr} (constant), momentum 0.9 Nesterov, wd 5e-4, "
          f"{args.steps} steps, pad-4 crop + flip; plain loops: torchvision ImageFolder + PIL transforms, "
          f"{args.workers} DataLoader workers; throughput measured from the first batch to the last step "
          f"(evaluation excluded); {args.repeats} repeat(s), contenders interleaved, each in its own process\n\n"
          + "\n".join(rows) + "\n")
    write("train_throughput", {"env": env, "args": {k: str(v) for k, v in vars(args).items()}, "stats": stats,
                               "runs": runs}, md, args.out or Path(__file__).resolve().parent / "results")


if __name__ == "__main__":
    main()
