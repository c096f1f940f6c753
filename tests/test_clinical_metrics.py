"""Clinical metrics and the operating point, each checked against scikit-learn or a brute-force answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from resnetlab.eval import classification_metrics
from resnetlab.eval.clinical import (average_precision, binary_rates, binary_report, choose_threshold,
                                     clinical_report, multiclass_report, parse_threshold_metric, pr_curve, roc_curve)


def _scores(n: int = 400, prevalence: float = 0.3, seed: int = 0, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < prevalence
    s = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 1.2 * y)))
    if ties:
        s = np.round(s, 1)
    return s, y


@pytest.mark.parametrize("ties", [False, True])
def test_rates_auc_and_ap_match_sklearn(ties):
    s, y = _scores(ties=ties)
    r = binary_report(s, y, threshold=0.45, bootstrap=0)
    pred = s >= 0.45
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert r["confusion"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    assert r["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert r["specificity"] == pytest.approx(skm.recall_score(~y, ~pred))
    assert r["ppv"] == pytest.approx(skm.precision_score(y, pred))
    assert r["npv"] == pytest.approx(skm.precision_score(~y, ~pred))
    assert r["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert r["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert r["pr_auc"] == pytest.approx(skm.average_precision_score(y, s))
    assert average_precision(s, y) == pytest.approx(skm.average_precision_score(y, s))


def test_curves_match_sklearn():
    s, y = _scores(ties=True)
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    ours = roc_curve(s, y)
    np.testing.assert_allclose(ours["fpr"], fpr)
    np.testing.assert_allclose(ours["tpr"], tpr)
    np.testing.assert_allclose(ours["thresholds"][1:], thr[1:])
    precision, recall, pthr = skm.precision_recall_curve(y, s, drop_intermediate=False)
    pr = pr_curve(s, y)  # ours: every distinct score, highest first; sklearn: lowest first, plus (1, 0) at the end
    ours = {t: (p, r) for t, p, r in zip(pr["thresholds"], pr["precision"], pr["recall"])}
    assert set(pthr.tolist()) <= set(ours)
    for t, p, r in zip(pthr, precision[:-1], recall[:-1]):
        assert ours[t] == pytest.approx((p, r))


def test_undefined_rates_are_none_not_zero():
    r = binary_report([0.1, 0.2, 0.3], [0, 0, 0], threshold=0.5, bootstrap=0)
    assert r["sensitivity"] is None and r["roc_auc"] is None and r["pr_auc"] is None
    assert r["specificity"] == 1.0
    rates = binary_rates(0, 0, 5, 0)
    assert np.isnan(rates["ppv"]) and rates["npv"] == 1.0


def _brute_force(s, y, score):
    """The best value of score(sens, spec, f1) over every threshold sklearn's ROC curve lists."""
    best = -np.inf
    for t in np.unique(s):
        pred = s >= t
        rates = binary_rates((pred & y).sum(), (pred & ~y).sum(), (~pred & ~y).sum(), (~pred & y).sum())
        best = max(best, score(rates))
    return best


@pytest.mark.parametrize("ties", [False, True])
def test_youden_and_f1_thresholds_are_optimal(ties):
    s, y = _scores(seed=3, ties=ties)
    for metric, score in (("youden", lambda r: r["sensitivity"] + r["specificity"] - 1),
                          ("f1", lambda r: r["f1"])):
        op = choose_threshold(s, y, metric)
        best = _brute_force(s, y, score)
        assert op.value == pytest.approx(best)
        pred = s >= op.threshold  # the stored threshold reproduces the counted decisions exactly
        again = binary_report(s, y, threshold=op.threshold, bootstrap=0)
        assert score({k: np.float64(v) for k, v in again.items() if k in ("sensitivity", "specificity", "f1")}) \
            == pytest.approx(best)
        assert op.sensitivity == pytest.approx(skm.recall_score(y, pred))
    assert choose_threshold(s, y, "balanced_accuracy").threshold == choose_threshold(s, y, "youden").threshold


def test_sensitivity_target_is_met_with_the_best_specificity():
    s, y = _scores(seed=5)
    op = choose_threshold(s, y, "sensitivity@0.9")
    r = binary_report(s, y, threshold=op.threshold, bootstrap=0)
    assert r["sensitivity"] >= 0.9
    best_spec = _brute_force(s, y, lambda r: r["specificity"] if r["sensitivity"] >= 0.9 else -np.inf)
    assert r["specificity"] == pytest.approx(best_spec)
    assert op.threshold < choose_threshold(s, y, "sensitivity@0.6").threshold


def test_bootstrap_intervals_are_seeded_and_shrink_with_n():
    s, y = _scores(n=300)
    a = binary_report(s, y, threshold=0.5, bootstrap=300, seed=1)
    b = binary_report(s, y, threshold=0.5, bootstrap=300, seed=1)
    c = binary_report(s, y, threshold=0.5, bootstrap=300, seed=2)
    assert a["ci"] == b["ci"] and a["ci"] != c["ci"]
    for name in ("sensitivity", "specificity", "roc_auc", "pr_auc", "ppv"):
        lo, hi = a["ci"][name]
        assert lo < a[name] < hi, name
    s4, y4 = np.tile(s, 4), np.tile(y, 4)
    big = binary_report(s4, y4, threshold=0.5, bootstrap=300, seed=1)
    width = lambda r: r["ci"]["roc_auc"][1] - r["ci"]["roc_auc"][0]  # noqa: E731
    assert width(big) < 0.7 * width(a)  # ~1/sqrt(4) = 0.5 expected


def test_multiclass_report_matches_sklearn():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, 500)
    pred = np.where(rng.random(500) < 0.6, t, rng.integers(0, 4, 500))
    pred[pred == 3] = 2  # class 3 never predicted: its F1 is 0, its PPV undefined
    r = multiclass_report(pred, t, ["a", "b", "c", "d"])
    assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(t, pred))
    assert r["macro_f1"] == pytest.approx(skm.f1_score(t, pred, average="macro", zero_division=0))
    assert r["weighted_f1"] == pytest.approx(skm.f1_score(t, pred, average="weighted", zero_division=0))
    recall = skm.recall_score(t, pred, average=None)
    for i, name in enumerate("abcd"):
        assert r["per_class"][name]["sensitivity"] == pytest.approx(recall[i])
        assert r["per_class"][name]["specificity"] == pytest.approx(skm.recall_score(t != i, pred != i))
    assert r["per_class"]["d"]["ppv"] is None and r["per_class"]["d"]["f1"] == 0.0
    logits = torch.nn.functional.one_hot(torch.as_tensor(pred), 4).double()
    assert classification_metrics(logits, torch.as_tensor(t))["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(t, pred))


def test_clinical_report_reports_argmax_and_the_operating_point():
    s, y = _scores(n=200, seed=7)
    logits = torch.as_tensor(np.stack([np.zeros_like(s), np.log(s / (1 - s))], 1))
    point = {"threshold": 0.3, "positive_index": 1}
    r = clinical_report(logits, torch.as_tensor(y.astype(np.int64)), ["normal", "pneumonia"], point, bootstrap=50)
    assert r["positive_class"] == "pneumonia"
    assert r["argmax"]["confusion"]["tp"] == int(((s > 0.5) & y).sum())
    assert r["operating_point"]["confusion"]["tp"] == int(((s >= 0.3) & y).sum())
    assert r["operating_point"]["sensitivity"] > r["argmax"]["sensitivity"]
    # the other class as the positive one: sensitivity and specificity swap
    flipped = clinical_report(logits, torch.as_tensor(y.astype(np.int64)), ["normal", "pneumonia"], None,
                              positive=0, bootstrap=0)
    assert flipped["argmax"]["sensitivity"] == pytest.approx(r["argmax"]["specificity"])


def test_a_specificity_target_above_the_top_score_is_met_not_ignored():
    # a negative holds the top score: only "nothing positive" reaches specificity 0.9
    op = choose_threshold([0.9, 0.8, 0.3], [0, 1, 0], "specificity@0.9")
    assert op.threshold == pytest.approx(0.95) and (op.specificity, op.sensitivity) == (1.0, 0.0)


def test_equal_objectives_go_to_the_higher_constrained_rate():
    # thresholds 0.525 and 0.325 both give specificity 0.5 with sensitivity >= 0.6; 0.325 reaches sensitivity 1
    s, y = [0.9, 0.6, 0.45, 0.7, 0.2], [1, 1, 1, 0, 0]
    op = choose_threshold(s, y, "sensitivity@0.6")
    assert op.sensitivity == 1.0 and op.specificity == 0.5 and op.threshold == pytest.approx(0.325)


@pytest.mark.parametrize("bad, match", [
    ("sensitivity@1.5", "threshold_metric"), ("youdn", "threshold_metric"), ("specificity@", "threshold_metric"),
    ("sensitivity@0", "threshold_metric"), ("sensitivity@.0", "threshold_metric")])
def test_bad_threshold_metrics_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_threshold_metric(bad)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"threshold must be a probability in \[0, 1\], got 1.5"):
        binary_report([0.2, 0.8], [0, 1], threshold=1.5)
    with pytest.raises(ValueError, match="labels must be 0/1"):
        binary_report([0.2, 0.8], [0, 2], threshold=0.5)
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold([0.2, 0.8], [1, 1])
    with pytest.raises(ValueError, match="scores must be finite"):
        choose_threshold([0.2, float("nan")], [0, 1])
