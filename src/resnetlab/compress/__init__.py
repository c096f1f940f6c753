"""Compression: structured pruning (Torch-Pruning), distillation and quantization-aware training.

Distillation and QAT run inside the one training engine (``TrainConfig.distill_from``, ``TrainConfig.qat``);
:func:`compress` chains pruning, fine-tuning and int8 and reports what each step cost and bought.
"""

from .pipeline import CompressConfig, compress, compress_steps
from .prune import IMPORTANCES, PruneConfig, PruneResult, keep_modules, prune_model

__all__ = ["IMPORTANCES", "PruneConfig", "PruneResult", "keep_modules", "prune_model", "CompressConfig", "compress",
           "compress_steps"]
