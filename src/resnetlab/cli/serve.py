"""``resnetlab serve``: parse the flags into a :class:`ServeConfig` and run the server (thin)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

__all__ = ["add_serve_verb"]


def add_serve_verb(sub) -> None:
    from ..serve.config import BACKENDS, PRECISIONS, ServeConfig, field_parser

    s = sub.add_parser("serve", help="an HTTP server for one model: /v1/predict with dynamic batching, /v1/explain, "
                                     "/metrics and a page to try it (GET /)")
    helps = ServeConfig.help()
    for f in dataclasses.fields(ServeConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "checkpoint":
            s.add_argument(flag, required=True, help=helps[f.name])
        elif f.type in ("bool", bool):
            s.add_argument("--no-explain", dest="explain", action="store_false", help="do not offer /v1/explain")
        else:
            choices = {"backend": BACKENDS, "precision": PRECISIONS}.get(f.name)
            s.add_argument(flag, type=field_parser(f), default=f.default, choices=choices,
                           help=f"{helps[f.name]} (default {f.default})")
    s.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    s.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..serve import ServeConfig, serve

    names = {f.name for f in dataclasses.fields(ServeConfig)}
    try:
        cfg = ServeConfig(**{k: v for k, v in vars(args).items() if k in names})
    except ValueError as e:
        print(f"resnetlab serve: error: {e}", file=sys.stderr)
        return 2
    serve(cfg, log_level=args.log_level)
    return 0
