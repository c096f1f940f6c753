"""Classification metrics from logits: the one top-1 and top-k of resnetlab, NLL, ECE, AUC, per class.

Everything is computed in float64 on the CPU from one ``(N, C)`` logits tensor and its ``(N,)``
targets, so the numbers do not depend on the device or the batch size they were produced with.
The returned dict holds only Python scalars, lists and dicts: it goes straight into ``json.dump``.

ROC AUC is the Mann-Whitney rank statistic (what ``sklearn.metrics.roc_auc_score`` computes; the
test suite checks the two agree), kept here because it is ten lines and spares every user a
scikit-learn install.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["classification_metrics", "topk_accuracy", "binary_auc", "expected_calibration_error", "format_metrics"]


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------

def _check_inputs(logits: Tensor, targets: Tensor) -> None:
    """Refuse inputs the metrics would silently get wrong, repeating what was passed."""
    if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
        raise TypeError(
            f"logits and targets must be torch.Tensors, got {type(logits).__name__} and {type(targets).__name__}"
        )
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D (N, C), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if targets.dim() != 1:
        raise ValueError(f"targets must be 1-D (N,) class indices, got shape {tuple(targets.shape)}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer class indices (int64), got dtype {targets.dtype}")
    n, c = logits.shape
    if targets.shape[0] != n:
        raise ValueError(
            f"logits and targets disagree on N: logits {tuple(logits.shape)}, targets {tuple(targets.shape)}"
        )
    if n == 0:
        raise ValueError("no samples: logits has shape (0, C); evaluate at least one sample")
    if c < 2:
        raise ValueError(f"need at least 2 classes, got logits of shape {tuple(logits.shape)}")
    bad = (targets < 0) | (targets >= c)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"targets must lie in 0..{c - 1} (C={c}); {int(bad.sum())} do not, e.g. targets[{i}] = {int(targets[i])}"
        )
    finite = torch.isfinite(logits)
    if not finite.all():
        i, j = (int(v) for v in (~finite).nonzero()[0])
        raise ValueError(
            f"logits must be finite; {int((~finite).sum())} entries are not, "
            f"e.g. logits[{i}, {j}] = {float(logits[i, j])}"
        )


def topk_accuracy(logits: Tensor | np.ndarray, targets: Tensor | np.ndarray, k: int = 1) -> float:
    """Fraction of samples whose target is among the ``k`` highest logits (top-1: ``k=1``).

    The one top-k of resnetlab: training, evaluation, quantization and bench all call it. Ties are
    broken by ``torch.topk``; ``k`` larger than the number of classes counts every sample.
    """
    logits, targets = torch.as_tensor(np.asarray(logits) if not isinstance(logits, Tensor) else logits), \
        torch.as_tensor(targets)
    _check_inputs(logits.float(), targets.long())
    k = min(int(k), logits.shape[1])
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")
    hit = (logits.topk(k, dim=1).indices == targets.long()[:, None]).any(dim=1)
    return float(hit.double().mean())


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse.reshape(-1)]


def binary_auc(scores: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> float | None:
    """ROC AUC of ``scores`` for the positives in ``labels`` (bool or 0/1); None if one side is empty.

    The Mann-Whitney U statistic divided by ``n_pos * n_neg`` (Hanley & McNeil 1982): the chance
    that a random positive outscores a random negative, ties counting one half (average ranks).
    """
    s = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, Tensor) else labels).reshape(-1).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have the same length, got {s.shape[0]} and {y.shape[0]}")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = float(_average_ranks(s)[y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def expected_calibration_error(probs: Tensor, targets: Tensor, bins: int = 15) -> tuple[float, list[dict]]:
    """ECE over ``bins`` equal-width confidence bins (Guo et al. 2017, "On Calibration of Modern NNs").

    Confidence is the top softmax probability; bin m holds confidences in ((m-1)/M, m/M]. ECE is
    sum_m |B_m|/N * |acc(B_m) - conf(B_m)|. Also returns the per-bin table (a reliability diagram).
    """
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"ece_bins must be a positive int, got {bins!r}")
    conf, pred = probs.max(dim=1)
    correct = (pred == targets).double()
    idx = (torch.ceil(conf * bins).long() - 1).clamp_(0, bins - 1)
    count = torch.bincount(idx, minlength=bins).double()
    acc_sum = torch.bincount(idx, weights=correct, minlength=bins)
    conf_sum = torch.bincount(idx, weights=conf.double(), minlength=bins)
    ece = float((acc_sum - conf_sum).abs().sum() / probs.shape[0])
    table = []
    for m in range(bins):
        k = int(count[m])
        table.append({
            "lower": m / bins, "upper": (m + 1) / bins, "count": k,
            "accuracy": float(acc_sum[m] / k) if k else None,
            "confidence": float(conf_sum[m] / k) if k else None,
        })
    return ece, table


def _resolve_names(class_names: Sequence[str] | None, c: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(c)]
    names = [str(n) for n in class_names]
    if len(names) != c:
        raise ValueError(f"class_names has {len(names)} names but logits have C={c} classes")
    if len(set(names)) != c:
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"class_names must be unique, got duplicates {dup}")
    return names


def classification_metrics(logits: Tensor, targets: Tensor, *, class_names: Sequence[str] | None = None,
                           ece_bins: int = 15) -> dict:
    """Top-1/top-5 and balanced accuracy, NLL, ECE, one-vs-rest ROC AUC, per-class accuracy, confusion matrix.

    ``top5`` is top-min(5, C) (named in ``top5_k``). ``auc`` is the macro mean of the per-class
    one-vs-rest AUCs of the softmax probabilities over the classes that have both positives and
    negatives (sklearn's ``multi_class="ovr", average="macro"``); for C == 2 it is the AUC of class 1.
    ``per_class_accuracy`` is the recall of each class (None for a class without samples).
    """
    _check_inputs(logits, targets)
    logits = logits.detach().to("cpu", torch.float64)
    targets = targets.detach().to("cpu", torch.int64)
    n, c = logits.shape
    names = _resolve_names(class_names, c)

    probs = logits.softmax(dim=1)
    pred = logits.argmax(dim=1)
    k = min(5, c)
    cm = torch.bincount(targets * c + pred, minlength=c * c).reshape(c, c)
    support = cm.sum(dim=1)
    ece, calibration = expected_calibration_error(probs, targets, ece_bins)

    if c == 2:
        class_auc: list[float | None] = [binary_auc(probs[:, 1], targets == 1)] * 2
        auc = class_auc[1]
    else:
        columns = probs.T.contiguous().numpy()  # one contiguous row per class: fast ranking
        class_auc = [binary_auc(columns[j], (targets == j).numpy()) for j in range(c)]
        defined = [a for a in class_auc if a is not None]
        auc = float(np.mean(defined)) if defined else None
    present = support > 0
    recall = cm.diagonal()[present].double() / support[present]
    return {
        "num_samples": n,
        "num_classes": c,
        "top1": topk_accuracy(logits, targets, 1),
        "balanced_accuracy": float(recall.mean()),  # mean recall over the classes present (Brodersen et al. 2010)
        "top5": topk_accuracy(logits, targets, k),
        "top5_k": k,
        "nll": float(F.cross_entropy(logits, targets)),
        "ece": ece,
        "ece_bins": ece_bins,
        "auc": auc,
        "auc_per_class": dict(zip(names, class_auc)),
        "class_names": names,
        "per_class_accuracy": {
            name: (float(cm[i, i] / support[i]) if support[i] else None) for i, name in enumerate(names)
        },
        "per_class_support": dict(zip(names, support.tolist())),
        "confusion_matrix": cm.tolist(),
        "calibration": calibration,
    }


def format_metrics(metrics: dict) -> str:
    """A few lines for a terminal or a log: accuracy, NLL, ECE, AUC, N and the three worst classes."""
    def num(key: str, fmt: str, scale: float = 1.0) -> str:
        v = metrics.get(key)
        return "n/a" if v is None else format(v * scale, fmt)

    k = metrics.get("top5_k", 5)
    if metrics.get("task") == "multilabel":
        lines = [f"samples {metrics.get('num_samples', '?')}  labels {metrics.get('num_classes', '?')} (multi-label)",
                 f"ACC {num('top1', '.2f', 100)} % (mean per-label accuracy at p > 0.5, as MedMNIST)  mean AUC "
                 f"{num('auc', '.4f')}  balanced accuracy {num('balanced_accuracy', '.4f')}  bce {num('nll', '.4f')}"]
    else:
        lines = [
            f"samples {metrics.get('num_samples', '?')}  classes {metrics.get('num_classes', '?')}",
            f"top-1 {num('top1', '.2f', 100)} %  top-{k} {num('top5', '.2f', 100)} %  balanced accuracy "
            f"{num('balanced_accuracy', '.4f')}",
            f"nll {num('nll', '.4f')}  ece {num('ece', '.4f')}  auc {num('auc', '.4f')}",
        ]
    per_class = {name: acc for name, acc in (metrics.get("per_class_accuracy") or {}).items() if acc is not None}
    if per_class:
        worst = sorted(per_class.items(), key=lambda kv: kv[1])[:3]
        lines.append("worst classes: " + ", ".join(f"{name} {acc * 100:.1f} %" for name, acc in worst))
    return "\n".join(lines + _clinical_lines(metrics.get("clinical")))


def _clinical_lines(report: dict | None) -> list[str]:
    """Binary: one line per decision rule, each rate with its interval; multi-class: balanced accuracy and F1s."""
    if not report:
        return []
    if report.get("task") == "multilabel":
        means = report["mean_balanced_accuracy"]
        return ["mean per-label balanced accuracy: " + ", ".join(
            f"{v:.4f} at {'p > 0.5' if rule == 'default' else 'the stored per-label thresholds'}"
            for rule, v in means.items())]
    if report.get("task") != "binary":
        ba = report.get("balanced_accuracy")
        return [f"balanced accuracy {'n/a' if ba is None else f'{ba:.4f}'}  macro F1 {report['macro_f1']:.4f}  "
                f"weighted F1 {report['weighted_f1']:.4f}"]
    lines = [f"positive class: {report['positive_class']}"]
    for key in ("argmax", "operating_point"):
        r = report.get(key)
        if r is not None:
            c = r["confusion"]
            lines.append(f"at {r['rule']}: " + "  ".join(f"{label} {_with_ci(r, name)}" for label, name in (
                ("sensitivity", "sensitivity"), ("specificity", "specificity"), ("PPV", "ppv"), ("NPV", "npv"),
                ("F1", "f1"), ("balanced acc", "balanced_accuracy"))) +
                f"  (TP {c['tp']} FP {c['fp']} TN {c['tn']} FN {c['fn']})")
    r = report["argmax"]
    lines.append(f"ROC AUC {_with_ci(r, 'roc_auc')}  PR AUC {_with_ci(r, 'pr_auc')}" + (
        f"  ({round(100 * r['ci_level'])} % bootstrap intervals, {r['bootstrap']} resamples, seed {r['seed']})"
        if r.get("bootstrap") else ""))
    return lines


def _with_ci(r: dict, name: str) -> str:
    v = r.get(name)
    lo, hi = r.get("ci", {}).get(name, (None, None))
    return ("n/a" if v is None else f"{v:.3f}") + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None
                                                  else "")
