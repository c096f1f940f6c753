"""From logits to answers, without torch: probabilities (softmax, or a sigmoid per label), top-k and the decision
by a stored operating point. One definition, shared by :class:`resnetlab.Predictor` and the torch-free
:class:`resnetlab.runtime.LitePredictor`, so both answer alike."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["softmax", "probabilities", "top_k", "stored_point", "decide"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (no overflow for large logits), returned as float32."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def probabilities(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    """Softmax over the classes, or a sigmoid per label (multi-label)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float32))) if multilabel else softmax(logits)


def top_k(probs: np.ndarray, classes: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """Per row, the ``k`` most probable (class, probability) pairs, most likely first (ties in class order)."""
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(classes[j], float(row[j])) for j in idx] for row, idx in zip(probs, order)]


def stored_point(point: dict[str, Any] | None, classes: Sequence[str]) -> dict[str, Any] | None:
    """The decision rule a model carries, where it applies: a binary model's threshold, or a multi-label model's
    per-label thresholds; None: argmax (p > 0.5 per label)."""
    return point if point and (len(classes) == 2 or "thresholds" in point) else None


def decide(probs: np.ndarray, classes: Sequence[str], point: dict[str, Any] | None, multilabel: bool
           ) -> list[tuple[str, float]]:
    """Per row, the decision and its probability: a binary model with an operating point calls the positive class
    when its probability reaches the threshold; a multi-label model names every label at or over its threshold
    (";"-joined, "" for none) with the highest such probability; otherwise argmax."""
    probs = np.asarray(probs)
    if multilabel:
        cut = np.asarray(point["thresholds"]) if point else None
        hits = probs >= cut if cut is not None else probs > 0.5
        return [(";".join(c for c, h in zip(classes, row) if h), float(p[row].max()) if row.any() else 0.0)
                for row, p in zip(hits, probs)]
    if point is None:
        idx = probs.argmax(1)
    else:
        pos = int(point["positive_index"])
        idx = np.where(probs[:, pos] >= float(point["threshold"]), pos, 1 - pos)
    return [(classes[j], float(row[j])) for row, j in zip(probs, idx)]
