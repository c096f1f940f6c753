"""Every registered model: forward and backward at a small size, and the shared interface."""

import pytest
import torch

import resnetlab
from model_helpers import small_input_size

ALL = resnetlab.list_models()


@pytest.mark.parametrize("name", ALL)
def test_forward_backward(name):
    model = resnetlab.create_model(name, num_classes=7)
    s = small_input_size(model)
    out = model(torch.randn(2, 3, s, s))
    assert out.shape == (2, 7)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", ALL)
def test_interface(name):
    model = resnetlab.create_model(name, num_classes=5, in_chans=1).eval()
    s = small_input_size(model)
    x = torch.randn(1, 1, s, s)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        torch.testing.assert_close(logits, model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.num_features)
        model.reset_classifier(3)
        assert model(x).shape == (1, 3) and model.num_classes == 3
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features)


@pytest.mark.parametrize("name", ALL)
def test_features_only(name):
    base = resnetlab.create_model(name)
    n = len(base.feature_info)
    model = resnetlab.create_model(name, features_only=True).eval()
    assert model.out_indices == tuple(range(1, n))
    s = max(small_input_size(base), 64)
    with torch.no_grad():
        feats = model(torch.randn(1, 3, s, s))
    assert [f.shape[1] for f in feats] == model.feature_info.channels()
    sizes = [f.shape[-1] for f in feats]
    assert sizes == sorted(sizes, reverse=True)
    assert set(model.state_dict()) <= set(base.state_dict())  # same names: weights load unchanged
    assert not any(k.startswith(base.classifier_name + ".") for k in model.state_dict())


def test_resnet18_backbone_gives_c2_to_c5():
    model = resnetlab.create_model("resnet18", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    feats = model(torch.randn(1, 3, 224, 224))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    assert model.feature_info.channels() == [64, 128, 256, 512]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    partial = resnetlab.create_model("resnet18", features_only=True, out_indices=(2,))
    assert not hasattr(partial, "layer3")  # stages past the last map are not even kept


def test_features_only_bad_indices():
    with pytest.raises(ValueError, match="out_indices"):
        resnetlab.create_model("resnet18", features_only=True, out_indices=(5,))
    with pytest.raises(ValueError, match="features_only"):
        resnetlab.create_model("resnet18", out_indices=(1,))


def test_features_only_output_equals_classifier_trunk():
    torch.manual_seed(0)
    model = resnetlab.create_model("resnet18").eval()
    backbone = resnetlab.models.FeatureExtractor(model, out_indices=(4,))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[0], model.forward_features(x))


def test_model_options_reach_the_model():
    m = resnetlab.create_model("resnet18", stem="cifar", num_classes=10)
    assert not hasattr(m, "maxpool") and m.conv1.kernel_size == (3, 3)
    z = resnetlab.create_model("resnet50", zero_init_residual=True)
    assert all(not b.bn3.weight.any() for layer in (z.layer1, z.layer4) for b in layer)
    d = resnetlab.create_model("resnet18", drop_path_rate=0.2)
    rates = [b.drop_path.p for layer in (d.layer1, d.layer2, d.layer3, d.layer4) for b in layer
             if hasattr(b.drop_path, "p")]
    assert rates == sorted(rates) and rates[-1] == pytest.approx(0.2)


def test_drop_path_is_random_in_training_only():
    m = resnetlab.create_model("resnet20", drop_path_rate=0.5)
    x = torch.randn(4, 3, 32, 32)
    m.train()
    with torch.no_grad():
        assert not torch.equal(m(x), m(x))
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x))


def test_plain_net_refuses_drop_path():
    with pytest.raises(ValueError, match="plain"):
        resnetlab.create_model("plain18", drop_path_rate=0.1)
