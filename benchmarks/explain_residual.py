"""The residual story, seen: Grad-CAM of a plain net and its residual twin trained on the same data with
the same budget, for the same test images, with the faithfulness of each net's maps.

ResNet-20 and Plain-20 (He et al. 2015, §4.2) train on CIFAR-10 with one recipe and one budget, one run
each per seed; then, for a fixed seeded subset of test images:
- where each net looks: the share of its Grad-CAM mass in the central half of the image (CIFAR-10 has no
  boxes; its objects are mostly centred, so this is a proxy for "on the object" -- a uniform map gives 25 %);
- how much the two nets' maps agree (Spearman rank correlation per image);
- how faithful each net's maps are to that net: deletion / insertion AUC and ROAD against its own random
  and centre-bias maps.

- data-label randomisation (Adebayo et al. 2018): every method's maps of ResNet-20 against those of a
  ResNet-20 trained with the same recipe and budget on shuffled labels (`--shuffle-labels`), for the same
  images and classes.

Rules, fixed before the first run:
- R1: the nets differ in where they look when the 95 % bootstrap interval of the paired difference in
  central mass (residual - plain) excludes 0; otherwise "no difference shown".
- R2: per faithfulness metric, each net's Grad-CAM "beats its baselines" as `compare` decides.
- R3: a method passes the data-randomisation test when the mean rank correlation of its maps with the
  shuffled-label net's is below SURVIVES (0.5), the threshold of the model-randomisation flag.

Writes docs/analysis/explain/ (report.md, provenance.json, results.json, explain_residual.png) and
refreshes docs/analysis/README.md, the index of the analysis reports.

    python benchmarks/explain_residual.py --data ../shared/data/cifar10-jpeg.tar.gz --epochs 10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, header_md  # noqa: E402

from resnetlab.explain import METHODS, explain, label_randomization, load_split_inputs, rank_correlation  # noqa: E402
from resnetlab.explain.faithfulness import METRICS, baseline_maps, bootstrap_mean, compare, score_maps  # noqa: E402
from resnetlab.explain.render import display_image, overlay  # noqa: E402
from resnetlab.explain.report import beats_all  # noqa: E402
from resnetlab.explain.sanity import SURVIVES  # noqa: E402
from resnetlab.eval import load_trained  # noqa: E402
from resnetlab.train.engine import fit  # noqa: E402
from resnetlab.utils.fileio import atomic_write_text  # noqa: E402
from resnetlab.utils.plot import plt, save_figure  # noqa: E402

NETS = ("resnet20", "plain20")
RECIPE = dict(batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="onecycle",
              preset="cifar", crop_pad=4, amp="auto", log_every_s=60.0)


def central_mass(maps: torch.Tensor) -> torch.Tensor:
    """Per map, the share of its mass inside the central half (in each direction) of the image."""
    h, w = maps.shape[-2:]
    inner = maps[:, h // 4: h - h // 4, w // 4: w - w // 4].sum((1, 2))
    return inner / maps.sum((1, 2)).clamp(min=1e-12)


def side_by_side(x, exs: dict, pre, path: Path, n: int = 8) -> None:
    fig, axes = plt.subplots(n, 3, figsize=(4.8, 1.7 * n))
    for i in range(n):
        img = display_image(x[i], pre.mean, pre.std)
        axes[i, 0].imshow(img, interpolation="nearest")
        for j, net in enumerate(NETS, 1):
            ex = exs[net]
            p = int(ex.probs[i].argmax())
            axes[i, j].imshow(overlay(img, ex.maps[i].numpy()), interpolation="nearest")
            axes[i, j].set_title(f"{net}: {ex.classes[p]} {100 * float(ex.probs[i, p]):.0f}%", fontsize=7)
    axes[0, 0].set_title("input", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("Grad-CAM of the predicted class, same test images", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--out", default=str(ROOT / "docs" / "analysis" / "explain"))
    args = p.parse_args(argv)
    env = environment()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {net: fit(model=net, data=args.data, epochs=args.epochs, seed=args.seed, out=f"{tmp}/{net}",
                         **RECIPE) for net in NETS}
        shuffled_run = fit(model="resnet20", data=args.data, epochs=args.epochs, seed=args.seed, shuffle_labels=True,
                           out=f"{tmp}/shuffled", **RECIPE)
        trained = {net: load_trained(r.run_dir) for net, r in runs.items()}
        shuffled = load_trained(shuffled_run.run_dir).model
        x, y, _ = load_split_inputs(trained["resnet20"], args.data, "test", args.limit)
        exs = {net: explain(t, x, method="gradcam") for net, t in trained.items()}
    r20 = trained["resnet20"].model.eval()
    labels = [label_randomization(r20, shuffled, exs["resnet20"].layer, x, exs["resnet20"].targets, m)
              for m in METHODS]
    for item in labels:
        item["passes"] = item["mean_rho"] is None or item["mean_rho"] < SURVIVES
        item.pop("rho")
    centre = {net: central_mass(ex.maps) for net, ex in exs.items()}
    diff = bootstrap_mean((centre["resnet20"] - centre["plain20"]).numpy(), n=args.bootstrap, seed=args.seed)
    r1 = ("residual looks more centrally" if diff[1] > 0 else "plain looks more centrally" if diff[2] < 0
          else "no difference shown")
    agree = rank_correlation(exs["resnet20"].raw, exs["plain20"].raw)
    faith = {}
    for net, t in trained.items():
        targets = exs[net].targets
        scores = {"gradcam": score_maps(t.model, x, exs[net].maps, targets, seed=args.seed)}
        for kind in ("random", "centre"):
            base = baseline_maps(kind, len(x), tuple(x.shape[-2:]), seed=args.seed,
                                 grid=tuple(exs[net].raw.shape[-2:]))
            scores[kind] = score_maps(t.model, x, base, targets, seed=args.seed)
        faith[net] = compare({k: {m: v[m] for m in METRICS} for k, v in scores.items()}, n=args.bootstrap,
                             seed=args.seed)
    side_by_side(x, exs, trained["resnet20"].preprocess, out / "explain_residual.png")
    results = {
        "env": env, "epochs": args.epochs, "seed": args.seed, "images": len(x),
        "test_top1": {net: runs[net].summary["test_top1"] for net in NETS},
        "accuracy_on_subset": {net: float((exs[net].probs.argmax(1) == y).float().mean()) for net in NETS},
        "central_mass": {net: bootstrap_mean(c.numpy(), n=args.bootstrap, seed=args.seed) for net, c in centre.items()},
        "central_mass_difference": diff, "R1": r1,
        "agreement_rho": bootstrap_mean(agree[~agree.isnan()].numpy(), n=args.bootstrap, seed=args.seed),
        "faithfulness": faith, "layer": {net: ex.layer for net, ex in exs.items()},
        "shuffled": {"test_top1": shuffled_run.summary["test_top1"],
                     "train_acc": shuffled_run.history[-1].get("train_acc")},
        "label_randomization": labels, "SURVIVES": SURVIVES,
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, default=str) + "\n")
    atomic_write_text(out / "provenance.json", json.dumps({k: env.get(k) for k in
                                                           ("command", "date", "cpu", "gpu", "git", "dirty")}) + "\n")
    atomic_write_text(out / "report.md", report(env, results))
    if out.parent.name == "analysis":  # docs/analysis: its README indexes every report, this one included
        from analysis_docs import write_readme

        write_readme(out.parent)
    return 0


def report(env: dict, r: dict) -> str:
    f = lambda t: f"{t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}]"  # noqa: E731
    rows = ["| net | test top-1 | central mass of Grad-CAM | " + " | ".join(METRICS) + " |",
            "|---|---|---|" + "---|" * len(METRICS)]
    for net in NETS:
        cells = []
        for m in METRICS:
            c = r["faithfulness"][net]["gradcam"][m]
            wins = beats_all(c)
            cells.append(f"{'**' if wins else ''}{c['mean']:.3f}{'**' if wins else ''}")
        rows.append(f"| {net} | {100 * r['test_top1'][net]:.2f} % | {f(r['central_mass'][net])} | "
                    + " | ".join(cells) + " |")
    beats = {net: [m for m in METRICS if beats_all(r["faithfulness"][net]["gradcam"][m])] for net in NETS}
    rho = lambda v: "undefined" if v is None else f"{v:.3f}"  # noqa: E731
    labels = ["| method | mean rank correlation with the shuffled-label net's maps | its flat maps (count as 0) | R3 |",
              "|---|---|---|---|"]
    labels += [f"| {item['method']} | {rho(item['mean_rho'])} | {item['flat_maps']} | "
               f"{'passes' if item['passes'] else '**fails**'} |" for item in r["label_randomization"]]
    sh = r["shuffled"]
    acc = "" if sh["train_acc"] is None else f", {100 * sh['train_acc']:.1f} % on its shuffled training labels"
    return "\n".join([
        "# Grad-CAM of a plain net and its residual twin", "", header_md(env), "",
        f"ResNet-20 and Plain-20, CIFAR-10, {r['epochs']} epochs each (one-cycle SGD, seed {r['seed']}); "
        f"Grad-CAM of the predicted class at {r['layer']['resnet20']} for {r['images']} test images (a fixed "
        "seeded subset). "
        "Central mass: the share of a map inside the central half of the image (a uniform map: 0.25). "
        "Bold: beats both the net's own random and centre-bias maps (95 % intervals of paired differences).",
        "", *rows, "", "![side by side](explain_residual.png)", "",
        f"- Agreement between the two nets' maps (Spearman per image): {f(r['agreement_rho'])}.",
        f"- Central mass, residual - plain: {f(r['central_mass_difference'])}.", "",
        "## Data-label randomisation", "",
        f"ResNet-20 trained on shuffled labels with the same recipe and budget: test top-1 "
        f"{100 * sh['test_top1']:.2f} %{acc}. Each method's maps of ResNet-20 for the same images and classes, "
        f"compared with the shuffled-label net's (R3: passes when the mean is below {r['SURVIVES']}):", "",
        *labels, "",
        "## Conclusion", "",
        f"R1 (where they look): **{r['R1']}** (residual - plain central mass {f(r['central_mass_difference'])}). "
        f"R2 (faithful to their own net): ResNet-20's maps beat both baselines on "
        f"{', '.join(beats['resnet20']) or 'no metric'}; Plain-20's on {', '.join(beats['plain20']) or 'no metric'}. "
        f"R3 (data randomisation): {', '.join(i['method'] for i in r['label_randomization'] if i['passes']) or 'none'}"
        f" pass; {', '.join(i['method'] for i in r['label_randomization'] if not i['passes']) or 'none'} fail. "
        f"One seed and a {r['epochs']}-epoch budget: a statement about these two runs, not about every pair.", ""])


if __name__ == "__main__":
    sys.exit(main())
