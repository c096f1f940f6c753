"""Self-supervised pretraining on the one engine: each method trains and is monitored by kNN, its backbone
starts a classifier with its provenance, a killed run resumes bit-identically, two processes share negatives."""

import json
import logging
import subprocess
import sys

import pytest
import torch

import resnetlab
from resnetlab import create_model
from resnetlab.train.checkpoint import load_checkpoint
from resnetlab.train.ssl import SSLTask
from test_train_ddp import TORCHRUN
from test_train_resume import _kill_after_checkpoint, _rows
from train_helpers import ROOT, cli_args, run_cli, tiny_config, write_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("ssl") / "colours", train=16, test=4, size=8)


def _ssl(tree, out, method, **kw):
    return tiny_config(tree, out, ssl=method, epochs=kw.pop("epochs", 1), batch_size=kw.pop("batch_size", 12),
                       knn_k=kw.pop("knn_k", 5), **kw)


@pytest.mark.parametrize("method", ["simclr", "mocov2", "byol", "simsiam"])
def test_each_method_pretrains_a_backbone_checked_by_knn(tree, tmp_path, method):
    run = resnetlab.fit(_ssl(tree, tmp_path / method, method, epochs=2))
    assert [r["epoch"] for r in run.history] == [1, 2]
    assert all(0 <= r["val_knn_top1"] <= 1 and torch.isfinite(torch.tensor(r["train_loss"])) for r in run.history)
    assert run["test_knn_top1"] is not None and run["select_metric"] == "knn_top1"
    ck = load_checkpoint(tmp_path / method / "best.pt")
    backbone = create_model("resnet20", num_classes=0, layers=(1, 1, 1))
    assert set(ck["model"]) == set(backbone.state_dict())  # the backbone alone: no classifier, no heads
    assert ck["ssl"]["method"] == method and ck["num_classes"] == 0 and ck["task"] == "ssl"
    heads = {k.split(".")[0] for k in ck["ssl_state"]}
    assert heads == {"simclr": {"projector"}, "mocov2": {"projector", "target", "queue"},
                     "byol": {"projector", "predictor", "target"}, "simsiam": {"projector", "predictor"}}[method]
    if method in ("mocov2", "byol"):  # the momentum encoder moved towards the online network, not onto it
        target = {k[len("target.0."):]: v for k, v in ck["ssl_state"].items() if k.startswith("target.0.")}
        w = "layer1.0.conv1.weight"
        assert not torch.equal(target[w], ck["model"][w])
        first = load_checkpoint(tmp_path / method / "last.pt")
        assert first["global_step"] == 2 * 3  # 36 of the 42 images a step: whole batches only


def test_the_backbone_starts_a_classifier_with_its_provenance(tree, tmp_path):
    resnetlab.fit(_ssl(tree, tmp_path / "byol", "byol"))
    backbone = load_checkpoint(tmp_path / "byol" / "best.pt")["model"]
    run = resnetlab.fit(tiny_config(tree, tmp_path / "probe", pretrained=str(tmp_path / "byol"), finetune="linear",
                                    epochs=1))
    assert run["pretrained"]["ssl"]["method"] == "byol" and run["pretrained"]["ssl"]["epochs"] == 1
    trained = load_checkpoint(tmp_path / "probe" / "last.pt")["model"]
    # a linear probe: the backbone is exactly the pretrained one, only the new classifier trained
    assert all(torch.equal(v, trained[k]) for k, v in backbone.items())
    assert trained["fc.weight"].shape == (3, 64)


def test_a_killed_pretraining_resumes_bit_identical(tree, tmp_path):
    kw = dict(epochs=2, ckpt_every_steps=1)
    ref = _ssl(tree, tmp_path / "ref", "byol", **kw)
    run_cli("train", *cli_args(ref))
    killed = _ssl(tree, tmp_path / "killed", "byol", **kw)
    step = _kill_after_checkpoint(killed, min_step=2)
    assert 2 <= step < 8, f"not killed part-way (last checkpoint at step {step})"
    run_cli("train", "--resume", str(tmp_path / "killed"))
    a, b = (load_checkpoint(tmp_path / r / "last.pt") for r in ("ref", "killed"))
    for part in ("model", "ssl_state"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part} {key} differs after the resume"
    assert _rows(tmp_path / "ref") == _rows(tmp_path / "killed")


@pytest.mark.parametrize("method", ["simclr", "mocov2", "byol", "simsiam"])
def test_pretraining_in_bf16_follows_fp32(tree, tmp_path, method):
    """bf16 autocast (the engine's `--amp bf16`) for the backbone and heads, the loss in FP32: the first epoch's
    loss stays within 5 % (or 0.005: the cosine losses start near 0) of the FP32 run's from the same seed, and
    the checkpoint (queue included) is FP32."""
    fp32 = resnetlab.fit(_ssl(tree, tmp_path / "fp32", method))
    bf16 = resnetlab.fit(_ssl(tree, tmp_path / "bf16", method, amp="bf16"))
    assert bf16["amp"] == "bf16" and fp32["amp"] == "off"
    a, b = fp32.history[0]["train_loss"], bf16.history[0]["train_loss"]
    assert b == pytest.approx(a, rel=0.05, abs=0.005) and a != b  # bf16 did run: not bit-equal to FP32
    ck = load_checkpoint(tmp_path / "bf16" / "last.pt")
    assert all(v.dtype in (torch.float32, torch.int64) for part in ("model", "ssl_state") for v in ck[part].values())


def test_two_processes_pretrain_with_shared_negatives(tree, tmp_path):
    cfg = _ssl(tree, tmp_path / "ddp", "simclr")
    out = subprocess.run([sys.executable, *TORCHRUN, "resnetlab", "pretrain", *cli_args(cfg)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3 and summary["val_knn_top1"] is not None


def test_bad_settings_are_named(tree, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="resnetlab"):
        SSLTask(_ssl(tree, tmp_path / "x", "simclr", batch_size=8))
    assert "batch_size 8 is small for simclr" in caplog.text and "64 or more" in caplog.text
    with pytest.raises(ValueError, match="mixup=0.2 is a classification setting"):
        SSLTask(_ssl(tree, tmp_path / "x", "byol", mixup=0.2))
    with pytest.raises(ValueError, match="batch_size 1: byol trains BatchNorm"):
        SSLTask(_ssl(tree, tmp_path / "x", "byol", batch_size=1))
    with pytest.raises(ValueError, match="ssl must be one of"):
        _ssl(tree, tmp_path / "x", "byol").replace(ssl="swav")
    out = run_cli("pretrain", "--data", str(tree), "--out", str(tmp_path / "y"), check=False)
    assert out.returncode == 2 and "give --method simclr|mocov2|byol|simsiam" in out.stderr


def test_linear_probe_on_frozen_features(tree, tmp_path):
    """The probe's features come from the backbone alone, once (a second probe reads the cache); on colour-coded
    images a linear classifier separates them; a detector checkpoint has no backbone to probe."""
    from resnetlab.eval.probe import linear_probe

    resnetlab.fit(_ssl(tree, tmp_path / "simclr", "simclr"))
    out = run_cli("probe", "--checkpoint", str(tmp_path / "simclr"), "--data", str(tree), "--epochs", "50")
    result = json.loads(out.stdout)
    assert result["top1"] == 1.0 and result["num_train"] == 48 and result["num_test"] == 12
    assert result["ssl"]["method"] == "simclr" and result["classes"] == ["blue", "green", "red"]
    cached = sorted(p.name for p in (tmp_path / "simclr" / "probe-cache").iterdir())
    assert len(cached) == 4 and all(n.endswith((".npy")) for n in cached)
    stamp = [(tmp_path / "simclr" / "probe-cache" / n).stat().st_mtime_ns for n in cached]
    again = linear_probe(tmp_path / "simclr", tree, epochs=5)
    assert [(tmp_path / "simclr" / "probe-cache" / n).stat().st_mtime_ns for n in cached] == stamp  # read back
    assert again.epochs == 5
    ck = load_checkpoint(tmp_path / "simclr" / "best.pt")
    torch.save({**ck, "task": "detection"}, tmp_path / "det.pt")
    with pytest.raises(ValueError, match="a detection checkpoint has no backbone to probe"):
        linear_probe(tmp_path / "det.pt", tree)


def test_an_unlabelled_folder_pretrains_with_a_knn_monitor_elsewhere(tree, tmp_path):
    import shutil

    flat = tmp_path / "flat"
    flat.mkdir()
    for i, p in enumerate(sorted((tree / "train").rglob("*.png"))):
        shutil.copy(p, flat / f"{i:03d}.png")
    run = resnetlab.fit(_ssl(flat, tmp_path / "plain", "simsiam"))
    assert run["num_train"] == 48 and "val_knn_top1" not in run.history[0]
    assert (tmp_path / "plain" / "last.pt").is_file() and not (tmp_path / "plain" / "best.pt").exists()
    run = resnetlab.fit(_ssl(flat, tmp_path / "knn", "simsiam", knn_data=str(tree)))
    assert run.history[0]["val_knn_top1"] is not None and run["test_knn_top1"] is not None
    with pytest.raises(ValueError, match=r"its images are 8x8 px, smaller than the 16 px crop \(--image-size 16\)"):
        resnetlab.fit(_ssl(flat, tmp_path / "big", "simsiam", image_size=16))
