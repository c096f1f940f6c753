"""Training configuration: recipes, overrides, validation, schedules."""

import math

import pytest
import torch
import yaml

from resnetlab.train.config import TrainConfig, list_recipes, load_config, recipe_path, save_config
from resnetlab.train.optim import ModelEma, build_optimizer, lr_factor, param_groups


def test_shipped_recipes_load_and_cite_sources():
    names = list_recipes()
    assert {"cifar10-resnet18", "cifar10-resnet20", "imagenet-resnet18", "cifar10-resnet18-fast"} <= set(names)
    for name in names:
        raw = yaml.safe_load(recipe_path(name).read_text())
        assert raw.get("source"), f"recipe {name} cites no source"
        load_config(name)  # every key is a known field
    r20 = load_config("cifar10-resnet20")
    assert (r20.lr, r20.weight_decay, r20.batch_size, r20.max_steps) == (0.1, 1e-4, 128, 64000)
    assert r20.milestones == (32000.0, 48000.0) and r20.milestone_unit == "step"
    k18 = load_config("cifar10-resnet18")
    assert (k18.lr, k18.momentum, k18.weight_decay, k18.epochs, k18.schedule) == (0.1, 0.9, 5e-4, 200, "cosine")
    tv = load_config("imagenet-resnet18")
    assert (tv.epochs, tv.step_size, tv.weight_decay, tv.batch_size) == (90, 30, 1e-4, 256)


def test_overrides_are_typed_and_checked():
    cfg = load_config("cifar10-resnet18", {"lr": "0.05", "epochs": "3", "channels_last": "true",
                                           "milestones": "10,20", "max_steps": "none"})
    assert cfg.lr == 0.05 and cfg.epochs == 3 and cfg.channels_last is True and cfg.milestones == (10.0, 20.0)
    assert cfg.model == "resnet18" and cfg.model_kwargs == {"stem": "cifar"}
    with pytest.raises(ValueError, match=r"unknown key\(s\) 'lrr' \(did you mean lr\?\)"):
        load_config(None, {"lrr": 0.1})
    with pytest.raises(ValueError, match="epochs must be int, got '1.5'"):
        load_config(None, {"epochs": "1.5"})
    with pytest.raises(ValueError, match="optimizer must be one of"):
        load_config(None, {"optimizer": "lion"})
    with pytest.raises(FileNotFoundError, match="no recipe 'cifar10-resnet19'.*close: cifar10-resnet18"):
        load_config("cifar10-resnet19")


def test_unknown_key_in_yaml_is_rejected(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: resnet20\nbatchsize: 64\n")
    with pytest.raises(ValueError, match=r"r.yaml: unknown key\(s\) 'batchsize' \(did you mean batch_size"):
        load_config(path)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("cifar10-resnet20", {"seed": 7})
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def _curve(**kw):
    cfg = TrainConfig(**{"lr": 1.0, "epochs": 10, **kw})
    f = lr_factor(cfg, steps_per_epoch=10)
    return [f(t) for t in range(100)]


def test_schedules():
    step = _curve(schedule="step", step_size=3)
    assert step[29] == 1.0 and step[30] == pytest.approx(0.1) and step[60] == pytest.approx(0.01)
    multi = _curve(schedule="multistep", milestones=(25, 50), milestone_unit="step")
    assert multi[24] == 1.0 and multi[25] == pytest.approx(0.1) and multi[50] == pytest.approx(0.01)
    cos = _curve(schedule="cosine", warmup_epochs=1)
    assert cos[0] == pytest.approx(0.1) and cos[9] == 1.0 and cos[10] == pytest.approx(1.0)
    assert cos[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90))) and cos[99] < 0.01
    one = _curve(schedule="onecycle", min_lr=0.0)
    peak = one.index(max(one))
    assert peak == 24 and one[0] < 0.1 and one[99] < 0.02 and all(a >= b for a, b in zip(one[peak:], one[peak + 1:]))


def test_no_weight_decay_on_norm_and_bias():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4, 2))
    decay, no_decay = param_groups(model, 5e-4, True)
    assert [p.ndim for p in decay["params"]] == [4, 2] and decay["weight_decay"] == 5e-4
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0
    opt = build_optimizer(model, TrainConfig(no_wd_norm_bias=False, nesterov=True))
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["nesterov"]


def test_ema_tracks_the_model():
    model = torch.nn.Linear(2, 2)
    ema = ModelEma(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    before = ema.module.weight.clone()
    ema.update(model)  # warm-up: decay min(0.5, 2/11) -> moves most of the way
    assert not torch.equal(ema.module.weight, before)
    assert torch.allclose(ema.module.weight, before + (model.weight - before) * (1 - 2 / 11))
