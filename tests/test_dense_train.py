"""Detection and segmentation on the one training engine: learning, evaluation that reproduces the run, exact
resume after SIGKILL, DDP, bad files, prediction with drawings, and the settings that make no sense for them."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import resnetlab
from resnetlab.deploy.dense import DensePredictor
from resnetlab.data.dense import DenseBatches, open_dense_split
from resnetlab.eval import evaluate, load_trained
from resnetlab.train.checkpoint import load_checkpoint
from resnetlab.train.config import TrainConfig
from resnetlab.train.dense import DenseTask
from dense_helpers import write_shapes
from test_train_ddp import TORCHRUN
from test_train_resume import _kill_after_checkpoint, _rows
from train_helpers import ROOT, cli_args, run_cli

SEG = dict(model="deeplabv3_resnet18", model_kwargs={"output_stride": 16}, masks="instance")
DET = dict(model="fcos_resnet18_fpn", model_kwargs={"min_size": 64, "max_size": 64})


def _cfg(data, out, **kw) -> TrainConfig:
    values = dict(data=str(data), out=str(out), epochs=2, batch_size=4, eval_batch_size=4, lr=0.003,
                  optimizer="adamw", weight_decay=1e-4, warmup_epochs=0, amp="off", threads=1, workers=0,
                  log_every_s=0.0, preset="imagenet")
    values.update(kw)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes(tmp_path_factory.mktemp("dense") / "shapes")


@pytest.fixture(scope="module")
def seg_run(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("seg") / "run"
    return resnetlab.fit(_cfg(shapes, out, epochs=6, **SEG))


def test_segmenter_learns_the_shapes(seg_run):
    hist = seg_run.history
    assert [r["epoch"] for r in hist] == list(range(1, 7)) and all("val_miou" in r for r in hist)
    # calling every pixel background scores mIoU ~0.35 on this data (objects cover ~30 % of it)
    assert seg_run["best_val_miou"] > 0.45, hist
    assert hist[-1]["train_loss"] < 0.75 * hist[0]["train_loss"]
    assert seg_run["task"] == "segmentation" and seg_run["select_metric"] == "miou"
    best = max(hist, key=lambda r: r["val_miou"])
    assert seg_run["best_epoch"] == best["epoch"] and load_checkpoint(seg_run.run_dir / "best.pt")["epoch"] == \
        best["epoch"]


def test_eval_of_the_checkpoint_reproduces_the_runs_test_numbers(seg_run, shapes):
    result = evaluate(seg_run.run_dir, split="test", out=seg_run.run_dir / "eval")
    assert result.metrics["miou"] == pytest.approx(seg_run["test_miou"], abs=1e-12)
    assert result.metrics["pixel_acc"] == pytest.approx(seg_run["test_pixel_acc"], abs=1e-12)
    assert result.num_samples == 4 and "mIoU" in result.summary()
    saved = json.loads((seg_run.run_dir / "eval" / "metrics.json").read_text())
    assert saved["miou"] == result.metrics["miou"]
    # the meter's mIoU, recomputed here by hand from the model's own argmax on the test images
    trained = load_trained(seg_run.run_dir)
    ds = open_dense_split(shapes, "test", "segmentation", masks="instance", classes=trained.classes)
    inter, union = np.zeros(2), np.zeros(2)
    with torch.no_grad():
        for x, y, _ in DenseBatches(ds, 4, kind="segmentation", train=False).epoch(0):
            pred = trained.model(x)["out"].argmax(1)
            for k in range(2):
                inter[k] += ((pred == k) & (y == k)).sum().item()
                union[k] += ((pred == k) | (y == k)).sum().item()
    assert result.metrics["miou"] == pytest.approx((inter / union).mean(), abs=1e-9)


def test_predict_draws_the_mask_and_reports_unreadable_images(seg_run, shapes, tmp_path):
    image = shapes / "test" / "images" / "test000.png"
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    out = run_cli("predict", "--checkpoint", str(seg_run.run_dir), str(image), str(bad), "--draw",
                  str(tmp_path / "drawn"), "--json", check=False)
    assert out.returncode == 1 and "broken.png" in out.stderr
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert abs(sum(answer["pixels"].values()) - 1) < 1e-9
    drawn = np.asarray(Image.open(answer["drawn"]))
    original = np.asarray(Image.open(image).convert("RGB"))
    assert drawn.shape == original.shape and (drawn != original).any()  # the mask was painted on


def test_detector_trains_evaluates_and_draws_boxes(shapes, tmp_path):
    run = resnetlab.fit(_cfg(shapes, tmp_path / "det", epochs=5, **DET))
    assert run["task"] == "detection" and run["select_metric"] == "map"
    assert {"val_map", "val_map_50", "val_map_75", "val_mar_100"} <= set(run.history[-1])
    result = evaluate(run.run_dir, split="test")
    assert run["test_map_50"] > 0 and result.metrics["map_50"] == pytest.approx(run["test_map_50"], abs=1e-12)
    pred = DensePredictor(run.run_dir, score_thresh=0.0).predict(
        shapes / "test" / "images" / "test001.png", tmp_path / "boxes.png")
    assert pred.boxes and all(b["label"] == "object" and 0 <= b["box"][0] <= b["box"][2] <= 64 for b in pred.boxes)
    assert Image.open(tmp_path / "boxes.png").size == (64, 64)


def test_an_unreadable_image_is_skipped_not_fatal(tmp_path):
    data = write_shapes(tmp_path / "shapes", counts=(("train", 7), ("val", 2)), bad=1)
    run = resnetlab.fit(_cfg(data, tmp_path / "run", epochs=1, **SEG))
    assert run["skipped_files"] == 1 and run["num_train"] == 8 and run.history[0]["skipped_batch_images"] == 1


def test_killed_segmenter_resumes_bit_identical(shapes, tmp_path):
    kw = dict(SEG, epochs=2, ckpt_every_steps=1)
    ref = _cfg(shapes, tmp_path / "ref", **kw)
    run_cli("train", *cli_args(ref))
    killed = _cfg(shapes, tmp_path / "killed", **kw)
    step = _kill_after_checkpoint(killed, min_step=2)
    assert 2 <= step < 6, f"not killed part-way (last checkpoint at step {step})"
    run_cli("train", "--resume", str(tmp_path / "killed"))
    a, b = (load_checkpoint(tmp_path / r / "last.pt")["model"] for r in ("ref", "killed"))
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after the resume"
    assert _rows(tmp_path / "ref") == _rows(tmp_path / "killed")


def test_two_ddp_processes_train_a_segmenter(shapes, tmp_path):
    cfg = _cfg(shapes, tmp_path / "ddp", epochs=1, **SEG)
    out = subprocess.run([sys.executable, *TORCHRUN, "resnetlab", "train", *cli_args(cfg)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3 and summary["val_miou"] is not None


@pytest.mark.parametrize("setting, value", [("mixup", 0.2), ("label_smoothing", 0.1), ("ema_decay", 0.99),
                                            ("finetune", "linear"), ("qat", True)])
def test_classification_settings_are_refused_by_name(setting, value, tmp_path):
    with pytest.raises(ValueError, match=setting):
        DenseTask(_cfg(tmp_path, tmp_path / "x", **{**DET, setting: value}))


def test_a_segmenter_refuses_a_batch_of_one(tmp_path):
    with pytest.raises(ValueError, match="batch_size 1"):
        DenseTask(_cfg(tmp_path, tmp_path / "x", batch_size=1, **SEG))


def test_data_layouts_and_their_errors(tmp_path, shapes):
    with pytest.raises(FileNotFoundError, match="no 'val' split"):
        open_dense_split(tmp_path, "val", "detection")
    (tmp_path / "train" / "Annotations").mkdir(parents=True)
    (tmp_path / "train" / "JPEGImages").mkdir()
    with pytest.raises(ValueError, match="boxes only"):
        open_dense_split(tmp_path, "train", "segmentation")
    (tmp_path / "odd" / "stuff").mkdir(parents=True)
    with pytest.raises(ValueError, match="not a detection/segmentation split"):
        open_dense_split(tmp_path, "odd", "detection")
    with pytest.raises(ValueError, match="instance masks"):
        open_dense_split(shapes, "train", "detection", masks="semantic")
    ds = open_dense_split(shapes, "train", "detection")
    assert ds.classes == ["__background__", "object"] and len(ds) == 12


def test_flips_are_seeded_and_move_boxes_with_the_image(shapes):
    ds = open_dense_split(shapes, "train", "detection")
    batches = DenseBatches(ds, 4, kind="detection", train=True, seed=3)
    first = [(x.clone(), {k: v.clone() for k, v in t.items()}) for xs, ts, _ in batches.epoch(0)
             for x, t in zip(xs, ts)]
    again = [(x, t) for xs, ts, _ in batches.epoch(0) for x, t in zip(xs, ts)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"]) for a, b in zip(first, again))
    flipped = 0
    for x, t in first:
        i = int(t["image_id"])
        raw, raw_t, _ = ds[i]
        if not torch.equal(x, raw):
            flipped += 1
            assert torch.equal(x, raw.flip(-1))
            assert torch.allclose(t["boxes"][:, [0, 2]], 64 - raw_t["boxes"][:, [2, 0]])
    assert 0 < flipped < len(first)


def test_a_detector_starts_from_a_classifiers_trunk(shapes, tmp_path):
    from safetensors.torch import save_file

    classifier = resnetlab.create_model("resnet18", num_classes=7)
    save_file(classifier.state_dict(), str(tmp_path / "r18.safetensors"))
    cfg = _cfg(shapes, tmp_path / "det", epochs=1, pretrained=str(tmp_path / "r18.safetensors"),
               limit_train_batches=1, limit_eval_batches=1, **DET)
    run = resnetlab.fit(cfg)
    start = classifier.state_dict()
    trunk = {k[len("backbone.body."):]: v for k, v in run.model.state_dict().items() if k.startswith("backbone.body.")}
    # torchvision's rule with weights: the last 3 stages train; the stem and layer1 keep the classifier's weights
    assert torch.equal(trunk["conv1.weight"], start["conv1.weight"])
    assert torch.equal(trunk["layer1.0.conv1.weight"], start["layer1.0.conv1.weight"])
    assert not torch.equal(trunk["layer4.1.conv2.weight"], start["layer4.1.conv2.weight"])
    assert run["pretrained"]["file"] == str(tmp_path / "r18.safetensors")
    resumed = resnetlab.fit(resume=run.run_dir, epochs=2)  # same parameter groups when rebuilt without the file
    assert resumed["epochs"] == 2
