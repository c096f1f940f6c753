"""Analysis: the residual story, measured — gradient flow, degradation, shortcut and BN ablations."""

from .experiments import run_degradation, run_experiment, run_gradflow
from .gradflow import BlockFlow, LayerGrad, measure, ratios, weight_layers
from .report import provenance, read_report, to_html
from .verdicts import compare, degradation_verdict, seed_stats

__all__ = [
           "BlockFlow",
           "LayerGrad",
           "compare",
           "degradation_verdict",
           "measure",
           "provenance",
           "ratios",
           "read_report",
           "run_degradation",
           "run_experiment",
           "run_gradflow",
           "seed_stats",
           "to_html",
           "weight_layers",
]
