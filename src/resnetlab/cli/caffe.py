"""``resnetlab convert-caffe``: a Caffe model into a resnetlab model (thin: parse, call, print)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_caffe_verb"]


def add_caffe_verb(sub) -> None:
    c = sub.add_parser("convert-caffe", help="a Caffe model (.prototxt + .caffemodel) as a resnetlab model, "
                                             "without Caffe")
    c.add_argument("--prototxt", required=True, help="the deploy prototxt (the graph)")
    c.add_argument("--caffemodel", required=True, help="the trained weights (binary NetParameter)")
    c.add_argument("--out", required=True, help="folder for model.pt / model.safetensors (a zoo ResNet), "
                                                "graph.safetensors and conversion.json")
    c.add_argument("--mean", default="104,117,123", help="Caffe's input mean, BGR order, on 0-255 pixels")
    c.add_argument("--classes", help="a text file with one class name per line (default: 0..N-1)")
    c.add_argument("--no-zoo", action="store_true", help="keep the layer graph even when it is a zoo ResNet")
    c.add_argument("--check", nargs="*", default=[], metavar="IMAGE",
                   help="images to run through the converted model and the graph: top-5 and their difference")
    c.set_defaults(func=_cmd_convert_caffe)


def _cmd_convert_caffe(args: argparse.Namespace) -> int:
    from ..deploy.caffe import check_conversion, from_caffe, save_conversion

    try:
        mean = tuple(float(v) for v in args.mean.split(","))
        classes = None
        if args.classes:
            with open(args.classes, encoding="utf-8") as fh:
                classes = [line.strip() for line in fh if line.strip()]
        conv = from_caffe(args.prototxt, args.caffemodel, mean_bgr=mean, classes=classes, zoo=not args.no_zoo)
        checks = check_conversion(conv, args.check) if args.check else []
    except (ValueError, OSError) as e:
        print(f"resnetlab convert-caffe: error: {e}", file=sys.stderr)
        return 2
    files = save_conversion(conv, args.out)
    r = conv.report
    what = f"the zoo's {conv.zoo['name']} ({json.dumps(conv.zoo['kwargs'])})" if conv.zoo else "a layer graph"
    print(f"{args.caffemodel}: {sum(r['layers'].values())} layers, {r['params']:,} parameters -> {what}")
    for c in checks:
        print(f"  {c['image']}: " + ", ".join(f"{name} {p:.3f}" for name, p in c["top"]) +
              f"  (graph vs model max |diff| {c['max_abs_diff']:.2e})")
    for kind, path in files.items():
        print(f"  {kind}: {path}")
    return 0
