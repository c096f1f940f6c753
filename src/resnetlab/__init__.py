"""resnetlab: ResNet-18 and its family, end to end, on PyTorch.

    >>> import resnetlab
    >>> model = resnetlab.create_model("resnet18", num_classes=10)
    >>> resnetlab.count_params(model)
    11181642
"""

from .deploy import Predictor
from .models import FeatureInfo, create_model, list_models
from .stats import count_macs, count_params, model_summary
from .weights import load_weights, read_state_dict, save_weights

__version__ = "0.1.0"
__all__ = [
    "create_model", "list_models", "load_weights", "save_weights", "read_state_dict",
    "count_params", "count_macs", "model_summary", "FeatureInfo", "Predictor", "__version__",
]
