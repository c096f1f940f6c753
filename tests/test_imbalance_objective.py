"""Class weights, focal loss, logit adjustment and the balanced sampler: exact values, not just shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from resnetlab.data.batches import generator, train_order
from resnetlab.train.config import TrainConfig, from_dict
from resnetlab.train.objective import EFFECTIVE_BETA, Objective, class_weights

COUNTS = np.array([900, 100, 30])


def test_auto_weights_are_sklearns_balanced_up_to_scale():
    y = np.repeat(np.arange(3), COUNTS)
    sk = compute_class_weight("balanced", classes=np.arange(3), y=y)
    w = class_weights("auto", COUNTS).numpy()
    np.testing.assert_allclose(w, sk / sk.mean(), rtol=1e-6)
    assert w.mean() == pytest.approx(1.0)


def test_effective_number_weights():
    w = class_weights("effective", COUNTS).numpy()
    raw = (1 - EFFECTIVE_BETA) / (1 - EFFECTIVE_BETA ** COUNTS)
    np.testing.assert_allclose(w, raw / raw.mean(), rtol=1e-6)
    assert w[0] < w[1] < w[2]
    assert w[2] / w[0] < COUNTS[0] / COUNTS[2]  # softer than inverse frequency, as Cui et al. intend


def test_given_weights_and_errors():
    np.testing.assert_allclose(class_weights("1,3,6", COUNTS).numpy(), [0.3, 0.9, 1.8], rtol=1e-6)
    assert class_weights("none", COUNTS) is None
    with pytest.raises(ValueError, match=r"gives 2 weights but the data has 3 classes \(a, b, c\)"):
        class_weights("1,2", COUNTS, ["a", "b", "c"])
    with pytest.raises(ValueError, match="no images of c"):
        class_weights("auto", [5, 5, 0], ["a", "b", "c"])
    with pytest.raises(ValueError, match="class_weights must be"):
        from_dict({"class_weights": "1,-2"})


def test_focal_loss_values():
    torch.manual_seed(0)
    logits, target = torch.randn(64, 3), torch.randint(0, 3, (64,))
    w = torch.tensor([0.5, 1.0, 2.0])
    assert float(Objective(focal_gamma=0.0, weight=w)(logits, target)) == pytest.approx(
        float(F.cross_entropy(logits, target, weight=w)))
    p_t = logits.softmax(1).gather(1, target[:, None])[:, 0]
    manual = (-(1 - p_t) ** 2 * p_t.log() * w[target]).sum() / w[target].sum()
    assert float(Objective(focal_gamma=2.0, weight=w)(logits, target)) == pytest.approx(float(manual), rel=1e-5)
    easy = torch.tensor([[8.0, 0.0, 0.0]])  # a confident right answer counts far less than in cross-entropy
    assert float(Objective(focal_gamma=2.0)(easy, torch.tensor([0]))) < 1e-3 * float(F.cross_entropy(
        easy, torch.tensor([0])))


def test_logit_adjustment_adds_tau_log_prior_in_the_loss():
    torch.manual_seed(1)
    logits, target = torch.randn(32, 3), torch.randint(0, 3, (32,))
    priors = COUNTS / COUNTS.sum()
    loss = Objective(logit_adjust=1.0, priors=priors)(logits, target)
    shifted = logits + torch.log(torch.tensor(priors, dtype=torch.float32))
    assert float(loss) == pytest.approx(float(F.cross_entropy(shifted, target)), rel=1e-6)
    with pytest.raises(ValueError, match="prior > 0"):
        Objective(logit_adjust=1.0, priors=[0.5, 0.5, 0.0])


def test_focal_refuses_soft_targets_and_smoothing():
    with pytest.raises(ValueError, match="focal_gamma=2.0 takes hard labels"):
        TrainConfig().replace(focal_gamma=2.0, mixup=0.2)
    with pytest.raises(ValueError, match="hard labels"):
        TrainConfig().replace(focal_gamma=2.0, label_smoothing=0.1)


def test_shuffle_order_is_unchanged_and_balanced_draws_are_uniform():
    targets = np.repeat(np.arange(3), COUNTS)
    n = len(targets)
    assert torch.equal(train_order(targets, 7, 2), torch.randperm(n, generator=generator(7, 2)))
    order = train_order(targets, 7, 2, "balanced")
    assert len(order) == n  # an epoch keeps its size
    assert torch.equal(order, train_order(targets, 7, 2, "balanced"))  # a function of (seed, epoch): resumable
    assert not torch.equal(order, train_order(targets, 7, 3, "balanced"))
    share = np.bincount(targets[order.numpy()], minlength=3) / n
    np.testing.assert_allclose(share, 1 / 3, atol=0.04)  # 1030 draws: sd of a share ~0.015
    rare = set(order[targets[order.numpy()] == 2].tolist())
    assert rare == set(np.flatnonzero(targets == 2).tolist())  # ~343 draws of 30 images reach every one
    with pytest.raises(ValueError, match="sampler must be one of"):
        train_order(targets, 0, 0, "weighted")
