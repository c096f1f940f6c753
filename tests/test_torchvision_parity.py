"""torchvision state dicts load strictly into our models and give the same outputs."""

import pytest
import torch
import torchvision

import resnetlab
from resnetlab.models.registry import get_entry

TV_MODELS = [n for n in resnetlab.list_models() if get_entry(n).torchvision]


@pytest.mark.parametrize("name", TV_MODELS)
def test_torchvision_state_dict_loads_and_matches(name, tmp_path):
    options = {"aux_logits": True} if name == "inception_v3" else {}
    tv_options = dict(options, init_weights=True) if options else {}
    tv_model = getattr(torchvision.models, get_entry(name).torchvision)(weights=None, **tv_options).eval()
    with torch.no_grad():  # give BN non-trivial statistics so a mis-wired layer would show
        for m in tv_model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    path = tmp_path / f"{name}.pth"
    torch.save(tv_model.state_dict(), path)
    ours = resnetlab.create_model(name, weights=path, **options).eval()
    ours.load_state_dict(tv_model.state_dict(), strict=True)  # the plain PyTorch way works too
    size = 299 if name == "inception_v3" else 64
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, got = tv_model(x), ours(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_inception_weights_with_aux_head_load_into_default_model(tmp_path, caplog):
    tv_model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True).eval()
    path = tmp_path / "inc.pth"
    torch.save(tv_model.state_dict(), path)
    ours = resnetlab.create_model("inception_v3", weights=path).eval()  # aux_logits=False by default
    assert "AuxLogits" in caplog.text
    x = torch.randn(1, 3, 80, 80)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv_model(x), atol=1e-5, rtol=1e-5)


def test_dilated_resnet18_keeps_torchvision_weights(tmp_path):
    """torchvision refuses dilation for BasicBlock nets; ours keeps the same parameters."""
    tv_model = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(tv_model.state_dict(), path)
    model = resnetlab.create_model("resnet18", weights=path, replace_stride_with_dilation=(False, True, True),
                                   features_only=True).eval()
    feats = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 8, 8]  # output stride 8, as DeepLabV3 wants
    assert model.feature_info.reduction() == [4, 8, 8, 8]
    assert model.layer4[0].conv2.dilation == (4, 4) and model.layer4[0].conv1.dilation == (2, 2)
