"""Accuracy against wall-clock time on this machine: CIFAR-10 test top-1 after each epoch.

Each entry trains in its own `resnetlab train` process (evaluation included in the clock) and
the curves land side by side in one table and one plot.

    python benchmarks/cifar10_time_to_accuracy.py --data ~/.cache/resnetlab/cifar10 \\
        --run r18=cifar10-resnet18-fast --run "r20=cifar10-resnet18-fast:model=resnet20;epochs=30"
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, header_md, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parse_run(text: str) -> tuple[str, str, dict]:
    """``name=recipe[:key=value;key=value]`` (values in YAML) -> (name, recipe, overrides)."""
    import yaml

    name, _, rest = text.partition("=")
    recipe, _, opts = rest.partition(":")
    overrides = {}
    for item in filter(None, opts.split(";")):
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, recipe, overrides


def train(name: str, recipe: str, overrides: dict, data: str, runs: Path) -> dict:
    out = runs / name
    args = ["train", "--config", recipe, "--data", data, "--out", str(out), "--log-every-s", "60"]
    for key, value in overrides.items():
        if key == "model_kwargs":
            args += ["--model-kwargs", *[f"{k}={v!r}" for k, v in value.items()]]
        else:
            args += [f"--{key.replace('_', '-')}", str(value)]
    print(f"[{name}] resnetlab {' '.join(args)}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "resnetlab", *args], check=True, cwd=ROOT)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    return {"recipe": recipe, "overrides": overrides, "summary": summary, "curve": rows, "command": args}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(Path("~/.cache/resnetlab/cifar10").expanduser()))
    p.add_argument("--run", action="append", required=True, help="name=recipe[:key=value,...]")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument("--target", type=float, default=0.92, help="top-1 to reach")
    p.add_argument("--budget-min", type=float, default=60.0, help="wall-clock budget for the target")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--fresh", action="store_true",
                   help="drop the runs already in the results JSON (default: keep those not re-run, each "
                        "with the environment it was measured in)")
    args = p.parse_args()
    env = environment()
    results = {} if args.fresh else previous_results(args.out / "cifar10_time_to_accuracy.json")
    for spec in args.run:
        name, recipe, overrides = parse_run(spec)
        results[name] = {**train(name, recipe, overrides, args.data, args.runs_dir), "env": environment()}
    report(args, env, results)


def previous_results(path: Path) -> dict:
    """Runs from an earlier invocation, each tagged with its own environment (hour-long runs are run one by one)."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    return {name: {"env": old.get("env", {}), **r} for name, r in old.get("results", {}).items()}


def report(args, env: dict, results: dict) -> None:
    from resnetlab.utils.plot import line_plot

    command = "python benchmarks/cifar10_time_to_accuracy.py " + " ".join(f"--run '{r}'" for r in args.run)
    if len(results) > len(args.run):
        command += " (earlier runs kept: each section names its own commit and date)"
    lines = ["# CIFAR-10 top-1 against wall-clock time\n", header_md(env, command),
             f"- clock: the run's own wall time, evaluation of the full test split after each epoch included; "
             f"target {100 * args.target:.0f} % within {args.budget_min:.0f} min; one run each (no repeats: "
             "an hour of a 2-core machine per run)", ""]
    series = {}
    for name, r in results.items():
        s, curve = r["summary"], r["curve"]
        hit = next((row for row in curve if row.get("val_top1", 0) >= args.target), None)
        verdict = (f"reached {100 * args.target:.0f} % at {hit['wall_time_s'] / 60:.1f} min (epoch {hit['epoch']})"
                   if hit else f"did not reach {100 * args.target:.0f} %")
        within = hit is not None and hit["wall_time_s"] <= args.budget_min * 60
        renv = r.get("env", env)
        lines += [f"## {name}: `{r['recipe']}` {r['overrides'] or ''}", "",
                  f"measured {renv.get('date')} at commit {renv.get('git')}; command `resnetlab "
                  f"{' '.join(r['command'])}`", "",
                  f"final top-1 **{100 * s['final_top1']:.2f} %**, best {100 * s['best_top1']:.2f} %, "
                  f"{s['epochs']} epochs in {s['wall_time_s'] / 60:.1f} min, {s['images_per_s']:.0f} train img/s; "
                  f"{verdict}{' — within the budget' if within else ''}", "",
                  "| epoch | wall min | train loss | train acc | test top-1 | test top-5 | lr |",
                  "|---|---|---|---|---|---|---|"]
        for row in curve:
            lines.append(f"| {row['epoch']} | {row['wall_time_s'] / 60:.1f} | {row['train_loss']:.3f} | "
                         f"{100 * row['train_acc']:.1f} % | {100 * row.get('val_top1', float('nan')):.2f} % | "
                         f"{100 * row.get('val_top5', float('nan')):.2f} % | {row['lr']:.4f} |")
        lines.append("")
        series[name] = ([row["wall_time_s"] / 60 for row in curve if "val_top1" in row],
                        [100 * row["val_top1"] for row in curve if "val_top1" in row])
    args.out.mkdir(parents=True, exist_ok=True)
    series[f"target {100 * args.target:.0f} %"] = ([0, args.budget_min], [100 * args.target] * 2)
    line_plot(series, args.out / "cifar10_time_to_accuracy.png", title="CIFAR-10 test top-1 vs wall-clock, "
              f"{env['cpu']} ({env['cores']} cores)", xlabel="minutes", ylabel="top-1 (%)",
              dashed=[f"target {100 * args.target:.0f} %"])
    lines.append("![top-1 against time](cifar10_time_to_accuracy.png)")
    write("cifar10_time_to_accuracy", {"env": env, "results": results}, "\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
