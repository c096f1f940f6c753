"""The article's claims as experiments: each trains through the same engine as ``resnetlab train``.

An experiment builds :class:`~resnetlab.train.config.TrainConfig` objects from one base recipe
(so a change of recipe reaches both), runs :class:`~resnetlab.train.engine.Trainer`, and writes
a run folder: ``config.json``, raw CSV/JSON, PNG plots and ``report.md``.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..train.config import TrainConfig, to_dict
from ..train.engine import Trainer
from ..utils.plot import line_plot
from .gradflow import measure, ratios
from .report import setup_facts, write_csv, write_json, write_report

__all__ = ["GRADFLOW_BASE", "DEGRADATION_PRESETS", "EXPERIMENTS", "run_gradflow", "run_degradation", "run_experiment",
           "random_npz", "cifar_net"]

log = logging.getLogger("resnetlab")

# A short, paper-like recipe (He et al. 2015 §4.2): SGD 0.1, momentum 0.9, wd 1e-4, batch 128.
GRADFLOW_BASE = TrainConfig(epochs=1, batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4,
                            no_wd_norm_bias=False, schedule="constant", eval_batch_size=128, limit_eval_batches=1,
                            log_every_s=30.0, eval_split="test", amp="none")


def random_npz(path: Path, n: int = 2048, size: int = 32, classes: int = 10, seed: int = 0) -> Path:
    """Uniform-noise images with random labels, as a MedMNIST-style .npz (only on explicit request)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", n), ("val", n // 4), ("test", n // 4)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, classes, (count, 1))
    np.savez(path, **arrays)
    return path


def _pairs(models: Sequence[str]) -> list[tuple[str, str]]:
    """(plainN, resnetN) pairs among the models, for the conclusion."""
    return [(m, "resnet" + m[5:]) for m in models if m.startswith("plain") and "resnet" + m[5:] in models]


def run_gradflow(models: Sequence[str], *, out: str | Path = "runs/gradflow", data: str | None = None,
                 random_data: bool = False, steps: int = 50, base: TrainConfig = GRADFLOW_BASE,
                 seed: int = 0, threads: int | None = None) -> dict[str, Any]:
    """Gradient norms of every weight layer at initialisation and after ``steps`` training steps."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if random_data:
        data = str(random_npz(out / "random-data.npz", seed=seed))
    results: dict[str, Any] = {}
    for name in models:
        cfg = base.replace(model=name, data=data, limit_train_batches=steps, out=str(out / "train" / name),
                           seed=seed, threads=threads or base.threads)
        trainer = Trainer(cfg)
        x, y, _ = next(iter(trainer.eval_batches.epoch(0)))  # one fixed batch, eval transform
        x, y = x.to(trainer.device), y.to(trainer.device)
        at_init = measure(copy.deepcopy(trainer.model), x, y)
        trainer.fit()
        trained = measure(copy.deepcopy(trainer.model), x, y)
        results[name] = {time: {"layers": [r.row() for r in layers], "blocks": [b.row() for b in blocks],
                                "ratios": ratios(layers)}
                         for time, (layers, blocks) in (("init", at_init), ("trained", trained))}
        data = data or trainer.cfg.data  # resolved once, the same data for every model
    config = {"models": list(models), "steps": steps, "data": "random noise" if random_data else data,
              "seed": seed, "recipe": to_dict(base), "measure_batch": int(len(y))}
    write_json(out / "config.json", config)
    _write_gradflow(out, results, config)
    return results


def _write_gradflow(out: Path, results: dict, config: dict) -> None:
    rows, block_rows, series, block_series = [], [], {}, {}
    for model, times in results.items():
        for time, r in times.items():
            rows += [{"model": model, "time": time, **layer} for layer in r["layers"]]
            block_rows += [{"model": model, "time": time, "block_index": i + 1, **b} for i, b in enumerate(r["blocks"])]
            main = [layer for layer in r["layers"] if layer["kind"] != "projection"]
            label = f"{model} {'init' if time == 'init' else 'after ' + str(config['steps']) + ' steps'}"
            series[label] = ([m["index"] for m in main], [m["grad_norm"] for m in main])
            res = [b for b in r["blocks"] if b["grad_via_shortcut"] is not None]
            if res:
                block_series[label] = (list(range(1, len(res) + 1)),
                                       [b["grad_via_shortcut"] / max(b["grad_via_branch"], 1e-30) for b in res])
    write_csv(out / "gradflow.csv", rows)
    write_csv(out / "blocks.csv", block_rows)
    summary = {m: {t: r["ratios"] for t, r in times.items()} for m, times in results.items()}
    write_json(out / "gradflow.json", {"config": config, "summary": summary, "results": results})
    dashed = [k for k in series if k.endswith(" init")]
    line_plot(series, out / "gradflow.png", title="gradient norm of each weight layer, input side first",
              xlabel="weight layer (depth)", ylabel="||dL/dW||", log_y=True, dashed=dashed)
    plots = ["gradflow.png"]
    if block_series:
        line_plot(block_series, out / "blocks.png", title="gradient reaching each block's input: shortcut / branch",
                  xlabel="residual block", ylabel="shortcut / branch", log_y=True,
                  dashed=[k for k in block_series if k.endswith(" init")])
        plots.append("blocks.png")
    _gradflow_report(out, summary, config, plots)


def _gradflow_report(out: Path, summary: dict, config: dict, plots: list[str]) -> None:
    table = ["| model | time | layers | first/last | min/max |", "|---|---|---|---|---|"]
    for model, times in summary.items():
        for time, r in times.items():
            table.append(f"| {model} | {time} | {r['layers']} | {r['first_over_last']:.3g} | "
                         f"{r['min_over_max']:.3g} |")
    sentences = []
    for plain, res in _pairs(list(summary)):
        for time in ("init", "trained"):
            p, r = summary[plain][time]["first_over_last"], summary[res][time]["first_over_last"]
            verdict = ("smaller" if p < r / 2 else "larger" if p > 2 * r else "about the same (within 2x)")
            sentences.append(f"{'At initialisation' if time == 'init' else 'After ' + str(config['steps']) + ' steps'}"
                             f", {plain}'s first/last gradient ratio is {p:.3g} against {r:.3g} for {res}: "
                             f"{verdict} for the plain net.")
    vanish = [m for m, times in summary.items() if times["init"]["min_over_max"] < 1e-2]
    sentences.append("No network shows a layer whose gradient is below 1 % of the largest at initialisation: "
                     "with batch norm, classic vanishing does not appear here." if not vanish else
                     f"Layers with under 1 % of the largest gradient at initialisation: {', '.join(vanish)}.")
    write_report(out, title="Gradient flow in plain and residual networks",
                 question="Do shortcut connections change how gradient reaches the early layers, at "
                          "initialisation and after a little training?",
                 setup=setup_facts(models=", ".join(summary), data=config["data"], steps=config["steps"],
                                   seed=config["seed"], measure_batch=config["measure_batch"]),
                 sections=["\n".join(table), "first/last: gradient norm of the first weight layer over the last "
                           "(the classifier); min/max over all main-path layers. Raw data: gradflow.csv, "
                           "blocks.csv, gradflow.json."],
                 conclusion=" ".join(sentences), plots=plots)


# --- the degradation experiment (He et al. 2015, Fig. 1 and Fig. 6) ------------------------------

DEGRADATION_PRESETS = {
    # CPU budget: the paper's optimiser with a cosine decay over however many epochs fit, bf16, and a
    # half-epoch linear warm-up for every net (He et al. warm up their deepest net the same way, §4.2).
    "cpu": TrainConfig(batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4, no_wd_norm_bias=False,
                       schedule="cosine", warmup_epochs=0.5, eval_split="test", eval_batch_size=500, amp="bf16",
                       channels_last=True, log_every_s=60.0),
    # The paper's setting (§4.2): 64k iterations, /10 at 32k and 48k, its own initialisation (no zero-init)
    # — hours on a CPU, minutes on a GPU.
    "paper": TrainConfig(batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4, no_wd_norm_bias=False,
                         schedule="multistep", milestones=(32000, 48000), milestone_unit="step", max_steps=64000,
                         epochs=164, eval_split="test", eval_batch_size=500, log_every_s=60.0),
}


def cifar_net(kind: str, depth: int) -> tuple[str, dict]:
    """The §4.2 network of ``depth`` = 6n+2 layers: a registered name, or resnet20 with n blocks."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110...), got {depth!r}")
    n = (depth - 2) // 6
    from ..models import list_models

    name = f"{kind}{depth}"
    return (name, {}) if name in list_models() else (f"{kind}20", {"layers": (n, n, n)})


def _probe_speed(base: TrainConfig, model: str, kwargs: dict, out: Path) -> tuple[float, int, int]:
    """Training img/s of one net over 20 steps (the first, slow one included), and the split sizes."""
    cfg = base.replace(model=model, model_kwargs=kwargs, epochs=1, limit_train_batches=20, limit_eval_batches=1,
                       out=str(out))
    trainer = Trainer(cfg)
    trainer.fit()
    return trainer.state["history"][-1]["img_per_s"], len(trainer.data.train), len(trainer.data.val)


def plan_epochs(depths: Sequence[int], budget_minutes: float, base: TrainConfig, out: Path) -> tuple[int, dict]:
    """Epochs that let every plain and residual run finish within the budget (probed speeds)."""
    speeds, seconds = {}, 0.0
    for depth in depths:
        name, kwargs = cifar_net("resnet", depth)
        speed, n_train, n_eval = _probe_speed(base, name, kwargs, out / "probe" / f"resnet{depth}")
        speeds[depth] = speed
        seconds += 2 * (n_train / speed + n_eval / (3 * speed))  # plain and residual twin, eval ~3x faster
    epochs = int(budget_minutes * 60 * 0.92 // seconds)  # keep ~8 % for start-up and the probes
    return epochs, {"img_per_s": speeds, "epoch_seconds_all_runs": seconds}


# Presets whose residual nets start each branch at zero (Goyal et al. 2017; torchvision's zero_init_residual):
# in a few epochs a deep residual net then starts as a shallow one instead of spending its first epoch
# taming 27 branches' worth of variance; a plain net has no branch to zero, so its init is unchanged.
ZERO_INIT_PRESETS = frozenset({"cpu"})


def run_degradation(depths: Sequence[int], *, out: str | Path = "runs/degradation", data: str | None = None,
                    epochs: int | None = None, budget_minutes: float | None = 28.0, preset: str = "cpu",
                    seed: int = 0, threads: int | None = None, train_batches: int | None = None,
                    zero_init_residual: bool | None = None, **overrides: Any) -> dict[str, Any]:
    """Train the plain and residual twin of each depth with one recipe and budget; errors per epoch.

    ``overrides`` are TrainConfig keys applied to the preset (e.g. batch_size=64, lr=0.05).
    ``zero_init_residual`` (default: on for the "cpu" preset only) zero-initialises the last BN of
    every residual branch of the residual nets.
    """
    if zero_init_residual is None:
        zero_init_residual = preset in ZERO_INIT_PRESETS
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if preset not in DEGRADATION_PRESETS:
        raise ValueError(f"preset must be one of {sorted(DEGRADATION_PRESETS)}, got {preset!r}")
    base = DEGRADATION_PRESETS[preset].replace(data=data, seed=seed, threads=threads,
                                               limit_train_batches=train_batches, **overrides)
    plan: dict[str, Any] = {}
    if epochs is None and preset == "cpu":
        epochs, plan = plan_epochs(depths, budget_minutes or 28.0, base, out)
        if epochs < 1:
            raise ValueError(f"a budget of {budget_minutes} min does not fit one epoch of all {2 * len(depths)} "
                             f"runs here ({plan['epoch_seconds_all_runs'] / 60:.1f} min per epoch in all); raise "
                             "--budget-minutes or pass --train-batches to train on part of each epoch")
    base = base.replace(epochs=epochs or base.epochs)
    curves: dict[str, list[dict]] = {}
    for depth in depths:
        for kind in ("plain", "resnet"):
            name, kwargs = cifar_net(kind, depth)
            if kind == "resnet" and zero_init_residual:
                kwargs = {**kwargs, "zero_init_residual": True}
            trainer = Trainer(base.replace(model=name, model_kwargs=kwargs, out=str(out / "train" / f"{kind}{depth}")))
            trainer.fit()
            curves[f"{kind}{depth}"] = [{"epoch": r["epoch"], "train_error": 1 - r["train_acc"],
                                         "test_error": 1 - r["val_top1"] if "val_top1" in r else None,
                                         "wall_time_s": r["wall_time_s"]} for r in trainer.state["history"]]
    config = {"depths": list(depths), "epochs": base.epochs, "preset": preset, "budget_minutes": budget_minutes,
              "zero_init_residual": zero_init_residual,
              "plan": plan, "seed": seed, "recipe": to_dict(base)}
    write_json(out / "config.json", config)
    _write_degradation(out, curves, config)
    return curves


def degradation_verdicts(curves: dict[str, list[dict]], depths: Sequence[int]) -> list[tuple[str, bool]]:
    """The paper's two observations, checked on final training error (their Fig. 1 / Fig. 6)."""
    lo, hi = min(depths), max(depths)
    final = {k: v[-1]["train_error"] for k, v in curves.items()}
    return [(f"plain{hi} trains worse than plain{lo} (final training error {100 * final[f'plain{hi}']:.1f} % "
             f"vs {100 * final[f'plain{lo}']:.1f} %)", final[f"plain{hi}"] > final[f"plain{lo}"]),
            (f"resnet{hi} trains no worse than resnet{lo} ({100 * final[f'resnet{hi}']:.1f} % vs "
             f"{100 * final[f'resnet{lo}']:.1f} %, 0.5 point tolerance)",
             final[f"resnet{hi}"] <= final[f"resnet{lo}"] + 0.005)]


def _write_degradation(out: Path, curves: dict[str, list[dict]], config: dict) -> None:
    rows = [{"model": m, "depth": int(re.sub(r"\D", "", m)), "kind": m.rstrip("0123456789"), **r}
            for m, rs in curves.items() for r in rs]
    write_csv(out / "degradation.csv", rows)
    write_json(out / "degradation.json", {"config": config, "curves": curves})
    import matplotlib.pyplot as plt

    from ..utils.plot import line_figure, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True, layout="constrained")
    for ax, (kind, title) in zip(axes, (("plain", "plain networks"), ("resnet", "residual networks"))):
        series, groups = {}, {}
        for m, rs in curves.items():
            if m.startswith(kind):
                series[f"{m} test"] = ([r["epoch"] for r in rs], [100 * r["test_error"] for r in rs])
                series[f"{m} train"] = ([r["epoch"] for r in rs], [100 * r["train_error"] for r in rs])
                groups[f"{m} test"] = groups[f"{m} train"] = m
        line_figure(series, ax=ax, title=f"CIFAR-10, {title}: error (dashed: training)", xlabel="epoch",
                    ylabel="error (%)", dashed=[k for k in series if k.endswith(" train")], groups=groups)
    save_figure(fig, out / "degradation.png")
    depths = config["depths"]
    table = ["| depth | plain train err | plain test err | residual train err | residual test err |",
             "|---|---|---|---|---|"]
    for d in depths:
        p, r = curves[f"plain{d}"][-1], curves[f"resnet{d}"][-1]
        table.append(f"| {d} | {100 * p['train_error']:.2f} % | {100 * p['test_error']:.2f} % | "
                     f"{100 * r['train_error']:.2f} % | {100 * r['test_error']:.2f} % |")
    checks = degradation_verdicts(curves, depths)
    shown = all(ok for _, ok in checks)
    lines = [f"- {'yes' if ok else 'NO'}: {text}" for text, ok in checks]
    conclusion = ("Both of the paper's observations hold in this run: the deeper plain net trains worse, the "
                  "deeper residual net does not." if shown else
                  f"This run does not show all of the paper's observations with {config['epochs']} epoch(s) per "
                  "net: the budget may be too small to show it (the paper trains 164 epochs; "
                  "`resnetlab degradation --preset paper` reproduces that setting on a GPU), so no claim is made.")
    write_report(out, title="The degradation experiment (He et al. 2015, Fig. 1 and Fig. 6)",
                 question="Does a deeper plain network train worse than a shallower one, and does the residual "
                          "twin of the deeper network avoid that?",
                 setup=setup_facts(depths=", ".join(map(str, depths)), epochs=config["epochs"],
                                   preset=config["preset"], budget_minutes=config["budget_minutes"],
                                   seed=config["seed"], recipe=_recipe_line(config["recipe"]),
                                   residual_init=("last BN of each residual branch zero-initialised (Goyal et al. "
                                                  "2017), a deviation from the 2015 paper; plain nets unchanged"
                                                  if config.get("zero_init_residual") else "He et al.'s")),
                 sections=["Final errors (training error on augmented batches, as the paper's curves; test error "
                           "on the full test split):", "\n".join(table), "Checks:", "\n".join(lines),
                           "Raw data: degradation.csv, degradation.json; per-run folders under train/."],
                 conclusion=conclusion, plots=["degradation.png"])


def _recipe_line(r: dict) -> str:
    return (f"SGD lr {r['lr']} momentum {r['momentum']}, wd {r['weight_decay']}, batch {r['batch_size']}, "
            f"{r['schedule']} schedule, warm-up {r['warmup_epochs']} epoch(s), amp {r['amp']}")


# --- smaller claims: shortcut options, batch norm ---------------------------------------------------

def _train_runs(specs: dict[str, tuple[str, dict]], base: TrainConfig, out: Path) -> dict[str, dict]:
    """Train each (model, options) with the same recipe; a diverged run is a result, not a crash."""
    from ..models.stats import count_params
    from ..train.engine import TrainingDiverged

    results = {}
    for label, (model, kwargs) in specs.items():
        trainer = Trainer(base.replace(model=model, model_kwargs=kwargs, out=str(out / "train" / label)))
        diverged = None
        try:
            trainer.fit()
        except TrainingDiverged as e:
            diverged = str(e).split(";")[0]
        steps_file = out / "train" / label / "steps.jsonl"
        steps = [json.loads(r) for r in steps_file.read_text().splitlines()] if steps_file.exists() else []
        results[label] = {"model": model, "options": kwargs, "params": count_params(trainer.model),
                          "history": trainer.state["history"], "steps": steps, "diverged": diverged}
    return results


def _final(r: dict, key: str) -> str:
    rows = [h for h in r["history"] if key in h]
    return f"{100 * rows[-1][key]:.2f} %" if rows else "-"


def _shortcuts(out: Path, base: TrainConfig, depth: int) -> tuple[dict, list[str], str, list[str]]:
    name, kwargs = cifar_net("resnet", depth)
    specs = {f"option {o}": (name, {**kwargs, "shortcut": o}) for o in ("A", "B", "C")}
    specs["plain (no shortcut)"] = (name, {**kwargs, "shortcut": None})
    res = _train_runs(specs, base, out)
    table = ["| shortcut | parameters | final train acc | final test top-1 |", "|---|---|---|---|"]
    table += [f"| {k} | {r['params']:,} | {_final(r, 'train_acc')} | {_final(r, 'val_top1')} |" for k, r in res.items()]
    best = max(res, key=lambda k: next((h["val_top1"] for h in reversed(res[k]["history"]) if "val_top1" in h), 0))
    concl = (f"With {base.epochs} epoch(s) of the same recipe, the best test top-1 here is {best}'s. He et al. "
             "(Table 3, ImageNet) report A < B < C by small margins and conclude projections are not essential; "
             "differences within about half a point in a single short run are within seed noise.")
    return res, table, concl, []


def _batchnorm(out: Path, base: TrainConfig, depth: int) -> tuple[dict, list[str], str, list[str]]:
    specs = {}
    for kind in ("resnet", "plain"):
        name, kwargs = cifar_net(kind, depth)
        specs[f"{kind}{depth} + BN"] = (name, kwargs)
        specs[f"{kind}{depth}, no BN"] = (name, {**kwargs, "norm_layer": "none"})
    res = _train_runs(specs, base.replace(log_loss_every=1), out)
    series = {k: ([s["step"] for s in r["steps"]], [s["loss"] for s in r["steps"]])
              for k, r in res.items() if r["steps"]}
    plots = []
    if series:
        line_plot(series, out / "loss.png", title="training loss, first epochs", xlabel="step", ylabel="loss",
                  log_y=True, dashed=[k for k in series if "no BN" in k])
        plots.append("loss.png")
    table = ["| run | final train loss | final test top-1 | diverged |", "|---|---|---|---|"]
    for k, r in res.items():
        loss = f"{r['history'][-1]['train_loss']:.3f}" if r["history"] else "-"
        table.append(f"| {k} | {loss} | {_final(r, 'val_top1')} | {r['diverged'] or 'no'} |")
    losses = {k: r["history"][-1]["train_loss"] if r["history"] and not r["diverged"] else float("inf")
              for k, r in res.items()}
    order = sorted(losses, key=losses.get)
    concl = (f"Lowest final training loss: {order[0]}; highest: {order[-1]}. The article claims shortcuts and batch "
             "norm make training faster; read the curves for where this run agrees, and note that a network "
             "without normalisation may need a smaller learning rate than the shared recipe's.")
    return res, table, concl, plots


EXPERIMENTS = {"shortcuts": ("Shortcut options A, B and C (He et al. 2015, Table 3)",
                             "Do projection shortcuts (B: where the shape changes, C: everywhere) beat the "
                             "parameter-free option A, and all of them the plain net, on the same budget?", _shortcuts),
               "batchnorm": ("With and without batch norm, with and without shortcuts",
                             "Do shortcuts and batch norm make the first epochs of training faster?", _batchnorm)}


def run_experiment(name: str, *, out: str | Path | None = None, data: str | None = None, epochs: int = 3,
                   depth: int = 20, seed: int = 0, threads: int | None = None,
                   train_batches: int | None = None, **overrides: Any) -> dict:
    """Run one of :data:`EXPERIMENTS` through the training engine and write its report.

    ``overrides`` are TrainConfig keys applied to the shared recipe (e.g. batch_size=64).
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; experiments: {', '.join(EXPERIMENTS)}")
    title, question, fn = EXPERIMENTS[name]
    out = Path(out or f"runs/{name}")
    out.mkdir(parents=True, exist_ok=True)
    base = DEGRADATION_PRESETS["cpu"].replace(data=data, epochs=epochs, seed=seed, threads=threads,
                                              limit_train_batches=train_batches, **overrides)
    results, table, conclusion, plots = fn(out, base, depth)
    config = {"experiment": name, "depth": depth, "epochs": epochs, "seed": seed, "recipe": to_dict(base)}
    write_json(out / "config.json", config)
    write_json(out / f"{name}.json", {"config": config, "results": results})
    write_csv(out / f"{name}.csv", [{"run": k, "epoch": h["epoch"], **{m: h.get(m) for m in
                                    ("train_loss", "train_acc", "val_loss", "val_top1")}}
                                    for k, r in results.items() for h in r["history"]])
    write_report(out, title=title, question=question,
                 setup=setup_facts(depth=depth, epochs=epochs, seed=seed, recipe="SGD 0.1, momentum 0.9, wd 1e-4, "
                                   "batch 128, cosine, bf16"),
                 sections=["\n".join(table), f"Raw data: {name}.csv, {name}.json; per-run folders under train/."],
                 conclusion=conclusion, plots=plots)
    return results
