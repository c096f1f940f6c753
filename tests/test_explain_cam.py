"""Class-activation maps: each method checked against independent implementations (captum, pytorch-grad-cam),
in-place ReLUs, no growth over many calls, the automatic layer for every model in the zoo, and bad input."""

from __future__ import annotations

import copy
import gc

import numpy as np
import pytest
import torch
import torch.nn as nn

from resnetlab.explain import cam_maps, explain, find_layer, normalize_maps
from resnetlab.models import create_model, list_models


class Toy(nn.Module):
    """Two convolutions and a linear head; the explained layer keeps the input's size, so no library's
    resizing enters the comparison."""

    def __init__(self, in_chans: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu2(self.conv2(self.relu1(self.conv1(x)))).mean((2, 3)))


@pytest.fixture
def toy():
    torch.manual_seed(0)
    model = Toy().eval()
    x = torch.randn(3, 3, 9, 9)
    return model, x, torch.tensor([0, 2, 1])


def test_gradcam_matches_captum_to_1e_5(toy):
    from captum.attr import LayerGradCam

    model, x, t = toy
    ours, _, _ = cam_maps(model, model.relu2, x, t, "gradcam")
    ref = LayerGradCam(model, model.relu2).attribute(x, target=t, relu_attributions=True).squeeze(1)
    assert ours.shape == (3, 9, 9) and ref.abs().max() > 0
    torch.testing.assert_close(ours, ref.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer", ["relu2", "relu1"])  # relu1: gradients that vary by pixel (via conv2)
@pytest.mark.parametrize("method, cls", [("gradcam", "GradCAM"), ("gradcam++", "GradCAMPlusPlus"),
                                         ("xgradcam", "XGradCAM"), ("layercam", "LayerCAM"),
                                         ("scorecam", "ScoreCAM"), ("ablationcam", "AblationCAM")])
def test_every_method_matches_pytorch_grad_cam(toy, method, cls, layer):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x, t = toy
    ours, _, _ = cam_maps(model, getattr(model, layer), x, t, method, batch_size=4)
    plain = copy.deepcopy(model)  # pytorch-grad-cam's hooks need relu1 out of place
    plain.relu1.inplace = False
    with getattr(pytorch_grad_cam, cls)(model=plain, target_layers=[getattr(plain, layer)]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(i)) for i in t])  # min-max scaled
    np.testing.assert_allclose(normalize_maps(ours).numpy(), ref, atol=1e-5)
    if layer == "relu1" and method in ("gradcam", "xgradcam", "gradcam++"):  # where these three differ
        other = {"gradcam": "xgradcam", "xgradcam": "gradcam++", "gradcam++": "gradcam"}[method]
        theirs, _, _ = cam_maps(model, model.relu1, x, t, other, batch_size=4)
        assert (normalize_maps(ours) - normalize_maps(theirs)).abs().max() > 1e-2


def test_eigencam_is_the_first_principal_component(toy):
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    model, x, _ = toy
    ours, _, _ = cam_maps(model, model.relu2, x, None, "eigencam")
    with torch.no_grad():
        acts = model.relu2(model.conv2(model.relu1(model.conv1(x)))).numpy()
    proj = get_2d_projection(acts)  # up to the sign, which we fix to correlate with the mean activation
    for i in range(len(x)):
        mean = acts[i].mean(0).ravel()
        sign = 1 if np.corrcoef(proj[i].ravel(), mean)[0, 1] > 0 else -1
        # 1e-4, not 1e-5: two SVDs (LAPACK through numpy and torch) of a float32 matrix
        np.testing.assert_allclose(ours[i].numpy(), np.maximum(sign * proj[i], 0), atol=1e-4)


def test_the_package_is_callable_and_keeps_its_names(toy):
    import resnetlab
    import resnetlab.explain as rx

    model, x, t = toy
    ex = resnetlab.explain(model, x, layer="relu2", target=t.tolist(), classes=["a", "b", "c", "d"])
    assert ex.maps.shape == (3, 9, 9) and ex.layer == "relu2" and ex.topk(1)[0][0][0] in "abcd"
    assert rx is resnetlab.explain and callable(rx.explain_split) and rx.METHODS[0] == "gradcam"


def test_in_place_relu_after_the_layer_does_not_corrupt_the_map():
    torch.manual_seed(1)
    model = create_model("resnet20", num_classes=4, layers=(1, 1, 1)).eval()
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([1, 3])
    # layer1.0.bn1's output goes straight into ReLU(inplace=True)
    ours, _, _ = cam_maps(model, dict(model.named_modules())["layer1.0.bn1"], x, t, "gradcam")
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    from captum.attr import LayerGradCam

    ref = LayerGradCam(plain, dict(plain.named_modules())["layer1.0.bn1"]).attribute(
        x, target=t, relu_attributions=True).squeeze(1)
    torch.testing.assert_close(ours, ref.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "ablationcam"])  # ablationcam: a second, editing hook
def test_a_thousand_calls_leave_no_hooks_grads_or_tensors_behind(toy, method):
    model, x, t = toy
    for _ in range(5):
        explain(model, x, method=method, layer="relu2", target=t.tolist())
    gc.collect()
    before = sum(torch.is_tensor(o) for o in gc.get_objects())
    for _ in range(1000):
        explain(model, x, method=method, layer="relu2", target=t.tolist())
    gc.collect()
    after = sum(torch.is_tensor(o) for o in gc.get_objects())
    assert after <= before  # nothing accumulates between calls
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_auto_layer_is_the_deepest_with_a_spatial_output(name):
    model = create_model(name, num_classes=3).eval()
    size = max(64, model.min_input_size)  # small inputs, as timm's registry-wide tests
    layer, _ = find_layer(model, "auto", (3, size, size))
    deepest, x = None, torch.zeros(1, 3, size, size)
    with torch.no_grad():  # the trunk applied by hand, no hooks: an independent answer
        for trunk_name, module in model.trunk():
            x = module(x)
            if x.dim() == 4 and min(x.shape[-2:]) > 1:
                deepest = trunk_name
    assert layer == deepest is not None


def test_auto_layer_of_resnet18_is_layer4_and_of_cifar_nets_layer3():
    assert find_layer(create_model("resnet18"), "auto", (3, 224, 224))[0] == "layer4"
    assert find_layer(create_model("resnet20"), "auto", (3, 32, 32))[0] == "layer3"


def test_bad_layers_targets_and_models_are_named(toy):
    model, x, _ = toy
    with pytest.raises(ValueError, match=r"layer 'layer9' is not a module of Toy; layers with a spatial output "
                                         r"at 9x9: conv1, relu1, conv2, relu2"):
        explain(model, x, layer="layer9")
    with pytest.raises(ValueError, match=r"target index 7 is out of range for 4 classes \(0..3\)"):
        explain(model, x, layer="relu2", target=7)
    with pytest.raises(ValueError, match="target class 'zebra' is not one of the model's classes: a, b, c, d"):
        explain(model, x, layer="relu2", target="zebra", classes=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="method must be one of"):
        explain(model, x, layer="relu2", method="gradcam+++")
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 9 * 9, 2))
    with pytest.raises(ValueError, match=r"has no layer with a spatial \(H, W > 1\) output"):
        explain(flat, x)
    with pytest.raises(ValueError, match=r"layer '1' outputs \(1, 2\) at 9x9; a map needs \(N, C, H, W\) with "
                                         r"H, W > 1; layers with a spatial output at 9x9: none"):
        explain(flat, x, layer="1")


def test_layers_that_cannot_carry_a_map_are_refused_with_the_candidates():
    net = create_model("resnet18", num_classes=3).eval()
    x = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"layer 'avgpool' outputs \(1, 512, 1, 1\) at 64x64; a map needs .* "
                                         r"layers with a spatial output at 64x64: conv1, bn1, relu, maxpool, layer1, "
                                         r"layer2, layer3, layer4$"):
        explain(net, x, layer="avgpool")
    inception = create_model("inception_v3", num_classes=3, aux_logits=True).eval()
    with pytest.raises(ValueError, match=r"layer 'AuxLogits.conv0' does not run in the model's forward pass"):
        explain(inception, torch.zeros(1, 3, 75, 75), layer="AuxLogits.conv0")
    assert all(not m._forward_hooks for m in inception.modules())
    shifted = create_model("inception_v3", num_classes=3, transform_input=True).eval()  # a trunk stage unnamed
    assert find_layer(shifted, "auto", (3, 75, 75))[0] == find_layer(inception, "auto", (3, 75, 75))[0]
    assert explain(net, x, layer="layer3.1").layer == "layer3.1"  # any module with a spatial output
