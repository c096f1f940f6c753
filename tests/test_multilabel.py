"""Multi-label tasks (ChestMNIST-style): metrics against scikit-learn, MedMNIST files, training with per-label
thresholds, evaluation, prediction, and the settings a multi-label task refuses."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from resnetlab import Predictor, evaluate
from resnetlab.data import open_dataset
from resnetlab.data.medmnist import MEDMNIST_LABELS
from resnetlab.eval.multilabel import multilabel_metrics, multilabel_thresholds
from resnetlab.train.engine import Trainer, fit
from train_helpers import tiny_config

FINDINGS = ["effusion", "nodule", "mass"]


def write_multilabel(path, sizes=(600, 200, 300), size=8, seed=0, names=True, labels=3):
    """Each label brightens its own region of a noisy image (label j: the j-th band of rows)."""
    rng = np.random.default_rng(seed)
    arrays = {"classes": np.array(FINDINGS)} if names else {}
    band = size // labels
    for split, n in zip(("train", "val", "test"), sizes):
        y = (rng.random((n, labels)) < np.linspace(0.15, 0.45, labels)).astype(np.uint8)
        x = rng.normal(110, 35, (n, size, size))
        for j in range(labels):
            x[y[:, j] == 1, j * band:(j + 1) * band, :] += 45
        arrays[f"{split}_images"] = np.clip(x, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = y
    np.savez(path, **arrays)
    return path


def test_metrics_match_sklearn_and_medmnist_definitions():
    rng = np.random.default_rng(1)
    y = (rng.random((300, 4)) < 0.3).astype(np.int64)
    logits = torch.as_tensor(rng.normal(0, 1, (300, 4)) + 1.5 * y)
    m = multilabel_metrics(logits, torch.as_tensor(y), class_names=list("abcd"))
    probs = torch.sigmoid(logits).numpy()
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, probs, average="macro"))
    for j, name in enumerate("abcd"):
        assert m["auc_per_class"][name] == pytest.approx(skm.roc_auc_score(y[:, j], probs[:, j]))
    acc = np.mean([skm.accuracy_score(y[:, j], probs[:, j] > 0.5) for j in range(4)])  # medmnist.Evaluator's ACC
    assert m["top1"] == pytest.approx(acc)
    ba = np.mean([skm.balanced_accuracy_score(y[:, j], probs[:, j] > 0.5) for j in range(4)])
    assert m["balanced_accuracy"] == pytest.approx(ba)
    assert m["nll"] == pytest.approx(skm.log_loss(y.ravel(), probs.ravel()), rel=1e-6)
    point = multilabel_thresholds(logits, torch.as_tensor(y), list("abcd"), "youden", "test")
    for j in range(4):
        fpr, tpr, thr = skm.roc_curve(y[:, j], probs[:, j])
        best = (tpr - fpr).max()
        pred = probs[:, j] >= point["thresholds"][j]
        assert skm.recall_score(y[:, j], pred) + skm.recall_score(1 - y[:, j], ~pred) - 1 == pytest.approx(best)


def test_medmnist_multilabel_files_and_names(tmp_path):
    ds = open_dataset(write_multilabel(tmp_path / "x.npz"), "train")
    assert ds.multilabel and ds.targets.shape == (600, 3) and ds.classes == FINDINGS
    chest = write_multilabel(tmp_path / "chestmnist_64.npz", names=False, labels=14, size=28)
    assert open_dataset(chest, "test").classes == MEDMNIST_LABELS["chestmnist"]
    val = open_dataset(chest, "val", val_split=0.2)
    train = open_dataset(chest, "train", val_split=0.2)
    assert len(val) + len(train) == 600 and abs(len(val) - 120) <= 15
    rare = val.targets[:, 0].sum() / len(val), train.targets[:, 0].sum() / len(train)
    assert abs(rare[0] - rare[1]) < 0.05  # the rarest label lands on both sides in proportion
    bad = dict(np.load(chest))
    bad["train_labels"] = bad["train_labels"] * 2
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ValueError, match=r"bad.npz: train_labels has 14 columns, so it is read as multi-label, but "
                                         r"holds values other than 0/1: \[0, 2\]"):
        open_dataset(tmp_path / "bad.npz", "train")


@pytest.fixture(scope="module")
def chest_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml")
    data = write_multilabel(root / "findings.npz")
    cfg = tiny_config(data, root / "run", epochs=3, batch_size=50, eval_batch_size=200, lr=0.05, crop_pad=0,
                      threshold="auto", class_weights="auto", select_metric="auc")
    return data, fit(cfg)


def test_training_chooses_a_threshold_per_label_and_reports_each(chest_run):
    _, result = chest_run
    s = result.summary
    assert s["task"] == "multilabel" and s["test_auc"] > 0.85
    point = s["operating_point"]
    assert len(point["thresholds"]) == 3 and point["classes"] == FINDINGS and point["unchosen"] == []
    per_label = s["test_report"]["per_label"]
    assert set(per_label) == set(FINDINGS)
    for name in FINDINGS:
        assert per_label[name]["operating_point"]["threshold"] == point["thresholds"][FINDINGS.index(name)]
    means = s["test_report"]["mean_balanced_accuracy"]
    assert means["operating_point"] >= means["default"] - 0.02  # thresholds chosen on val do not hurt on test
    assert 0.6 < result.history[-1]["train_acc"] <= 1.0 and result.history[-1]["val_top5"] is None


def test_evaluate_predict_and_bulk_prediction_of_a_multilabel_model(chest_run, tmp_path):
    from PIL import Image

    from resnetlab.deploy.bulk import predict_folder

    data, result = chest_run
    ev = evaluate(result.run_dir, out=tmp_path / "ev")
    assert ev.metrics["task"] == "multilabel" and ev.metrics["auc"] == pytest.approx(result.summary["test_auc"])
    assert "ACC" in ev.summary() and "confusion_csv" not in ev.files
    pred = Predictor(result.run_dir, backend="torch")
    assert pred.multilabel
    with np.load(data) as z:
        images, labels = z["test_images"][:30], z["test_labels"][:30]
    probs = pred.predict_proba([im[..., None] for im in images])
    assert probs.shape == (30, 3) and not np.allclose(probs.sum(1), 1.0)  # a sigmoid per label, not a softmax
    cut = np.array(result.summary["operating_point"]["thresholds"])
    for (label, _), p in zip(pred.decide(probs), probs):
        assert label == ";".join(f for f, hit in zip(FINDINGS, p >= cut) if hit)
    hits = np.array([[f in label.split(";") for f in FINDINGS] for label, _ in pred.decide(probs)])
    assert (hits == labels.astype(bool)).mean() > 0.75
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(images[:10]):
        Image.fromarray(im).save(folder / f"{i}.png")
    predict_folder(pred, folder, tmp_path / "p.csv", workers=0, progress=False)
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 10 and all(set(r["label"].split(";")) <= set(FINDINGS) | {""} for r in rows)


@pytest.mark.parametrize("overrides, match", [
    ({"sampler": "balanced"}, "sampler"), ({"positive_class": "mass"}, "positive_class"),
    ({"mixup": 0.2}, "mixup"), ({"class_weights": "effective"}, "'effective' is for single-label tasks"),
    ({"task": "multiclass"}, r"task='multiclass', but .*d.npz \(train\) has \d+ 0/1 label columns per image "
                             r"\(multilabel\)"),
])
def test_single_label_settings_are_refused_for_a_multilabel_task(tmp_path, overrides, match):
    data = write_multilabel(tmp_path / "d.npz", sizes=(60, 30, 30))
    with pytest.raises(ValueError, match=match):
        Trainer(tiny_config(data, tmp_path / "run", **overrides))


def test_a_report_with_no_defined_label_says_none_not_nan():
    import json

    from resnetlab.eval.multilabel import multilabel_report

    logits, targets = torch.zeros(4, 3), torch.zeros(4, 3)  # no label has a positive case
    report = multilabel_report(logits, targets, ["a", "b", "c"], None)
    assert report["mean_balanced_accuracy"] == {"default": None}
    json.dumps(report, allow_nan=False)
