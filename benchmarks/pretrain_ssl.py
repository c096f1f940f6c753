"""Self-supervised pretraining on CIFAR-10 with ResNet-18 (CIFAR stem), on this CPU: kNN top-1 after each epoch
of each method against a random network's (the floor) and a supervised network's trained for the same wall
time (the ceiling), and label efficiency: fine-tuning from the SSL backbone against from scratch with 1 % and
10 % of the labels, same steps.

Data (seeded draws from CIFAR-10): pretraining on the 50,000 training images (labels unused; 10 % held out as
the engine's validation split and unused too); the kNN monitor (k = 200, Wu et al. 2018) with a bank of 500
labelled training images per class and 100 per class as queries each epoch, and 200 test images per class at
the end; label efficiency with 50 (1 %) or 500 (10 %) labelled images per class, 100 per class for validation
(disjoint), scored on 200 test images per class. A kNN bank of 5,000 gives lower figures than lightly's
50,000-image bank: compare runs here with each other, not with lightly's table.

Rules, fixed before the first run:
- F1 (floor): each method's final kNN top-1 beats the random network's by at least 2 points.
- C1 (ceiling) and L1 (label efficiency): reported, whatever their sign; no pass/fail.

    python benchmarks/pretrain_ssl.py --data ~/.cache/resnetlab/cifar10 --methods simclr,byol --epochs 8 \
        --steps-per-epoch 50

(Not named ssl.py: a script in benchmarks/ of that name would shadow the standard library's ssl module for
every benchmark run from this folder.)

Run time (2 cores): about 60 min per method at the defaults, the same for the supervised ceiling, 40 min for
label efficiency; `--smoke` runs every part for a few steps (minutes) to check the script.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, header_md, write  # noqa: E402

from resnetlab.data import open_dataset, resolve_data_root  # noqa: E402
from resnetlab.train.engine import fit  # noqa: E402

BASE = dict(model="resnet18", model_kwargs={"stem": "cifar"}, preset="cifar", log_every_s=120.0, eval_batch_size=500)
SSL = dict(BASE, batch_size=128, lr=0.06, momentum=0.9, weight_decay=5e-4, no_wd_norm_bias=False, schedule="cosine",
           knn_k=200)
SUPERVISED = dict(BASE, batch_size=128, lr=0.1, weight_decay=5e-4, schedule="onecycle", label_smoothing=0.1)
FINETUNE = dict(BASE, batch_size=64, lr=0.05, weight_decay=5e-4, schedule="cosine")
FLOOR_MARGIN = 0.02


def draw(ds, per_class: int, rng: np.random.Generator, exclude: set[int] = frozenset()) -> list[int]:
    rows = []
    for c in range(len(ds.classes)):
        idx = [int(i) for i in np.flatnonzero(np.asarray(ds.targets) == c) if int(i) not in exclude]
        rows += list(rng.choice(idx, per_class, replace=False))
    return sorted(int(i) for i in rows)


def npz(path: Path, classes, **splits) -> Path:
    arrays = {"classes": np.array(classes)}
    for split, (ds, rows) in splits.items():
        arrays[f"{split}_images"] = np.asarray(ds.images[rows])
        arrays[f"{split}_labels"] = np.asarray(ds.targets)[rows].astype(np.int64)
    np.savez(path, **arrays)
    return path


def make_data(root: Path, tmp: Path, smoke: bool) -> dict[str, Path]:
    train, test = open_dataset(root, "train"), open_dataset(root, "test")
    rng = np.random.default_rng(0)
    s = 0.1 if smoke else 1.0
    bank, queries = draw(train, int(500 * s), rng), draw(train, int(100 * s), rng)
    final = draw(test, int(200 * s), rng)
    everything = list(range(len(train))) if not smoke else draw(train, 200, rng)
    out = {"pretrain": npz(tmp / "pretrain.npz", train.classes, train=(train, everything), test=(test, final)),
           "knn": npz(tmp / "knn.npz", train.classes, train=(train, bank), val=(train, queries), test=(test, final))}
    for pct, per_class in (("1%", 50), ("10%", 500)):
        val = draw(train, int(100 * s), np.random.default_rng(1))
        labelled = draw(train, max(int(per_class * s), 2), np.random.default_rng(2), exclude=set(val))
        out[pct] = npz(tmp / f"labels-{pct[:-1]}.npz", train.classes, train=(train, labelled), val=(train, val),
                       test=(test, final))
    return out


def pretrain(method: str, data: dict, tmp: Path, args) -> dict:
    r = fit(**SSL, ssl=method, data=str(data["pretrain"]), knn_data=str(data["knn"]), epochs=args.epochs,
            limit_train_batches=args.steps_per_epoch, out=str(tmp / f"ssl-{method}"), cache_dir=str(tmp / "c"),
            seed=args.seed)
    return {"curve": [{"epoch": h["epoch"], "wall_time_s": h["wall_time_s"], "knn_top1": h.get("val_knn_top1"),
                       "train_loss": h["train_loss"]} for h in r.history],
            "test_knn_top1": r.summary["test_knn_top1"], "wall_time_s": r.summary["wall_time_s"],
            "steps": r.summary["steps"], "run": str(r.run_dir)}


def knn_of(checkpoint_or_model, data: dict, k: int = 200) -> float:
    """kNN top-1 on the final queries (the test images) of a backbone: a model, or a checkpoint's trunk."""
    from resnetlab.eval.knn import knn_top1
    from resnetlab.eval.probe import load_backbone
    from resnetlab.eval import eval_batches
    from resnetlab.data.preprocess import Preprocess

    if isinstance(checkpoint_or_model, (str, Path)):
        model, pre, _, _ = load_backbone(checkpoint_or_model)
    else:
        model, pre = checkpoint_or_model, Preprocess.for_data("cifar", 32, 3, None)
    bank, test = open_dataset(data["knn"], "train"), open_dataset(data["knn"], "test")
    return knn_top1(model, eval_batches(bank, pre, batch_size=500).epoch(0),
                    eval_batches(test, pre, batch_size=500).epoch(0), len(bank.classes), k=k)


def supervised(data: dict, tmp: Path, seconds: float, args) -> dict:
    probe = fit(**SUPERVISED, data=str(data["pretrain"]), epochs=1, max_steps=10, limit_eval_batches=1,
                out=str(tmp / "sup-probe"), cache_dir=str(tmp / "c"), seed=args.seed)
    # the training rate, not the probe's wall time / steps: that counted start-up and evaluation as step time
    # and gave the ceiling 19 of the SSL runs' 25 minutes in the run of 3494a9b
    per_step = SUPERVISED["batch_size"] / probe.summary["images_per_s"]
    steps = max(5, round(seconds / per_step))
    per_epoch = -(-int(0.9 * len(np.load(data["pretrain"])["train_labels"])) // SUPERVISED["batch_size"])
    r = fit(**SUPERVISED, data=str(data["pretrain"]), epochs=-(-steps // per_epoch), max_steps=steps,
            limit_eval_batches=2, out=str(tmp / "supervised"), cache_dir=str(tmp / "c"), seed=args.seed)
    return {"steps": steps, "wall_time_s": r.summary["wall_time_s"], "test_top1": r.summary["test_top1"],
            "knn_top1": knn_of(r.run_dir, data)}


def finetune(data: dict, start: str | None, pct: str, tmp: Path, args) -> dict:
    extra = {"pretrained": start} if start else {}
    n = len(np.load(data[pct])["train_labels"])
    per_epoch = max(n // FINETUNE["batch_size"], 1)
    r = fit(**FINETUNE, **extra, data=str(data[pct]), epochs=-(-args.finetune_steps // per_epoch),
            max_steps=args.finetune_steps, eval_every=10**6, out=str(tmp / f"ft-{pct[:-1]}-{'ssl' if start else 'x'}"),
            cache_dir=str(tmp / "c"), seed=args.seed)
    return {"test_top1": r.summary["test_top1"], "steps": r.summary["steps"], "wall_time_s": r.summary["wall_time_s"]}


def random_floor(data: dict, seed: int) -> float:
    import torch

    from resnetlab import create_model

    torch.manual_seed(seed)
    return knn_of(create_model("resnet18", num_classes=0, stem="cifar").eval(), data)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    colours = {"simclr": "tab:blue", "mocov2": "tab:purple", "byol": "tab:orange", "simsiam": "tab:green"}
    for method, r in result["methods"].items():
        xs = [0] + [c["wall_time_s"] / 60 for c in r["curve"]]
        ys = [100 * result["floor"]] + [100 * c["knn_top1"] for c in r["curve"]]
        ax.plot(xs, ys, marker="o", ms=4, color=colours.get(method), label=f"{method} (kNN on val queries)")
    ax.axhline(100 * result["floor"], color="gray", ls=":", label=f"random network {100 * result['floor']:.1f} %")
    sup = result["supervised"]
    ax.axhline(100 * sup["knn_top1"], color="black", ls="--",
               label=f"supervised, {sup['wall_time_s'] / 60:.0f} min: {100 * sup['knn_top1']:.1f} %")
    ax.set_xlabel("pretraining wall time on this CPU (min)")
    ax.set_ylabel("kNN top-1 (%), k = 200, bank of 5,000")
    ax.set_title("CIFAR-10, ResNet-18 (CIFAR stem): self-supervised kNN accuracy against time", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")  # between the curves and the ceiling, clear of both
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(env: dict, result: dict, command: str) -> str:
    sup = result["supervised"]
    lines = ["# Self-supervised pretraining on CIFAR-10 (ResNet-18, CIFAR stem) on this CPU", "",
             header_md(env, command), "",
             f"Floor: a random network's kNN top-1 **{100 * result['floor']:.2f} %**. Ceiling: supervised training "
             f"for the SSL runs' mean wall time ({sup['steps']} steps, {sup['wall_time_s'] / 60:.0f} min against "
             f"{np.mean([r['wall_time_s'] for r in result['methods'].values()]) / 60:.0f}): kNN "
             f"**{100 * sup['knn_top1']:.2f} %** (its test top-1 {100 * sup['test_top1']:.2f} %).", "",
             "| method | steps | wall time (min) | kNN top-1 per epoch (val queries) | final kNN on test | "
             "F1: > floor + 2 |",
             "|---|---|---|---|---|---|"]
    for m, r in result["methods"].items():
        curve = " → ".join(f"{100 * c['knn_top1']:.1f}" for c in r["curve"])
        ok = r["test_knn_top1"] >= result["floor"] + FLOOR_MARGIN
        lines.append(f"| {m} | {r['steps']} | {r['wall_time_s'] / 60:.1f} | {curve} | {100 * r['test_knn_top1']:.2f} % "
                     f"| {'yes' if ok else '**no**'} |")
    le = result["label_efficiency"]
    lines += ["", f"Label efficiency ({result['finetune_from']} backbone vs from scratch, {le['steps']} steps each, "
              "test top-1 on 2,000 test images):", "", "| labels | from SSL | from scratch | difference (points) |",
              "|---|---|---|---|"]
    for pct in ("1%", "10%"):
        a, b = le[pct]["ssl"]["test_top1"], le[pct]["scratch"]["test_top1"]
        lines.append(f"| {pct} | {100 * a:.2f} % | {100 * b:.2f} % | {100 * (a - b):+.2f} |")
    lines += ["", "For orientation only (other scale): lightly's ResNet-18 CIFAR-10 kNN at 200 epochs, batch 128, one "
              "GPU, a 50,000-image bank: BYOL 0.869, SimCLR 0.847, MoCo 0.838, SimSiam 0.819.", "",
              "![kNN accuracy against wall time](ssl.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="CIFAR-10 (folder or archive); default: as resnetlab finds it")
    p.add_argument("--methods", default="simclr,byol")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument("--finetune-from", default="byol", help="the method whose backbone the label-efficiency runs take")
    p.add_argument("--finetune-steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="a few steps of everything, into a temporary folder")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--replot", default=None, metavar="JSON", help="only redraw the figure of a results JSON")
    args = p.parse_args(argv)
    if args.replot:
        plot(json.loads(Path(args.replot).read_text()), Path(args.replot).with_suffix(".png"))
        return 0
    if args.smoke:
        args.epochs, args.steps_per_epoch, args.finetune_steps = 2, 2, 4
    methods = args.methods.split(",")
    env = environment()
    with tempfile.TemporaryDirectory(prefix="resnetlab-ssl-") as t:
        tmp = Path(t)
        data = make_data(resolve_data_root(args.data), tmp, args.smoke)
        result = {"floor": random_floor(data, args.seed), "methods": {}, "finetune_from": args.finetune_from}
        for m in methods:
            result["methods"][m] = pretrain(m, data, tmp, args)
        wall = float(np.mean([r["wall_time_s"] for r in result["methods"].values()]))
        result["supervised"] = supervised(data, tmp, wall, args)
        start = Path(result["methods"][args.finetune_from]["run"]) if args.finetune_from in methods else None
        result["label_efficiency"] = {"steps": args.finetune_steps, **{
            pct: {"ssl": finetune(data, str(start) if start else None, pct, tmp, args),
                  "scratch": finetune(data, None, pct, tmp, args)} for pct in ("1%", "10%")}}
    command = "python benchmarks/pretrain_ssl.py " + " ".join(sys.argv[1:])
    out = Path(args.out if not args.smoke else tempfile.mkdtemp(prefix="resnetlab-ssl-smoke-"))
    payload = {"env": env, "command": command, "args": vars(args), **result}
    plot(result, out / "ssl.png")
    write("ssl", payload, markdown(env, result, command), out)
    print(json.dumps({"out": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
