"""Shortcut connections: counted where they run, and correct in the stride-only case."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import resnetlab
from resnetlab.models.resnet import BasicBlock, Bottleneck, PreActBlock


class CountResidualAdds(TorchDispatchMode):
    """Counts element-wise additions of two feature maps of equal shape as they execute."""

    ADDS = {torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.ADDS and len(args) >= 2 and all(isinstance(a, torch.Tensor) for a in args[:2]):
            if args[0].dim() == 4 and args[0].shape == args[1].shape:
                self.count += 1
        return func(*args, **(kwargs or {}))


def residual_adds(model, size=32):
    model.eval()
    with torch.no_grad(), CountResidualAdds() as counter:
        model(torch.randn(1, model.in_chans, size, size))
    return counter.count


@pytest.mark.parametrize("name,adds", [("resnet18", 8), ("resnet34", 16), ("resnet50", 16), ("resnet20", 9),
                                       ("resnet56", 27), ("wrn28_10", 12), ("xception", 12)])
def test_residual_nets_add_shortcuts(name, adds):
    model = resnetlab.create_model(name, num_classes=10)
    assert residual_adds(model, max(model.min_input_size, 32)) == adds


@pytest.mark.parametrize("name", ["plain18", "plain34", "plain20", "plain56", "vgg16"])
def test_plain_nets_add_nothing(name):
    assert residual_adds(resnetlab.create_model(name, num_classes=10)) == 0


def test_plain_twin_has_the_same_layers_minus_projections():
    res, plain = resnetlab.create_model("resnet18"), resnetlab.create_model("plain18")
    res_keys, plain_keys = set(res.state_dict()), set(plain.state_dict())
    assert plain_keys < res_keys
    assert all(".downsample." in k for k in res_keys - plain_keys)


@pytest.mark.parametrize("option", ["A", "B", "C"])
@pytest.mark.parametrize("block", [BasicBlock, PreActBlock])
def test_stride_two_block_with_equal_channels(option, block):
    """The shape changes through the stride alone: a channel-only check would crash here."""
    b = block(64, 64, stride=2, shortcut=option).eval()
    assert b.downsample is not None and b.shortcut_kind == ("A" if option == "A" else "projection")
    x = torch.randn(2, 64, 16, 16)
    with torch.no_grad():
        assert b(x).shape == (2, 64, 8, 8)


@pytest.mark.parametrize("option", ["A", "B", "C"])
def test_stride_two_bottleneck_with_equal_channels(option):
    b = Bottleneck(256, 64, stride=2, shortcut=option).eval()
    with torch.no_grad():
        assert b(torch.randn(1, 256, 8, 8)).shape == (1, 256, 4, 4)


def test_shortcut_option_semantics():
    assert BasicBlock(64, 64, shortcut="B").downsample is None  # identity where shapes match
    assert BasicBlock(64, 64, shortcut="C").shortcut_kind == "projection"  # C projects always
    a = BasicBlock(16, 32, stride=2, shortcut="A")
    assert sum(p.numel() for p in a.downsample.parameters()) == 0
    x = torch.randn(1, 16, 8, 8)
    y = a.downsample(x)  # option A: subsampled identity, extra channels are zeros
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and not y[:, 16:].any()
    assert BasicBlock(64, 64, shortcut=None).shortcut_kind is None


def test_bad_shortcut_option():
    with pytest.raises(ValueError, match="shortcut must be"):
        resnetlab.create_model("resnet18", shortcut="D")
