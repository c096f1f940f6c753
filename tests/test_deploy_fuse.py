"""Conv+BN folding: the folded model computes what the original computes, for every model in the zoo."""

import pytest
import torch
import torch.nn as nn

import resnetlab
from model_helpers import small_input_size
from resnetlab.deploy import conv_bn_pairs, fuse_conv_bn, inference_model

ALL = resnetlab.list_models()


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so folding has something to fold."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model.eval()


@pytest.mark.parametrize("name", ALL)
def test_fused_equals_unfused(name):
    torch.manual_seed(0)
    model = _randomise_bn(resnetlab.create_model(name, num_classes=7))
    s = small_input_size(model)
    x = torch.randn(2, model.in_chans, s, s)
    fused = fuse_conv_bn(model)
    with torch.no_grad():
        ref, got = model(x), fused(x)
    scale = ref.abs().max().clamp(min=1.0)
    assert (got - ref).abs().max() / scale < 1e-4  # float rounding compounds over 110 layers
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    left = sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert left == n_bn - fused.fused_pairs
    assert not fused.training and model.training is False


def test_resnet18_folds_every_bn_and_keeps_layer_names():
    model = _randomise_bn(resnetlab.create_model("resnet18"))
    pairs = conv_bn_pairs(model)
    assert ("conv1", "bn1") in pairs and ("layer1.0.conv1", "layer1.0.bn1") in pairs
    assert ("layer2.0.downsample.0", "layer2.0.downsample.1") in pairs and len(pairs) == 20
    fused = fuse_conv_bn(model)
    keys = set(fused.state_dict())
    assert "layer1.0.conv1.weight" in keys and "layer1.0.conv1.bias" in keys
    assert not any(k.startswith("layer1.0.bn1") for k in keys)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(fused(x), model(x), atol=1e-5)
    # the original is untouched (a copy was folded)
    assert isinstance(model.layer1[0].bn1, nn.BatchNorm2d)


def test_preactivation_bns_are_left_alone():
    # wrn28_10's pre-activation blocks run BN -> ReLU -> conv: nothing to fold into a preceding conv
    model = _randomise_bn(resnetlab.create_model("wrn28_10", layers=(1, 1, 1), widths=(16, 32, 64)))
    fused = fuse_conv_bn(model)
    assert 0 < fused.fused_pairs < sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_inference_model_is_frozen_and_channels_last():
    model = _randomise_bn(resnetlab.create_model("resnet20"))
    net = inference_model(model)
    assert not any(p.requires_grad for p in net.parameters())
    assert net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x.contiguous(memory_format=torch.channels_last)), model(x), atol=1e-5)


def test_fuse_rejects_non_modules():
    with pytest.raises(TypeError, match="nn.Module"):
        fuse_conv_bn("resnet18")
