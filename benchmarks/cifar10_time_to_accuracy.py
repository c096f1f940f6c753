"""Accuracy against wall-clock time on this machine: CIFAR-10 top-1 after each epoch.

Each entry trains in its own `resnetlab train` process (evaluation included in the clock) and
the curves land side by side in one table and one plot (test or validation top-1 solid, the
training accuracy on augmented batches dashed, one colour per run).

    python benchmarks/cifar10_time_to_accuracy.py --data ~/.cache/resnetlab/cifar10 \\
        --run resnet18-fast=cifar10-resnet18-fast --run r20-short=benchmarks/recipes/cifar10-resnet20-short.yaml
    python benchmarks/cifar10_time_to_accuracy.py --render-only   # table and plot again from the JSON

Run time (2 cores): resnet18-fast 54 min, r20-short 18 min. Runs of earlier invocations are kept
(each with the commit, command and date it was measured at) unless --fresh.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import code_line, environment, header_md, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAME = "cifar10_time_to_accuracy"


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


def _can_overwrite() -> bool:
    """Whether this resnetlab's `train` takes --overwrite (engines that refuse to train into an existing run folder)."""
    import inspect

    from resnetlab.train.config import TrainConfig
    from resnetlab.train.engine import fit

    return "overwrite" in inspect.signature(fit).parameters or "overwrite" in {
        f.name for f in dataclasses.fields(TrainConfig)}


def train(name: str, recipe: str, overrides: dict, data: str, runs: Path) -> dict:
    out = runs / name
    args = ["train", "--config", recipe, "--data", data, "--out", str(out), "--log-every-s", "60"]
    if _can_overwrite():  # this benchmark's own run folder: a rerun replaces it
        args.append("--overwrite")
    for key, value in overrides.items():
        if key == "model_kwargs":
            args += ["--model-kwargs", *[f"{k}={v!r}" for k, v in value.items()]]
        else:
            args += [f"--{key.replace('_', '-')}", str(value)]
    print(f"[{name}] resnetlab {' '.join(args)}", file=sys.stderr, flush=True)
    for stale in ("metrics.jsonl", "summary.json"):  # never read a previous run's rows as this one's
        (out / stale).unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "resnetlab", *args], check=True, cwd=ROOT)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    # which split the per-epoch curve is: engines that keep the test split for one final evaluation
    # (summary "test_top1") evaluate a validation split every epoch; older ones evaluated eval_split=test
    split = "test" if any("test_top1" in r for r in rows) or "test_top1" not in summary else "val"
    return {"recipe": recipe, "overrides": overrides, "summary": summary, "curve": rows, "curve_split": split,
            "command": args}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="CIFAR-10 (folder or archive); default: as resnetlab finds it")
    p.add_argument("--run", action="append", default=[], help="name=recipe[:key=value;...]")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument("--target", type=float, default=0.92, help="top-1 to reach")
    p.add_argument("--budget-min", type=float, default=60.0, help="wall-clock budget for the target")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--fresh", action="store_true",
                   help="drop the runs already in the results JSON (default: keep those not re-run, each "
                        "with the environment it was measured in)")
    p.add_argument("--render-only", action="store_true", help="no training: table and plot from the results JSON")
    args = p.parse_args()
    if not args.run and not args.render_only:
        p.error("give --run name=recipe (one or more), or --render-only")
    env = environment()
    results = {} if args.fresh else previous_results(args.out / f"{NAME}.json")
    if args.run:
        from resnetlab.data import resolve_data_root

        data = str(resolve_data_root(args.data))
        for spec in args.run:
            name, recipe, overrides = parse_run(spec)
            results[name] = {**train(name, recipe, overrides, data, args.runs_dir), "env": environment()}
    if not results:
        raise SystemExit(f"nothing to report: no runs given and none in {args.out / NAME}.json")
    report(args, env, results)


def previous_results(path: Path) -> dict:
    """Runs from an earlier invocation, each tagged with its own environment (hour-long runs are run one by one)."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    return {name: {"env": old.get("env", {}), **r} for name, r in old.get("results", {}).items()}


def _top1(row: dict, split: str) -> float | None:
    v = row.get("test_top1") if split == "test" and "test_top1" in row else row.get("val_top1")
    return None if v is None else float(v)


def report(args, env: dict, results: dict) -> None:
    from resnetlab.utils.plot import line_figure, save_figure

    measured_now = {parse_run(r)[0] for r in args.run}
    kept = [n for n in results if n not in measured_now]
    lines = ["# CIFAR-10 top-1 against wall-clock time\n", header_md(env),
             f"- clock: the run's own wall time, the evaluation after each epoch included; target "
             f"{100 * args.target:.0f} % within {args.budget_min:.0f} min; one run each (no repeats: up to an hour "
             "of a 2-core machine per run)"]
    if kept:
        lines.append(f"- runs kept from earlier invocations (each section names its own commit, command and date): "
                     f"{', '.join(kept)}" + ("; this invocation only redrew the table and the plot"
                                            if not measured_now else ""))
    lines.append("")
    series: dict[str, tuple[list, list]] = {}
    groups: dict[str, str] = {}
    dashed: list[str] = []
    cpus = set()
    for name, r in results.items():
        s, curve = r["summary"], r["curve"]
        split = r.get("curve_split", "test")  # runs before the split was recorded evaluated eval_split=test
        evals = [row for row in curve if _top1(row, split) is not None]
        hit = next((row for row in evals if _top1(row, split) >= args.target), None)
        verdict = (f"reached {100 * args.target:.0f} % ({split}) at {hit['wall_time_s'] / 60:.1f} min (epoch "
                   f"{hit['epoch']})" if hit else f"did not reach {100 * args.target:.0f} %")
        within = hit is not None and hit["wall_time_s"] <= args.budget_min * 60
        renv = r.get("env") or {}
        cpus.add(f"{renv.get('cpu', '?')} ({renv.get('cores', '?')} cores)")
        final = s["test_top1"] if s.get("test_top1") is not None else s.get("final_top1")
        best = s.get("best_val_top1", s.get("best_top1"))
        lines += [f"## {name}: `{r['recipe']}` {r['overrides'] or ''}", "",
                  f"measured {renv.get('date')} at {code_line(renv)}; command `resnetlab {' '.join(r['command'])}`",
                  "",
                  (f"selection: {s['selection']}\n\n" if s.get("selection") else "")
                  + f"final test top-1 **{100 * final:.2f} %**" + (f", best {split} {100 * best:.2f} %" if best else "")
                  + f", {s['epochs']} epochs in {s['wall_time_s'] / 60:.1f} min, {s['images_per_s']:.0f} train img/s;"
                  f" {verdict}{' — within the budget' if within else ''}", "",
                  f"| epoch | wall min | train loss | train acc | {split} top-1 | {split} top-5 | lr |",
                  "|---|---|---|---|---|---|---|"]
        for row in curve:
            t1, t5 = _top1(row, split), row.get("test_top5" if split == "test" and "test_top5" in row else "val_top5")
            pct = lambda v: "–" if v is None else f"{100 * v:.2f} %"  # noqa: E731
            lines.append(f"| {row['epoch']} | {row['wall_time_s'] / 60:.1f} | {row['train_loss']:.3f} | "
                         f"{100 * row['train_acc']:.1f} % | {pct(t1)} | {pct(t5)} | {row['lr']:.4f} |")
        lines.append("")
        label = f"{name} {split} top-1"
        series[label] = ([row["wall_time_s"] / 60 for row in evals], [100 * _top1(row, split) for row in evals])
        series[f"{name} train acc (augmented)"] = ([row["wall_time_s"] / 60 for row in curve],
                                                   [100 * row["train_acc"] for row in curve])
        groups[label] = groups[f"{name} train acc (augmented)"] = name
        dashed.append(f"{name} train acc (augmented)")
        if split != "test" and final is not None:  # the one test evaluation, at the end
            series[f"{name} test top-1 (final)"] = ([s["wall_time_s"] / 60], [100 * final])
            groups[f"{name} test top-1 (final)"] = name
    target = f"target {100 * args.target:.0f} % in {args.budget_min:.0f} min"
    series[target] = ([0, args.budget_min], [100 * args.target] * 2)
    dashed.append(target)
    fig = line_figure(series, title=f"CIFAR-10 top-1 against wall-clock time, {', '.join(sorted(cpus))}",
                      xlabel="wall-clock minutes (evaluation included)", ylabel="top-1 (%)", groups=groups,
                      dashed=dashed)
    args.out.mkdir(parents=True, exist_ok=True)
    save_figure(fig, args.out / f"{NAME}.png")
    lines.append(f"![top-1 against time]({NAME}.png)")
    write(NAME, {"env": env, "results": results}, "\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
