"""Analysis: the residual story, measured — gradient flow, degradation, shortcut and BN ablations."""

from .experiments import run_gradflow
from .gradflow import BlockFlow, LayerGrad, measure, ratios, weight_layers
from .report import read_report, to_html

__all__ = ["run_gradflow", "measure", "ratios", "weight_layers", "LayerGrad", "BlockFlow", "read_report", "to_html"]
