"""kNN evaluation of learned features, the self-supervised field's monitor: a weighted k-nearest-neighbour
vote over a labelled bank (Wu et al. 2018, "Unsupervised feature learning via non-parametric instance
discrimination", §3.4; the protocol lightly's and solo-learn's CIFAR-10 benchmarks report): cosine
similarity, the k = 200 nearest bank images, each voting for its class with weight exp(similarity / 0.1).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["features", "knn_scores", "knn_top1"]


@torch.no_grad()
def features(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor, Any]],
             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(L2-normalised pooled features, labels) of every batch: the trunk and pooling, not the classifier."""
    was = model.training
    model.eval()
    feats, labels = [], []
    try:
        for x, y, *_ in batches:
            f = model.forward_head(model.forward_features(x.to(device)), pre_logits=True)
            feats.append(F.normalize(f.float(), dim=1).cpu())
            labels.append(y.cpu())
    finally:
        model.train(was)
    if not feats:
        raise ValueError("no batches to compute features of")
    return torch.cat(feats), torch.cat(labels)


def knn_scores(queries: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int, *,
               k: int = 200, temperature: float = 0.1, chunk: int = 1024) -> torch.Tensor:
    """(N, classes) vote totals of each (normalised) query over its k most similar bank rows."""
    if k < 1 or temperature <= 0:
        raise ValueError(f"need k >= 1 and temperature > 0, got k={k!r}, temperature={temperature!r}")
    k = min(k, len(bank))
    out = []
    for q in queries.split(chunk):
        sim, idx = (q @ bank.T).topk(k, dim=1)
        votes = torch.zeros(len(q), num_classes, dtype=sim.dtype)
        out.append(votes.scatter_add_(1, bank_labels[idx], (sim / temperature).exp()))
    return torch.cat(out)


def knn_top1(model: nn.Module, bank_batches, query_batches, num_classes: int, *, k: int = 200,
             temperature: float = 0.1, device: torch.device | str = "cpu") -> float:
    """Top-1 of the weighted kNN classifier: bank features from ``bank_batches`` (the labelled train split),
    queries from ``query_batches`` (the test or validation split)."""
    bank, bank_labels = features(model, bank_batches, device)
    queries, labels = features(model, query_batches, device)
    scores = knn_scores(queries, bank, bank_labels, num_classes, k=k, temperature=temperature)
    return float((scores.argmax(1) == labels).float().mean())
