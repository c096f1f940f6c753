"""Why did it say that? Class-activation maps for any model of the zoo (``explain``), written as panels
and galleries (``explain_files``, ``explain_split``), with their faithfulness measured against a random
and a centre-bias map and sanity-checked by randomising the model (``evaluate_explanations``).

The package itself is callable: ``resnetlab.explain(model, images, method="gradcam")`` is :func:`explain`."""

import sys
import types

from .api import Explanation, explain, load_explainable, resolve_targets
from .cam import METHODS, cam_maps, capture, normalize_maps, upsample_maps
from .faithfulness import (METRICS, average_drop, baseline_maps, compare, deletion_insertion, noisy_linear_impute,
                           road, score_maps)
from .files import explain_files, explain_split
from .inputs import SplitInputs, load_split_inputs
from .layers import find_layer, spatial_layers
from .report import evaluate_explanations
from .sanity import cascading_randomization, label_randomization, rank_correlation

__all__ = [
    "explain", "Explanation", "load_explainable", "resolve_targets", "METHODS", "cam_maps", "capture",
    "normalize_maps", "upsample_maps", "find_layer", "spatial_layers", "METRICS", "baseline_maps", "compare",
    "deletion_insertion", "noisy_linear_impute", "road", "average_drop", "score_maps", "explain_files",
    "explain_split", "SplitInputs", "load_split_inputs",
    "evaluate_explanations", "cascading_randomization", "label_randomization", "rank_correlation",
]


class _CallableModule(types.ModuleType):
    """``resnetlab.explain(model_or_checkpoint, images, ...)`` calls :func:`explain`, while
    ``resnetlab.explain.explain_split`` and the rest stay reachable as the package's names."""

    def __call__(self, *args, **kwargs) -> Explanation:
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
