"""Fine-tuning from pretrained weights: what a linear probe, gradual unfreezing, layer decay and frozen batch
norm leave unchanged, checked tensor by tensor; and the pretrained weights' clear errors."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch

from resnetlab.models import create_model
from resnetlab.models import pretrained as pretrained_mod
from resnetlab.models.weights import save_weights
from resnetlab.train.engine import Trainer, fit
from resnetlab.train.finetune import parameter_depths
from train_helpers import tiny_config, write_tree


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 3-class run to start from, and a 2-class data set (one colour fewer) to fine-tune on."""
    root = tmp_path_factory.mktemp("ft")
    data3 = write_tree(root / "data3")
    data2 = root / "data2"
    shutil.copytree(data3, data2)
    for split in ("train", "test"):
        shutil.rmtree(data2 / split / "red")
    run = fit(tiny_config(data3, root / "pre", epochs=1))
    return run.run_dir / "best.pt", data2


def _state(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def _backbone_same(a: dict, b: dict) -> list[str]:
    """Backbone tensors (buffers included) that differ between two state dicts."""
    return [k for k in a if not k.startswith("fc.") and not torch.equal(a[k], b[k])]


def test_linear_probe_changes_nothing_but_the_head(source, tmp_path):
    ck, data2 = source
    result = fit(tiny_config(data2, tmp_path / "lin", pretrained=str(ck), finetune="linear", epochs=2, lr=0.1))
    before, after = _state(ck), _state(result.run_dir / "last.pt")
    assert _backbone_same(before, after) == []  # weights and BN running statistics, exactly
    assert after["fc.weight"].shape[0] == 2 and before["fc.weight"].shape[0] == 3  # the head re-made, 2 classes
    s = result.summary
    assert s["finetune"] == "linear" and s["pretrained"]["source"] == "file"
    assert s["pretrained"]["sha256"] == hashlib.sha256(ck.read_bytes()).hexdigest()
    assert torch.load(result.run_dir / "best.pt", weights_only=True)["pretrained"] == s["pretrained"]


def test_gradual_keeps_the_backbone_until_its_epoch_then_trains_it_and_resumes(source, tmp_path):
    ck, data2 = source
    cfg = tiny_config(data2, tmp_path / "grad", pretrained=str(ck), finetune="gradual", finetune_epochs=2, epochs=3,
                      backbone_lr_scale=0.5)
    steps_per_epoch = Trainer(cfg.replace(out=str(tmp_path / "probe"))).train_batches.num_batches
    head_only = fit(cfg.replace(max_steps=2 * steps_per_epoch))
    assert head_only.summary["epochs"] == 2
    assert _backbone_same(_state(ck), _state(head_only.run_dir / "last.pt")) == []
    done = fit(cfg.replace(max_steps=3 * steps_per_epoch), resume=head_only.run_dir)  # a resume may lift max_steps
    assert done.summary["epochs"] == 3
    changed = _backbone_same(_state(ck), _state(done.run_dir / "last.pt"))
    assert "conv1.weight" in changed and "layer3.0.conv2.weight" in changed


def test_layer_decay_and_backbone_scale_set_each_groups_learning_rate(source, tmp_path):
    ck, data2 = source
    cfg = tiny_config(data2, tmp_path / "ld", pretrained=str(ck), layer_decay=0.5, backbone_lr_scale=0.1, lr=0.2)
    trainer = Trainer(cfg)
    model = trainer.model
    depths = parameter_depths(model)
    assert depths["fc.weight"] == 0 and depths["layer3.0.conv1.weight"] == 1
    assert depths["layer1.0.conv1.weight"] == 3 and depths["conv1.weight"] == len(model.feature_info) == 4
    lr_of = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["fc.weight"])] == pytest.approx(0.2)
    assert lr_of[id(named["layer3.0.conv1.weight"])] == pytest.approx(0.2 * 0.1 * 0.5)
    assert lr_of[id(named["conv1.weight"])] == pytest.approx(0.2 * 0.1 * 0.5 ** 4)
    assert len(lr_of) == len(named)  # every parameter has a group


@pytest.mark.parametrize("name", ["vgg16", "densenet121"])
def test_layer_decay_reaches_every_stage_of_nets_whose_trunk_is_one_sequential(name):
    depths = parameter_depths(create_model(name, num_classes=3))
    assert sorted(set(depths.values())) == [0, 1, 2, 3, 4, 5]  # the head, then 5 stages down to the stem
    first = next(n for n in depths if n.startswith("features.") and n.endswith("weight"))
    assert depths[first] == 5


def test_the_logged_lr_is_the_heads(source, tmp_path):
    ck, data2 = source
    result = fit(tiny_config(data2, tmp_path / "lr", pretrained=str(ck), layer_decay=0.5, lr=0.2, schedule="constant",
                             epochs=1))
    assert result.summary["epochs"] == 1 and result.history[-1]["lr"] == pytest.approx(0.2)


def test_freeze_bn_keeps_running_statistics(source, tmp_path):
    ck, data2 = source
    result = fit(tiny_config(data2, tmp_path / "fbn", pretrained=str(ck), freeze_bn=True, epochs=1))
    before, after = _state(ck), _state(result.run_dir / "last.pt")
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])  # the weights did train


def test_pretrained_errors_name_the_file_before_training(source, tmp_path):
    ck, data2 = source
    other = save_weights(create_model("resnet18", num_classes=3), tmp_path / "r18.safetensors")
    with pytest.raises(ValueError, match=r"r18.safetensors does not fit ResNet"):
        Trainer(tiny_config(data2, tmp_path / "a", pretrained=str(other)))
    with pytest.raises(FileNotFoundError, match=r"pretrained weights not found: .*nope.pth"):
        Trainer(tiny_config(data2, tmp_path / "b", pretrained=str(tmp_path / "nope.pth")))
    with pytest.raises(ValueError, match="resnet20 has no torchvision twin with published weights"):
        Trainer(tiny_config(data2, tmp_path / "c", pretrained="torchvision"))
    assert not any((tmp_path / d / "last.pt").exists() for d in "abc")


def test_torchvision_weights_from_the_hub_cache_with_their_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(pretrained_mod, "download_file", _no_network)
    with pytest.raises(FileNotFoundError) as e:  # absent, no network: say which file goes where
        pretrained_mod.torchvision_weights("resnet18", progress=False)
    want = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(want) in str(e.value) and "download.pytorch.org/models/resnet18-f37072fd.pth" in str(e.value)
    assert "ResNet18_Weights.IMAGENET1K_V1" in str(e.value)
    want.parent.mkdir(parents=True, exist_ok=True)
    want.write_bytes(b"not the published file")
    with pytest.raises(ValueError, match="does not start with f37072fd"):
        pretrained_mod.torchvision_weights("resnet18")
    # a file whose hash does match its name (torchvision's published one cannot be fetched here): found and used
    torch.save(create_model("resnet18").state_dict(), tmp_path / "w.pth")
    prefix = hashlib.sha256((tmp_path / "w.pth").read_bytes()).hexdigest()[:8]
    name = f"resnet18-{prefix}.pth"
    shutil.copy(tmp_path / "w.pth", want.parent / name)
    monkeypatch.setattr(pretrained_mod, "_published", lambda m: ("ResNet18_Weights.TEST", f"https://x/{name}"))
    path, record = pretrained_mod.resolve_pretrained("torchvision", "resnet18")
    assert path == want.parent / name and record["source"] == "torchvision ResNet18_Weights.TEST"
    model = create_model("resnet18", num_classes=2, in_chans=1, weights=path)
    assert model.conv1.weight.shape == (64, 1, 7, 7)  # the first conv adapted to one channel, the head re-made


def test_torchvision_weights_are_downloaded_with_their_hash_checked(tmp_path, monkeypatch):
    """Where the network allows: fetched into the hub cache under its published name, its sha256 checked
    against the name's 8 hex digits; a file that fails the check leaves nothing behind."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    served = tmp_path / "served"
    served.mkdir()
    torch.save(create_model("resnet18").state_dict(), served / "w.pth")
    prefix = hashlib.sha256((served / "w.pth").read_bytes()).hexdigest()[:8]
    for name in (f"resnet18-{prefix}.pth", "resnet18-00000000.pth"):
        shutil.copy(served / "w.pth", served / name)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    monkeypatch.setattr(pretrained_mod, "_published",  # file:// is read by urllib as http would be
                        lambda m: ("ResNet18_Weights.TEST", (served / "resnet18-00000000.pth").as_uri()))
    with pytest.raises(ValueError, match="resnet18-00000000.pth"):
        pretrained_mod.torchvision_weights("resnet18", progress=False)
    assert not any(cache.iterdir())  # no partial or unchecked file stays in the cache
    monkeypatch.setattr(pretrained_mod, "_published",
                        lambda m: ("ResNet18_Weights.TEST", (served / f"resnet18-{prefix}.pth").as_uri()))
    got = pretrained_mod.torchvision_weights("resnet18", progress=False)
    assert got == cache / f"resnet18-{prefix}.pth" and got.read_bytes() == (served / "w.pth").read_bytes()


def _no_network(url, *args, **kwargs):
    raise OSError(f"cannot download {url} (URLError: no network here)")


def test_a_head_trained_for_other_classes_is_re_made_even_when_its_shape_fits(source, tmp_path):
    ck, _ = source
    data3 = ck.parent.parent / "data3"
    renamed = tmp_path / "renamed"
    shutil.copytree(data3, renamed)
    for split in ("train", "test"):
        (renamed / split / "red").rename(renamed / split / "yellow")
    head = _state(ck)["fc.weight"]
    same = fit(tiny_config(data3, tmp_path / "same", pretrained=str(ck), finetune="linear", lr=0.0, epochs=1))
    other = fit(tiny_config(renamed, tmp_path / "other", pretrained=str(ck), finetune="linear", lr=0.0, epochs=1))
    assert torch.equal(_state(same.run_dir / "last.pt")["fc.weight"], head)  # the same classes: the head is kept
    assert not torch.equal(_state(other.run_dir / "last.pt")["fc.weight"], head)  # other classes: a new head
    assert other.summary["pretrained"]["classes"] == ["blue", "green", "red"]


def test_img_size_is_an_alias_that_resizes_in_the_batched_path(source, tmp_path):
    from resnetlab.cli import build_parser

    args = build_parser().parse_args(["train", "--img-size", "16", "--pretrained", "torchvision", "--finetune",
                                      "gradual", "--layer-decay", "0.7"])
    assert (args.image_size, args.pretrained, args.finetune, args.layer_decay) == ("16", "torchvision", "gradual",
                                                                                     "0.7")
    _, data2 = source
    trainer = Trainer(tiny_config(data2, tmp_path / "r", image_size=16))
    x, _, _ = next(iter(trainer.train_batches.epoch(0)))
    assert tuple(x.shape[-2:]) == (16, 16)  # 8 px images, resized on the whole batch
