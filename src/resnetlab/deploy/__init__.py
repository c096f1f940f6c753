"""Compression and deployment: BN folding, export, int8 quantization, runtimes and the Predictor."""

from .api import default_artefact_path, export_checkpoint, quantize_checkpoint
from .export import FORMATS, ExportReport, UntrustedArtefactError, export_model, load_artefact
from .fuse import conv_bn_pairs, fuse_conv_bn, inference_model
from .meta import ModelMeta
from .predictor import AUTO_ORDER, Predictor, auto_backend
from .quantize import QUANT_BACKENDS, QuantizeReport, quantize_model
from .runtimes import available_backends

__all__ = ["fuse_conv_bn", "conv_bn_pairs", "inference_model", "export_model", "load_artefact", "FORMATS",
           "ExportReport", "UntrustedArtefactError", "ModelMeta", "Predictor", "auto_backend", "AUTO_ORDER",
           "quantize_model", "QuantizeReport", "QUANT_BACKENDS", "available_backends", "export_checkpoint",
           "quantize_checkpoint", "default_artefact_path"]
