"""Loading and saving weights: safe, strict, adaptive."""

import os

import pytest
import torch

import resnetlab
from resnetlab.models.weights import adapt_first_conv, read_state_dict


def test_safetensors_round_trip(tmp_path):
    model = resnetlab.create_model("resnet20").eval()
    path = resnetlab.save_weights(model, tmp_path / "r20.safetensors", metadata={"model": "resnet20"})
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # temp file renamed away
    loaded = resnetlab.create_model("resnet20", weights=path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_save_refuses_other_suffix(tmp_path):
    with pytest.raises(ValueError, match="safetensors"):
        resnetlab.save_weights(resnetlab.create_model("resnet20"), tmp_path / "w.pth")


def test_training_checkpoint_and_ddp_prefix(tmp_path):
    model = resnetlab.create_model("resnet20")
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / "ckpt.pt"
    torch.save({"model": sd, "epoch": 3, "optimizer": {"lr": 0.1}}, path)
    loaded = resnetlab.create_model("resnet20", weights=path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


class Payload:
    """Unpickling this object runs code: a malicious "weights" file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "x": Payload(marker)}, path)
    with pytest.raises(ValueError, match="refused") as err:
        resnetlab.create_model("resnet20", weights=path)
    assert str(path) in str(err.value) and "mkdir" in str(err.value)
    assert not os.path.exists(marker)


def test_non_tensor_entries_are_refused(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"conv1.weight": torch.zeros(1), "note": "hello"}, path)
    with pytest.raises(ValueError, match="'note' is a str"):
        read_state_dict(path)
    path2 = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path2)
    with pytest.raises(ValueError, match="found list"):
        read_state_dict(path2)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_state_dict(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="bad.pth"):
        read_state_dict(bad)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="bad.safetensors"):
        read_state_dict(bad_st)


def test_strict_error_lists_missing_unexpected_and_mismatched(tmp_path):
    sd = resnetlab.create_model("resnet18").state_dict()
    del sd["layer1.0.conv1.weight"]
    sd["extra.weight"] = torch.zeros(3)
    sd["layer2.0.conv2.weight"] = torch.zeros(1, 1, 3, 3)
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError) as err:
        resnetlab.create_model("resnet18", weights=path)
    msg = str(err.value)
    assert "missing keys (1): layer1.0.conv1.weight" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "layer2.0.conv2.weight: file (1, 1, 3, 3) vs model (128, 128, 3, 3)" in msg
    report = resnetlab.load_weights(resnetlab.create_model("resnet18"), path, strict=False)
    assert report.missing == ["layer1.0.conv1.weight"] and report.unexpected == ["extra.weight"]


def test_plain_net_weights_do_not_fit_the_residual_net(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(resnetlab.create_model("plain18").state_dict(), path)
    with pytest.raises(ValueError, match="missing keys.*downsample"):
        resnetlab.create_model("resnet18", weights=path)


def test_num_classes_change_reinitialises_the_classifier(tmp_path, caplog):
    source = resnetlab.create_model("resnet18")
    path = tmp_path / "r18.pth"
    torch.save(source.state_dict(), path)
    model = resnetlab.create_model("resnet18", num_classes=10, weights=path)
    assert "classifier fc re-initialised for 10 classes: the file has 1000 classes" in caplog.text
    assert model.fc.out_features == 10
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


@pytest.mark.parametrize("name", ["resnet18", "vgg16", "densenet121", "xception", "resnet18d"])
def test_grayscale_adaptation_sums_rgb(name, tmp_path, caplog):
    source = resnetlab.create_model(name).eval()
    path = tmp_path / "w.safetensors"
    resnetlab.save_weights(source, path)
    gray = resnetlab.create_model(name, in_chans=1, weights=path).eval()
    assert "adapted from 3 to 1 input channels" in caplog.text
    s = max(source.min_input_size, 32)
    x = torch.rand(1, 1, s, s)
    with torch.no_grad():  # a gray image equals the RGB net on that image repeated 3 times
        torch.testing.assert_close(gray(x), source(x.repeat(1, 3, 1, 1)), atol=1e-4, rtol=1e-4)


def test_adapt_first_conv_many_channels_keeps_scale():
    w = torch.randn(8, 3, 3, 3)
    w5 = adapt_first_conv(w, 5)
    # channels repeat cyclically (R, G, B, R, G), scaled by 3/5 so that the summed input weight keeps its size
    torch.testing.assert_close(w5, torch.cat([w, w[:, :2]], 1) * 0.6)
    # with a whole number of repeats the scale is exact: an RGB image given twice over 6 channels gets the
    # RGB net's response, and a gray image as 1 channel gets the response to gray repeated in R, G and B
    x = torch.randn(2, 3, 9, 9)
    ref = torch.nn.functional.conv2d(x, w)
    torch.testing.assert_close(torch.nn.functional.conv2d(x.repeat(1, 2, 1, 1), adapt_first_conv(w, 6)), ref,
                               atol=1e-5, rtol=1e-5)
    gray = x[:, :1]
    torch.testing.assert_close(torch.nn.functional.conv2d(gray, adapt_first_conv(w, 1)),
                               torch.nn.functional.conv2d(gray.repeat(1, 3, 1, 1), w), atol=1e-5, rtol=1e-5)
    assert adapt_first_conv(w, 3) is w


def test_save_weights_is_atomic_and_shared(tmp_path, monkeypatch):
    import stat

    import safetensors.torch

    model = resnetlab.create_model("resnet20").eval()
    path = resnetlab.save_weights(model, tmp_path / "w.safetensors")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not the private mode of its temporary file
    before = path.read_bytes()

    def killed(tensors, filename, metadata=None):
        open(filename, "wb").write(b"half a file")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(safetensors.torch, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        resnetlab.save_weights(resnetlab.create_model("resnet20"), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_a_backbone_without_classifier_loads_into_a_classifier():
    """A self-supervised backbone (num_classes=0: no fc tensors at all) starts a classifier: every trunk tensor
    loads, the head keeps its fresh initialisation, and the report says so; a file missing a trunk tensor
    still fails."""
    import torch

    from resnetlab import create_model
    from resnetlab.models.weights import load_weights

    backbone = create_model("resnet18", num_classes=0, stem="cifar")
    model = create_model("resnet18", num_classes=10, stem="cifar")
    head = model.fc.weight.detach().clone()
    report = load_weights(model, backbone.state_dict())
    assert report.ok and report.notes == ["classifier fc initialised afresh: the file is a backbone without one"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in backbone.state_dict().items())
    assert torch.equal(model.fc.weight, head)
    state = backbone.state_dict()
    del state["layer4.1.bn2.weight"]
    with pytest.raises(ValueError, match=r"missing keys \(1\): layer4.1.bn2.weight"):
        load_weights(create_model("resnet18", num_classes=10, stem="cifar"), state)
