"""``resnetlab <verb>``: a thin layer that parses, calls the API, and prints."""

from __future__ import annotations

import argparse
import ast
import json
import signal
import sys
from typing import Any, Sequence

from . import __version__

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
    from .stats import format_table, models_table

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

    from .models.registry import build_model
    from .stats import format_table, model_summary

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


def _default_size(name: str) -> tuple[int, int, int]:
    from .models.registry import get_entry

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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    if hasattr(signal, "SIGPIPE"):  # `resnetlab models | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"resnetlab {args.verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
