"""One prepared GPU check (run on a CUDA machine): every model and the engine's CUDA paths, then numbers.

1. the model zoo: forward + backward of every registered model (bf16 autocast, channels_last);
2. training: the fast CIFAR-10 recipe with ``amp="auto"`` (bf16 on CUDA), selected on a validation
   split carved from train, tested once on the test split; an fp16 + GradScaler smoke run;
   DDP with the nccl backend through torchrun (one process per GPU: a one-GPU machine runs world size 1);
3. inference: resnetlab.evaluate() on CUDA, and eager throughput FP32 vs bf16 channels_last at batch 256,
   each the median of 5 timed repeats after warm-up (CUDA-synchronised).

    PYTHONPATH=src python benchmarks/gpu_check.py --data PATH --out DIR [--epochs 12] [--commit SHA --dirty 0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, header_md, write  # noqa: E402

CACHE = "/tmp/resnetlab-cache"


def zoo(device) -> dict:
    """Forward + backward of every registered model on CUDA, bf16 autocast, channels_last."""
    import resnetlab

    out = {}
    for name in resnetlab.list_models():
        t = time.perf_counter()
        try:
            m = resnetlab.create_model(name, num_classes=10).to(device).to(memory_format=torch.channels_last)
            s = max(m.min_input_size, 64)
            x = torch.randn(4, 3, s, s, device=device).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = m(x)
            y.float().square().mean().backward()
            ok = all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
            out[name] = {"ok": bool(ok and y.shape == (4, 10)), "s": round(time.perf_counter() - t, 2)}
        except Exception as e:  # report, keep going
            out[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return out


def train_run(overrides: dict, data: str, out: Path) -> dict:
    import resnetlab
    from resnetlab.train.config import load_config

    cfg = load_config("cifar10-resnet18-fast", {"data": data, "device": "cuda", "workers": 0, "out": str(out),
                                                "log_every_s": 60, "cache_dir": CACHE, **overrides})
    t = time.perf_counter()
    result = resnetlab.fit(cfg, overwrite=True)
    return {"overrides": overrides, "summary": result.summary, "curve": result.history,
            "seconds": time.perf_counter() - t}


def ddp_nccl(data: str, out: Path) -> dict:
    """torchrun with one process per GPU (nccl): the DDP code path on CUDA."""
    n = torch.cuda.device_count()
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "-m", "resnetlab", "train",
           "--config", "cifar10-resnet18-fast", "--data", data, "--device", "cuda", "--epochs", "1",
           "--limit-train-batches", "40", "--limit-eval-batches", "4", "--cache-dir", CACHE, "--workers", "0",
           "--out", str(out), "--overwrite"]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ})
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else None
    return {"ok": p.returncode == 0 and summary is not None, "world_size": n, "backend": "nccl",
            "summary": summary, "seconds": time.perf_counter() - t, "stderr_tail": p.stderr[-1500:]}


def throughput(device, batch: int = 256, repeats: int = 5) -> dict:
    """Eager inference img/s of ResNet-18 (CIFAR stem, 32x32): FP32 NCHW vs bf16 channels_last."""
    import resnetlab

    out = {}
    for name, dtype, cl in (("fp32", torch.float32, False), ("bf16_channels_last", torch.bfloat16, True)):
        m = resnetlab.create_model("resnet18", num_classes=10, stem="cifar").to(device).eval()
        x = torch.randn(batch, 3, 32, 32, device=device)
        if cl:
            m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        times = []
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            for _ in range(10):
                m(x)
            for _ in range(repeats):
                torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(20):
                    m(x)
                torch.cuda.synchronize()
                times.append((time.perf_counter() - t) / 20)
        ips = [batch / s for s in times]
        out[name] = {"img_per_s": statistics.median(ips), "min": min(ips), "max": max(ips), "repeats": repeats}
    return out


def guarded(name: str, fn, result: dict) -> None:
    t = time.perf_counter()
    try:
        result[name] = fn()
    except Exception:
        result[name] = {"ok": False, "error": traceback.format_exc()[-2000:]}
    print(f"{name}: done in {time.perf_counter() - t:.0f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--commit", help="the commit measured (the device copy has no .git)")
    p.add_argument("--dirty", type=int, choices=(0, 1))
    args = p.parse_args()
    device = torch.device("cuda")
    from resnetlab.data import resolve_data_root

    data = str(resolve_data_root(args.data, cache_dir=CACHE))
    env = environment()
    if args.commit:
        env.update(git=args.commit[:7], commit=args.commit, dirty=bool(args.dirty), dirty_files=[])
    result: dict = {"env": env, "data": data, "command": " ".join(sys.argv)}
    guarded("zoo", lambda: zoo(device), result)
    common = {"epochs": args.epochs, "batch_size": 128}
    guarded("recipe", lambda: train_run(common, data, Path("/tmp/runs/base")), result)
    short = {**common, "epochs": 1, "limit_train_batches": 60, "limit_eval_batches": 4}
    guarded("fp16_gradscaler", lambda: train_run({**short, "amp": "fp16"}, data, Path("/tmp/runs/fp16")), result)
    guarded("ddp_nccl", lambda: ddp_nccl(data, Path("/tmp/runs/ddp")), result)

    def evaluate():
        import resnetlab

        r = resnetlab.evaluate("/tmp/runs/base", data, split="test", device="cuda")
        return {"top1": r.top1, "top5": r.top5, "amp": r.amp, "num_samples": r.num_samples}
    guarded("evaluate_cuda", evaluate, result)
    guarded("throughput", lambda: throughput(device), result)
    report(args, result)


def _ok(r: dict) -> str:
    if "error" in r:
        return "FAILED: " + r["error"].strip().splitlines()[-1]
    return "ok" if r.get("ok", True) else "FAILED"


def report(args, result: dict) -> None:
    env = result["env"]
    zoo_r = result["zoo"] if "error" not in result["zoo"] else {}
    zoo_ok = [n for n, v in zoo_r.items() if v["ok"]]
    lines = [f"# GPU check: model zoo and engine on CUDA, fast-recipe accuracy at {args.epochs} epochs\n",
             header_md(env, result["command"]), "",
             f"- model zoo forward+backward on CUDA (bf16, channels_last): {len(zoo_ok)}/{len(zoo_r)} ok"
             + "".join(f"\n  - FAILED {n}: {v.get('error')}" for n, v in zoo_r.items() if not v["ok"])]
    for name in ("fp16_gradscaler",):
        r = result[name]
        lines.append(f"- {name}: {_ok(r)}" + (f" ({r['seconds']:.0f} s, final val top-1 "
                                              f"{100 * (r['summary'].get('val_top1') or 0):.1f} % after "
                                              "60 steps)" if "summary" in r else ""))
    d = result["ddp_nccl"]
    lines.append(f"- DDP, nccl, {d.get('world_size')} process(es) via torchrun: {_ok(d)}"
                 + ("" if d.get("ok") else f"\n```\n{d.get('stderr_tail', '')}\n```"))
    r = result["recipe"]
    if "summary" in r:
        s = r["summary"]
        lines += ["", "| cifar10-resnet18-fast on CUDA | value |", "|---|---|",
                  f"| precision used | amp={s.get('amp')}, channels_last={s.get('channels_last')} |",
                  f"| best validation top-1 (selects best.pt) | {100 * (s.get('best_val_top1') or 0):.2f} % |",
                  f"| test top-1 / top-5 of best.pt (measured once) | {100 * (s.get('test_top1') or 0):.2f} % / "
                  f"{100 * (s.get('test_top5') or 0):.2f} % |",
                  f"| selection | {s.get('selection')} |",
                  f"| epochs, wall time | {s.get('epochs')}, {r['seconds']:.0f} s |",
                  f"| training throughput | {s.get('images_per_s', 0):.0f} img/s |"]
    else:
        lines.append(f"- recipe: {_ok(r)}")
    e = result["evaluate_cuda"]
    if "top1" in e:
        lines.append(f"\n- resnetlab.evaluate on CUDA ({e['amp']}): test top-1 {100 * e['top1']:.2f} % on "
                     f"{e['num_samples']} images (must equal the summary's test top-1 above)")
    t = result["throughput"]
    if "fp32" in t:
        lines += ["", "| eager inference, ResNet-18 CIFAR, batch 256 | img/s (median of 5) | min-max |",
                  "|---|---|---|"]
        lines += [f"| {k} | {v['img_per_s']:.0f} | {v['min']:.0f}-{v['max']:.0f} |" for k, v in t.items()]
    write("gpu_check", result, "\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
