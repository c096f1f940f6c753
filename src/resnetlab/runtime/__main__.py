"""``python -m resnetlab.runtime MODEL.onnx|MODEL.xml IMAGE... [--topk K]`` or ``--folder DIR --out CSV``:
prediction without torch."""

from __future__ import annotations

import argparse
import json
import sys

from .predictor import LitePredictor, predict_folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m resnetlab.runtime", description=__doc__.splitlines()[0])
    p.add_argument("artefact", help="an exported .onnx or OpenVINO .xml (resnetlab export)")
    p.add_argument("images", nargs="*")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--threads", type=int)
    p.add_argument("--low-memory", action="store_true", help="ONNX Runtime: ~100 MiB less, slower")
    p.add_argument("--folder", help="bulk mode: every image under this folder")
    p.add_argument("--out", default="predictions.csv", help="bulk mode: the CSV to write")
    args = p.parse_args(argv)
    try:
        predictor = LitePredictor(args.artefact, threads=args.threads, low_memory=args.low_memory)
        if args.folder:
            print(json.dumps(predict_folder(predictor, args.folder, args.out, topk=args.topk)))
        status = 0
        for image in args.images:
            try:
                top = predictor.predict([image], topk=args.topk)[0]
            except ValueError as e:
                print(f"resnetlab.runtime: {e}", file=sys.stderr)
                status = 1
                continue
            print(json.dumps({"image": image, "topk": top}))
        return status
    except (ValueError, FileNotFoundError) as e:
        print(f"resnetlab.runtime: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
