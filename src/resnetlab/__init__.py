"""resnetlab: ResNet-18 and its family, end to end, on PyTorch.

    >>> import resnetlab
    >>> model = resnetlab.create_model("resnet18", num_classes=10)
    >>> resnetlab.count_params(model)
    11181642

The whole life of a model from Python: ``resnetlab.Trainer(...).fit()`` (or ``resnetlab.fit(...)``),
``resnetlab.evaluate(...)``, ``resnetlab.explain(...)``, ``resnetlab.export(...)``, ``resnetlab.quantize(...)``
and ``resnetlab.Predictor``.
"""

__version__ = "0.1.0"

import importlib
from typing import Any

# Names resolve on first use (PEP 562), so `import resnetlab.serve` or `resnetlab.deploy` loads no training
# code: a server process stays small, and deployment never depends on the trainer.
_LAZY = {
    "Preprocess": ("data.preprocess", "Preprocess"), "Predictor": ("deploy", "Predictor"),
    "export": ("deploy.api", "export_checkpoint"), "quantize": ("deploy.api", "quantize_checkpoint"),
    "EvalResult": ("eval", "EvalResult"), "evaluate": ("eval", "evaluate"), "load_trained": ("eval", "load_trained"),
    "explain": ("explain", None), "FeatureInfo": ("models", "FeatureInfo"), "create_model": ("models", "create_model"),
    "list_models": ("models", "list_models"), "count_macs": ("models.stats", "count_macs"),
    "count_params": ("models.stats", "count_params"), "model_summary": ("models.stats", "model_summary"),
    "load_weights": ("models.weights", "load_weights"), "read_state_dict": ("models.weights", "read_state_dict"),
    "save_weights": ("models.weights", "save_weights"), "TrainConfig": ("train.config", "TrainConfig"),
    "Trainer": ("train.engine", "Trainer"), "TrainResult": ("train.engine", "TrainResult"),
    "fit": ("train.engine", "fit"), "from_caffe": ("deploy.caffe", "from_caffe"),
    "create_detector": ("models.detection", "create_detector"),
    "create_segmenter": ("models.segmentation", "create_segmenter"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'resnetlab' has no attribute {name!r}")
    module, attr = _LAZY[name]
    mod = importlib.import_module(f".{module}", __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "create_model", "list_models", "load_weights", "save_weights", "read_state_dict",
    "count_params", "count_macs", "model_summary", "FeatureInfo", "Predictor", "Preprocess",
    "TrainConfig", "Trainer", "TrainResult", "fit", "evaluate", "EvalResult", "load_trained", "export", "quantize",
    "explain", "from_caffe", "create_detector", "create_segmenter",
    "__version__",
]
