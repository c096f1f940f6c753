"""One prepared GPU check (run on a CUDA machine): the model zoo and the engine's CUDA paths,
and the fast CIFAR-10 recipe's accuracy at the CPU's epoch budget (a GPU trains it in minutes).

    PYTHONPATH=src python benchmarks/gpu_check.py --data PATH --out DIR [--epochs 12]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, header_md, write  # noqa: E402


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


def run(cfg_overrides: dict, data: str, out: Path) -> dict:
    from resnetlab.train.config import load_config
    from resnetlab.train.engine import train

    cfg = load_config("cifar10-resnet18-fast", {"data": data, "device": "cuda", "workers": 0, "out": str(out),
                                                "log_every_s": 60, **cfg_overrides})
    t = time.perf_counter()
    summary = train(cfg)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    return {"overrides": cfg_overrides, "summary": summary, "curve": rows, "seconds": time.perf_counter() - t}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--variants", default="base,lr0.1,ema")
    args = p.parse_args()
    device = torch.device("cuda")
    from resnetlab.data import resolve_data_root

    data = str(resolve_data_root(args.data, cache_dir="/tmp/resnetlab-cache"))
    result: dict = {"env": environment(), "data": data}
    t = time.perf_counter()
    result["zoo"] = zoo(device)
    print(f"zoo: {sum(v['ok'] for v in result['zoo'].values())}/{len(result['zoo'])} ok "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    variants = {"base": {}, "lr0.1": {"lr": 0.1}, "ema": {"ema_decay": 0.999},
                "zero_init": {"model_kwargs": {"stem": "cifar", "zero_init_residual": True}}}
    common = {"epochs": args.epochs, "batch_size": 128, "cache_dir": "/tmp/resnetlab-cache"}
    result["recipe"] = {}
    for name in args.variants.split(","):
        try:
            result["recipe"][name] = run({**common, **variants[name]}, data, Path(f"/tmp/runs/{name}"))
            s = result["recipe"][name]["summary"]
            print(f"recipe {name}: final {s['final_top1']:.4f} best {s['best_top1']:.4f} "
                  f"({result['recipe'][name]['seconds']:.0f} s, {s['images_per_s']:.0f} img/s)", flush=True)
        except Exception:
            result["recipe"][name] = {"error": traceback.format_exc()[-2000:]}
            print(result["recipe"][name]["error"], flush=True)
    for name, extra in (("fp16_gradscaler", {"amp": "fp16"}), ("compile_bf16", {"compile": True})):
        try:
            r = run({**common, "epochs": 1, "limit_train_batches": 60, "limit_eval_batches": 4, **extra}, data,
                    Path(f"/tmp/runs/{name}"))
            result[name] = {"ok": r["summary"]["final_top1"] is not None, "summary": r["summary"],
                            "seconds": r["seconds"]}
        except Exception:
            result[name] = {"ok": False, "error": traceback.format_exc()[-2000:]}
        print(name, result[name].get("ok"), flush=True)
    report(args, result)


def report(args, result: dict) -> None:
    env = result["env"]
    zoo_ok = [n for n, v in result["zoo"].items() if v["ok"]]
    lines = [f"# GPU check: model zoo and engine on CUDA, fast-recipe accuracy at {args.epochs} epochs\n",
             header_md(env, "PYTHONPATH=src python benchmarks/gpu_check.py --data DATA --out OUT"), "",
             f"- model zoo forward+backward on CUDA (bf16, channels_last): {len(zoo_ok)}/{len(result['zoo'])} ok"
             + "".join(f"\n  - FAILED {n}: {v.get('error')}" for n, v in result["zoo"].items() if not v["ok"]),
             f"- fp16 + GradScaler path: {result.get('fp16_gradscaler', {}).get('ok')}; "
             f"torch.compile path: {result.get('compile_bf16', {}).get('ok')}", "",
             "| variant of cifar10-resnet18-fast | final top-1 | best top-1 | EMA top-1 | train img/s | wall s |",
             "|---|---|---|---|---|---|"]
    for name, r in result["recipe"].items():
        if "summary" not in r:
            lines.append(f"| {name} | failed | | | | |")
            continue
        s, last = r["summary"], r["curve"][-1]
        ema = f"{100 * last['ema_top1']:.2f} %" if "ema_top1" in last else "-"
        lines.append(f"| {name} {r['overrides']} | {100 * s['final_top1']:.2f} % | {100 * s['best_top1']:.2f} % | "
                     f"{ema} | {s['images_per_s']:.0f} | {r['seconds']:.0f} |")
    write("gpu_check", result, "\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
