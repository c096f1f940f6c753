import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab.eval import (
    binary_auc,
    classification_metrics,
    expected_calibration_error,
    format_metrics,
    save_confusion_matrix,
)


def _logits_with_confidence(conf: list[float], pred: list[int], c: int) -> torch.Tensor:
    """Logits whose softmax puts ``conf[i]`` on class ``pred[i]`` and spreads the rest evenly."""
    probs = torch.empty(len(conf), c, dtype=torch.float64)
    for i, (p, k) in enumerate(zip(conf, pred)):
        probs[i] = (1 - p) / (c - 1)
        probs[i, k] = p
    return probs.log()


def _pairwise_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


# -- AUC -------------------------------------------------------------------------------------

def test_binary_auc_hand_computed():
    # the classic example: 3 of the 4 positive/negative pairs are ordered correctly
    assert binary_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half: (0.5 + 1 + 1 + 1) / 4
    assert binary_auc(np.array([0.5, 0.5, 0.2, 0.9]), np.array([1, 0, 0, 1])) == pytest.approx(0.875)
    assert binary_auc([1.0, 2.0], [0, 0]) is None


def test_two_class_auc_is_class_one():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8], dtype=torch.float64)
    logits = torch.stack([torch.zeros(4, dtype=torch.float64), torch.logit(scores)], dim=1)
    m = classification_metrics(logits, torch.tensor([0, 0, 1, 1]))
    assert m["auc"] == pytest.approx(0.75)


@pytest.mark.parametrize("c", [3, 7])
def test_ovr_auc_matches_pairwise_brute_force(c):
    g = torch.Generator().manual_seed(c)
    n = 300
    logits = torch.round(torch.randn(n, c, generator=g) * 2) / 2  # coarse values: many exact ties
    targets = torch.randint(0, c, (n,), generator=g)
    targets[targets == c - 1] = 0  # the last class has no samples: left out of the macro mean
    m = classification_metrics(logits, targets)
    probs = logits.double().softmax(dim=1).numpy()
    per_class = [_pairwise_auc(probs[:, j], targets.numpy() == j) for j in range(c)]
    assert per_class[-1] is None and m["auc_per_class"][str(c - 1)] is None
    for j in range(c - 1):
        assert m["auc_per_class"][str(j)] == pytest.approx(per_class[j], abs=1e-12)
    assert m["auc"] == pytest.approx(np.mean(per_class[:-1]), abs=1e-12)


def test_perfect_and_reversed_auc():
    logits = torch.eye(3) * 5
    assert classification_metrics(logits, torch.tensor([0, 1, 2]))["auc"] == pytest.approx(1.0)
    assert classification_metrics(-logits, torch.tensor([0, 1, 2]))["auc"] == pytest.approx(0.0)


# -- ECE, top-k, NLL, per class ------------------------------------------------------------------

def test_ece_hand_computed():
    # confidences 0.85 (right), 0.85 (wrong), 0.65 (right), 0.75 (right)
    logits = _logits_with_confidence([0.85, 0.85, 0.65, 0.75], [0, 1, 2, 0], c=3)
    targets = torch.tensor([0, 0, 2, 0])
    # 10 bins: (0.8,0.9] 2/4*|0.5-0.85| + (0.6,0.7] 1/4*|1-0.65| + (0.7,0.8] 1/4*|1-0.75|
    m = classification_metrics(logits, targets, ece_bins=10)
    assert m["ece"] == pytest.approx(0.175 + 0.0875 + 0.0625)
    bins = {b["upper"]: b for b in m["calibration"] if b["count"]}
    assert bins[0.9]["count"] == 2 and bins[0.9]["accuracy"] == pytest.approx(0.5)
    # one bin: |mean accuracy - mean confidence| = |0.75 - 0.775|
    assert classification_metrics(logits, targets, ece_bins=1)["ece"] == pytest.approx(0.025)
    ece, _ = expected_calibration_error(logits.softmax(1), targets, bins=10)
    assert ece == pytest.approx(0.325)


def test_ece_bins_validated():
    with pytest.raises(ValueError, match="ece_bins must be a positive int, got 0"):
        classification_metrics(torch.zeros(2, 2), torch.tensor([0, 1]), ece_bins=0)


def test_top5_with_fewer_than_five_classes():
    logits = torch.tensor([[3.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
    m = classification_metrics(logits, torch.tensor([2, 0]))
    assert m["top5_k"] == 3 and m["top5"] == 1.0 and m["top1"] == 0.0


def test_top5_with_seven_classes():
    logits = torch.arange(7.0).repeat(4, 1)  # ranking 6 > 5 > ... > 0 for every sample
    m = classification_metrics(logits, torch.tensor([6, 2, 1, 0]))
    assert m["top5_k"] == 5
    assert m["top1"] == pytest.approx(0.25) and m["top5"] == pytest.approx(0.5)


def test_nll_confusion_and_per_class():
    logits = torch.zeros(4, 4)
    logits[[0, 1, 2, 3], [0, 1, 0, 1]] = 1.0  # predictions 0, 1, 0, 1
    targets = torch.tensor([0, 1, 1, 1])
    m = classification_metrics(logits, targets, class_names=["a", "b", "c", "d"])
    z = math.e + 3  # softmax denominator of every row: one logit 1, three 0
    expected_nll = -(3 * math.log(math.e / z) + math.log(1 / z)) / 4  # rows 0, 1, 3 right; row 2 wrong
    assert m["nll"] == pytest.approx(expected_nll)
    assert m["confusion_matrix"] == [[1, 0, 0, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert m["per_class_accuracy"] == {"a": 1.0, "b": pytest.approx(2 / 3), "c": None, "d": None}
    assert m["num_samples"] == 4 and m["num_classes"] == 4 and m["top1"] == 0.75
    json.dumps(m)  # plain Python types only


@pytest.mark.parametrize("logits, targets, kwargs, match", [
    (torch.zeros(2, 3, 1), torch.tensor([0, 1]), {}, r"logits must be 2-D \(N, C\), got shape \(2, 3, 1\)"),
    (torch.zeros(3, 3), torch.tensor([0, 1]), {}, r"disagree on N: logits \(3, 3\), targets \(2,\)"),
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), {}, "no samples"),
    (torch.zeros(2, 3), torch.tensor([0, 3]), {}, r"0\.\.2 .*targets\[1\] = 3"),
    (torch.zeros(2, 3), torch.tensor([-1, 0]), {}, r"targets\[0\] = -1"),
    (torch.tensor([[0.0, float("nan")], [0.0, 1.0]]), torch.tensor([0, 1]), {}, r"finite.*logits\[0, 1\] = nan"),
    (torch.zeros(2, 3), torch.tensor([0.0, 1.0]), {}, "integer class indices"),
    (torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 1]), {}, "floating-point"),
    (torch.zeros(2, 1), torch.tensor([0, 0]), {}, "at least 2 classes"),
    (torch.zeros(2, 3), torch.tensor([0, 1]), {"class_names": ["a", "b"]}, "2 names but logits have C=3"),
    (torch.zeros(2, 2), torch.tensor([0, 1]), {"class_names": ["a", "a"]}, "unique"),
])
def test_bad_inputs_are_refused(logits, targets, kwargs, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(logits, targets, **kwargs)


def test_format_metrics():
    logits = torch.zeros(4, 3)
    logits[[0, 1, 2, 3], [0, 0, 1, 2]] = 1.0
    m = classification_metrics(logits, torch.tensor([0, 1, 1, 2]), class_names=["cat", "dog", "ship"])
    text = format_metrics(m)
    assert "top-1 75.00 %" in text and "top-3 100.00 %" in text and "samples 4" in text
    assert "worst classes: dog 50.0 %, cat 100.0 %, ship 100.0 %" in text
    assert "auc n/a" in format_metrics({**m, "auc": None})


# -- confusion matrix files ------------------------------------------------------------------

def test_confusion_matrix_csv_and_png(tmp_path):
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    cm = np.full((10, 10), 7) + np.diag(np.arange(10) * 90)
    save_confusion_matrix(cm, names, tmp_path / "cm.csv", tmp_path / "out" / "cm.png")
    with open(tmp_path / "cm.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == names and [r[0] for r in rows[1:]] == names
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == cm.tolist()
    img = Image.open(tmp_path / "out" / "cm.png")
    assert img.format == "PNG" and 400 < img.width < 1400 and 400 < img.height < 1400
    colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 20  # cells, text and colour bar, not a blank page
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cm.csv", "cm.png", "out"]  # no temp files left


@pytest.mark.parametrize("c", [2, 37, 100])
def test_confusion_matrix_png_sizes(tmp_path, c):
    cm = np.random.default_rng(c).integers(0, 50, (c, c))
    save_confusion_matrix(cm.tolist(), [f"class_{i}" for i in range(c)], tmp_path / "cm.csv", tmp_path / "cm.png")
    img = Image.open(tmp_path / "cm.png")
    assert 200 < img.width < 2000 and 150 < img.height < 2000


def test_confusion_matrix_with_empty_row_and_no_png(tmp_path):
    save_confusion_matrix([[0, 0], [3, 4]], ["a", "b"], tmp_path / "cm.csv")
    assert (tmp_path / "cm.csv").read_text().splitlines() == ["true \\ predicted,a,b", "a,0,0", "b,3,4"]
    assert not (tmp_path / "cm.png").exists()


@pytest.mark.parametrize("cm, names, match", [
    ([[1, 2, 3], [4, 5, 6]], ["a", "b"], r"square \(C, C\), got shape \(2, 3\)"),
    ([[1, -2], [3, 4]], ["a", "b"], "non-negative integer counts"),
    ([[1, 2], [3, 4]], ["a", "b", "c"], "3 class names for a 2x2"),
])
def test_confusion_matrix_refuses_bad_input(tmp_path, cm, names, match):
    with pytest.raises(ValueError, match=match):
        save_confusion_matrix(cm, names, tmp_path / "cm.csv")
    assert not (tmp_path / "cm.csv").exists()
