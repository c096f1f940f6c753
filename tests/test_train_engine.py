"""The training engine on tiny data: run directory, learning, divergence, bad files, options."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from resnetlab.train import engine
from resnetlab.train.checkpoint import load_checkpoint, save_checkpoint
from resnetlab.train.engine import TrainingDiverged, TrainResult, fit
from train_helpers import tiny_config, write_tree


@pytest.fixture
def tree(tmp_path):
    return write_tree(tmp_path / "colours", val=4)  # 48 train images: 4 batches of 12 per epoch


def test_run_directory_is_complete(tree, tmp_path):
    out = tmp_path / "run"
    result = fit(tiny_config(tree, out, epochs=2))
    assert isinstance(result, TrainResult) and result.run_dir == out and result.best_checkpoint == out / "best.pt"
    assert (result.num_train, result.num_eval, result.classes) == (48, 12, ["blue", "green", "red"])
    assert not result.model.training and len(result.history) == 2
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "last.pt", "best.pt", "train.log", "summary.json"):
        assert (out / name).is_file(), name
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows == result.history and [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "lr", "img_per_s", "wall_time_s"):
        assert all(key in r for r in rows), key
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("epoch,train_loss,train_acc,val_loss")
    saved = json.loads((out / "summary.json").read_text())
    assert saved == json.loads(json.dumps(result.summary))
    for key in ("val_top1", "best_val_top1", "test_top1", "test_top5", "selection", "epochs", "wall_time_s",
                "images_per_s", "skipped_files", "amp", "channels_last"):
        assert key in saved, key
    assert 0.0 <= saved["val_top1"] <= saved["best_val_top1"] <= 1.0 and saved["epochs"] == 2
    assert saved["skipped_files"] == 0 and saved["images_per_s"] > 0
    ck = load_checkpoint(out / "last.pt")
    assert ck["classes"] == ["blue", "green", "red"] and ck["epoch"] == 2 and ck["global_step"] == 8


def test_it_learns(tree, tmp_path):
    result = fit(tiny_config(tree, tmp_path / "run", epochs=6, lr=0.1))
    assert result["best_val_top1"] >= 0.9  # mean colour decides the class: easy, but only if training works


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tree, tmp_path, monkeypatch):
    real, calls = F.cross_entropy, []

    def poisoned(*args, **kwargs):  # the 7th training loss (epoch 2, batch 3) is NaN
        calls.extend([1] if args[0].requires_grad else [])
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 7 else loss

    monkeypatch.setattr(F, "cross_entropy", poisoned)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2, step 7 \(batch 3\)") as err:
        fit(tiny_config(tree, out, ckpt_every_steps=1))
    assert str(out / "last.pt") in str(err.value)
    ck = load_checkpoint(out / "last.pt")
    assert ck["global_step"] == 6 and ck["epoch"] == 1 and ck["batch"] == 2  # the last good step
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert not (out / "summary.json").exists()


def test_nan_gradient_with_a_finite_loss_stops_before_the_step(tree, tmp_path, monkeypatch):
    """A finite loss whose backward gives fc.weight a NaN gradient (the 7th step): the run stops, naming the
    parameter, before the NaN reaches the weights, so no checkpoint ever holds it."""
    real, calls = engine.create_model, []

    def poison(grad):
        calls.append(1)
        return grad * float("nan") if len(calls) == 7 else grad

    def create_model(*args, **kwargs):
        model = real(*args, **kwargs)
        model.fc.weight.register_hook(poison)
        return model

    monkeypatch.setattr(engine, "create_model", create_model)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"non-finite gradient in fc\.weight at epoch 2, step 7 \(batch 3\)"):
        fit(tiny_config(tree, out, ckpt_every_steps=1))
    ck = load_checkpoint(out / "last.pt")
    assert ck["global_step"] == 6
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert not (out / "summary.json").exists()


def test_grad_clip_bounds_the_norm_of_every_step(tree, tmp_path, monkeypatch):
    real, norms = engine.build_optimizer, []

    def build_optimizer(model, cfg, *rest):  # rest: the fine-tuning policy's learning-rate scales
        def record(*_):  # the gradients the step is about to apply
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

        opt = real(model, cfg, *rest)
        opt.register_step_pre_hook(record)
        return opt

    monkeypatch.setattr(engine, "build_optimizer", build_optimizer)
    fit(tiny_config(tree, tmp_path / "run", epochs=1, grad_clip=1e-3))
    assert len(norms) == 4 and max(norms) <= 1e-3 * (1 + 1e-4)


def test_a_checkpoint_with_non_finite_weights_is_never_written(tmp_path):
    good = {"model": {"w": torch.ones(2), "steps": torch.tensor(3)}, "ema": None}
    save_checkpoint(good, tmp_path / "last.pt")
    bad = {"model": {"w": torch.tensor([1.0, float("inf")]), "steps": torch.tensor(4)}, "ema": None}
    with pytest.raises(TrainingDiverged, match=r"refusing to write .*last\.pt: the model weights w hold NaN or inf"):
        save_checkpoint(bad, tmp_path / "last.pt")
    ema = {"model": {"w": torch.ones(2)}, "ema": {"module.w": torch.tensor([float("nan"), 0.0])}}
    with pytest.raises(TrainingDiverged, match="the ema weights module.w"):
        save_checkpoint(ema, tmp_path / "last.pt")
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["model"]["w"], torch.ones(2))  # the good one, kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp files left


def test_bad_files_are_skipped_and_counted(tree, tmp_path):
    (tree / "train" / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    result = fit(tiny_config(tree, tmp_path / "run", epochs=1))
    assert result["skipped_files"] == 1
    with pytest.raises(ValueError, match="broken.png"):
        fit(tiny_config(tree, tmp_path / "strict", epochs=1, strict_data=True, cache_dir=str(tmp_path / "c2")))


def test_recipe_options_run_together(tree, tmp_path):
    out = tmp_path / "run"
    result = fit(tiny_config(tree, out, epochs=2, mixup=0.2, cutmix=1.0, label_smoothing=0.1, ema_decay=0.9,
                             amp="bf16", channels_last=True, warmup_epochs=0.5, optimizer="adamw", lr=1e-3,
                             grad_clip=1.0, cutout=4, auto_augment="trivial", image_size=16,
                             model_kwargs={"layers": (1, 1, 1), "drop_path_rate": 0.1}))
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= row["ema_top1"] <= 1.0 and math.isfinite(row["train_loss"])
    ck = load_checkpoint(out / "last.pt")
    assert ck["preprocess"]["image_size"] == 16 and ck["precision"] == {"amp": "bf16", "channels_last": True}
    assert result["epochs"] == 2


def test_fp16_needs_cuda(tree, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the CPU-only refusal cannot be shown here")
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        fit(tiny_config(tree, tmp_path / "run", amp="fp16"))


def test_medmnist_npz_grayscale_follows_the_data(tmp_path):
    """A MedMNIST-style .npz of gray 10x10 images: in_chans=1 and 2 classes come from the data."""
    import numpy as np

    rng = np.random.default_rng(0)

    def split(n):
        labels = rng.integers(0, 2, (n, 1))
        images = np.clip(labels[:, :, None] * 120 + rng.normal(60, 20, (n, 10, 10)), 0, 255).astype(np.uint8)
        return images, labels

    arrays = {}
    for name, n in (("train", 48), ("val", 12), ("test", 12)):
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = split(n)
    np.savez(tmp_path / "tinymnist.npz", **arrays)
    out = tmp_path / "run"
    result = fit(tiny_config(tmp_path / "tinymnist.npz", out, epochs=3, lr=0.1))
    ck = load_checkpoint(out / "last.pt")
    assert ck["in_chans"] == 1 and ck["num_classes"] == 2 and ck["classes"] == ["0", "1"]
    assert ck["model"]["conv1.weight"].shape[1] == 1 and result["best_val_top1"] > 0.8
    assert (result.num_train, result.num_eval, result["num_test"]) == (48, 12, 12)  # its own val split
