"""Evaluation as a stage of its own: load a trained model, batch a data set under its preprocessing,
compute metrics, and :func:`evaluate` it all into an :class:`EvalResult`.

Training and deployment import this package; it imports neither.
"""

from .batches import collect_logits, eval_batches, open_split
from .clinical import (OperatingPoint, average_precision, binary_report, choose_threshold, clinical_report,
                       multiclass_report)
from .confusion import save_confusion_matrix
from .evaluate import EvalResult, evaluate, run_precision
from .loading import FORMAT, TrainedModel, checkpoint_path, checkpoint_preprocess, load_trained, read_checkpoint
from .metrics import binary_auc, classification_metrics, expected_calibration_error, format_metrics, topk_accuracy
from .multilabel import multilabel_metrics, multilabel_report, multilabel_thresholds, task_metrics, task_report

__all__ = [
    "evaluate", "EvalResult", "run_precision", "load_trained", "TrainedModel", "read_checkpoint", "checkpoint_path",
    "checkpoint_preprocess", "FORMAT", "eval_batches", "open_split", "collect_logits", "classification_metrics",
    "topk_accuracy", "binary_auc", "expected_calibration_error", "format_metrics", "save_confusion_matrix",
    "multilabel_metrics", "multilabel_report", "multilabel_thresholds", "task_metrics", "task_report",
    "OperatingPoint", "binary_report", "choose_threshold", "clinical_report", "multiclass_report", "average_precision",
]
