"""How long the `medmnist-resnet18-fast` recipe takes on this machine, on synthetic data of MedMNIST's sizes.

No MedMNIST file is shared (on purpose), so the recipe is timed, not scored, on data of the same shape:
- "PneumoniaMNIST-sized": binary, 28 px grayscale, 4708 / 524 / 624 images, positives 10 % / 26 % /
  37.5 % (``write_prevalence_shift``: a faint square marks them), so the threshold the recipe chooses on
  validation is exercised;
- "BloodMNIST-sized": 8 classes, 28 px RGB, 11959 / 1712 / 3421 images, a class is a bright square at one
  of 8 places in noise.
The recipe runs unchanged (only data, out and cache differ). Wall time is the training run's own clock,
from the first step to the test report, plus opening the data.

Rule, fixed before the first run: "about 10 minutes" holds when every data set's wall time lies in
[8, 12] minutes. One run per data set (n=1; a second would double a 20-minute benchmark): the spread of
wall time on a quiet machine is a few percent, see benchmarks/results/train_throughput.md.

    python benchmarks/medmnist_fast.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import environment, header_md, write  # noqa: E402

from resnetlab.train.config import load_config, to_dict  # noqa: E402
from resnetlab.train.engine import fit  # noqa: E402
from train_helpers import write_prevalence_shift  # noqa: E402

RECIPE = "medmnist-resnet18-fast"
LOW_S, HIGH_S = 8 * 60, 12 * 60


def write_positions(path: Path, sizes: tuple[int, int, int], classes: int = 8, size: int = 28,
                    seed: int = 0) -> Path:
    """A multi-class RGB .npz: class k is a bright 6x6 square at the k-th of ``classes`` places, in noise."""
    rng = np.random.default_rng(seed)
    places = [(4 + 14 * (k % 2), 2 + 6 * (k // 2)) for k in range(classes)]
    arrays = {"classes": np.array([f"type{k}" for k in range(classes)])}
    for split, n in zip(("train", "val", "test"), sizes):
        y = rng.integers(0, classes, n)
        x = rng.normal(120, 45, (n, size, size, 3))
        for k, (r, c) in enumerate(places):
            x[y == k, r:r + 6, c:c + 6, k % 3] += 40
        arrays[f"{split}_images"] = np.clip(x, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = y[:, None]
    np.savez(path, **arrays)
    return path


def run(name: str, data: Path, tmp: Path, max_steps: int | None) -> dict:
    overrides = {"data": str(data), "out": str(tmp / name), "cache_dir": str(tmp / "cache"), "log_every_s": 60.0}
    if max_steps:
        overrides["max_steps"] = max_steps
    t0 = time.perf_counter()
    result = fit(load_config(RECIPE, overrides))
    s = result.summary
    report = s["test_report"] or {}
    point = s["operating_point"]
    return {"data": name, "steps": s["steps"], "epochs": s["epochs"],
            "wall_s": time.perf_counter() - t0, "train_wall_s": s["wall_time_s"], "images_per_s": s["images_per_s"],
            "test_top1": s["test_top1"], "test_auc": s["test_auc"],
            "test_balanced_accuracy": s["test_balanced_accuracy"],
            "threshold": point["threshold"] if point else None,
            "balanced_accuracy_at_threshold": (report.get("operating_point") or {}).get("balanced_accuracy"),
            "balanced_accuracy_at_argmax": (report.get("argmax") or {}).get("balanced_accuracy")}


def markdown(env: dict, rows: list[dict], verdict: dict) -> str:
    table = ["| data (synthetic) | epochs | steps | img/s | wall time | test AUC | bal. acc. argmax | "
             "threshold (val) | bal. acc. at it |", "|---|---|---|---|---|---|---|---|---|"]
    f = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in rows:
        table.append(f"| {r['data']} | {r['epochs']} | {r['steps']} | {r['images_per_s']:.0f} | "
                     f"{r['wall_s'] / 60:.1f} min | {f(r['test_auc'])} | "
                     f"{f(r['balanced_accuracy_at_argmax'] or r['test_balanced_accuracy'])} | "
                     f"{f(r['threshold'], 4)} | {f(r['balanced_accuracy_at_threshold'])} |")
    return "\n".join([
        f"# `{RECIPE}`: time on this machine", "", header_md(env), "",
        "Synthetic data of MedMNIST's sizes (the recipe is timed here, not scored: no MedMNIST file is shared). "
        "n=1 per data set.", "", *table, "",
        f"- Rule (fixed before the run): every wall time in [{LOW_S // 60}, {HIGH_S // 60}] min -> "
        f"**{'holds' if verdict['holds'] else 'does not hold'}** "
        f"({', '.join(format(r['wall_s'] / 60, '.1f') for r in rows)} min).",
        "- The AUC and balanced accuracy are of synthetic data and say only that the recipe learns and that the "
        "binary task gets its threshold; the MedMNIST v2 paper's ResNet-18 (28) numbers are the aim on real data.",
        ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-steps", type=int, default=None, help="smoke runs only: fewer steps than the recipe's")
    p.add_argument("--scale", type=float, default=1.0, help="smoke runs only: fraction of the data sizes")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    env = environment()
    scale = lambda sizes: tuple(max(40, int(n * args.scale)) for n in sizes)  # noqa: E731
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pneumonia = write_prevalence_shift(tmp / "pneumonia-sized.npz", sizes=scale((4708, 524, 624)), size=28,
                                           amplitude=25.0, seed=1)
        blood = write_positions(tmp / "blood-sized.npz", scale((11959, 1712, 3421)), seed=2)
        for name, data in (("PneumoniaMNIST-sized, binary", pneumonia), ("BloodMNIST-sized, 8 classes", blood)):
            rows.append(run(name, data, tmp, args.max_steps))
    verdict = {"rule": f"every wall time in [{LOW_S}, {HIGH_S}] s", "holds": all(LOW_S <= r["wall_s"] <= HIGH_S
                                                                                  for r in rows)}
    results = Path(args.out) if args.out else Path(__file__).resolve().parent / "results"
    results.mkdir(parents=True, exist_ok=True)
    payload = {"env": env, "recipe": RECIPE, "config": to_dict(load_config(RECIPE)),
               "runs": rows, "verdict": verdict, "smoke": bool(args.max_steps or args.scale != 1.0)}
    write("medmnist_fast", payload, markdown(env, rows, verdict), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
