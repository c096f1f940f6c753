"""``resnetlab explain``: maps for images or a data split, or their faithfulness (thin: parse, call, print)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_explain_verb"]


def add_explain_verb(sub) -> None:
    from ..explain.cam import METHODS

    e = sub.add_parser("explain", help="class-activation maps (Grad-CAM & co.) with faithfulness scores")
    e.add_argument("images", nargs="*", metavar="IMAGE", help="image files to explain")
    e.add_argument("--checkpoint", required=True, help="a checkpoint or run directory (not an exported artefact)")
    e.add_argument("--method", default="gradcam", choices=METHODS)
    e.add_argument("--layer", default="auto", help="module name (layer4, layer3.1, ...) or auto: the deepest "
                                                    "layer with a spatial output (the one chosen is printed)")
    e.add_argument("--target", default="top", help="the class to explain: top (the prediction), a name or an index")
    e.add_argument("--top-k", type=int, default=3)
    e.add_argument("--data", help="explain a split of this data (default with --evaluate: the run's own data)")
    e.add_argument("--split", default="test")
    e.add_argument("--limit", type=int, default=200, help="images of the split (a fixed seeded subset)")
    e.add_argument("--out", help="folder for PNGs, JSONs and the gallery (default: explain/ in the run directory)")
    e.add_argument("--evaluate", action="store_true", help="measure faithfulness (deletion, insertion, ROAD, "
                                                           "Average Drop) "
                                                           "against random and centre-bias maps")
    e.add_argument("--methods", default="gradcam,gradcam++,layercam,scorecam", help="--evaluate: methods")
    e.add_argument("--bootstrap", type=int, default=1000)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--no-sanity", action="store_true", help="--evaluate: skip the model-randomisation checks")
    e.add_argument("--shuffled-checkpoint", help="--evaluate: a run of the same model trained on shuffled labels "
                                                 "(`resnetlab train --shuffle-labels`; Adebayo et al. 2018)")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_cmd_explain)


def _out(args: argparse.Namespace) -> Path:
    from ..eval.loading import checkpoint_path

    return Path(args.out) if args.out else checkpoint_path(args.checkpoint).parent / "explain"


def _cmd_explain(args: argparse.Namespace) -> int:
    from ..explain import evaluate_explanations, explain_files, explain_split
    from ..explain.report import markdown

    if args.evaluate:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        result = evaluate_explanations(args.checkpoint, data=args.data, split=args.split, limit=args.limit,
                                       methods=methods, layer=args.layer, bootstrap=args.bootstrap, seed=args.seed,
                                       sanity=not args.no_sanity, shuffled_checkpoint=args.shuffled_checkpoint,
                                       out=_out(args), progress=not args.json)
        print(json.dumps({k: v for k, v in result.items() if k != "curves"}) if args.json else markdown(result))
        return 0
    if args.data or not args.images:
        if args.images:
            raise ValueError("give IMAGE files or --data, not both")
        s = explain_split(args.checkpoint, _out(args), data=args.data, split=args.split, limit=args.limit,
                          method=args.method, layer=args.layer, top_k=args.top_k, batch_size=args.batch_size,
                          progress=not args.json)
        print(json.dumps(s) if args.json else f"{s['images']} images explained at {s['layer']} ({s['wrong']} wrong, "
              f"{s['skipped']} unreadable skipped); gallery: {s['index']}")
        return 0
    target = int(args.target) if args.target.lstrip("-").isdigit() else args.target
    r = explain_files(args.checkpoint, args.images, _out(args), method=args.method, layer=args.layer, target=target,
                      top_k=args.top_k, batch_size=args.batch_size)
    if args.json:
        print(json.dumps({"explained": [{k: v for k, v in e.items() if k != "map"} for e in r["explained"]],
                          "errors": r["errors"]}))
    else:
        for e in r["explained"]:
            top = ", ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in e["top"])
            print(f"{e['image']}: {e['method']} of {e['target']['class']} at {e['layer']} -> {r['out']}/{e['png']} "
                  f"({top})")
        for image, err in r["errors"].items():
            print(f"{image}: {err}", file=sys.stderr)
    return 1 if r["errors"] else 0
