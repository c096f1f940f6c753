"""``resnetlab <verb>``: a thin layer that parses, calls the API, and prints."""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .. import __version__
from .deploy import add_deploy_verbs
from .compress import add_compress_verb
from .explain import add_explain_verb
from .serve import add_serve_verb
from .caffe import add_caffe_verb

__all__ = ["main", "parse_kwargs"]


def parse_kwargs(items: Sequence[str]) -> dict[str, Any]:
    """``["stem=cifar", "drop_path_rate=0.1", "shortcut=None"]`` -> typed keyword arguments."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise SystemExit(f"resnetlab: error: --model-kwargs takes key=value pairs, got {item!r}")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw  # a bare word is a string: stem=cifar
    return out


def _cmd_models(args: argparse.Namespace) -> int:
    from ..models.stats import format_table, models_table

    rows = models_table(args.filter)
    if not rows:
        print(f"no model matches {args.filter!r}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [(r["name"], f"{r['params']:,}", f"{r['gmacs']:.3f}", r["input_size"], r["shortcuts"],
              r["torchvision"] and "yes") for r in rows]
    print(format_table(("model", "params", "GMACs", "input", "shortcuts", "torchvision weights"), table,
                       "lrrlll"))
    print(f"\n{len(rows)} models; GMACs at batch 1 and the default input size (torch.utils.flop_counter).")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    import torch

    from ..models.registry import build_model
    from ..models.stats import format_table, model_summary

    options = parse_kwargs(args.model_kwargs)
    if args.num_classes is not None:
        options["num_classes"] = args.num_classes
    if args.input_size is not None:
        options.setdefault("in_chans", args.input_size[0])
    with torch.device("meta"):
        model = build_model(args.name, **options)
    every = model_summary(model, args.input_size or _default_size(args.name), max_depth=10**6)
    rows = [r for r in every if r.depth <= args.depth]
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return 0
    table = [("  " * (r.depth - 1) + r.name.rpartition(".")[2] if r.kind != "residual add" else
              "  " * r.depth + "(+)", r.name, r.kind, "x".join(map(str, r.out_shape or ())),
              f"{r.params:,}", f"{r.macs / 1e6:,.1f}", r.note) for r in rows]
    print(format_table(("layer", "path", "type", "output", "params", "MMACs", "note"), table, "lllrrrl"))
    total_params = sum(p.numel() for p in model.parameters())
    total_macs = sum(r.macs for r in every if r.depth == 1)
    adds = sum(r.kind == "residual add" for r in every)
    print(f"\n{args.name}: {total_params:,} parameters, {total_macs / 1e9:.3f} GMACs, {adds} residual additions")
    return 0


def _field_help() -> dict[str, str]:
    """Each TrainConfig field's own help (its metadata), as --help text: one source of truth."""
    from dataclasses import fields

    from ..train.config import TrainConfig

    return {f.name: f.metadata.get("help", "").replace("%", "%%") for f in fields(TrainConfig)}


def _add_train(sub, name: str = "train") -> None:
    from dataclasses import fields

    from ..train.config import TrainConfig

    if name == "pretrain":
        t = sub.add_parser("pretrain", help="self-supervised pretraining (SimCLR, MoCo v2, BYOL, SimSiam) on images "
                                            "without labels",
                           description="`resnetlab train` with --method (= --ssl) set: the backbone learns from two "
                                       "augmented views of each image; labels, if the data has them, feed only the "
                                       "kNN monitor. Recipe: --config cifar10-ssl.")
    else:
        t = sub.add_parser("train", help="train a model (a recipe, flags, or both)",
                           description="Train per a recipe (--config) with any config key overridden as --key value.")
    t.add_argument("--config", metavar="RECIPE", help="shipped recipe name or a YAML path (resnetlab recipes)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly where it stopped")
    t.add_argument("--overwrite", action="store_true",
                   help="train into --out even if it holds another run: its metrics, events, checkpoints, summary "
                        "and logs are removed first (other files are kept)")
    t.add_argument("--dry-run", action="store_true", help="1 epoch of 2 batches + 2 eval batches: a smoke test "
                                                          "(into runs/dry-run, replaced each time, unless --out)")
    helps = _field_help()
    for f in fields(TrainConfig):
        if f.name == "model_kwargs":
            continue
        boolean = f.type in ("bool", "bool | None")  # --channels-last alone means true; auto/none: None
        aliases = ["--img-size"] if f.name == "image_size" else []  # the name timm and MedMNIST's scripts use
        aliases += ["--method"] if f.name == "ssl" and name == "pretrain" else []
        t.add_argument(f"--{f.name.replace('_', '-')}", *aliases, dest=f.name, default=None, help=helps.get(f.name),
                       nargs="?" if boolean else None, const="true" if boolean else None,
                       metavar="BOOL" if boolean else f.name.upper())
    t.add_argument("--model-kwargs", nargs="*", default=None, metavar="KEY=VALUE",
                   help="model options, e.g. stem=cifar drop_path_rate=0.1 (merged into the recipe's)")
    t.set_defaults(func=_cmd_train, verb=name)


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from ..train.config import RESUMABLE, TrainConfig, load_config, recipe_path
    from ..train.engine import TrainingDiverged, fit

    names = {f.name for f in fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if args.model_kwargs is not None:
        base = load_config(args.config).model_kwargs if args.config else {}
        overrides["model_kwargs"] = {**base, **parse_kwargs(args.model_kwargs)}
    overwrite = args.overwrite
    if args.dry_run:
        overrides.update(epochs=1, limit_train_batches=2, limit_eval_batches=2, max_steps=None)
        if "out" not in overrides:  # the smoke test's own scratch folder
            overrides["out"], overwrite = "runs/dry-run", args.overwrite or not args.resume
    if args.resume:
        cfg = load_config(None, {k: v for k, v in overrides.items() if k in RESUMABLE})
    else:
        cfg = load_config(recipe_path(args.config) if args.config else None, overrides)
        if args.verb == "pretrain" and not cfg.ssl:
            print("resnetlab pretrain: give --method simclr|mocov2|byol|simsiam", file=sys.stderr)
            return 2
    try:
        result = fit(cfg, resume=args.resume, overwrite=overwrite)
    except TrainingDiverged as e:
        print(f"resnetlab train: stopped: {e}", file=sys.stderr)
        return 3
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(json.dumps(result.summary, indent=2))
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    import yaml

    from ..train.config import list_recipes, recipe_path

    for name in list_recipes():
        source = (yaml.safe_load(recipe_path(name).read_text()) or {}).get("source", "")
        print(f"{name:24s} {source}")
    return 0


def _add_probe(sub) -> None:
    p = sub.add_parser("probe", help="linear probe: a linear classifier on a backbone's frozen features, test top-1")
    p.add_argument("--checkpoint", required=True, help="a `resnetlab pretrain` or `train` run (or a checkpoint)")
    p.add_argument("--data", required=True, help="labelled data with train and test splits (folders or a data set)")
    p.add_argument("--epochs", type=int, default=100, help="L-BFGS iterations on the cached features")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="L2 penalty on the linear weights")
    p.add_argument("--batch-size", type=int, default=256, help="batch for computing the features")
    p.set_defaults(func=_cmd_probe)


def _cmd_probe(args: argparse.Namespace) -> int:
    from ..eval.probe import linear_probe

    result = linear_probe(args.checkpoint, args.data, epochs=args.epochs, weight_decay=args.weight_decay,
                          batch_size=args.batch_size)
    print(json.dumps(result.to_dict(), indent=2))
    return 0


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", help="evaluate a checkpoint: top-1/5, per class, confusion matrix, NLL, ECE, AUC")
    e.add_argument("--checkpoint", required=True, help="a checkpoint file or a run directory (best.pt)")
    e.add_argument("--data", help="data as for train (default: the data the run was trained on)")
    e.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="split to evaluate (default: test)")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    e.add_argument("--out", help="folder for the confusion matrix CSV/PNG and metrics.json "
                                 "(default: eval-SPLIT next to the checkpoint)")
    e.add_argument("--limit-batches", type=int, help="evaluate only this many batches (smoke runs)")
    e.add_argument("--threshold", type=float, help="binary models: also report the rates at this probability of the "
                                                   "positive class (default: the operating point the run stored)")
    e.add_argument("--bootstrap", type=int, default=1000, help="resamples for the 95%% intervals (0: none)")
    e.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..eval import checkpoint_path, evaluate

    out = Path(args.out) if args.out else checkpoint_path(args.checkpoint).parent / f"eval-{args.split}"
    result = evaluate(args.checkpoint, args.data, split=args.split, batch_size=args.batch_size, ema=args.ema,
                      limit_batches=args.limit_batches, out=out, progress=not args.json, threshold=args.threshold,
                      bootstrap=args.bootstrap, seed=args.seed)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.summary())
        if "confusion_csv" in result.files:
            print(f"confusion matrix: {result.files['confusion_csv']} and .png")
        print(f"all metrics: {result.files['metrics']}")
    return 0


def _add_analysis(sub) -> None:
    g = sub.add_parser("gradflow", help="gradient norm of every layer, plain vs residual, at init and after training")
    g.add_argument("--models", default="resnet18,plain18,resnet56,plain56", help="comma-separated model names")
    g.add_argument("--data", help="training data (default: CIFAR-10 found as for train)")
    g.add_argument("--random-data", action="store_true", help="use uniform noise instead of real images")
    g.add_argument("--steps", type=int, default=50, help="training steps between the two measurements")
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--threads", type=int)
    g.add_argument("--out", default="runs/gradflow")
    g.set_defaults(func=_cmd_gradflow)
    d = sub.add_parser("degradation", help="plain vs residual nets of growing depth (He et al. 2015, Fig. 1 and 6)")
    d.add_argument("--depths", default="20,32,56", help="comma-separated depths 6n+2 (default: 20,32,56)")
    d.add_argument("--data", help="training data (default: CIFAR-10 found as for train)")
    d.add_argument("--epochs", type=int, help="epochs per net (default: as many as fit --budget-minutes)")
    d.add_argument("--budget-minutes", type=float, default=28.0, help="wall-clock budget for all runs (default 28)")
    d.add_argument("--preset", default="cpu", choices=("cpu", "paper"),
                   help="cpu: cosine over the budget, amp auto; paper: He et al.'s 64k iterations (for a GPU)")
    d.add_argument("--zero-init-residual", action="store_true",
                   help="zero-initialise the last BN of every residual branch (residual nets; the report says so)")
    _common_experiment_args(d, "runs/degradation")
    d.set_defaults(func=_cmd_degradation)
    x = sub.add_parser("experiment", help="smaller claims as experiments: shortcuts (A/B/C), batchnorm")
    x.add_argument("name", choices=("shortcuts", "batchnorm"))
    x.add_argument("--data", help="training data (default: CIFAR-10 found as for train)")
    x.add_argument("--epochs", type=int, default=3)
    x.add_argument("--depth", type=int, default=20, help="CIFAR network depth 6n+2 (default 20)")
    _common_experiment_args(x, None)
    x.set_defaults(func=_cmd_experiment)
    r = sub.add_parser("report", help="print (or render as HTML) an experiment's report.md")
    r.add_argument("run_dir", metavar="RUN_DIR")
    r.add_argument("--html", action="store_true", help="write report.html beside it and print its path")
    r.set_defaults(func=_cmd_report)


def _cmd_gradflow(args: argparse.Namespace) -> int:
    from ..analysis import run_gradflow
    from ..analysis.experiments import GRADFLOW_BASE

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    base = GRADFLOW_BASE.replace(batch_size=args.batch_size)
    run_gradflow(models, out=args.out, data=args.data, random_data=args.random_data, steps=args.steps, base=base,
                 threads=args.threads)
    print((Path(args.out) / "report.md").read_text())
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _common_experiment_args(p: argparse.ArgumentParser, out: str | None) -> None:
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-batches", type=int, help="train on only this many batches per epoch (smoke runs)")
    p.add_argument("--seeds", type=_int_list, help="comma-separated seeds, e.g. 0,1,2 (default: 0,1; the "
                   "verdicts compare against the seed-to-seed spread)")
    p.add_argument("--seed", type=int, help="shorthand for --seeds SEED,SEED+1")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", default=out, help=f"run folder (default: {out or 'runs/NAME'})")


def _cmd_degradation(args: argparse.Namespace) -> int:
    from ..analysis.experiments import run_degradation

    depths = [int(d) for d in args.depths.split(",") if d.strip()]
    run_degradation(depths, out=args.out, data=args.data, epochs=args.epochs, budget_minutes=args.budget_minutes,
                    preset=args.preset, seeds=args.seeds, seed=args.seed, threads=args.threads,
                    train_batches=args.train_batches, batch_size=args.batch_size,
                    zero_init_residual=args.zero_init_residual)
    print((Path(args.out) / "report.md").read_text())
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from ..analysis.experiments import run_experiment

    out = args.out or f"runs/{args.name}"
    run_experiment(args.name, out=out, data=args.data, epochs=args.epochs, depth=args.depth, seeds=args.seeds,
                   seed=args.seed, threads=args.threads, train_batches=args.train_batches, batch_size=args.batch_size)
    print((Path(out) / "report.md").read_text())
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ..analysis.report import read_report, to_html
    from ..utils.fileio import atomic_write_text

    text = read_report(args.run_dir)
    if args.html:
        path = atomic_write_text(Path(args.run_dir) / "report.html", to_html(text))
        print(path)
    else:
        print(text)
    return 0


def _default_size(name: str) -> tuple[int, int, int]:
    from ..models.registry import get_entry

    return get_entry(name).input_size


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="resnetlab", description="ResNet-18 and its family, end to end.")
    p.add_argument("--version", action="version", version=f"resnetlab {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    m = sub.add_parser("models", help="list every model: parameters, GMACs, input size, shortcuts")
    m.add_argument("--filter", default="*", help="shell-style name pattern, e.g. 'resnet*' (default: all)")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m.set_defaults(func=_cmd_models)

    s = sub.add_parser("summary", help="per-layer table: output shapes, parameters, MACs, shortcuts")
    s.add_argument("name", help="model name (see `resnetlab models`)")
    s.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"),
                   help="input size (default: the model's own, e.g. 3 224 224)")
    s.add_argument("--depth", type=int, default=3, help="deepest module level shown (default: 3)")
    s.add_argument("--num-classes", type=int, help="classifier outputs (default: the model's own)")
    s.add_argument("--model-kwargs", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model options, e.g. shortcut=A stem=cifar drop_path_rate=0.1")
    s.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    s.set_defaults(func=_cmd_summary)

    _add_train(sub)
    _add_train(sub, "pretrain")
    _add_probe(sub)
    _add_eval(sub)
    add_deploy_verbs(sub)
    add_explain_verb(sub)
    add_serve_verb(sub)
    add_caffe_verb(sub)
    add_compress_verb(sub)
    _add_analysis(sub)
    r = sub.add_parser("recipes", help="list the training recipes shipped with resnetlab, with their sources")
    r.set_defaults(func=_cmd_recipes)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"resnetlab {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `resnetlab models | head`: the reader left; end quietly (Python's documented way,
        # not SIGPIPE's default action, which would also let any client that hangs up kill `resnetlab serve`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
