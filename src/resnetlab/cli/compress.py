"""``resnetlab compress``: prune, fine-tune (optionally distilled), int8 by PTQ or QAT; one report (thin)."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_compress_verb"]


def add_compress_verb(sub) -> None:
    from ..compress.prune import IMPORTANCES

    c = sub.add_parser("compress", help="structured pruning + fine-tuning + int8 (PTQ or QAT), with a report of "
                                        "what each step cost and bought")
    c.add_argument("--checkpoint", required=True, help="a trained checkpoint or run directory")
    c.add_argument("--data", help="data (default: the data the run was trained on)")
    c.add_argument("--out", required=True, help="folder for every step's result and the report (resumable)")
    g = c.add_argument_group("pruning (Torch-Pruning's DepGraph: residual coupling respected)")
    g.add_argument("--prune-ratio", type=float, help="fraction of each coupled channel group removed, in (0, 1) "
                                                     "(default 0.5 unless --target-macs or --no-prune)")
    g.add_argument("--target-macs", type=float, help="instead: keep at most this fraction of the MACs (0.5: 2x fewer)")
    g.add_argument("--importance", default="l2", choices=IMPORTANCES,
                   help="channel score: weight L1/L2 norm of the coupled group, BN scale, or first-order Taylor "
                        "(|w * grad| on a few training batches)")
    g.add_argument("--global-pruning", action="store_true", help="rank channels across layers instead of removing "
                                                                 "the same fraction of each group")
    g.add_argument("--round-to", type=int, default=8, help="channel counts a multiple of this (1: off)")
    g.add_argument("--keep", default="fc", help="comma-separated modules (or prefixes) never pruned; 'stem' is the "
                                                "first conv")
    g.add_argument("--no-prune", action="store_true", help="skip pruning (int8 / QAT of the model as it is)")
    t = c.add_argument_group("training steps (the training engine)")
    t.add_argument("--finetune-epochs", type=int, default=0, help="epochs of fine-tuning after pruning "
                                                                   "(cosine schedule; best epoch on validation)")
    t.add_argument("--lr", type=float, default=0.01, help="fine-tuning peak learning rate")
    t.add_argument("--distill", action="store_true", help="fine-tune against the original model's soft targets")
    t.add_argument("--distill-alpha", type=float, default=0.5, help="weight of the soft targets in [0, 1]")
    t.add_argument("--distill-temperature", type=float, default=4.0, help="softmax temperature of the soft targets")
    t.add_argument("--qat-epochs", type=int, default=0, help="quantization-aware training epochs (OpenVINO)")
    t.add_argument("--qat-lr", type=float, default=1e-3, help="QAT peak learning rate")
    t.add_argument("--batch-size", type=int, help="training batch (default: the run's)")
    q = c.add_argument_group("int8 and measurement")
    q.add_argument("--int8", default="openvino", choices=("openvino", "onnxruntime", "none"),
                   help="runtime for the rows and for post-training int8 (none: FP32 rows on OpenVINO only)")
    q.add_argument("--calib-images", type=int, default=300, help="images that calibrate int8: training images for "
                                                                 "PTQ, validation images for QAT's starting ranges")
    q.add_argument("--test-images", type=int, help="top-1 on a seeded subset of the test split (default: all)")
    q.add_argument("--threads", type=int, help="runtime threads when timing (default: the runtime's)")
    q.add_argument("--seconds", type=float, default=2.0, help="timing per batch size per round")
    q.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_cmd_compress)


def _cmd_compress(args: argparse.Namespace) -> int:
    from ..compress import CompressConfig, PruneConfig, compress
    from ..compress.report import markdown

    prune = None
    if not args.no_prune:
        ratio = None if args.target_macs is not None else (args.prune_ratio if args.prune_ratio is not None else 0.5)
        prune = PruneConfig(ratio=ratio, target_macs=args.target_macs, importance=args.importance,
                            global_pruning=args.global_pruning, round_to=args.round_to,
                            keep=tuple(k.strip() for k in args.keep.split(",") if k.strip()))
    elif args.prune_ratio is not None or args.target_macs is not None:
        raise ValueError("--no-prune with --prune-ratio/--target-macs: choose one")
    overrides = {"batch_size": args.batch_size} if args.batch_size else {}
    cfg = CompressConfig(checkpoint=args.checkpoint, out=args.out, data=args.data, prune=prune,
                         finetune_epochs=args.finetune_epochs, lr=args.lr, distill=args.distill,
                         distill_alpha=args.distill_alpha, distill_temperature=args.distill_temperature,
                         runtime="openvino" if args.int8 == "none" else args.int8, int8=args.int8 != "none",
                         qat_epochs=args.qat_epochs, qat_lr=args.qat_lr, calib_images=args.calib_images,
                         test_images=args.test_images, threads=args.threads, seconds=args.seconds,
                         repeats=args.repeats, train_overrides=overrides)
    result = compress(cfg, progress=not args.json)
    print(json.dumps(result["rows"]) if args.json else markdown(result))
    return 0
