"""The residual story as experiments: gradient flow, degradation, shortcut and BN ablations."""

import csv
import json

import pytest
import torch

import resnetlab
from resnetlab.analysis import measure, run_gradflow, weight_layers
from resnetlab.analysis.experiments import GRADFLOW_BASE, cifar_net, run_degradation, run_experiment
from resnetlab.train import engine
from train_helpers import run_cli, write_tree

TINY = dict(batch_size=12, eval_batch_size=12, threads=1, workers=0)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("analysis") / "colours")


def test_weight_layers_in_forward_order_and_plain_twin_minus_projections():
    x = torch.randn(2, 3, 32, 32)
    res = weight_layers(resnetlab.create_model("resnet18"), x)
    plain = weight_layers(resnetlab.create_model("plain18"), x)
    assert [n for n, _, k in res if k != "projection"] == [n for n, _, _ in plain]
    assert [n for n, _, k in res if k == "projection"] == [f"layer{i}.0.downsample.0" for i in (2, 3, 4)]
    assert res[0][0] == "conv1" and res[-1][0] == "fc" and res[1][0] == "layer1.0.conv1"


def test_measure_gives_a_norm_for_every_layer_and_block():
    torch.manual_seed(0)
    model = resnetlab.create_model("resnet20")
    layers, blocks = measure(model, torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    assert len(layers) == 20 and [layer.index for layer in layers] == list(range(1, 21))
    assert all(layer.grad_norm > 0 for layer in layers)
    assert len(blocks) == 9 and all(b.grad_via_shortcut > 0 and b.grad_via_branch > 0 for b in blocks)
    # at an identity shortcut the gradient passes unchanged: via-shortcut equals the gradient at the sum
    assert blocks[0].grad_via_shortcut == pytest.approx(blocks[0].grad_at_sum)
    _, plain_blocks = measure(resnetlab.create_model("plain20"), torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    assert all(b.grad_via_shortcut is None and b.shortcut_norm is None for b in plain_blocks)
    adds = [m for m in model.modules() if isinstance(m, resnetlab.models.layers.ResidualAdd)]
    assert len(adds) == 9 and not any(a._forward_hooks for a in adds)  # the hooks are removed again


def test_gradflow_run_writes_everything(tree, tmp_path):
    out = tmp_path / "gf"
    results = run_gradflow(["resnet20", "plain20"], out=out, data=str(tree), steps=2,
                           base=GRADFLOW_BASE.replace(**TINY, cache_dir=str(tmp_path / "cache")))
    for name in ("gradflow.csv", "blocks.csv", "gradflow.json", "gradflow.png", "blocks.png", "report.md",
                 "config.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "gradflow.csv")))
    assert len(rows) == 2 * 2 * 20 and {r["time"] for r in rows} == {"init", "trained"}
    assert results["plain20"]["trained"]["ratios"]["layers"] == 20
    report = (out / "report.md").read_text()
    assert "## Question" in report and "## Conclusion" in report and "plain20's first/last" in report
    assert run_cli("report", str(out)).stdout.strip() == report.strip()


def test_gradflow_random_data_only_on_request(tmp_path):
    out = tmp_path / "gf"
    run_gradflow(["resnet20"], out=out, random_data=True, steps=1,
                 base=GRADFLOW_BASE.replace(**TINY, cache_dir=str(tmp_path / "cache")))
    assert json.loads((out / "config.json").read_text())["data"] == "random noise"


def test_degradation_tiny_budget_complete_table_and_plot(tree, tmp_path, monkeypatch):
    steps = []
    real_step = engine.Trainer._step
    monkeypatch.setattr(engine.Trainer, "_step", lambda self, *a: steps.append(1) or real_step(self, *a))
    out = tmp_path / "deg"
    curves = run_degradation([8, 14], out=out, data=str(tree), epochs=2, cache_dir=str(tmp_path / "cache"),
                             label_smoothing=0.1, amp="none", channels_last=False, **TINY)
    assert set(curves) == {"plain8", "resnet8", "plain14", "resnet14"}
    assert all(len(c) == 2 and all(0 <= r["test_error"] <= 1 for r in c) for c in curves.values())
    rows = list(csv.DictReader(open(out / "degradation.csv")))
    assert {(r["kind"], r["depth"]) for r in rows} == {(k, d) for k in ("plain", "resnet") for d in ("8", "14")}
    for name in ("degradation.png", "report.md"):
        assert (out / name).is_file(), name
    assert "| 8 |" in (out / "report.md").read_text() and "| 14 |" in (out / "report.md").read_text()
    assert len(steps) == 4 * 2 * 4  # the training engine ran every step (4 nets, 2 epochs, 4 batches)
    saved = (out / "train" / "resnet14" / "config.yaml").read_text()
    assert "label_smoothing: 0.1" in saved  # a recipe change reaches the experiment's runs


def test_degradation_checks_depths():
    with pytest.raises(ValueError, match="6n\\+2"):
        cifar_net("plain", 21)
    assert cifar_net("plain", 14) == ("plain20", {"layers": (2, 2, 2)}) and cifar_net("resnet", 56) == ("resnet56", {})


@pytest.mark.parametrize("name", ["shortcuts", "batchnorm"])
def test_experiments_run_and_report(name, tree, tmp_path):
    out = tmp_path / name
    results = run_experiment(name, out=out, data=str(tree), epochs=1, depth=8, cache_dir=str(tmp_path / "cache"),
                             amp="none", channels_last=False, **TINY)
    assert len(results) == 4 and (out / "report.md").is_file() and (out / f"{name}.csv").is_file()
    if name == "shortcuts":
        params = {k: r["params"] for k, r in results.items()}
        assert params["option A"] == params["plain (no shortcut)"] < params["option B"] < params["option C"]
    else:
        assert (out / "loss.png").is_file()
        assert all(r["steps"] or r["diverged"] for r in results.values())


def test_budget_plan_from_probed_speeds(tree, tmp_path):
    from resnetlab.analysis.experiments import DEGRADATION_PRESETS, plan_epochs

    base = DEGRADATION_PRESETS["cpu"].replace(data=str(tree), cache_dir=str(tmp_path / "cache"), amp="none",
                                               channels_last=False, **TINY)
    epochs, plan = plan_epochs([8, 14], 5.0, base, tmp_path / "plan")
    assert epochs >= 1 and set(plan["img_per_s"]) == {8, 14} and plan["epoch_seconds_all_runs"] > 0
    with pytest.raises(ValueError, match="does not fit one epoch"):
        run_degradation([8], out=tmp_path / "deg", data=str(tree), budget_minutes=1e-6,
                        cache_dir=str(tmp_path / "cache"), amp="none", channels_last=False, **TINY)
