"""Real microscopy on a resnetlab ResNet-18: Faster R-CNN (nuclei as boxes) and DeepLabV3 at output stride
8 / 16 / 32 (nuclei against background), trained for a few CPU minutes each on tiles of one real image.

Data: the fluorescence image ``stardist/data/images/img2d.tif`` (512 x 512, 125 labelled nuclei in
``mask2d.tif``, BSD-3) shipped in the ``stardist`` wheel on PyPI; read with tifffile from the wheel (stardist is
never imported). The image is scaled to 8 bits between its 1st and 99.8th percentiles (stardist's own
normalisation), cut into 16 tiles of 128 px; 4 tiles, chosen by a seeded permutation before any training, are
the test split and are never seen in training; of the 12 others, 2 (seeded) are held out as validation, which
selects best.pt. A nucleus cut by a tile border keeps its part; parts under 16 pixels are dropped.

Training: from a randomly initialised ResNet-18 (no ImageNet weights can be downloaded on this machine),
AdamW, horizontal flips, fixed epochs. The detector sees tiles upscaled to 256 px (its smallest anchor is 32 px;
the nuclei are 10-25 px). Reported: box AP / AP50 (pycocotools) and mIoU / pixel accuracy of best.pt on the 4
test tiles, and the validation curves. There is no pass/fail rule: the issue asks for the figures.

    python benchmarks/nuclei.py            # writes results/nuclei.{json,md,png}; runs are resumable
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, header_md, write  # noqa: E402

WHEEL = "stardist==0.9.2"
TILE, TEST_TILES, MIN_PART = 128, 4, 16
COMMON = dict(optimizer="adamw", weight_decay=1e-4, warmup_epochs=1, schedule="cosine", batch_size=2,
              eval_batch_size=4, val_split=2 / 12, amp="off", workers=0, preset="imagenet", seed=0, log_every_s=60.0)
RUNS = {
    "fasterrcnn_resnet18_fpn": dict(model="fasterrcnn_resnet18_fpn", lr=1e-3,
                                    model_kwargs={"min_size": 256, "max_size": 256}),
    **{f"deeplabv3_resnet18_os{s}": dict(model="deeplabv3_resnet18", lr=1e-3, masks="instance",
                                         model_kwargs={"output_stride": s}) for s in (8, 16, 32)},
}


def read_wheel(cache: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(image, instance mask, wheel file name): the wheel fetched with pip (no dependencies) into ``cache``."""
    wheels = sorted(cache.glob("stardist-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "-q", "-d", str(cache)],
                       check=True)
        wheels = sorted(cache.glob("stardist-*.whl"))
    import tifffile

    with zipfile.ZipFile(wheels[-1]) as z:
        img = tifffile.imread(io.BytesIO(z.read("stardist/data/images/img2d.tif")))
        mask = tifffile.imread(io.BytesIO(z.read("stardist/data/images/mask2d.tif")))
    return img, mask, wheels[-1].name


def write_tiles(img: np.ndarray, mask: np.ndarray, root: Path, seed: int = 0) -> dict:
    lo, hi = np.percentile(img, (1, 99.8))
    img8 = (np.clip((img.astype(np.float64) - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)
    n = img.shape[0] // TILE
    order = np.random.default_rng(seed).permutation(n * n)
    test = set(order[:TEST_TILES].tolist())
    counts = {"train": 0, "test": 0}
    for k in range(n * n):
        r, c = divmod(k, n)
        split = "test" if k in test else "train"
        sl = np.s_[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE]
        tile_mask, out = mask[sl], np.zeros((TILE, TILE), np.uint8)
        for v in np.unique(tile_mask):
            part = tile_mask == v
            if v and part.sum() >= MIN_PART:
                out[part] = out.max() + 1
        for sub, arr in (("images", np.repeat(img8[sl][..., None], 3, 2)), ("masks", out)):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / split / sub / f"tile{k:02d}.png")
        counts[split] += int(out.max())
    return {"tiles": {"train": n * n - TEST_TILES, "test": TEST_TILES}, "test_tiles": sorted(test),
            "nuclei": counts, "tile_px": TILE}


def train(name: str, data: Path, work: Path, epochs: int, threads: int | None) -> dict:
    from resnetlab.train.engine import fit

    out = work / name
    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    if (out / "last.pt").is_file():
        return fit(resume=out).summary
    return fit(**COMMON, **RUNS[name], data=str(data), epochs=epochs, out=str(out), overwrite=True,
               threads=threads).summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--det-epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--work", default="runs/bench/nuclei")
    p.add_argument("--wheel-cache", default=str(Path.home() / ".cache" / "resnetlab" / "wheels"))
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    env, t0, work = environment(), time.perf_counter(), Path(args.work)
    img, mask, wheel = read_wheel(Path(args.wheel_cache))
    data = work / "tiles"
    tiles = write_tiles(img, mask, data)
    runs = {}
    for name in RUNS:
        epochs = args.det_epochs if name.startswith("faster") else args.epochs
        summary = train(name, data, work, epochs, args.threads)
        hist = [json.loads(r) for r in (work / name / "metrics.jsonl").read_text().splitlines()]
        runs[name] = {"config": {**COMMON, **RUNS[name], "epochs": epochs}, "summary": summary, "history": hist}
    payload = {"env": env, "data": {"source": f"{wheel}: stardist/data/images/img2d.tif + mask2d.tif", **tiles},
               "runs": runs, "wall_s": time.perf_counter() - t0}
    png = Path(args.out) / "nuclei.png"
    plot(runs, work, data, png)
    write("nuclei", payload, markdown(env, payload), Path(args.out))
    return 0


def plot(runs: dict, work: Path, data: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from resnetlab.deploy.dense import DensePredictor

    fig, ax = plt.subplots(1, 4, figsize=(17, 4.3), gridspec_kw={"width_ratios": [1.25, 1.25, 1, 1]})
    det = runs["fasterrcnn_resnet18_fpn"]["history"]
    ax[0].plot([r["epoch"] for r in det], [r["val_map_50"] for r in det], "o-", color="#1b6ca8", ms=3, label="AP50")
    ax[0].plot([r["epoch"] for r in det], [r["val_map"] for r in det], "s-", color="#8fb8de", ms=3,
               label="AP@[.5:.95]")
    ax[0].set(title="Faster R-CNN R18-FPN: validation box AP", xlabel="epoch", ylim=(0, 1))
    for name, colour in zip([n for n in runs if n.startswith("deeplab")], ("#c0392b", "#e67e22", "#7f8c8d")):
        h = runs[name]["history"]
        ax[1].plot([r["epoch"] for r in h], [r["val_miou"] for r in h], "o-", ms=3, color=colour,
                   label=f"output stride {name.rsplit('os', 1)[1]}")
    ax[1].set(title="DeepLabV3 R18: validation mIoU", xlabel="epoch", ylim=(0, 1))
    for a in ax[:2]:
        a.grid(alpha=0.3)
        a.legend(loc="lower right", frameon=False)
    tile = sorted((data / "test" / "images").glob("*.png"))[0]
    truth = np.asarray(Image.open(data / "test" / "masks" / tile.name))
    image = np.asarray(Image.open(tile))
    boxes = DensePredictor(work / "fasterrcnn_resnet18_fpn").predict(tile).boxes
    ax[2].imshow(image)
    for v in range(1, int(truth.max()) + 1):  # ground truth: dashed white boxes
        ys, xs = np.nonzero(truth == v)
        ax[2].add_patch(plt.Rectangle((xs.min() - 0.5, ys.min() - 0.5), xs.max() - xs.min() + 1,
                                      ys.max() - ys.min() + 1, fill=False, ec="white", ls="--", lw=1))
    for b in boxes:
        x0, y0, x1, y1 = b["box"]
        ax[2].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="#ff4136", lw=1.6))
    ax[2].set_title(f"test tile {tile.stem}: {len(boxes)} boxes (red, score >= 0.5)\nagainst the truth (dashed)",
                    fontsize=10)
    mask = DensePredictor(work / "deeplabv3_resnet18_os8").predict(tile).mask
    ax[3].imshow(image)
    ax[3].imshow(np.ma.masked_where(mask == 0, mask), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
    ax[3].contour(truth > 0, levels=[0.5], colors="white", linewidths=1, linestyles="--")
    ax[3].set_title("same tile: predicted nuclei (OS 8)\nagainst the truth's outline (dashed)", fontsize=10)
    for a in ax[2:]:
        a.axis("off")
    fig.suptitle("Nuclei (stardist img2d.tif): 10 training tiles of 128 px, 2 validation, 4 test tiles never seen",
                 fontsize=11)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def markdown(env: dict, payload: dict) -> str:
    runs, d = payload["runs"], payload["data"]
    det = runs["fasterrcnn_resnet18_fpn"]
    s = det["summary"]
    lines = ["# Nuclei detection and segmentation on a resnetlab ResNet-18 (real microscopy, CPU minutes)", "",
             header_md(env), "",
             f"Data: {d['source']} (BSD-3), 16 tiles of {d['tile_px']} px: {d['tiles']['train']} for training "
             f"(2 of them held out as validation) and {d['tiles']['test']} test tiles (numbers {d['test_tiles']}, "
             f"{d['nuclei']['test']} nuclei) never seen in training. One run each, seed 0, random initialisation.",
             "", "| model | epochs | train min | test box AP | test AP50 | test AP75 | best val box AP (epoch) |",
             "|---|---|---|---|---|---|---|",
             f"| Faster R-CNN ResNet-18 FPN (tiles at 256 px) | {s['epochs']} | {s['wall_time_s'] / 60:.1f} | "
             f"{s['test_map']:.3f} | {s['test_map_50']:.3f} | {s['test_map_75']:.3f} | "
             f"{s['best_val_map']:.3f} ({s['best_epoch']}) |", "",
             "| model | epochs | train min | test mIoU | test pixel acc. | best val mIoU (epoch) |",
             "|---|---|---|---|---|---|"]
    for name, r in runs.items():
        if name.startswith("deeplab"):
            s = r["summary"]
            lines.append(f"| DeepLabV3 ResNet-18, output stride {name.rsplit('os', 1)[1]} | {s['epochs']} | "
                         f"{s['wall_time_s'] / 60:.1f} | {s['test_miou']:.3f} | {s['test_pixel_acc']:.3f} | "
                         f"{s['best_val_miou']:.3f} ({s['best_epoch']}) |")
    lines += ["", "![validation curves and a test tile](nuclei.png)", "",
              "Test numbers are best.pt (selected on the 2 validation tiles: box AP for the detector, mIoU for the "
              "segmenters) evaluated once on the 4 test tiles. "
              "With 2 validation and 4 test tiles, differences of a few points are within the noise of one run.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
