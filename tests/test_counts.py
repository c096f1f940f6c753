"""Parameter counts and MACs against published figures."""

import pytest
import torch
import torchvision

import resnetlab
from resnetlab.models.registry import get_entry

PUBLISHED = [
    ("resnet18", None, {}, 11_689_512),  # torchvision / He et al. 2015
    # He et al. 2015 §4.2, CIFAR-10 networks (10 classes)
    ("resnet20", 10, {}, 269_722),
    ("resnet56", 10, {}, 853_018),
    ("resnet110", 10, {}, 1_727_962),
    ("resnet18", 10, {"stem": "cifar"}, 11_173_962),  # ResNet-18, CIFAR stem (kuangliu/pytorch-cifar)
    ("se_resnet50", None, {}, 28_088_024),  # Hu et al. 2018: 28.09M (Cadene's pretrainedmodels: 28,088,024)
    ("wrn28_10", 10, {}, 36_479_194),  # Zagoruyko & Komodakis 2016: WRN-28-10, 36.5M
    # Chollet 2017 / Keras: 22,910,480 in all, minus 54,528 BN running statistics (buffers in PyTorch)
    ("xception", None, {}, 22_855_952),
    ("resnet18d", None, {}, 11_708_744),  # timm resnet18d: 11.71M
]


@pytest.mark.parametrize("name,num_classes,options,expected", PUBLISHED,
                         ids=[f"{p[0]}-{p[1]}-{p[2]}" for p in PUBLISHED])
def test_published_parameter_counts(name, num_classes, options, expected):
    model = resnetlab.create_model(name, num_classes=num_classes, **options)
    assert resnetlab.count_params(model) == expected


TV_MODELS = [n for n in resnetlab.list_models() if get_entry(n).torchvision]


@pytest.mark.parametrize("name", TV_MODELS)
def test_parameter_counts_equal_torchvision(name):
    options = {"aux_logits": True, "init_weights": True} if name == "inception_v3" else {}
    tv_model = getattr(torchvision.models, get_entry(name).torchvision)(weights=None, **options)
    ours = resnetlab.count_params(resnetlab.create_model(name, aux_logits=True) if options else name)
    assert ours == sum(p.numel() for p in tv_model.parameters())


def _analytic_macs(model, size):
    """Conv and linear MACs from output shapes: cout*H*W * (cin/groups)*kh*kw, plus in*out."""
    total = 0

    def hook(m, _inp, out):
        nonlocal total
        if isinstance(m, torch.nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, torch.nn.Linear):
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *size))
    for h in handles:
        h.remove()
    return total


def test_resnet18_macs():
    # 1.814 G: convolutions and the classifier, as torchvision documents (1.81 GFLOPS). Counters
    # that add BN and the additions on top report the 1.82 G also seen in the literature.
    macs = resnetlab.count_macs("resnet18")
    assert macs == 1_814_073_344
    assert 1.81e9 < macs < 1.83e9
    assert macs == _analytic_macs(resnetlab.create_model("resnet18"), (3, 224, 224))
    # MACs scale with the input area; a real module gives the same count as the meta build
    model = resnetlab.create_model("resnet18")
    assert resnetlab.count_macs(model, (3, 224, 224)) == resnetlab.count_macs("resnet18")
    assert resnetlab.count_macs("resnet18", (3, 112, 112)) < resnetlab.count_macs("resnet18") / 3


def test_option_a_adds_no_parameters():
    assert resnetlab.count_params("resnet20") == resnetlab.count_params("plain20")
    a = resnetlab.create_model("resnet18", shortcut="A")
    assert resnetlab.count_params(a) == resnetlab.count_params("plain18")
    b, c = resnetlab.count_params("resnet18"), resnetlab.count_params(resnetlab.create_model("resnet18", shortcut="C"))
    assert resnetlab.count_params("plain18") < b < c


def test_list_models_covers_the_family():
    names = set(resnetlab.list_models())
    expected = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "plain18", "plain34",
                "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "plain20", "plain32", "plain44",
                "plain56", "plain110", "se_resnet18", "se_resnet34", "se_resnet50", "resnext50_32x4d",
                "wide_resnet50_2", "wrn28_10", "densenet121", "resnet18d", "vgg16", "inception_v3", "xception"}
    assert expected <= names
    plain = ["plain18", "plain20", "plain32", "plain34", "plain44", "plain56", "plain110"]
    assert resnetlab.list_models("plain*") == plain  # natural order
