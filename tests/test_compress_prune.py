"""Structured pruning: residual coupling respected, widths saved without pickling and read back anywhere."""

import json
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn as nn

import resnetlab
from extras_helpers import need
from resnetlab.compress import PruneConfig, prune_model
from resnetlab.models import create_model, get_entry
from resnetlab.models.stats import count_macs
from resnetlab.models.weights import save_weights
from resnetlab.models.widths import WIDTHS_KEY, layer_widths

need("torch_pruning", "compress")
warnings.filterwarnings("ignore", module="torch_pruning")


def _size(name: str) -> int:
    if get_entry(name).input_size[1] == 32:
        return 32
    return 80 if name in ("inception_v3", "xception") else 64


@pytest.mark.parametrize("name", resnetlab.list_models())
def test_every_zoo_model_prunes_runs_and_reloads_from_safetensors(name, tmp_path):
    """The whole zoo, VGG/Inception/Xception/DenseNet included: DepGraph traces their coupling too."""
    s = _size(name)
    model = create_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, s, s)
    res = prune_model(model, x, PruneConfig(ratio=0.5, keep=()))
    assert res.speedup > 2.0, res.macs  # half the channels of most layers: ~4x fewer MACs (ResNeXt's groups: less)
    assert res.macs[1] == count_macs(res.model, (3, s, s)) and res.params[1] < res.params[0]
    assert layer_widths(model) != layer_widths(res.model)  # the input model is untouched, a copy was pruned
    path = save_weights(res.model, tmp_path / "p.safetensors")
    again = create_model(name, num_classes=10, weights=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), res.model(x), rtol=0, atol=0)


def _zero(bn: nn.BatchNorm2d, channels) -> None:
    with torch.no_grad():
        bn.weight[list(channels)] = 0
        bn.bias[list(channels)] = 0


def _dead_option_a(model) -> None:
    """Kill channels so that exactly half of every group carries zeros, option-A identities included:
    stage 1 loses 0..7; stage 2's identity carries 0..15 of stage 1 (0..7 dead) and pads 16..31, so its
    branch dies at 0..7 and 16..23; stage 3 likewise at {0..7, 16..23} and 32..47."""
    dead = {"layer1": range(0, 8), "layer2": [*range(0, 8), *range(16, 24)],
            "layer3": [*range(0, 8), *range(16, 24), *range(32, 48)]}
    _zero(model.bn1, dead["layer1"])
    for stage, chans in dead.items():
        for block in getattr(model, stage):
            _zero(block.bn1, range(block.bn1.num_features // 2))
            _zero(block.bn2, chans)


def _dead_option_b(model) -> None:
    for m in model.modules():  # projections carry the stream: the first half of every BN dies
        if isinstance(m, nn.BatchNorm2d):
            _zero(m, range(m.num_features // 2))


@pytest.mark.parametrize("name,kill,size", [("resnet20", _dead_option_a, 32), ("resnet18", _dead_option_b, 64)])
def test_pruning_exactly_the_dead_channels_keeps_the_outputs(name, kill, size):
    """If coupling across the additions (and option A's zero-padding identity) were wrong, live channels
    would go, or the wrong ones would be joined, and the outputs would move."""
    model = create_model(name, num_classes=10).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    kill(model)
    x = torch.randn(4, 3, size, size)
    res = prune_model(model, x, PruneConfig(ratio=0.5, importance="bn", keep=(), round_to=1))
    with torch.no_grad():
        torch.testing.assert_close(res.model(x), model(x), rtol=1e-5, atol=1e-5)
    assert res.model.layer1[0].conv2.out_channels == model.layer1[0].conv2.out_channels // 2


def test_reload_in_a_fresh_process_gives_the_same_outputs(tmp_path):
    model = create_model("resnet20").eval()
    x = torch.randn(3, 3, 32, 32)
    res = prune_model(model, x, PruneConfig(ratio=0.3, importance="l1"))
    save_weights(res.model, tmp_path / "p.safetensors")
    torch.save({"x": x, "y": res.model(x).detach()}, tmp_path / "io.pt")
    code = ("import sys, torch, resnetlab\n"
            f"io = torch.load({str(tmp_path / 'io.pt')!r}, weights_only=True)\n"
            f"m = resnetlab.create_model('resnet20', weights={str(tmp_path / 'p.safetensors')!r}).eval()\n"
            "d = (m(io['x']) - io['y']).abs().max().item()\n"
            "print(d); sys.exit(0 if d == 0 else 1)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_round_to_and_keep():
    model = create_model("resnet18", num_classes=10).eval()
    res = prune_model(model, torch.randn(2, 3, 64, 64), PruneConfig(ratio=0.4, round_to=8, keep=("stem", "fc")))
    convs = {n: m for n, m in res.model.named_modules() if isinstance(m, nn.Conv2d)}
    assert all(m.out_channels % 8 == 0 for m in convs.values())
    assert convs["conv1"].out_channels == 64  # kept: and with it the layer1 stream it feeds
    assert convs["layer1.0.conv2"].out_channels == 64
    assert convs["layer1.0.conv1"].out_channels < 64 and convs["layer4.1.conv2"].out_channels < 512
    with pytest.raises(ValueError, match="keep: 'layer9'"):
        prune_model(model, torch.randn(2, 3, 64, 64), PruneConfig(ratio=0.4, keep=("layer9",)))


def test_a_macs_target_is_met_by_the_least_pruning_that_meets_it():
    model = create_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    res = prune_model(model, x, PruneConfig(ratio=None, target_macs=0.5, round_to=1))
    assert res.macs[1] <= 0.5 * res.macs[0]
    looser = prune_model(model, x, PruneConfig(ratio=res.ratio - 0.02, round_to=1))
    assert looser.macs[1] > 0.5 * res.macs[0]
    with pytest.raises(ValueError, match="out of reach"):
        prune_model(model, x, PruneConfig(ratio=None, target_macs=0.001, round_to=8))


def test_taylor_importance_uses_gradients_and_needs_data():
    model = create_model("resnet20").eval()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    res = prune_model(model, x, PruneConfig(ratio=0.5, importance="taylor"), batches=lambda: [(x, y)])
    assert res.speedup > 2 and all(p.grad is None for p in res.model.parameters())
    with pytest.raises(ValueError, match="taylor.*needs training batches"):
        prune_model(model, x, PruneConfig(ratio=0.5, importance="taylor"))


@pytest.mark.parametrize("kwargs,match", [
    (dict(ratio=0.0), r"ratio must be in \(0, 1\)"), (dict(ratio=1.0), r"ratio must be in \(0, 1\)"),
    (dict(ratio=None, target_macs=1.5), r"target_macs must be in \(0, 1\)"),
    (dict(ratio=0.5, target_macs=0.5), "exactly one"), (dict(importance="l3"), "importance must be one of"),
])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PruneConfig(**kwargs)


def test_a_file_whose_widths_do_not_match_its_tensors_is_refused(tmp_path):
    model = create_model("resnet20").eval()
    res = prune_model(model, torch.randn(2, 3, 32, 32), PruneConfig(ratio=0.5))
    widths = layer_widths(res.model)
    widths["layer1.0.conv1"][2] += 8  # claims 8 more output channels than the tensor has
    path = save_weights(res.model, tmp_path / "bad.safetensors", metadata={WIDTHS_KEY: json.dumps(widths)})
    with pytest.raises(ValueError, match=r"bad.safetensors: the widths metadata says layer1.0.conv1 .* does not match"):
        create_model("resnet20", weights=path)
    good = save_weights(res.model, tmp_path / "good.safetensors")
    with pytest.raises(ValueError, match=r"does not fit(.|\n)*saved from a 'resnet20' model: create_model\('resnet20'"):
        create_model("resnet32", weights=good)


def test_a_pruned_model_fine_tunes_for_other_classes_and_grayscale(tmp_path):
    model = create_model("resnet20").eval()
    res = prune_model(model, torch.randn(2, 3, 32, 32), PruneConfig(ratio=0.5))
    path = save_weights(res.model, tmp_path / "p.safetensors")
    other = create_model("resnet20", num_classes=3, in_chans=1, weights=path)
    assert other.fc.out_features == 3 and other.conv1.in_channels == 1
    assert other.fc.in_features == res.model.fc.in_features == other.num_features
    assert other.feature_info.channels()[-1] == res.model.layer3[-1].bn2.num_features


def test_a_macs_target_is_found_where_pruning_is_not_monotonic_in_the_ratio():
    """With round_to=8 on a 16/32/64-wide CIFAR net, Torch-Pruning prunes nothing at max_layer_ratio and less at
    0.8 than at 0.75: a search that starts from the top of the range called a reachable target out of reach."""
    model = resnetlab.create_model("resnet20", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    res = prune_model(model, x, PruneConfig(ratio=None, target_macs=0.5, round_to=8, keep=("stem", "fc")))
    assert res.macs[1] <= 0.5 * res.macs[0] and res.ratio < 0.5
