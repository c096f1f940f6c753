"""Bad input gets a clear error that repeats what it got."""

import pytest
import torch

import resnetlab
from resnetlab.models.registry import register_model
from resnetlab.models.resnet import ResNet


def test_unknown_model_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown model 'resnet19'.*close matches: .*resnet18"):
        resnetlab.create_model("resnet19")


def test_unknown_option_lists_close_matches():
    with pytest.raises(ValueError, match=r"does not take option 'drop_path'.*close matches: drop_path_rate"):
        resnetlab.create_model("resnet18", drop_path=0.1)
    with pytest.raises(ValueError, match=r"'vgg16' does not take option 'stem'"):
        resnetlab.create_model("vgg16", stem="cifar")


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        @register_model()
        def resnet18(**kwargs) -> ResNet:
            return ResNet(**kwargs)


def test_builder_without_class_annotation_is_refused():
    with pytest.raises(TypeError, match="annotated with the nn.Module class"):
        @register_model()
        def not_a_model(**kwargs):
            return None


def test_wrong_channel_count():
    model = resnetlab.create_model("resnet18")
    with pytest.raises(ValueError, match=r"expects 3 input channel\(s\), got 1"):
        model(torch.randn(1, 1, 64, 64))
    backbone = resnetlab.create_model("resnet18", features_only=True)
    with pytest.raises(ValueError, match="got 4"):
        backbone(torch.randn(1, 4, 64, 64))


@pytest.mark.parametrize("name,size,minimum", [("resnet18", 16, 32), ("inception_v3", 64, 75),
                                               ("xception", 64, 71), ("vgg16", 31, 32)])
def test_input_too_small(name, size, minimum):
    model = resnetlab.create_model(name)
    with pytest.raises(ValueError, match=f"at least {minimum}x{minimum} pixels, got {size}x{size}"):
        model(torch.randn(1, 3, size, size))


def test_not_a_batch():
    with pytest.raises(ValueError, match=r"4-D input.*\(3, 32, 32\)"):
        resnetlab.create_model("resnet20")(torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match="ndarray"):
        import numpy as np

        resnetlab.create_model("resnet20")(np.zeros((1, 3, 32, 32)))


@pytest.mark.parametrize("kwargs,match", [({"stem": "huge"}, "stem must be"), ({"block": "triple"}, "block must be"),
                                          ({"replace_stride_with_dilation": (True,)}, "needs 3 entries"),
                                          ({"in_chans": 0}, "in_chans must be")])
def test_bad_constructor_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resnetlab.create_model("resnet18", **kwargs)
