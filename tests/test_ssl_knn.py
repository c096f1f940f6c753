"""The kNN monitor: the weighted vote of Wu et al. 2018 written out, and features from the trunk alone."""

import math

import pytest
import torch
import torch.nn.functional as F

from resnetlab import create_model
from resnetlab.eval.knn import features, knn_scores, knn_top1


def test_knn_scores_are_the_weighted_vote():
    g = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(30, 4, generator=g), dim=1)
    labels = torch.randint(0, 3, (30,), generator=g)
    q = F.normalize(torch.randn(5, 4, generator=g), dim=1)
    got = knn_scores(q, bank, labels, 3, k=7, temperature=0.1, chunk=2)
    for i in range(5):
        sims = sorted(((float(q[i] @ b), int(c)) for b, c in zip(bank, labels)), reverse=True)[:7]
        want = [sum(math.exp(s / 0.1) for s, c in sims if c == cls) for cls in range(3)]
        assert got[i].tolist() == pytest.approx(want, rel=1e-5)
    assert knn_scores(q, bank, labels, 3, k=500).shape == (5, 3)  # k above the bank size: the whole bank
    with pytest.raises(ValueError, match="need k >= 1 and temperature > 0, got k=0"):
        knn_scores(q, bank, labels, 3, k=0)


def test_knn_top1_on_a_network():
    """Colour-coded images: a random network's features already separate them (top-1 1.0), and labels
    shuffled in the bank drop it to chance."""
    torch.manual_seed(0)
    net = create_model("resnet18", num_classes=10, stem="cifar").eval()
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    def batches(n, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 3, (n,), generator=g)
        x = colours[y][:, :, None, None] + 0.05 * torch.randn(n, 3, 16, 16, generator=g)
        return [(x[i:i + 8], y[i:i + 8]) for i in range(0, n, 8)]
    f, y = features(net, batches(16, 1))
    assert f.shape == (16, net.num_features) and torch.allclose(f.norm(dim=1), torch.ones(16))
    assert net.training is False
    assert knn_top1(net, batches(48, 2), batches(24, 3), 3, k=5) == 1.0
    shuffled = [(x, torch.randint(0, 3, (len(y),))) for x, y in batches(48, 2)]
    assert knn_top1(net, shuffled, batches(24, 3), 3, k=5) < 0.8
