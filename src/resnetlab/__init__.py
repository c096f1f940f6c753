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

from .data.preprocess import Preprocess  # noqa: E402
from .deploy import Predictor  # noqa: E402
from .deploy.api import export_checkpoint as export  # noqa: E402
from .deploy.api import quantize_checkpoint as quantize  # noqa: E402
from .eval import EvalResult, evaluate, load_trained  # noqa: E402
from . import explain  # noqa: E402  (a callable package: resnetlab.explain(model, images, ...))
from .models import FeatureInfo, create_model, list_models  # noqa: E402
from .models.stats import count_macs, count_params, model_summary  # noqa: E402
from .models.weights import load_weights, read_state_dict, save_weights  # noqa: E402
from .train.config import TrainConfig  # noqa: E402
from .train.engine import Trainer, TrainResult, fit  # noqa: E402

__all__ = [
    "create_model", "list_models", "load_weights", "save_weights", "read_state_dict",
    "count_params", "count_macs", "model_summary", "FeatureInfo", "Predictor", "Preprocess",
    "TrainConfig", "Trainer", "TrainResult", "fit", "evaluate", "EvalResult", "load_trained", "export", "quantize",
    "explain",
    "__version__",
]
