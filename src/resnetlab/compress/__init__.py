"""Compression: structured pruning (Torch-Pruning), distillation and quantization-aware training."""

from .prune import IMPORTANCES, PruneConfig, PruneResult, keep_modules, prune_model

__all__ = ["IMPORTANCES", "PruneConfig", "PruneResult", "keep_modules", "prune_model"]
