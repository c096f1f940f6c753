"""Models: one parameterised ResNet, its family, and the models the article compares it with."""

from . import tv_models, xception, zoo  # noqa: F401  (registers every model)
from .base import FeatureExtractor, FeatureInfo, FeatureSpec
from .factory import create_model
from .registry import get_entry, list_models, register_model
from .resnet import BasicBlock, Bottleneck, PreActBlock, ResNet
from .tv_models import VGG, DenseNet, InceptionV3
from .xception import Xception

__all__ = [
    "create_model", "list_models", "register_model", "get_entry",
    "ResNet", "BasicBlock", "Bottleneck", "PreActBlock", "VGG", "InceptionV3", "DenseNet", "Xception",
    "FeatureExtractor", "FeatureInfo", "FeatureSpec",
]
