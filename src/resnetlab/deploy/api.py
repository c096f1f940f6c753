"""Export and quantize a trained checkpoint in one call: what ``resnetlab export`` / ``quantize`` run.

    >>> report = resnetlab.export("runs/cifar10", "onnx")          # doctest: +SKIP
    >>> report = resnetlab.quantize("runs/cifar10", "openvino", val_images=1000)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

from ..eval import checkpoint_path, eval_batches, load_trained, open_split
from ..models.dense import DENSE_TASKS
from .export import FORMATS, ExportReport, export_model
from .meta import ModelMeta
from .quantize import QUANT_BACKENDS, QuantizeReport, calibration_images, quantize_model, test_batches

__all__ = ["export_checkpoint", "quantize_checkpoint", "default_artefact_path"]


def default_artefact_path(checkpoint: str | os.PathLike, name: str) -> Path:
    """``export/<name>`` in the checkpoint's run directory."""
    return checkpoint_path(checkpoint).parent / "export" / name


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None, *,
           dynamic_batch: bool = False, batch_size: int = 1, check_data: str | os.PathLike | None = None,
           check_images: int = 32, tolerance: float = 1e-3) -> ExportReport:
    """Export a trained checkpoint (or run directory) as ``fmt`` ("onnx", "openvino", "pt2", "torchscript"),
    checked against the eager model on ``check_images`` real test images before it takes its name."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    trained = load_trained(checkpoint)
    out = Path(out) if out else default_artefact_path(checkpoint, f"model{FORMATS[fmt]}")
    if trained.task in DENSE_TASKS:  # a detector or segmenter: dynamic image size, its own parity check
        from .dense_export import export_dense

        return export_dense(trained, fmt, out, check_data=check_data, check_images=min(check_images, 4),
                            tolerance=tolerance)
    ds = open_split(trained, check_data, "test")
    x = next(iter(eval_batches(ds, trained.preprocess, batch_size=check_images, limit_batches=1).epoch(0)))[0]
    return export_model(trained.model, ModelMeta.from_trained(trained), out, fmt, dynamic_batch=dynamic_batch,
                        batch_size=batch_size, check_inputs=x, tolerance=tolerance,
                        check_source=f"{len(x)} real images from {ds.source}")


def quantize_checkpoint(checkpoint: str | os.PathLike, backend: str = "openvino",
                        out: str | os.PathLike | None = None, *, calib_data: str | os.PathLike | None = None,
                        calib_images: int = 300, val_data: str | os.PathLike | None = None,
                        val_images: int | None = None) -> QuantizeReport:
    """int8 post-training static quantization of a trained checkpoint, calibrated on ``calib_images`` of
    its training data; with ``val_data``, top-1 of FP32 and int8 measured on the same test images."""
    if backend not in QUANT_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(QUANT_BACKENDS)}, got {backend!r}")
    trained = load_trained(checkpoint)
    out = Path(out) if out else default_artefact_path(checkpoint,
                                                      f"model-int8-{backend}{QUANT_BACKENDS[backend]}")
    calib = calibration_images(trained, calib_data, calib_images)
    val = test_batches(trained, val_data, images=val_images) if val_data else None
    return quantize_model(trained.model, ModelMeta.from_trained(trained), out, backend, calib,
                          calib_source=f"{calib_images} images of {calib_data or trained.config['data']} (train split)",
                          val_batches=val, val_source=f"{val_data} (test split)" if val else "")
