"""Faithfulness metrics and sanity checks: ROAD's imputation against pytorch-grad-cam's, deletion/insertion on a
model whose evidence is known, the verdict against baselines, rank correlation against scipy, and the
cascading randomisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from resnetlab.explain import (baseline_maps, cascading_randomization, compare, deletion_insertion,
                               noisy_linear_impute, rank_correlation, road, score_maps)
from resnetlab.explain.faithfulness import METRICS, average_drop
from resnetlab.explain.sanity import SURVIVES, cascade_steps
from resnetlab.models import create_model


class CentreDetector(nn.Module):
    """Class 1's logit grows with the brightness of the centre 4x4 patch: the evidence sits there, and only there."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1] // 2
        s = 8 * (x[:, :, c - 2:c + 2, c - 2:c + 2].mean((1, 2, 3)) - 0.6)
        return torch.stack([torch.zeros_like(s), s], 1)


def _scene(n: int, side: int, seed: int) -> torch.Tensor:
    """Dark noise with a bright object in the middle."""
    x = torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 0.2
    c = side // 2
    x[:, :, c - 2:c + 2, c - 2:c + 2] = 1.0
    return x


def _centre_maps(n: int, side: int) -> torch.Tensor:
    m = torch.zeros(n, side, side)
    c = side // 2
    m[:, c - 2:c + 2, c - 2:c + 2] = 1.0
    return m


def test_linear_imputation_matches_pytorch_grad_cam_and_is_exact_on_a_ramp():
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 12, 12, generator=g)
    removed = torch.rand(12, 12, generator=g) < 0.4
    ours = noisy_linear_impute(img, removed, noise=0.0)
    ref = NoisyLinearImputer(noise=0.0)(img, (~removed).float())  # its mask: 1 = known
    torch.testing.assert_close(ours, ref.to(ours.dtype), atol=1e-4, rtol=0)
    assert torch.equal(ours[:, ~removed], img[:, ~removed])  # known pixels are kept exactly
    yy, xx = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    ramp = (0.3 * xx + 0.1 * yy).expand(1, 12, 12).double()
    hole = torch.zeros(12, 12, dtype=torch.bool)
    hole[4:8, 3:9] = True  # interior: every neighbour set is symmetric, so a plane is reproduced
    assert (noisy_linear_impute(ramp, hole, noise=0.0) - ramp).abs().max() < 1e-4


def test_deletion_and_insertion_reward_the_map_that_marks_the_evidence():
    model = CentreDetector().eval()
    x = _scene(6, 16, seed=1)
    t = torch.ones(6, dtype=torch.long)
    good = deletion_insertion(model, x, _centre_maps(6, 16), t, steps=8)
    corner = torch.zeros(6, 16, 16)
    corner[:, :4, :4] = 1.0
    bad = deletion_insertion(model, x, corner, t, steps=8)
    assert good["deletion"].shape == (6, 9) and torch.allclose(good["deletion"][:, 0], good["insertion"][:, -1])
    assert (good["deletion_auc"] < bad["deletion_auc"] - 0.2).all()
    assert (good["insertion_auc"] > bad["insertion_auc"] + 0.1).all()


def test_road_and_the_verdict_against_baselines():
    model = CentreDetector().eval()
    n, side = 24, 16
    x = _scene(n, side, seed=2)  # removing the object and imputing it from its dark surroundings lowers p
    t = torch.ones(n, dtype=torch.long)
    r = road(model, x, _centre_maps(n, side), t)
    assert r["morf_curve"].shape == (n, 9) and (r["road"] > 0).all()
    maps = {"good": _centre_maps(n, side) + 0.01 * torch.rand(n, side, side),
            "random": baseline_maps("random", n, (side, side), seed=0)}
    scores = {k: score_maps(model, x, v, t, steps=8) for k, v in maps.items()}
    table = compare(scores, baselines=("random",), n=200, seed=0)
    assert table["good"]["deletion_auc"]["vs"]["random"]["verdict"] == "beats"
    assert table["good"]["road"]["vs"]["random"]["verdict"] == "beats"
    again = compare(scores, baselines=("random",), n=200, seed=0)
    assert again == table  # seeded: the same intervals twice
    inverted = 1.0 - maps["good"]  # points everywhere but the object: worse than chance
    scores["inverted"] = score_maps(model, x, inverted, t, steps=8)
    table = compare(scores, baselines=("random",), n=200, seed=0)
    assert table["inverted"]["deletion_auc"]["vs"]["random"]["verdict"] == "loses"
    assert table["inverted"]["deletion_auc"]["vs"]["random"]["better_by"] < 0
    assert table["random"]["deletion_auc"]["vs"] == {}  # a baseline is not compared with itself


def test_average_drop_and_increase_in_confidence_as_torch_cam_defines_them():
    """Chattopadhyay et al. 2018: the model sees x * map. A map on the object keeps class 1's probability
    (no drop); a map on the corner blanks the object (the drop computed by hand), and raises class 0's."""
    model = CentreDetector().eval()
    x = _scene(4, 16, seed=3)
    corner = torch.zeros(4, 16, 16)
    corner[:, :4, :4] = 2.0  # any scale: the map is rescaled to [0, 1] first
    one, zero = torch.ones(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)
    kept = average_drop(model, x, _centre_maps(4, 16), one)
    assert torch.allclose(kept["average_drop"], torch.zeros(4), atol=1e-6)
    blanked = average_drop(model, x, corner, one)
    p, q = torch.sigmoid(torch.tensor(8 * 0.4)), torch.sigmoid(torch.tensor(-8 * 0.6))
    assert torch.allclose(blanked["average_drop"].float(), ((p - q) / p).expand(4), atol=1e-5)
    assert blanked["confidence_increase"].tolist() == [0.0] * 4
    assert average_drop(model, x, corner, zero)["confidence_increase"].tolist() == [1.0] * 4
    scores = score_maps(model, x, _centre_maps(4, 16), one, steps=4)
    assert set(METRICS) <= set(scores) and scores["average_drop"].shape == (4,)


def test_tied_pixels_are_removed_in_a_seeded_random_order_not_as_a_block():
    from resnetlab.explain.faithfulness import pixel_order

    maps = torch.zeros(2, 16, 16)
    maps[:, 6:10, 6:10] = torch.arange(16.0).view(4, 4) + 1  # a ranked object on a flat zero field
    order = pixel_order(maps, seed=0)
    obj = order[:, :16]
    assert (maps.flatten(1).gather(1, obj) == torch.arange(16.0, 0, -1)).all()  # the object first, in rank
    rows = order[:, 16:16 + 48] // 16  # the next 48 (tied) pixels: scattered, not the first three rows
    assert rows.float().std(1).min() > 3 and rows.max() > 10
    assert torch.equal(order, pixel_order(maps, seed=0)) and not torch.equal(order, pixel_order(maps, seed=1))
    assert not torch.equal(order[0], order[1])


def test_rank_correlation_is_spearmans():
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(4, 5, 5, generator=g), torch.rand(4, 5, 5, generator=g)
    a[0, 0, :3] = 0.5  # ties
    b[1] = a[1] * 2 + 1  # a monotone image of a[1]
    ours = rank_correlation(a, b)
    for i in range(4):
        assert ours[i].item() == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten()).statistic, abs=1e-9)
    assert ours[1] == pytest.approx(1.0)
    assert torch.isnan(rank_correlation(torch.zeros(1, 5, 5), a[:1]))[0]  # a flat map has no ranking


def test_cascading_randomisation_destroys_gradcam_and_follows_the_stages():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4, layers=(1, 1, 1)).eval()
    assert [s for s, _ in cascade_steps(model)] == ["fc", "layer3", "layer2", "layer1", "stem"]
    x = torch.randn(6, 3, 16, 16)
    res = cascading_randomization(model, "layer3", x, None, "gradcam", seed=0)
    assert [s["step"] for s in res["steps"]] == ["fc", "layer3", "layer2", "layer1", "stem"]
    assert res["checked_at"] == "layer3"
    at = res["steps"][1]["mean_rho"]
    assert at is not None and at < SURVIVES  # an untrained net's Grad-CAM does not survive a new layer3
    assert not res["survives_randomisation"]
    assert all(p.grad is None for p in model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cascading_randomization(model, "layer3", x, None, "gradcam", seed=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model itself is untouched


class InputMaps(nn.Module):
    """The explained layer has no parameters: its activations are the (pooled) input, whatever the weights."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.AvgPool2d(2)
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.feat(x).mean((2, 3)))


def test_a_method_whose_maps_survive_randomisation_is_flagged():
    torch.manual_seed(0)
    x = torch.rand(5, 3, 12, 12)
    res = cascading_randomization(InputMaps().eval(), "feat", x, None, "eigencam", seed=0)
    assert [s["step"] for s in res["steps"]] == ["fc", "feat"]
    assert res["steps"][-1]["mean_rho"] == pytest.approx(1.0) and res["survives_randomisation"]


def test_maps_that_go_flat_count_as_no_agreement_and_the_whole_head_is_randomised():
    from resnetlab.explain.sanity import label_randomization

    torch.manual_seed(0)
    model = InputMaps().eval()
    dead = InputMaps().eval()
    nn.init.zeros_(dead.fc.weight)  # no gradient reaches the layer: every Grad-CAM map is flat
    x = torch.rand(4, 3, 12, 12)
    res = label_randomization(model, dead, "feat", x, None, "gradcam")
    assert res["flat_maps"] == 4 and res["mean_rho"] == 0.0 and res["rho"] == [0.0] * 4
    vgg = create_model("vgg16", num_classes=3)
    assert cascade_steps(vgg)[0] == ("classifier", ["classifier"])  # all three linear layers, not just the last


def test_baseline_maps():
    c = baseline_maps("centre", 2, (9, 9))
    assert c.shape == (2, 9, 9) and c[0, 4, 4] == c.max() and c[0, 0, 0] == c.min()
    assert torch.equal(baseline_maps("random", 2, (9, 9), seed=1), baseline_maps("random", 2, (9, 9), seed=1))
    smooth = baseline_maps("random", 2, (16, 16), seed=1, grid=(4, 4))  # as coarse as a 4x4 layer's maps
    assert smooth.shape == (2, 16, 16) and (smooth[:, :, 1:] - smooth[:, :, :-1]).abs().max() < 0.5
    with pytest.raises(ValueError, match="baseline must be 'random' or 'centre', got 'edge'"):
        baseline_maps("edge", 1, (3, 3))
    assert np.isfinite(c.numpy()).all()
