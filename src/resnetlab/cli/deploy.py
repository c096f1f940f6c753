"""The deployment verbs of ``resnetlab``: predict, export, quantize, bench (thin: parse, call, print)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_deploy_verbs"]


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_deploy_verbs(sub) -> None:
    p = sub.add_parser("predict", help="top-k classes of images, or of a whole folder into a CSV (resnetlab.Predictor)")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files (any size or mode)")
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint, a run directory, or an exported artefact (.onnx, .xml, .pt2, .ts)")
    p.add_argument("--allow-torchscript", action="store_true",
                   help="load a TorchScript (.ts) artefact: it is code that runs when loaded; only for trusted files")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime", "openvino"))
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                   help="auto: bf16 where the CPU has it natively and it agrees with fp32 on >= 99.5 %% of the "
                        "check images (the run's validation split, or --check-data); an int8 artefact as it is")
    p.add_argument("--check-data", help="with --precision auto: images to check bf16 against fp32 on (test split)")
    p.add_argument("--threads", type=int)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--data", help="bulk mode: a folder of images (searched recursively)")
    p.add_argument("--out", help="bulk mode: the CSV to write (default: predictions.csv in the working folder)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="bulk mode: image-decoding processes")
    p.add_argument("--overwrite", action="store_true",
                   help="bulk mode: start the CSV afresh (else it is resumed, if the same model wrote it)")
    p.add_argument("--no-resume", action="store_true", help="deprecated: the same as --overwrite")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--explain-choice", action="store_true",
                   help="print which backend runs the model and why (with --backend auto: the timings it chose by)")
    p.add_argument("--score-thresh", type=float, default=0.5, help="detectors: the lowest score of a box reported")
    p.add_argument("--draw", help="detectors / segmenters: folder for each image with its boxes or mask drawn")
    p.set_defaults(func=_cmd_predict)

    e = sub.add_parser("export", help="ONNX / OpenVINO / pt2 / TorchScript artefact, checked against eager")
    e.add_argument("--checkpoint", required=True, help="a checkpoint file or a run directory")
    e.add_argument("--format", required=True, choices=("onnx", "openvino", "pt2", "torchscript"))
    e.add_argument("--out", help="artefact path (default: export/model.<ext> in the run directory)")
    e.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: a fixed --batch-size)")
    e.add_argument("--batch-size", type=int, default=1, help="the fixed batch size without --dynamic-batch")
    e.add_argument("--check-data", help="images to compare on (default: the run's data, test split)")
    e.add_argument("--check-images", type=int, default=32)
    e.add_argument("--tolerance", type=float, default=1e-3,
                   help="max |artefact - eager| / max(1, max |eager|) on the logits")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_cmd_export)

    q = sub.add_parser("quantize", help="int8 post-training static quantization with real calibration images")
    q.add_argument("--checkpoint", required=True, help="a checkpoint file or a run directory")
    q.add_argument("--calib-data", help="calibration images (default: the run's data); its train split is used")
    q.add_argument("--val-data", help="validation data for top-1 before/after (its test split)")
    q.add_argument("--backend", default="openvino", choices=("openvino", "onnxruntime", "torch"))
    q.add_argument("--calib-images", type=int, default=300)
    q.add_argument("--val-images", type=int, help="validate on a fixed random subset of this size (default: all)")
    q.add_argument("--out", help="artefact path (default: export/model-int8-<backend>.<ext> in the run directory)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd_quantize)

    b = sub.add_parser("bench", help="accuracy / speed / memory table of models x inference backends")
    b.add_argument("--models", default="resnet18,vgg16,inception_v3,xception")
    b.add_argument("--backends", default="eager,channels_last,compile,bf16,int8,onnxruntime,openvino")
    b.add_argument("--batch-sizes", type=_ints, default=[1, 32])
    b.add_argument("--threads", type=int, help="intra-op threads (default: torch's, i.e. the cores)")
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--seconds", type=float, default=2.0, help="measuring time per batch size and repeat")
    b.add_argument("--checkpoint", help="trained weights of the one model measured (else random weights)")
    b.add_argument("--data", help="with --checkpoint: top-1/top-5 on its test split, real calibration images")
    b.add_argument("--out", default="runs/bench")
    b.add_argument("--dry-run", action="store_true", help="resnet20, eager and channels_last, 1 repeat, 0.2 s")
    b.set_defaults(func=_cmd_bench)


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..deploy import Predictor

    if not args.images and not args.data and not args.explain_choice:
        raise ValueError("give image files, or --data FOLDER for bulk mode")
    if args.no_resume:
        print("resnetlab predict: --no-resume is deprecated; use --overwrite", file=sys.stderr)
    from ..deploy.dense import is_dense_checkpoint

    if is_dense_checkpoint(args.checkpoint):
        return _predict_dense(args)
    predictor = Predictor(args.checkpoint, args.backend, threads=args.threads, precision=args.precision,
                          allow_torchscript=args.allow_torchscript, check_data=args.check_data)
    print(f"{predictor!r}", file=sys.stderr)
    if predictor.precision_choice is not None:
        print(predictor.precision_choice.describe(), file=sys.stderr)
    if args.explain_choice:
        print(predictor.explain_choice(), file=sys.stderr if args.json else sys.stdout)
    if args.data:
        from ..deploy.bulk import predict_folder

        summary = predict_folder(predictor, args.data, args.out or "predictions.csv", batch_size=args.batch_size,
                                 topk=args.topk, workers=args.workers, overwrite=args.overwrite or args.no_resume,
                                 progress=not args.json)
        print(json.dumps(summary) if args.json else
              f"{summary['predicted_now']} images predicted ({summary['resumed_from']} already done, "
              f"{summary['failed']} unreadable) into {summary['out']}")
    return _predict_images(predictor, args) if args.images else 0


def _predict_dense(args: argparse.Namespace) -> int:
    """A detector's boxes or a segmenter's pixel classes per image (drawn into --draw); 1 if any was unreadable."""
    from ..deploy.dense import DensePredictor

    if args.data:
        raise ValueError("--data (bulk CSV) is for classifiers; give a detector or segmenter the image files")
    predictor = DensePredictor(args.checkpoint, score_thresh=args.score_thresh, threads=args.threads)
    print(f"{predictor!r}", file=sys.stderr)
    done, errors = predictor.predict_many(args.images, args.draw)
    for message in errors.values():
        print(f"resnetlab predict: {message}", file=sys.stderr)
    for p in done:
        if args.json:
            print(json.dumps(p.to_dict()))
        elif p.mask is None:
            found = ", ".join(f"{b['label']} {b['score']:.2f} at {b['box']}" for b in p.boxes) or "nothing"
            print(f"{p.image}: {len(p.boxes)} object(s): {found}" + (f" -> {p.drawn}" if p.drawn else ""))
        else:
            shares = ", ".join(f"{c} {100 * v:.1f}%" for c, v in p.pixels.items())
            print(f"{p.image}: {shares}" + (f" -> {p.drawn}" if p.drawn else ""))
    return 1 if errors else 0


def _predict_images(predictor, args: argparse.Namespace) -> int:
    """Answer every readable image (in the order given); each unreadable one is a line on stderr, and the
    exit status is 1 if there was any."""
    import torch

    if args.topk < 1:
        raise ValueError(f"--topk must be at least 1, got {args.topk}")
    inputs, errors = {}, {}
    for i, image in enumerate(args.images):
        try:
            inputs[i] = predictor.preprocess([image])
        except (ValueError, TypeError) as e:
            errors[i] = str(e)
            print(f"resnetlab predict: {e}", file=sys.stderr, flush=True)
    results: dict[int, list] = {}
    order = list(inputs)
    step = max(1, args.batch_size)
    for start in range(0, len(order), step):
        chunk = order[start:start + step]
        probs = predictor.predict_proba(torch.cat([inputs[i] for i in chunk]))
        for i, top, decided in zip(chunk, predictor.topk(probs, args.topk), predictor.decide(probs)):
            results[i] = (top, decided)
    point = predictor.operating_point
    if predictor.multilabel:
        rule = "each label at its stored threshold" if point else "each label with p > 0.5"
    else:
        rule = f"{point['positive_class']} when p >= {point['threshold']:.4g}" if point else "argmax"
    if args.json:
        print(json.dumps([{"image": im, "decision": {"class": results[i][1][0], "prob": results[i][1][1], "rule": rule},
                           "top": [{"class": c, "prob": p} for c, p in results[i][0]]} if i in results
                          else {"image": im, "error": errors[i]} for i, im in enumerate(args.images)], indent=2))
    else:
        for i, image in enumerate(args.images):
            if i in results:
                top, (label, _) = results[i]
                called = f"{label or '(no label)'} ({rule}); " if point or predictor.multilabel else ""
                print(f"{image}: {called}" + ", ".join(f"{c} {100 * p:.1f}%" for c, p in top))
    if errors:
        print(f"resnetlab predict: {len(errors)} of {len(args.images)} images could not be read", file=sys.stderr)
        return 1
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ..deploy import export_checkpoint

    report = export_checkpoint(args.checkpoint, args.format, args.out, dynamic_batch=args.dynamic_batch,
                    batch_size=args.batch_size, check_data=args.check_data, check_images=args.check_images,
                    tolerance=args.tolerance)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(f"wrote {report.path} ({report.size_bytes / 2**20:.1f} MiB, {report.format}); max |artefact - eager| "
              f"on {report.check_inputs}: {report.max_abs_diff:.2e} (tolerance {report.tolerance:g})")
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from ..deploy import quantize_checkpoint

    report = quantize_checkpoint(args.checkpoint, args.backend, args.out, calib_data=args.calib_data,
                      calib_images=args.calib_images, val_data=args.val_data, val_images=args.val_images)
    d = report.to_dict()
    if args.json:
        print(json.dumps(d))
        return 0
    print(f"wrote {report.path} ({report.size_bytes / 2**20:.1f} MiB int8, {args.backend}) in {report.seconds:.0f} s")
    if report.fp32_top1 is not None:
        print(f"top-1 on {report.val_images} images: FP32 {100 * report.fp32_top1:.2f} %, int8 "
              f"{100 * report.int8_top1:.2f} % ({d['top1_drop_points']:+.2f} points lost)")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..deploy.bench import run_bench

    models, backends = _csv_list(args.models), _csv_list(args.backends)
    repeats, seconds, bss = args.repeats, args.seconds, args.batch_sizes
    if args.dry_run:
        models, backends, repeats, seconds, bss = ["resnet20"], ["eager", "channels_last"], 1, 0.2, [1, 2]
    result = run_bench(models, backends, batch_sizes=bss, threads=args.threads, repeats=repeats, seconds=seconds,
                       checkpoint=args.checkpoint, data=args.data, out=args.out,
                       log=lambda line: print(line, file=sys.stderr, flush=True),
                       command="resnetlab " + " ".join(sys.argv[1:]))
    print(f"wrote {args.out}/bench.md, .csv, .json and .png ({len(result['rows'])} rows)")
    return 0
