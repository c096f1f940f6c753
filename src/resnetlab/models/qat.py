"""Quantization-aware training's model: NNCF fake-quantizers on a resnetlab model (Jacob et al. 2018).

NNCF (``nncf.quantize`` on a PyTorch module) places int8 fake-quantizers where OpenVINO's CPU plugin
will run int8 — on weights per channel, on the activations that feed convolutions and matmuls, and on
both inputs of every residual addition — and initialises their ranges from calibration images. The
result is still the same ``nn.Module`` (its quantizer scales are extra entries of its state dict), so
the training engine fine-tunes it like any model, checkpoints it without pickling anything, and
``openvino.convert_model`` turns it into an int8 IR whose quantization is the one trained.

Rebuilding from a checkpoint needs no calibration data: the quantizers' places depend on the graph,
not on the images, and their trained ranges are loaded from the state dict.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import torch
import torch.nn as nn

__all__ = ["prepare_qat", "rebuild_qat", "qat_record", "is_qat"]

log = logging.getLogger("resnetlab")


def _nncf() -> Any:
    # NNCF compiles its CPU kernels once (about 30 s on 2 cores) into ~/.cache/torch_extensions; its default
    # 60 s limit fails on a busy machine, so unless the user set one, wait as long as it takes.
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")
    try:
        import nncf
    except ImportError:
        raise ModuleNotFoundError("quantization-aware training needs NNCF: pip install 'resnetlab[openvino]'") from None
    return nncf


def prepare_qat(model: nn.Module, calibration: Sequence[torch.Tensor]) -> nn.Module:
    """A copy of ``model`` (eval mode) with int8 fake-quantizers calibrated on ``calibration`` (NCHW batches).

    Preset "performance" (symmetric int8 activations and weights) is the one OpenVINO runs fastest on CPUs
    and the one ``resnetlab quantize --backend openvino`` uses, so QAT and PTQ compare like with like.
    """
    batches = [b for b in calibration if len(b)]
    n = sum(len(b) for b in batches)
    if n == 0:
        raise ValueError("quantization-aware training needs calibration images to start its int8 ranges from: "
                         "got none")
    nncf = _nncf()
    was = model.training
    q = nncf.quantize(model.eval(), nncf.Dataset(batches), subset_size=len(batches),  # NNCF counts batches
                      preset=nncf.QuantizationPreset.PERFORMANCE, target_device=nncf.TargetDevice.CPU)
    model.train(was)
    q.resnetlab_qat = True  # type: ignore[assignment]
    log.info("QAT: int8 fake-quantizers placed and calibrated on %d images", n)
    return q


def rebuild_qat(model: nn.Module, input_size: tuple[int, int, int]) -> nn.Module:
    """The quantizer layout of a QAT checkpoint on a freshly built ``model``, ready for its state dict."""
    return prepare_qat(model, [torch.zeros(1, *input_size)])


def is_qat(model: nn.Module) -> bool:
    return bool(getattr(model, "resnetlab_qat", False))


def qat_record(calib_images: int) -> dict[str, Any]:
    nncf = _nncf()
    return {"backend": "nncf", "nncf": nncf.__version__, "calib_images": int(calib_images),
            "preset": "performance"}
