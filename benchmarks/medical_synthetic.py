"""What the imbalance tools do when the prevalence shifts between splits, as it does in medical data.

Synthetic binary data (``tests/train_helpers.write_prevalence_shift``: a faint bright square marks the
positives; separable but noisy): 10 % positives in train, 26 % in val, 37.5 % in test. One ResNet-20
per strategy and seed, the same data, steps and learning rate; every run reports on the test split at
argmax and, where the strategy has one, at the operating point chosen on validation.

Rules, fixed before the first run (never tuned afterwards):
- R1: plain training's argmax under-calls the positives: mean test sensitivity < 0.6.
- R2: a strategy "recovers" balanced accuracy when its mean paired gain over plain argmax (same seed) is
  >= 0.02 and >= 2 standard errors of the paired differences; otherwise it "does not".

    python benchmarks/medical_synthetic.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import environment, fmt_mean_sd, header_md, spread, write  # noqa: E402

from resnetlab.train.engine import fit  # noqa: E402
from resnetlab.utils.progress import Progress  # noqa: E402
from train_helpers import write_prevalence_shift  # noqa: E402

# name -> (config overrides, which decision rule to score: "argmax" or "operating_point")
STRATEGIES = {
    "plain, argmax": ({}, "argmax"),
    "threshold on val (Youden)": ({"threshold": "auto"}, "operating_point"),
    "class weights (auto), argmax": ({"class_weights": "auto"}, "argmax"),
    "balanced sampler, argmax": ({"sampler": "balanced"}, "argmax"),
    "logit adjustment (tau 1), argmax": ({"logit_adjust": 1.0}, "argmax"),
    "focal loss (gamma 2), argmax": ({"focal_gamma": 2.0}, "argmax"),
    "class weights + threshold on val": ({"class_weights": "auto", "threshold": "auto"}, "operating_point"),
}
BASE = dict(model="resnet20", epochs=6, batch_size=128, eval_batch_size=500, lr=0.05, weight_decay=5e-4,
            schedule="cosine", crop_pad=0, select_metric="auc", threads=None, log_every_s=30.0)
MIN_GAIN, MIN_SE = 0.02, 2.0


def run_one(data: Path, out: Path, seed: int, overrides: dict, rule: str) -> dict:
    result = fit(**{**BASE, **overrides}, data=str(data), out=str(out), seed=seed, cache_dir=str(out.parent / "c"))
    r = result.summary["test_report"][rule]
    return {"balanced_accuracy": r["balanced_accuracy"], "sensitivity": r["sensitivity"],
            "specificity": r["specificity"], "roc_auc": r["roc_auc"], "threshold": r["threshold"],
            "seconds": result.summary["wall_time_s"]}


def verdicts(runs: dict[str, list[dict]]) -> dict:
    """R1 and R2 from the runs' numbers (see the module docstring)."""
    plain = runs["plain, argmax"]
    sens = statistics.fmean(r["sensitivity"] for r in plain)
    out = {"R1": {"plain_argmax_sensitivity": sens, "holds": sens < 0.6}, "R2": {}}
    for name, rows in runs.items():
        if name == "plain, argmax":
            continue
        diffs = [a["balanced_accuracy"] - b["balanced_accuracy"] for a, b in zip(rows, plain)]
        mean = statistics.fmean(diffs)
        se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.inf
        ok = mean >= MIN_GAIN and mean >= MIN_SE * se
        out["R2"][name] = {"gain": mean, "se": se, "verdict": "recovers" if ok else "does not"}
    return out


def plot(runs: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(runs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key, title in ((axes[0], "balanced_accuracy", "balanced accuracy (test, 37.5 % positive)"),
                           (axes[1], "sensitivity", "sensitivity (test)")):
        for i, name in enumerate(names):
            values = [r[key] for r in runs[name]]
            ax.scatter(values, [i] * len(values), color="tab:gray", s=14, zorder=2)
            ax.errorbar(statistics.fmean(values), i, xerr=statistics.stdev(values) if len(values) > 1 else 0,
                        fmt="o", color="tab:blue" if i else "tab:red", capsize=3, zorder=3)
        ax.axvline(statistics.fmean(r[key] for r in runs[names[0]]), color="tab:red", lw=0.8, ls="--")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names)
    axes[0].invert_yaxis()
    fig.suptitle("Prevalence shift 10 % -> 26 % -> 37.5 %: each dot a seed, bars mean ± sd; red: plain argmax",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(env: dict, runs: dict, v: dict, args) -> str:
    rows = ["| strategy | balanced accuracy | sensitivity | specificity | ROC AUC | R2: gain over plain argmax |",
            "|---|---|---|---|---|---|"]
    for name, rs in runs.items():
        cell = lambda k: fmt_mean_sd(spread([r[k] for r in rs]), digits=3)  # noqa: E731
        r2 = v["R2"].get(name)
        gain = "(baseline)" if r2 is None else f"{r2['gain']:+.3f} (SE {r2['se']:.3f}): **{r2['verdict']}**"
        rows.append(f"| {name} | {cell('balanced_accuracy')} | {cell('sensitivity')} | {cell('specificity')} | "
                    f"{cell('roc_auc')} | {gain} |")
    r1 = v["R1"]
    return "\n".join([
        "# Imbalance tools under a prevalence shift (synthetic)", "", header_md(env), "",
        f"Data: `write_prevalence_shift` (tests/train_helpers.py), {args.sizes} images (train/val/test), "
        f"{args.size} px, positives 10 % / 26 % / 37.5 %. Model {BASE['model']}, {BASE['epochs']} epochs, batch "
        f"{BASE['batch_size']}, SGD lr {BASE['lr']} cosine, best.pt on validation AUC; seeds {args.seeds}. "
        "Each cell: mean ± sd over seeds.", "",
        *rows, "",
        f"- R1 (plain argmax under-calls: mean test sensitivity < 0.6): {r1['plain_argmax_sensitivity']:.3f} -> "
        f"**{'holds' if r1['holds'] else 'does not hold'}**.",
        f"- R2 (a strategy recovers when its paired gain in balanced accuracy is >= {MIN_GAIN} and >= {MIN_SE:g} "
        "standard errors): see the last column. Rules fixed before the run.", "",
        "![balanced accuracy and sensitivity per strategy](medical_synthetic.png)", ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--sizes", default="4000,1000,2000", help="train,val,test images")
    p.add_argument("--size", type=int, default=16, help="image side in pixels")
    p.add_argument("--epochs", type=int, default=BASE["epochs"])
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    BASE["epochs"] = args.epochs
    seeds = [int(s) for s in args.seeds.split(",")]
    sizes = tuple(int(s) for s in args.sizes.split(","))
    env = environment()
    runs: dict[str, list[dict]] = {name: [] for name in STRATEGIES}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bar = Progress(len(seeds) * len(STRATEGIES), "medical_synthetic runs", unit="run")
        for seed in seeds:
            data = write_prevalence_shift(tmp / f"shift{seed}.npz", sizes=sizes, size=args.size, seed=100 + seed)
            for k, (name, (overrides, rule)) in enumerate(STRATEGIES.items()):
                runs[name].append(run_one(data, tmp / f"s{seed}-{k}", seed, overrides, rule))
                bar.update(1)
        bar.close()
    v = verdicts(runs)
    results = Path(args.out) if args.out else Path(__file__).resolve().parent / "results"
    results.mkdir(parents=True, exist_ok=True)
    plot(runs, results / "medical_synthetic.png")
    payload = {"env": env, "config": {**BASE, "sizes": sizes, "size": args.size, "seeds": seeds},
               "runs": runs, "verdicts": v, "wall_s": time.perf_counter() - t0}
    write("medical_synthetic", payload, markdown(env, runs, v, args), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
