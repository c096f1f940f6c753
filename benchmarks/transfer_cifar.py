"""Transfer learning on data we have: pretrain on 5 CIFAR-10 classes, transfer to the other 5 with 10, 50
or 250 labelled images per class; linear probe vs full fine-tuning vs training from scratch, same budget.

Source task: airplane, automobile, bird, cat, deer (all 25,000 training images). Target task: dog, frog,
horse, ship, truck, with k labelled training images per class (seeded draws), 50 per class for
validation (disjoint), and the 5,000 test images of those classes. Every target run takes the same
number of optimizer steps at the same batch size and learning rate; only where its weights start and
what trains differ.

Rules, fixed before the first run:
- R1: with 10 images per class, starting from the source weights (the better of probe and fine-tune)
  beats training from scratch by >= 5 points of test top-1 (mean over seeds).
- R2: that advantage is smaller at 250 images per class than at 10.

    python benchmarks/transfer_cifar.py --data ../shared/data/cifar10-jpeg.tar.gz --seeds 0,1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, fmt_mean_sd, header_md, spread, write  # noqa: E402

from resnetlab.data import open_dataset, resolve_data_root  # noqa: E402
from resnetlab.train.engine import fit  # noqa: E402
from resnetlab.utils.progress import Progress  # noqa: E402

SOURCE = ["airplane", "automobile", "bird", "cat", "deer"]
TARGET = ["dog", "frog", "horse", "ship", "truck"]
PRETRAIN = dict(model="resnet20", epochs=15, batch_size=128, lr=0.2, schedule="onecycle", weight_decay=5e-4,
                label_smoothing=0.1, log_every_s=60.0)
METHODS = {"linear probe": {"finetune": "linear"}, "full fine-tune": {"finetune": "full"},
           "from scratch": {}}
TRANSFER = dict(model="resnet20", batch_size=32, lr=0.05, schedule="cosine", weight_decay=5e-4, log_every_s=60.0)
STEPS, VAL_PER_CLASS = 300, 50


def subset(ds, names: list[str], per_class: int | None, rng: np.random.Generator | None,
           exclude: set[int] = frozenset()) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Images and 0-based labels of ``names`` (``per_class`` drawn of each, or all), and the rows used."""
    rows = []
    for name in names:
        idx = [i for i in np.flatnonzero(ds.targets == ds.classes.index(name)) if i not in exclude]
        rows += list(rng.choice(idx, per_class, replace=False)) if per_class else idx
    rows = sorted(int(i) for i in rows)
    labels = np.array([names.index(ds.classes[ds.targets[i]]) for i in rows], dtype=np.int64)
    return np.asarray(ds.images[rows]), labels, rows


def write_npz(path: Path, names: list[str], **splits: tuple[np.ndarray, np.ndarray]) -> Path:
    arrays = {"classes": np.array(names)}
    for split, (x, y) in splits.items():
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y
    np.savez(path, **arrays)
    return path


def pretrain(train, test, tmp: Path) -> tuple[Path, dict]:
    x, y, _ = subset(train, SOURCE, None, None)
    tx, ty, _ = subset(test, SOURCE, None, None)
    data = write_npz(tmp / "source.npz", SOURCE, train=(x, y), test=(tx, ty))
    result = fit(**PRETRAIN, data=str(data), out=str(tmp / "source-run"), cache_dir=str(tmp / "c"), seed=0)
    return result.run_dir / "best.pt", {k: result.summary[k] for k in ("test_top1", "wall_time_s", "images_per_s")}


def target_data(train, test, k: int, seed: int, tmp: Path) -> Path:
    rng = np.random.default_rng([seed, k])
    vx, vy, used = subset(train, TARGET, VAL_PER_CLASS, rng)
    x, y, _ = subset(train, TARGET, k, rng, exclude=set(used))
    tx, ty, _ = subset(test, TARGET, None, None)
    return write_npz(tmp / f"target-{k}-{seed}.npz", TARGET, train=(x, y), val=(vx, vy), test=(tx, ty))


def transfer(data: Path, source_ck: Path, method: str, k: int, seed: int, tmp: Path) -> dict:
    per_epoch = max(len(TARGET) * k // TRANSFER["batch_size"], 1)
    epochs = -(-STEPS // per_epoch)
    extra = dict(METHODS[method], pretrained=str(source_ck)) if method != "from scratch" else {}
    batch = min(TRANSFER["batch_size"], len(TARGET) * k)
    result = fit(**{**TRANSFER, "batch_size": batch}, **extra, data=str(data), epochs=epochs, max_steps=STEPS,
                 eval_every=epochs, out=str(tmp / f"{method.replace(' ', '_')}-{k}-{seed}"), seed=seed,
                 cache_dir=str(tmp / "c"))
    return {"test_top1": result.summary["test_top1"], "steps": result.summary["steps"],
            "seconds": result.summary["wall_time_s"]}


def verdicts(table: dict) -> dict:
    def advantage(k: str) -> float:
        best = max(statistics.fmean(r["test_top1"] for r in table[m][k]) for m in ("linear probe", "full fine-tune"))
        return best - statistics.fmean(r["test_top1"] for r in table["from scratch"][k])
    a10, a250 = advantage("10"), advantage("250")
    return {"R1": {"advantage_at_10": a10, "holds": a10 >= 0.05},
            "R2": {"advantage_at_10": a10, "advantage_at_250": a250, "holds": a250 < a10}}


def plot(table: dict, sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (method, rows), colour in zip(table.items(), ("tab:orange", "tab:blue", "tab:gray")):
        means = [100 * statistics.fmean(r["test_top1"] for r in rows[str(k)]) for k in sizes]
        sds = [100 * statistics.stdev([r["test_top1"] for r in rows[str(k)]]) if len(rows[str(k)]) > 1 else 0
               for k in sizes]
        ax.errorbar(sizes, means, yerr=sds, marker="o", capsize=3, color=colour, label=method)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(k) for k in sizes])
    ax.set_xlabel("labelled training images per class (target task)")
    ax.set_ylabel("test top-1 on the 5 target classes (%)")
    ax.set_title(f"CIFAR-10: 5 classes -> the other 5, ResNet-20, {STEPS} steps each", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(env: dict, table: dict, source: dict, v: dict, sizes: list[int], seeds: list[int]) -> str:
    head = "| method | " + " | ".join(f"{k} / class" for k in sizes) + " |"
    rows = [head, "|---|" + "---|" * len(sizes)]
    for method, by_k in table.items():
        rows.append(f"| {method} | " + " | ".join(
            fmt_mean_sd(spread([r["test_top1"] for r in by_k[str(k)]]), scale=100, digits=1, unit=" %")
            for k in sizes) + " |")
    if v:
        r1, r2 = v["R1"], v["R2"]
        rules = [
            f"- R1 (at 10 per class, starting from the source weights beats scratch by >= 5 points): advantage "
            f"{100 * r1['advantage_at_10']:+.1f} points -> **{'holds' if r1['holds'] else 'does not hold'}**.",
            f"- R2 (the advantage shrinks from 10 to 250 per class): {100 * r2['advantage_at_10']:+.1f} -> "
            f"{100 * r2['advantage_at_250']:+.1f} points -> **{'holds' if r2['holds'] else 'does not hold'}**.",
            "", "Rules fixed before the run."]
    else:
        rules = ["No verdicts: R1 and R2 need the sizes 10 and 250 in one run."]
    return "\n".join([
        "# Transfer learning: 5 CIFAR-10 classes -> the other 5", "", header_md(env), "",
        f"Source: {', '.join(SOURCE)} (25,000 images), {PRETRAIN['model']} for {PRETRAIN['epochs']} epochs: test "
        f"top-1 {100 * source['test_top1']:.1f} % on its 5 classes ({source['wall_time_s'] / 60:.1f} min). "
        f"Target: {', '.join(TARGET)}; k labelled images per class, {VAL_PER_CLASS} per class for validation, the "
        f"5,000 test images. Every target run: {STEPS} steps, batch {TRANSFER['batch_size']} (or all images "
        f"when fewer), SGD lr {TRANSFER['lr']} cosine; seeds {seeds}. Cells: test top-1, mean ± sd over seeds.",
        "", *rows, "", *rules, "", "![test top-1 against labelled images per class](transfer_cifar.png)",
        ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="CIFAR-10 (folder or archive; default as for train)")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--sizes", default="10,50,250")
    p.add_argument("--pretrain-epochs", type=int, default=PRETRAIN["epochs"])
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    globals()["STEPS"] = args.steps
    PRETRAIN["epochs"] = args.pretrain_epochs
    seeds, sizes = [int(s) for s in args.seeds.split(",")], [int(s) for s in args.sizes.split(",")]
    env, t0 = environment(), time.perf_counter()
    root = resolve_data_root(args.data)
    train, test = open_dataset(root, "train"), open_dataset(root, "test")
    table = {m: {str(k): [] for k in sizes} for m in METHODS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source_ck, source = pretrain(train, test, tmp)
        bar = Progress(len(seeds) * len(sizes) * len(METHODS), "transfer runs", unit="run")
        for seed in seeds:
            for k in sizes:
                data = target_data(train, test, k, seed, tmp)
                for method in METHODS:
                    table[method][str(k)].append(transfer(data, source_ck, method, k, seed, tmp))
                    bar.update(1)
        bar.close()
    v = verdicts(table) if {"10", "250"} <= {str(k) for k in sizes} else {}
    results = Path(args.out) if args.out else Path(__file__).resolve().parent / "results"
    results.mkdir(parents=True, exist_ok=True)
    plot(table, sizes, results / "transfer_cifar.png")
    payload = {"env": env, "config": {"pretrain": PRETRAIN, "transfer": TRANSFER, "steps": STEPS, "seeds": seeds,
                                      "sizes": sizes}, "source": source, "runs": table, "verdicts": v,
               "wall_s": time.perf_counter() - t0}
    write("transfer_cifar", payload, markdown(env, table, source, v, sizes, seeds), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
