"""The article's claims as experiments: each trains through the same engine as ``resnetlab train``.

An experiment builds :class:`~resnetlab.train.config.TrainConfig` objects from one base recipe
(so a change of recipe reaches every run), trains each through :class:`~resnetlab.train.engine.Trainer`
and reads what it needs from the :class:`~resnetlab.train.engine.TrainResult` that ``fit()``
returns. It owns its run folder: ``config.json`` (what was asked), ``provenance.json`` (git
commit and dirtiness, command, versions), raw CSV/JSON, PNG plots and ``report.md``; each
training run lives under ``train/`` and is started afresh when the experiment is run again.

Conclusions are computed from the numbers under the rules of :mod:`resnetlab.analysis.verdicts`
and trained with at least two seeds, so that every difference is read against the seed-to-seed
spread; where the rules cannot decide, the report says so.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..train.config import TrainConfig, to_dict
from ..train.engine import Trainer, TrainingDiverged
from ..utils.fileio import atomic_open
from .gradflow import measure, ratios
from .report import provenance, write_csv, write_json, write_provenance, write_report
from .verdicts import COMPARE_RULE, DEGRADATION_RULES, compare, degradation_verdict, seed_stats

__all__ = [
    "DEGRADATION_PRESETS",
    "EXPERIMENTS",
    "GRADFLOW_BASE",
    "cifar_net",
    "plan_epochs",
    "random_npz",
    "resolve_seeds",
    "run_degradation",
    "run_experiment",
    "run_gradflow",
]

log = logging.getLogger("resnetlab")

# A short, paper-like recipe (He et al. 2015 §4.2): SGD 0.1, momentum 0.9, wd 1e-4, batch 128. Precision and
# the evaluated split are the engine's defaults; the report records what they resolved to.
GRADFLOW_BASE = TrainConfig(epochs=1, batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4,
                            no_wd_norm_bias=False, schedule="constant", eval_batch_size=128, limit_eval_batches=1,
                            log_every_s=30.0)

DEFAULT_SEEDS = (0, 1)


def random_npz(path: Path, n: int = 2048, size: int = 32, classes: int = 10, seed: int = 0) -> Path:
    """Uniform-noise images with random labels, as a MedMNIST-style .npz (only on explicit request)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", n), ("val", n // 4), ("test", n // 4)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, classes, (count, 1))
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def resolve_seeds(seeds: Sequence[int] | None = None, seed: int | None = None) -> tuple[int, ...]:
    """``seeds`` if given; else two consecutive seeds from ``seed`` (the CLI's --seed); else (0, 1)."""
    if seeds is None:
        seeds = DEFAULT_SEEDS if seed is None else (seed, seed + 1)
    seeds = tuple(int(s) for s in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {list(seeds)}")
    return seeds


def _pairs(models: Sequence[str]) -> list[tuple[str, str]]:
    """(plainN, resnetN) pairs among the models, for the conclusion."""
    return [(m, "resnet" + m[5:]) for m in models if m.startswith("plain") and "resnet" + m[5:] in models]


# --- one training run, owned by its experiment ------------------------------------------------------

@dataclass
class _Run:
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    diverged: str | None
    params: int
    config: dict[str, Any]  # the resolved config the engine trained with
    num_train: int = 0
    num_eval: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)
    model: Any = field(default=None, repr=False)  # the trained model (not written anywhere)

    def row(self) -> dict[str, Any]:
        return {"history": self.history, "summary": self.summary, "diverged": self.diverged, "steps": self.steps}


def _fresh_trainer(cfg: TrainConfig) -> Trainer:
    """A Trainer that replaces any earlier run in ``cfg.out``: the experiment owns that folder, and a rerun
    must not append to the old run's metrics (which would double its curves)."""
    return Trainer(cfg, overwrite=True)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(r) for r in path.read_text().splitlines() if r.strip()] if path.is_file() else []


def _train(cfg: TrainConfig, trainer: Trainer | None = None) -> _Run:
    """Train ``cfg`` to the end; a diverged run is a result (its epochs so far), not a crash."""
    from ..models.stats import count_params

    trainer = trainer or _fresh_trainer(cfg)
    resolved = to_dict(trainer.cfg)
    run_dir = Path(cfg.out)
    try:
        result = trainer.fit()
    except TrainingDiverged as e:
        return _Run(_read_jsonl(run_dir / "metrics.jsonl"), {}, str(e).split(";")[0], count_params(trainer.model),
                    resolved, steps=_read_jsonl(run_dir / "steps.jsonl"))
    # the precision the run actually used ("auto" resolved per the hardware), as its summary records it
    resolved.update({k: result.summary[k] for k in ("amp", "channels_last") if result.summary.get(k) is not None})
    return _Run(list(result.history), dict(result.summary), None, count_params(result.model), resolved,
                result.num_train, result.num_eval, _read_jsonl(run_dir / "steps.jsonl"), result.model)


def _last(history: Sequence[Mapping[str, Any]], key: str) -> float | None:
    return next((r[key] for r in reversed(history) if r.get(key) is not None), None)


# --- plots: one colour per group, mean over seeds with a min-max band --------------------------------

def _band_panel(ax, curves: Mapping[str, Mapping[Any, tuple[Sequence[float], Sequence[float | None]]]], *,
                groups: Mapping[str, str] | None = None, dashed: Sequence[str] = (), title: str = "",
                xlabel: str = "", ylabel: str = "", log_y: bool = False, bands_for: Sequence[str] | None = None,
                integer_x: bool = False) -> None:
    """Per label, the mean over seeds at the x values every seed has, and a shaded min-max band over seeds
    (for the labels in ``bands_for``; default all)."""
    from ..utils.plot import line_figure

    series, bands = {}, {}
    for label, per_seed in curves.items():
        points = [{float(x): float(y) for x, y in zip(xs, ys) if y is not None and math.isfinite(float(y))}
                  for xs, ys in per_seed.values()]
        points = [p for p in points if p]
        if not points:
            continue
        xs = sorted(set.intersection(*(set(p) for p in points)))
        vals = np.array([[p[x] for p in points] for x in xs]).reshape(len(xs), len(points))
        series[label] = (xs, vals.mean(axis=1).tolist())
        if len(points) > 1 and (bands_for is None or label in bands_for):
            bands[label] = (xs, vals.min(axis=1), vals.max(axis=1))
    if not series:  # every run of the panel diverged before its first epoch ended
        ax.set_title(title, fontsize=11)
        ax.text(0.5, 0.5, "no finished epoch to plot\n(every run diverged)", ha="center", va="center",
                transform=ax.transAxes, color="grey")
        return
    line_figure(series, ax=ax, title=title, xlabel=xlabel, ylabel=ylabel, log_y=log_y, dashed=dashed,
                groups={k: v for k, v in (groups or {}).items() if k in series})
    colours = {line.get_label(): line.get_color() for line in ax.get_lines()}
    for label, (xs, lo, hi) in bands.items():
        ax.fill_between(xs, lo, hi, color=colours[label], alpha=0.15, linewidth=0)
    _log_minor_labels(ax)
    if integer_x:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _log_minor_labels(ax) -> None:
    """On a log y axis spanning few decades, label some minor ticks too, as plain numbers (0.5, 2, 5): with
    only the powers of ten labelled, a narrow axis shows one number or none; matplotlib's own minor labels
    read "6x10^-1"."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    from ..utils.plot import plain_number

    if ax.get_yscale() != "log":
        return
    lo, hi = ax.get_ylim()
    span = math.log10(hi / lo) if lo > 0 and hi > lo else 99.0
    if span > 3.5:
        ax.yaxis.set_minor_formatter(NullFormatter())
        return
    keep = {2.0, 5.0} if span > 1.5 else {2.0, 3.0, 5.0} if span > 0.8 else {float(m) for m in range(2, 10)}

    def label(v: float, _pos: object = None) -> str:
        mantissa = round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6) if v > 0 else 0
        return plain_number(v) if mantissa in keep else ""

    ax.yaxis.set_minor_formatter(FuncFormatter(label))


def _figure(panels: int, width: float = 6.5, height: float = 4.8):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(width * panels, height), sharey=True, layout="constrained",
                             squeeze=False)
    return fig, list(axes[0])


# --- gradient flow ------------------------------------------------------------------------------------

def run_gradflow(models: Sequence[str], *, out: str | Path = "runs/gradflow", data: str | None = None,
                 random_data: bool = False, steps: int = 50, base: TrainConfig = GRADFLOW_BASE,
                 seed: int = 0, threads: int | None = None) -> dict[str, Any]:
    """Gradient norms of every weight layer at initialisation and after ``steps`` training steps."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    facts = provenance()
    if random_data:
        data = str(random_npz(out / "random-data.npz", seed=seed))
    results: dict[str, Any] = {}
    recipe: dict[str, Any] = {}
    for name in models:
        cfg = base.replace(model=name, data=data, limit_train_batches=steps, out=str(out / "train" / name),
                           seed=seed, threads=threads or base.threads)
        trainer = _fresh_trainer(cfg)
        x, y, _ = next(iter(trainer.eval_batches.epoch(0)))  # one fixed batch, eval transform
        x, y = x.to(trainer.device), y.to(trainer.device)
        at_init = measure(copy.deepcopy(trainer.model), x, y)
        run = _train(cfg, trainer)
        if run.diverged:
            raise TrainingDiverged(f"{name} diverged within {steps} steps: {run.diverged}")
        trained = measure(copy.deepcopy(run.model), x, y)
        results[name] = {time: {"layers": [r.row() for r in layers], "blocks": [b.row() for b in blocks],
                                "ratios": ratios(layers)}
                         for time, (layers, blocks) in (("init", at_init), ("trained", trained))}
        recipe = recipe or run.config
        data = data or run.config["data"]  # resolved once, the same data for every model
    config = {"models": list(models), "steps": steps, "data": "random noise" if random_data else data,
              "seed": seed, "recipe": recipe, "measure_batch": len(y)}
    write_provenance(out, facts)
    write_json(out / "config.json", config, facts)
    _write_gradflow(out, results, config, facts)
    return results


def _twin_groups(names: Sequence[str]) -> dict[str, str]:
    """plainN and resnetN share a group (a colour); other models get their own."""
    return {n: (n[5:] if n.startswith("plain") else n.removeprefix("resnet")) for n in names}


def _gradflow_plots(out: Path, results: dict, config: dict) -> list[str]:
    from ..utils.plot import line_figure, save_figure

    steps = config["steps"]
    times = (("init", "at initialisation"), ("trained", f"after {steps} training steps"))
    groups = _twin_groups(list(results))
    plain = [m for m in results if m.startswith("plain")]
    fig, axes = _figure(2)
    for ax, (time, when) in zip(axes, times):
        series = {}
        for model, r in results.items():
            main = [layer for layer in r[time]["layers"] if layer["kind"] != "projection"]
            series[model] = ([m["index"] for m in main], [m["grad_norm"] for m in main])
        line_figure(series, ax=ax, title=f"{when}", xlabel="weight layer (input side first)",
                    ylabel="gradient norm ||dL/dW||", log_y=True, dashed=plain, groups=groups)
        _log_minor_labels(ax)
    fig.suptitle("Gradient norm of each weight layer (dashed: plain net; same colour: same depth)")
    save_figure(fig, out / "gradflow.png")
    plots = ["gradflow.png"]
    residual = {m: r for m, r in results.items() if any(b["grad_via_shortcut"] is not None
                                                         for b in r["init"]["blocks"])}
    if residual:
        fig, axes = _figure(2)
        for ax, (time, when) in zip(axes, times):
            series = {}
            for model, r in residual.items():
                res = [b for b in r[time]["blocks"] if b["grad_via_shortcut"] is not None]
                series[model] = (list(range(1, len(res) + 1)),
                                 [b["grad_via_shortcut"] / max(b["grad_via_branch"], 1e-30) for b in res])
            line_figure(series, ax=ax, title=when, xlabel="residual block (input side first)",
                        ylabel="gradient via shortcut / via branch", log_y=True, groups=groups)
            ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
            _log_minor_labels(ax)
        fig.suptitle("Gradient reaching each block's input: through the shortcut over through the branch")
        save_figure(fig, out / "blocks.png")
        plots.append("blocks.png")
    return plots


def _write_gradflow(out: Path, results: dict, config: dict, facts: dict) -> None:
    rows, block_rows = [], []
    for model, times in results.items():
        for time, r in times.items():
            rows += [{"model": model, "time": time, **layer} for layer in r["layers"]]
            block_rows += [{"model": model, "time": time, "block_index": i + 1, **b} for i, b in enumerate(r["blocks"])]
    write_csv(out / "gradflow.csv", rows)
    write_csv(out / "blocks.csv", block_rows)
    summary = {m: {t: r["ratios"] for t, r in times.items()} for m, times in results.items()}
    write_json(out / "gradflow.json", {"config": config, "summary": summary, "results": results}, facts)
    plots = _gradflow_plots(out, results, config)
    _gradflow_report(out, summary, config, plots, facts)


def gradflow_sentences(summary: Mapping[str, Mapping[str, Mapping[str, float]]], steps: int) -> list[str]:
    """The gradient-flow conclusion, from the ratios: a factor of 2 is the stated threshold for 'different'."""
    sentences = []
    for plain, res in _pairs(list(summary)):
        for time in ("init", "trained"):
            p, r = summary[plain][time]["first_over_last"], summary[res][time]["first_over_last"]
            verdict = ("smaller" if p < r / 2 else "larger" if p > 2 * r else "about the same (within 2x)")
            sentences.append(f"{'At initialisation' if time == 'init' else f'After {steps} steps'}, {plain}'s "
                             f"first/last gradient ratio is {p:.3g} against {r:.3g} for {res}: {verdict} for the "
                             "plain net.")
    vanish = [m for m, times in summary.items() if times["init"]["min_over_max"] < 1e-2]
    sentences.append("No network shows a layer whose gradient is below 1 % of the largest at initialisation."
                     if not vanish else
                     f"Layers with under 1 % of the largest gradient at initialisation: {', '.join(vanish)}.")
    return sentences


def _gradflow_report(out: Path, summary: dict, config: dict, plots: list[str], facts: dict) -> None:
    table = ["| model | time | layers | first/last | min/max |", "|---|---|---|---|---|"]
    for model, times in summary.items():
        for time, r in times.items():
            table.append(f"| {model} | {time} | {r['layers']} | {r['first_over_last']:.3g} | "
                         f"{r['min_over_max']:.3g} |")
    write_report(out, title="Gradient flow in plain and residual networks",
                 question="Do shortcut connections change how gradient reaches the early layers, at "
                          "initialisation and after a little training?",
                 setup={**facts, "models": ", ".join(summary), "data": config["data"], "steps": config["steps"],
                        "seed": config["seed"], "measure_batch": config["measure_batch"],
                        "recipe": _recipe_line(config["recipe"])},
                 sections=["\n".join(table), ("first/last: gradient norm of the first weight layer over the last "
                           "(the classifier); min/max over all main-path layers. Rule: the plain net's ratio is "
                           "'smaller' or 'larger' when it differs from its residual twin's by more than a factor "
                           "of 2; a layer under 1 % of the largest gradient counts as vanishing. One seed, one "
                           "batch: these are measurements, not tests of significance. Raw data: gradflow.csv, "
                           "blocks.csv, gradflow.json.")],
                 conclusion=" ".join(gradflow_sentences(summary, config["steps"])), plots=plots)


# --- the degradation experiment (He et al. 2015, Fig. 1 and Fig. 6) ------------------------------

DEGRADATION_PRESETS = {
    # CPU budget: the paper's optimiser with a cosine decay over however many epochs fit, and a half-epoch
    # linear warm-up for every net (He et al. warm up their deepest net the same way, §4.2). Precision is the
    # engine's "auto" (bf16 where the CPU has it natively); the report records what it resolved to.
    "cpu": TrainConfig(batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4, no_wd_norm_bias=False,
                       schedule="cosine", warmup_epochs=0.5, eval_batch_size=500, amp="auto", log_every_s=60.0),
    # The paper's setting (§4.2): 64k iterations, /10 at 32k and 48k — hours on a CPU, minutes on a GPU.
    "paper": TrainConfig(batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4, no_wd_norm_bias=False,
                         schedule="multistep", milestones=(32000, 48000), milestone_unit="step", max_steps=64000,
                         epochs=164, eval_batch_size=500, log_every_s=60.0),
}

# run bookkeeping, not recipe: left out of "changed from the preset"
_BOOKKEEPING = {"model", "model_kwargs", "data", "out", "seed", "threads", "cache_dir", "workers", "device",
                "log_every_s", "log_loss_every", "epochs", "download"}


def cifar_net(kind: str, depth: int) -> tuple[str, dict]:
    """The §4.2 network of ``depth`` = 6n+2 layers: a registered name, or resnet20 with n blocks."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110...), got {depth!r}")
    n = (depth - 2) // 6
    from ..models import list_models

    name = f"{kind}{depth}"
    return (name, {}) if name in list_models() else (f"{kind}20", {"layers": (n, n, n)})


def _net_kwargs(kind: str, depth: int, zero_init_residual: bool) -> tuple[str, dict]:
    """The twin of ``kind``; ``zero_init_residual`` zeroes the last BN of every residual branch. Only the
    residual nets have one: in a plain block that BN's output is the block's output, and zeroing it would
    make the whole plain net output a constant (it could never learn), so the plain twin keeps He et
    al.'s initialisation and the report says the two families started differently."""
    name, kwargs = cifar_net(kind, depth)
    if zero_init_residual and kind == "resnet":
        kwargs = {**kwargs, "zero_init_residual": True}
    return name, kwargs


def _probe_speed(base: TrainConfig, model: str, kwargs: dict, out: Path) -> tuple[float, int, int, int]:
    """Training img/s of one net over up to 20 steps (the first, slow one included), and the sizes of the
    training, validation and test splits."""
    cfg = base.replace(model=model, model_kwargs=kwargs, epochs=1, max_steps=None, limit_eval_batches=1,
                       limit_train_batches=min(20, base.limit_train_batches or 20), out=str(out))
    run = _train(cfg)
    if run.diverged or not run.history:
        raise TrainingDiverged(f"the speed probe of {model} diverged: {run.diverged}")
    n_test = run.summary.get("num_test")
    return run.history[-1]["img_per_s"], run.num_train, run.num_eval, run.num_eval if n_test is None else n_test


def plan_epochs(depths: Sequence[int], budget_minutes: float, base: TrainConfig, out: Path,
                n_seeds: int = len(DEFAULT_SEEDS)) -> tuple[int, dict]:
    """Epochs that let every plain and residual run of every seed finish within the budget (probed speeds).

    The residual net's speed stands for its plain twin's; evaluation is taken as 3x faster than training.
    Each run also evaluates the test split once at its end: counted once per run.
    """
    speeds, per_epoch, fixed = {}, 0.0, 0.0
    for depth in depths:
        name, kwargs = cifar_net("resnet", depth)
        speed, n_train, n_eval, n_test = _probe_speed(base, name, kwargs, out / "probe" / f"resnet{depth}")
        speeds[depth] = speed
        train_images = min(n_train, base.limit_train_batches * base.batch_size) if base.limit_train_batches \
            else n_train
        cap = base.limit_eval_batches * base.eval_batch_size if base.limit_eval_batches else None
        eval_images, test_images = (n_eval, n_test) if cap is None else (min(n_eval, cap), min(n_test, cap))
        runs = 2 * n_seeds  # plain and residual twin, every seed
        per_epoch += runs * (train_images / speed + eval_images / (3 * speed))
        fixed += runs * test_images / (3 * speed)
    epochs = int((budget_minutes * 60 * 0.92 - fixed) // per_epoch)  # keep ~8 % for start-up and the probes
    plan = {"img_per_s": speeds, "epoch_seconds_all_runs": per_epoch, "fixed_seconds": fixed,
            "runs": 2 * n_seeds * len(depths), "seeds": n_seeds,
            "estimated_minutes": (fixed + max(epochs, 0) * per_epoch) / 60}
    log.info("plan: %d epoch(s) per net fit %.1f min (%d runs, %.1f min per epoch of all runs)", epochs,
             budget_minutes, plan["runs"], per_epoch / 60)
    return epochs, plan


def run_degradation(depths: Sequence[int], *, out: str | Path = "runs/degradation", data: str | None = None,
                    epochs: int | None = None, budget_minutes: float | None = 28.0, preset: str = "cpu",
                    seeds: Sequence[int] | None = None, seed: int | None = None, threads: int | None = None,
                    train_batches: int | None = None, zero_init_residual: bool = False,
                    **overrides: Any) -> dict[str, dict[int, list[dict]]]:
    """Train the plain and residual twin of each depth, with every seed, under one recipe and budget.

    Returns ``{"plain20": {seed: [per-epoch rows]}, ...}``; rows hold ``train_error`` (on the augmented
    batches of the epoch, as the paper's curves) and ``val_error`` (the split the engine evaluates each
    epoch). ``seeds`` default to two (``seed`` and ``seed + 1``, or 0 and 1); both families get the same
    initialisation unless ``zero_init_residual`` asks to zero every residual branch (residual nets only:
    a plain net has none). ``overrides`` are TrainConfig keys applied to the preset (e.g. batch_size=64).
    The verdict (:func:`resnetlab.analysis.verdicts.degradation_verdict`) looks at every depth.
    """
    if preset not in DEGRADATION_PRESETS:
        raise ValueError(f"preset must be one of {sorted(DEGRADATION_PRESETS)}, got {preset!r}")
    depths = sorted(int(d) for d in depths)
    for d in depths:
        cifar_net("plain", d)  # checks 6n+2 before anything trains
    seeds = resolve_seeds(seeds, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    facts = provenance()
    base = DEGRADATION_PRESETS[preset].replace(data=data, threads=threads, limit_train_batches=train_batches,
                                               **overrides)
    plan: dict[str, Any] = {}
    if epochs is None and preset == "cpu":
        epochs, plan = plan_epochs(depths, budget_minutes or 28.0, base, out, n_seeds=len(seeds))
        if epochs < 1:
            raise ValueError(f"a budget of {budget_minutes} min does not fit one epoch of all {plan['runs']} "
                             f"runs here ({len(depths)} depths x 2 families x {len(seeds)} seeds; "
                             f"{plan['epoch_seconds_all_runs'] / 60:.1f} min per epoch in all); raise "
                             "--budget-minutes or pass --train-batches to train on part of each epoch")
    base = base.replace(epochs=epochs or base.epochs)
    curves: dict[str, dict[int, list[dict]]] = {}
    runs: dict[str, dict[int, _Run]] = {}
    for depth in depths:
        for kind in ("plain", "resnet"):
            net = f"{kind}{depth}"
            name, kwargs = _net_kwargs(kind, depth, zero_init_residual)
            for s in seeds:
                run = _train(base.replace(model=name, model_kwargs=kwargs, seed=s,
                                          out=str(out / "train" / f"{net}-seed{s}")))
                runs.setdefault(net, {})[s] = run
                curves.setdefault(net, {})[s] = [
                    {"epoch": r["epoch"], "train_error": 1 - r["train_acc"], "train_loss": r.get("train_loss"),
                     "val_error": 1 - r["val_top1"] if r.get("val_top1") is not None else None,
                     "wall_time_s": r.get("wall_time_s")} for r in run.history]
    first = runs[f"plain{depths[0]}"][seeds[0]]
    preset_dict = to_dict(DEGRADATION_PRESETS[preset])
    config = {"depths": depths, "seeds": list(seeds), "epochs": base.epochs, "preset": preset,
              "budget_minutes": budget_minutes if plan else None, "plan": plan,
              "zero_init_residual": zero_init_residual, "data": first.config["data"],
              "train_images": first.num_train, "eval_images": first.num_eval, "recipe": first.config,
              "changed_from_preset": {k: v for k, v in to_dict(base).items()
                                      if k not in _BOOKKEEPING and preset_dict.get(k) != v},
              "overrides": dict(overrides), "train_batches": train_batches}
    write_provenance(out, facts)
    write_json(out / "config.json", config, facts)
    _write_degradation(out, curves, runs, config, facts)
    return curves


def degradation_conclusion(verdict, epochs: int, seeds: int) -> str:
    """Plain words for the verdict: it says what holds, and says plainly when the effect is not shown."""
    fails = [c.claim for c in verdict.plain + verdict.residual if c.ok is False]
    undecided = [c for c in verdict.plain + verdict.residual if c.ok is None]
    budget = (f"with {epochs} epoch(s) per net and {seeds} seed(s)")
    if verdict.shown:
        return (f"Under the stated rules, this run shows both of the paper's observations {budget}: every "
                "deeper plain net trains worse than the one before it by more than the seed-to-seed spread, "
                "and no deeper residual net trains worse than a shallower one beyond that spread.")
    if undecided and not fails:
        return (f"No verdict {budget}: {undecided[0].detail}. The rules need at least two seeds per net and "
                "no diverged run.")
    parts = []
    if verdict.plain_ok is True:
        parts.append("the plain nets do degrade with depth as the rules require")
    elif verdict.plain_ok is False:
        parts.append("the plain nets do not degrade with depth as the rules require")
    if verdict.residual_ok is True:
        parts.append("the residual nets do not get worse with depth beyond the spread")
    elif verdict.residual_ok is False:
        parts.append("the residual nets do get worse with depth beyond the spread")
    return (f"This run does not show the paper's effect under these rules {budget}: " + "; ".join(parts) +
            f". Failed: {'; '.join(fails)}." + (" Some checks could not be decided." if undecided else "") +
            " The budget may be too small to show it (the paper trains 164 epochs; `resnetlab degradation "
            "--preset paper` is that setting, for a GPU); no claim beyond the table is made.")


def _write_degradation(out: Path, curves: dict[str, dict[int, list[dict]]], runs: dict[str, dict[int, _Run]],
                       config: dict, facts: dict) -> None:
    from ..utils.plot import save_figure

    depths, seeds = config["depths"], config["seeds"]
    rows = [{"model": net, "kind": net.rstrip("0123456789"), "depth": int(re.sub(r"\D", "", net)), "seed": s,
             **r} for net, per_seed in curves.items() for s, rs in per_seed.items() for r in rs]
    write_csv(out / "degradation.csv", rows)
    # a run that diverged has no final training error, whatever its last good epoch said
    verdict = degradation_verdict({net: {s: [] if runs[net][s].diverged else rs for s, rs in per_seed.items()}
                                   for net, per_seed in curves.items()}, depths)
    finals = {net: {"train_error": verdict.finals[net].row(),
                    "val_error": seed_stats([rs[-1]["val_error"] if rs else None for rs in per_seed.values()]).row(),
                    "test_error": seed_stats([1 - r.summary["test_top1"] if r.summary.get("test_top1") is not None
                                              else None for r in runs[net].values()]).row(),
                    "diverged": {s: r.diverged for s, r in runs[net].items() if r.diverged}}
              for net, per_seed in curves.items()}
    write_json(out / "degradation.json", {"config": config, "curves": curves, "finals": finals,
                                          "verdict": verdict.row()}, facts)

    fig, axes = _figure(2)
    for ax, (kind, title) in zip(axes, (("plain", "plain networks"), ("resnet", "residual networks"))):
        panel, groups = {}, {}
        for d in depths:
            net = f"{kind}{d}"
            for split, key in (("train", "train_error"), ("held-out", "val_error")):
                label = f"{net} {split}"
                panel[label] = {s: ([r["epoch"] for r in rs], [None if r[key] is None else 100 * r[key]
                                                               for r in rs]) for s, rs in curves[net].items()}
                groups[label] = str(d)
        train = [k for k in panel if k.endswith(" train")]
        _band_panel(ax, panel, groups=groups, dashed=train, title=title, xlabel="epoch", ylabel="error (%)",
                    bands_for=train, integer_x=True)
    band = f"; band: min-max of the training error over {len(seeds)} seeds" if len(seeds) > 1 else ""
    fig.suptitle(f"Error by depth (dashed: training, solid: held-out; lines: mean over seeds{band})")
    save_figure(fig, out / "degradation.png")

    has_test = any(f["test_error"]["n"] for f in finals.values())
    head = "| depth | plain train err | residual train err | plain held-out err | residual held-out err |"
    table = [head + (" plain test err | residual test err |" if has_test else ""),
             "|---|---|---|---|---|" + ("---|---|" if has_test else "")]
    for d in depths:
        p, r = finals[f"plain{d}"], finals[f"resnet{d}"]
        cells = [_stats_text(p["train_error"]), _stats_text(r["train_error"]),
                 _stats_text(p["val_error"]), _stats_text(r["val_error"])]
        if has_test:
            cells += [_stats_text(p["test_error"]), _stats_text(r["test_error"])]
        table.append(f"| {d} | " + " | ".join(cells) + " |")
    diverged = [f"{net} seed {s}: {why}" for net, f in finals.items() for s, why in f["diverged"].items()]
    checks = ["(i) plain nets:"] + [c.line() for c in verdict.plain] + \
             ["", "(ii) residual nets:"] + [c.line() for c in verdict.residual]
    write_report(out, title="The degradation experiment (He et al. 2015, Fig. 1 and Fig. 6)",
                 question="Does a deeper plain network train worse than a shallower one, and does the residual "
                          "twin of the deeper network avoid that?",
                 setup={**facts, **_degradation_setup(config)},
                 sections=[f"Final errors in %, mean over {len(seeds)} seed(s) (min–max in brackets). Training "
                           "error: on the augmented batches of the last epoch, as the paper's curves; held-out "
                           "error: the validation split the engine evaluates each epoch, at the last epoch" +
                           ("; test error: the test split, evaluated once at the end with the checkpoint that "
                            "scored best on the validation split." if has_test else "."),
                           "\n".join(table), DEGRADATION_RULES, "\n".join(checks),
                           *(["Diverged runs:\n" + "\n".join(f"- {d}" for d in diverged)] if diverged else []),
                           "Raw data: degradation.csv, degradation.json; per-run folders under train/."],
                 conclusion=degradation_conclusion(verdict, config["epochs"], len(seeds)),
                 plots=["degradation.png"])


def _stats_text(row: dict) -> str:
    return seed_stats(row["values"]).text(unit="", seeds=False)


def _degradation_setup(config: dict) -> dict[str, Any]:
    r = config["recipe"]
    plan = config.get("plan") or {}
    init = ("He et al.'s (He-normal convolutions, unit batch-norm scale) for plain and residual nets alike"
            if not config["zero_init_residual"] else
            "residual nets: last BN of each residual branch zero-initialised (Goyal et al. 2017, a deviation "
            "from the 2015 paper); plain nets: He et al.'s (they have no residual branch) — the families start "
            "differently")
    changed = config.get("changed_from_preset") or {}
    return {
        "depths": ", ".join(map(str, config["depths"])), "seeds": ", ".join(map(str, config["seeds"])),
        "epochs per net": config["epochs"] if not r.get("max_steps") else f"{config['epochs']} (at most "
                                                                          f"{r['max_steps']} steps)",
        "preset": config["preset"],
        "budget": (f"{config['budget_minutes']} min for {plan['runs']} runs (planned from probed speeds: "
                   f"about {plan['estimated_minutes']:.0f} min of training)") if plan else None,
        "data": f"{config['data']} ({config['train_images']} training / {config['eval_images']} held-out images)",
        "recipe": _recipe_line(r),
        "changed from the preset": ", ".join(f"{k}={v}" for k, v in changed.items()) or "nothing",
        "initialisation": init,
    }


def _recipe_line(r: Mapping[str, Any]) -> str:
    """The training recipe in words, from the resolved config a run trained with."""
    opt = f"{str(r['optimizer']).upper()} lr {r['lr']}, momentum {r['momentum']}" + \
          (" (Nesterov)" if r.get("nesterov") else "")
    parts = [opt, f"weight decay {r['weight_decay']}" + (" (none on norm and bias)" if r.get("no_wd_norm_bias")
                                                         else ""), f"batch {r['batch_size']}"]
    sched = r["schedule"]
    if sched == "multistep":
        sched = f"multistep x{r['gamma']} at {', '.join(f'{m:g}' for m in r['milestones'])} {r['milestone_unit']}s"
    elif sched == "step":
        sched = f"step x{r['gamma']} every {r['step_size']:g} {r['milestone_unit']}s"
    parts.append(f"{sched} schedule")
    if r.get("warmup_epochs"):
        parts.append(f"linear warm-up {r['warmup_epochs']:g} epoch(s)")
    parts.append(f"amp {r['amp']}, channels_last {r['channels_last']}")
    extras = {"label_smoothing": "label smoothing", "mixup": "mixup", "cutmix": "CutMix", "cutout": "cutout",
              "auto_augment": "auto-augment", "ema_decay": "EMA", "grad_clip": "grad clip"}
    parts += [f"{text} {r[k]}" for k, text in extras.items() if r.get(k)]
    if r.get("limit_train_batches"):
        parts.append(f"only {r['limit_train_batches']} batches per epoch")
    if r.get("limit_eval_batches"):
        parts.append(f"evaluation on {r['limit_eval_batches']} batch(es) only")
    return ", ".join(parts)


# --- smaller claims: shortcut options, batch norm ---------------------------------------------------

def _train_runs(specs: dict[str, tuple[str, dict]], base: TrainConfig, out: Path,
                seeds: Sequence[int]) -> dict[str, dict]:
    """Train each (model, options) with every seed and the same recipe."""
    results = {}
    for label, (model, kwargs) in specs.items():
        per_seed = {s: _train(base.replace(model=model, model_kwargs=kwargs, seed=s,
                                           out=str(out / "train" / f"{_slug(label)}-seed{s}")))
                    for s in seeds}
        first = per_seed[seeds[0]]
        results[label] = {"model": model, "options": kwargs, "params": first.params, "recipe": first.config,
                          "seeds": per_seed}
    return results


def _slug(label: str) -> str:
    """A run label as a folder name: "plain20 without BN" -> "plain20-without-BN"."""
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")


def _conclude(comparisons: Sequence) -> str:
    """The computed comparisons, one line each, under the rule stated in the report."""
    return "Under the rule stated above:\n\n" + "\n".join(f"- {c.text}." for c in comparisons)


def _per_seed(r: dict, key: str, missing_if_diverged: bool = True) -> list[float | None]:
    return [None if (run.diverged and missing_if_diverged) else _last(run.history, key)
            for run in r["seeds"].values()]


def _history_panel(res: dict[str, dict], key: str, scale: float = 100.0):
    return {label: {s: ([h["epoch"] for h in run.history], [None if h.get(key) is None else scale * h[key]
                                                            for h in run.history])
                    for s, run in r["seeds"].items()} for label, r in res.items()}


def _shortcuts(out: Path, base: TrainConfig, depth: int,
               seeds: Sequence[int]) -> tuple[dict, list[str], str, list[str]]:
    from ..utils.plot import save_figure

    name, kwargs = cifar_net("resnet", depth)
    specs = {f"option {o}": (name, {**kwargs, "shortcut": o}) for o in ("A", "B", "C")}
    specs["plain (no shortcut)"] = (name, {**kwargs, "shortcut": None})
    res = _train_runs(specs, base, out, seeds)
    table = ["| shortcut | parameters | final train acc | final held-out top-1 | diverged |", "|---|---|---|---|---|"]
    for k, r in res.items():
        div = sum(run.diverged is not None for run in r["seeds"].values())
        table.append(f"| {k} | {r['params']:,} | {seed_stats(_per_seed(r, 'train_acc')).text(seeds=False)} | "
                     f"{seed_stats(_per_seed(r, 'val_top1')).text(seeds=False)} | {div or 'no'} |")
    comparisons = [compare(a, _per_seed(res[a], "val_top1"), b, _per_seed(res[b], "val_top1"),
                           what="final held-out top-1", higher_is_better=True)
                   for a, b in (("option B", "option A"), ("option C", "option B"),
                                ("option A", "plain (no shortcut)"))]
    concl = _conclude(comparisons)
    fig, axes = _figure(1, width=8)
    _band_panel(axes[0], _history_panel(res, "val_top1"), title="held-out top-1 per epoch (mean; band: min-max "
                "over seeds)", xlabel="epoch", ylabel="top-1 (%)", integer_x=True)
    save_figure(fig, out / "shortcuts.png")
    return res, table, concl, ["shortcuts.png"]


def _batchnorm(out: Path, base: TrainConfig, depth: int,
               seeds: Sequence[int]) -> tuple[dict, list[str], str, list[str]]:
    from ..utils.plot import save_figure

    specs = {}
    for kind in ("resnet", "plain"):
        name, kwargs = cifar_net(kind, depth)
        specs[f"{kind}{depth} with BN"] = (name, kwargs)
        specs[f"{kind}{depth} without BN"] = (name, {**kwargs, "norm_layer": "none"})
    res = _train_runs(specs, base.replace(log_loss_every=1), out, seeds)
    panel = {k: {s: ([p["step"] for p in run.steps], [p["loss"] for p in run.steps])
                 for s, run in r["seeds"].items() if run.steps} for k, r in res.items()}
    panel = {k: v for k, v in panel.items() if v}
    plots = []
    if panel:
        fig, axes = _figure(1, width=8)
        groups = {k: k.split()[0] for k in panel}  # resnetN / plainN: one colour each
        _band_panel(axes[0], panel, groups=groups, dashed=[k for k in panel if "without BN" in k], log_y=True,
                    title="training loss per step (dashed: no batch norm; mean, band: min-max over seeds)",
                    xlabel="step", ylabel="training loss")
        save_figure(fig, out / "loss.png")
        plots.append("loss.png")
    table = ["| run | final train loss | final held-out top-1 | diverged |", "|---|---|---|---|"]
    for k, r in res.items():
        div = [f"seed {s}: {run.diverged}" for s, run in r["seeds"].items() if run.diverged]
        loss = seed_stats(_per_seed(r, "train_loss")).text(scale=1, unit="", digits=3, seeds=False)
        table.append(f"| {k} | {loss} | {seed_stats(_per_seed(r, 'val_top1')).text(seeds=False)} | "
                     f"{'; '.join(div) or 'no'} |")
    pairs = [(f"resnet{depth} with BN", f"resnet{depth} without BN"),
             (f"plain{depth} with BN", f"plain{depth} without BN"),
             (f"resnet{depth} with BN", f"plain{depth} with BN"),
             (f"resnet{depth} without BN", f"plain{depth} without BN")]
    comparisons = [compare(a, _per_seed(res[a], "train_loss"), b, _per_seed(res[b], "train_loss"),
                           what="final training loss", higher_is_better=False, scale=1.0, unit="")
                   for a, b in pairs]
    concl = _conclude(comparisons)
    return res, table, concl, plots


EXPERIMENTS: dict[str, tuple[str, str, Callable]] = {
    "shortcuts": ("Shortcut options A, B and C (He et al. 2015, Table 3)",
                  ("Do projection shortcuts (B: where the shape changes, C: everywhere) beat the parameter-free "
                  "option A, and all of them the plain net, on the same budget? (He et al. report A < B < C by "
                  "small margins on ImageNet.)"), _shortcuts),
    "batchnorm": ("With and without batch norm, with and without shortcuts",
                  ("Do shortcuts and batch norm make the first epochs of training faster (lower training loss "
                  "on the same budget)?"), _batchnorm)}


def run_experiment(name: str, *, out: str | Path | None = None, data: str | None = None, epochs: int = 3,
                   depth: int = 20, seeds: Sequence[int] | None = None, seed: int | None = None,
                   threads: int | None = None, train_batches: int | None = None, **overrides: Any) -> dict:
    """Run one of :data:`EXPERIMENTS` through the training engine, with every seed, and write its report.

    ``seeds`` default to two (``seed`` and ``seed + 1``, or 0 and 1): the conclusion compares runs
    against the seed-to-seed spread (:data:`resnetlab.analysis.verdicts.COMPARE_RULE`).
    ``overrides`` are TrainConfig keys applied to the shared recipe (e.g. batch_size=64).
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; experiments: {', '.join(EXPERIMENTS)}")
    cifar_net("resnet", depth)
    seeds = resolve_seeds(seeds, seed)
    title, question, fn = EXPERIMENTS[name]
    out = Path(out or f"runs/{name}")
    out.mkdir(parents=True, exist_ok=True)
    facts = provenance()
    base = DEGRADATION_PRESETS["cpu"].replace(data=data, epochs=epochs, threads=threads,
                                              limit_train_batches=train_batches, **overrides)
    results, table, conclusion, plots = fn(out, base, depth, seeds)
    recipe = next(iter(results.values()))["recipe"]
    config = {"experiment": name, "depth": depth, "epochs": epochs, "seeds": list(seeds), "recipe": recipe,
              "data": recipe["data"], "overrides": dict(overrides), "train_batches": train_batches}
    write_provenance(out, facts)
    write_json(out / "config.json", config, facts)
    raw = {k: {**{f: v for f, v in r.items() if f != "seeds"}, "seeds": {s: run.row() for s, run in r["seeds"].items()}}
           for k, r in results.items()}
    write_json(out / f"{name}.json", {"config": config, "results": raw}, facts)
    write_csv(out / f"{name}.csv", [{"run": k, "seed": s, "epoch": h["epoch"],
                                     **{m: h.get(m) for m in ("train_loss", "train_acc", "val_loss", "val_top1")}}
                                    for k, r in results.items() for s, run in r["seeds"].items()
                                    for h in run.history])
    write_report(out, title=title, question=question,
                 setup={**facts, "depth": depth, "epochs": epochs, "seeds": ", ".join(map(str, seeds)),
                        "data": recipe["data"], "recipe": _recipe_line(recipe)},
                 sections=[(f"Final values, mean over {len(seeds)} seed(s) (min–max in brackets); held-out: the "
                            "validation split the engine evaluates each epoch, at the last epoch."), "\n".join(table),
                           COMPARE_RULE,
                           f"Raw data: {name}.csv, {name}.json; per-run folders under train/."],
                 conclusion=conclusion, plots=plots)
    return results
